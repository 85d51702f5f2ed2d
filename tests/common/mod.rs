//! Shapes, inputs and checks shared by the kernel tests: the GPU tests
//! (`tests/cuda.rs`) and the tests that run the PTX on the CPU use the same
//! cases and the same tolerances.
#![allow(dead_code)]

use nnkern::reference;
use nnkern::{Activation, MatMut, MatRef};

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

/// Sizes that straddle the kernels' tiles: 128-wide GEMM blocks, 8/32-deep K
/// steps, 256-thread element blocks, 32-column bias blocks, 8-row softmax blocks.
pub const EDGE_SIZES: [usize; 10] = [1, 2, 7, 8, 31, 33, 127, 128, 129, 257];

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

/// Inputs for a GEMM case, as f32 values exactly representable in `bf16`
/// when `bf16_exact` (so one set of values serves every input type).
pub struct GemmData {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
    pub bias: Vec<f32>,
}

pub fn gemm_data(case: &GemmCase, seed: u64, bf16_exact: bool) -> GemmData {
    let mut r = KRng::new(seed);
    let mut gen = |n: usize| -> Vec<f32> {
        r.vec(n, -2.0, 2.0)
            .into_iter()
            .map(|x| {
                if bf16_exact {
                    nnkern::bf16::from_f32(x).to_f32()
                } else {
                    x
                }
            })
            .collect()
    };
    let a = gen(case.m * case.k);
    let b = gen(case.k * case.n);
    let mut c = gen(case.m * case.n);
    if case.beta == 0.0 {
        c.iter_mut().for_each(|x| *x = f32::NAN);
    }
    let bias = gen(case.n);
    GemmData { a, b, c, bias }
}

/// Views of A (m×k) and B (k×n) over `data`, transposed in memory when asked.
pub fn gemm_views<'a, T>(case: &GemmCase, a: &'a [T], b: &'a [T]) -> (MatRef<'a, T>, MatRef<'a, T>) {
    let (m, n, k) = (case.m, case.n, case.k);
    let av = if case.ta {
        MatRef::new(a, k, m).unwrap().t()
    } else {
        MatRef::new(a, m, k).unwrap()
    };
    let bv = if case.tb {
        MatRef::new(b, n, k).unwrap().t()
    } else {
        MatRef::new(b, k, n).unwrap()
    };
    (av, bv)
}

/// The reference result of a case (row-major `m×n`) and the per-element error
/// scale `|alpha|·Σ|a||b| + |beta·c|`.
pub fn gemm_expected(case: &GemmCase, d: &GemmData) -> (Vec<f32>, Vec<f64>) {
    let (av, bv) = gemm_views(case, &d.a, &d.b);
    let mut c = d.c.clone();
    let scale = reference::gemm_error_scale(
        case.alpha,
        av,
        bv,
        case.beta,
        MatRef::new(&d.c, case.m, case.n).unwrap(),
    );
    reference::gemm(
        case.alpha,
        av,
        bv,
        case.beta,
        MatMut::new(&mut c, case.m, case.n).unwrap(),
    )
    .unwrap();
    (c, scale)
}

/// Compares `got` to `want` element by element: NaN must meet NaN, infinities
/// must be equal, everything else within `tol(i)`. Returns the first mismatch.
pub fn check_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g as f64 - w as f64).abs() <= tol(i)
        };
        if !ok {
            return Err(format!(
                "{what}[{i}]: got {g:e}, expected {w:e} (tolerance {:e})",
                tol(i)
            ));
        }
    }
    Ok(())
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

/// Activation tolerance (see activation.ptx): `2e-6 + 2e-5·|ref|`.
pub fn act_tol(want: f32) -> f64 {
    2e-6 + 2e-5 * (want as f64).abs()
}

pub fn act_forward_expected(act: Activation, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| reference::forward_scalar(act, v)).collect()
}

pub fn act_backward_expected(act: Activation, x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(dy)
        .map(|(&v, &d)| reference::backward_scalar(act, v, d))
        .collect()
}

/// Backward tolerance: the forward one on `f'(x)`, scaled by `|dy|`.
pub fn act_backward_tol(act: Activation, x: f32, dy: f32) -> f64 {
    let d = reference::derivative_f64(act, x as f64);
    (2e-6 + 2e-5 * d.abs()) * (dy.abs() as f64).max(1.0)
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

/// The SGEMM kernel's layout flags, the rule src/cuda/ops.rs applies: bit 0 A's
/// m index contiguous, bit 1 B's n index contiguous, bits 2/3 A/B loads can be
/// aligned 128-bit loads (contiguous stride 1, the other a multiple of 4, base
/// 16-byte aligned).
pub fn sgemm_flags(a: (usize, usize), b: (usize, usize), pa: u64, pb: u64) -> u32 {
    let a_mfast = a.0 == 1 && a.1 != 1;
    let b_nfast = b.1 == 1 || b.0 != 1;
    let (a_contig, a_other) = if a_mfast { a } else { (a.1, a.0) };
    let (b_contig, b_other) = if b_nfast { (b.1, b.0) } else { b };
    let a_vec = a_contig == 1 && a_other % 4 == 0 && pa.is_multiple_of(16);
    let b_vec = b_contig == 1 && b_other % 4 == 0 && pb.is_multiple_of(16);
    u32::from(a_mfast) | (u32::from(b_nfast) << 1) | (u32::from(a_vec) << 2) | (u32::from(b_vec) << 3)
}

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
#[allow(unused_imports)]
pub use device::*;
