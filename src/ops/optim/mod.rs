//! Optimizer updates: Adam / AdamW with bias correction, SGD with momentum,
//! and global-norm gradient clipping.
//!
//! Semantics follow PyTorch (`torch.optim.Adam`, `AdamW`, `SGD`) and, with
//! [`AdamEpsilon::Keras`], Keras/TensorFlow's placement of epsilon.

pub mod reference;

use crate::error::{check_finite, check_range, Error, Result};

/// Where Adam adds epsilon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdamEpsilon {
    /// PyTorch: `w −= lr · m̂ / (√v̂ + ε)`.
    #[default]
    PyTorch,
    /// Keras / TensorFlow: `w −= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`, i.e.
    /// ε is added before the bias correction of `v`.
    Keras,
}

/// How weight decay enters the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDecay {
    /// L2 penalty: `g += wd · w` before the moments (PyTorch `Adam`).
    #[default]
    L2,
    /// Decoupled: `w −= lr · wd · w` before the step (PyTorch `AdamW`).
    Decoupled,
}

/// Adam / AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate, finite and ≥ 0.
    pub lr: f32,
    /// First-moment decay, in [0, 1).
    pub beta1: f32,
    /// Second-moment decay, in [0, 1).
    pub beta2: f32,
    /// Epsilon, finite and > 0.
    pub eps: f32,
    /// Weight decay, finite and ≥ 0.
    pub weight_decay: f32,
    /// L2 (Adam) or decoupled (AdamW) weight decay.
    pub decay: WeightDecay,
    /// Where epsilon is added.
    pub epsilon: AdamEpsilon,
}

impl Default for AdamConfig {
    /// PyTorch's defaults: lr 1e-3, β (0.9, 0.999), ε 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decay: WeightDecay::L2,
            epsilon: AdamEpsilon::PyTorch,
        }
    }
}

impl AdamConfig {
    /// Keras's defaults: lr 1e-3, β (0.9, 0.999), ε 1e-7, Keras epsilon placement.
    pub fn keras() -> Self {
        AdamConfig {
            eps: 1e-7,
            epsilon: AdamEpsilon::Keras,
            ..AdamConfig::default()
        }
    }

    /// AdamW (decoupled weight decay), PyTorch's defaults (wd 0.01).
    pub fn adamw() -> Self {
        AdamConfig {
            weight_decay: 0.01,
            decay: WeightDecay::Decoupled,
            ..AdamConfig::default()
        }
    }

    /// Checks every hyperparameter.
    pub fn validate(&self) -> Result<()> {
        check_range(
            "lr",
            self.lr as f64,
            0.0,
            f64::INFINITY,
            false,
            true,
            "a finite value >= 0",
        )?;
        check_range("beta1", self.beta1 as f64, 0.0, 1.0, false, true, "a value in [0, 1)")?;
        check_range("beta2", self.beta2 as f64, 0.0, 1.0, false, true, "a value in [0, 1)")?;
        check_range(
            "eps",
            self.eps as f64,
            0.0,
            f64::INFINITY,
            true,
            true,
            "a finite value > 0",
        )?;
        check_range(
            "weight_decay",
            self.weight_decay as f64,
            0.0,
            f64::INFINITY,
            false,
            true,
            "a finite value >= 0",
        )
    }

    /// The per-step scalars of step `t` (1-based): `(1 − β₁ᵗ, 1 − β₂ᵗ)`,
    /// computed in `f64` so late steps do not lose them to rounding.
    pub fn bias_corrections(&self, step: u64) -> (f64, f64) {
        let t = step.min(i32::MAX as u64) as i32;
        (1.0 - (self.beta1 as f64).powi(t), 1.0 - (self.beta2 as f64).powi(t))
    }
}

/// SGD with momentum (PyTorch form, no dampening, not Nesterov):
/// `b = μ·b + g (+ wd·w)`, `w −= lr·b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate, finite and ≥ 0.
    pub lr: f32,
    /// Momentum, in [0, 1).
    pub momentum: f32,
    /// L2 weight decay, finite and ≥ 0.
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
        }
    }
}

impl SgdConfig {
    /// Checks every hyperparameter.
    pub fn validate(&self) -> Result<()> {
        check_range(
            "lr",
            self.lr as f64,
            0.0,
            f64::INFINITY,
            false,
            true,
            "a finite value >= 0",
        )?;
        check_range(
            "momentum",
            self.momentum as f64,
            0.0,
            1.0,
            false,
            true,
            "a value in [0, 1)",
        )?;
        check_range(
            "weight_decay",
            self.weight_decay as f64,
            0.0,
            f64::INFINITY,
            false,
            true,
            "a finite value >= 0",
        )
    }
}

pub(crate) fn check_adam(cfg: &AdamConfig, step: u64, w: usize, g: usize, m: usize, v: usize) -> Result<()> {
    cfg.validate()?;
    if step == 0 {
        return Err(Error::invalid("step", "steps count from 1"));
    }
    for (arg, len) in [("grad", g), ("m", m), ("v", v)] {
        if len != w {
            return Err(Error::shape(arg, (len, 1), (w, 1)));
        }
    }
    Ok(())
}

/// One Adam/AdamW step (`step` counts from 1) over parameters `w`, gradients
/// `g` and moments `m`, `v`, in one pass.
pub fn adam_step(cfg: &AdamConfig, step: u64, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> Result<()> {
    reference::adam_step(cfg, step, w, g, m, v)
}

/// One SGD-with-momentum step over parameters `w`, gradients `g` and momentum buffer `buf`.
pub fn sgd_step(cfg: &SgdConfig, w: &mut [f32], g: &[f32], buf: &mut [f32]) -> Result<()> {
    reference::sgd_step(cfg, w, g, buf)
}

/// The Euclidean norm of all gradients together.
pub fn global_norm(grads: &[&[f32]]) -> f32 {
    reference::global_norm(grads)
}

/// Scales all gradients by `max_norm / norm` when their global norm exceeds
/// `max_norm` (TensorFlow's `clip_by_global_norm`); returns the norm before
/// clipping. A NaN or infinite norm scales by `max_norm / norm` too, so
/// non-finite gradients stay visible rather than being hidden.
pub fn clip_global_norm(grads: &mut [&mut [f32]], max_norm: f32) -> Result<f32> {
    reference::clip_global_norm(grads, max_norm)
}

pub(crate) fn check_clip(max_norm: f32) -> Result<()> {
    check_finite("max_norm", max_norm as f64)?;
    check_range(
        "max_norm",
        max_norm as f64,
        0.0,
        f64::INFINITY,
        true,
        true,
        "a finite value > 0",
    )
}
