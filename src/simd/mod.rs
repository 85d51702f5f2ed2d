//! Instruction-set detection and dispatch.
//!
//! What this CPU runs is detected once and cached (a bit set read with one
//! atomic load), and so is the best ISA. It can be forced
//! process-wide with the environment variable `NNKERN_ISA`
//! (`scalar`, `avx2`, `avx512`, `neon`), or for the calling thread only with
//! [`with_isa`], which is how the tests run every path the machine supports.
//! An operation reads [`active_isa`] once, on the calling thread, at entry,
//! and hands the chosen kernel to any worker threads it uses.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod math;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub(crate) mod scalar;
pub(crate) mod vector;

use crate::error::{Error, Result};
use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// A family of SIMD instructions that kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust, no explicit SIMD.
    Scalar,
    /// x86-64 AVX2 with FMA and F16C (256-bit vectors).
    Avx2,
    /// x86-64 AVX-512 F/BW/DQ/VL (512-bit vectors), plus AVX2, FMA and F16C.
    Avx512,
    /// AArch64 Advanced SIMD (128-bit vectors).
    Neon,
}

impl Isa {
    /// Every ISA, in no particular order.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// Lower-case name, as accepted by `NNKERN_ISA` and [`Isa::from_str`].
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run kernels written for `self` (detected once,
    /// then one relaxed atomic load per call).
    #[inline]
    pub fn is_supported(self) -> bool {
        supported_mask() & self.bit() != 0
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Asks the CPU (through std's own cached feature detection).
    fn detect(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.detect()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The ISAs this CPU supports, best first (the last is always `Scalar`).
    pub fn supported() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The best ISA of this CPU, honouring `NNKERN_ISA`; detected once.
    ///
    /// An `NNKERN_ISA` this CPU cannot run, or cannot parse, is ignored with a
    /// message on standard error rather than crashing later with an illegal
    /// instruction.
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let best = Isa::supported()[0];
            match std::env::var("NNKERN_ISA") {
                Ok(name) if !name.is_empty() => match name.parse::<Isa>() {
                    Ok(isa) if isa.is_supported() => isa,
                    Ok(isa) => {
                        eprintln!("nnkern: NNKERN_ISA={isa} is not supported by this CPU; using {best}");
                        best
                    }
                    Err(e) => {
                        eprintln!("nnkern: {e}; using {best}");
                        best
                    }
                },
                _ => best,
            }
        })
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = Error;
    fn from_str(s: &str) -> Result<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx512f" | "avx-512" => Ok(Isa::Avx512),
            "neon" => Ok(Isa::Neon),
            other => Err(Error::invalid(
                "isa",
                format!("unknown ISA {other:?}; expected scalar, avx2, avx512 or neon"),
            )),
        }
    }
}

/// The ISAs this CPU runs, one bit each ([`Isa::bit`]), detected at the
/// first call and cached; bit 7 marks the cache as filled. Every dispatch
/// (an element-wise kernel's token, the GEMM's kernel table) checks its ISA
/// here, so detection is never repeated per call. Threads racing on the
/// first call compute the same value.
fn supported_mask() -> u8 {
    const FILLED: u8 = 1 << 7;
    static MASK: AtomicU8 = AtomicU8::new(0);
    let m = MASK.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    let m = Isa::ALL
        .into_iter()
        .filter(|isa| isa.detect())
        .fold(FILLED, |m, isa| m | isa.bit());
    MASK.store(m, Ordering::Relaxed);
    m
}

thread_local! {
    static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// The ISA operations called from this thread use now: the one forced by
/// [`with_isa`] if any, else [`Isa::detected`].
pub fn active_isa() -> Isa {
    FORCED.with(|f| f.get()).unwrap_or_else(Isa::detected)
}

/// Runs `f` with every nnkern operation called from this thread using `isa`.
///
/// Returns an error, without running `f`, when this CPU cannot run `isa`.
///
/// ```
/// use nnkern::{with_isa, active_isa, Isa};
/// let used = with_isa(Isa::Scalar, || active_isa())?;
/// assert_eq!(used, Isa::Scalar);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> Result<R> {
    if !isa.is_supported() {
        return Err(Error::Unsupported {
            arg: "isa",
            what: format!("{isa} is not supported by this CPU"),
        });
    }
    struct Restore(Option<Isa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|f| f.replace(Some(isa))));
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_supported_and_last() {
        let s = Isa::supported();
        assert_eq!(*s.last().unwrap(), Isa::Scalar);
        assert!(s.contains(&Isa::detected()) || std::env::var("NNKERN_ISA").is_ok());
    }

    #[test]
    fn with_isa_forces_and_restores() {
        let before = active_isa();
        with_isa(Isa::Scalar, || {
            assert_eq!(active_isa(), Isa::Scalar);
        })
        .unwrap();
        assert_eq!(active_isa(), before);
    }

    #[test]
    fn cached_support_matches_fresh_detection() {
        for isa in Isa::ALL {
            assert_eq!(isa.is_supported(), isa.detect(), "{isa}");
        }
        assert!(Isa::Scalar.is_supported());
    }

    #[test]
    fn unsupported_isa_is_an_error() {
        for isa in Isa::ALL {
            assert_eq!(with_isa(isa, || ()).is_ok(), isa.is_supported());
        }
    }

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
        }
        assert!("sse9".parse::<Isa>().is_err());
    }
}
