//! Vectorised `exp`, `tanh`, `erf`, the logistic sigmoid and the GELU
//! pieces, written once over [`Simd`] and compiled for every ISA.
//!
//! Accuracy over the whole `f32` range (the tests sweep every 1021st bit
//! pattern plus ±0, ±∞, NaN, subnormals and the saturation edges, on every
//! ISA this CPU runs, against `f64` computations):
//!
//! | function | max error | notes |
//! |---|---|---|
//! | `exp` | 1.5 ulp (measured 1.04) | correct gradual underflow to 0 below −103.97, ∞ above 88.72 |
//! | `sigmoid` | 3 ulp (measured 2.03) | `(1 or e)/(1+e)` with `e = exp(−|x|)`, one division: no cancellation, subnormal tail kept |
//! | `tanh` | 2 ulp (measured 1.50) | odd polynomial below 0.625, `(1−e)/(1+e)` with `e = exp(−2|x|)` above |
//! | `erf` | 3 ulp (measured 2.48) | odd polynomial below 0.9375, `1 − e^(−x²)·K(1/x)/x` above |
//! | `log` | 2 ulp (measured 1.15) | `e·ln2 + log1p(m − 1)`, `m` in `[√½, √2)`; 0 → −∞, < 0 → NaN |
//!
//! The ISAs give bit-identical results (same operations, same order). A
//! reciprocal estimate (`vrcp14ps` + Newton–Raphson) instead of the divisions
//! was measured slower on the AVX-512 development machine: these functions are
//! bound by the FMA ports, not by the divider (replacing the sigmoid's one
//! division by a multiply, as a probe, saved little). Two formulations were tried and dropped
//! for accuracy: `tanh` from `1 ∓ e = (1 ∓ 2ⁿ) ∓ 2ⁿp` without the small-|x|
//! polynomial (one path, ~10 operations fewer) reaches 2.03 ulp near 0.12 on
//! a dense sweep, over the 2-ulp bound. A table-driven `exp` (16 entries in
//! a register, cubic) counts 14 operations against these 13 once its table
//! is split in two parts for accuracy, so it was not built.
//!
//! NaN in gives NaN out; ±∞ give the limits. Subnormal inputs are handled
//! as ordinary numbers (no flush to zero).
//!
//! The polynomial coefficients are Chebyshev fits (mpmath `chebyfit`) of
//! `(eʳ − 1 − r)/r²` on `[−ln2/2, ln2/2]`, `(tanh x − x)/x³` on `[0, 0.625]`,
//! `erf(x)/x` on `[0, 0.9375]`, and `erfc(t)·t·e^(t²)` on `1/t ∈ [1/10.5, 1/0.9375]`
//! (the last in a variable normalised to `[−1, 1]`, so the sum is well conditioned);
//! and `(log1p f − f + f²/2)/f³` on `[√½ − 1, √2 − 1]`; each fit's own error is
//! below 0.4 ulp.

use super::vector::Simd;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` rounded to `f32`; `x − n·LN2_HI` is exact for the `n` that occur (see `exp`).
const LN2_HI: f32 = std::f32::consts::LN_2;
/// `ln 2 − LN2_HI`.
const LN2_LO: f32 = -1.904_654_3e-9;
/// `(eʳ − 1 − r)/r²`, highest degree first.
const EXP_P: [f32; 5] = [0.001_392_617_6, 0.008_363_173, 0.041_666_556, 0.166_665_78, 0.5];
/// `(tanh x − x)/x³` as a polynomial in `x²`, highest degree first.
const TANH_Q: [f32; 6] = [
    0.002_292_744_8,
    -0.008_343_945,
    0.021_768_918,
    -0.053_959_258,
    0.133_333_04,
    -0.333_333_34,
];
/// Below this, tanh uses the polynomial.
const TANH_SMALL: f32 = 0.625;
/// `erf(x)/x` as a polynomial in `x²`, highest degree first.
const ERF_E: [f32; 7] = [
    8.285_826e-5,
    -0.000_812_296_1,
    0.005_199_318_3,
    -0.026_858_723,
    0.112_836_84,
    -0.376_126_3,
    std::f32::consts::FRAC_2_SQRT_PI,
];
/// Below this, erf uses the polynomial.
const ERF_SMALL: f32 = 0.9375;
/// `erfc(t)·t·e^(t²)` as a polynomial in `w = (1/t − ERFC_MID)·ERFC_INV_HALF`, highest degree first.
const ERFC_K: [f32; 12] = [
    2.722_457_2e-5,
    -1.839_051_2e-5,
    -0.000_125_505_25,
    0.000_264_872_33,
    -0.000_264_993_14,
    -2.794_335_5e-5,
    0.001_376_021_3,
    -0.004_955_482_7,
    0.009_949_798,
    -0.002_778_267_7,
    -0.083_068_96,
    0.497_073_77,
];
const ERFC_MID: f32 = 0.580_952_4;
const ERFC_INV_HALF: f32 = 2.058_823_6;
/// `(log1p f − f + f²/2)/f³`, highest degree first.
const LOG_P: [f32; 9] = [
    0.069_716_12,
    -0.114_797_34,
    0.116_854_2,
    -0.124_256_87,
    0.142_490_58,
    -0.166_678_03,
    0.200_007_16,
    -0.25,
    0.333_333_3,
];
/// `ln 2` split so that `e·LOG_LN2_HI` is exact for every exponent `e` (9 significant bits).
const LOG_LN2_HI: f32 = 0.693_359_4;
/// `ln 2 − LOG_LN2_HI`.
const LOG_LN2_LO: f32 = -2.121_944_4e-4;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const SQRT_2: f32 = std::f32::consts::SQRT_2;
/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
/// `√(2/π)`, the GELU tanh-form constant.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;
/// `2·√(2/π)·0.044715`, rounded once from the exact product.
const GELU_TANH_B: f32 = 0.071_354_814;
/// Beyond ±30 every GELU value and derivative is its limit in `f32`; clamping
/// there keeps `x²` finite and `x · 0` from turning into NaN at ±∞.
const GELU_CLAMP: f32 = 30.0;

/// Horner's rule, coefficients highest degree first.
#[inline(always)]
fn horner<S: Simd, const N: usize>(s: S, x: S::V, c: &[f32; N]) -> S::V {
    let mut acc = s.splat(c[0]);
    for &ci in &c[1..] {
        acc = s.fma(acc, x, s.splat(ci));
    }
    acc
}

/// `1.5·2²³`: adding it to a float of magnitude below 2²² rounds that float to
/// an integer (ties to even) in the same operation.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `eˣ`, ≤ 1.5 ulp. (The kernels only need `x ≤ 0`, through
/// [`exp_nonpositive`]; this whole function is what the accuracy tests sweep.)
#[cfg_attr(not(test), allow(dead_code))]
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    // Beyond these eˣ is 0 or ∞ in f32; clamping keeps n in range. `min`/`max`
    // return their second operand for NaN, so NaN passes through.
    exp_clamped(s, s.max(s.splat(-104.0), s.min(s.splat(89.0), x)))
}

/// `eˣ` for `x ≤ 0` (or NaN): the upper clamp of [`exp`] is not needed.
#[inline(always)]
pub(crate) fn exp_nonpositive<S: Simd>(s: S, x: S::V) -> S::V {
    exp_clamped(s, s.max(s.splat(-104.0), x))
}

/// `eˣ` for `x` in `[−104, 89]` or NaN.
#[inline(always)]
fn exp_clamped<S: Simd>(s: S, x: S::V) -> S::V {
    // n = round(x·log₂e) in one FMA (the product is rounded once, to an
    // integer, through the magic constant; |x·log₂e| < 151 ≪ 2²²) and one
    // subtraction, instead of a multiply and a separate rounding instruction.
    let magic = s.splat(ROUND_MAGIC);
    let n = s.sub(s.fma(x, s.splat(LOG2E), magic), magic);
    // Exact: n·LN2_HI and x are multiples of ulp(x) (or n = 0) and |x − n·LN2_HI| < 0.5.
    let r = s.fnma(n, s.splat(LN2_HI), x);
    let r = s.fnma(n, s.splat(LN2_LO), r);
    let p = horner(s, r, &EXP_P);
    let p = s.fma(s.mul(r, r), p, r);
    s.scale_pow2(s.add(p, s.splat(1.0)), n)
}

/// `e^(−k·a²)` for `k` = 1 or ½, with `a²` split into a rounded part and its
/// rounding error so the large argument loses nothing. `a ≥ 0` or NaN.
#[inline(always)]
fn exp_neg_sq<S: Simd>(s: S, a: S::V, k: f32) -> S::V {
    // e^(−400) is 0 already; the clamp keeps the split finite at ∞.
    let a = s.min(s.splat(20.0 / k), a);
    let hi = s.mul(a, a);
    let lo = s.fma(a, a, s.sub(s.splat(0.0), hi));
    let kk = s.splat(k);
    let e = exp_nonpositive(s, s.mul(s.sub(s.splat(0.0), kk), hi));
    // e^(−k(hi + lo)) = e^(−k·hi)·(1 − k·lo) to first order; k·lo < 2⁻²⁴·k·hi.
    s.fnma(e, s.mul(kk, lo), e)
}

/// `(e, r)` with `e = e^(−|x|)` and `r = 1/(1 + e)`: the logistic is `r` for
/// `x ≥ 0` and `e·r` for `x < 0`; its derivative is `e·r²`.
#[inline(always)]
fn logistic_parts<S: Simd>(s: S, x: S::V) -> (S::V, S::V) {
    let e = exp_nonpositive(s, s.copysign(x, s.splat(-1.0)));
    let r = s.div(s.splat(1.0), s.add(s.splat(1.0), e));
    (e, r)
}

/// `1/(1 + e^(−x))`, ≤ 3 ulp.
#[inline(always)]
pub(crate) fn sigmoid<S: Simd>(s: S, x: S::V) -> S::V {
    // One division `(1 or e)/(1 + e)` with `e = e^(−|x|)`: the numerator is
    // chosen before it, so the left side costs no extra multiply (and one
    // rounding less than `e·(1/(1 + e))`).
    let one = s.splat(1.0);
    let e = exp_nonpositive(s, s.copysign(x, s.splat(-1.0)));
    let num = s.select(s.lt(x, s.splat(0.0)), e, one);
    s.div(num, s.add(one, e))
}

/// `σ'(x) = σ(x)(1 − σ(x))`.
#[inline(always)]
pub(crate) fn sigmoid_derivative<S: Simd>(s: S, x: S::V) -> S::V {
    let (e, r) = logistic_parts(s, x);
    s.mul(e, s.mul(r, r))
}

/// `tanh x`, ≤ 2 ulp.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let a = s.abs(x);
    let x2 = s.mul(x, x);
    let small = s.fma(s.mul(x, x2), horner(s, x2, &TANH_Q), x);
    let e = exp_nonpositive(s, s.mul(a, s.splat(-2.0)));
    let one = s.splat(1.0);
    let large = s.copysign(s.div(s.sub(one, e), s.add(one, e)), x);
    s.select(s.lt(a, s.splat(TANH_SMALL)), small, large)
}

/// `1 − tanh² x`, as `4e/(1 + e)²` with `e = e^(−2|x|)` (no cancellation).
#[inline(always)]
pub(crate) fn tanh_derivative<S: Simd>(s: S, x: S::V) -> S::V {
    let e = exp_nonpositive(s, s.mul(s.abs(x), s.splat(-2.0)));
    let r = s.div(s.splat(2.0), s.add(s.splat(1.0), e));
    s.mul(e, s.mul(r, r))
}

/// `erfc(t)·t·e^(t²)` for `t ≥ 0.9375`, from `u = 1/t`.
#[inline(always)]
fn erfc_scaled<S: Simd>(s: S, u: S::V) -> S::V {
    let w = s.mul(s.sub(u, s.splat(ERFC_MID)), s.splat(ERFC_INV_HALF));
    horner(s, w, &ERFC_K)
}

/// `erf x`, ≤ 3 ulp. (The kernels use its pieces through the GELU CDF; this
/// whole function is what the accuracy tests sweep.)
#[cfg_attr(not(test), allow(dead_code))]
#[inline(always)]
pub(crate) fn erf<S: Simd>(s: S, x: S::V) -> S::V {
    let a = s.abs(x);
    let small = s.mul(x, horner(s, s.mul(x, x), &ERF_E));
    let u = s.div(s.splat(1.0), a);
    let c = s.mul(s.mul(exp_neg_sq(s, a, 1.0), u), erfc_scaled(s, u));
    let large = s.copysign(s.sub(s.splat(1.0), c), x);
    s.select(s.lt(a, s.splat(ERF_SMALL)), small, large)
}

/// `ln x`, ≤ 2 ulp. (The kernels need one `ln` per row, taken in scalar code; this is
/// the vector form for kernels that need it per element.)
#[cfg_attr(not(test), allow(dead_code))]
#[inline(always)]
pub(crate) fn log<S: Simd>(s: S, x: S::V) -> S::V {
    let (m, e) = s.split_exponent(x);
    // m in [√½, √2): halve the upper part (exact) and count it in the exponent.
    let big = s.gt(m, s.splat(std::f32::consts::SQRT_2));
    let m = s.select(big, s.mul(m, s.splat(0.5)), m);
    let e = s.select(big, s.add(e, s.splat(1.0)), e);
    // Exact (Sterbenz): m and 1 are within a factor 2.
    let f = s.sub(m, s.splat(1.0));
    let f2 = s.mul(f, f);
    let p = horner(s, f, &LOG_P);
    let r = s.fma(s.mul(f2, f), p, s.fnma(s.splat(0.5), f2, f));
    let y = s.fma(e, s.splat(LOG_LN2_HI), s.fma(e, s.splat(LOG_LN2_LO), r));
    let zero = s.splat(0.0);
    let y = s.select(s.gt(x, s.splat(f32::MAX)), x, y);
    let y = s.select(s.lt(x, zero), s.splat(f32::NAN), y);
    let y = s.select(s.le(s.abs(x), zero), s.splat(f32::NEG_INFINITY), y);
    s.select(s.is_nan(x), x, y)
}

/// `(Φ(x), e^(−x²/2))` for the exact GELU: `Φ` is the standard normal CDF,
/// computed without cancellation on the left tail (`Φ = ½·erfc(|x|/√2)` there).
#[inline(always)]
fn normal_cdf_and_gauss<S: Simd>(s: S, x: S::V) -> (S::V, S::V) {
    let a = s.abs(x);
    let t = s.mul(a, s.splat(FRAC_1_SQRT_2));
    let half = s.splat(0.5);
    let erf_t = s.mul(t, horner(s, s.mul(t, t), &ERF_E));
    let c_small = s.fnma(half, erf_t, half);
    let g = exp_neg_sq(s, a, 0.5);
    let u = s.div(s.splat(SQRT_2), a);
    let c_large = s.mul(s.mul(s.mul(half, g), u), erfc_scaled(s, u));
    // c = ½·erfc(|x|/√2) = Φ(−|x|).
    let c = s.select(s.lt(t, s.splat(ERF_SMALL)), c_small, c_large);
    let cdf = s.select(s.lt(x, s.splat(0.0)), c, s.sub(s.splat(1.0), c));
    (cdf, g)
}

/// GELU, exact form `x·Φ(x)`.
#[inline(always)]
pub(crate) fn gelu_erf<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.max(s.splat(-GELU_CLAMP), x);
    let (cdf, _) = normal_cdf_and_gauss(s, x);
    s.mul(x, cdf)
}

/// GELU′, exact form `Φ(x) + x·φ(x)`.
#[inline(always)]
pub(crate) fn gelu_erf_derivative<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.max(s.splat(-GELU_CLAMP), s.min(s.splat(GELU_CLAMP), x));
    let (cdf, g) = normal_cdf_and_gauss(s, x);
    s.fma(s.mul(x, g), s.splat(FRAC_1_SQRT_2PI), cdf)
}

/// `2·√(2/π)·(x + 0.044715·x³)`: GELU-tanh is `x·σ(z)` with this `z`,
/// since `½(1 + tanh(z/2)) = σ(z)`.
#[inline(always)]
fn gelu_tanh_arg<S: Simd>(s: S, x: S::V) -> S::V {
    // x·(a + b·x²) with a = 2√(2/π), b = a·0.044715 (each rounded once): three
    // operations, and no more roundings than x·a·(1 + 0.044715·x²).
    let x2 = s.mul(x, x);
    let inner = s.fma(s.splat(GELU_TANH_B), x2, s.splat(2.0 * SQRT_2_OVER_PI));
    s.mul(x, inner)
}

/// GELU, tanh form, as `x·σ(2u)`: no `1 + tanh` cancellation on the left.
#[inline(always)]
pub(crate) fn gelu_tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.max(s.splat(-GELU_CLAMP), x);
    s.mul(x, sigmoid(s, gelu_tanh_arg(s, x)))
}

/// GELU′, tanh form: `σ(z) + x·σ′(z)·z′(x)`.
#[inline(always)]
pub(crate) fn gelu_tanh_derivative<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.max(s.splat(-GELU_CLAMP), s.min(s.splat(GELU_CLAMP), x));
    let z = gelu_tanh_arg(s, x);
    let (e, r) = logistic_parts(s, z);
    let sig = s.select(s.lt(z, s.splat(0.0)), s.mul(e, r), r);
    let dsig = s.mul(e, s.mul(r, r));
    let x2 = s.mul(x, x);
    let dz = s.mul(
        s.fma(s.splat(3.0 * GELU_CUBIC), x2, s.splat(1.0)),
        s.splat(2.0 * SQRT_2_OVER_PI),
    );
    s.fma(s.mul(x, dsig), dz, sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::vector::dispatch;

    #[derive(Clone, Copy, Debug)]
    enum F {
        Exp,
        Sigmoid,
        Tanh,
        Erf,
        Log,
    }

    #[inline(always)]
    fn map_kernel<S: Simd>(s: S, f: F, x: &[f32], y: &mut [f32]) {
        let l = S::LANES;
        let n = x.len();
        let mut i = 0;
        let apply = |v| match f {
            F::Exp => exp(s, v),
            F::Sigmoid => sigmoid(s, v),
            F::Tanh => tanh(s, v),
            F::Erf => erf(s, v),
            F::Log => log(s, v),
        };
        while i + l <= n {
            // SAFETY: i + LANES <= len of both slices.
            unsafe { s.store(y.as_mut_ptr().add(i), apply(s.load(x.as_ptr().add(i)))) };
            i += l;
        }
        if i < n {
            // SAFETY: n − i < LANES elements remain in both slices.
            unsafe {
                let v = s.load_partial(x.as_ptr().add(i), n - i, s.splat(0.0));
                s.store_partial(y.as_mut_ptr().add(i), n - i, apply(v));
            }
        }
    }
    dispatch!(fn map(f: F, x: &[f32], y: &mut [f32]) => map_kernel);

    fn reference(f: F, x: f64) -> f64 {
        match f {
            F::Exp => x.exp(),
            F::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            F::Tanh => x.tanh(),
            F::Erf => libm::erf(x),
            F::Log => x.ln(),
        }
    }

    /// Distance in units of the last place of the `f32` nearest the exact value.
    pub(crate) fn ulp_error(got: f32, exact: f64) -> f64 {
        if got.is_nan() || exact.is_nan() {
            return if got.is_nan() && exact.is_nan() {
                0.0
            } else {
                f64::INFINITY
            };
        }
        let r = exact as f32;
        if r.is_infinite() || got.is_infinite() {
            return if got == r { 0.0 } else { f64::INFINITY };
        }
        let ulp = if r.abs() < f32::MIN_POSITIVE {
            2f64.powi(-149)
        } else {
            2f64.powi(r.abs().log2().floor() as i32 - 23)
        };
        (got as f64 - exact).abs() / ulp
    }

    fn inputs() -> Vec<f32> {
        let mut x: Vec<f32> = (0..=u32::MAX / 1021).map(|k| f32::from_bits(k * 1021)).collect();
        x.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::MAX,
            f32::MIN,
            88.72,
            88.73,
            -103.9,
            -104.0,
            -87.3,
            0.625,
            -0.625,
            0.9375,
            3.92,
            9.1,
            -9.1,
        ]);
        x
    }

    #[test]
    fn accuracy_over_the_whole_range_on_every_isa() {
        let x = inputs();
        let mut y = vec![0.0f32; x.len()];
        for isa in crate::testing::test_isas() {
            for (f, bound) in [
                (F::Exp, 1.5),
                (F::Sigmoid, 3.0),
                (F::Tanh, 2.0),
                (F::Erf, 3.0),
                (F::Log, 2.0),
            ] {
                y.fill(f32::NAN);
                map(isa, f, &x, &mut y);
                let mut worst = (0.0f64, 0.0f32);
                for (&xi, &yi) in x.iter().zip(&y) {
                    let e = ulp_error(yi, reference(f, xi as f64));
                    if e > worst.0 || e.is_nan() {
                        worst = (e, xi);
                    }
                }
                eprintln!("{isa} {f:?}: max {:.3} ulp at {:e}", worst.0, worst.1);
                assert!(
                    worst.0 <= bound,
                    "{isa} {f:?}: {} ulp at x = {:e} (got {:e}, want {:e})",
                    worst.0,
                    worst.1,
                    {
                        let mut o = [0.0];
                        map(isa, f, &[worst.1], &mut o);
                        o[0]
                    },
                    reference(f, worst.1 as f64)
                );
            }
        }
    }
}
