//! The C ABI called from Rust as C would call it: results against the Rust
//! API, CBLAS semantics and error positions, and every kind of bad
//! argument giving a status with the outputs untouched.

use nnkern::{gemm, MatMut, MatRef};
use nnkern_capi::testing::{last_cblas_param, record_cblas_error};
use nnkern_capi::*;
use proptest::prelude::*;
use std::ffi::{c_char, c_int, CStr};
use std::ptr::{null, null_mut};

fn last_error() -> String {
    // SAFETY: nnkern_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(nnkern_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn vals(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i * 7 + seed * 13) % 23) as f32 * 0.125 - 1.375)
        .collect()
}

/// `cblas_sgemm` by the BLAS definition, in f64.
#[allow(clippy::too_many_arguments)]
fn blas_ref(
    row_major: bool,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let at = |i: usize, j: usize, ld: usize| if row_major { i * ld + j } else { i + j * ld };
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if ta { a[at(p, i, lda)] } else { a[at(i, p, lda)] };
                let bv = if tb { b[at(j, p, ldb)] } else { b[at(p, j, ldb)] };
                s += av as f64 * bv as f64;
            }
            let ci = at(i, j, ldc);
            let cin = if beta == 0.0 { 0.0 } else { beta as f64 * c[ci] as f64 };
            c[ci] = (alpha as f64 * s + cin) as f32;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(48)))]

    /// Every order × transpose combination with padded leading dimensions.
    #[test]
    fn cblas_sgemm_matches_the_blas_definition(
        row_major in any::<bool>(), ta in any::<bool>(), tb in any::<bool>(),
        m in 0usize..23, n in 0usize..23, k in 0usize..37,
        pads in (0usize..3, 0usize..3, 0usize..3),
        alpha in prop::sample::select(vec![1.0f32, -0.5, 0.0, 2.0]),
        beta in prop::sample::select(vec![0.0f32, 1.0, -1.5]),
    ) {
        let (a_r, a_c) = if ta { (k, m) } else { (m, k) };
        let (b_r, b_c) = if tb { (n, k) } else { (k, n) };
        let ld = |r: usize, c: usize, pad: usize| (if row_major { c } else { r }).max(1) + pad;
        let (lda, ldb, ldc) = (ld(a_r, a_c, pads.0), ld(b_r, b_c, pads.1), ld(m, n, pads.2));
        let span = |r: usize, c: usize, ld: usize| if row_major { r * ld } else { c * ld };
        let a = vals(span(a_r, a_c, lda), 1);
        let b = vals(span(b_r, b_c, ldb), 2);
        let c0 = vals(span(m, n, ldc), 3);
        let mut want = c0.clone();
        blas_ref(row_major, ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta, &mut want, ldc);
        let mut c = c0.clone();
        let order = if row_major { CBLAS_ROW_MAJOR } else { CBLAS_COL_MAJOR };
        let t = |x: bool| if x { CBLAS_TRANS } else { CBLAS_NO_TRANS };
        nnkern_set_cblas_error_handler(Some(record_cblas_error));
        // SAFETY: buffers hold lda·(stored cols or rows) elements, as BLAS reads.
        unsafe {
            cblas_sgemm(order, t(ta), t(tb), m as i32, n as i32, k as i32, alpha, a.as_ptr(), lda as i32,
                b.as_ptr(), ldb as i32, beta, c.as_mut_ptr(), ldc as i32)
        };
        prop_assert_eq!(last_cblas_param(), -1);
        // Quarter-step values and k < 37: every product and partial sum is
        // exact in f32, so the result must equal the f64 definition exactly.
        prop_assert_eq!(c, want);
    }
}

#[test]
fn cblas_reports_the_first_bad_parameter_and_leaves_c_alone() {
    nnkern_set_cblas_error_handler(Some(record_cblas_error));
    let a = vals(64, 1);
    let mut c = vec![7.0f32; 64];
    let (rm, nt) = (CBLAS_ROW_MAJOR, CBLAS_NO_TRANS);
    // (order, ta, tb, m, n, k, lda, ldb, ldc) → position.
    let cases: [([i32; 9], i32); 12] = [
        ([0, nt, nt, 2, 2, 2, 2, 2, 2], 1),
        ([rm, 7, nt, 2, 2, 2, 2, 2, 2], 2),
        ([rm, nt, 114, 2, 2, 2, 2, 2, 2], 3),
        ([rm, nt, nt, -1, 2, 2, 2, 2, 2], 4),
        ([rm, nt, nt, 2, -3, 2, 2, 2, 2], 5),
        ([rm, nt, nt, 2, 2, -1, 2, 2, 2], 6),
        ([rm, nt, nt, 2, 2, 3, 2, 2, 2], 9),
        ([rm, nt, nt, 2, 3, 2, 2, 2, 3], 11),
        ([rm, nt, nt, 2, 3, 2, 2, 3, 2], 14),
        ([CBLAS_COL_MAJOR, nt, nt, 3, 2, 2, 2, 2, 3], 9),
        ([CBLAS_COL_MAJOR, CBLAS_TRANS, nt, 3, 2, 4, 3, 4, 3], 9),
        ([rm, nt, nt, 0, 0, 0, 0, 1, 1], 9),
    ];
    for ([order, ta, tb, m, n, k, lda, ldb, ldc], pos) in cases {
        // SAFETY: invalid calls read nothing.
        unsafe {
            cblas_sgemm(
                order,
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
            )
        };
        assert_eq!(
            last_cblas_param(),
            pos,
            "{order} {ta} {tb} {m} {n} {k} {lda} {ldb} {ldc}"
        );
        assert!(
            last_error().contains(&format!("parameter number {pos}")),
            "{}",
            last_error()
        );
        assert!(c.iter().all(|&x| x == 7.0));
    }
    // NULL operands (8, 10, 13) and C overlapping A (13).
    let b = vals(4, 2);
    // SAFETY: invalid calls read nothing.
    unsafe {
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            nt,
            nt,
            2,
            2,
            2,
            1.0,
            null(),
            2,
            b.as_ptr(),
            2,
            0.0,
            c.as_mut_ptr(),
            2,
        );
        assert_eq!(last_cblas_param(), 8);
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            nt,
            nt,
            2,
            2,
            2,
            1.0,
            b.as_ptr(),
            2,
            null(),
            2,
            0.0,
            c.as_mut_ptr(),
            2,
        );
        assert_eq!(last_cblas_param(), 10);
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            nt,
            nt,
            2,
            2,
            2,
            1.0,
            b.as_ptr(),
            2,
            b.as_ptr(),
            2,
            0.0,
            null_mut(),
            2,
        );
        assert_eq!(last_cblas_param(), 13);
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            nt,
            nt,
            2,
            2,
            2,
            1.0,
            c.as_ptr(),
            2,
            b.as_ptr(),
            2,
            0.0,
            c.as_mut_ptr(),
            2,
        );
        assert_eq!(last_cblas_param(), 13);
        assert!(last_error().contains("overlaps"), "{}", last_error());
    }
    assert!(c.iter().all(|&x| x == 7.0));
    // alpha = 0: A and B are never read, so they may be NULL (BLAS convention).
    // SAFETY: A and B unread; C holds 4 elements.
    unsafe {
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            nt,
            nt,
            2,
            2,
            2,
            0.0,
            null(),
            2,
            null(),
            2,
            0.5,
            c.as_mut_ptr(),
            2,
        )
    };
    assert_eq!(last_cblas_param(), -1);
    assert_eq!(&c[..4], &[3.5; 4]);
}

#[test]
fn default_cblas_handler_returns_instead_of_exiting() {
    // Another test may install the recording handler concurrently; either
    // way the call must come back, and a NULL handler must be accepted.
    nnkern_set_cblas_error_handler(None);
    let mut c = [1.0f32];
    // SAFETY: invalid call (order 0), reads nothing.
    unsafe {
        cblas_sgemm(
            0,
            111,
            111,
            1,
            1,
            1,
            1.0,
            c.as_ptr(),
            1,
            c.as_ptr(),
            1,
            0.0,
            c.as_mut_ptr(),
            1,
        )
    };
    assert_eq!(c, [1.0]);
    assert!(last_error().contains("parameter number 1"));
    nnkern_set_cblas_error_handler(Some(record_cblas_error));
}

#[test]
fn sgemm_without_xerbla_reports_and_returns() {
    // This program defines no xerbla_: the call must come back with C
    // untouched and the message left for nnkern_last_error.
    let a = vals(4, 1);
    let mut c = [7.0f32; 4];
    let (nn, two, one, lda) = (b'N' as c_char, 2 as c_int, 1.0f32, 1 as c_int);
    // SAFETY: every scalar is a live local; the call is invalid (LDA = 1 < M)
    // and reads no matrix.
    unsafe {
        sgemm_(
            &nn,
            &nn,
            &two,
            &two,
            &two,
            &one,
            a.as_ptr(),
            &lda,
            a.as_ptr(),
            &two,
            &one,
            c.as_mut_ptr(),
            &two,
        )
    };
    assert_eq!(c, [7.0; 4]);
    let msg = last_error();
    assert!(msg.contains("SGEMM") && msg.contains("parameter number 8 "), "{msg}");
}

#[test]
fn strided_gemm_entries_match_the_rust_api() {
    let (m, n, k) = (7, 5, 9);
    let a = vals(m * k, 1);
    let b = vals(n * k, 2);
    let mut want = vec![0.0f32; m * n];
    // A row-major, B given transposed (stored n×k), C column-major.
    gemm(
        1.5,
        MatRef::new(&a, m, k).unwrap(),
        MatRef::new(&b, n, k).unwrap().t(),
        0.0,
        MatMut::col_major(&mut want, m, n).unwrap(),
    )
    .unwrap();
    let mut c = vec![f32::NAN; m * n];
    // SAFETY: buffers match the described shapes.
    let st = unsafe {
        nnkern_sgemm(
            m as i64,
            n as i64,
            k as i64,
            1.5,
            a.as_ptr(),
            k as i64,
            1,
            b.as_ptr(),
            1,
            k as i64,
            0.0,
            c.as_mut_ptr(),
            1,
            m as i64,
        )
    };
    assert_eq!(st, NNKERN_OK, "{}", last_error());
    assert_eq!(c, want);
    for half in [false, true] {
        let mut c = vec![f32::NAN; m * n];
        let mut want = vec![0.0f32; m * n];
        // SAFETY: buffers match the described shapes.
        let st = unsafe {
            if half {
                let ah: Vec<nnkern::f16> = a.iter().map(|&x| nnkern::f16::from_f32(x)).collect();
                let bh: Vec<nnkern::f16> = b.iter().map(|&x| nnkern::f16::from_f32(x)).collect();
                gemm(
                    1.0,
                    MatRef::new(&ah, m, k).unwrap(),
                    MatRef::new(&bh, n, k).unwrap().t(),
                    0.0,
                    MatMut::new(&mut want, m, n).unwrap(),
                )
                .unwrap();
                nnkern_gemm_f16(
                    m as i64,
                    n as i64,
                    k as i64,
                    1.0,
                    ah.as_ptr(),
                    k as i64,
                    1,
                    bh.as_ptr(),
                    1,
                    k as i64,
                    0.0,
                    c.as_mut_ptr(),
                    n as i64,
                    1,
                )
            } else {
                let ab: Vec<nnkern::bf16> = a.iter().map(|&x| nnkern::bf16::from_f32(x)).collect();
                let bb: Vec<nnkern::bf16> = b.iter().map(|&x| nnkern::bf16::from_f32(x)).collect();
                gemm(
                    1.0,
                    MatRef::new(&ab, m, k).unwrap(),
                    MatRef::new(&bb, n, k).unwrap().t(),
                    0.0,
                    MatMut::new(&mut want, m, n).unwrap(),
                )
                .unwrap();
                nnkern_gemm_bf16(
                    m as i64,
                    n as i64,
                    k as i64,
                    1.0,
                    ab.as_ptr(),
                    k as i64,
                    1,
                    bb.as_ptr(),
                    1,
                    k as i64,
                    0.0,
                    c.as_mut_ptr(),
                    n as i64,
                    1,
                )
            }
        };
        assert_eq!(st, NNKERN_OK, "{}", last_error());
        assert_eq!(c, want);
    }
}

#[test]
fn bad_arguments_give_statuses_and_touch_nothing() {
    let x = vals(16, 1);
    let mut y = vec![9.0f32; 16];
    // SAFETY: every call below is invalid and must fail before reading or
    // writing; the buffers are large enough for any valid reading anyway.
    unsafe {
        let cases: Vec<(i32, &str)> = vec![
            (
                nnkern_activation_forward(NNKERN_ACT_RELU, null(), y.as_mut_ptr(), 4),
                "null x",
            ),
            (
                nnkern_activation_forward(NNKERN_ACT_RELU, x.as_ptr(), null_mut(), 4),
                "null y",
            ),
            (nnkern_activation_forward(17, x.as_ptr(), y.as_mut_ptr(), 4), "bad code"),
            (
                nnkern_activation_forward(NNKERN_ACT_RELU, x.as_ptr(), y.as_mut_ptr(), -4),
                "negative n",
            ),
            (
                nnkern_activation_forward(NNKERN_ACT_RELU, x.as_ptr(), y.as_mut_ptr(), i64::MAX),
                "huge n",
            ),
            (
                nnkern_activation_forward(
                    NNKERN_ACT_RELU,
                    x.as_ptr(),
                    (y.as_mut_ptr() as *mut u8).add(1) as *mut f32,
                    4,
                ),
                "misaligned",
            ),
            (
                nnkern_activation_forward(NNKERN_ACT_RELU, y.as_ptr(), y.as_mut_ptr().add(2), 4),
                "overlap",
            ),
            (
                nnkern_activation_backward(NNKERN_ACT_TANH, x.as_ptr(), y.as_ptr(), y.as_mut_ptr(), 4),
                "dx = dy",
            ),
            (
                nnkern_softmax(2, 2, x.as_ptr(), 2, 1, y.as_mut_ptr(), 1, 1),
                "y strides alias",
            ),
            (
                nnkern_softmax(2, 2, x.as_ptr(), -2, 1, y.as_mut_ptr(), 2, 1),
                "negative stride",
            ),
            (
                nnkern_softmax(3, 3, x.as_ptr(), i64::MAX / 2, 1, y.as_mut_ptr(), 3, 1),
                "overflowing extent",
            ),
            (
                nnkern_bias_add(4, 4, y.as_mut_ptr(), 4, 1, y.as_ptr().add(12)),
                "bias inside x",
            ),
            (
                nnkern_sgemm(
                    2,
                    2,
                    2,
                    1.0,
                    x.as_ptr(),
                    2,
                    1,
                    x.as_ptr(),
                    2,
                    1,
                    0.0,
                    y.as_mut_ptr(),
                    1,
                    1,
                ),
                "C strides",
            ),
            (
                nnkern_sgemm(
                    2,
                    2,
                    -2,
                    1.0,
                    x.as_ptr(),
                    2,
                    1,
                    x.as_ptr(),
                    2,
                    1,
                    0.0,
                    y.as_mut_ptr(),
                    2,
                    1,
                ),
                "k < 0",
            ),
            (nnkern_set_num_threads(0), "0 threads"),
            (nnkern_force_isa(42), "unknown ISA"),
            (
                nnkern_adam_step(null(), 1, y.as_mut_ptr(), x.as_ptr(), y.as_mut_ptr(), y.as_mut_ptr(), 0),
                "null cfg",
            ),
        ];
        for (status, what) in cases {
            assert_ne!(status, NNKERN_OK, "{what}");
            assert!(!last_error().is_empty(), "{what}");
            let s = CStr::from_ptr(nnkern_status_string(status)).to_str().unwrap();
            assert_ne!(s, "unknown status", "{what}: {status}");
        }
        assert!(y.iter().all(|&v| v == 9.0), "an output was written by a failed call");
        // Specific codes.
        assert_eq!(
            nnkern_activation_forward(NNKERN_ACT_RELU, null(), y.as_mut_ptr(), 4),
            NNKERN_ERR_NULL_POINTER
        );
        assert_eq!(
            nnkern_activation_forward(NNKERN_ACT_RELU, y.as_ptr(), y.as_mut_ptr().add(2), 4),
            NNKERN_ERR_ALIASING
        );
        assert_eq!(
            nnkern_softmax(3, 3, x.as_ptr(), i64::MAX / 2, 1, y.as_mut_ptr(), 3, 1),
            NNKERN_ERR_OVERFLOW
        );
        assert_eq!(
            nnkern_activation_forward(17, x.as_ptr(), y.as_mut_ptr(), 4),
            NNKERN_ERR_INVALID_ARGUMENT
        );
        let labels = [5u32, 0];
        let mut loss = 0.0f32;
        assert_eq!(
            nnkern_softmax_xent_loss_labels(2, 3, x.as_ptr(), 3, 1, labels.as_ptr(), &mut loss),
            NNKERN_ERR_LABEL_OUT_OF_RANGE
        );
        assert!(last_error().contains("labels"), "{}", last_error());
        let mut cfg = std::mem::zeroed::<nnkern_adam_config>();
        assert_eq!(nnkern_adam_config_default(&mut cfg, 0), NNKERN_OK);
        cfg.beta1 = 1.0;
        assert_eq!(
            nnkern_adam_step(
                &cfg,
                1,
                y.as_mut_ptr(),
                x.as_ptr(),
                y.as_mut_ptr().add(4),
                y.as_mut_ptr().add(8),
                4
            ),
            NNKERN_ERR_INVALID_VALUE
        );
        cfg.beta1 = 0.9;
        cfg.decay = 5;
        assert_eq!(
            nnkern_adam_step(
                &cfg,
                1,
                y.as_mut_ptr(),
                x.as_ptr(),
                y.as_mut_ptr().add(4),
                y.as_mut_ptr().add(8),
                4
            ),
            NNKERN_ERR_INVALID_ARGUMENT
        );
        // Overlapping w and m.
        cfg.decay = NNKERN_DECAY_L2;
        assert_eq!(
            nnkern_adam_step(
                &cfg,
                1,
                y.as_mut_ptr(),
                x.as_ptr(),
                y.as_mut_ptr().add(2),
                y.as_mut_ptr().add(8),
                4
            ),
            NNKERN_ERR_ALIASING
        );
        // Overlapping gradient buffers in clipping.
        let p = [y.as_mut_ptr(), y.as_mut_ptr().add(3)];
        let lens = [4i64, 4];
        assert_eq!(
            nnkern_clip_global_norm(p.as_ptr(), lens.as_ptr(), 2, 1.0, null_mut()),
            NNKERN_ERR_ALIASING
        );
    }
    assert!(y.iter().all(|&v| v == 9.0));
}

#[test]
fn empty_buffers_may_be_null() {
    // SAFETY: zero-sized descriptions read and write nothing.
    unsafe {
        assert_eq!(
            nnkern_activation_forward(NNKERN_ACT_RELU, null(), null_mut(), 0),
            NNKERN_OK
        );
        assert_eq!(
            nnkern_sgemm(0, 0, 0, 1.0, null(), 0, 0, null(), 0, 0, 0.0, null_mut(), 0, 0),
            NNKERN_OK
        );
        assert_eq!(nnkern_bias_grad(0, 0, null(), 0, 0, null_mut()), NNKERN_OK);
        let mut loss = f32::NAN;
        assert_eq!(
            nnkern_softmax_xent_labels(0, 3, null(), 3, 1, null(), null_mut(), 3, 1, &mut loss),
            NNKERN_OK
        );
        assert_eq!(loss, 0.0);
        let mut norm = f32::NAN;
        assert_eq!(nnkern_global_norm(null(), null(), 0, &mut norm), NNKERN_OK);
        assert_eq!(norm, 0.0);
    }
}

#[test]
fn isa_and_threads_control() {
    assert!(nnkern_num_threads() >= 1);
    assert_eq!(nnkern_isa_supported(NNKERN_ISA_SCALAR), 1);
    assert_eq!(nnkern_isa_supported(99), 0);
    // SAFETY: static strings.
    let name = |isa| {
        unsafe { CStr::from_ptr(nnkern_isa_name(isa)) }
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(name(NNKERN_ISA_AVX512), "avx512");
    assert_eq!(name(7), "unknown");
    std::thread::spawn(move || {
        assert_eq!(nnkern_force_isa(NNKERN_ISA_SCALAR), NNKERN_OK);
        assert_eq!(nnkern_active_isa(), NNKERN_ISA_SCALAR);
        let unsupported = [NNKERN_ISA_AVX2, NNKERN_ISA_AVX512, NNKERN_ISA_NEON]
            .into_iter()
            .find(|&i| nnkern_isa_supported(i) == 0)
            .unwrap();
        assert_eq!(nnkern_force_isa(unsupported), NNKERN_ERR_UNSUPPORTED);
        assert_eq!(nnkern_active_isa(), NNKERN_ISA_SCALAR);
        assert_eq!(nnkern_force_isa(NNKERN_ISA_AUTO), NNKERN_OK);
        assert_eq!(nnkern_active_isa(), name_code(nnkern::active_isa()));
    })
    .join()
    .unwrap();
    // SAFETY: static string.
    let v = unsafe { CStr::from_ptr(nnkern_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}

fn name_code(isa: nnkern::Isa) -> i32 {
    match isa {
        nnkern::Isa::Scalar => NNKERN_ISA_SCALAR,
        nnkern::Isa::Avx2 => NNKERN_ISA_AVX2,
        nnkern::Isa::Avx512 => NNKERN_ISA_AVX512,
        _ => NNKERN_ISA_NEON,
    }
}

#[test]
fn last_error_is_per_thread() {
    // SAFETY: invalid call, touches nothing.
    let st = unsafe { nnkern_activation_forward(NNKERN_ACT_RELU, null(), null_mut(), 3) };
    assert_eq!(st, NNKERN_ERR_NULL_POINTER);
    let here = last_error();
    assert!(
        here.contains("nnkern_activation_forward") && here.contains("null pointer"),
        "{here}"
    );
    let there = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(there, "");
}
