//! Cache sizes of this CPU, detected once, from which the GEMM derives its
//! blocking.
//!
//! Linux exposes them under `/sys/devices/system/cpu/cpu0/cache`; elsewhere,
//! or when that is unreadable, conservative defaults apply (32 KiB L1d,
//! 1 MiB L2, 8 MiB L3). Sizes are per core for L1 and L2, and for the whole
//! (possibly shared) last level for L3.

use std::sync::OnceLock;

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
    fn detected_sizes_are_plausible() {
        let c = cache_sizes();
        assert!(c.l1d >= 4 << 10 && c.l2 >= c.l1d && c.l3 >= 64 << 10, "{c:?}");
    }
}
