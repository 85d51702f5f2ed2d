//! Strided GEMM entries: `C = alpha·A·B + beta·C` with f32 output and f32,
//! bf16 or f16 inputs.

use super::{guard, size, CMat};
use half::{bf16, f16};
use nnkern::ops::gemm::GemmInput;
use std::ffi::c_int;

/// Validates and runs one GEMM described by C arguments. `zero` is a zero of
/// the input type, used as a broadcast stand-in for an input that is never
/// read (`alpha = 0` or `k = 0`) and was passed as NULL.
///
/// # Safety
/// The pointers describe the buffers as `nnkern_sgemm` documents.
pub(crate) unsafe fn gemm_c<T: GemmInput>(
    zero: T,
    m: i64,
    n: i64,
    k: i64,
    alpha: f32,
    a: *const T,
    a_rs: i64,
    a_cs: i64,
    b: *const T,
    b_rs: i64,
    b_cs: i64,
    beta: f32,
    c: *mut f32,
    c_rs: i64,
    c_cs: i64,
) -> nnkern::Result<()> {
    // SAFETY: forwarded contract.
    unsafe {
        with_views(
            zero,
            (m, n, k),
            alpha,
            (a, a_rs, a_cs),
            (b, b_rs, b_cs),
            (c, c_rs, c_cs),
            |av, bv, cv| nnkern::gemm(alpha, av, bv, beta, cv),
        )
    }
}

/// Runs the C entries' whole validation of a GEMM description, then plans
/// the call the driver would make instead of running it (for fuzzing sizes
/// far too large to compute: the arithmetic of every size is exercised, no
/// element is touched).
///
/// # Safety
/// As [`gemm_c`]; no element is read or written.
#[cfg(feature = "testing")]
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn plan_gemm_c<T: GemmInput>(
    zero: T,
    (m, n, k): (i64, i64, i64),
    alpha: f32,
    a: (*const T, i64, i64),
    b: (*const T, i64, i64),
    c: (*mut f32, i64, i64),
) -> nnkern::Result<Option<nnkern::testing::PlanSummary>> {
    let mut out = None;
    // SAFETY: forwarded contract; the closure never touches the elements.
    unsafe {
        with_views(zero, (m, n, k), alpha, a, b, c, |av, bv, cv| {
            let (rs, cs) = cv.strides();
            out = nnkern::testing::plan_gemm(
                nnkern::active_isa(),
                nnkern::num_threads(),
                &av,
                &bv,
                (cv.rows(), cv.cols(), rs, cs),
            )?;
            Ok(())
        })?;
    }
    Ok(out)
}

/// Validates a C GEMM description and hands the views to `f`.
///
/// # Safety
/// As [`gemm_c`].
#[allow(clippy::type_complexity)]
unsafe fn with_views<T: GemmInput>(
    zero: T,
    (m, n, k): (i64, i64, i64),
    alpha: f32,
    (a, a_rs, a_cs): (*const T, i64, i64),
    (b, b_rs, b_cs): (*const T, i64, i64),
    (c, c_rs, c_cs): (*mut f32, i64, i64),
    f: impl FnOnce(nnkern::MatRef<'_, T>, nnkern::MatRef<'_, T>, nnkern::MatMut<'_, f32>) -> nnkern::Result<()>,
) -> nnkern::Result<()> {
    let (m, n, k) = (size("m", m)?, size("n", n)?, size("k", k)?);
    let unread = alpha == 0.0 || k == 0;
    let dummy = [zero];
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
    let am = CMat::new("a", a, m, k, a_rs, a_cs)?;
    let bm = CMat::new("b", b, k, n, b_rs, b_cs)?;
    let cm = CMat::new_out("c", c, m, n, c_rs, c_cs)?;
    cm.span.check_disjoint(&am.span)?;
    cm.span.check_disjoint(&bm.span)?;
    // SAFETY: spans validated above; C overlaps neither input, so the one
    // mutable slice is exclusive; the rest is the caller's contract.
    let (av, bv, cv) = unsafe { (am.view()?, bm.view()?, cm.view_mut()?) };
    f(av, bv, cv)
}

/// `C = alpha·A·B + beta·C`, f32, with `A` `m×k`, `B` `k×n`, `C` `m×n`,
/// each given by a pointer and its row and column strides in elements
/// (row-major: `(cols, 1)`; column-major: `(1, rows)`; a transpose swaps
/// them). `beta = 0` never reads `C`; `alpha = 0` or `k = 0` never reads `A`
/// or `B` (which may then be NULL).
///
/// # Safety
/// Each non-null pointer must address every element its shape and strides
/// reach, valid for the duration of the call; `c` writable.
#[no_mangle]
pub unsafe extern "C" fn nnkern_sgemm(
    m: i64,
    n: i64,
    k: i64,
    alpha: f32,
    a: *const f32,
    a_row_stride: i64,
    a_col_stride: i64,
    b: *const f32,
    b_row_stride: i64,
    b_col_stride: i64,
    beta: f32,
    c: *mut f32,
    c_row_stride: i64,
    c_col_stride: i64,
) -> c_int {
    guard("nnkern_sgemm", || {
        // SAFETY: forwarded contract.
        unsafe {
            gemm_c(
                0.0f32,
                m,
                n,
                k,
                alpha,
                a,
                a_row_stride,
                a_col_stride,
                b,
                b_row_stride,
                b_col_stride,
                beta,
                c,
                c_row_stride,
                c_col_stride,
            )
        }
    })
}

/// As [`nnkern_sgemm`] with bf16 inputs (raw `uint16_t` bits), accumulated
/// and written in f32.
///
/// # Safety
/// As [`nnkern_sgemm`].
#[no_mangle]
pub unsafe extern "C" fn nnkern_gemm_bf16(
    m: i64,
    n: i64,
    k: i64,
    alpha: f32,
    a: *const bf16,
    a_row_stride: i64,
    a_col_stride: i64,
    b: *const bf16,
    b_row_stride: i64,
    b_col_stride: i64,
    beta: f32,
    c: *mut f32,
    c_row_stride: i64,
    c_col_stride: i64,
) -> c_int {
    guard("nnkern_gemm_bf16", || {
        // SAFETY: forwarded contract.
        unsafe {
            gemm_c(
                bf16::ZERO,
                m,
                n,
                k,
                alpha,
                a,
                a_row_stride,
                a_col_stride,
                b,
                b_row_stride,
                b_col_stride,
                beta,
                c,
                c_row_stride,
                c_col_stride,
            )
        }
    })
}

/// As [`nnkern_sgemm`] with IEEE half (f16) inputs (raw `uint16_t` bits),
/// accumulated and written in f32.
///
/// # Safety
/// As [`nnkern_sgemm`].
#[no_mangle]
pub unsafe extern "C" fn nnkern_gemm_f16(
    m: i64,
    n: i64,
    k: i64,
    alpha: f32,
    a: *const f16,
    a_row_stride: i64,
    a_col_stride: i64,
    b: *const f16,
    b_row_stride: i64,
    b_col_stride: i64,
    beta: f32,
    c: *mut f32,
    c_row_stride: i64,
    c_col_stride: i64,
) -> c_int {
    guard("nnkern_gemm_f16", || {
        // SAFETY: forwarded contract.
        unsafe {
            gemm_c(
                f16::ZERO,
                m,
                n,
                k,
                alpha,
                a,
                a_row_stride,
                a_col_stride,
                b,
                b_row_stride,
                b_col_stride,
                beta,
                c,
                c_row_stride,
                c_col_stride,
            )
        }
    })
}
