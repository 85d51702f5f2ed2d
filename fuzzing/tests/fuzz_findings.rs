//! Fuzz findings in the trainer's readers, fixed, kept as regression tests:
//! the inputs live in `fuzz/regressions/<target>/` (also replayed by
//! `tests/fuzz_replay.rs`); these tests check the property each one broke.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Records the largest single allocation request.
struct Peak;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

fn finding(rel: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions")
            .join(rel),
    )
    .unwrap()
}

#[test]
fn idx_header_alone_does_not_reserve_its_announced_size() {
    let input = finding("idx/reserves-announced-4gib");
    LARGEST.store(0, Ordering::Relaxed);
    let r = nnkern_train::data::parse_idx(&input[1..], "finding", 1);
    assert!(r.is_err());
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < 1 << 20,
        "an 11-byte file made the reader allocate {largest} bytes at once"
    );
}

#[test]
fn checkpoint_with_wrapping_parameter_count_is_rejected() {
    let input = finding("checkpoint/param-count-wraps");
    nnkern_fuzzing::checkpoint(&input);
}
