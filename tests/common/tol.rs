//! Error bounds of the PTX kernels, derived from what each kernel computes.
//!
//! Every bound is a sum, over the kernel's operations, of the rounding error
//! of that operation times how much it moves the result (first order; the
//! second-order terms are below 2⁻⁴⁰ relative for these inputs and are
//! covered by the slack of one unit roundoff in a few places, said where).
//! The unit is `EPS = 2⁻²⁴`, the unit roundoff of f32 round-to-nearest: one
//! correctly rounded operation errs by at most `EPS·|result|`, and an error of
//! `r·EPS·|y|` is less than `r` ulp of `y`.
//!
//! The approximate instructions count with their documented hardware bounds,
//! not with the executor's behaviour (it computes them in f64 and rounds
//! once), so the same bounds hold on a GPU:
//! - `ex2.approx.f32`: at most 2 ulp from the correctly rounded result, so
//!   2.5 ulp from the exact one, `5·EPS` relative (PTX ISA, `ex2`);
//! - `lg2.approx.f32`: absolute error at most 2⁻²² for inputs in (0.5, 2),
//!   relative error 2⁻²² elsewhere (PTX ISA, `lg2`);
//! - `mma.sync` with f32 accumulation: products of bf16/f16/tf32 values are
//!   exact in f32; the sums err by at most 2⁻²³·Σ|a||b| per k (the tensor
//!   cores' accumulation, as kernels/gemm_tc.ptx states), twice the RN bound.
//!
//! Results below the normal range (|y| < 2⁻¹²⁶) may be lost to underflow (an
//! exp whose argument is below −87 is subnormal or 0; a subnormal has fewer
//! significant bits): every non-exact bound has an absolute floor `UNDERFLOW
//! = 2⁻¹²⁶`. Nothing else is absolute, except where the kernel's own formula
//! is (the erf approximation).
#![allow(dead_code)]

use nnkern::Activation;

/// Unit roundoff of f32: one rounding to nearest errs by at most `EPS·|result|`.
pub const EPS: f64 = 1.0 / (1u64 << 24) as f64;
/// `ex2.approx.f32`, relative, in `EPS`: 2.5 ulp ≤ 5·EPS.
pub const EX2: f64 = 5.0;
/// `nk_exp(z)` (kernels' e^z: ex2 of `z·log2e` with the product's rounding
/// recovered by an fma and applied to first order), relative, in `EPS`:
/// ex2 (5), the final fma's rounding (1), and 0.1 for the first-order
/// correction (its neglected square is below 2⁻³⁴ for |z| ≤ 126) and the
/// truncated log2 e (2⁻⁴⁸·|z|).
pub const EXP: f64 = EX2 + 1.1;
/// `lg2.approx.f32` absolute error for inputs in (0.5, 2), relative elsewhere.
pub const LG2: f64 = 1.0 / (1u64 << 22) as f64;
/// Floor for results that underflow.
pub const UNDERFLOW: f64 = f32::MIN_POSITIVE as f64;

// ---------------------------------------------------------------- exact values

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_CUBIC: f64 = 0.044715;

/// σ(z) = 1/(1 + e^−z) without overflow or cancellation.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Φ(x), the standard normal cdf, without cancellation in either tail.
pub fn phi_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// φ(x), the standard normal pdf.
pub fn phi_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// The GELU (tanh form) argument w(x) = √(2/π)(x + 0.044715x³): GELU = x·σ(2w).
fn gelu_w(x: f64) -> f64 {
    SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)
}

/// f(x) in f64 by formulas that stay accurate in both tails. (The library's
/// reference evaluates `0.5·x·(1 + tanh w)` and `0.5·x·(1 + erf)`, which
/// cancel for negative x: right to about 1e-16 absolute, not relative.)
pub fn act_exact(act: Activation, x: f32) -> f64 {
    let x = x as f64;
    match act {
        Activation::Identity => x,
        Activation::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                x
            }
        }
        Activation::Sigmoid => sigmoid(x),
        Activation::Tanh => x.tanh(),
        Activation::GeluTanh | Activation::GeluErf if x.is_infinite() => x.max(0.0),
        Activation::GeluTanh => x * sigmoid(2.0 * gelu_w(x)),
        Activation::GeluErf => x * phi_cdf(x),
        other => panic!("no error model for {other}"),
    }
}

/// f'(x) in f64, accurate in both tails (NaN for NaN; ReLU's is a select).
pub fn act_derivative_exact(act: Activation, x: f32) -> f64 {
    let x = x as f64;
    if x.is_nan() {
        return x;
    }
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => f64::from(u8::from(x > 0.0)),
        Activation::Sigmoid => sigmoid(x) * sigmoid(-x),
        Activation::Tanh => {
            let e = (-2.0 * x.abs()).exp();
            4.0 * e / ((1.0 + e) * (1.0 + e))
        }
        Activation::GeluTanh | Activation::GeluErf if x.is_infinite() => f64::from(u8::from(x > 0.0)),
        Activation::GeluTanh => {
            let w = gelu_w(x);
            let (s, om) = (sigmoid(2.0 * w), sigmoid(-2.0 * w));
            s + 2.0 * x * s * om * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x)
        }
        Activation::GeluErf => phi_cdf(x) + x * phi_pdf(x),
        other => panic!("no error model for {other}"),
    }
}

/// `dy·f'(x)` in f64 (ReLU: `dy` where x > 0 or NaN, else 0, as the kernel).
pub fn act_backward_exact(act: Activation, x: f32, dy: f32) -> f64 {
    match act {
        Activation::Relu if x.is_nan() => x as f64,
        Activation::Relu if x <= 0.0 => 0.0,
        Activation::Relu | Activation::Identity => dy as f64,
        _ => dy as f64 * act_derivative_exact(act, x),
    }
}

// ---------------------------------------------------------------- activation bounds

/// The A&S 7.1.26 coefficients of the kernels' erf (p, a1..a5) as f64.
const AS_P: f64 = 0.327_591_1;
const AS_A: [f64; 5] = [
    0.254_829_592,
    -0.284_496_736,
    1.421_413_741,
    -1.453_152_027,
    1.061_405_429,
];

/// The kernels' `h = erfc(|x|/√2)/2` by their formula, evaluated exactly,
/// and a bound on the f32 evaluation's rounding error (absolute).
fn erf_model(x: f64) -> (f64, f64) {
    let z = x.abs() * std::f64::consts::FRAC_1_SQRT_2;
    // z = |x|·(1/√2)_f32: rounding + constant, 2 EPS relative; den = fma(z, p, 1):
    // rounding, p's f32 representation and z's error weighted by pz/den ≤ 1: 4 EPS.
    let den = 1.0 + AS_P * z;
    let t = 1.0 / den;
    // t = rcp.rn(den): 1 + 4 = 5 EPS relative.
    let dt = 5.0;
    // P(t) = Σ a_i t^i (i = 1..5) by Horner with fma, then one mul by t: six
    // roundings, each at most EPS times the partial value, which is bounded by
    // Σ|a_i| t^i; the coefficients' f32 representations add EPS·Σ|a_i|t^i; the
    // error of t moves P by |t·P'(t)|·5 EPS.
    let (mut p, mut dp, mut sabs) = (0.0, 0.0, 0.0);
    for (i, &a) in AS_A.iter().enumerate() {
        let ti = t.powi(i as i32 + 1);
        p += a * ti;
        sabs += a.abs() * ti;
        dp += (i as f64 + 1.0) * a * ti;
    }
    let p_err = (7.0 * sabs + dt * dp.abs()) * EPS;
    // e = nk_exp(-x²/2): the argument RN(x·x)·(−0.5) errs by x²/2 · EPS; h = RN(P·e)·0.5.
    let e = (-0.5 * x * x).exp();
    let h = 0.5 * p * e;
    let h_err = 0.5 * e * p_err + h * (0.5 * x * x + EXP + 1.0) * EPS;
    (h, h_err)
}

/// The kernels' Φ(x) by their formula, exactly, and its f32 rounding error bound.
fn cdf_model(x: f64) -> (f64, f64) {
    let (h, h_err) = erf_model(x);
    if x < 0.0 {
        (h, h_err)
    } else {
        // cdf = RN(1 − h)
        (1.0 - h, h_err + (1.0 - h) * EPS)
    }
}

/// Bound on |kernel f(x) − f(x)| for the forward kernels (`nk_act_f`, the
/// helper all activation, bias and GEMM epilogues share).
pub fn act_forward_bound(act: Activation, x: f32) -> f64 {
    if !x.is_finite() {
        return 0.0; // the limits are taken exactly
    }
    let xd = x as f64;
    let y = act_exact(act, x).abs();
    let rel = match act {
        // exact
        Activation::Identity | Activation::Relu => return 0.0,
        // e = nk_exp(−x) (EXP); 1 + e: one rounding, and e's error weighted by
        // e/(1+e) ≤ 1; rcp.rn: one rounding.
        Activation::Sigmoid => EXP + 2.0,
        // |x| < 0.55: odd Taylor polynomial to x¹⁵ (truncation below 0.6e-3·x¹⁷,
        // 0.8 EPS relative at 0.55), Horner roundings damped by x² ≤ 0.3 (0.5),
        // x² and the coefficients' representations (0.2), the final fma (1): 2.5.
        // Else (1 − e)/(1 + e), e = nk_exp(−2|x|): e's error weighted by
        // 2e/(1 − e²) ≤ 0.75 for |x| ≥ 0.55, then three roundings.
        Activation::Tanh => {
            if xd.abs() < 0.55 {
                2.5
            } else {
                0.75 * EXP + 3.0
            }
        }
        // y = x/(1 + e), e = nk_exp(u), u = −2√(2/π)·x·(1 + 0.044715x²) computed by
        // four roundings and two f32 constants: 6 EPS relative on u, which e turns
        // into 6|u| EPS. e's error reaches y weighted by e/(1+e) = σ(u); then
        // 1 + e and the division: 2.
        // Where e overflows (u > 88.7) the kernel returns x/∞ = ±0 for a true value
        // below |x|·2⁻¹²⁸: the underflow floor scales with |x|.
        Activation::GeluTanh => {
            let u = -2.0 * gelu_w(xd);
            let rel = 2.0 + sigmoid(u) * (6.0 * u.abs() + EXP);
            return rel * EPS * y + UNDERFLOW * xd.abs().max(1.0);
        }
        // y = RN(x·cdf): the formula's own error |Φ_model − Φ| and its rounding
        // error, both times |x|, then the product's rounding.
        Activation::GeluErf => {
            let (cdf, cdf_err) = cdf_model(xd);
            let model = (cdf - phi_cdf(xd)).abs();
            return xd.abs() * (model + cdf_err) + EPS * y + UNDERFLOW;
        }
        other => panic!("no error model for {other}"),
    };
    rel * EPS * y + UNDERFLOW
}

/// Bound on |kernel dx − dy·f'(x)| for `nk_act_b`.
pub fn act_backward_bound(act: Activation, x: f32, dy: f32) -> f64 {
    if !x.is_finite() || !dy.is_finite() {
        return 0.0;
    }
    let (xd, dyd) = (x as f64, (dy as f64).abs());
    let dx = act_backward_exact(act, x, dy).abs();
    let floor = UNDERFLOW * dyd.max(1.0);
    match act {
        Activation::Identity | Activation::Relu => 0.0,
        // s = rcp(1+e), 1 − s = e·s, d = s·(1 − s), e = nk_exp(−x) with error δ:
        // d moves by δ·(1 − e)/(1 + e) = δ·tanh(x/2); six roundings, and dy·d one more.
        Activation::Sigmoid => (EXP * (xd / 2.0).tanh().abs() + 7.0) * EPS * dx + floor,
        // |x| < 0.55: d = fma(−t, t, 1) with t from the polynomial (2.5 EPS): t's error
        // weighted by 2t²/(1 − t²) ≤ 2/3, one rounding; else d = 4e/(1 + e)² with
        // e = nk_exp(−2|x|): e's error weighted by (1 − e)/(1 + e) = tanh|x|, four
        // roundings. Then dy·d.
        Activation::Tanh => {
            let rel = if xd.abs() < 0.55 {
                2.5 * 2.0 / 3.0 + 1.0
            } else {
                EXP * xd.abs().tanh() + 4.0
            };
            (rel + 1.0) * EPS * dx + floor
        }
        // d = s + q, s = σ(−u) = 1/(1+e), q = 2x·s·(1−s)·√(2/π)(1 + 3·0.044715x²),
        // e = nk_exp(u) with relative error δ = (6|u| + EXP)·EPS (as in the forward).
        // s errs by (1−s)δ + 2 EPS; q by |2s − 1|δ + 13 EPS (the (1−s) and s factors
        // move oppositely; seven roundings and three f32 constants); the sum rounds
        // once (absolute: s and q cancel for x < 0); dy·d rounds once.
        Activation::GeluTanh => {
            let w = gelu_w(xd);
            let u = -2.0 * w;
            let delta = (6.0 * u.abs() + EXP) * EPS;
            let (s, om) = (sigmoid(2.0 * w), sigmoid(-2.0 * w));
            let q = 2.0 * xd * s * om * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * xd * xd);
            let d = s + q;
            let d_err =
                s * (om * delta + 2.0 * EPS) + q.abs() * ((2.0 * s - 1.0).abs() * delta + 13.0 * EPS) + EPS * d.abs();
            // Where e overflows, s = q = 0 for true values below 2⁻¹²⁸ and
            // 2⁻¹²⁸·2|x|·(1 + 0.134x²).
            let lost = UNDERFLOW * (1.0 + 2.0 * xd.abs() * (1.0 + 3.0 * GELU_CUBIC * xd * xd));
            dyd * (d_err + lost) + EPS * dx + floor
        }
        // d = fma(x, pdf, cdf): cdf as in the forward (formula error + rounding);
        // pdf = RN(e·(1/√(2π))_f32) with e = nk_exp(−x²/2): (x²/2 + EXP + 2) EPS
        // relative, times |x|; the fma rounds once; dy·d once.
        Activation::GeluErf => {
            let (cdf, cdf_err) = cdf_model(xd);
            let model = (cdf - phi_cdf(xd)).abs();
            let pdf = phi_pdf(xd);
            let d = act_derivative_exact(act, x);
            let d_err = model + cdf_err + xd.abs() * pdf * (0.5 * xd * xd + EXP + 2.0) * EPS + EPS * d.abs();
            dyd * d_err + EPS * dx + floor
        }
        other => panic!("no error model for {other}"),
    }
}

/// The largest |f'| of each activation, for errors in the argument (GELU's
/// derivative peaks at 1.129 near x = 2.4, both forms).
pub fn act_lipschitz(act: Activation) -> f64 {
    match act {
        Activation::Identity | Activation::Relu | Activation::Tanh => 1.0,
        Activation::Sigmoid => 0.25,
        Activation::GeluTanh | Activation::GeluErf => 1.13,
        other => panic!("no error model for {other}"),
    }
}

/// The kernels' erf approximation (A&S 7.1.26), exactly evaluated, against
/// Φ: its largest error over `xs`, which the kernel header bounds by 1.5e-7
/// on erf, so 0.75e-7 on Φ.
pub fn cdf_model_error(xs: impl IntoIterator<Item = f64>) -> f64 {
    xs.into_iter()
        .map(|x| (cdf_model(x).0 - phi_cdf(x)).abs())
        .fold(0.0, f64::max)
}

// ---------------------------------------------------------------- GEMM

/// Which GEMM kernel computed a product, for its accumulation bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKind {
    /// nk_sgemm: f32 fma chain in k order, one rounding per k.
    F32,
    /// nk_gemm_bf16 / nk_gemm_f16: exact products, tensor-core sums.
    Tensor,
    /// nk_gemm_tf32 on inputs exactly representable in tf32.
    Tf32Exact,
    /// nk_gemm_tf32 on any f32 inputs: each input rounded to 11 significant bits.
    Tf32Rounded,
}

/// Bound on |kernel C − reference C| for one element: `ab` = |alpha|·Σ|a||b|,
/// `scale` = ab + |beta·c| + |bias|, `want` the reference's (rounded) value.
///
/// Accumulation: k roundings of partial sums bounded by Σ|a||b| (f32 fma:
/// EPS each; tensor cores: 2 EPS each). Epilogue: alpha·acc, the fma with
/// beta·c and the bias add, one rounding each (3·EPS·scale). The reference's
/// own rounding to f32: EPS·|want|. tf32 rounding of each input to 11
/// significant bits (ties away): 2⁻¹¹ each, so 2⁻¹⁰ + 2⁻²² on each product.
pub fn gemm_bound(kind: GemmKind, k: usize, ab: f64, scale: f64, want: f32) -> f64 {
    let per_k = if kind == GemmKind::F32 { 1.0 } else { 2.0 };
    let tf32 = if kind == GemmKind::Tf32Rounded {
        (2f64.powi(-10) + 2f64.powi(-22)) * ab
    } else {
        0.0
    };
    per_k * k as f64 * EPS * ab + 3.0 * EPS * scale + EPS * (want as f64).abs() + tf32 + 1e-40
}

// ---------------------------------------------------------------- softmax / cross-entropy

/// One row of logits through the softmax kernels' arithmetic: the exact
/// log-sum-exp and a bound on the kernel's error in it.
#[derive(Debug, Clone)]
pub struct RowLse {
    /// max_j x_j.
    pub max: f64,
    /// log Σ_j e^{x_j} (exact, f64).
    pub lse: f64,
    /// Bound on |kernel lse − lse|.
    pub err: f64,
}

/// `nk_row_lse` on `row`: m = max (exact); s = Σ e^{RN(x_j − m)} with each
/// exp's error (EXP + |x_j − m|, the subtraction's rounding amplified) and the
/// sum's: each lane adds ceil(cols/32) terms, then 5 butterfly levels, all
/// terms positive, so (ceil(cols/32) + 5)·EPS relative; ln s = lg2(s)·ln2:
/// lg2's error (absolute 2⁻²² below 2, relative above) times ln 2, ln 2's f32
/// representation (EPS·ln s); lse = fma(…, m): EPS·|lse|.
pub fn row_lse(row: &[f32]) -> RowLse {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let mut s = 0.0f64;
    let mut weighted = 0.0f64;
    for &v in row {
        let d = v as f64 - max;
        let e = d.exp();
        s += e;
        weighted += e * (EXP + d.abs());
    }
    let lanes = row.len().div_ceil(32) as f64;
    let ds = ((lanes + 5.0) + weighted / s) * EPS;
    let ln_s = s.ln();
    let lg2 = if s < 2.0 {
        LG2 * std::f64::consts::LN_2
    } else {
        LG2 * ln_s
    };
    let lse = max + ln_s;
    RowLse {
        max,
        lse,
        err: ds + lg2 + EPS * ln_s + EPS * lse.abs(),
    }
}

/// Bound on a softmax output `p = e^{RN(x − lse)}`: lse's error and the
/// subtraction's rounding in the argument, then nk_exp.
pub fn softmax_bound(r: &RowLse, x: f32, p: f64) -> f64 {
    p * (r.err + (EPS * (x as f64 - r.lse).abs()) + EXP * EPS) + UNDERFLOW
}

/// Bound on a log-softmax output `RN(x − lse)`.
pub fn log_softmax_bound(r: &RowLse, y: f64) -> f64 {
    r.err + EPS * y.abs()
}

// ---------------------------------------------------------------- optimizers

/// One Adam step on one element, exactly (f64, from the same f32 state), and
/// bounds on the kernel's error in the new w, m and v.
#[derive(Debug, Clone, Copy)]
pub struct AdamElem {
    pub w: f64,
    pub m: f64,
    pub v: f64,
    pub w_err: f64,
    pub m_err: f64,
    pub v_err: f64,
}

/// `nk_adam`'s arithmetic: every operation rounds once (EPS·|result|); the
/// host passes 1 − β₁, 1 − β₂, 1/c₁, 1/√c₂, lr·wd and lr·√c₂/c₁ rounded to
/// f32 (EPS each on the products they enter).
pub fn adam_elem(cfg: &nnkern::AdamConfig, step: u64, w: f32, g: f32, m: f32, v: f32) -> AdamElem {
    use nnkern::{AdamEpsilon, WeightDecay};
    let (b1, b2) = (cfg.beta1 as f64, cfg.beta2 as f64);
    let (lr, eps, wd) = (cfg.lr as f64, cfg.eps as f64, cfg.weight_decay as f64);
    let (c1, c2) = cfg.bias_corrections(step);
    let (mut w, mut g) = (w as f64, g as f64);
    let (mut dw, mut dg) = (0.0, 0.0);
    match cfg.decay {
        // g' = fma(wd, w, g)
        WeightDecay::L2 => {
            g += wd * w;
            dg = EPS * g.abs();
        }
        // w' = fma(−RN(lr·wd), w, w)
        WeightDecay::Decoupled => {
            let dec = lr * wd * w;
            w -= dec;
            dw = EPS * w.abs() + EPS * dec.abs();
        }
    }
    // m' = fma(β₁, m, RN(RN(1−β₁)·g'))
    let tm = (1.0 - b1) * g;
    let m1 = b1 * m as f64 + tm;
    let dm = EPS * m1.abs() + tm.abs() * 2.0 * EPS + (1.0 - b1) * dg;
    // v' = fma(β₂, v, RN(RN(1−β₂)·RN(g'²)))
    let tv = (1.0 - b2) * g * g;
    let v1 = b2 * v as f64 + tv;
    let dv = EPS * v1.abs() + tv * 3.0 * EPS + (1.0 - b2) * 2.0 * g.abs() * dg;
    let sq = v1.sqrt();
    // √v' rounds once and moves by dv/(2√v')
    let dsq = EPS * sq + if sq > 0.0 { dv / (2.0 * sq) } else { dv.sqrt() };
    let (num, dnum, den, dden) = match cfg.epsilon {
        // den = fma(√v', RN(1/√c₂), eps), num = RN(RN(m'·RN(1/c₁))·lr)
        AdamEpsilon::PyTorch => {
            let isc2 = 1.0 / c2.sqrt();
            let den = sq * isc2 + eps;
            let num = m1 / c1 * lr;
            (
                num,
                num.abs() * 3.0 * EPS + dm / c1 * lr,
                den,
                EPS * den + isc2 * (dsq + EPS * sq),
            )
        }
        // den = RN(√v' + eps), num = RN(m'·RN(lr·√c₂/c₁))
        AdamEpsilon::Keras => {
            let ks = lr * c2.sqrt() / c1;
            let den = sq + eps;
            let num = m1 * ks;
            (num, num.abs() * 2.0 * EPS + dm * ks, den, EPS * den + dsq)
        }
    };
    let upd = num / den;
    let dupd = EPS * upd.abs() + dnum / den + upd.abs() * dden / den;
    let w1 = w - upd;
    AdamElem {
        w: w1,
        m: m1,
        v: v1,
        w_err: EPS * w1.abs() + dw + dupd,
        m_err: dm,
        v_err: dv,
    }
}

/// One SGD step on one element, exactly, and the kernel's error bounds on
/// the new (w, b): g' = fma(wd, w, g); b' = fma(μ, b, g'); w' = fma(−lr, b', w).
pub fn sgd_elem(cfg: &nnkern::SgdConfig, w: f32, g: f32, b: f32) -> (f64, f64, f64, f64) {
    let (lr, mu, wd) = (cfg.lr as f64, cfg.momentum as f64, cfg.weight_decay as f64);
    let g1 = g as f64 + wd * w as f64;
    let b1 = mu * b as f64 + g1;
    let db = EPS * b1.abs() + EPS * g1.abs();
    let w1 = w as f64 - lr * b1;
    (w1, b1, EPS * w1.abs() + lr * db, db)
}

// ---------------------------------------------------------------- comparison

/// Compares `got` to the exact `want` element by element: NaN must meet NaN,
/// infinities must be equal, everything else within `bound(i)`. Returns the
/// largest error as a fraction of its bound (how tight the bound is), or the
/// first mismatch.
pub fn check_bound(what: &str, got: &[f32], want: &[f64], bound: impl Fn(usize) -> f64) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let b = bound(i);
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g as f64 == w
        } else {
            let e = (g as f64 - w).abs();
            if e > 0.0 {
                worst = worst.max(e / b);
            }
            e <= b
        };
        if !ok {
            return Err(format!(
                "{what}[{i}]: got {g:e}, expected {w:e} (error {:e}, bound {b:e})",
                (g as f64 - w).abs()
            ));
        }
    }
    Ok(worst)
}
