//! Bias add (broadcast over rows) and bias gradient (column sums).

pub(crate) mod kernels;
pub mod reference;

use crate::error::{Error, Result};
use crate::matrix::{MatMut, MatRef};
use crate::ops::activation::Activation;
use crate::ops::softmax_xent::check_same_shape;
use crate::simd::active_isa;
use kernels::{contiguous_rows, rows_mut, rows_ref};

pub(crate) fn check_bias(arg: &'static str, len: usize, cols: usize) -> Result<()> {
    if len != cols {
        return Err(Error::shape(arg, (len, 1), (cols, 1)));
    }
    Ok(())
}

/// `x[i, j] += bias[j]`.
///
/// ```
/// use nnkern::{bias_add, MatMut};
/// let mut x = [1.0f32, 2.0, 3.0, 4.0];
/// bias_add(MatMut::new(&mut x, 2, 2)?, &[10.0, 20.0])?;
/// assert_eq!(x, [11.0, 22.0, 13.0, 24.0]);
/// assert!(bias_add(MatMut::new(&mut x, 2, 2)?, &[1.0]).is_err()); // one bias per column
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn bias_add(x: MatMut<'_, f32>, bias: &[f32]) -> Result<()> {
    check_bias("bias", bias.len(), x.cols())?;
    if x.is_empty() {
        return Ok(());
    }
    if !contiguous_rows(x.cols(), x.col_stride()) {
        return reference::bias_add(x, bias);
    }
    kernels::bias_add(active_isa(), rows_mut(x), bias);
    Ok(())
}

/// The forward epilogue of a dense layer: `x[i, j] += bias[j]` (kept as the
/// pre-activation for the backward pass), then `y = f(x)`.
///
/// ```
/// use nnkern::{bias_add_activation, Activation, MatMut};
/// let mut x = [-1.0f32, 1.0];
/// let mut y = [0.0f32; 2];
/// bias_add_activation(Activation::Relu, MatMut::new(&mut x, 1, 2)?, &[0.5, 0.5], MatMut::new(&mut y, 1, 2)?)?;
/// assert_eq!((x, y), ([-0.5, 1.5], [0.0, 1.5]));
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn bias_add_activation(act: Activation, x: MatMut<'_, f32>, bias: &[f32], y: MatMut<'_, f32>) -> Result<()> {
    check_bias("bias", bias.len(), x.cols())?;
    check_same_shape("y", y.shape(), x.shape())?;
    if x.is_empty() {
        return Ok(());
    }
    if !(contiguous_rows(x.cols(), x.col_stride()) && contiguous_rows(y.cols(), y.col_stride())) {
        return reference::bias_add_activation(act, x, bias, y);
    }
    kernels::bias_add_activation(active_isa(), act, rows_mut(x), bias, rows_mut(y));
    Ok(())
}

/// `dbias[j] = Σ_i dy[i, j]` (overwrites `dbias`).
///
/// ```
/// use nnkern::{bias_grad, MatRef};
/// let dy = [1.0f32, 2.0, 3.0, 4.0];
/// let mut db = [9.0f32; 2];
/// bias_grad(MatRef::new(&dy, 2, 2)?, &mut db)?;
/// assert_eq!(db, [4.0, 6.0]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn bias_grad(dy: MatRef<'_, f32>, dbias: &mut [f32]) -> Result<()> {
    check_bias("dbias", dbias.len(), dy.cols())?;
    match rows_ref(&dy) {
        Some(rows) => {
            kernels::bias_grad(active_isa(), rows, dbias);
            Ok(())
        }
        None => reference::bias_grad(dy, dbias),
    }
}

/// The backward of a dense layer's epilogue in one pass: `grad[i, j] ·= f'(x[i, j])`
/// in place (`grad` holds `dy` in, `dx` out, as [`crate::activation_backward_inplace`]),
/// and `dbias[j] = Σ_i grad[i, j]` of the result (overwrites `dbias`, as [`bias_grad`]).
///
/// ```
/// use nnkern::{activation_backward_bias_grad, Activation, MatMut, MatRef};
/// let x = [-1.0f32, 2.0, 3.0, -4.0];     // pre-activations, 2×2
/// let mut g = [5.0f32, 6.0, 7.0, 8.0];    // upstream gradient
/// let mut db = [0.0f32; 2];
/// activation_backward_bias_grad(Activation::Relu, MatRef::new(&x, 2, 2)?, MatMut::new(&mut g, 2, 2)?, &mut db)?;
/// assert_eq!(g, [0.0, 6.0, 7.0, 0.0]);
/// assert_eq!(db, [7.0, 6.0]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn activation_backward_bias_grad(
    act: Activation,
    x: MatRef<'_, f32>,
    grad: MatMut<'_, f32>,
    dbias: &mut [f32],
) -> Result<()> {
    check_same_shape("grad", grad.shape(), x.shape())?;
    check_bias("dbias", dbias.len(), x.cols())?;
    match rows_ref(&x) {
        Some(xr) if contiguous_rows(grad.cols(), grad.col_stride()) => {
            kernels::backward_bias_grad(active_isa(), act, xr, rows_mut(grad), dbias);
            Ok(())
        }
        _ => reference::activation_backward_bias_grad(act, x, grad, dbias),
    }
}
