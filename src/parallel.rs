//! Splitting work over threads.
//!
//! Kernels split their work into a fixed number of tasks chosen from the
//! problem size and [`crate::num_threads`], so the split — and therefore every
//! result, bit for bit — depends only on the inputs and the thread count,
//! never on scheduling.
//!
//! The calling thread never waits for a helper that has not started: it
//! claims tasks from a shared counter itself, helpers on rayon's pool claim
//! from the same counter when (if) they get a core, and once every task is
//! claimed the caller only waits for tasks already running. On a machine
//! whose other cores are busy a split call therefore costs about what one
//! thread costs, instead of waiting for a core to free up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// What the caller shares with its helpers. `f` points at the caller's
/// closure; it is only called while `closed` is false, and the caller waits
/// for `active` to drop to zero after closing, so it never outlives the call.
struct Shared {
    next: AtomicUsize,
    tasks: usize,
    active: AtomicUsize,
    closed: AtomicBool,
    f: *const (dyn Fn(usize) + Sync),
}

// SAFETY: `f` is a `Sync` closure, and the protocol above keeps it alive
// whenever a helper thread can call it.
unsafe impl Send for Shared {}
// SAFETY: as above; everything else is atomic.
unsafe impl Sync for Shared {}

impl Shared {
    /// Claims and runs tasks until none are left.
    ///
    /// # Safety
    /// `self.f` must be alive (the caller's frame, or a helper registered
    /// in `active` before `closed` was set).
    unsafe fn drain(&self) {
        loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= self.tasks {
                return;
            }
            // SAFETY: the function's contract.
            unsafe { (*self.f)(t) };
        }
    }
}

/// Runs `f(0) .. f(tasks - 1)` on the calling thread and on up to
/// `tasks - 1` helpers from the pool, and returns when all are done.
pub(crate) fn run_tasks<F>(tasks: usize, f: F)
where
    F: Fn(usize) + Sync,
{
    match tasks {
        0 => {}
        1 => f(0),
        _ => {
            let f_dyn: &(dyn Fn(usize) + Sync) = &f;
            // SAFETY: erases the closure's lifetime; `Shared`'s protocol
            // guarantees no call after this function returns.
            let f_static: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f_dyn) };
            let shared = Arc::new(Shared {
                next: AtomicUsize::new(0),
                tasks,
                active: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                f: f_static,
            });
            for _ in 1..tasks {
                let s = Arc::clone(&shared);
                rayon::spawn(move || {
                    // Register before checking `closed`: the caller closes,
                    // then waits for `active` to be zero, so either it sees
                    // this helper or this helper sees `closed`.
                    s.active.fetch_add(1, Ordering::SeqCst);
                    if !s.closed.load(Ordering::SeqCst) {
                        // SAFETY: registered while open, so the caller is
                        // still waiting and `f` is alive.
                        unsafe { s.drain() };
                    }
                    s.active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            /// Closes the shared state and waits for running helpers, also
            /// when `f` panics on this thread, so no helper outlives `f`.
            struct Close<'a>(&'a Shared);
            impl Drop for Close<'_> {
                fn drop(&mut self) {
                    self.0.closed.store(true, Ordering::SeqCst);
                    // Helpers still running hold at most one task each.
                    let mut spins = 0u32;
                    while self.0.active.load(Ordering::SeqCst) != 0 {
                        spins += 1;
                        if spins < 4096 {
                            std::hint::spin_loop();
                        } else {
                            std::thread::yield_now();
                        }
                    }
                }
            }
            let _close = Close(&shared);
            // SAFETY: `f` lives in this frame.
            unsafe { shared.drain() };
        }
    }
}

/// How many tasks to split `work` units into so that each has at least
/// `min_per_task` units, bounded by the configured thread count.
#[allow(dead_code)] // for the elementwise kernels
pub(crate) fn task_count(work: usize, min_per_task: usize) -> usize {
    task_count_max(work, min_per_task, crate::num_threads())
}

/// As [`task_count`], bounded by `max_tasks` instead of the configured
/// thread count (for calls that take an explicit thread count).
pub(crate) fn task_count_max(work: usize, min_per_task: usize, max_tasks: usize) -> usize {
    let by_size = work / min_per_task.max(1);
    by_size.clamp(1, max_tasks.max(1))
}

/// The half-open range of `0..len` that task `t` of `tasks` owns, in whole
/// multiples of `align` (except the last range, which takes the remainder).
pub(crate) fn task_range(len: usize, tasks: usize, t: usize, align: usize) -> std::ops::Range<usize> {
    let align = align.max(1);
    let units = len.div_ceil(align);
    let per = units / tasks;
    let extra = units % tasks;
    let start_unit = t * per + t.min(extra);
    let end_unit = start_unit + per + usize::from(t < extra);
    (start_unit * align).min(len)..(end_unit * align).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ranges_tile_the_whole_length() {
        for len in [0, 1, 7, 16, 17, 1000] {
            for tasks in 1..5 {
                for align in [1, 4, 16] {
                    let mut next = 0;
                    for t in 0..tasks {
                        let r = task_range(len, tasks, t, align);
                        assert_eq!(r.start, next);
                        next = r.end;
                    }
                    assert_eq!(next, len);
                }
            }
        }
    }

    #[test]
    fn every_task_runs_once() {
        let hits = AtomicUsize::new(0);
        let mask = AtomicUsize::new(0);
        run_tasks(5, |t| {
            hits.fetch_add(1, Ordering::Relaxed);
            mask.fetch_or(1 << t, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 5);
        assert_eq!(mask.load(Ordering::Relaxed), 0b11111);
    }
}
