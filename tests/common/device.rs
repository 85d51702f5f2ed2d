//! Which device the CUDA tests run on.
//!
//! - `REQUIRE_GPU=1`: a CUDA GPU, and its absence fails the tests (the GPU machine).
//! - `NNKERN_TEST_ENGINE=executor`: the PTX executor even where a GPU is present.
//! - otherwise a GPU when one is usable, else the PTX executor, so that every
//!   test runs everywhere: without a GPU the same host code and kernels run on
//!   the CPU, with the executor's bounds, shared-memory and race checks.
//!
//! A GPU device is opened once and shared; each executor test gets a device of
//! its own (its memory starts empty, and tests on different threads do not
//! wait for each other).

use nnkern::cuda::{Device, EngineKind};
use std::sync::OnceLock;

fn require_gpu() -> bool {
    std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn force_executor() -> bool {
    std::env::var("NNKERN_TEST_ENGINE").is_ok_and(|v| v == "executor")
}

/// The shared GPU device, if the tests run on one.
fn gpu() -> Option<&'static Device> {
    static DEV: OnceLock<Option<Device>> = OnceLock::new();
    DEV.get_or_init(|| {
        if force_executor() && !require_gpu() {
            eprintln!("NNKERN_TEST_ENGINE=executor: tests run on the PTX executor");
            return None;
        }
        match Device::new(0) {
            Ok(d) => {
                eprintln!(
                    "CUDA device: {} (cc {:?}), driver {}",
                    d.name().unwrap_or_default(),
                    d.compute_capability().ok(),
                    d.driver_version()
                );
                Some(d)
            }
            Err(e) => {
                if require_gpu() {
                    panic!("REQUIRE_GPU=1 but no usable GPU: {e}");
                }
                eprintln!("no CUDA GPU ({e}): tests run on the PTX executor");
                None
            }
        }
    })
    .as_ref()
}

/// The GPU, for a test that needs one beside the executor; `None` (the test is
/// skipped) without one, a panic under `REQUIRE_GPU=1`.
pub fn gpu_device() -> Option<&'static Device> {
    gpu()
}

/// Whether the tests run on the PTX executor (no GPU, or it was asked for).
pub fn on_executor() -> bool {
    gpu().is_none()
}

/// A device for one test: the shared GPU, or a fresh executor device.
pub enum TestDevice {
    Gpu(&'static Device),
    Executor(Box<Device>),
}

impl std::ops::Deref for TestDevice {
    type Target = Device;
    fn deref(&self) -> &Device {
        match self {
            TestDevice::Gpu(d) => d,
            TestDevice::Executor(d) => d,
        }
    }
}

/// The device this test runs on (see the module docs).
pub fn device() -> TestDevice {
    match gpu() {
        Some(d) => TestDevice::Gpu(d),
        None => TestDevice::Executor(Box::new(Device::executor())),
    }
}

/// An executor device, whatever else the machine has: for the checks only the
/// executor makes (faults a GPU would hide, which kernels ran).
pub fn executor() -> Device {
    let d = Device::executor();
    assert_eq!(d.engine(), EngineKind::Executor);
    d
}

/// `gpu` on a GPU, `executor` on the executor: sizes of a test, so the
/// interpreter runs small shapes and the GPU the large ones.
pub fn sized(gpu: usize, executor: usize) -> usize {
    if on_executor() {
        executor
    } else {
        gpu
    }
}

/// Proptest cases: `PROPTEST_CASES` when set, else `gpu` on a GPU, `executor` on the executor.
pub fn cases(gpu: u32, executor: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if on_executor() { executor } else { gpu })
}
