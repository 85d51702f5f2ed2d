//! SIMD activations, forward and backward, over [`Simd`].
//!
//! Element-wise streams: one vector per step, a masked (or buffered) tail,
//! no alignment assumed; in-place calls pass the same pointer as input and
//! output (each vector is loaded before it is stored). Tensors of at least
//! [`PAR_MIN_PER_TASK`] elements per task are split over threads in
//! 64-byte-aligned ranges.
//!
//! ReLU runs near the speed of a copy of the same bytes; sigmoid, tanh and
//! GELU are bound by arithmetic (see `simd::math`). Figures, with the machine
//! they were measured on: `docs/MEASUREMENTS.md` (`cargo bench --bench elementwise`).

use super::Activation;
use crate::parallel::{min_per_task, run_tasks, task_count_max, task_range};
use crate::simd::math;
use crate::simd::vector::{dispatch, Simd};
use crate::simd::Isa;
use std::ops::Range;

/// Elements per task below which a stream stays on one thread, outside a
/// parallel region: for now, every stream stays on one thread there.
///
/// The `threads` group of `benches/elementwise.rs` (with this constant
/// lowered) found no size at which two threads were reliably faster than one
/// on the 2-core development machines (`docs/DESIGN.md`, Element-wise
/// kernels), so under the rule that a second thread must never make a call
/// slower, none is used.
/// The splitting (`for_ranges`) stays, tested, for a machine where a quiet
/// measurement finds a threshold.
pub(crate) const PAR_MIN_PER_TASK: usize = usize::MAX;

/// Elements per task below which a stream stays on one thread inside a
/// [`parallel_region`](crate::parallel_region), where the workers are
/// already spinning: a task of 16 Ki elements is a few microseconds of
/// work, several times what handing it over costs.
pub(crate) const PAR_MIN_AWAKE: usize = 16 * 1024;

/// One activation as a type, so every loop is compiled once per activation
/// with the function inlined (no per-element branch).
pub(crate) trait Act {
    /// `f(x)`.
    fn forward<S: Simd>(s: S, x: S::V) -> S::V;
    /// `dy · f'(x)`.
    fn backward<S: Simd>(s: S, x: S::V, dy: S::V) -> S::V;
}

pub(crate) struct Identity;
pub(crate) struct Relu;
pub(crate) struct Sigmoid;
pub(crate) struct Tanh;
pub(crate) struct GeluTanh;
pub(crate) struct GeluErf;

impl Act for Identity {
    #[inline(always)]
    fn forward<S: Simd>(_: S, x: S::V) -> S::V {
        x
    }
    #[inline(always)]
    fn backward<S: Simd>(_: S, _: S::V, dy: S::V) -> S::V {
        dy
    }
}
impl Act for Relu {
    #[inline(always)]
    fn forward<S: Simd>(s: S, x: S::V) -> S::V {
        // `x <= 0` is false for NaN, which passes; −0 becomes +0, as the reference.
        let zero = s.splat(0.0);
        s.select(s.le(x, zero), zero, x)
    }
    #[inline(always)]
    fn backward<S: Simd>(s: S, x: S::V, dy: S::V) -> S::V {
        // A select, not a product: dy where x > 0, 0 where x <= 0, NaN where x is NaN.
        let zero = s.splat(0.0);
        s.select(s.le(x, zero), zero, s.select(s.gt(x, zero), dy, x))
    }
}
impl Act for Sigmoid {
    #[inline(always)]
    fn forward<S: Simd>(s: S, x: S::V) -> S::V {
        math::sigmoid(s, x)
    }
    #[inline(always)]
    fn backward<S: Simd>(s: S, x: S::V, dy: S::V) -> S::V {
        s.mul(dy, math::sigmoid_derivative(s, x))
    }
}
impl Act for Tanh {
    #[inline(always)]
    fn forward<S: Simd>(s: S, x: S::V) -> S::V {
        math::tanh(s, x)
    }
    #[inline(always)]
    fn backward<S: Simd>(s: S, x: S::V, dy: S::V) -> S::V {
        s.mul(dy, math::tanh_derivative(s, x))
    }
}
impl Act for GeluTanh {
    #[inline(always)]
    fn forward<S: Simd>(s: S, x: S::V) -> S::V {
        math::gelu_tanh(s, x)
    }
    #[inline(always)]
    fn backward<S: Simd>(s: S, x: S::V, dy: S::V) -> S::V {
        s.mul(dy, math::gelu_tanh_derivative(s, x))
    }
}
impl Act for GeluErf {
    #[inline(always)]
    fn forward<S: Simd>(s: S, x: S::V) -> S::V {
        math::gelu_erf(s, x)
    }
    #[inline(always)]
    fn backward<S: Simd>(s: S, x: S::V, dy: S::V) -> S::V {
        s.mul(dy, math::gelu_erf_derivative(s, x))
    }
}

/// Expands `$body` once per activation with `$A` naming its [`Act`] type.
macro_rules! with_act {
    ($act:expr, $A:ident => $body:expr) => {
        match $act {
            $crate::ops::activation::Activation::Identity => {
                type $A = $crate::ops::activation::kernels::Identity;
                $body
            }
            $crate::ops::activation::Activation::Relu => {
                type $A = $crate::ops::activation::kernels::Relu;
                $body
            }
            $crate::ops::activation::Activation::Sigmoid => {
                type $A = $crate::ops::activation::kernels::Sigmoid;
                $body
            }
            $crate::ops::activation::Activation::Tanh => {
                type $A = $crate::ops::activation::kernels::Tanh;
                $body
            }
            $crate::ops::activation::Activation::GeluTanh => {
                type $A = $crate::ops::activation::kernels::GeluTanh;
                $body
            }
            $crate::ops::activation::Activation::GeluErf => {
                type $A = $crate::ops::activation::kernels::GeluErf;
                $body
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use with_act;

/// Elements before `p` reaches a multiple of the vector size (64 bytes for
/// AVX-512): processing them first as a partial vector makes every following
/// store aligned, which matters for `zmm` stores (an unaligned one splits a
/// cache line every time, which slowed L2-resident ReLU measurably).
#[inline(always)]
pub(crate) fn align_head<S: Simd>(p: *const f32, n: usize) -> usize {
    let bytes = S::LANES * 4;
    let off = (p as usize) % bytes;
    if off == 0 || !off.is_multiple_of(4) {
        0
    } else {
        ((bytes - off) / 4).min(n)
    }
}

/// `y[i] = f(x[i])` for `i < n`.
///
/// # Safety
/// `x .. x + n` readable, `y .. y + n` writable; `y` is either `x` or does not overlap it.
#[inline(always)]
pub(crate) unsafe fn forward_ptr<S: Simd, A: Act>(s: S, x: *const f32, y: *mut f32, n: usize) {
    let l = S::LANES;
    let mut i = align_head::<S>(y, n);
    if i > 0 {
        // SAFETY: i <= n elements; partial accesses touch only those.
        unsafe {
            let v = s.load_partial(x, i, s.splat(0.0));
            s.store_partial(y, i, A::forward(s, v));
        }
    }
    while i + 2 * l <= n {
        // SAFETY: i + 2·LANES <= n, inside both ranges.
        unsafe {
            let a = s.load(x.add(i));
            let b = s.load(x.add(i + l));
            s.store(y.add(i), A::forward(s, a));
            s.store(y.add(i + l), A::forward(s, b));
        }
        i += 2 * l;
    }
    while i < n {
        let m = (n - i).min(l);
        // SAFETY: m elements remain in both ranges; a partial access touches only those.
        unsafe {
            if m == l {
                s.store(y.add(i), A::forward(s, s.load(x.add(i))));
            } else {
                let v = s.load_partial(x.add(i), m, s.splat(0.0));
                s.store_partial(y.add(i), m, A::forward(s, v));
            }
        }
        i += m;
    }
}

/// `dx[i] = dy[i] · f'(x[i])` for `i < n`.
///
/// # Safety
/// `x`, `dy` readable and `dx` writable for `n` elements; `dx` is either `dy` or does not
/// overlap `x` or `dy`.
#[inline(always)]
pub(crate) unsafe fn backward_ptr<S: Simd, A: Act>(s: S, x: *const f32, dy: *const f32, dx: *mut f32, n: usize) {
    let l = S::LANES;
    let mut i = align_head::<S>(dx, n);
    if i > 0 {
        // SAFETY: i <= n elements in all three ranges; partial accesses touch only those.
        unsafe {
            let z = s.splat(0.0);
            let v = A::backward(s, s.load_partial(x, i, z), s.load_partial(dy, i, z));
            s.store_partial(dx, i, v);
        }
    }
    while i + 2 * l <= n {
        // SAFETY: i + 2·LANES <= n, inside all three ranges.
        unsafe {
            let (xa, xb) = (s.load(x.add(i)), s.load(x.add(i + l)));
            let (da, db) = (s.load(dy.add(i)), s.load(dy.add(i + l)));
            s.store(dx.add(i), A::backward(s, xa, da));
            s.store(dx.add(i + l), A::backward(s, xb, db));
        }
        i += 2 * l;
    }
    while i < n {
        let m = (n - i).min(l);
        // SAFETY: m elements remain in all three ranges; a partial access touches only those.
        unsafe {
            if m == l {
                s.store(dx.add(i), A::backward(s, s.load(x.add(i)), s.load(dy.add(i))));
            } else {
                let xv = s.load_partial(x.add(i), m, s.splat(0.0));
                let dv = s.load_partial(dy.add(i), m, s.splat(0.0));
                s.store_partial(dx.add(i), m, A::backward(s, xv, dv));
            }
        }
        i += m;
    }
}

/// A pointer that may cross to the worker threads; each task touches a
/// disjoint range of it.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
// SAFETY: used only to hand disjoint ranges of one buffer to tasks that all end before the
// owning borrow does (run_tasks returns after every task).
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer (a method, so closures capture the whole wrapper, not its field).
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Runs `f(range)` over `0..n`, split over threads when each task gets at
/// least `min` elements (outside a parallel region; [`PAR_MIN_AWAKE`] inside
/// one, or the test hook's lowered threshold); ranges are multiples of 16
/// elements (64 bytes). Errors only when a task panicked.
pub(crate) fn for_ranges(n: usize, min: usize, f: impl Fn(Range<usize>) + Sync) -> crate::Result<()> {
    let threads = crate::num_threads();
    let tasks = task_count_max(n, min_per_task(min, PAR_MIN_AWAKE.min(min)), threads);
    if tasks <= 1 {
        f(0..n);
        Ok(())
    } else {
        run_tasks(tasks, threads, |t| f(task_range(n, tasks, t, 16)))
    }
}

#[inline(always)]
fn forward_kernel<S: Simd>(s: S, act: Activation, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    // SAFETY: both slices hold n elements and a `&mut` cannot overlap a `&`.
    with_act!(act, A => unsafe { forward_ptr::<S, A>(s, x.as_ptr(), y.as_mut_ptr(), n) })
}
dispatch!(fn forward_isa(act: Activation, x: &[f32], y: &mut [f32]) => forward_kernel);

#[inline(always)]
fn forward_inplace_kernel<S: Simd>(s: S, act: Activation, x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    // SAFETY: the slice holds n elements; input and output are the same pointer.
    with_act!(act, A => unsafe { forward_ptr::<S, A>(s, p, p, n) })
}
dispatch!(fn forward_inplace_isa(act: Activation, x: &mut [f32]) => forward_inplace_kernel);

#[inline(always)]
fn backward_kernel<S: Simd>(s: S, act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = x.len().min(dy.len()).min(dx.len());
    // SAFETY: all three hold n elements; `dx` is a `&mut` so it overlaps neither input.
    with_act!(act, A => unsafe { backward_ptr::<S, A>(s, x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), n) })
}
dispatch!(fn backward_isa(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) => backward_kernel);

#[inline(always)]
fn backward_inplace_kernel<S: Simd>(s: S, act: Activation, x: &[f32], grad: &mut [f32]) {
    let n = x.len().min(grad.len());
    let g = grad.as_mut_ptr();
    // SAFETY: both hold n elements; `grad` is both dy and dx, and does not overlap `x`.
    with_act!(act, A => unsafe { backward_ptr::<S, A>(s, x.as_ptr(), g, g, n) })
}
dispatch!(fn backward_inplace_isa(act: Activation, x: &[f32], grad: &mut [f32]) => backward_inplace_kernel);

/// `y = f(x)`, lengths already checked equal.
pub(crate) fn forward(isa: Isa, act: Activation, x: &[f32], y: &mut [f32]) -> crate::Result<()> {
    let yp = SyncPtr(y.as_mut_ptr());
    for_ranges(x.len(), PAR_MIN_PER_TASK, |r| {
        // SAFETY: ranges of distinct tasks are disjoint and inside `y`, which outlives the tasks.
        let y = unsafe { std::slice::from_raw_parts_mut(yp.get().add(r.start), r.len()) };
        forward_isa(isa, act, &x[r], y);
    })
}

/// `x = f(x)`.
pub(crate) fn forward_inplace(isa: Isa, act: Activation, x: &mut [f32]) -> crate::Result<()> {
    let xp = SyncPtr(x.as_mut_ptr());
    for_ranges(x.len(), PAR_MIN_PER_TASK, |r| {
        // SAFETY: ranges of distinct tasks are disjoint and inside `x`, which outlives the tasks.
        let x = unsafe { std::slice::from_raw_parts_mut(xp.get().add(r.start), r.len()) };
        forward_inplace_isa(isa, act, x);
    })
}

/// `dx = dy · f'(x)`, lengths already checked equal.
pub(crate) fn backward(isa: Isa, act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) -> crate::Result<()> {
    let dp = SyncPtr(dx.as_mut_ptr());
    for_ranges(x.len(), PAR_MIN_PER_TASK, |r| {
        // SAFETY: ranges of distinct tasks are disjoint and inside `dx`, which outlives the tasks.
        let dx = unsafe { std::slice::from_raw_parts_mut(dp.get().add(r.start), r.len()) };
        backward_isa(isa, act, &x[r.clone()], &dy[r], dx);
    })
}

/// `grad = grad · f'(x)`, lengths already checked equal.
pub(crate) fn backward_inplace(isa: Isa, act: Activation, x: &[f32], grad: &mut [f32]) -> crate::Result<()> {
    let gp = SyncPtr(grad.as_mut_ptr());
    for_ranges(x.len(), PAR_MIN_PER_TASK, |r| {
        // SAFETY: ranges of distinct tasks are disjoint and inside `grad`, which outlives the tasks.
        let g = unsafe { std::slice::from_raw_parts_mut(gp.get().add(r.start), r.len()) };
        backward_inplace_isa(isa, act, &x[r], g);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split over threads (off by default, see `PAR_MIN_PER_TASK`) gives
    /// the same bits as one thread: element-wise work does not depend on the split.
    #[test]
    fn split_over_tasks_matches_one_task() {
        let n = 100_003;
        let x: Vec<f32> = (0..n).map(|i| (i % 997) as f32 / 50.0 - 10.0).collect();
        for isa in crate::testing::test_isas() {
            for act in Activation::ALL {
                let mut one = vec![f32::NAN; n];
                forward_isa(isa, act, &x, &mut one);
                let mut split = vec![f32::NAN; n];
                let yp = SyncPtr(split.as_mut_ptr());
                for_ranges(n, 1000, |r| {
                    // SAFETY: disjoint ranges inside `split`, which outlives the tasks.
                    let y = unsafe { std::slice::from_raw_parts_mut(yp.get().add(r.start), r.len()) };
                    forward_isa(isa, act, &x[r], y);
                })
                .unwrap();
                assert!(
                    one.iter().zip(&split).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa} {act}"
                );
            }
        }
    }
}
