//! SIMD optimizer updates: Adam/AdamW and SGD-momentum in one pass over
//! parameters, gradients and moments; the sum of squares and the scaling of
//! global-norm clipping.
//!
//! Adam reads w, g, m, v and writes w, m, v (28 bytes per parameter); the
//! per-step scalars (bias corrections, where ε goes) are folded on the
//! calling thread into `w −= k·m / (√v·a + ε)`, which is both PyTorch's form
//! (`k = lr/(1−β₁ᵗ)`, `a = 1/√(1−β₂ᵗ)`) and Keras's (`k = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`,
//! `a = 1`). Large tensors are split over threads like the activations.

use crate::ops::activation::kernels::{for_ranges, SyncPtr, PAR_MIN_PER_TASK};
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
}

#[inline(always)]
fn adam_kernel<S: Simd>(s: S, c: AdamScalars, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let (wp, gp, mp, vp) = (w.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
    let l = S::LANES;
    let (b1, ob1, b2, ob2) = (
        s.splat(c.beta1),
        s.splat(c.one_minus_beta1),
        s.splat(c.beta2),
        s.splat(c.one_minus_beta2),
    );
    let (l2, dec, k, a, eps) = (
        s.splat(c.l2),
        s.splat(c.decoupled),
        s.splat(c.k),
        s.splat(c.a),
        s.splat(c.eps),
    );
    let z = s.splat(0.0);
    let mut i = 0;
    while i < n {
        let cnt = (n - i).min(l);
        // SAFETY: cnt elements remain in all four slices (distinct borrows, no overlap);
        // partial accesses touch only those.
        unsafe {
            let ld = |p: *const f32| {
                if cnt == l {
                    s.load(p.add(i))
                } else {
                    s.load_partial(p.add(i), cnt, z)
                }
            };
            let (wv, gv, mv, vv) = (ld(wp), ld(gp), ld(mp), ld(vp));
            // L2: g += wd·w; decoupled: w −= lr·wd·w. Only the one configured is computed, as the
            // reference does, so an infinite weight is not turned into NaN by a 0·∞.
            let (wv, gv) = if c.is_decoupled {
                (s.fnma(dec, wv, wv), gv)
            } else {
                (wv, s.fma(l2, wv, gv))
            };
            let mv = s.fma(b1, mv, s.mul(ob1, gv));
            // (1 − β₂)·g first: g² alone overflows for |g| > 1.8e19 where (1 − β₂)·g² may not.
            let vv = s.fma(b2, vv, s.mul(s.mul(ob2, gv), gv));
            let denom = s.fma(s.sqrt(vv), a, eps);
            let wv = s.fnma(k, s.div(mv, denom), wv);
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
dispatch!(fn adam_isa(c: AdamScalars, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) => adam_kernel);

/// One Adam step over equal-length slices, threaded when large.
pub(crate) fn adam(isa: Isa, c: AdamScalars, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
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
    });
}

#[inline(always)]
fn sgd_kernel<S: Simd>(s: S, lr: f32, momentum: f32, wd: f32, w: &mut [f32], g: &[f32], b: &mut [f32]) {
    let n = w.len().min(g.len()).min(b.len());
    let (wp, gp, bp) = (w.as_mut_ptr(), g.as_ptr(), b.as_mut_ptr());
    let l = S::LANES;
    let (lr, mu, wd, z) = (s.splat(lr), s.splat(momentum), s.splat(wd), s.splat(0.0));
    let mut i = 0;
    while i < n {
        let cnt = (n - i).min(l);
        // SAFETY: cnt elements remain in all three slices (distinct borrows); partial accesses
        // touch only those.
        unsafe {
            let ld = |p: *const f32| {
                if cnt == l {
                    s.load(p.add(i))
                } else {
                    s.load_partial(p.add(i), cnt, z)
                }
            };
            let (wv, gv, bv) = (ld(wp), ld(gp), ld(bp));
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
dispatch!(fn sgd_isa(lr: f32, momentum: f32, wd: f32, w: &mut [f32], g: &[f32], b: &mut [f32]) => sgd_kernel);

/// One SGD-momentum step over equal-length slices, threaded when large.
pub(crate) fn sgd(isa: Isa, lr: f32, momentum: f32, wd: f32, w: &mut [f32], g: &[f32], b: &mut [f32]) {
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
    });
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
