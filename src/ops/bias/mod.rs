//! Bias add (broadcast over rows) and bias gradient (column sums).

pub mod reference;

use crate::error::{Error, Result};
use crate::matrix::{MatMut, MatRef};
use crate::ops::activation::Activation;

pub(crate) fn check_bias(arg: &'static str, len: usize, cols: usize) -> Result<()> {
    if len != cols {
        return Err(Error::shape(arg, (len, 1), (cols, 1)));
    }
    Ok(())
}

/// `x[i, j] += bias[j]`.
pub fn bias_add(x: MatMut<'_, f32>, bias: &[f32]) -> Result<()> {
    reference::bias_add(x, bias)
}

/// The forward epilogue of a dense layer: `x[i, j] += bias[j]` (kept as the
/// pre-activation for the backward pass), then `y = f(x)`.
pub fn bias_add_activation(act: Activation, x: MatMut<'_, f32>, bias: &[f32], y: MatMut<'_, f32>) -> Result<()> {
    reference::bias_add_activation(act, x, bias, y)
}

/// `dbias[j] = Σ_i dy[i, j]` (overwrites `dbias`).
pub fn bias_grad(dy: MatRef<'_, f32>, dbias: &mut [f32]) -> Result<()> {
    reference::bias_grad(dy, dbias)
}
