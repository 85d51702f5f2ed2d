//! General matrix multiply: `C = alpha·A·B + beta·C`.
//!
//! `A` (m×k), `B` (k×n) and `C` (m×n) are views with any strides, so
//! `op(A) = Aᵀ` is simply `a.t()`. Inputs may be `f32`, `bf16` or `f16`
//! (converted exactly to `f32`); accumulation and output are `f32`.
//!
//! BLAS conventions: `beta = 0` never reads `C` (it may hold NaN), and
//! `alpha = 0` or `k = 0` never reads `A` or `B`; `C` is then scaled by `beta`.

pub mod reference;

use crate::error::{Error, Result};
use crate::matrix::{MatMut, MatRef};
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// An element type GEMM accepts as input: `f32`, `bf16` or `f16`.
pub trait GemmInput: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Name used in messages and benchmarks.
    const NAME: &'static str;
    /// Exact conversion to `f32`.
    fn to_f32(self) -> f32;
}

impl GemmInput for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}
impl GemmInput for bf16 {
    const NAME: &'static str = "bf16";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}
impl GemmInput for f16 {
    const NAME: &'static str = "f16";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Checks the shapes of a GEMM and the scalars; returns `(m, n, k)`.
pub fn check_gemm<T>(
    alpha: f32,
    a: &MatRef<'_, T>,
    b: &MatRef<'_, T>,
    beta: f32,
    c: &MatMut<'_, f32>,
) -> Result<(usize, usize, usize)> {
    let (m, k) = a.shape();
    let (kb, n) = b.shape();
    if kb != k {
        return Err(Error::shape("b", (kb, n), (k, n)));
    }
    if c.shape() != (m, n) {
        return Err(Error::shape("c", c.shape(), (m, n)));
    }
    // NaN/Inf scalars are allowed: they propagate as IEEE arithmetic does.
    let _ = (alpha, beta);
    Ok((m, n, k))
}

/// `C = alpha·A·B + beta·C` with the fastest kernel for this CPU.
///
/// ```
/// use nnkern::{gemm, MatRef, MatMut};
/// let a = [1.0f32, 2.0, 3.0, 4.0];             // 2×2
/// let b = [5.0f32, 6.0, 7.0, 8.0];             // 2×2
/// let mut c = [0.0f32; 4];
/// gemm(1.0, MatRef::new(&a, 2, 2)?, MatRef::new(&b, 2, 2)?.t(), 0.0, MatMut::new(&mut c, 2, 2)?)?;
/// assert_eq!(c, [17.0, 23.0, 39.0, 53.0]);     // A·Bᵀ
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn gemm<T: GemmInput>(alpha: f32, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: f32, c: MatMut<'_, f32>) -> Result<()> {
    reference::gemm(alpha, a, b, beta, c)
}
