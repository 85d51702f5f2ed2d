//! Optimizer updates and gradient clipping.

use super::{check_outputs_disjoint, guard, size, Span};
use nnkern::error::Error;
use nnkern::ops::optim::{AdamConfig, AdamEpsilon, AdamState, SgdConfig, SgdState, WeightDecay};
use std::ffi::c_int;

/// `nnkern_adam_config.decay`: L2 penalty added to the gradient (Adam).
pub const NNKERN_DECAY_L2: c_int = 0;
/// `nnkern_adam_config.decay`: decoupled weight decay (AdamW).
pub const NNKERN_DECAY_DECOUPLED: c_int = 1;
/// `nnkern_adam_config.epsilon`: PyTorch's placement of epsilon.
pub const NNKERN_EPSILON_PYTORCH: c_int = 0;
/// `nnkern_adam_config.epsilon`: Keras/TensorFlow's placement of epsilon.
pub const NNKERN_EPSILON_KERAS: c_int = 1;

/// Adam / AdamW hyperparameters, as C sees them (`nnkern_adam_config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(non_camel_case_types)]
pub struct nnkern_adam_config {
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
    /// `NNKERN_DECAY_L2` or `NNKERN_DECAY_DECOUPLED`.
    pub decay: c_int,
    /// `NNKERN_EPSILON_PYTORCH` or `NNKERN_EPSILON_KERAS`.
    pub epsilon: c_int,
}

impl nnkern_adam_config {
    /// The Rust configuration, with the enum fields checked.
    pub fn to_config(&self) -> nnkern::Result<AdamConfig> {
        let decay = match self.decay {
            NNKERN_DECAY_L2 => WeightDecay::L2,
            NNKERN_DECAY_DECOUPLED => WeightDecay::Decoupled,
            other => return Err(Error::invalid("decay", format!("unknown weight decay code {other}"))),
        };
        let epsilon = match self.epsilon {
            NNKERN_EPSILON_PYTORCH => AdamEpsilon::PyTorch,
            NNKERN_EPSILON_KERAS => AdamEpsilon::Keras,
            other => {
                return Err(Error::invalid(
                    "epsilon",
                    format!("unknown epsilon placement code {other}"),
                ))
            }
        };
        Ok(AdamConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decay,
            epsilon,
        })
    }

    fn from_config(c: &AdamConfig) -> Self {
        nnkern_adam_config {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            decay: match c.decay {
                WeightDecay::L2 => NNKERN_DECAY_L2,
                WeightDecay::Decoupled => NNKERN_DECAY_DECOUPLED,
            },
            epsilon: match c.epsilon {
                AdamEpsilon::PyTorch => NNKERN_EPSILON_PYTORCH,
                AdamEpsilon::Keras => NNKERN_EPSILON_KERAS,
            },
        }
    }
}

/// Fills `*cfg` with PyTorch's Adam defaults (`adamw` = 0) or AdamW
/// defaults (`adamw` = 1, weight decay 0.01).
///
/// # Safety
/// `cfg` points to a writable `nnkern_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn nnkern_adam_config_default(cfg: *mut nnkern_adam_config, adamw: c_int) -> c_int {
    guard("nnkern_adam_config_default", || {
        let s = Span::new("cfg", cfg as *const nnkern_adam_config, 1)?;
        let value = match adamw {
            0 => AdamConfig::default(),
            1 => AdamConfig::adamw(),
            other => return Err(Error::invalid("adamw", format!("expected 0 or 1, got {other}"))),
        };
        // SAFETY: validated span of one element.
        unsafe { s.slice_mut()?[0] = nnkern_adam_config::from_config(&value) };
        Ok(())
    })
}

/// One Adam/AdamW step (`step` counts from 1) over `n` parameters `w`,
/// gradients `g` and moments `m`, `v`. `w`, `m`, `v` must not overlap each
/// other or `g`.
///
/// # Safety
/// `cfg` points to a config; `w`, `g`, `m`, `v` address `n` floats each
/// (`w`, `m`, `v` writable).
#[no_mangle]
pub unsafe extern "C" fn nnkern_adam_step(
    cfg: *const nnkern_adam_config,
    step: u64,
    w: *mut f32,
    g: *const f32,
    m: *mut f32,
    v: *mut f32,
    n: i64,
) -> c_int {
    guard("nnkern_adam_step", || {
        let cs = Span::new("cfg", cfg, 1)?;
        // SAFETY: validated span of one element.
        let config = unsafe { cs.meta_slice()[0] }.to_config()?;
        let n = size("n", n)?;
        let ws = Span::new("w", w as *const f32, n)?;
        let gs = Span::new("g", g, n)?;
        let ms = Span::new("m", m as *const f32, n)?;
        let vs = Span::new("v", v as *const f32, n)?;
        check_outputs_disjoint(&[ws.bytes(), ms.bytes(), vs.bytes()], &[gs.bytes(), cs.bytes()])?;
        // SAFETY: validated; the three outputs are pairwise disjoint and
        // disjoint from the inputs.
        unsafe {
            let mut state = AdamState::from_moments(ms.slice_mut()?, vs.slice_mut()?);
            nnkern::adam_step(&config, &mut state, step, ws.slice_mut()?, gs.slice()?)
        }
    })
}

/// One SGD-with-momentum step (PyTorch form): `buf = momentum·buf + g +
/// weight_decay·w`, `w -= lr·buf`.
///
/// # Safety
/// `w`, `g`, `buf` address `n` floats each (`w`, `buf` writable).
#[no_mangle]
pub unsafe extern "C" fn nnkern_sgd_step(
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    w: *mut f32,
    g: *const f32,
    buf: *mut f32,
    n: i64,
) -> c_int {
    guard("nnkern_sgd_step", || {
        let cfg = SgdConfig {
            lr,
            momentum,
            weight_decay,
        };
        let n = size("n", n)?;
        let ws = Span::new("w", w as *const f32, n)?;
        let gs = Span::new("g", g, n)?;
        let bs = Span::new("buf", buf as *const f32, n)?;
        check_outputs_disjoint(&[ws.bytes(), bs.bytes()], &[gs.bytes()])?;
        // SAFETY: validated; outputs disjoint.
        unsafe {
            nnkern::sgd_step(
                &cfg,
                &mut SgdState::from_buffer(bs.slice_mut()?),
                ws.slice_mut()?,
                gs.slice()?,
            )
        }
    })
}

/// The `count` (pointer, length) pairs of a list of gradient buffers.
fn grad_spans(grads: *const *const f32, lens: *const i64, count: i64) -> nnkern::Result<Vec<Span<f32>>> {
    let count = size("count", count)?;
    let ps = Span::new("grads", grads, count)?;
    let ls = Span::new("lens", lens, count)?;
    // SAFETY: validated spans of `count` elements, read only.
    let (ptrs, lens) = unsafe { (ps.meta_slice(), ls.meta_slice()) };
    ptrs.iter()
        .zip(lens)
        .map(|(&p, &l)| Span::new("grads[i]", p, size("lens[i]", l)?))
        .collect()
}

/// Writes `√(Σ g²)` over all `count` buffers (`grads[i]` holds `lens[i]`
/// floats) to `*norm`.
///
/// # Safety
/// `grads` and `lens` address `count` entries; each `grads[i]` addresses
/// `lens[i]` floats; `norm` one writable float.
#[no_mangle]
pub unsafe extern "C" fn nnkern_global_norm(
    grads: *const *const f32,
    lens: *const i64,
    count: i64,
    norm: *mut f32,
) -> c_int {
    guard("nnkern_global_norm", || {
        let spans = grad_spans(grads, lens, count)?;
        let out = Span::new("norm", norm as *const f32, 1)?;
        let inputs: Vec<Span<u8>> = spans.iter().map(Span::bytes).collect();
        check_outputs_disjoint(&[out.bytes()], &inputs)?;
        // SAFETY: validated spans; the output is disjoint from them.
        unsafe {
            let slices: Vec<&[f32]> = spans.iter().map(|s| s.slice()).collect::<nnkern::Result<_>>()?;
            out.slice_mut()?[0] = nnkern::global_norm(&slices)?;
        }
        Ok(())
    })
}

/// Scales all gradients by `max_norm / norm` when their global norm
/// exceeds `max_norm`; writes the norm before clipping to `*norm` (which
/// may be NULL when not wanted). The buffers must not overlap each other.
///
/// # Safety
/// As [`nnkern_global_norm`], with every `grads[i]` writable.
#[no_mangle]
pub unsafe extern "C" fn nnkern_clip_global_norm(
    grads: *const *mut f32,
    lens: *const i64,
    count: i64,
    max_norm: f32,
    norm: *mut f32,
) -> c_int {
    guard("nnkern_clip_global_norm", || {
        let spans = grad_spans(grads as *const *const f32, lens, count)?;
        let mut outputs: Vec<Span<u8>> = spans.iter().map(Span::bytes).collect();
        if !norm.is_null() {
            outputs.push(Span::new("norm", norm as *const f32, 1)?.bytes());
        }
        check_outputs_disjoint(&outputs, &[])?;
        // SAFETY: validated spans, pairwise disjoint.
        unsafe {
            let mut slices: Vec<&mut [f32]> = spans.iter().map(|s| s.slice_mut()).collect::<nnkern::Result<_>>()?;
            let value = nnkern::clip_global_norm(&mut slices, max_norm)?;
            if !norm.is_null() {
                *norm = value;
            }
        }
        Ok(())
    })
}
