//! The naive GEMM: three loops, `f64` accumulation, one rounding at the end.

use super::{check_gemm, GemmInput};
use crate::error::Result;
use crate::matrix::{MatMut, MatRef};

/// `C = alpha·A·B + beta·C`, element by element, accumulating in `f64`.
///
/// `beta = 0` never reads `C`; `alpha = 0` or `k = 0` never reads `A`, `B`.
pub fn gemm<T: GemmInput>(
    alpha: f32,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: f32,
    mut c: MatMut<'_, f32>,
) -> Result<()> {
    let (m, n, k) = check_gemm(alpha, &a, &b, beta, &c)?;
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            if alpha != 0.0 {
                for p in 0..k {
                    acc += a[(i, p)].to_f32() as f64 * b[(p, j)].to_f32() as f64;
                }
            }
            let ab = if alpha != 0.0 { alpha as f64 * acc } else { 0.0 };
            let old = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * c[(i, j)] as f64
            };
            c[(i, j)] = (ab + old) as f32;
        }
    }
    Ok(())
}

/// The bound `|alpha|·Σ_p |a_ip|·|b_pj| + |beta|·|c_ij|` for each element
/// of `C`, row-major `m×n`: the scale against which a GEMM's rounding error
/// is measured (error ≤ γ_k · bound, γ_k ≈ k·2⁻²⁴ in the worst case,
/// ≈ √k·2⁻²⁴ typically).
pub fn gemm_error_scale<T: GemmInput>(
    alpha: f32,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: f32,
    c: MatRef<'_, f32>,
) -> Vec<f64> {
    let (m, k) = a.shape();
    let n = b.cols();
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += (a[(i, p)].to_f32() as f64 * b[(p, j)].to_f32() as f64).abs();
            }
            let cc = if beta == 0.0 {
                0.0
            } else {
                (beta as f64 * c[(i, j)] as f64).abs()
            };
            out[i * n + j] = (alpha as f64).abs() * s + cc;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn eye(n: usize) -> Vec<f32> {
        let mut v = vec![0.0; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        v
    }

    #[test]
    fn hand_computed_2x3_times_3x2() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [1.0f32; 4];
        gemm(
            2.0,
            MatRef::new(&a, 2, 3).unwrap(),
            MatRef::new(&b, 3, 2).unwrap(),
            0.5,
            MatMut::new(&mut c, 2, 2).unwrap(),
        )
        .unwrap();
        // A·B = [[58, 64], [139, 154]]
        assert_eq!(c, [116.5, 128.5, 278.5, 308.5]);
    }

    #[test]
    fn identity_leaves_matrix_unchanged_under_every_layout() {
        let n = 5;
        let x: Vec<f32> = (0..n * n).map(|v| v as f32 * 0.25 - 3.0).collect();
        let i = eye(n);
        let mut c = vec![0.0f32; n * n];
        gemm(
            1.0,
            MatRef::new(&i, n, n).unwrap(),
            MatRef::new(&x, n, n).unwrap(),
            0.0,
            MatMut::new(&mut c, n, n).unwrap(),
        )
        .unwrap();
        assert_eq!(c, x);
        // Xᵀ·I written into a column-major C gives X back in row-major memory.
        let mut c2 = vec![0.0f32; n * n];
        gemm(
            1.0,
            MatRef::new(&x, n, n).unwrap().t(),
            MatRef::new(&i, n, n).unwrap(),
            0.0,
            MatMut::col_major(&mut c2, n, n).unwrap(),
        )
        .unwrap();
        assert_eq!(c2, x);
    }

    #[test]
    fn beta_zero_does_not_read_c_and_alpha_zero_does_not_read_ab() {
        let a = [f32::NAN; 4];
        let b = [1.0f32; 4];
        let mut c = [f32::NAN; 4];
        gemm(
            1.0,
            MatRef::new(&b, 2, 2).unwrap(),
            MatRef::new(&b, 2, 2).unwrap(),
            0.0,
            MatMut::new(&mut c, 2, 2).unwrap(),
        )
        .unwrap();
        assert_eq!(c, [2.0; 4]);
        gemm(
            0.0,
            MatRef::new(&a, 2, 2).unwrap(),
            MatRef::new(&a, 2, 2).unwrap(),
            3.0,
            MatMut::new(&mut c, 2, 2).unwrap(),
        )
        .unwrap();
        assert_eq!(c, [6.0; 4]);
        // NaN in A with alpha != 0 propagates.
        gemm(
            1.0,
            MatRef::new(&a, 2, 2).unwrap(),
            MatRef::new(&b, 2, 2).unwrap(),
            0.0,
            MatMut::new(&mut c, 2, 2).unwrap(),
        )
        .unwrap();
        assert!(c.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn k_zero_scales_c() {
        let empty: [f32; 0] = [];
        let mut c = [2.0f32, -4.0];
        gemm(
            1.0,
            MatRef::new(&empty, 2, 0).unwrap(),
            MatRef::new(&empty, 0, 1).unwrap(),
            0.5,
            MatMut::new(&mut c, 2, 1).unwrap(),
        )
        .unwrap();
        assert_eq!(c, [1.0, -2.0]);
    }

    #[test]
    fn half_inputs_convert_exactly() {
        let a32 = [0.5f32, -1.25, 3.0, 0.375];
        let b32 = [2.0f32, 0.25, -0.5, 8.0];
        let ab: Vec<bf16> = a32.iter().map(|&x| bf16::from_f32(x)).collect();
        let bb: Vec<bf16> = b32.iter().map(|&x| bf16::from_f32(x)).collect();
        let ah: Vec<f16> = a32.iter().map(|&x| f16::from_f32(x)).collect();
        let bh: Vec<f16> = b32.iter().map(|&x| f16::from_f32(x)).collect();
        let (mut c1, mut c2, mut c3) = ([0.0f32; 4], [0.0f32; 4], [0.0f32; 4]);
        gemm(
            1.0,
            MatRef::new(&a32, 2, 2).unwrap(),
            MatRef::new(&b32, 2, 2).unwrap(),
            0.0,
            MatMut::new(&mut c1, 2, 2).unwrap(),
        )
        .unwrap();
        gemm(
            1.0,
            MatRef::new(&ab, 2, 2).unwrap(),
            MatRef::new(&bb, 2, 2).unwrap(),
            0.0,
            MatMut::new(&mut c2, 2, 2).unwrap(),
        )
        .unwrap();
        gemm(
            1.0,
            MatRef::new(&ah, 2, 2).unwrap(),
            MatRef::new(&bh, 2, 2).unwrap(),
            0.0,
            MatMut::new(&mut c3, 2, 2).unwrap(),
        )
        .unwrap();
        assert_eq!(c1, c2);
        assert_eq!(c1, c3);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let a = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        let r = gemm(
            1.0,
            MatRef::new(&a, 2, 3).unwrap(),
            MatRef::new(&a, 2, 3).unwrap(),
            0.0,
            MatMut::new(&mut c, 2, 2).unwrap(),
        );
        assert!(matches!(r, Err(crate::Error::ShapeMismatch { arg: "b", .. })));
        let r = gemm(
            1.0,
            MatRef::new(&a, 2, 3).unwrap(),
            MatRef::new(&a, 3, 2).unwrap(),
            0.0,
            MatMut::new(&mut c, 1, 4).unwrap(),
        );
        assert!(matches!(r, Err(crate::Error::ShapeMismatch { arg: "c", .. })));
    }
}
