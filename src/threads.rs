//! How many threads the kernels may use.
//!
//! The default is `NNKERN_NUM_THREADS` if set to a positive integer, else the
//! number of CPUs available to the process. Kernels use more than one thread
//! only where the work is large enough that it pays; the setting is an upper
//! bound, never a promise.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static SET: AtomicUsize = AtomicUsize::new(0);

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

/// The upper bound on threads a kernel uses.
pub fn num_threads() -> usize {
    match SET.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// Sets the upper bound on threads for every later call, process-wide.
/// `n` must be at least 1.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("threads", "at least 1 thread expected, got 0"));
    }
    SET.store(n, Ordering::Relaxed);
    Ok(())
}
