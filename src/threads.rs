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
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = LOCAL.try_with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(LOCAL.with(|c| c.replace(n)));
    Ok(f())
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
