//! SIMD softmax, log-softmax and the fused softmax + cross-entropy, row by
//! row over rows with unit column stride (other layouts use the reference).
//!
//! Per row: one pass for the maximum, one pass for `e = exp(x − max)`
//! (stored into the output, summed, and for soft targets `Σ t·(max − x)` and
//! `Σ t` accumulated), one pass to scale. A row of the trainer's logits (10
//! classes) or of a 500-wide layer stays in L1 between passes, so the logits
//! are read from memory once. The loss of a row is
//! `ln Σe + (max − x_label)` (or `Σt·(max − x) + Σt·ln Σe`): no term
//! cancels, so logits of ±1e4 lose nothing. Rows are summed in `f64`.
//!
//! Bound by the exponentials; at 10 classes by the per-row `ln` and the fixed
//! costs of a call. Figures: `docs/MEASUREMENTS.md`.

use crate::ops::bias::kernels::Rows;
use crate::simd::math;
use crate::simd::vector::{dispatch, Simd};

/// Targets as the kernels see them.
#[derive(Clone, Copy)]
pub(crate) enum Tgt<'a> {
    Labels(&'a [u32]),
    Soft(Rows<&'a [f32]>),
}

/// Largest element of `x[0..n]` (`n ≥ 1`); a NaN in the row may or may not
/// win, which is harmless: the NaN poisons the sum of exponentials anyway.
///
/// # Safety
/// `x .. x + n` readable.
#[inline(always)]
unsafe fn row_max<S: Simd>(s: S, x: *const f32, n: usize) -> f32 {
    let l = S::LANES;
    let ninf = s.splat(f32::NEG_INFINITY);
    let (mut m0, mut m1) = (ninf, ninf);
    let mut j = 0;
    // SAFETY: every access below stays inside x .. x + n.
    unsafe {
        while j + 2 * l <= n {
            m0 = s.max(m0, s.load(x.add(j)));
            m1 = s.max(m1, s.load(x.add(j + l)));
            j += 2 * l;
        }
        if j + l <= n {
            m0 = s.max(m0, s.load(x.add(j)));
            j += l;
        }
        if j < n {
            m1 = s.max(m1, s.load_partial(x.add(j), n - j, ninf));
        }
    }
    s.reduce_max(s.max(m0, m1))
}

/// The second pass over one row: `e_j = exp(x_j − max)`, stored to `out`
/// when given; returns `(Σ e, Σ t·(max − x), Σ t)` (the last two zero without `t`).
///
/// # Safety
/// `x`, `t` (when given) readable and `out` (when given) writable for `n` elements;
/// `out` overlaps neither input.
#[inline(always)]
unsafe fn row_exp_sum<S: Simd>(
    s: S,
    x: *const f32,
    max: f32,
    out: Option<*mut f32>,
    t: Option<*const f32>,
    n: usize,
) -> (f32, f32, f32) {
    let l = S::LANES;
    let z = s.splat(0.0);
    let mv = s.splat(max);
    let (mut se, mut stx, mut st) = (z, z, z);
    let mut j = 0;
    while j < n {
        let m = (n - j).min(l);
        // SAFETY: m elements remain in every range; partial accesses touch only those.
        unsafe {
            // Padding lanes: x = −∞ gives e = 0; for Σ t·(max − x) they use x = max and t = 0.
            let (xv, xd, tv) = if m == l {
                let xv = s.load(x.add(j));
                (xv, xv, t.map(|t| s.load(t.add(j))))
            } else {
                let xv = s.load_partial(x.add(j), m, s.splat(f32::NEG_INFINITY));
                let xd = s.load_partial(x.add(j), m, mv);
                (xv, xd, t.map(|t| s.load_partial(t.add(j), m, z)))
            };
            let e = math::exp_nonpositive(s, s.sub(xv, mv));
            se = s.add(se, e);
            if let Some(o) = out {
                if m == l {
                    s.store(o.add(j), e);
                } else {
                    s.store_partial(o.add(j), m, e);
                }
            }
            if let Some(tv) = tv {
                stx = s.fma(tv, s.sub(mv, xd), stx);
                st = s.add(st, tv);
            }
        }
        j += m;
    }
    (s.reduce_sum(se), s.reduce_sum(stx), s.reduce_sum(st))
}

/// `y_j = y_j·a − t_j·b` (or `y_j·a` without `t`), in place.
///
/// # Safety
/// `y` readable and writable, `t` (when given) readable, for `n` elements.
#[inline(always)]
unsafe fn row_scale<S: Simd>(s: S, y: *mut f32, a: f32, t: Option<(*const f32, f32)>, n: usize) {
    let l = S::LANES;
    let av = s.splat(a);
    let z = s.splat(0.0);
    let mut j = 0;
    while j < n {
        let m = (n - j).min(l);
        // SAFETY: m elements remain in both ranges; partial accesses touch only those.
        unsafe {
            let yv = if m == l {
                s.load(y.add(j))
            } else {
                s.load_partial(y.add(j), m, z)
            };
            let mut r = s.mul(yv, av);
            if let Some((tp, b)) = t {
                let tv = if m == l {
                    s.load(tp.add(j))
                } else {
                    s.load_partial(tp.add(j), m, z)
                };
                r = s.fnma(tv, s.splat(b), r);
            }
            if m == l {
                s.store(y.add(j), r);
            } else {
                s.store_partial(y.add(j), m, r);
            }
        }
        j += m;
    }
}

/// `y_j = (x_j − max) − c`.
///
/// # Safety
/// `x` readable and `y` writable for `n` elements, not overlapping.
#[inline(always)]
unsafe fn row_shift<S: Simd>(s: S, x: *const f32, y: *mut f32, max: f32, c: f32, n: usize) {
    let l = S::LANES;
    let (mv, cv, z) = (s.splat(max), s.splat(c), s.splat(0.0));
    let mut j = 0;
    while j < n {
        let m = (n - j).min(l);
        // SAFETY: m elements remain in both ranges; partial accesses touch only those.
        unsafe {
            if m == l {
                s.store(y.add(j), s.sub(s.sub(s.load(x.add(j)), mv), cv));
            } else {
                let v = s.sub(s.sub(s.load_partial(x.add(j), m, z), mv), cv);
                s.store_partial(y.add(j), m, v);
            }
        }
        j += m;
    }
}

#[inline(always)]
fn softmax_kernel<S: Simd>(s: S, x: Rows<&[f32]>, y: Rows<&mut [f32]>, cols: usize) {
    let (xp, yp) = (x.ptr.as_ptr(), y.ptr.as_mut_ptr());
    for i in 0..x.rows {
        // SAFETY: the caller checked rows i of x and y (cols elements each) lie inside their
        // slices; y is a distinct `&mut`, so it does not overlap x.
        unsafe {
            let (xr, yr) = (xp.add(i * x.stride), yp.add(i * y.stride));
            let max = row_max(s, xr, cols);
            let (sum, _, _) = row_exp_sum(s, xr, max, Some(yr), None, cols);
            row_scale(s, yr, 1.0 / sum, None, cols);
        }
    }
}
dispatch!(pub(crate) fn softmax(x: Rows<&[f32]>, y: Rows<&mut [f32]>, cols: usize) => softmax_kernel);

#[inline(always)]
fn log_softmax_kernel<S: Simd>(s: S, x: Rows<&[f32]>, y: Rows<&mut [f32]>, cols: usize) {
    let (xp, yp) = (x.ptr.as_ptr(), y.ptr.as_mut_ptr());
    for i in 0..x.rows {
        // SAFETY: as in `softmax_kernel`.
        unsafe {
            let (xr, yr) = (xp.add(i * x.stride), yp.add(i * y.stride));
            let max = row_max(s, xr, cols);
            let (sum, _, _) = row_exp_sum(s, xr, max, None, None, cols);
            row_shift(s, xr, yr, max, sum.ln(), cols);
        }
    }
}
dispatch!(pub(crate) fn log_softmax(x: Rows<&[f32]>, y: Rows<&mut [f32]>, cols: usize) => log_softmax_kernel);

/// Sum over rows of the cross-entropy; with `d`, also writes
/// `d = (softmax − target)·inv_batch`.
#[inline(always)]
fn xent_kernel<S: Simd>(s: S, x: Rows<&[f32]>, t: Tgt<'_>, d: Option<Rows<&mut [f32]>>, cols: usize) -> f64 {
    let inv_batch = 1.0 / x.rows as f32;
    let xp = x.ptr.as_ptr();
    let dp = d.map(|d| (d.ptr.as_mut_ptr(), d.stride));
    let mut total = 0.0f64;
    for i in 0..x.rows {
        // SAFETY: the caller checked rows i of x, the soft targets and d (cols elements each)
        // lie inside their slices, and every label is < cols; d is a distinct `&mut`.
        unsafe {
            let xr = xp.add(i * x.stride);
            let dr = dp.map(|(p, st)| p.add(i * st));
            let tr = match t {
                Tgt::Soft(r) => Some(r.ptr.as_ptr().add(i * r.stride)),
                Tgt::Labels(_) => None,
            };
            let max = row_max(s, xr, cols);
            let (sum, stx, st) = row_exp_sum(s, xr, max, dr, tr, cols);
            let ln_sum = sum.ln();
            let row_loss = match t {
                Tgt::Labels(l) => {
                    let label = *l.get_unchecked(i) as usize;
                    ln_sum as f64 + (max as f64 - *xr.add(label) as f64)
                }
                Tgt::Soft(_) => stx as f64 + st as f64 * ln_sum as f64,
            };
            total += row_loss;
            if let Some(dr) = dr {
                let a = inv_batch / sum;
                match t {
                    Tgt::Labels(l) => {
                        row_scale(s, dr, a, None, cols);
                        let label = *l.get_unchecked(i) as usize;
                        *dr.add(label) -= inv_batch;
                    }
                    Tgt::Soft(_) => row_scale(s, dr, a, tr.map(|p| (p, inv_batch)), cols),
                }
            }
        }
    }
    total
}
dispatch!(pub(crate) fn xent(x: Rows<&[f32]>, t: Tgt<'_>, d: Option<Rows<&mut [f32]>>, cols: usize) -> f64 => xent_kernel);
