//! Shapes, inputs, error bounds and checks shared by the CUDA tests
//! (`tests/cuda.rs`, `tests/ptx_kernels.rs`).
#![allow(dead_code)]

mod tol;
#[allow(unused_imports)]
pub use tol::*;

/// A small deterministic generator (xorshift64*), so a failing case is
/// reproduced from its seed alone.
#[derive(Debug, Clone)]
pub struct KRng(u64);

impl KRng {
    pub fn new(seed: u64) -> Self {
        KRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[lo, hi)`.
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32_in(lo, hi)).collect()
    }
}

/// GEMM problem: `C (m×n) = alpha·op(A)·op(B) + beta·C`; `ta`/`tb` store A/B
/// transposed in memory (so every load mapping of the kernels runs).
#[derive(Debug, Clone, Copy)]
pub struct GemmCase {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ta: bool,
    pub tb: bool,
    pub alpha: f32,
    pub beta: f32,
}

/// Fixed cases: several tiles plus ragged edges in every dimension, both
/// transposes, beta 0 (C poisoned with NaN) and not, alpha 0 (A, B poisoned).
pub fn gemm_cases() -> Vec<GemmCase> {
    let mut v = Vec::new();
    let shapes = [
        (1, 1, 1),
        (128, 128, 32),
        (129, 130, 17),
        (257, 64, 40),
        (64, 300, 33),
        (3, 129, 8),
        (200, 7, 100),
        (130, 260, 72),
    ];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let beta = if (i + ta as usize).is_multiple_of(2) {
                0.0
            } else {
                -0.75
            };
            v.push(GemmCase {
                m,
                n,
                k,
                ta,
                tb,
                alpha: 1.25,
                beta,
            });
        }
    }
    v.push(GemmCase {
        m: 70,
        n: 90,
        k: 0,
        ta: false,
        tb: false,
        alpha: 1.0,
        beta: 0.5,
    });
    v.push(GemmCase {
        m: 70,
        n: 90,
        k: 20,
        ta: false,
        tb: true,
        alpha: 0.0,
        beta: 2.0,
    });
    v
}

/// Activation inputs: random values plus the special ones every kernel must
/// get right (±0, ±inf, NaN, large magnitudes, the tanh polynomial switch).
pub fn act_inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut r = KRng::new(seed);
    let specials = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-30,
        -1e-30,
        0.549_999_9,
        0.55,
        -0.55,
        20.0,
        -20.0,
        100.0,
        -100.0,
        1e20,
        -1e20,
    ];
    let mut v: Vec<f32> = (0..n).map(|_| r.f32_in(-8.0, 8.0)).collect();
    for (i, s) in specials.iter().enumerate() {
        if i < n {
            v[(i * 7919) % n] = *s;
        }
    }
    v
}

/// Matrix shapes for bias and softmax kernels: several blocks plus edges.
pub fn row_col_cases() -> Vec<(usize, usize)> {
    vec![
        (1, 1),
        (3, 5),
        (8, 10),
        (9, 33),
        (17, 64),
        (40, 129),
        (1, 300),
        (300, 3),
        (33, 1000),
    ]
}

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod ops;
#[cfg(feature = "cuda")]
#[allow(unused_imports)]
pub use device::*;
#[cfg(feature = "cuda")]
#[allow(unused_imports)]
pub use ops::*;
