//! Splitting work over threads.
//!
//! Kernels split their work into a fixed number of tasks chosen from the
//! problem size and [`crate::num_threads`], so the split — and therefore every
//! result, bit for bit — depends only on the inputs and the thread count,
//! never on scheduling. Tasks run on rayon's pool; one task runs inline on the
//! calling thread, so a single-task call costs nothing extra.

/// Runs `f(0) .. f(tasks - 1)`, the first on the calling thread and the rest
/// on the pool, and returns when all are done.
pub(crate) fn run_tasks<F>(tasks: usize, f: F)
where
    F: Fn(usize) + Sync,
{
    match tasks {
        0 => {}
        1 => f(0),
        _ => rayon::scope(|s| {
            let f = &f;
            for t in 1..tasks {
                s.spawn(move |_| f(t));
            }
            f(0);
        }),
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
