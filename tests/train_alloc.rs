//! A training epoch allocates nothing: every buffer is sized when the
//! trainer is built. Counted with a global allocator that tallies calls.
//! The naive reference kernels are used so the count covers the trainer's
//! own code (shuffle, batch gather, forward, backward, update, validation)
//! independently of how the dispatched kernels manage their scratch memory.

use nnkern::train::{Cpu, Dataset, TrainConfig, Trainer};
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

#[test]
fn an_epoch_allocates_nothing() {
    let cfg = TrainConfig {
        hidden: vec![16, 8],
        epochs: 3,
        clip_norm: Some(1.0),
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(cfg, Dataset::bundled().unwrap().head(300, 50), Cpu::reference()).unwrap();
    let mut steps = 0;
    t.run_epoch(&mut |_| steps += 1).unwrap();
    let before = ALLOCS.load(Ordering::Relaxed);
    t.run_epoch(&mut |_| steps += 1).unwrap();
    t.run_epoch(&mut |_| steps += 1).unwrap();
    let during = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(during, 0, "{during} allocations in two epochs of {} steps", steps / 3);
}
