//! How many threads the kernels may use.
//!
//! The default is `NNKERN_NUM_THREADS` if set to a positive integer, else the
//! number of CPUs available to the process. Kernels use more than one thread
//! only where the work is large enough that it pays; the setting is an upper
//! bound, never a promise.

use crate::error::{Error, Result};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static SET: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// A bound set for the calling thread by [`with_threads`] (0: none).
    static LOCAL: Cell<usize> = const { Cell::new(0) };
}

fn default_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("NNKERN_NUM_THREADS")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// The upper bound on threads a kernel called from this thread uses: the
/// bound of an enclosing [`with_threads`], else the process-wide one.
///
/// ```
/// assert!(nnkern::num_threads() >= 1);
/// ```
pub fn num_threads() -> usize {
    let local = LOCAL.try_with(|c| c.get()).unwrap_or(0);
    if local > 0 {
        return local;
    }
    match SET.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// Runs `f` with at most `n` threads for every kernel it calls on this
/// thread, whatever the process-wide bound is (`n` must be at least 1).
/// Bounds nest; the previous one is restored when `f` returns or panics.
/// Only the calling thread is bound: other threads, and the process-wide
/// setting ([`set_num_threads`]), are left alone, so a library can bound
/// its own calls without a global switch.
///
/// ```
/// use nnkern::{gemm, with_threads, MatMut, MatRef};
/// let two = with_threads(2, nnkern::num_threads)?;
/// assert_eq!(two, 2);
/// // One single-threaded product, whatever the process-wide bound is.
/// let a = [1.0f32, 2.0, 3.0, 4.0];
/// let mut c = [0.0f32; 4];
/// with_threads(1, || gemm(1.0, MatRef::new(&a, 2, 2)?, MatRef::new(&a, 2, 2)?, 0.0, MatMut::new(&mut c, 2, 2)?))??;
/// assert_eq!(c, [7.0, 10.0, 15.0, 22.0]);
/// assert!(with_threads(0, || ()).is_err());
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> Result<R> {
    if n == 0 {
        return Err(Error::invalid("threads", "at least 1 thread expected, got 0"));
    }
    Ok(bounded(n, f))
}

/// [`with_threads`] for an `n` known to be at least 1.
fn bounded<R>(n: usize, f: impl FnOnce() -> R) -> R {
    /// Restores this thread's bound when dropped.
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = LOCAL.try_with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(LOCAL.with(|c| c.replace(n)));
    f()
}

/// Sets the upper bound on threads for every later call, process-wide.
/// `n` must be at least 1. To bound only some calls, without touching the
/// process-wide setting, use [`with_threads`] or [`crate::gemm_with_threads`].
///
/// ```
/// nnkern::set_num_threads(2)?;
/// assert_eq!(nnkern::num_threads(), 2);
/// assert!(nnkern::set_num_threads(0).is_err());
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("threads", "at least 1 thread expected, got 0"));
    }
    SET.store(n, Ordering::Relaxed);
    Ok(())
}

/// Which threads run a unit of work chosen by [`AdaptiveThreads`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Up to the thread bound ([`num_threads`]): the library's team.
    Team,
    /// The calling thread alone (a bound of 1).
    Alone,
}

impl Placement {
    fn other(self) -> Placement {
        match self {
            Placement::Team => Placement::Alone,
            Placement::Alone => Placement::Team,
        }
    }
}

/// Runs the units of a loop of similar work (the steps of a training run)
/// on the thread team or on the calling thread alone, whichever it has
/// timed faster lately.
///
/// Splitting a small unit over threads pays only while the cores trade
/// data quickly; where they do not — two threads on cores of different
/// chiplets, or a virtual machine whose virtual CPUs the host has placed
/// apart — the team can be slower than one thread, and that can change
/// while a program runs. So the units are timed in windows of a few units
/// each: the chosen placement runs window after window, and now and then
/// one short window tries the other placement, which is adopted when it
/// was more than 10% faster: at once when the chosen placement turns more
/// than 30% slower than it was, and otherwise, with the team chosen, after
/// 16 windows at first and twice as long each time the choice is confirmed
/// (at most 128), so that where the team keeps winning the trials cost
/// under 1% of the run; with the caller alone chosen, every 16 windows (a
/// team that is fast again is found within about 130 units, and a losing
/// trial costs little: the team is rarely much slower than one thread).
///
/// Every kernel gives the same values, bit for bit, on any number of
/// threads, so the choice changes how fast a loop runs, never what it
/// computes. With a thread bound of 1 every unit runs directly, untimed.
///
/// ```
/// use nnkern::{gemm, parallel_region, AdaptiveThreads, MatMut, MatRef};
/// let a = vec![1.0f32; 32 * 64];
/// let b = vec![1.0f32; 64 * 48];
/// let mut c = vec![0.0f32; 32 * 48];
/// let mut chooser = AdaptiveThreads::new();
/// parallel_region(|| {
///     for _ in 0..100 {
///         chooser.run(|| gemm(1.0, MatRef::new(&a, 32, 64)?, MatRef::new(&b, 64, 48)?, 0.0, MatMut::new(&mut c, 32, 48)?))?;
///     }
///     Ok::<(), nnkern::Error>(())
/// })?;
/// assert!(c.iter().all(|&x| x == 64.0));
/// assert_eq!(chooser.units(), 100);
/// # Ok::<(), nnkern::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct AdaptiveThreads {
    chooser: Chooser,
    units: u64,
    alone: u64,
}

impl AdaptiveThreads {
    /// A chooser that starts with the team.
    pub fn new() -> AdaptiveThreads {
        AdaptiveThreads::default()
    }

    /// Runs one unit, on the placement this unit's window uses, and times it.
    pub fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.units += 1;
        if num_threads() <= 1 {
            return f();
        }
        let placement = self.chooser.placement();
        let start = std::time::Instant::now();
        let r = match placement {
            Placement::Team => f(),
            Placement::Alone => {
                self.alone += 1;
                bounded(1, f)
            }
        };
        self.chooser.record(start.elapsed().as_secs_f64());
        r
    }

    /// The placement chosen for the units (trials aside): where other work
    /// of the loop (a validation pass between epochs, say) should run too.
    pub fn chosen(&self) -> Placement {
        if num_threads() <= 1 {
            Placement::Alone
        } else {
            self.chooser.chosen
        }
    }

    /// The thread bound [`AdaptiveThreads::chosen`] stands for, to pass to
    /// [`with_threads`].
    pub fn chosen_bound(&self) -> usize {
        match self.chosen() {
            Placement::Alone => 1,
            Placement::Team => num_threads(),
        }
    }

    /// The placement the next unit runs on.
    pub fn next_placement(&self) -> Placement {
        if num_threads() <= 1 {
            Placement::Alone
        } else {
            self.chooser.placement()
        }
    }

    /// Units run so far.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Units run so far on the calling thread alone (trials included; 0
    /// with a thread bound of 1).
    pub fn units_alone(&self) -> u64 {
        self.alone
    }
}

/// The decisions of [`AdaptiveThreads`], fed with unit times (seconds).
#[derive(Clone, Debug)]
struct Chooser {
    /// The placement chosen.
    chosen: Placement,
    /// The placement of the window under way.
    window: Placement,
    /// Units and seconds in the window so far.
    in_window: u32,
    window_time: f64,
    /// Seconds per unit of the last `len` windows on the chosen placement
    /// (the newest last): a fixed array, so that no unit allocates.
    history: [f64; Chooser::HISTORY],
    len: usize,
    /// Windows on the chosen placement since the last trial, and how many
    /// make the next one due.
    since_trial: u32,
    trial_every: u32,
    /// The first window (start-up costs) is not judged.
    warm: bool,
}

impl Default for Chooser {
    fn default() -> Chooser {
        Chooser {
            chosen: Placement::Team,
            window: Placement::Team,
            in_window: 0,
            window_time: 0.0,
            history: [0.0; Chooser::HISTORY],
            len: 0,
            since_trial: 0,
            trial_every: Chooser::FIRST_TRIAL,
            warm: false,
        }
    }
}

impl Chooser {
    /// Units in a window on the chosen placement, and in a trial.
    const WINDOW: u32 = 8;
    const TRIAL: u32 = 4;
    const HISTORY: usize = 8;
    const FIRST_TRIAL: u32 = 16;
    const LAST_TRIAL: u32 = 128;
    /// A trial wins when this much faster; the chosen placement is tried
    /// against at once when its last two windows were this much slower
    /// than its recent median.
    const WIN: f64 = 0.9;
    const WORSE: f64 = 1.3;

    fn placement(&self) -> Placement {
        self.window
    }

    /// The median of `v` (at most `HISTORY` values, at least one).
    fn median(v: &[f64]) -> f64 {
        let mut s = [0.0; Self::HISTORY];
        let s = &mut s[..v.len()];
        s.copy_from_slice(v);
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }

    /// The chosen placement's recent windows, oldest first.
    fn recent(&self) -> &[f64] {
        &self.history[..self.len]
    }

    fn push(&mut self, per_unit: f64) {
        if self.len == Self::HISTORY {
            self.history.copy_within(1.., 0);
            self.len -= 1;
        }
        self.history[self.len] = per_unit;
        self.len += 1;
    }

    fn record(&mut self, seconds: f64) {
        self.in_window += 1;
        self.window_time += seconds;
        let len = if self.window == self.chosen {
            Self::WINDOW
        } else {
            Self::TRIAL
        };
        if self.in_window < len {
            return;
        }
        let per_unit = self.window_time / f64::from(self.in_window);
        self.in_window = 0;
        self.window_time = 0.0;
        if !self.warm {
            self.warm = true;
            return;
        }
        if self.window == self.chosen {
            self.push(per_unit);
            self.since_trial += 1;
            let h = self.recent();
            let worse = h.len() >= 4 && {
                let before = Self::median(&h[..h.len() - 2]);
                h[h.len() - 2..].iter().all(|&t| t > before * Self::WORSE)
            };
            if worse || self.since_trial >= self.trial_every {
                self.window = self.chosen.other();
            }
            return;
        }
        // A trial just ended: against the chosen placement's latest windows.
        let h = self.recent();
        let now = if h.is_empty() {
            0.0
        } else {
            Self::median(&h[h.len().saturating_sub(3)..])
        };
        if per_unit < now * Self::WIN {
            self.chosen = self.window;
            self.len = 0;
            self.push(per_unit);
            self.trial_every = Self::FIRST_TRIAL;
        } else {
            self.window = self.chosen;
            self.trial_every = match self.chosen {
                Placement::Team => (self.trial_every * 2).min(Self::LAST_TRIAL),
                Placement::Alone => Self::FIRST_TRIAL,
            };
        }
        self.since_trial = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `units` units through a chooser, unit `i` on placement `p`
    /// taking `cost(p, i)` seconds; returns each unit's placement.
    fn simulate(c: &mut Chooser, units: usize, cost: impl Fn(Placement, usize) -> f64) -> Vec<Placement> {
        (0..units)
            .map(|i| {
                let p = c.placement();
                c.record(cost(p, i));
                p
            })
            .collect()
    }

    fn alone(v: &[Placement]) -> usize {
        v.iter().filter(|&&p| p == Placement::Alone).count()
    }

    #[test]
    fn a_faster_team_keeps_the_units_and_the_trials_thin_out() {
        let mut c = Chooser::default();
        // The team 1.75× faster, with ±5% noise.
        let noise = |i: usize| 1.0 + 0.05 * ((i * 7919 % 13) as f64 / 6.0 - 1.0);
        let v = simulate(&mut c, 20_000, |p, i| {
            noise(i) * if p == Placement::Team { 1.0 } else { 1.75 }
        });
        assert_eq!(c.chosen, Placement::Team);
        // Trials after 16, 32, 64, then every 128 windows of 8 units: under
        // 1% of the units once the interval is at its longest.
        assert!(
            alone(&v[..1000]) >= Chooser::TRIAL as usize,
            "no trial in the first 1000 units"
        );
        let late = alone(&v[10_000..]);
        assert!(late > 0 && late * 100 < 10_000, "{late} units alone of the last 10000");
    }

    #[test]
    fn a_team_turned_slow_is_left_within_a_few_windows_and_retried_later() {
        let mut c = Chooser::default();
        // From unit 3000 on the team takes 2.5× its time (its cores trade
        // data slowly), slower than one thread (1.75×); from 9000 on it is
        // fast again.
        let v = simulate(&mut c, 30_000, |p, i| match p {
            Placement::Team if (3000..9000).contains(&i) => 2.5,
            Placement::Team => 1.0,
            Placement::Alone => 1.75,
        });
        // Two slow windows trigger a trial, which wins: within 3 windows
        // and a trial every unit runs alone but for the trials of the team
        // (4 units every 16 windows of 8).
        let switch = 3000 + 3 * Chooser::WINDOW as usize + Chooser::TRIAL as usize;
        let trials = (9000 - switch) * 4 / (16 * 8 + 4) + 8;
        let team = v[switch..9000].iter().filter(|&&p| p == Placement::Team).count();
        assert!(team <= trials, "{team} units on the team while it was slow");
        // ... and those trials keep coming every 16 windows: a team fast
        // again is never missed for long.
        let starts: Vec<usize> = (switch..9000)
            .filter(|&i| v[i] == Placement::Team && v[i - 1] == Placement::Alone)
            .collect();
        let gap = starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(usize::MAX);
        assert!(gap <= 16 * 8 + 4, "trials of the team {gap} units apart");
        // Back to the team once a trial finds it fast again (trials come
        // every 16 windows while alone), and it stays there.
        let back = 9000 + (Chooser::FIRST_TRIAL as usize + 1) * Chooser::WINDOW as usize;
        assert_eq!(c.chosen, Placement::Team);
        assert!(alone(&v[back..]) * 100 < v.len() - back);
    }

    #[test]
    fn equal_placements_do_not_flap() {
        let mut c = Chooser::default();
        // Within the 10% a trial must win by, nothing changes.
        let v = simulate(&mut c, 10_000, |p, i| {
            let noise = 1.0 + 0.04 * ((i * 31 % 7) as f64 / 3.0 - 1.0);
            noise * if p == Placement::Team { 1.0 } else { 1.02 }
        });
        assert_eq!(c.chosen, Placement::Team);
        assert!(alone(&v) * 100 < v.len());
    }

    #[test]
    fn units_run_where_the_chooser_says_with_the_bound_it_implies() {
        with_threads(2, || {
            let mut a = AdaptiveThreads::new();
            for _ in 0..500 {
                let want = a.next_placement();
                let bound = a.run(num_threads);
                assert_eq!(bound, if want == Placement::Team { 2 } else { 1 });
            }
            assert_eq!(a.units(), 500);
            assert_eq!(num_threads(), 2);
            a.chooser.chosen = Placement::Team;
            assert_eq!((a.chosen(), a.chosen_bound()), (Placement::Team, 2));
            a.chooser.chosen = Placement::Alone;
            assert_eq!((a.chosen(), a.chosen_bound()), (Placement::Alone, 1));
        })
        .unwrap();
        with_threads(1, || {
            let mut a = AdaptiveThreads::new();
            assert_eq!(a.next_placement(), Placement::Alone);
            assert_eq!(a.run(num_threads), 1);
            assert_eq!(a.units_alone(), 0);
            assert_eq!(a.chosen_bound(), 1);
        })
        .unwrap();
    }
}
