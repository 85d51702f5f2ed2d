//! Element-wise activations, forward and backward.
//!
//! Backward functions take the forward *input* `x` and the upstream gradient
//! `dy`, and give `dx = dy · f'(x)`.

pub(crate) mod kernels;
pub mod reference;

use crate::error::{Error, Result};
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

pub(crate) fn check_same_len(arg: &'static str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(Error::shape(arg, (got, 1), (expected, 1)));
    }
    Ok(())
}

/// `y[i] = f(x[i])`.
///
/// ```
/// use nnkern::{activation_forward, Activation};
/// let x = [-1.0f32, 0.5];
/// let mut y = [0.0f32; 2];
/// activation_forward(Activation::Relu, &x, &mut y)?;
/// assert_eq!(y, [0.0, 0.5]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn activation_forward(act: Activation, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_same_len("y", y.len(), x.len())?;
    kernels::forward(active_isa(), act, x, y)
}

/// `x[i] = f(x[i])` in place.
pub fn activation_forward_inplace(act: Activation, x: &mut [f32]) -> Result<()> {
    kernels::forward_inplace(active_isa(), act, x)
}

/// `dx[i] = dy[i] · f'(x[i])`.
pub fn activation_backward(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check_same_len("dy", dy.len(), x.len())?;
    check_same_len("dx", dx.len(), x.len())?;
    kernels::backward(active_isa(), act, x, dy, dx)
}

/// `grad[i] = grad[i] · f'(x[i])` in place (`grad` holds `dy` in, `dx` out).
pub fn activation_backward_inplace(act: Activation, x: &[f32], grad: &mut [f32]) -> Result<()> {
    check_same_len("grad", grad.len(), x.len())?;
    kernels::backward_inplace(active_isa(), act, x, grad)
}
