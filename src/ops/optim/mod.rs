//! Optimizer updates: Adam / AdamW with bias correction, SGD with momentum,
//! and global-norm gradient clipping.
//!
//! Semantics follow PyTorch (`torch.optim.Adam`, `AdamW`, `SGD`) and, with
//! [`AdamEpsilon::Keras`], Keras/TensorFlow's placement of epsilon.

mod fused;
pub(crate) mod kernels;
pub mod reference;
pub(crate) use fused::prepare_thread_strip;
pub use fused::{gemm_adam_step, gemm_sgd_step};

use crate::error::{check_finite, check_range, Error, Result};
use crate::simd::active_isa;

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

/// Adam's state for one parameter tensor: the first moments `m` and the
/// second moments `v`, one of each per parameter, zero at the start.
///
/// Held as one value so the two cannot be passed in each other's place.
/// `S` is the storage: `Vec<f32>` (the default, made by [`AdamState::new`]),
/// or any other buffer such as `&mut [f32]` for memory owned elsewhere
/// ([`AdamState::from_moments`]).
///
/// ```
/// use nnkern::{adam_step, AdamConfig, AdamState};
/// let mut w = [1.0f32, -1.0];
/// let mut state = AdamState::new(w.len());
/// adam_step(&AdamConfig::default(), &mut state, 1, &mut w, &[0.5, -0.5])?;
/// assert!((state.m()[0] - 0.05).abs() < 1e-7);  // (1 − β₁)·g
/// assert!(w[0] < 1.0 && w[1] > -1.0);
/// # Ok::<(), nnkern::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AdamState<S = Vec<f32>> {
    m: S,
    v: S,
}

impl AdamState<Vec<f32>> {
    /// Zero moments for `len` parameters.
    pub fn new(len: usize) -> Self {
        AdamState {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }
}

impl<S> AdamState<S> {
    /// The state held in `m` (first moments) and `v` (second moments), e.g.
    /// restored from a checkpoint or borrowed from foreign memory. Their
    /// lengths are checked against the parameters at every step.
    pub fn from_moments(m: S, v: S) -> Self {
        AdamState { m, v }
    }
    /// The first moments.
    pub fn m(&self) -> &S {
        &self.m
    }
    /// The second moments.
    pub fn v(&self) -> &S {
        &self.v
    }
    /// Both moments, mutable: `(m, v)`.
    pub fn moments_mut(&mut self) -> (&mut S, &mut S) {
        (&mut self.m, &mut self.v)
    }
    /// The moments: `(m, v)`.
    pub fn into_moments(self) -> (S, S) {
        (self.m, self.v)
    }
}

/// SGD's momentum buffer for one parameter tensor (one value per parameter,
/// zero at the start). `S` is the storage, as for [`AdamState`].
///
/// ```
/// use nnkern::{sgd_step, SgdConfig, SgdState};
/// let cfg = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.0 };
/// let mut w = [1.0f32];
/// let mut state = SgdState::new(w.len());
/// sgd_step(&cfg, &mut state, &mut w, &[1.0])?;
/// sgd_step(&cfg, &mut state, &mut w, &[1.0])?;
/// assert!((state.buffer()[0] - 1.9).abs() < 1e-6);        // 0.9·1 + 1
/// assert!((w[0] - (1.0 - 0.1 - 0.19)).abs() < 1e-6);
/// # Ok::<(), nnkern::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SgdState<S = Vec<f32>> {
    buf: S,
}

impl SgdState<Vec<f32>> {
    /// A zero momentum buffer for `len` parameters.
    pub fn new(len: usize) -> Self {
        SgdState { buf: vec![0.0; len] }
    }
}

impl<S> SgdState<S> {
    /// The state held in `buf` (its length is checked at every step).
    pub fn from_buffer(buf: S) -> Self {
        SgdState { buf }
    }
    /// The momentum buffer.
    pub fn buffer(&self) -> &S {
        &self.buf
    }
    /// The momentum buffer, mutable.
    pub fn buffer_mut(&mut self) -> &mut S {
        &mut self.buf
    }
    /// The momentum buffer.
    pub fn into_buffer(self) -> S {
        self.buf
    }
}

pub(crate) fn check_sgd(cfg: &SgdConfig, w: usize, g: usize, buf: usize) -> Result<()> {
    cfg.validate()?;
    for (arg, len) in [("grad", g), ("buf", buf)] {
        if len != w {
            return Err(Error::shape(arg, (len, 1), (w, 1)));
        }
    }
    Ok(())
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

/// One Adam/AdamW step (`step` counts from 1) over parameters `w` and
/// gradients `g`, updating the moments in `state`, in one pass.
///
/// Computed in `f32`: each result is within a few ulp of the `f64`
/// reference, the weight within a few ulp of the *update* (see the tests).
///
/// ```
/// use nnkern::{adam_step, AdamConfig, AdamState};
/// // At step 1 the update is lr·g/(|g| + ε) ≈ lr·sign(g).
/// let mut w = [1.0f32, -2.0, 0.5];
/// let mut state = AdamState::new(3);
/// adam_step(&AdamConfig::default(), &mut state, 1, &mut w, &[0.3, -4.0, 0.0])?;
/// assert!((w[0] - 0.999).abs() < 1e-6 && (w[1] + 1.999).abs() < 1e-6 && w[2] == 0.5);
/// // Lengths are checked: a state for other parameters is an error.
/// assert!(adam_step(&AdamConfig::default(), &mut AdamState::new(2), 2, &mut w, &[0.0; 3]).is_err());
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn adam_step<S: AsMut<[f32]>>(
    cfg: &AdamConfig,
    state: &mut AdamState<S>,
    step: u64,
    w: &mut [f32],
    g: &[f32],
) -> Result<()> {
    let (m, v) = (state.m.as_mut(), state.v.as_mut());
    check_adam(cfg, step, w.len(), g.len(), m.len(), v.len())?;
    let scalars = adam_scalars(cfg, step);
    kernels::adam(active_isa(), scalars, w, g, m, v)
}

/// The per-step constants of a validated configuration at `step` (≥ 1).
pub(crate) fn adam_scalars(cfg: &AdamConfig, step: u64) -> kernels::AdamScalars {
    let (c1, c2) = cfg.bias_corrections(step);
    let lr = cfg.lr as f64;
    let (k, a) = match cfg.epsilon {
        AdamEpsilon::PyTorch => (lr / c1, 1.0 / c2.sqrt()),
        AdamEpsilon::Keras => (lr * c2.sqrt() / c1, 1.0),
    };
    let (l2, decoupled) = match cfg.decay {
        WeightDecay::L2 => (cfg.weight_decay, 0.0),
        WeightDecay::Decoupled => (0.0, (lr * cfg.weight_decay as f64) as f32),
    };
    let (k, a) = (k as f32, a as f32);
    kernels::AdamScalars {
        beta1: cfg.beta1,
        one_minus_beta1: (1.0 - cfg.beta1 as f64) as f32,
        beta2: cfg.beta2,
        one_minus_beta2: (1.0 - cfg.beta2 as f64) as f32,
        is_decoupled: cfg.decay == WeightDecay::Decoupled,
        l2,
        decoupled,
        k,
        a,
        eps: cfg.eps,
        fold: kernels::AdamScalars::quotient_is_normal(k, a, cfg.eps),
    }
}

/// One SGD-with-momentum step over parameters `w` and gradients `g`,
/// updating the momentum buffer in `state`.
///
/// ```
/// use nnkern::{sgd_step, SgdConfig, SgdState};
/// let cfg = SgdConfig { lr: 0.5, momentum: 0.0, weight_decay: 0.0 };
/// let mut w = [1.0f32, 2.0];
/// sgd_step(&cfg, &mut SgdState::new(2), &mut w, &[1.0, -2.0])?;
/// assert_eq!(w, [0.5, 3.0]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn sgd_step<S: AsMut<[f32]>>(cfg: &SgdConfig, state: &mut SgdState<S>, w: &mut [f32], g: &[f32]) -> Result<()> {
    let buf = state.buf.as_mut();
    check_sgd(cfg, w.len(), g.len(), buf.len())?;
    kernels::sgd(active_isa(), cfg.lr, cfg.momentum, cfg.weight_decay, w, g, buf)
}

/// The Euclidean norm of all gradients together, `√Σ g²`, accurate for
/// any finite input (no overflow or underflow of the squares). It cannot
/// fail today; it returns a [`Result`] as every operation does.
///
/// ```
/// let norm = nnkern::global_norm(&[&[3.0f32], &[0.0, 4.0]])?;
/// assert_eq!(norm, 5.0);
/// assert_eq!(nnkern::global_norm(&[])?, 0.0);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn global_norm(grads: &[&[f32]]) -> Result<f32> {
    Ok(norm_f64(grads.iter().copied()) as f32)
}

/// `√Σ x²` over the slices: SIMD `f32` squares in short blocks summed in
/// `f64`, redone fully in `f64` in the rare case an `f32` square overflowed
/// or underflowed (a total that is infinite without an infinite input, or
/// below 2⁻¹⁰⁰, zero included).
fn norm_f64<'a>(grads: impl Iterator<Item = &'a [f32]> + Clone) -> f64 {
    let isa = active_isa();
    let sum: f64 = grads.clone().map(|g| kernels::sum_squares(isa, g)).sum();
    let suspicious = (sum.is_infinite() && !grads.clone().flatten().any(|x| x.is_infinite())) || sum < 2f64.powi(-100);
    if suspicious {
        return grads.flatten().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    }
    sum.sqrt()
}

/// Scales all gradients by `max_norm / norm` when their global norm exceeds
/// `max_norm` (TensorFlow's `clip_by_global_norm`); returns the norm before
/// clipping. A NaN or infinite norm scales by `max_norm / norm` too, so
/// non-finite gradients stay visible rather than being hidden.
///
/// ```
/// let (mut a, mut b) = ([3.0f32], [0.0f32, 4.0]);
/// let before = nnkern::clip_global_norm(&mut [&mut a[..], &mut b[..]], 1.0)?;
/// assert_eq!(before, 5.0);
/// assert!((a[0] - 0.6).abs() < 1e-6 && (b[1] - 0.8).abs() < 1e-6);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn clip_global_norm(grads: &mut [&mut [f32]], max_norm: f32) -> Result<f32> {
    check_clip(max_norm)?;
    let norm = norm_f64(grads.iter().map(|g| &**g));
    if norm > max_norm as f64 || norm.is_nan() {
        let scale = (max_norm as f64 / norm) as f32;
        let isa = active_isa();
        for g in grads.iter_mut() {
            kernels::scale(isa, g, scale);
        }
    }
    Ok(norm as f32)
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
