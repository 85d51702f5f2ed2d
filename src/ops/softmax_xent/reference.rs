//! The naive softmax and cross-entropy, row by row in `f64`.

use super::{check_same_shape, check_xent, Targets};
use crate::error::Result;
use crate::matrix::{MatMut, MatRef};

/// `(max, ln Σ exp(x − max))` of row `i`, in `f64`.
fn row_max_and_log_sum(x: &MatRef<'_, f32>, i: usize) -> (f64, f64) {
    let max = (0..x.cols())
        .map(|j| x[(i, j)] as f64)
        .fold(f64::NEG_INFINITY, |m, v| if v > m || v.is_nan() { v } else { m });
    let sum: f64 = (0..x.cols()).map(|j| (x[(i, j)] as f64 - max).exp()).sum();
    (max, sum.ln())
}

/// `y = softmax(x)` row by row.
pub fn softmax(x: MatRef<'_, f32>, mut y: MatMut<'_, f32>) -> Result<()> {
    check_same_shape("y", y.shape(), x.shape())?;
    for i in 0..x.rows() {
        let (max, log_sum) = row_max_and_log_sum(&x, i);
        for j in 0..x.cols() {
            y[(i, j)] = (x[(i, j)] as f64 - max - log_sum).exp() as f32;
        }
    }
    Ok(())
}

/// `y = log(softmax(x))` row by row.
pub fn log_softmax(x: MatRef<'_, f32>, mut y: MatMut<'_, f32>) -> Result<()> {
    check_same_shape("y", y.shape(), x.shape())?;
    for i in 0..x.rows() {
        let (max, log_sum) = row_max_and_log_sum(&x, i);
        for j in 0..x.cols() {
            y[(i, j)] = (x[(i, j)] as f64 - max - log_sum) as f32;
        }
    }
    Ok(())
}

fn target(targets: &Targets<'_>, i: usize, j: usize) -> f64 {
    match targets {
        Targets::Labels(l) => f64::from(u8::from(l[i] as usize == j)),
        Targets::Soft(t) => t[(i, j)] as f64,
    }
}

fn loss_sum(logits: &MatRef<'_, f32>, targets: &Targets<'_>) -> f64 {
    let mut total = 0.0f64;
    for i in 0..logits.rows() {
        let (max, log_sum) = row_max_and_log_sum(logits, i);
        let lse = max + log_sum;
        total += match targets {
            Targets::Labels(l) => lse - logits[(i, l[i] as usize)] as f64,
            Targets::Soft(t) => (0..logits.cols())
                .map(|j| t[(i, j)] as f64 * (lse - logits[(i, j)] as f64))
                .sum(),
        };
    }
    total
}

/// Mean cross-entropy of `softmax(logits)` against `targets` (0 for an empty batch).
pub fn softmax_xent_loss(logits: MatRef<'_, f32>, targets: Targets<'_>) -> Result<f32> {
    let (rows, _) = check_xent(&logits, &targets, None)?;
    if rows == 0 {
        return Ok(0.0);
    }
    Ok((loss_sum(&logits, &targets) / rows as f64) as f32)
}

/// Mean loss, and `dlogits = (softmax(logits) − target) / batch`.
pub fn softmax_xent(logits: MatRef<'_, f32>, targets: Targets<'_>, mut dlogits: MatMut<'_, f32>) -> Result<f32> {
    let (rows, cols) = check_xent(&logits, &targets, Some(&dlogits))?;
    if rows == 0 {
        return Ok(0.0);
    }
    let inv_batch = 1.0 / rows as f64;
    for i in 0..rows {
        let (max, log_sum) = row_max_and_log_sum(&logits, i);
        for j in 0..cols {
            let p = (logits[(i, j)] as f64 - max - log_sum).exp();
            dlogits[(i, j)] = ((p - target(&targets, i, j)) * inv_batch) as f32;
        }
    }
    Ok((loss_sum(&logits, &targets) * inv_batch) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_sum_to_one_and_match_hand_values() {
        let x = [1.0f32, 2.0, 3.0, -1e4, 0.0, 1e4];
        let mut y = [0.0f32; 6];
        softmax(MatRef::new(&x, 2, 3).unwrap(), MatMut::new(&mut y, 2, 3).unwrap()).unwrap();
        // e^1, e^2, e^3 normalised: 0.09003057, 0.24472847, 0.66524096
        assert!((y[0] - 0.090_030_57).abs() < 1e-7);
        assert!((y[1] - 0.244_728_47).abs() < 1e-7);
        assert!((y[2] - 0.665_240_96).abs() < 1e-7);
        assert_eq!(&y[3..], &[0.0, 0.0, 1.0]);
        for r in y.chunks(3) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let mut l = [0.0f32; 6];
        log_softmax(MatRef::new(&x, 2, 3).unwrap(), MatMut::new(&mut l, 2, 3).unwrap()).unwrap();
        assert!((l[2] - (-0.407_605_96)).abs() < 1e-6);
        assert_eq!(l[5], 0.0);
        assert_eq!(l[3], -2e4);
    }

    #[test]
    fn loss_of_uniform_logits_is_log_classes() {
        let x = [0.5f32; 10 * 4];
        let labels = [0u32, 3, 9, 1];
        let loss = softmax_xent_loss(MatRef::new(&x, 4, 10).unwrap().t().t(), Targets::Labels(&labels)).unwrap();
        assert!((loss as f64 - 10f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn labels_and_one_hot_agree() {
        let x: Vec<f32> = (0..12).map(|v| (v as f32 * 0.7).sin() * 3.0).collect();
        let labels = [2u32, 0, 3];
        let mut onehot = [0.0f32; 12];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * 4 + l as usize] = 1.0;
        }
        let xr = MatRef::new(&x, 3, 4).unwrap();
        let (mut d1, mut d2) = ([0.0f32; 12], [0.0f32; 12]);
        let l1 = softmax_xent(xr, Targets::Labels(&labels), MatMut::new(&mut d1, 3, 4).unwrap()).unwrap();
        let l2 = softmax_xent(
            xr,
            Targets::Soft(MatRef::new(&onehot, 3, 4).unwrap()),
            MatMut::new(&mut d2, 3, 4).unwrap(),
        )
        .unwrap();
        assert_eq!(l1, l2);
        assert_eq!(d1, d2);
    }

    #[test]
    fn gradient_matches_finite_differences_of_the_loss() {
        let x: Vec<f32> = (0..15).map(|v| ((v * 7 % 11) as f32 - 5.0) * 0.4).collect();
        let mut soft = [0.0f32; 15];
        for i in 0..3 {
            soft[i * 5] = 0.25;
            soft[i * 5 + i + 1] = 0.75;
        }
        for targets in [
            Targets::Labels(&[4, 0, 2]),
            Targets::Soft(MatRef::new(&soft, 3, 5).unwrap()),
        ] {
            let mut d = [0.0f32; 15];
            softmax_xent(
                MatRef::new(&x, 3, 5).unwrap(),
                targets,
                MatMut::new(&mut d, 3, 5).unwrap(),
            )
            .unwrap();
            for k in 0..15 {
                let h = 1e-3f64;
                let f = |delta: f64| {
                    let xd: Vec<f32> = x
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| if i == k { (v as f64 + delta) as f32 } else { v })
                        .collect();
                    loss_sum(&MatRef::new(&xd, 3, 5).unwrap(), &targets) / 3.0
                };
                // Central difference on f32-representable steps.
                let up = ((x[k] as f64 + h) as f32) as f64 - x[k] as f64;
                let dn = x[k] as f64 - ((x[k] as f64 - h) as f32) as f64;
                let fd = (f(up) - f(-dn)) / (up + dn);
                assert!((fd - d[k] as f64).abs() < 1e-5, "element {k}: fd {fd} vs {}", d[k]);
            }
        }
    }

    #[test]
    fn large_logits_are_stable() {
        let x = [1e4f32, -1e4, 0.0];
        let mut d = [0.0f32; 3];
        let loss = softmax_xent(
            MatRef::new(&x, 1, 3).unwrap(),
            Targets::Labels(&[1]),
            MatMut::new(&mut d, 1, 3).unwrap(),
        )
        .unwrap();
        assert_eq!(loss, 2e4);
        assert_eq!(d, [1.0, -1.0, 0.0]);
    }

    #[test]
    fn bad_labels_and_shapes_are_errors() {
        let x = [0.0f32; 6];
        let xr = MatRef::new(&x, 2, 3).unwrap();
        assert!(matches!(
            softmax_xent_loss(xr, Targets::Labels(&[0, 3])),
            Err(crate::Error::LabelOutOfRange {
                index: 1,
                label: 3,
                classes: 3,
                ..
            })
        ));
        assert!(softmax_xent_loss(xr, Targets::Labels(&[0])).is_err());
        let mut d = [0.0f32; 6];
        assert!(softmax_xent(xr, Targets::Labels(&[0, 1]), MatMut::new(&mut d, 3, 2).unwrap()).is_err());
        assert_eq!(
            softmax_xent_loss(MatRef::new(&x[..0], 0, 3).unwrap(), Targets::Labels(&[])).unwrap(),
            0.0
        );
        assert!(softmax_xent_loss(MatRef::new(&x[..0], 2, 0).unwrap(), Targets::Labels(&[0, 0])).is_err());
    }
}
