//! Property tests of the reference itself: identities that any correct
//! implementation satisfies, on random shapes, strides and values.

use nnkern::reference;
use nnkern::{Activation, MatMut, MatRef, Targets};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(48),
    )
}

fn values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-4.0f32..4.0, n)
}

proptest! {
    #![proptest_config(cases())]

    /// (A·B)ᵀ = Bᵀ·Aᵀ: computing into a transposed view of C must give the
    /// same numbers, bit for bit (same products, same order).
    #[test]
    fn gemm_transpose_identity((m, k, n) in (0usize..7, 0usize..7, 0usize..7), seed in any::<u64>()) {
        let gen = |len: usize, s: u64| -> Vec<f32> {
            (0..len).map(|i| (((i as u64 + 1).wrapping_mul(s | 1) >> 40) as f32 / 8192.0) - 1.0).collect()
        };
        let a = gen(m * k, seed);
        let b = gen(k * n, seed.rotate_left(17));
        let mut c1 = vec![f32::NAN; m * n];
        let mut c2 = vec![f32::NAN; m * n];
        reference::gemm(1.5, MatRef::new(&a, m, k).unwrap(), MatRef::new(&b, k, n).unwrap(), 0.0, MatMut::new(&mut c1, m, n).unwrap()).unwrap();
        // C2 stored n×m; its transposed view is m×n.
        reference::gemm(1.5, MatRef::new(&b, k, n).unwrap().t(), MatRef::new(&a, m, k).unwrap().t(), 0.0, MatMut::new(&mut c2, n, m).unwrap()).unwrap();
        for i in 0..m {
            for j in 0..n {
                prop_assert_eq!(c1[i * n + j].to_bits(), c2[j * m + i].to_bits());
            }
        }
    }

    /// Softmax is invariant under adding a constant to a row, and its rows sum to 1.
    #[test]
    fn softmax_shift_invariance(rows in 1usize..5, cols in 1usize..12, shift in -50.0f32..50.0, x in values(60)) {
        let x = &x[..rows * cols];
        let shifted: Vec<f32> = x.iter().map(|v| v + shift).collect();
        let (mut y1, mut y2) = (vec![0.0f32; rows * cols], vec![0.0f32; rows * cols]);
        reference::softmax(MatRef::new(x, rows, cols).unwrap(), MatMut::new(&mut y1, rows, cols).unwrap()).unwrap();
        reference::softmax(MatRef::new(&shifted, rows, cols).unwrap(), MatMut::new(&mut y2, rows, cols).unwrap()).unwrap();
        for (a, b) in y1.iter().zip(&y2) {
            // The shift itself is rounded in f32 (|x + shift| ≤ 54, ulp ≤ 4e-6).
            prop_assert!((a - b).abs() <= 1e-5 * a.max(*b) + 1e-7, "{} vs {}", a, b);
        }
        for r in y1.chunks(cols) {
            prop_assert!((r.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-6);
        }
    }

    /// The fused xent gradient's rows sum to zero (softmax and target both sum to 1),
    /// and its loss equals the forward-only loss.
    #[test]
    fn xent_gradient_rows_sum_to_zero(rows in 1usize..6, cols in 1usize..11, x in values(60), labels in prop::collection::vec(any::<u32>(), 6)) {
        let x = &x[..rows * cols];
        let labels: Vec<u32> = labels[..rows].iter().map(|l| l % cols as u32).collect();
        let mut d = vec![f32::NAN; rows * cols];
        let xr = MatRef::new(x, rows, cols).unwrap();
        let loss = reference::softmax_xent(xr, Targets::Labels(&labels), MatMut::new(&mut d, rows, cols).unwrap()).unwrap();
        prop_assert_eq!(loss, reference::softmax_xent_loss(xr, Targets::Labels(&labels)).unwrap());
        for r in d.chunks(cols) {
            prop_assert!(r.iter().map(|&v| v as f64).sum::<f64>().abs() < 1e-6);
        }
    }

    /// Backward in place equals backward out of place, for every activation.
    #[test]
    fn activation_backward_inplace_matches(x in values(33), dy in values(33)) {
        for act in Activation::ALL {
            let mut dx = vec![f32::NAN; x.len()];
            reference::activation_backward(act, MatRef::row_vector(&x).unwrap(), MatRef::row_vector(&dy).unwrap(), MatMut::row_vector(&mut dx).unwrap()).unwrap();
            let mut g = dy.clone();
            reference::activation_backward_inplace(act, MatRef::row_vector(&x).unwrap(), MatMut::row_vector(&mut g).unwrap()).unwrap();
            prop_assert_eq!(&dx, &g);
        }
    }
}
