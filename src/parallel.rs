//! The thread team: splitting one call's work over threads.
//!
//! Kernels split their work into a fixed number of tasks chosen from the
//! problem size and the thread bound, so the split — and therefore every
//! result, bit for bit — depends only on the inputs and the thread count,
//! never on scheduling.
//!
//! The team is a set of worker threads owned by the library (never a pool
//! shared with the application), started the first time a call wants them
//! and kept for the life of the process. A call deals its tasks out in
//! consecutive ranges, one per thread taking part (the caller's first), each
//! range in one atomic word (next unclaimed task, end); a thread claims from
//! its own range first and then from the others', so:
//!
//! - **a thread gets the same tasks call after call** while every thread
//!   keeps up: calls that split the same data the same way (a layer's
//!   products in successive training steps, say) find each thread's share
//!   in the cache of the core that last wrote it, not in the other's;
//! - **the caller never waits for a thread that has not started**: it claims
//!   every task nobody else has claimed, and then waits only for tasks that
//!   are running on another thread;
//! - **nothing is allocated per call**: the job lives in the team's static
//!   state; only starting a worker allocates (its stack), once;
//! - **a panic in a task becomes an error** ([`Error::Internal`]) returned by
//!   the call that ran it, whichever thread the task ran on — never an abort,
//!   never a hang, never a helper left running with the caller's borrows;
//! - workers that find no work spin for a short while (a call that follows
//!   another finds them awake) and then sleep on a condition variable.
//!
//! One call owns the team at a time. A call made while another owns it
//! (another application thread, or a task calling a kernel) runs its tasks
//! on its own thread: same split, same result, no deadlock.

use crate::error::{Error, Result};
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most tasks one call may make (below 2³², so a range's `next` and `end`
/// share one 64-bit word).
pub(crate) const MAX_TASKS: usize = (1 << 24) - 1;
/// Most worker threads the team starts (beyond this, calls use fewer threads
/// than asked for; the split, and so the result, does not change).
const MAX_WORKERS: usize = 255;
/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// The calling function of one job, with its borrows erased.
type TaskFn = *const (dyn Fn(usize) + Sync);

/// One thread's range of the current job's tasks: `end << 32 | next`. Every
/// range a call deals out is exhausted (`next == end`) before the call
/// returns, so a range with a task left always belongs to the job whose
/// owner is still waiting, set up (`f`, `done`) before the range was stored.
#[repr(align(128))]
struct Home(AtomicU64);

impl Home {
    /// Claims the next task of this range, or `None` when none is left.
    fn claim(&self) -> Option<usize> {
        let mut w = self.0.load(Ordering::Acquire);
        loop {
            let (next, end) = (w & u64::from(u32::MAX), w >> 32);
            if next >= end {
                return None;
            }
            match self
                .0
                .compare_exchange_weak(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(next as usize),
                Err(now) => w = now,
            }
        }
    }
}

struct Team {
    /// The generation: a new value announces a new job.
    generation: AtomicU64,
    /// The task ranges of the current job: the caller's, then worker `i`'s
    /// at `i + 1`.
    homes: [Home; MAX_WORKERS + 1],
    /// Workers `0..helpers` may claim tasks of the current generation.
    helpers: AtomicUsize,
    /// Tasks of the current generation that have finished (or panicked).
    done: AtomicUsize,
    /// The current job's function. Written only by the call that owns the
    /// team (`busy`), before it publishes a new generation; read only by a
    /// thread that has claimed a task of that generation.
    f: UnsafeCell<Option<TaskFn>>,
    /// The first panic message of the current job.
    panic: Mutex<Option<String>>,
    /// Held by the call that owns the team.
    busy: AtomicBool,
    /// Workers started so far.
    workers: Mutex<usize>,
    /// Workers that have finished starting (their own allocations done).
    ready: AtomicUsize,
    /// Workers asleep on `wake` (under `sleep`).
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Parallel regions open now (on any thread).
    regions: AtomicUsize,
    /// When calls run on their caller alone.
    backoff: Backoff,
}

/// The team's response to a worker found not running when its task was due.
struct Backoff {
    /// Until when (in [`now_ns`]) calls run on their caller alone; 0: never.
    until: AtomicU64,
    /// The current back-off period in nanoseconds (0: none).
    period: AtomicU64,
    /// Good waits since the last bad one.
    good: AtomicU32,
}

impl Backoff {
    const fn new() -> Backoff {
        Backoff {
            until: AtomicU64::new(0),
            period: AtomicU64::new(0),
            good: AtomicU32::new(0),
        }
    }

    /// Whether calls run on the caller alone for now.
    fn solo(&self) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        until != 0 && now_ns() < until
    }

    /// Called by a call's owner that waited `waited` for tasks running on
    /// workers after spending `own` on its own share. A wait much longer than
    /// the caller's own share means a worker was not running (another program
    /// has its core): the next calls then run on the caller alone for a while
    /// (same split, same results), the workers sleep instead of spinning, and
    /// the period doubles each time it happens again (up to a second), so a
    /// busy core never makes a run slower than one thread for long. The
    /// back-off ends after [`Backoff::GOOD_CALLS`] good waits in a row.
    fn judge_wait(&self, own: Duration, waited: Duration) {
        const BASE: u64 = 20_000_000; // 20 ms
        const MOST: u64 = 1_000_000_000;
        if waited > own * 2 + Duration::from_micros(50) {
            self.good.store(0, Ordering::Relaxed);
            let period = (self.period.load(Ordering::Relaxed) * 2).clamp(BASE, MOST);
            self.period.store(period, Ordering::Relaxed);
            self.until.store(now_ns() + period, Ordering::Relaxed);
        } else if self.period.load(Ordering::Relaxed) != 0
            && self.good.fetch_add(1, Ordering::Relaxed) + 1 >= Self::GOOD_CALLS
        {
            self.period.store(0, Ordering::Relaxed);
            self.good.store(0, Ordering::Relaxed);
        }
    }

    /// Good waits in a row that end a back-off.
    const GOOD_CALLS: u32 = 256;
}

/// Nanoseconds since the first call (a monotonic clock; never 0 after it).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = *EPOCH.get_or_init(Instant::now);
    e.elapsed().as_nanos().min(u64::MAX as u128) as u64 + 1
}

// SAFETY: `f` is the only non-Sync field; the protocol on it (written by the
// owner of `busy` before a Release publication of a new generation, read by a
// thread only after an Acquire claim of a task of that generation, and the
// owner waits until every claimed task is done before writing it again or
// letting the closure die) makes every access race-free.
unsafe impl Sync for Team {}
// SAFETY: the team is only ever reached through a `&'static`; `f` is a
// plain address whose use the protocol above governs on every thread.
unsafe impl Send for Team {}

fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| Team {
        generation: AtomicU64::new(0),
        homes: std::array::from_fn(|_| Home(AtomicU64::new(0))),
        helpers: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        f: UnsafeCell::new(None),
        panic: Mutex::new(None),
        busy: AtomicBool::new(false),
        workers: Mutex::new(0),
        ready: AtomicUsize::new(0),
        sleepers: AtomicUsize::new(0),
        sleep: Mutex::new(()),
        wake: Condvar::new(),
        regions: AtomicUsize::new(0),
        backoff: Backoff::new(),
    })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Claims a task for the thread at `me` of the first `parts` ranges of
/// `homes`: from its own range first, then from the ranges after it, in
/// turn. `None` when every one is exhausted.
fn claim_from(homes: &[Home], me: usize, parts: usize) -> Option<usize> {
    let parts = parts.clamp(1, homes.len());
    (0..parts).find_map(|i| homes[(me + i) % parts].claim())
}

/// Deals `tasks` out to the first `parts` ranges of `homes`, in consecutive
/// ranges (`task_range`), each stored with Release so that whatever was
/// written before (the job) is seen by the thread that claims from it.
fn deal(homes: &[Home], tasks: usize, parts: usize) {
    debug_assert!(tasks <= MAX_TASKS && parts <= homes.len());
    for (p, home) in homes[..parts].iter().enumerate() {
        let r = task_range(tasks, parts, p, 1);
        // `tasks` ≤ MAX_TASKS < 2³²: both halves fit.
        home.0.store((r.end as u64) << 32 | r.start as u64, Ordering::Release);
    }
}

impl Team {
    /// Claims a task of the current job for the thread at `me` of the
    /// `parts` taking part (see [`claim_from`]).
    fn claim(&self, me: usize, parts: usize) -> Option<usize> {
        claim_from(&self.homes, me, parts)
    }

    /// Runs task `t` of the current job, recording a panic instead of
    /// unwinding, then counts it done.
    ///
    /// # Safety
    /// `t` must have been claimed (by [`Team::claim`]) by this thread, so the
    /// owner of its job is still waiting and `f` alive.
    unsafe fn run(&self, t: usize) {
        // SAFETY: the claim orders this read after the owner's write of `f`
        // (Release publication, Acquire claim), and the owner does not
        // rewrite it before this task is counted done.
        let f = unsafe { *self.f.get() };
        // SAFETY: the owner's closure is alive until every claimed task is
        // counted done (it waits for `done == tasks`).
        let r = catch_unwind(AssertUnwindSafe(|| {
            if let Some(f) = f {
                unsafe { (*f)(t) }
            }
        }));
        if let Err(p) = r {
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(panic_text(&*p));
            }
        }
        self.done.fetch_add(1, Ordering::Release);
    }

    /// Starts workers until there are `want` (at most [`MAX_WORKERS`]).
    fn ensure_workers(&'static self, want: usize) -> usize {
        let mut n = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        while *n < want.min(MAX_WORKERS) {
            let index = *n;
            let started = std::thread::Builder::new()
                .name(format!("nnkern-worker-{index}"))
                .spawn(move || self.worker(index));
            if started.is_err() {
                break; // run with the workers there are
            }
            *n += 1;
        }
        // Wait until every started worker has made its own allocations
        // (thread bookkeeping, scratch), so that they belong to the call that
        // started it and no later call sees a worker still starting up.
        while self.ready.load(Ordering::Acquire) < *n {
            std::thread::yield_now();
        }
        *n
    }

    fn worker(&'static self, index: usize) {
        // Size this thread's kernel scratch now, so no task allocates later.
        crate::ops::gemm::prepare_thread_scratch();
        crate::ops::optim::prepare_thread_strip();
        let _ = std::thread::current().name();
        self.ready.fetch_add(1, Ordering::Release);
        let mut seen = self.generation.load(Ordering::Acquire);
        loop {
            let gen = self.wait_for_new_generation(seen);
            seen = gen;
            let helpers = self.helpers.load(Ordering::Acquire);
            if index >= helpers {
                continue;
            }
            // (A `helpers` of a later job only changes which ranges this
            // thread looks at: any task it claims is a task of the job
            // running now.)
            while let Some(t) = self.claim(index + 1, helpers + 1) {
                // SAFETY: claimed by this thread just now.
                unsafe { self.run(t) };
            }
        }
    }

    /// Spins, then sleeps, until the generation differs from `seen`. While a
    /// parallel region is open anywhere ([`parallel_region`]) it keeps
    /// spinning (yielding the core every few spins, so a spinning worker
    /// costs little on a core another program wants), and a sleeping worker
    /// is woken when a region opens.
    fn wait_for_new_generation(&self, seen: u64) -> u64 {
        let gen_now = || self.generation.load(Ordering::Acquire);
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                let g = gen_now();
                if g != seen {
                    return g;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    let spin_on = self.regions.load(Ordering::Relaxed) > 0 && !self.solo();
                    if !spin_on && start.elapsed() > SPIN {
                        break;
                    }
                    // Let another runnable thread have this core.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            let mut guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            loop {
                let g = self.generation.load(Ordering::SeqCst);
                if g != seen {
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    return g;
                }
                if self.regions.load(Ordering::SeqCst) > 0 && !self.solo() {
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Whether calls run on the caller alone for now, because a worker was
    /// recently found not running when its task was due (see [`Backoff`]).
    fn solo(&self) -> bool {
        self.backoff.solo()
    }

    /// Wakes every sleeping worker (after a new generation or region was published).
    fn wake_sleepers(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
    }
}

thread_local! {
    /// Test hook: a lowered split threshold for calls from this thread.
    static FORCED_MIN_PER_TASK: Cell<Option<usize>> = const { Cell::new(None) };
    /// Parallel regions open on this thread.
    static IN_REGION: Cell<usize> = const { Cell::new(0) };
    /// Tasks the last split call from this thread made.
    static LAST_TASKS: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f(0) .. f(tasks - 1)`, each once, on the calling thread and on up
/// to `threads - 1` workers, and returns when all are done.
///
/// A task that panics makes the call return [`Error::Internal`] with its
/// message (after every other task has finished or been skipped).
pub(crate) fn run_tasks<F>(tasks: usize, threads: usize, f: F) -> Result<()>
where
    F: Fn(usize) + Sync,
{
    LAST_TASKS.with(|c| c.set(tasks));
    let helpers = threads.min(tasks).saturating_sub(1);
    let t = team();
    if helpers == 0 || tasks > MAX_TASKS || t.busy.swap(true, Ordering::Acquire) {
        return run_here(tasks, &f);
    }
    /// Releases the team when the call ends, however it ends.
    struct Release(&'static Team);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.busy.store(false, Ordering::Release);
        }
    }
    let _release = Release(t);
    if t.solo() {
        return run_here(tasks, &f);
    }
    let workers = t.ensure_workers(helpers);
    if workers == 0 {
        return run_here(tasks, &f);
    }
    let f_dyn: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: erases the closure's lifetime. It is called only by threads
    // that claimed a task of this generation, and this function returns only
    // after every task is done, so no call outlives `f`.
    let f_erased: TaskFn = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), TaskFn>(f_dyn) };
    // SAFETY: this call owns the team (`busy`), and every task of the previous
    // generation was done before its owner released it, so nobody reads `f`.
    unsafe { *t.f.get() = Some(f_erased) };
    *t.panic.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let helpers = helpers.min(workers);
    let parts = helpers + 1;
    t.helpers.store(helpers, Ordering::Relaxed);
    t.done.store(0, Ordering::Relaxed);
    // After `f` and `done`: a thread that claims a task sees both.
    deal(&t.homes, tasks, parts);
    let gen = t.generation.load(Ordering::Relaxed).wrapping_add(1);
    t.generation.store(gen, Ordering::SeqCst);
    // A worker woken from sleep starts late by design: its wait is not judged.
    let woke = t.sleepers.load(Ordering::SeqCst) > 0;
    t.wake_sleepers();
    let start = Instant::now();
    while let Some(task) = t.claim(0, parts) {
        // SAFETY: claimed by this thread, from this call's ranges (no other
        // job is running: this call owns the team).
        unsafe { t.run(task) };
    }
    // Every task is claimed; wait for those running elsewhere.
    let own = start.elapsed();
    let mut spins = 0u32;
    while t.done.load(Ordering::Acquire) < tasks {
        spins = spins.wrapping_add(1);
        if spins < 1 << 12 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    if spins > 64 && !woke {
        t.backoff.judge_wait(own, start.elapsed() - own);
    }
    let panic = t.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    match panic {
        Some(what) => Err(Error::Internal {
            what: format!("a kernel task panicked: {what}"),
        }),
        None => Ok(()),
    }
}

/// Every task on the calling thread, panics caught as in [`run_tasks`].
fn run_here(tasks: usize, f: &(dyn Fn(usize) + Sync)) -> Result<()> {
    let mut first = None;
    for t in 0..tasks {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(t))) {
            first.get_or_insert_with(|| panic_text(&*p));
        }
    }
    match first {
        Some(what) => Err(Error::Internal {
            what: format!("a kernel task panicked: {what}"),
        }),
        None => Ok(()),
    }
}

/// The per-task minimum a kernel should use: `cold` outside a parallel
/// region, `awake` inside one (the workers are spinning, so handing them a
/// task costs a cache-line transfer, not a wake-up), unless a test lowered it
/// for this thread with [`force_min_per_task`].
pub(crate) fn min_per_task(cold: usize, awake: usize) -> usize {
    FORCED_MIN_PER_TASK
        .with(|c| c.get())
        .unwrap_or_else(|| if IN_REGION.with(|c| c.get()) > 0 { awake } else { cold })
}

/// Runs `f` with the library's worker threads kept awake, so that the
/// kernels `f` calls on this thread split work that is too small to pay for
/// waking a sleeping thread: the batch-sized products and optimizer steps of
/// a training step, say. Use it around a loop of many small calls (a
/// training epoch), not around one call.
///
/// Inside the region the workers spin between calls instead of sleeping
/// (yielding their core every few spins, so another program that wants it
/// gets it) and every kernel splits at its lower, "awake" threshold.
/// Results do not depend on the scheduling: a kernel's split depends only
/// on the sizes, the thread bound and whether the call is inside a region,
/// and no kernel splits a sum across tasks, so the values are bitwise those
/// of one thread. The caller still never waits for a worker that has not
/// started: it runs every task nobody has claimed.
///
/// Regions nest; with a thread bound of 1 nothing changes.
///
/// ```
/// use nnkern::{gemm, parallel_region, MatMut, MatRef};
/// let a = vec![1.0f32; 32 * 64];
/// let b = vec![1.0f32; 64 * 48];
/// let mut c = vec![0.0f32; 32 * 48];
/// parallel_region(|| {
///     for _ in 0..10 {
///         gemm(1.0, MatRef::new(&a, 32, 64)?, MatRef::new(&b, 64, 48)?, 0.0, MatMut::new(&mut c, 32, 48)?)?;
///     }
///     Ok::<(), nnkern::Error>(())
/// })?;
/// assert!(c.iter().all(|&x| x == 64.0));
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn parallel_region<R>(f: impl FnOnce() -> R) -> R {
    let threads = crate::num_threads();
    if threads <= 1 {
        return f();
    }
    let t = team();
    t.ensure_workers(threads - 1);
    struct Close(&'static Team);
    impl Drop for Close {
        fn drop(&mut self) {
            let _ = IN_REGION.try_with(|c| c.set(c.get() - 1));
            self.0.regions.fetch_sub(1, Ordering::SeqCst);
        }
    }
    t.regions.fetch_add(1, Ordering::SeqCst);
    IN_REGION.with(|c| c.set(c.get() + 1));
    let _close = Close(t);
    t.wake_sleepers();
    f()
}

/// Test hook: makes every splitting kernel called from this thread split
/// once each task has at least `min` units of work (FLOPs for GEMM,
/// elements for the streams); `None` restores the tuned thresholds.
#[cfg(any(test, feature = "testing"))]
pub fn force_min_per_task(min: Option<usize>) {
    FORCED_MIN_PER_TASK.with(|c| c.set(min.map(|m| m.max(1))));
}

/// How many tasks the last splitting call from this thread made (1 when it
/// did not split), so tests can check that a threaded path really ran.
#[cfg(any(test, feature = "testing"))]
pub fn last_task_count() -> usize {
    LAST_TASKS.with(|c| c.get())
}

/// Records `tasks` as the last split of this thread (for a call whose tasks
/// themselves call kernels, which record their own).
pub(crate) fn record_task_count(tasks: usize) {
    LAST_TASKS.with(|c| c.set(tasks));
}

/// How many tasks to split `work` units into so that each has at least
/// `min_per_task` units, bounded by `max_tasks`.
pub(crate) fn task_count_max(work: usize, min_per_task: usize, max_tasks: usize) -> usize {
    let by_size = work / min_per_task.max(1);
    by_size.clamp(1, max_tasks.clamp(1, MAX_TASKS))
}

/// The half-open range of `0..len` that task `t` of `tasks` owns, in whole
/// multiples of `align` (except the last range, which takes the remainder).
pub(crate) fn task_range(len: usize, tasks: usize, t: usize, align: usize) -> std::ops::Range<usize> {
    let align = align.max(1);
    let tasks = tasks.max(1);
    let units = len.div_ceil(align);
    let per = units / tasks;
    let extra = units % tasks;
    // t < tasks, so start_unit <= units and end_unit <= units: no overflow,
    // and `* align` stays within len rounded up to a multiple of align,
    // which the min() below brings back (units * align < len + align).
    let start_unit = t * per + t.min(extra);
    let end_unit = start_unit + per + usize::from(t < extra);
    (start_unit.saturating_mul(align)).min(len)..(end_unit.saturating_mul(align)).min(len)
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
        // Near the top of usize the ranges still tile without wrapping.
        let len = usize::MAX - 3;
        let r = task_range(len, 3, 2, 16);
        assert_eq!(r.end, len);
        assert!(r.start < r.end);
    }

    #[test]
    fn each_thread_claims_its_own_range_first_then_the_others() {
        let homes: Vec<Home> = (0..4).map(|_| Home(AtomicU64::new(0))).collect();
        let drain =
            |me: usize, parts: usize| -> Vec<usize> { std::iter::from_fn(|| claim_from(&homes, me, parts)).collect() };
        // Two threads, eight tasks: the worker's range is 4..8, then it
        // takes what the caller has left, from the front.
        deal(&homes, 8, 2);
        assert_eq!(claim_from(&homes, 0, 2), Some(0));
        assert_eq!(drain(1, 2), [4, 5, 6, 7, 1, 2, 3]);
        assert_eq!(drain(0, 2), Vec::<usize>::new());
        // Three threads, seven tasks: ranges 0..3, 3..5, 5..7; the thread at
        // 2 takes its own, then the caller's, then the one at 1's.
        deal(&homes, 7, 3);
        assert_eq!(drain(2, 3), [5, 6, 0, 1, 2, 3, 4]);
        // Fewer tasks than ranges: the empty ones are skipped.
        deal(&homes, 1, 3);
        assert_eq!(drain(1, 3), [0]);
        // A job with fewer parts than the one before leaves the old ranges
        // exhausted, so nothing stale is claimed through them.
        deal(&homes, 8, 4);
        assert_eq!(drain(0, 4).len(), 8);
        deal(&homes, 2, 2);
        assert_eq!(drain(3, 4), [0, 1]);
    }

    #[test]
    fn every_task_runs_once_on_any_thread_count() {
        for threads in [1, 2, 3, 8] {
            for tasks in [0, 1, 2, 5, 64] {
                let hits = AtomicUsize::new(0);
                let mask = AtomicU64::new(0);
                run_tasks(tasks, threads, |t| {
                    hits.fetch_add(1, Ordering::Relaxed);
                    mask.fetch_or(1 << t, Ordering::Relaxed);
                })
                .unwrap();
                assert_eq!(hits.load(Ordering::Relaxed), tasks);
                let want = if tasks == 64 { u64::MAX } else { (1u64 << tasks) - 1 };
                assert_eq!(mask.load(Ordering::Relaxed), want);
            }
        }
    }

    #[test]
    fn a_panicking_task_is_an_error_on_every_thread() {
        for threads in [1, 2, 4] {
            // Every task panics, so whichever thread runs one (caller or
            // worker) the panic must come back as an error, not an abort.
            let r = run_tasks(8, threads, |t| panic!("task {t} fails"));
            match r {
                Err(Error::Internal { what }) => assert!(what.contains("fails"), "{what}"),
                other => panic!("expected Error::Internal, got {other:?}"),
            }
            // The team is usable again afterwards.
            let hits = AtomicUsize::new(0);
            run_tasks(8, threads, |_| {
                hits.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
            assert_eq!(hits.load(Ordering::Relaxed), 8);
        }
    }

    #[test]
    fn a_panic_on_a_worker_is_caught_there() {
        // The caller is held in task 0 until a worker has run task 1, so the
        // panic of task 1 happens on a worker thread.
        let on_worker = AtomicBool::new(false);
        let r = run_tasks(2, 2, |t| {
            if t == 0 {
                let start = Instant::now();
                while !on_worker.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(2) {
                    std::thread::yield_now();
                }
            } else {
                let name = std::thread::current().name().unwrap_or("").to_string();
                on_worker.store(true, Ordering::Release);
                panic!("on thread {name}");
            }
        });
        let what = match r {
            Err(Error::Internal { what }) => what,
            other => panic!("expected Error::Internal, got {other:?}"),
        };
        if on_worker.load(Ordering::Acquire) {
            assert!(what.contains("on thread"), "{what}");
        }
    }

    #[test]
    fn a_call_from_inside_a_task_runs_there() {
        let hits = AtomicUsize::new(0);
        run_tasks(4, 2, |_| {
            run_tasks(3, 2, |_| {
                hits.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        })
        .unwrap();
        assert_eq!(hits.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn a_worker_found_not_running_sends_calls_to_the_caller_for_a_while() {
        let b = Backoff::new();
        assert!(!b.solo());
        // A wait within bounds changes nothing.
        b.judge_wait(Duration::from_micros(100), Duration::from_micros(150));
        assert!(!b.solo());
        // A wait far beyond the caller's own share: a worker was not running.
        b.judge_wait(Duration::from_micros(100), Duration::from_millis(5));
        assert!(b.solo());
        let first = b.period.load(Ordering::Relaxed);
        assert!(first > 0);
        // Again: a longer period; only a run of good waits ends the
        // back-off, and the period runs out.
        b.judge_wait(Duration::from_micros(100), Duration::from_millis(5));
        assert_eq!(b.period.load(Ordering::Relaxed), 2 * first);
        for _ in 1..Backoff::GOOD_CALLS {
            b.judge_wait(Duration::from_micros(100), Duration::from_micros(10));
        }
        assert_eq!(b.period.load(Ordering::Relaxed), 2 * first);
        b.judge_wait(Duration::from_micros(100), Duration::from_micros(10));
        assert_eq!(b.period.load(Ordering::Relaxed), 0);
        b.until.store(now_ns(), Ordering::Relaxed);
        assert!(!b.solo());
    }

    #[test]
    fn concurrent_callers_each_get_every_task() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        run_tasks(6, 3, |_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 6);
    }
}
