//! The Fortran-ABI `sgemm_` called from Rust as a Fortran program calls it
//! (every argument by reference, column-major): results against
//! `nnkern::reference::gemm` for every transpose letter and padded leading
//! dimensions, and each invalid argument reported to this program's
//! `xerbla_` with the reference BLAS's `INFO`.

use nnkern::{reference, MatMut, MatRef};
use nnkern_capi::{last_error_string, sgemm_};
use std::cell::RefCell;
use std::ffi::{c_char, c_int};
use std::ptr::{null, null_mut};

thread_local! {
    /// (SRNAME, INFO) of each `xerbla_` call on this thread.
    static XERBLA_CALLS: RefCell<Vec<(String, c_int)>> = const { RefCell::new(Vec::new()) };
}

/// The program's `XERBLA`, as the reference BLAS testers define theirs:
/// records the call instead of stopping.
///
/// # Safety
/// `srname` holds `len` characters, `info` one integer.
#[no_mangle]
pub unsafe extern "C" fn xerbla_(srname: *const c_char, info: *const c_int, len: usize) {
    // SAFETY: the XERBLA contract above.
    let (name, info) = unsafe { (std::slice::from_raw_parts(srname.cast::<u8>(), len), *info) };
    let name = String::from_utf8_lossy(name).into_owned();
    XERBLA_CALLS.with(|c| c.borrow_mut().push((name, info)));
}

fn xerbla_calls() -> Vec<(String, c_int)> {
    XERBLA_CALLS.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

/// Quarter steps in [-1.5, 1.5]: with k < 40 every product and partial sum
/// is exact in f32, so any correct summation order gives the reference's
/// value exactly.
fn vals(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 5 + seed * 11) % 13) as f32 * 0.25 - 1.5).collect()
}

/// One call with every argument by reference, as Fortran passes them.
#[allow(clippy::too_many_arguments)]
fn call(
    ta: u8,
    tb: u8,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
) {
    let (ta, tb) = (ta as c_char, tb as c_char);
    // SAFETY: every scalar is a live local; the matrices are the caller's
    // (valid for valid calls, unread for invalid ones).
    unsafe { sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc) };
}

/// Column-major `rows × cols` with leading dimension `ld` as a view.
fn col_view(data: &[f32], rows: usize, cols: usize, ld: usize) -> MatRef<'_, f32> {
    MatRef::from_strides(data, rows, cols, 1, ld).unwrap()
}

#[test]
fn every_transpose_letter_and_padding_matches_the_reference() {
    let letters = [b'N', b'n', b'T', b't', b'C', b'c'];
    let shapes = [
        (1, 1, 1),
        (3, 5, 7),
        (8, 8, 8),
        (17, 9, 33),
        (2, 31, 5),
        (0, 3, 2),
        (4, 0, 3),
        (5, 3, 0),
    ];
    let mut calls = 0;
    for &(m, n, k) in &shapes {
        for &ta in &letters {
            for &tb in &letters {
                for pad in [0usize, 3] {
                    for &(alpha, beta) in &[(1.0f32, 0.0f32), (0.75, 1.25), (0.0, -0.5), (-1.5, 1.0)] {
                        let tra = !ta.eq_ignore_ascii_case(&b'N');
                        let trb = !tb.eq_ignore_ascii_case(&b'N');
                        // Stored shapes: op(A) is m×k, op(B) k×n.
                        let (ar, ac) = if tra { (k, m) } else { (m, k) };
                        let (br, bc) = if trb { (n, k) } else { (k, n) };
                        let (lda, ldb, ldc) = (ar.max(1) + pad, br.max(1) + pad, m.max(1) + pad);
                        let a = vals(lda * ac.max(1), 1);
                        let b = vals(ldb * bc.max(1), 2);
                        let c0 = vals(ldc * n.max(1), 3);
                        let mut want = c0.clone();
                        {
                            let av = col_view(&a, ar, ac, lda);
                            let bv = col_view(&b, br, bc, ldb);
                            let av = if tra { av.t() } else { av };
                            let bv = if trb { bv.t() } else { bv };
                            let cv = MatMut::from_strides(&mut want, m, n, 1, ldc).unwrap();
                            reference::gemm(alpha, av, bv, beta, cv).unwrap();
                        }
                        let mut c = c0.clone();
                        call(
                            ta,
                            tb,
                            m as c_int,
                            n as c_int,
                            k as c_int,
                            alpha,
                            a.as_ptr(),
                            lda as c_int,
                            b.as_ptr(),
                            ldb as c_int,
                            beta,
                            c.as_mut_ptr(),
                            ldc as c_int,
                        );
                        // Padding rows of C stay as they were: the reference
                        // leaves them too, so the whole buffer must agree.
                        assert_eq!(
                            c, want,
                            "{} {} m={m} n={n} k={k} pad={pad} alpha={alpha} beta={beta}",
                            ta as char, tb as char
                        );
                        assert!(xerbla_calls().is_empty(), "{}", last_error_string());
                        calls += 1;
                    }
                }
            }
        }
    }
    assert_eq!(calls, shapes.len() * 36 * 2 * 4);
}

#[test]
fn beta_zero_never_reads_c_and_alpha_zero_never_reads_a_b() {
    let mut c = vec![f32::NAN; 6];
    let a = vals(6, 1);
    let b = vals(9, 2);
    call(
        b'N',
        b'N',
        2,
        3,
        3,
        1.0,
        a.as_ptr(),
        2,
        b.as_ptr(),
        3,
        0.0,
        c.as_mut_ptr(),
        2,
    );
    assert!(c.iter().all(|x| x.is_finite()), "{c:?}");
    // alpha = 0: A and B may be NULL; C = beta·C.
    let mut c = vec![2.0f32; 6];
    call(b'N', b'T', 2, 3, 3, 0.0, null(), 2, null(), 3, 0.5, c.as_mut_ptr(), 2);
    assert_eq!(c, vec![1.0; 6]);
    // Quick returns: M = 0, or K = 0 with beta = 1, touch nothing, even NULLs.
    call(b'N', b'N', 0, 3, 3, 1.0, null(), 1, null(), 3, 0.0, null_mut(), 1);
    call(b'N', b'N', 2, 3, 0, 1.0, null(), 2, null(), 1, 1.0, c.as_mut_ptr(), 2);
    assert_eq!(c, vec![1.0; 6]);
    assert!(xerbla_calls().is_empty(), "{}", last_error_string());
}

#[test]
fn hidden_string_lengths_are_accepted() {
    // gfortran appends the lengths of TRANSA and TRANSB as size_t.
    type WithLengths = unsafe extern "C" fn(
        *const c_char,
        *const c_char,
        *const c_int,
        *const c_int,
        *const c_int,
        *const f32,
        *const f32,
        *const c_int,
        *const f32,
        *const c_int,
        *const f32,
        *mut f32,
        *const c_int,
        usize,
        usize,
    );
    let f = sgemm_ as unsafe extern "C" fn(_, _, _, _, _, _, _, _, _, _, _, _, _);
    // SAFETY: in the C ABI of every supported target, extra trailing
    // integer arguments are ignored by a callee that does not declare them.
    let f: WithLengths = unsafe { std::mem::transmute(f) };
    let (a, b) = ([1.0f32, 2.0, 3.0, 4.0], [5.0f32, 6.0, 7.0, 8.0]);
    let mut c = [0.0f32; 4];
    let (t, nn, two, one, zero) = (b'T' as c_char, b'N' as c_char, 2, 1.0f32, 0.0f32);
    // SAFETY: all arguments live for the call; 2×2 column-major matrices.
    unsafe {
        f(
            &t,
            &nn,
            &two,
            &two,
            &two,
            &one,
            a.as_ptr(),
            &two,
            b.as_ptr(),
            &two,
            &zero,
            c.as_mut_ptr(),
            &two,
            1,
            1,
        )
    };
    // Aᵀ·B with A = [1 3; 2 4], B = [5 7; 6 8] (column-major).
    assert_eq!(c, [17.0, 39.0, 23.0, 53.0]);
}

#[test]
fn each_invalid_argument_reaches_xerbla_with_the_reference_info() {
    let a = vals(64, 1);
    let mut c = vec![7.0f32; 64];
    // (transa, transb, m, n, k, lda, ldb, ldc) → INFO, in the reference's order.
    type Args = (u8, u8, c_int, c_int, c_int, c_int, c_int, c_int);
    let cases: &[(Args, c_int)] = &[
        ((b'X', b'N', 2, 2, 2, 2, 2, 2), 1),
        ((b'/', b'Q', 2, 2, 2, 2, 2, 2), 1),
        ((b'N', b'Y', 2, 2, 2, 2, 2, 2), 2),
        ((b't', b' ', 2, 2, 2, 2, 2, 2), 2),
        ((b'N', b'N', -1, 2, 2, 2, 2, 2), 3),
        ((b'N', b'N', -1, -1, -1, 0, 0, 0), 3),
        ((b'N', b'N', 2, -1, 2, 2, 2, 2), 4),
        ((b'N', b'N', 2, 2, -1, 2, 2, 2), 5),
        // LDA ≥ max(1, M) for 'N', max(1, K) for 'T'.
        ((b'N', b'N', 2, 0, 0, 1, 1, 2), 8),
        ((b'T', b'N', 0, 0, 2, 1, 2, 1), 8),
        ((b'c', b'N', 3, 1, 0, 0, 1, 3), 8),
        // LDB ≥ max(1, K) for 'N', max(1, N) for 'T'.
        ((b'N', b'N', 0, 0, 2, 1, 1, 1), 10),
        ((b'N', b'T', 0, 2, 0, 1, 1, 1), 10),
        ((b'N', b'C', 1, 1, 1, 1, 0, 1), 10),
        // LDC ≥ max(1, M).
        ((b'N', b'N', 2, 0, 0, 2, 1, 1), 13),
        ((b'N', b'N', 0, 0, 0, 1, 1, 0), 13),
    ];
    for &((ta, tb, m, n, k, lda, ldb, ldc), info) in cases {
        call(
            ta,
            tb,
            m,
            n,
            k,
            1.0,
            a.as_ptr(),
            lda,
            a.as_ptr(),
            ldb,
            0.0,
            c.as_mut_ptr(),
            ldc,
        );
        let what = format!("{} {} {m} {n} {k} {lda} {ldb} {ldc}", ta as char, tb as char);
        assert_eq!(xerbla_calls(), vec![("SGEMM ".to_string(), info)], "{what}");
        assert!(
            last_error_string().contains(&format!("parameter number {info} ")),
            "{what}: {}",
            last_error_string()
        );
        assert!(c.iter().all(|&x| x == 7.0), "{what}: C written");
    }
}

#[test]
fn null_pointers_and_overlap_are_reported_with_their_argument_numbers() {
    let a = vals(16, 1);
    let mut c = vec![7.0f32; 16];
    let (nn, two, one) = (b'N' as c_char, 2 as c_int, 1.0f32);
    let cp = c.as_mut_ptr();
    // The argument made NULL (or, for 0, C placed over A) → INFO: a NULL
    // scalar is its own argument's number.
    for (which, info) in [
        (1, 1),
        (3, 3),
        (5, 5),
        (6, 6),
        (7, 7),
        (9, 9),
        (12, 12),
        (13, 13),
        (0, 12),
    ] {
        let int = |arg: c_int| if which == arg { null() } else { &two as *const c_int };
        let float = |arg: c_int| if which == arg { null() } else { &one as *const f32 };
        let ta = if which == 1 { null() } else { &nn as *const c_char };
        let ap = if which == 7 {
            null()
        } else if which == 0 {
            cp as *const f32
        } else {
            a.as_ptr()
        };
        let bp = if which == 9 { null() } else { a.as_ptr() };
        let cptr = if which == 12 { null_mut() } else { cp };
        // SAFETY: non-null pointers are live locals or `a` / `c`, whose 16
        // elements cover every 2×2 matrix with leading dimension 2.
        unsafe {
            sgemm_(
                ta,
                &nn,
                int(3),
                &two,
                int(5),
                float(6),
                ap,
                &two,
                bp,
                &two,
                &one,
                cptr,
                int(13),
            )
        };
        assert_eq!(xerbla_calls(), vec![("SGEMM ".to_string(), info)], "argument {which}");
        assert!(c.iter().all(|&x| x == 7.0), "argument {which}: C written");
    }
}
