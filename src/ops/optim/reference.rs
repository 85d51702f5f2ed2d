//! The naive optimizer updates, written as the papers and PyTorch docs state them.

use super::{check_adam, check_clip, check_sgd, AdamConfig, AdamEpsilon, AdamState, SgdConfig, SgdState, WeightDecay};
use crate::error::Result;

/// One Adam/AdamW step, element by element, in `f64`.
pub fn adam_step<S: AsMut<[f32]>>(
    cfg: &AdamConfig,
    state: &mut AdamState<S>,
    step: u64,
    w: &mut [f32],
    g: &[f32],
) -> Result<()> {
    let (m, v) = state.moments_mut();
    let (m, v) = (m.as_mut(), v.as_mut());
    check_adam(cfg, step, w.len(), g.len(), m.len(), v.len())?;
    let (b1, b2) = (cfg.beta1 as f64, cfg.beta2 as f64);
    let (lr, eps, wd) = (cfg.lr as f64, cfg.eps as f64, cfg.weight_decay as f64);
    let (c1, c2) = cfg.bias_corrections(step);
    for i in 0..w.len() {
        let mut wi = w[i] as f64;
        let mut gi = g[i] as f64;
        match cfg.decay {
            WeightDecay::L2 => gi += wd * wi,
            WeightDecay::Decoupled => wi -= lr * wd * wi,
        }
        let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
        let update = match cfg.epsilon {
            AdamEpsilon::PyTorch => lr * (mi / c1) / ((vi / c2).sqrt() + eps),
            AdamEpsilon::Keras => lr * c2.sqrt() / c1 * mi / (vi.sqrt() + eps),
        };
        m[i] = mi as f32;
        v[i] = vi as f32;
        w[i] = (wi - update) as f32;
    }
    Ok(())
}

/// One SGD-with-momentum step: `b = μ·b + g + wd·w`, `w −= lr·b`.
pub fn sgd_step<S: AsMut<[f32]>>(cfg: &SgdConfig, state: &mut SgdState<S>, w: &mut [f32], g: &[f32]) -> Result<()> {
    let buf = state.buffer_mut().as_mut();
    check_sgd(cfg, w.len(), g.len(), buf.len())?;
    for i in 0..w.len() {
        let gi = g[i] as f64 + cfg.weight_decay as f64 * w[i] as f64;
        let b = cfg.momentum as f64 * buf[i] as f64 + gi;
        buf[i] = b as f32;
        w[i] = (w[i] as f64 - cfg.lr as f64 * b) as f32;
    }
    Ok(())
}

/// `√(Σ g²)` over every slice, summed in `f64`.
pub fn global_norm(grads: &[&[f32]]) -> Result<f32> {
    Ok(grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| x as f64 * x as f64)
        .sum::<f64>()
        .sqrt() as f32)
}

/// Scales by `max_norm / norm` when `norm > max_norm` (or is NaN); returns `norm`.
pub fn clip_global_norm(grads: &mut [&mut [f32]], max_norm: f32) -> Result<f32> {
    check_clip(max_norm)?;
    let norm = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| x as f64 * x as f64)
        .sum::<f64>()
        .sqrt();
    if norm > max_norm as f64 || norm.is_nan() {
        let scale = max_norm as f64 / norm;
        for x in grads.iter_mut().flat_map(|g| g.iter_mut()) {
            *x = (*x as f64 * scale) as f32;
        }
    }
    Ok(norm as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn first_adam_step_moves_each_weight_by_about_lr() {
        // At t = 1, m̂ = g and v̂ = g², so the step is lr·g/(|g| + ε) ≈ lr·sign(g).
        let cfg = AdamConfig::default();
        let mut w = [1.0f32, -2.0, 0.5];
        let g = [0.3f32, -4.0, 0.0];
        let mut st = AdamState::new(3);
        adam_step(&cfg, &mut st, 1, &mut w, &g).unwrap();
        let (m, v) = st.into_moments();
        assert!((w[0] - 0.999).abs() < 1e-6);
        assert!((w[1] - -1.999).abs() < 1e-6);
        assert_eq!(w[2], 0.5);
        // β₂ = 0.999f32 is 0.99900001287, so 1 − β₂ is off by 1.3e-8 relative to 0.001.
        assert!((m[0] - 0.03).abs() < 1e-7 && (v[1] - 0.016).abs() < 5e-7);
    }

    #[test]
    fn keras_and_pytorch_epsilon_differ_only_through_epsilon() {
        let g = [1e-4f32, 0.2];
        let mut a = AdamConfig::keras();
        let mut b = AdamConfig {
            epsilon: AdamEpsilon::PyTorch,
            ..a
        };
        for eps_zero in [false, true] {
            if eps_zero {
                a.eps = f32::MIN_POSITIVE;
                b.eps = f32::MIN_POSITIVE;
            }
            let (mut wa, mut wb) = ([1.0f32; 2], [1.0f32; 2]);
            let (mut sa, mut sb) = (AdamState::new(2), AdamState::new(2));
            for t in 1..=3 {
                adam_step(&a, &mut sa, t, &mut wa, &g).unwrap();
                adam_step(&b, &mut sb, t, &mut wb, &g).unwrap();
            }
            if eps_zero {
                assert!((wa[0] - wb[0]).abs() < 1e-7, "{wa:?} {wb:?}");
            } else {
                assert!(wa[0] != wb[0]);
            }
        }
    }

    #[test]
    fn adamw_decays_decoupled_from_the_gradient() {
        let cfg = AdamConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..AdamConfig::adamw()
        };
        let mut w = [2.0f32];
        adam_step(&cfg, &mut AdamState::new(1), 1, &mut w, &[0.0]).unwrap();
        assert!((w[0] - 2.0 * (1.0 - 0.05)).abs() < 1e-6);
    }

    #[test]
    fn sgd_momentum_accumulates() {
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
        };
        let mut w = [1.0f32];
        let mut b = [0.0f32];
        let mut st = SgdState::from_buffer(&mut b[..]);
        sgd_step(&cfg, &mut st, &mut w, &[1.0]).unwrap();
        sgd_step(&cfg, &mut st, &mut w, &[1.0]).unwrap();
        assert!((b[0] - 1.9).abs() < 1e-6);
        assert!((w[0] - (1.0 - 0.1 - 0.19)).abs() < 1e-6);
    }

    #[test]
    fn clipping_scales_to_max_norm_and_returns_the_old_norm() {
        let mut a = [3.0f32];
        let mut b = [0.0f32, 4.0];
        let n = clip_global_norm(&mut [&mut a[..], &mut b[..]], 1.0).unwrap();
        assert_eq!(n, 5.0);
        assert!((global_norm(&[&a, &b]).unwrap() - 1.0).abs() < 1e-6);
        let n = clip_global_norm(&mut [&mut a[..], &mut b[..]], 10.0).unwrap();
        assert!((n - 1.0).abs() < 1e-6);
        assert!((a[0] - 0.6).abs() < 1e-6);
        let mut c = [f32::NAN, 1.0];
        assert!(clip_global_norm(&mut [&mut c[..]], 1.0).unwrap().is_nan());
        assert!(c[1].is_nan());
    }

    #[test]
    fn bad_hyperparameters_are_named() {
        let mut w = [0.0f32; 2];
        let mut st = AdamState::new(2);
        let bad = AdamConfig {
            lr: f32::NAN,
            ..AdamConfig::default()
        };
        assert!(matches!(
            adam_step(&bad, &mut st, 1, &mut w, &[0.0; 2]),
            Err(Error::InvalidValue { arg: "lr", .. })
        ));
        let bad = AdamConfig {
            beta2: 1.0,
            ..AdamConfig::default()
        };
        assert!(matches!(
            adam_step(&bad, &mut st, 1, &mut w, &[0.0; 2]),
            Err(Error::InvalidValue { arg: "beta2", .. })
        ));
        assert!(adam_step(&AdamConfig::default(), &mut st, 0, &mut w, &[0.0; 2]).is_err());
        assert!(adam_step(&AdamConfig::default(), &mut st, 1, &mut w, &[0.0; 3]).is_err());
        assert!(clip_global_norm(&mut [], 0.0).is_err());
        assert!(clip_global_norm(&mut [], f32::INFINITY).is_err());
    }
}
