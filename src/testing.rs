//! Hooks for tests and fuzzing: lowering the threads' split threshold,
//! forcing a GEMM plan, planning without running, and the ISA list every
//! per-ISA test iterates over. Not part of the stable API.

pub use crate::ops::gemm::hooks::{
    force_dot, force_kernel_impl, force_plan, force_rows_outer, force_shared_b, plan_gemm, run_microkernel, tiling,
    KernelImpl, PlanSummary,
};
pub use crate::parallel::{force_min_per_task, last_task_count};

use crate::simd::Isa;
use std::io::Write;
use std::sync::Once;

/// Why this machine cannot run `isa` (`None` when it can).
pub fn unsupported_reason(isa: Isa) -> Option<String> {
    if isa.is_supported() {
        return None;
    }
    Some(match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => {
            let mut missing = Vec::new();
            macro_rules! need {
                ($($f:tt),*) => {$(
                    if !std::is_x86_feature_detected!($f) {
                        missing.push($f);
                    }
                )*};
            }
            need!("avx2", "fma", "f16c");
            if isa == Isa::Avx512 {
                need!("avx512f", "avx512bw", "avx512dq", "avx512vl");
            }
            format!("this CPU lacks {}", missing.join(", "))
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 => "this is not an x86-64 CPU".to_string(),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => "this CPU lacks neon".to_string(),
        #[cfg(not(target_arch = "aarch64"))]
        Isa::Neon => "this is not an AArch64 CPU".to_string(),
        _ => "unknown ISA".to_string(),
    })
}

/// The ISAs a per-ISA test runs: every one this CPU supports. The first call
/// in a process prints (to the real standard error, past the test harness's
/// capture) which ISAs run and which cannot, and why. When the environment
/// variable `NNKERN_REQUIRE_ISAS` (a comma list, e.g. `scalar,avx2,avx512`)
/// names an ISA this machine cannot run, it panics, so a CI machine without
/// the ISA it is meant to cover fails instead of skipping it.
pub fn test_isas() -> Vec<Isa> {
    static REPORT: Once = Once::new();
    let run = Isa::supported();
    REPORT.call_once(|| {
        let names: Vec<&str> = run.iter().map(|i| i.name()).collect();
        let skipped: Vec<String> = Isa::ALL
            .iter()
            .filter_map(|&i| unsupported_reason(i).map(|why| format!("{i} ({why})")))
            .collect();
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "ISA coverage [{exe}]: ran {}; not run: {}",
            names.join(", "),
            if skipped.is_empty() {
                "none".to_string()
            } else {
                skipped.join(", ")
            }
        );
    });
    if let Ok(req) = std::env::var("NNKERN_REQUIRE_ISAS") {
        for name in req.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let isa: Isa = match name.parse() {
                Ok(i) => i,
                Err(e) => panic!("NNKERN_REQUIRE_ISAS: {e}"),
            };
            if let Some(why) = unsupported_reason(isa) {
                panic!("NNKERN_REQUIRE_ISAS requires {isa}, which this machine cannot run: {why}");
            }
        }
    }
    run
}

/// Runs this test binary again as a child running only its test `entry`
/// (`--exact`), with the environment variable `var` set to `which`, for
/// three seconds: the child must still be running then (an enormous call
/// that computes for years, not one that faulted, panicked or returned), and
/// is then killed. Panics otherwise: for tests.
pub fn runs_for_three_seconds(entry: &str, var: &str, which: &str) {
    use std::process::Command;
    use std::time::{Duration, Instant};
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(var, which)
        .spawn()
        .expect("the child test process starts");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Some(status) = child.try_wait().expect("the child's status") {
            panic!("the enormous {which} call ended early with {status} (it should run for years)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("the child is killed");
    let _ = child.wait();
}
