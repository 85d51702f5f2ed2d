//! `cblas_sgemm`'s error exits in a program that defines `cblas_xerbla`,
//! as the reference CBLAS tester does: each invalid argument reaches it
//! with the reference CBLAS's number (row-major: `M`/`N` and `lda`/`ldb`
//! exchanged, `N` checked first) while the reference's `RowMajorStrg` says
//! the layout, `C` untouched; a handler installed with
//! `nnkern_set_cblas_error_handler` takes precedence.

use nnkern_capi::*;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};
use std::sync::Mutex;

/// The reference CBLAS's layout flag, which the tester defines (through a
/// copy relocation) and its `cblas_xerbla` reads.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut RowMajorStrg: c_int = 0;

fn row_major_strg() -> c_int {
    // SAFETY: a plain int; the tests that call cblas_sgemm hold HANDLER_LOCK.
    unsafe { std::ptr::addr_of!(RowMajorStrg).read_volatile() }
}

thread_local! {
    /// (number, routine, form) of each `cblas_xerbla` call on this thread.
    static CALLS: RefCell<Vec<(c_int, String, String)>> = const { RefCell::new(Vec::new()) };
    /// RowMajorStrg as each `cblas_xerbla` call saw it.
    static FLAGS: RefCell<Vec<c_int>> = const { RefCell::new(Vec::new()) };
    static HANDLED: RefCell<Vec<c_int>> = const { RefCell::new(Vec::new()) };
}

/// The handler is process-wide: tests that install one run alone.
static HANDLER_LOCK: Mutex<()> = Mutex::new(());

/// The program's `cblas_xerbla` (declared `(int, const char *, const char
/// *, ...)`; the variadic part is not read here): records the call.
///
/// # Safety
/// `rout` and `form` are NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn cblas_xerbla(p: c_int, rout: *const c_char, form: *const c_char) {
    // SAFETY: the contract above.
    let (rout, form) = unsafe { (CStr::from_ptr(rout), CStr::from_ptr(form)) };
    let call = (
        p,
        rout.to_string_lossy().into_owned(),
        form.to_string_lossy().into_owned(),
    );
    CALLS.with(|c| c.borrow_mut().push(call));
    FLAGS.with(|f| f.borrow_mut().push(row_major_strg()));
}

fn flags() -> Vec<c_int> {
    FLAGS.with(|f| std::mem::take(&mut *f.borrow_mut()))
}

fn calls() -> Vec<(c_int, String, String)> {
    CALLS.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

unsafe extern "C" fn record(p: c_int, _rout: *const c_char, _message: *const c_char) {
    HANDLED.with(|h| h.borrow_mut().push(p));
}

/// The reference tester's own map back from the reference's number to the
/// position in the C signature for a row-major `gemm`.
fn tester_unswap(row_major: bool, p: c_int) -> c_int {
    match (row_major, p) {
        (true, 4) => 5,
        (true, 5) => 4,
        (true, 9) => 11,
        (true, 11) => 9,
        _ => p,
    }
}

/// (order, ta, tb, m, n, k, lda, ldb, ldc).
type Call = [c_int; 9];

fn run(args: Call, c: &mut [f32]) {
    let a = [0.0f32; 64];
    let [order, ta, tb, m, n, k, lda, ldb, ldc] = args;
    // SAFETY: invalid calls read nothing; `a` and `c` hold 64 elements.
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
}

#[test]
fn cblas_xerbla_gets_the_reference_numbers() {
    let _lock = HANDLER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    nnkern_set_cblas_error_handler(None);
    let (rm, cm, nt, tr) = (CBLAS_ROW_MAJOR, CBLAS_COL_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS);
    let mut c = vec![7.0f32; 64];
    // Call → (the reference's number, the C position nnkern_last_error names).
    let cases: &[(Call, c_int, c_int)] = &[
        ([0, nt, nt, 2, 2, 2, 2, 2, 2], 1, 1),
        ([103, tr, tr, 0, 0, 0, 1, 1, 1], 1, 1),
        ([cm, 7, nt, 2, 2, 2, 2, 2, 2], 2, 2),
        ([rm, 7, 9, 2, 2, 2, 2, 2, 2], 2, 2),
        ([rm, nt, 114, 2, 2, 2, 2, 2, 2], 3, 3),
        // Column-major: the C positions.
        ([cm, nt, nt, -1, 2, 2, 2, 2, 2], 4, 4),
        ([cm, nt, nt, 2, -1, 2, 2, 2, 2], 5, 5),
        ([cm, nt, nt, 2, 2, -1, 2, 2, 2], 6, 6),
        ([cm, nt, nt, 2, 0, 0, 1, 1, 2], 9, 9),
        ([cm, tr, nt, 0, 0, 2, 1, 2, 1], 9, 9),
        ([cm, nt, nt, 0, 0, 2, 1, 1, 1], 11, 11),
        ([cm, nt, tr, 0, 2, 0, 1, 1, 1], 11, 11),
        ([cm, nt, nt, 2, 0, 0, 2, 1, 1], 14, 14),
        // Row-major: the reference calls SGEMM with N, M, B, ldb, A, lda.
        ([rm, nt, nt, -1, 2, 2, 2, 2, 2], 5, 4),
        ([rm, nt, nt, 2, -1, 2, 2, 2, 2], 4, 5),
        ([rm, nt, nt, 2, 2, -1, 2, 2, 2], 6, 6),
        ([rm, nt, nt, 0, 0, 2, 1, 1, 1], 11, 9),
        ([rm, tr, nt, 2, 0, 0, 1, 1, 1], 11, 9),
        ([rm, nt, nt, 0, 2, 0, 1, 1, 2], 9, 11),
        ([rm, nt, tr, 0, 0, 2, 2, 1, 1], 9, 11),
        ([rm, nt, nt, 0, 2, 0, 1, 2, 1], 14, 14),
        // Several bad arguments: the reference reports its first.
        ([rm, nt, nt, -1, -1, 2, 2, 2, 2], 4, 4),
        ([rm, nt, nt, 0, 2, 2, 1, 1, 1], 9, 9),
    ];
    for &(args, reference, position) in cases {
        run(args, &mut c);
        assert_eq!(
            calls(),
            vec![(reference, "cblas_sgemm".to_string(), "%s\n".to_string())],
            "{args:?}"
        );
        assert!(
            last_error_string().contains(&format!("parameter number {position} ")),
            "{args:?}: {}",
            last_error_string()
        );
        assert!(c.iter().all(|&x| x == 7.0), "{args:?}: C written");
        // Set as the reference sets it during the call, 0 after.
        let row = args[0] == rm;
        assert_eq!(flags(), vec![row as c_int], "{args:?}");
        assert_eq!(row_major_strg(), 0);
    }
    // Our own checks keep their C positions in both layouts (A 8, B 10, C 13).
    for order in [rm, cm] {
        let b = [1.0f32; 4];
        // SAFETY: invalid calls (a NULL matrix) read nothing.
        unsafe {
            cblas_sgemm(
                order,
                nt,
                nt,
                2,
                2,
                2,
                1.0,
                std::ptr::null(),
                2,
                b.as_ptr(),
                2,
                0.0,
                c.as_mut_ptr(),
                2,
            );
            assert_eq!(calls()[0].0, 8);
            cblas_sgemm(
                order,
                nt,
                nt,
                2,
                2,
                2,
                1.0,
                b.as_ptr(),
                2,
                std::ptr::null(),
                2,
                0.0,
                c.as_mut_ptr(),
                2,
            );
            assert_eq!(calls()[0].0, 10);
            cblas_sgemm(
                order,
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
                std::ptr::null_mut(),
                2,
            );
            assert_eq!(calls()[0].0, 13);
        }
    }
}

#[test]
fn every_single_bad_argument_maps_back_as_the_reference_tester_expects() {
    let _lock = HANDLER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    nnkern_set_cblas_error_handler(None);
    let mut c = vec![7.0f32; 64];
    let mut checked = 0;
    for order in [CBLAS_ROW_MAJOR, CBLAS_COL_MAJOR] {
        for ta in [CBLAS_NO_TRANS, CBLAS_TRANS, CBLAS_CONJ_TRANS] {
            for tb in [CBLAS_NO_TRANS, CBLAS_TRANS, CBLAS_CONJ_TRANS] {
                let (m, n, k) = (2, 3, 4);
                let row = order == CBLAS_ROW_MAJOR;
                let stored = |rows: c_int, cols: c_int, t: bool| match (row, t) {
                    (true, false) | (false, true) => cols,
                    (true, true) | (false, false) => rows,
                };
                let good: Call = [
                    order,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    stored(m, k, ta != CBLAS_NO_TRANS),
                    stored(k, n, tb != CBLAS_NO_TRANS),
                    stored(m, n, false),
                ];
                // Each argument made bad on its own, with its C position.
                for (slot, bad, position) in [(3, -1, 4), (4, -1, 5), (5, -1, 6), (6, 0, 9), (7, 0, 11), (8, 0, 14)] {
                    let mut args = good;
                    args[slot] = if bad == 0 { good[slot] - 1 } else { bad };
                    run(args, &mut c);
                    let got = calls();
                    assert_eq!(got.len(), 1, "{args:?}");
                    assert_eq!(tester_unswap(row, got[0].0), position, "{args:?}");
                    assert!(c.iter().all(|&x| x == 7.0), "{args:?}: C written");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 9 * 6);
}

#[test]
fn an_installed_handler_takes_precedence_over_cblas_xerbla() {
    let _lock = HANDLER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    nnkern_set_cblas_error_handler(Some(record));
    let mut c = vec![7.0f32; 64];
    // Row-major M < 0: the handler gets the C position 4.
    run(
        [CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, -1, 2, 2, 2, 2, 2],
        &mut c,
    );
    nnkern_set_cblas_error_handler(None);
    assert_eq!(HANDLED.with(|h| std::mem::take(&mut *h.borrow_mut())), vec![4]);
    assert!(calls().is_empty());
    // And without it, cblas_xerbla again.
    run(
        [CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, -1, 2, 2, 2, 2, 2],
        &mut c,
    );
    assert_eq!(calls()[0].0, 5);
    assert!(c.iter().all(|&x| x == 7.0));
}
