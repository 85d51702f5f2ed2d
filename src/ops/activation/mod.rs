//! Element-wise activations, forward and backward.
//!
//! Backward functions take the forward *input* `x` and the upstream gradient
//! `dy`, and give `dx = dy · f'(x)`.

pub(crate) mod kernels;
pub mod reference;

use crate::error::{Error, Result};
use crate::matrix::{MatMut, MatRef};
use crate::ops::softmax_xent::check_same_shape;
use crate::simd::active_isa;
use std::fmt;
use std::str::FromStr;

/// An element-wise activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Activation {
    /// `f(x) = x` (no activation; useful for the last layer's epilogue).
    Identity,
    /// `max(x, 0)`; NaN stays NaN; `f'(x) = 1` for `x > 0`, else 0.
    Relu,
    /// `1 / (1 + e^(−x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// GELU, tanh approximation: `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
    /// GELU, exact form: `x/2 · (1 + erf(x/√2))`.
    GeluErf,
}

impl Activation {
    /// Every activation.
    pub const ALL: [Activation; 6] = [
        Activation::Identity,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::GeluTanh,
        Activation::GeluErf,
    ];

    /// Lower-case name, as accepted by [`Activation::from_str`].
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::GeluTanh => "gelu",
            Activation::GeluErf => "gelu-erf",
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "identity" | "linear" | "none" => Ok(Activation::Identity),
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            "tanh" => Ok(Activation::Tanh),
            "gelu" | "gelu-tanh" | "gelu_tanh" => Ok(Activation::GeluTanh),
            "gelu-erf" | "gelu_erf" => Ok(Activation::GeluErf),
            other => Err(Error::invalid(
                "activation",
                format!("unknown activation {other:?}; expected identity, relu, sigmoid, tanh, gelu or gelu-erf"),
            )),
        }
    }
}

#[cfg(feature = "cuda")]
pub(crate) fn check_same_len(arg: &'static str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(Error::shape(arg, (got, 1), (expected, 1)));
    }
    Ok(())
}

/// Whether each row of `m` is one contiguous run (column stride 1, or one column).
fn rows_contiguous(cols: usize, col_stride: usize) -> bool {
    cols <= 1 || col_stride == 1
}

/// Elements gathered per step on the strided path (on the stack).
const GATHER: usize = 256;

/// Runs an element-wise kernel over matrices of one shape: `f(inputs, out)`
/// on runs of elements at the same positions of every view. `out` holds its
/// old values when `f` is called (the in-place forms read them).
///
/// Views that are all packed row-major go in one run, so the contiguous
/// kernel (and its split over threads) sees the whole tensor; views whose
/// rows (or, all of them, whose columns) are contiguous go row by row (column
/// by column); any other layout is gathered into short buffers, computed by
/// the same kernel and scattered back, so every layout gives the same bits.
fn for_each_run<const N: usize>(
    ins: [MatRef<'_, f32>; N],
    out: MatMut<'_, f32>,
    mut f: impl FnMut([&[f32]; N], &mut [f32]) -> Result<()>,
) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let row_runs = |ins: &[MatRef<'_, f32>; N], out: &MatMut<'_, f32>| {
        ins.iter().all(|m| rows_contiguous(m.cols(), m.col_stride())) && rows_contiguous(out.cols(), out.col_stride())
    };
    let col_runs = |ins: &[MatRef<'_, f32>; N], out: &MatMut<'_, f32>| {
        ins.iter().all(|m| rows_contiguous(m.rows(), m.row_stride())) && rows_contiguous(out.rows(), out.row_stride())
    };
    // Element-wise work does not care about orientation: column-major views
    // are walked as the row-major views of their transposes.
    let (ins, mut out) = if !row_runs(&ins, &out) && col_runs(&ins, &out) {
        (ins.map(|m| m.t()), out.t())
    } else {
        (ins, out)
    };
    let (rows, cols) = out.shape();
    if ins.iter().all(|m| m.is_row_major_contiguous()) && out.is_row_major_contiguous() {
        let n = rows * cols;
        return f(ins.map(|m| &m.as_slice()[..n]), &mut out.as_mut_slice()[..n]);
    }
    if row_runs(&ins, &out) {
        for i in 0..rows {
            // Each row exists (i < rows) and is contiguous (checked above).
            let row_in = ins.map(|m| m.row(i).unwrap_or(&[]));
            f(row_in, out.row_mut(i).unwrap_or(&mut []))?;
        }
        return Ok(());
    }
    let mut bufs = [[0.0f32; GATHER]; N];
    let mut obuf = [0.0f32; GATHER];
    for i in 0..rows {
        for j0 in (0..cols).step_by(GATHER) {
            let len = GATHER.min(cols - j0);
            for (b, m) in bufs.iter_mut().zip(&ins) {
                for (k, v) in b[..len].iter_mut().enumerate() {
                    *v = m[(i, j0 + k)];
                }
            }
            for (k, v) in obuf[..len].iter_mut().enumerate() {
                *v = out[(i, j0 + k)];
            }
            f(std::array::from_fn(|b| &bufs[b][..len]), &mut obuf[..len])?;
            for (k, &v) in obuf[..len].iter().enumerate() {
                out[(i, j0 + k)] = v;
            }
        }
    }
    Ok(())
}

/// `y[i, j] = f(x[i, j])`, over views of one shape (any strides: a padded
/// sub-matrix, a transposed view).
///
/// ```
/// use nnkern::{activation_forward, Activation, MatMut, MatRef};
/// let x = [-1.0f32, 0.5, 2.0, -3.0];
/// let mut y = [0.0f32; 4];
/// activation_forward(Activation::Relu, MatRef::new(&x, 2, 2)?, MatMut::new(&mut y, 2, 2)?)?;
/// assert_eq!(y, [0.0, 0.5, 2.0, 0.0]);
/// // The left column of a 2×3 buffer with row stride 3; the rest is untouched.
/// let mut padded = [9.0f32; 6];
/// activation_forward(Activation::Relu, MatRef::new(&x, 2, 2)?.submatrix(0, 0, 2, 1)?,
///                    MatMut::new(&mut padded, 2, 3)?.submatrix(0, 0, 2, 1)?)?;
/// assert_eq!(padded, [0.0, 9.0, 9.0, 2.0, 9.0, 9.0]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn activation_forward(act: Activation, x: MatRef<'_, f32>, y: MatMut<'_, f32>) -> Result<()> {
    check_same_shape("y", y.shape(), x.shape())?;
    let isa = active_isa();
    for_each_run([x], y, |[x], y| kernels::forward(isa, act, x, y))
}

/// `x[i, j] = f(x[i, j])` in place.
///
/// ```
/// use nnkern::{activation_forward_inplace, Activation, MatMut};
/// let mut x = [0.0f32, 100.0];
/// activation_forward_inplace(Activation::Sigmoid, MatMut::new(&mut x, 1, 2)?)?;
/// assert_eq!(x, [0.5, 1.0]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn activation_forward_inplace(act: Activation, x: MatMut<'_, f32>) -> Result<()> {
    let isa = active_isa();
    for_each_run([], x, |[], x| kernels::forward_inplace(isa, act, x))
}

/// `dx[i, j] = dy[i, j] · f'(x[i, j])`, with `x` the forward input.
///
/// ```
/// use nnkern::{activation_backward, Activation, MatMut, MatRef};
/// let x = [-1.0f32, 2.0];
/// let dy = [5.0f32, 6.0];
/// let mut dx = [0.0f32; 2];
/// activation_backward(Activation::Relu, MatRef::new(&x, 1, 2)?, MatRef::new(&dy, 1, 2)?, MatMut::new(&mut dx, 1, 2)?)?;
/// assert_eq!(dx, [0.0, 6.0]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn activation_backward(
    act: Activation,
    x: MatRef<'_, f32>,
    dy: MatRef<'_, f32>,
    dx: MatMut<'_, f32>,
) -> Result<()> {
    check_same_shape("dy", dy.shape(), x.shape())?;
    check_same_shape("dx", dx.shape(), x.shape())?;
    let isa = active_isa();
    for_each_run([x, dy], dx, |[x, dy], dx| kernels::backward(isa, act, x, dy, dx))
}

/// `grad[i, j] = grad[i, j] · f'(x[i, j])` in place (`grad` holds `dy` in, `dx` out).
///
/// ```
/// use nnkern::{activation_backward_inplace, Activation, MatMut, MatRef};
/// let x = [0.0f32, 3.0];
/// let mut g = [4.0f32, 4.0];
/// activation_backward_inplace(Activation::Tanh, MatRef::new(&x, 2, 1)?, MatMut::new(&mut g, 2, 1)?)?;
/// assert_eq!(g[0], 4.0);                       // tanh'(0) = 1
/// assert!((g[1] - 4.0 * (1.0 - 3f32.tanh().powi(2))).abs() < 1e-6);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn activation_backward_inplace(act: Activation, x: MatRef<'_, f32>, grad: MatMut<'_, f32>) -> Result<()> {
    check_same_shape("grad", grad.shape(), x.shape())?;
    let isa = active_isa();
    for_each_run([x], grad, |[x], g| kernels::backward_inplace(isa, act, x, g))
}
