//! A training epoch allocates nothing: every buffer is sized when the
//! trainer is built, and the kernels' scratch (per thread, bounded by the
//! blocking) is sized by the first call on each thread. Counted with a
//! global allocator that tallies calls from every thread, after a warm-up
//! epoch: with the fast kernels on 1 and 2 threads (also with every product
//! split over the thread team), and with the naive reference kernels.

use nnkern::testing::force_min_per_task;
use nnkern_train::{Cpu, Dataset, TrainConfig, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Two epochs after a warm-up epoch, counted.
fn allocations_in_two_epochs(backend: Cpu, threads: usize, split: bool) -> (usize, usize) {
    let cfg = TrainConfig {
        hidden: vec![64, 32],
        epochs: 3,
        clip_norm: Some(1.0),
        ..TrainConfig::default()
    };
    nnkern::with_threads(threads, || {
        // With `split`, every GEMM and stream of the step goes over the
        // thread team, so the helpers' paths are counted too.
        force_min_per_task(split.then_some(1));
        let mut t = Trainer::new(cfg, Dataset::bundled().unwrap().head(1600, 50), backend).unwrap();
        let mut steps = 0;
        t.run_epoch(&mut |_| steps += 1).unwrap();
        let before = ALLOCS.load(Ordering::SeqCst);
        t.run_epoch(&mut |_| steps += 1).unwrap();
        t.run_epoch(&mut |_| steps += 1).unwrap();
        let during = ALLOCS.load(Ordering::SeqCst) - before;
        force_min_per_task(None);
        (during, steps / 3)
    })
    .unwrap()
}

/// The tests of this file count one process-wide allocator: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn an_epoch_allocates_nothing_with_the_fast_kernels() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (threads, split) in [(1, false), (2, false), (2, true)] {
        let (during, steps) = allocations_in_two_epochs(Cpu::new(), threads, split);
        assert_eq!(
            during, 0,
            "{during} allocations in two epochs of {steps} steps ({threads} threads, split forced: {split})"
        );
    }
}

#[test]
fn an_epoch_allocates_nothing_with_the_reference_kernels() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (during, steps) = allocations_in_two_epochs(Cpu::reference(), 1, false);
    assert_eq!(during, 0, "{during} allocations in two epochs of {steps} steps");
}
