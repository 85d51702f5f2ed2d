//! Activations, bias ops, softmax and softmax-cross-entropy, metrics.

use super::{check_outputs_disjoint, guard, size, CMat, Span};
use nnkern::error::Error;
use nnkern::matrix::{MatMut, MatRef};
use nnkern::ops::activation::Activation;
use nnkern::ops::softmax_xent::Targets;
use std::ffi::c_int;

/// Activation code: identity.
pub const NNKERN_ACT_IDENTITY: c_int = 0;
/// Activation code: ReLU.
pub const NNKERN_ACT_RELU: c_int = 1;
/// Activation code: sigmoid.
pub const NNKERN_ACT_SIGMOID: c_int = 2;
/// Activation code: tanh.
pub const NNKERN_ACT_TANH: c_int = 3;
/// Activation code: GELU, tanh approximation.
pub const NNKERN_ACT_GELU_TANH: c_int = 4;
/// Activation code: GELU, exact (erf) form.
pub const NNKERN_ACT_GELU_ERF: c_int = 5;

/// The activation of a C code.
pub fn activation_from_code(code: c_int) -> nnkern::Result<Activation> {
    Ok(match code {
        NNKERN_ACT_IDENTITY => Activation::Identity,
        NNKERN_ACT_RELU => Activation::Relu,
        NNKERN_ACT_SIGMOID => Activation::Sigmoid,
        NNKERN_ACT_TANH => Activation::Tanh,
        NNKERN_ACT_GELU_TANH => Activation::GeluTanh,
        NNKERN_ACT_GELU_ERF => Activation::GeluErf,
        other => {
            return Err(Error::invalid(
                "act",
                format!("unknown activation code {other}; expected 0..=5 (NNKERN_ACT_*)"),
            ))
        }
    })
}

/// `y[i] = f(x[i])` for `i < n`. `y` must not overlap `x` (use the
/// `_inplace` form for that).
///
/// # Safety
/// `x` and `y` address `n` floats each; `y` writable.
#[no_mangle]
pub unsafe extern "C" fn nnkern_activation_forward(act: c_int, x: *const f32, y: *mut f32, n: i64) -> c_int {
    guard("nnkern_activation_forward", || {
        let act = activation_from_code(act)?;
        let n = size("n", n)?;
        let xs = Span::new("x", x, n)?;
        let ys = Span::new("y", y as *const f32, n)?;
        ys.check_disjoint(&xs)?;
        // SAFETY: validated spans, y exclusive.
        unsafe {
            nnkern::activation_forward(
                act,
                MatRef::row_vector(xs.slice()?)?,
                MatMut::row_vector(ys.slice_mut()?)?,
            )
        }
    })
}

/// `x[i] = f(x[i])` in place.
///
/// # Safety
/// `x` addresses `n` writable floats.
#[no_mangle]
pub unsafe extern "C" fn nnkern_activation_forward_inplace(act: c_int, x: *mut f32, n: i64) -> c_int {
    guard("nnkern_activation_forward_inplace", || {
        let act = activation_from_code(act)?;
        let xs = Span::new("x", x as *const f32, size("n", n)?)?;
        // SAFETY: validated span, the only one of the call.
        unsafe { nnkern::activation_forward_inplace(act, MatMut::row_vector(xs.slice_mut()?)?) }
    })
}

/// `dx[i] = dy[i] · f'(x[i])`, with `x` the forward input. `dx` must not
/// overlap `x` or `dy`.
///
/// # Safety
/// `x`, `dy`, `dx` address `n` floats each; `dx` writable.
#[no_mangle]
pub unsafe extern "C" fn nnkern_activation_backward(
    act: c_int,
    x: *const f32,
    dy: *const f32,
    dx: *mut f32,
    n: i64,
) -> c_int {
    guard("nnkern_activation_backward", || {
        let act = activation_from_code(act)?;
        let n = size("n", n)?;
        let xs = Span::new("x", x, n)?;
        let dys = Span::new("dy", dy, n)?;
        let dxs = Span::new("dx", dx as *const f32, n)?;
        dxs.check_disjoint(&xs)?;
        dxs.check_disjoint(&dys)?;
        // SAFETY: validated spans, dx exclusive.
        unsafe {
            nnkern::activation_backward(
                act,
                MatRef::row_vector(xs.slice()?)?,
                MatRef::row_vector(dys.slice()?)?,
                MatMut::row_vector(dxs.slice_mut()?)?,
            )
        }
    })
}

/// `grad[i] = grad[i] · f'(x[i])` in place (`grad` holds `dy` in, `dx` out);
/// `grad` must not overlap `x`.
///
/// # Safety
/// `x` and `grad` address `n` floats each; `grad` writable.
#[no_mangle]
pub unsafe extern "C" fn nnkern_activation_backward_inplace(
    act: c_int,
    x: *const f32,
    grad: *mut f32,
    n: i64,
) -> c_int {
    guard("nnkern_activation_backward_inplace", || {
        let act = activation_from_code(act)?;
        let n = size("n", n)?;
        let xs = Span::new("x", x, n)?;
        let gs = Span::new("grad", grad as *const f32, n)?;
        gs.check_disjoint(&xs)?;
        // SAFETY: validated spans, grad exclusive.
        unsafe {
            nnkern::activation_backward_inplace(
                act,
                MatRef::row_vector(xs.slice()?)?,
                MatMut::row_vector(gs.slice_mut()?)?,
            )
        }
    })
}

/// `x[i, j] += bias[j]` over a `rows × cols` matrix with the given strides.
///
/// # Safety
/// `x` addresses the matrix (writable); `bias` addresses `cols` floats.
#[no_mangle]
pub unsafe extern "C" fn nnkern_bias_add(
    rows: i64,
    cols: i64,
    x: *mut f32,
    x_row_stride: i64,
    x_col_stride: i64,
    bias: *const f32,
) -> c_int {
    guard("nnkern_bias_add", || {
        let (rows, cols) = (size("rows", rows)?, size("cols", cols)?);
        let xm = CMat::new_out("x", x, rows, cols, x_row_stride, x_col_stride)?;
        let bs = Span::new("bias", bias, cols)?;
        xm.span.check_disjoint(&bs)?;
        // SAFETY: validated, x exclusive.
        unsafe { nnkern::bias_add(xm.view_mut()?, bs.slice()?) }
    })
}

/// `x[i, j] += bias[j]`, then `y = f(x)`; `x` keeps the pre-activation.
///
/// # Safety
/// `x` and `y` address `rows × cols` matrices (writable), `bias` `cols` floats.
#[no_mangle]
pub unsafe extern "C" fn nnkern_bias_add_activation(
    act: c_int,
    rows: i64,
    cols: i64,
    x: *mut f32,
    x_row_stride: i64,
    x_col_stride: i64,
    bias: *const f32,
    y: *mut f32,
    y_row_stride: i64,
    y_col_stride: i64,
) -> c_int {
    guard("nnkern_bias_add_activation", || {
        let act = activation_from_code(act)?;
        let (rows, cols) = (size("rows", rows)?, size("cols", cols)?);
        let xm = CMat::new_out("x", x, rows, cols, x_row_stride, x_col_stride)?;
        let ym = CMat::new_out("y", y, rows, cols, y_row_stride, y_col_stride)?;
        let bs = Span::new("bias", bias, cols)?;
        check_outputs_disjoint(&[xm.span.bytes(), ym.span.bytes()], &[bs.bytes()])?;
        // SAFETY: validated, outputs pairwise disjoint and disjoint from bias.
        unsafe { nnkern::bias_add_activation(act, xm.view_mut()?, bs.slice()?, ym.view_mut()?) }
    })
}

/// `dbias[j] = Σ_i dy[i, j]` (overwrites `dbias`).
///
/// # Safety
/// `dy` addresses the matrix, `dbias` `cols` writable floats.
#[no_mangle]
pub unsafe extern "C" fn nnkern_bias_grad(
    rows: i64,
    cols: i64,
    dy: *const f32,
    dy_row_stride: i64,
    dy_col_stride: i64,
    dbias: *mut f32,
) -> c_int {
    guard("nnkern_bias_grad", || {
        let (rows, cols) = (size("rows", rows)?, size("cols", cols)?);
        let dym = CMat::new("dy", dy, rows, cols, dy_row_stride, dy_col_stride)?;
        let ds = Span::new("dbias", dbias as *const f32, cols)?;
        ds.check_disjoint(&dym.span)?;
        // SAFETY: validated, dbias exclusive.
        unsafe { nnkern::bias_grad(dym.view()?, ds.slice_mut()?) }
    })
}

/// Shared body of softmax and log-softmax.
unsafe fn softmax_like(
    rows: i64,
    cols: i64,
    x: *const f32,
    x_rs: i64,
    x_cs: i64,
    y: *mut f32,
    y_rs: i64,
    y_cs: i64,
    log: bool,
) -> nnkern::Result<()> {
    let (rows, cols) = (size("rows", rows)?, size("cols", cols)?);
    let xm = CMat::new("x", x, rows, cols, x_rs, x_cs)?;
    let ym = CMat::new_out("y", y, rows, cols, y_rs, y_cs)?;
    ym.span.check_disjoint(&xm.span)?;
    // SAFETY: validated, y exclusive.
    let (xv, yv) = unsafe { (xm.view()?, ym.view_mut()?) };
    if log {
        nnkern::log_softmax(xv, yv)
    } else {
        nnkern::softmax(xv, yv)
    }
}

/// `y = softmax(x)` row by row.
///
/// # Safety
/// `x` and `y` address `rows × cols` matrices; `y` writable.
#[no_mangle]
pub unsafe extern "C" fn nnkern_softmax(
    rows: i64,
    cols: i64,
    x: *const f32,
    x_row_stride: i64,
    x_col_stride: i64,
    y: *mut f32,
    y_row_stride: i64,
    y_col_stride: i64,
) -> c_int {
    guard("nnkern_softmax", || {
        // SAFETY: forwarded contract.
        unsafe {
            softmax_like(
                rows,
                cols,
                x,
                x_row_stride,
                x_col_stride,
                y,
                y_row_stride,
                y_col_stride,
                false,
            )
        }
    })
}

/// `y = log(softmax(x))` row by row.
///
/// # Safety
/// As [`nnkern_softmax`].
#[no_mangle]
pub unsafe extern "C" fn nnkern_log_softmax(
    rows: i64,
    cols: i64,
    x: *const f32,
    x_row_stride: i64,
    x_col_stride: i64,
    y: *mut f32,
    y_row_stride: i64,
    y_col_stride: i64,
) -> c_int {
    guard("nnkern_log_softmax", || {
        // SAFETY: forwarded contract.
        unsafe {
            softmax_like(
                rows,
                cols,
                x,
                x_row_stride,
                x_col_stride,
                y,
                y_row_stride,
                y_col_stride,
                true,
            )
        }
    })
}

/// Fused softmax + cross-entropy against class labels: writes the mean loss
/// to `*loss` and `dlogits = (softmax(logits) − onehot(labels)) / rows`.
///
/// # Safety
/// `logits`/`dlogits` address `rows × cols` matrices (`dlogits` writable),
/// `labels` `rows` values, `loss` one writable float.
#[no_mangle]
pub unsafe extern "C" fn nnkern_softmax_xent_labels(
    rows: i64,
    cols: i64,
    logits: *const f32,
    logits_row_stride: i64,
    logits_col_stride: i64,
    labels: *const u32,
    dlogits: *mut f32,
    dlogits_row_stride: i64,
    dlogits_col_stride: i64,
    loss: *mut f32,
) -> c_int {
    guard("nnkern_softmax_xent_labels", || {
        let (r, c) = (size("rows", rows)?, size("cols", cols)?);
        let lm = CMat::new("logits", logits, r, c, logits_row_stride, logits_col_stride)?;
        let ls = Span::new("labels", labels, r)?;
        let dm = CMat::new_out("dlogits", dlogits, r, c, dlogits_row_stride, dlogits_col_stride)?;
        let out = Span::new("loss", loss as *const f32, 1)?;
        check_outputs_disjoint(&[dm.span.bytes(), out.bytes()], &[lm.span.bytes(), ls.bytes()])?;
        // SAFETY: validated; outputs exclusive.
        unsafe {
            let value = nnkern::softmax_xent(lm.view()?, Targets::Labels(ls.slice()?), dm.view_mut()?)?;
            out.slice_mut()?[0] = value;
        }
        Ok(())
    })
}

/// As [`nnkern_softmax_xent_labels`] against soft targets (a probability
/// row per sample, same shape as the logits).
///
/// # Safety
/// As [`nnkern_softmax_xent_labels`], with `targets` a `rows × cols` matrix.
#[no_mangle]
pub unsafe extern "C" fn nnkern_softmax_xent_soft(
    rows: i64,
    cols: i64,
    logits: *const f32,
    logits_row_stride: i64,
    logits_col_stride: i64,
    targets: *const f32,
    targets_row_stride: i64,
    targets_col_stride: i64,
    dlogits: *mut f32,
    dlogits_row_stride: i64,
    dlogits_col_stride: i64,
    loss: *mut f32,
) -> c_int {
    guard("nnkern_softmax_xent_soft", || {
        let (r, c) = (size("rows", rows)?, size("cols", cols)?);
        let lm = CMat::new("logits", logits, r, c, logits_row_stride, logits_col_stride)?;
        let tm = CMat::new("targets", targets, r, c, targets_row_stride, targets_col_stride)?;
        let dm = CMat::new_out("dlogits", dlogits, r, c, dlogits_row_stride, dlogits_col_stride)?;
        let out = Span::new("loss", loss as *const f32, 1)?;
        check_outputs_disjoint(&[dm.span.bytes(), out.bytes()], &[lm.span.bytes(), tm.span.bytes()])?;
        // SAFETY: validated; outputs exclusive.
        unsafe {
            let value = nnkern::softmax_xent(lm.view()?, Targets::Soft(tm.view()?), dm.view_mut()?)?;
            out.slice_mut()?[0] = value;
        }
        Ok(())
    })
}

/// Mean cross-entropy of `softmax(logits)` against class labels, without
/// the gradient.
///
/// # Safety
/// `logits` addresses the matrix, `labels` `rows` values, `loss` one writable float.
#[no_mangle]
pub unsafe extern "C" fn nnkern_softmax_xent_loss_labels(
    rows: i64,
    cols: i64,
    logits: *const f32,
    logits_row_stride: i64,
    logits_col_stride: i64,
    labels: *const u32,
    loss: *mut f32,
) -> c_int {
    guard("nnkern_softmax_xent_loss_labels", || {
        let (r, c) = (size("rows", rows)?, size("cols", cols)?);
        let lm = CMat::new("logits", logits, r, c, logits_row_stride, logits_col_stride)?;
        let ls = Span::new("labels", labels, r)?;
        let out = Span::new("loss", loss as *const f32, 1)?;
        check_outputs_disjoint(&[out.bytes()], &[lm.span.bytes(), ls.bytes()])?;
        // SAFETY: validated; loss exclusive.
        unsafe {
            let value = nnkern::softmax_xent_loss(lm.view()?, Targets::Labels(ls.slice()?))?;
            out.slice_mut()?[0] = value;
        }
        Ok(())
    })
}

/// `out[i]` = column of the largest element of row `i` (first on ties, NaN
/// counts as largest). Rows need at least one column.
///
/// # Safety
/// `x` addresses the matrix, `out` `rows` writable values.
#[no_mangle]
pub unsafe extern "C" fn nnkern_argmax_rows(
    rows: i64,
    cols: i64,
    x: *const f32,
    x_row_stride: i64,
    x_col_stride: i64,
    out: *mut u32,
) -> c_int {
    guard("nnkern_argmax_rows", || {
        let (r, c) = (size("rows", rows)?, size("cols", cols)?);
        let xm = CMat::new("x", x, r, c, x_row_stride, x_col_stride)?;
        let os = Span::new("out", out as *const u32, r)?;
        check_outputs_disjoint(&[os.bytes()], &[xm.span.bytes()])?;
        // SAFETY: validated; out exclusive.
        unsafe { nnkern::argmax_rows(xm.view()?, os.slice_mut()?) }
    })
}

/// Writes to `*correct` how many rows of `logits` have their argmax equal
/// to the label.
///
/// # Safety
/// `logits` addresses the matrix, `labels` `rows` values, `correct` one
/// writable value.
#[no_mangle]
pub unsafe extern "C" fn nnkern_count_correct(
    rows: i64,
    cols: i64,
    logits: *const f32,
    logits_row_stride: i64,
    logits_col_stride: i64,
    labels: *const u32,
    correct: *mut i64,
) -> c_int {
    guard("nnkern_count_correct", || {
        let (r, c) = (size("rows", rows)?, size("cols", cols)?);
        let lm = CMat::new("logits", logits, r, c, logits_row_stride, logits_col_stride)?;
        let ls = Span::new("labels", labels, r)?;
        let out = Span::new("correct", correct as *const i64, 1)?;
        check_outputs_disjoint(&[out.bytes()], &[lm.span.bytes(), ls.bytes()])?;
        // SAFETY: validated; correct exclusive.
        unsafe {
            let n = nnkern::count_correct(lm.view()?, ls.slice()?)?;
            out.slice_mut()?[0] = n as i64;
        }
        Ok(())
    })
}
