//! SIMD optimizer updates: Adam/AdamW and SGD-momentum in one pass over
//! parameters, gradients and moments; the sum of squares and the scaling of
//! global-norm clipping.
//!
//! Adam reads w, g, m, v and writes w, m, v (28 bytes per parameter); the
//! per-step scalars (bias corrections, where ε goes) are folded on the
//! calling thread into `w −= m·k / (√v·a + ε)`, which is both PyTorch's form
//! (`k = lr/(1−β₁ᵗ)`, `a = 1/√(1−β₂ᵗ)`) and Keras's (`k = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`,
//! `a = 1`). Large tensors would split over threads like the activations.
//!
//! Speed against a copy of the same bytes: `docs/MEASUREMENTS.md`.

use crate::ops::activation::kernels::{align_head, for_ranges, SyncPtr, PAR_MIN_PER_TASK};
use crate::simd::vector::{dispatch, Simd};
use crate::simd::Isa;

/// The per-step constants of one Adam step, all `f32`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamScalars {
    pub(crate) beta1: f32,
    pub(crate) one_minus_beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) one_minus_beta2: f32,
    /// Decoupled (AdamW) decay rather than L2.
    pub(crate) is_decoupled: bool,
    /// `wd` for L2 (added to the gradient).
    pub(crate) l2: f32,
    /// `lr·wd` for decoupled decay (taken off the weight first).
    pub(crate) decoupled: f32,
    /// Step size on `m`.
    pub(crate) k: f32,
    /// Factor on `√v`.
    pub(crate) a: f32,
    pub(crate) eps: f32,
    /// `k/(√v·a + ε)` is normal (or 0, for `k = 0`) for every finite `v ≥ 0`:
    /// the update is then `m·(k/(√v·a + ε))`, one division and one FMA.
    pub(crate) fold: bool,
}

impl AdamScalars {
    /// Whether `k/(√v·a + ε)` stays normal for every finite `v ≥ 0`: its
    /// denominator (rounded once) lies in `[ε, (√f32::MAX·a + ε)(1 + 2⁻²³)]`,
    /// so the quotient does when `k/max ≥ 2⁻¹²⁶` and `k/ε` is finite with
    /// room for its rounding; `k = 0` gives 0 for any denominator. With a
    /// subnormal `k`, `ε` or `a·2⁻³²`, never.
    pub(crate) fn quotient_is_normal(k: f32, a: f32, eps: f32) -> bool {
        let (k, a, e) = (k as f64, a as f64, eps as f64);
        let tiny = f32::MIN_POSITIVE as f64;
        if !(e >= tiny && a >= 1.0 && a.is_finite() && k.is_finite()) {
            return false;
        }
        if k == 0.0 {
            return true;
        }
        let max = ((f32::MAX as f64).sqrt() * a + e) * (1.0 + f32::EPSILON as f64);
        k >= tiny
            && k / max >= tiny * (1.0 + f32::EPSILON as f64)
            && k / e <= f32::MAX as f64 * (1.0 - f32::EPSILON as f64)
    }
}

/// Below this, `√v` is taken of `v·2⁶⁴` and scaled back by 2⁻³² (exact: both
/// are powers of 4 and 2), so the square root never reads a subnormal.
const SQRT_SMALL: f32 = 1.0 / (1u64 << 63) as f32 / 2.0;

/// Loads `cnt <= LANES` values (zero past `cnt`). Closures are avoided in the
/// kernels: they would not inherit the ISA's target features if not inlined.
///
/// # Safety
/// `p .. p + cnt` readable.
#[inline(always)]
unsafe fn load_n<S: Simd>(s: S, p: *const f32, cnt: usize) -> S::V {
    // SAFETY: by the caller; a partial load touches only the first cnt lanes.
    unsafe {
        if cnt == S::LANES {
            s.load(p)
        } else {
            s.load_partial(p, cnt, s.splat(0.0))
        }
    }
}

/// One Adam update of a vector of lanes: returns the new `(w, m, v)`.
///
/// Moments of rarely active weights decay into the subnormal range. On the
/// x86 cores measured (`docs/DESIGN.md`, Subnormal Adam moments), `vaddps`,
/// `vcmpps` and `vfmadd*ps` take subnormal operands at full speed, but
/// `vmulps`, `vsqrtps` and `vdivps` are several times slower with a subnormal
/// input, which slowed the whole Adam step several-fold. So nothing
/// here multiplies, divides or takes the root of a moment directly: products
/// with a moment are FMAs (`a·b + 0` equals `a·b` but for the sign of a zero
/// product, which cannot change the weight); when a lane's `v` is tiny the
/// root is taken of `v·2⁶⁴` and `a` scaled by 2⁻³² instead (exact: even
/// powers of two); and `m` multiplies the quotient `k/(√v·a + ε)` inside the
/// final FMA, so the divider only sees normal operands.
///
/// The divider (`√` and `÷`, the slowest instructions here, not fully
/// pipelined on x86 cores) bounds AVX2 on the cores measured, the FMA pipes come next: so
/// vectors without a tiny `v` (the common case, in runs of whole rows) skip
/// the scaling's compare-and-blend, and `k` is folded into the division,
/// which saves an FMA and a rounding against `k·(m·(1/(√v·a + ε)))`. That
/// needs `k/(√v·a + ε)` normal for every finite `v` (`c.fold`); steps too
/// small for it (`k` ≲ 10⁻¹⁹), too large (`k/ε` beyond `f32::MAX`) or a
/// subnormal `ε` are left to [`adam_exact`].
#[inline(always)]
fn adam_lanes<S: Simd>(s: S, c: &AdamScalars, w: S::V, g: S::V, m: S::V, v: S::V) -> (S::V, S::V, S::V) {
    // L2: g += wd·w; decoupled: w −= lr·wd·w. Only the one configured is computed, as the
    // reference does, so an infinite weight is not turned into NaN by a 0·∞.
    let (w, g) = if c.is_decoupled {
        (s.fnma(s.splat(c.decoupled), w, w), g)
    } else {
        (w, s.fma(s.splat(c.l2), w, g))
    };
    let m = s.fma(s.splat(c.beta1), m, s.mul(s.splat(c.one_minus_beta1), g));
    // (1 − β₂)·g first: g² alone overflows for |g| > 1.8e19 where (1 − β₂)·g² may not.
    let v = s.fma(s.splat(c.beta2), v, s.mul(s.mul(s.splat(c.one_minus_beta2), g), g));
    let small = s.lt(v, s.splat(SQRT_SMALL));
    // `+0` addends: the compiler folds `a·b + (−0)` back into a multiplication.
    let zero = s.splat(0.0);
    let denom = if s.any(small) {
        // √(v·2⁶⁴)·(a·2⁻³²) is the same real product as √v·a (a ≥ 1, so a·2⁻³² is normal).
        let root = s.sqrt(s.select(small, s.fma(v, s.splat(2f32.powi(64)), zero), v));
        let a = s.select(small, s.splat(c.a * 2f32.powi(-32)), s.splat(c.a));
        s.fma(root, a, s.splat(c.eps))
    } else {
        s.fma(s.sqrt(v), s.splat(c.a), s.splat(c.eps))
    };
    // m·(k/(√v·a + ε)) with the quotient normal (`c.fold`, checked by the caller) and the
    // product exact inside the FMA: one rounding before the weight's.
    let w = s.fnma(m, s.div(s.splat(c.k), denom), w);
    (w, m, v)
}

/// Adam element by element in `f64` from the same scalars, for the steps
/// whose quotient `k/(√v·a + ε)` could leave the normal range of `f32`
/// (see [`adam_lanes`]): no intermediate over- or underflows, so each result
/// is the exact one rounded once (the moments) or within the rounding of
/// `k` and `a` (the weight). Such steps (`lr` ≲ 10⁻¹⁹, `lr/ε` ≳ 10³⁸ or a
/// subnormal `ε`) are not used in training; this path is for correctness.
fn adam_exact(c: &AdamScalars, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let f = |x: f32| x as f64;
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let (mut wi, mut gi) = (f(*w), f(g));
        if c.is_decoupled {
            wi -= f(c.decoupled) * wi;
        } else {
            gi += f(c.l2) * wi;
        }
        let mi = f(c.beta1) * f(*m) + f(c.one_minus_beta1) * gi;
        let vi = f(c.beta2) * f(*v) + f(c.one_minus_beta2) * gi * gi;
        *m = mi as f32;
        *v = vi as f32;
        *w = (wi - f(c.k) * mi / (vi.sqrt() * f(c.a) + f(c.eps))) as f32;
    }
}

#[inline(always)]
fn adam_kernel<S: Simd>(s: S, c: AdamScalars, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    if !c.fold {
        return adam_exact(&c, w, g, m, v);
    }
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let (wp, gp, mp, vp) = (w.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
    let l = S::LANES;
    // A partial first vector aligns the stores to w (and to m, v when allocated alike).
    let head = align_head::<S>(wp, n);
    let mut i = 0;
    while i < n {
        let cnt = if i == 0 && head > 0 { head } else { (n - i).min(l) };
        // SAFETY: cnt elements remain in all four slices (distinct borrows, no overlap);
        // partial accesses touch only those.
        unsafe {
            let (wv, gv, mv, vv) = (
                load_n(s, wp.add(i), cnt),
                load_n(s, gp.add(i), cnt),
                load_n(s, mp.add(i), cnt),
                load_n(s, vp.add(i), cnt),
            );
            let (wv, mv, vv) = adam_lanes(s, &c, wv, gv, mv, vv);
            if cnt == l {
                s.store(wp.add(i), wv);
                s.store(mp.add(i), mv);
                s.store(vp.add(i), vv);
            } else {
                s.store_partial(wp.add(i), cnt, wv);
                s.store_partial(mp.add(i), cnt, mv);
                s.store_partial(vp.add(i), cnt, vv);
            }
        }
        i += cnt;
    }
}
dispatch!(pub(crate) fn adam_isa(c: AdamScalars, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) => adam_kernel);

/// One Adam step over equal-length slices, threaded when large.
pub(crate) fn adam(
    isa: Isa,
    c: AdamScalars,
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> crate::Result<()> {
    let (wp, mp, vp) = (
        SyncPtr(w.as_mut_ptr()),
        SyncPtr(m.as_mut_ptr()),
        SyncPtr(v.as_mut_ptr()),
    );
    for_ranges(w.len(), PAR_MIN_PER_TASK, |r| {
        // SAFETY: ranges of distinct tasks are disjoint and inside the slices, which outlive the tasks.
        let (w, m, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(wp.get().add(r.start), r.len()),
                std::slice::from_raw_parts_mut(mp.get().add(r.start), r.len()),
                std::slice::from_raw_parts_mut(vp.get().add(r.start), r.len()),
            )
        };
        adam_isa(isa, c, w, &g[r], m, v);
    })
}

#[inline(always)]
fn sgd_kernel<S: Simd>(s: S, lr: f32, momentum: f32, wd: f32, w: &mut [f32], g: &[f32], b: &mut [f32]) {
    let n = w.len().min(g.len()).min(b.len());
    let (wp, gp, bp) = (w.as_mut_ptr(), g.as_ptr(), b.as_mut_ptr());
    let l = S::LANES;
    let (lr, mu, wd) = (s.splat(lr), s.splat(momentum), s.splat(wd));
    let head = align_head::<S>(wp, n);
    let mut i = 0;
    while i < n {
        let cnt = if i == 0 && head > 0 { head } else { (n - i).min(l) };
        // SAFETY: cnt elements remain in all three slices (distinct borrows); partial accesses
        // touch only those.
        unsafe {
            let (wv, gv, bv) = (
                load_n(s, wp.add(i), cnt),
                load_n(s, gp.add(i), cnt),
                load_n(s, bp.add(i), cnt),
            );
            let bv = s.fma(mu, bv, s.fma(wd, wv, gv));
            let wv = s.fnma(lr, bv, wv);
            if cnt == l {
                s.store(wp.add(i), wv);
                s.store(bp.add(i), bv);
            } else {
                s.store_partial(wp.add(i), cnt, wv);
                s.store_partial(bp.add(i), cnt, bv);
            }
        }
        i += cnt;
    }
}
dispatch!(pub(crate) fn sgd_isa(lr: f32, momentum: f32, wd: f32, w: &mut [f32], g: &[f32], b: &mut [f32]) => sgd_kernel);

/// One SGD-momentum step over equal-length slices, threaded when large.
pub(crate) fn sgd(
    isa: Isa,
    lr: f32,
    momentum: f32,
    wd: f32,
    w: &mut [f32],
    g: &[f32],
    b: &mut [f32],
) -> crate::Result<()> {
    let (wp, bp) = (SyncPtr(w.as_mut_ptr()), SyncPtr(b.as_mut_ptr()));
    for_ranges(w.len(), PAR_MIN_PER_TASK, |r| {
        // SAFETY: ranges of distinct tasks are disjoint and inside the slices, which outlive the tasks.
        let (w, b) = unsafe {
            (
                std::slice::from_raw_parts_mut(wp.get().add(r.start), r.len()),
                std::slice::from_raw_parts_mut(bp.get().add(r.start), r.len()),
            )
        };
        sgd_isa(isa, lr, momentum, wd, w, &g[r], b);
    })
}

/// `Σ x²`: four vector accumulators of `f32`, each taking 16 terms before
/// the block is folded into an `f64` total, so the relative error stays
/// below about 24·2⁻²⁴ whatever the length.
#[inline(always)]
fn sum_squares_kernel<S: Simd>(s: S, x: &[f32]) -> f64 {
    let l = S::LANES;
    let n = x.len();
    let p = x.as_ptr();
    let z = s.splat(0.0);
    let block = 64 * l;
    let mut total = 0.0f64;
    let mut i = 0;
    while i + block <= n {
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        let mut j = i;
        while j < i + block {
            // SAFETY: j + 4·LANES <= i + block <= n.
            unsafe {
                let (v0, v1, v2, v3) = (
                    s.load(p.add(j)),
                    s.load(p.add(j + l)),
                    s.load(p.add(j + 2 * l)),
                    s.load(p.add(j + 3 * l)),
                );
                a0 = s.fma(v0, v0, a0);
                a1 = s.fma(v1, v1, a1);
                a2 = s.fma(v2, v2, a2);
                a3 = s.fma(v3, v3, a3);
            }
            j += 4 * l;
        }
        total += s.reduce_sum(s.add(s.add(a0, a1), s.add(a2, a3))) as f64;
        i += block;
    }
    let mut a = z;
    let mut t = 0.0f64;
    let mut terms = 0;
    while i < n {
        let cnt = (n - i).min(l);
        // SAFETY: cnt elements remain; a partial load touches only those.
        let v = unsafe {
            if cnt == l {
                s.load(p.add(i))
            } else {
                s.load_partial(p.add(i), cnt, z)
            }
        };
        a = s.fma(v, v, a);
        terms += 1;
        if terms == 16 {
            t += s.reduce_sum(a) as f64;
            a = z;
            terms = 0;
        }
        i += cnt;
    }
    total + t + s.reduce_sum(a) as f64
}
dispatch!(pub(crate) fn sum_squares(x: &[f32]) -> f64 => sum_squares_kernel);

#[inline(always)]
fn scale_kernel<S: Simd>(s: S, x: &mut [f32], c: f32) {
    let l = S::LANES;
    let n = x.len();
    let p = x.as_mut_ptr();
    let cv = s.splat(c);
    let mut i = 0;
    while i < n {
        let cnt = (n - i).min(l);
        // SAFETY: cnt elements remain; partial accesses touch only those.
        unsafe {
            if cnt == l {
                s.store(p.add(i), s.mul(s.load(p.add(i)), cv));
            } else {
                let v = s.load_partial(p.add(i), cnt, s.splat(0.0));
                s.store_partial(p.add(i), cnt, s.mul(v, cv));
            }
        }
        i += cnt;
    }
}
dispatch!(pub(crate) fn scale(x: &mut [f32], c: f32) => scale_kernel);

#[cfg(test)]
mod tests {
    use super::AdamScalars;

    /// Where the fold is allowed, the quotient is normal at both ends of the
    /// denominator's range, computed as the kernel does in `f32`; small and
    /// large steps, as many ε and `a` as matter.
    #[test]
    fn the_fold_is_allowed_only_where_the_quotient_is_normal() {
        let mut allowed = 0;
        for a in [1.0f32, 1.5, 31.6, 316.2, 1e4] {
            for eps in [f32::MIN_POSITIVE, 1e-38, 1e-20, 1e-10, 1e-8, 1e-3, 1.0, 1e10] {
                for e in -149..128 {
                    for frac in [1.0f32, 1.3, 1.999] {
                        let k = 2f32.powi(e) * frac;
                        if k == 0.0 || !k.is_finite() || !AdamScalars::quotient_is_normal(k, a, eps) {
                            continue;
                        }
                        allowed += 1;
                        let max = f32::MAX.sqrt().mul_add(a, eps);
                        for den in [eps, max, max * 0.5, eps * 2.0] {
                            let q = k / den;
                            assert!(q.is_normal(), "k {k:e} a {a} eps {eps:e}: k/{den:e} = {q:e}");
                        }
                    }
                }
            }
        }
        // The training steps fold: lr 1e-3 with ε 1e-8 (PyTorch) or 1e-7 (Keras).
        assert!(AdamScalars::quotient_is_normal(1e-3 / 0.1, 31.6, 1e-8));
        assert!(AdamScalars::quotient_is_normal(1e-3, 1.0, 1e-7));
        assert!(AdamScalars::quotient_is_normal(0.0, 1.0, 1e-7));
        assert!(!AdamScalars::quotient_is_normal(1e-25, 1.0, 1e-8));
        assert!(!AdamScalars::quotient_is_normal(1e-3, 1.0, 1e-40));
        assert!(allowed > 1000);
    }
}
