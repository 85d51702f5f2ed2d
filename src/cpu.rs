//! What the kernels know about this CPU: cache sizes, detected once, from
//! which the GEMM derives its blocking, and the measured one-core f32 FMA
//! peak ([`fma_peak`]), so "% of peak" is measured, not assumed.
//!
//! Linux exposes them under `/sys/devices/system/cpu/cpu0/cache`; elsewhere,
//! or when that is unreadable, conservative defaults apply (32 KiB L1d,
//! 1 MiB L2, 8 MiB L3). Sizes are per core for L1 and L2, and for the whole
//! (possibly shared) last level for L3.

use crate::error::{Error, Result};
use crate::simd::Isa;
use std::sync::OnceLock;
use std::time::Duration;

/// Data cache sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    /// Level-1 data cache of one core.
    pub l1d: usize,
    /// Level-2 cache of one core.
    pub l2: usize,
    /// Last-level cache (shared by the cores of a socket).
    pub l3: usize,
}

impl CacheSizes {
    const DEFAULT: CacheSizes = CacheSizes {
        l1d: 32 << 10,
        l2: 1 << 20,
        l3: 8 << 20,
    };
}

/// The cache sizes of this CPU (detected once, then cached).
pub fn cache_sizes() -> CacheSizes {
    static SIZES: OnceLock<CacheSizes> = OnceLock::new();
    *SIZES.get_or_init(detect)
}

fn detect() -> CacheSizes {
    let mut sizes = CacheSizes::DEFAULT;
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache") else {
        return sizes;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let read = |name: &str| std::fs::read_to_string(path.join(name)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else {
            continue;
        };
        let Some(bytes) = parse_size(size.trim()) else { continue };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => sizes.l1d = bytes,
            ("2", "Unified" | "Data") => sizes.l2 = bytes,
            ("3", "Unified") => sizes.l3 = bytes,
            _ => {}
        }
    }
    sizes
}

/// Parses sysfs sizes such as `48K`, `1024K`, `32M`.
fn parse_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit).filter(|&b| b > 0)
}

/// One core's f32 fused multiply-add throughput, in GFLOP/s (2 FLOP per
/// lane per FMA), for the ISA calls from this thread use
/// ([`crate::active_isa`]). See [`fma_peak_of`].
pub fn fma_peak() -> f64 {
    // The active ISA is always one this CPU runs.
    fma_peak_of(crate::active_isa()).unwrap_or(0.0)
}

/// One core's f32 FMA throughput for `isa`, in GFLOP/s: independent chains
/// of `vfmadd231ps` (zmm: 16 chains, ymm: 14) or `fmla` (24 chains), more
/// than latency × issue width on current cores, so only the FMA ports bound
/// it; the scalar ISA times the portable multiply-add the compiler makes
/// of 16 independent f32 chains. Measured once per ISA at the first call
/// (~10 ms of warm-up, then the best of 15 runs of ~2 ms, on the calling
/// thread's CPU-time clock where Linux has one), then cached. An error if
/// this CPU cannot run `isa`.
pub fn fma_peak_of(isa: Isa) -> Result<f64> {
    if !isa.is_supported() {
        return Err(Error::invalid("isa", format!("{isa} is not supported by this CPU")));
    }
    static PEAK: [OnceLock<f64>; Isa::ALL.len()] = [const { OnceLock::new() }; Isa::ALL.len()];
    let slot = Isa::ALL.iter().position(|&i| i == isa).unwrap_or(0);
    Ok(*PEAK[slot].get_or_init(|| measure_peak(isa)))
}

fn measure_peak(isa: Isa) -> f64 {
    // FLOP per iteration of the loop, and the loop.
    let (flops, run): (f64, fn(u64)) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (16.0 * 16.0 * 2.0, fma_chains::zmm),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (14.0 * 8.0 * 2.0, fma_chains::ymm),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => (24.0 * 4.0 * 2.0, fma_chains::neon),
        _ => (16.0 * 2.0, fma_chains::portable),
    };
    // Runs of at least 2 ms, calibrated while warming up (the first
    // milliseconds of wide vectors can run at a lower clock).
    let time = |iters: u64| {
        let t0 = thread_clock();
        run(iters);
        (thread_clock() - t0).as_secs_f64().max(1e-9)
    };
    let mut iters = 100_000u64;
    let mut warm = 0.0;
    while warm < 0.01 {
        let t = time(iters);
        warm += t;
        if t < 0.002 {
            iters = iters.saturating_mul(2);
        }
    }
    // The best of 15: a run that shared its core's FMA ports (a busy SMT
    // sibling, an interrupt) reads low; none reads high.
    (0..15)
        .map(|_| flops * iters as f64 / time(iters) / 1e9)
        .fold(0.0, f64::max)
}

/// The calling thread's CPU time where Linux provides it (other processes on
/// a shared machine then do not lower the figure), else wall time.
fn thread_clock() -> Duration {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec (the 64-bit Linux layout:
        // two 64-bit fields), which is all clock_gettime writes.
        if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return Duration::new(ts.sec as u64, ts.nsec as u32);
        }
    }
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// The timed loops: independent FMA chains on zeroed registers (no
/// subnormals, no dependence between chains), `iters` times.
mod fma_chains {
    /// 16 chains of zmm FMAs.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn zmm(iters: u64) {
        #[target_feature(enable = "avx512f")]
        unsafe fn run(iters: u64) {
            // SAFETY: register-only instructions (the CPU runs AVX-512F: the
            // caller checked); every register written is declared: zmm0–17
            // clobbered, the counter `inout`, the flags not preserved.
            unsafe {
                std::arch::asm!(
                    "vpxord zmm16, zmm16, zmm16",
                    "vpxord zmm17, zmm17, zmm17",
                    "vpxord zmm0, zmm0, zmm0",
                    "vpxord zmm1, zmm1, zmm1",
                    "vpxord zmm2, zmm2, zmm2",
                    "vpxord zmm3, zmm3, zmm3",
                    "vpxord zmm4, zmm4, zmm4",
                    "vpxord zmm5, zmm5, zmm5",
                    "vpxord zmm6, zmm6, zmm6",
                    "vpxord zmm7, zmm7, zmm7",
                    "vpxord zmm8, zmm8, zmm8",
                    "vpxord zmm9, zmm9, zmm9",
                    "vpxord zmm10, zmm10, zmm10",
                    "vpxord zmm11, zmm11, zmm11",
                    "vpxord zmm12, zmm12, zmm12",
                    "vpxord zmm13, zmm13, zmm13",
                    "vpxord zmm14, zmm14, zmm14",
                    "vpxord zmm15, zmm15, zmm15",
                    ".p2align 5",
                    "2:",
                    "vfmadd231ps zmm0, zmm16, zmm17",
                    "vfmadd231ps zmm1, zmm16, zmm17",
                    "vfmadd231ps zmm2, zmm16, zmm17",
                    "vfmadd231ps zmm3, zmm16, zmm17",
                    "vfmadd231ps zmm4, zmm16, zmm17",
                    "vfmadd231ps zmm5, zmm16, zmm17",
                    "vfmadd231ps zmm6, zmm16, zmm17",
                    "vfmadd231ps zmm7, zmm16, zmm17",
                    "vfmadd231ps zmm8, zmm16, zmm17",
                    "vfmadd231ps zmm9, zmm16, zmm17",
                    "vfmadd231ps zmm10, zmm16, zmm17",
                    "vfmadd231ps zmm11, zmm16, zmm17",
                    "vfmadd231ps zmm12, zmm16, zmm17",
                    "vfmadd231ps zmm13, zmm16, zmm17",
                    "vfmadd231ps zmm14, zmm16, zmm17",
                    "vfmadd231ps zmm15, zmm16, zmm17",
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) iters.max(1) => _,
                    out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                    out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                    out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                    out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                    out("zmm16") _, out("zmm17") _,
                    options(nomem, nostack),
                );
            }
        }
        // SAFETY: `measure_peak` runs this only for an ISA `fma_peak_of`
        // found supported (AVX-512 F/BW/DQ/VL).
        unsafe { run(iters) }
    }

    /// 14 chains of ymm FMAs.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn ymm(iters: u64) {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run(iters: u64) {
            // SAFETY: register-only instructions (the CPU runs AVX2 and FMA:
            // the caller checked); ymm0–15 clobbered, the counter `inout`,
            // the flags not preserved.
            unsafe {
                std::arch::asm!(
                    "vxorps ymm14, ymm14, ymm14",
                    "vxorps ymm15, ymm15, ymm15",
                    "vxorps ymm0, ymm0, ymm0",
                    "vxorps ymm1, ymm1, ymm1",
                    "vxorps ymm2, ymm2, ymm2",
                    "vxorps ymm3, ymm3, ymm3",
                    "vxorps ymm4, ymm4, ymm4",
                    "vxorps ymm5, ymm5, ymm5",
                    "vxorps ymm6, ymm6, ymm6",
                    "vxorps ymm7, ymm7, ymm7",
                    "vxorps ymm8, ymm8, ymm8",
                    "vxorps ymm9, ymm9, ymm9",
                    "vxorps ymm10, ymm10, ymm10",
                    "vxorps ymm11, ymm11, ymm11",
                    "vxorps ymm12, ymm12, ymm12",
                    "vxorps ymm13, ymm13, ymm13",
                    ".p2align 5",
                    "2:",
                    "vfmadd231ps ymm0, ymm14, ymm15",
                    "vfmadd231ps ymm1, ymm14, ymm15",
                    "vfmadd231ps ymm2, ymm14, ymm15",
                    "vfmadd231ps ymm3, ymm14, ymm15",
                    "vfmadd231ps ymm4, ymm14, ymm15",
                    "vfmadd231ps ymm5, ymm14, ymm15",
                    "vfmadd231ps ymm6, ymm14, ymm15",
                    "vfmadd231ps ymm7, ymm14, ymm15",
                    "vfmadd231ps ymm8, ymm14, ymm15",
                    "vfmadd231ps ymm9, ymm14, ymm15",
                    "vfmadd231ps ymm10, ymm14, ymm15",
                    "vfmadd231ps ymm11, ymm14, ymm15",
                    "vfmadd231ps ymm12, ymm14, ymm15",
                    "vfmadd231ps ymm13, ymm14, ymm15",
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) iters.max(1) => _,
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                    out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                    options(nomem, nostack),
                );
            }
        }
        // SAFETY: `measure_peak` runs this only for an ISA `fma_peak_of`
        // found supported (AVX2 and FMA).
        unsafe { run(iters) }
    }

    /// 24 chains of NEON `fmla`.
    #[cfg(target_arch = "aarch64")]
    pub(super) fn neon(iters: u64) {
        // SAFETY: register-only instructions (NEON is part of the AArch64
        // baseline); v0–v25 clobbered, the counter `inout`, the flags not
        // preserved.
        unsafe {
            std::arch::asm!(
                "movi v24.4s, #0",
                "movi v25.4s, #0",
                "movi v0.4s, #0", "movi v1.4s, #0", "movi v2.4s, #0", "movi v3.4s, #0",
                "movi v4.4s, #0", "movi v5.4s, #0", "movi v6.4s, #0", "movi v7.4s, #0",
                "movi v8.4s, #0", "movi v9.4s, #0", "movi v10.4s, #0", "movi v11.4s, #0",
                "movi v12.4s, #0", "movi v13.4s, #0", "movi v14.4s, #0", "movi v15.4s, #0",
                "movi v16.4s, #0", "movi v17.4s, #0", "movi v18.4s, #0", "movi v19.4s, #0",
                "movi v20.4s, #0", "movi v21.4s, #0", "movi v22.4s, #0", "movi v23.4s, #0",
                "2:",
                "fmla v0.4s, v24.4s, v25.4s", "fmla v1.4s, v24.4s, v25.4s",
                "fmla v2.4s, v24.4s, v25.4s", "fmla v3.4s, v24.4s, v25.4s",
                "fmla v4.4s, v24.4s, v25.4s", "fmla v5.4s, v24.4s, v25.4s",
                "fmla v6.4s, v24.4s, v25.4s", "fmla v7.4s, v24.4s, v25.4s",
                "fmla v8.4s, v24.4s, v25.4s", "fmla v9.4s, v24.4s, v25.4s",
                "fmla v10.4s, v24.4s, v25.4s", "fmla v11.4s, v24.4s, v25.4s",
                "fmla v12.4s, v24.4s, v25.4s", "fmla v13.4s, v24.4s, v25.4s",
                "fmla v14.4s, v24.4s, v25.4s", "fmla v15.4s, v24.4s, v25.4s",
                "fmla v16.4s, v24.4s, v25.4s", "fmla v17.4s, v24.4s, v25.4s",
                "fmla v18.4s, v24.4s, v25.4s", "fmla v19.4s, v24.4s, v25.4s",
                "fmla v20.4s, v24.4s, v25.4s", "fmla v21.4s, v24.4s, v25.4s",
                "fmla v22.4s, v24.4s, v25.4s", "fmla v23.4s, v24.4s, v25.4s",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) iters.max(1) => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _,
                out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _, out("v14") _, out("v15") _, out("v16") _, out("v17") _,
                out("v18") _, out("v19") _, out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                out("v24") _, out("v25") _,
                options(nomem, nostack),
            );
        }
    }

    /// 16 chains of the portable multiply-add (whatever the compiler makes
    /// of it for the baseline target).
    pub(super) fn portable(iters: u64) {
        let (x, y) = (std::hint::black_box(1.0f32), std::hint::black_box(0.0f32));
        let mut acc = [0.0f32; 16];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = *a * x + y;
            }
        }
        std::hint::black_box(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("0K"), None);
        assert_eq!(parse_size("xK"), None);
    }

    #[test]
    fn fma_peak_is_measured_per_isa_and_cached() {
        for isa in Isa::supported() {
            let p = fma_peak_of(isa).unwrap();
            // Any core this runs on does more than 0.05 GFLOP/s and less
            // than 1000 per core; the second call returns the cached value.
            assert!(p > 0.05 && p < 1000.0, "{isa}: {p}");
            assert_eq!(fma_peak_of(isa).unwrap().to_bits(), p.to_bits());
        }
        for isa in Isa::ALL {
            assert_eq!(fma_peak_of(isa).is_ok(), isa.is_supported());
        }
        assert!(fma_peak() > 0.0);
    }

    #[test]
    fn detected_sizes_are_plausible() {
        let c = cache_sizes();
        assert!(c.l1d >= 4 << 10 && c.l2 >= c.l1d && c.l3 >= 64 << 10, "{c:?}");
    }
}
