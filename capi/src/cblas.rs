//! `cblas_sgemm`, call-compatible with CBLAS (`cblas.h` of the reference
//! BLAS, OpenBLAS, MKL), and its error reporting.
//!
//! CBLAS reports a bad argument by calling an error handler with the
//! argument's 1-based position in the C signature (1 = `Order`,
//! 4 = `M`, 9 = `lda`, ...) and returning without touching `C`. The
//! reference handler prints a message and exits; this one prints
//! `** On entry to cblas_sgemm, parameter number N had an illegal value`
//! to standard error and returns, so a bad call never ends the process.
//! [`nnkern_set_cblas_error_handler`] installs another handler (for example
//! one that records the position, or does nothing); the message is also
//! available from `nnkern_last_error()`.

use super::{guard, set_last_error, CMat};
use nnkern::error::Error;
use std::ffi::{c_char, c_int, CString};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `enum CBLAS_ORDER`: taken as a plain `int` so an out-of-range value from
/// C is an error, not undefined behaviour.
pub type CblasOrder = c_int;
/// `enum CBLAS_TRANSPOSE`, as a plain `int` (see [`CblasOrder`]).
pub type CblasTranspose = c_int;

/// `CblasRowMajor`.
pub const CBLAS_ROW_MAJOR: c_int = 101;
/// `CblasColMajor`.
pub const CBLAS_COL_MAJOR: c_int = 102;
/// `CblasNoTrans`.
pub const CBLAS_NO_TRANS: c_int = 111;
/// `CblasTrans`.
pub const CBLAS_TRANS: c_int = 112;
/// `CblasConjTrans` (the same as `CblasTrans` for real matrices).
pub const CBLAS_CONJ_TRANS: c_int = 113;

/// An error handler: the 1-based position of the bad parameter, the routine
/// name and a message, both NUL-terminated and valid during the call only.
pub type NnkernCblasErrorHandler = Option<unsafe extern "C" fn(c_int, *const c_char, *const c_char)>;

static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs `handler` as the process-wide CBLAS error handler; NULL restores
/// the default one (print to standard error and return). Never aborts.
#[no_mangle]
pub extern "C" fn nnkern_set_cblas_error_handler(handler: NnkernCblasErrorHandler) {
    HANDLER.store(handler.map_or(0, |f| f as usize), Ordering::SeqCst);
}

fn report(param: c_int, routine: &str, what: &str) {
    let message = format!("** On entry to {routine}, parameter number {param} had an illegal value ({what})");
    set_last_error(&message);
    let raw = HANDLER.load(Ordering::SeqCst);
    if raw == 0 {
        // Never panic over a closed standard error.
        let _ = writeln!(std::io::stderr(), "{message}");
        return;
    }
    // SAFETY: `raw` was stored from a non-null
    // `unsafe extern "C" fn(c_int, *const c_char, *const c_char)` in
    // `nnkern_set_cblas_error_handler`, and function pointers round-trip
    // through usize on every supported target.
    let f: unsafe extern "C" fn(c_int, *const c_char, *const c_char) = unsafe { std::mem::transmute(raw) };
    let r = CString::new(routine).unwrap_or_default();
    let m = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: the handler's contract is the CBLAS one: two valid C strings
    // for the duration of the call.
    unsafe { f(param, r.as_ptr(), m.as_ptr()) };
}

/// The first invalid argument of a `cblas_sgemm` call, as CBLAS numbers them
/// (positions in the C signature), with a reason; `None` when the
/// description is valid.
pub fn cblas_sgemm_check(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    lda: c_int,
    ldb: c_int,
    ldc: c_int,
) -> Option<(c_int, String)> {
    let trans = |t: c_int| matches!(t, CBLAS_NO_TRANS | CBLAS_TRANS | CBLAS_CONJ_TRANS);
    if order != CBLAS_ROW_MAJOR && order != CBLAS_COL_MAJOR {
        return Some((
            1,
            format!("Order = {order}, expected CblasRowMajor (101) or CblasColMajor (102)"),
        ));
    }
    if !trans(trans_a) {
        return Some((
            2,
            format!("TransA = {trans_a}, expected CblasNoTrans (111) or CblasTrans (112)"),
        ));
    }
    if !trans(trans_b) {
        return Some((
            3,
            format!("TransB = {trans_b}, expected CblasNoTrans (111) or CblasTrans (112)"),
        ));
    }
    for (pos, name, v) in [(4, "M", m), (5, "N", n), (6, "K", k)] {
        if v < 0 {
            return Some((pos, format!("{name} = {v} is negative")));
        }
    }
    let row_major = order == CBLAS_ROW_MAJOR;
    let ta = trans_a != CBLAS_NO_TRANS;
    let tb = trans_b != CBLAS_NO_TRANS;
    // The leading dimension must cover the stored matrix's rows (column-major)
    // or columns (row-major).
    let min_lda = match (row_major, ta) {
        (false, false) | (true, true) => m,
        (false, true) | (true, false) => k,
    };
    let min_ldb = match (row_major, tb) {
        (false, false) | (true, true) => k,
        (false, true) | (true, false) => n,
    };
    let min_ldc = if row_major { n } else { m };
    for (pos, name, v, min) in [
        (9, "lda", lda, min_lda),
        (11, "ldb", ldb, min_ldb),
        (14, "ldc", ldc, min_ldc),
    ] {
        if v < min.max(1) {
            return Some((pos, format!("{name} = {v}, expected at least {}", min.max(1))));
        }
    }
    None
}

/// `C = alpha·op(A)·op(B) + beta·C`, as CBLAS defines it.
///
/// `Order` is `CblasRowMajor` (101) or `CblasColMajor` (102); `TransA` and
/// `TransB` are `CblasNoTrans` (111), `CblasTrans` (112) or `CblasConjTrans`
/// (113, the same as `CblasTrans` for real data). A bad argument is reported
/// through the CBLAS error handler (see [`nnkern_set_cblas_error_handler`])
/// and `nnkern_last_error()`, and `C` is not touched. Beyond what CBLAS
/// checks, NULL pointers to non-empty matrices (positions 8, 10, 13) and a
/// `C` that overlaps `A` or `B` (position 13) are reported too.
///
/// # Safety
/// As for any CBLAS: `A`, `B`, `C` address the matrices their sizes and
/// leading dimensions describe; `C` is writable.
#[no_mangle]
pub unsafe extern "C" fn cblas_sgemm(
    order: CblasOrder,
    trans_a: CblasTranspose,
    trans_b: CblasTranspose,
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
    const NAME: &str = "cblas_sgemm";
    let mut bad: Option<(c_int, String)> = None;
    let status = guard(NAME, || {
        if let Some(e) = cblas_sgemm_check(order, trans_a, trans_b, m, n, k, lda, ldb, ldc) {
            bad = Some(e);
            return Ok(());
        }
        // All of these are non-negative now.
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let (lda, ldb, ldc) = (lda as i64, ldb as i64, ldc as i64);
        let row_major = order == CBLAS_ROW_MAJOR;
        let ta = trans_a != CBLAS_NO_TRANS;
        let tb = trans_b != CBLAS_NO_TRANS;
        // Strides of op(X)(i, j) in a matrix stored with leading dimension ld:
        // column-major element (r, c) is at r + c·ld, row-major at r·ld + c;
        // a transpose swaps the roles.
        let strides = |ld: i64, t: bool| if row_major != t { (ld, 1) } else { (1, ld) };
        let (a_rs, a_cs) = strides(lda, ta);
        let (b_rs, b_cs) = strides(ldb, tb);
        let (c_rs, c_cs) = strides(ldc, false);
        let unread = alpha == 0.0 || ku == 0;
        let dummy = [0.0f32];
        let (a, a_rs, a_cs) = if unread && a.is_null() {
            (dummy.as_ptr(), 0, 0)
        } else {
            (a, a_rs, a_cs)
        };
        let (b, b_rs, b_cs) = if unread && b.is_null() {
            (dummy.as_ptr(), 0, 0)
        } else {
            (b, b_rs, b_cs)
        };
        let checked = (|| {
            let am = CMat::new("A", a, mu, ku, a_rs, a_cs).map_err(|e| (8, e))?;
            let bm = CMat::new("B", b, ku, nu, b_rs, b_cs).map_err(|e| (10, e))?;
            let cm = CMat::new_out("C", c, mu, nu, c_rs, c_cs).map_err(|e| (13, e))?;
            cm.span.check_disjoint(&am.span).map_err(|e| (13, e))?;
            cm.span.check_disjoint(&bm.span).map_err(|e| (13, e))?;
            Ok::<_, (c_int, Error)>((am, bm, cm))
        })();
        let (am, bm, cm) = match checked {
            Ok(v) => v,
            Err((pos, e)) => {
                bad = Some((pos, e.to_string()));
                return Ok(());
            }
        };
        // SAFETY: spans validated; C overlaps neither input; the memory
        // itself is the caller's contract, as for any CBLAS.
        let (av, bv, cv) = unsafe { (am.view()?, bm.view()?, cm.view_mut()?) };
        nnkern::gemm(alpha, av, bv, beta, cv)
    });
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some((pos, what)) = bad {
            report(pos, NAME, &what);
        } else if status != super::NNKERN_OK {
            // Only a panic can get here (every argument was validated); CBLAS
            // has no status, so report it through the handler as position 0.
            report(0, NAME, &super::last_error_string());
        }
    }));
}
