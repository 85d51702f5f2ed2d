//! The naive activations: each value computed in `f64` and rounded once.

use super::Activation;
use crate::error::Result;
use crate::matrix::{MatMut, MatRef};
use crate::ops::softmax_xent::check_same_shape;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_CUBIC: f64 = 0.044_715;
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `f(x)` in `f64`.
pub fn forward_f64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => x,
        // `x <= 0` is false for NaN, so NaN passes through; −0 becomes +0.
        Activation::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                x
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        // The limits at ±∞ are taken exactly (the formulas give ∞·0 = NaN there).
        Activation::GeluTanh if x.is_infinite() => x.max(0.0),
        Activation::GeluTanh => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)).tanh()),
        Activation::GeluErf if x.is_infinite() => x.max(0.0),
        Activation::GeluErf => 0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2)),
    }
}

/// `f'(x)` in `f64`.
pub fn derivative_f64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if x.is_nan() {
                x
            } else if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Sigmoid => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 - s)
        }
        Activation::Tanh => {
            let t = x.tanh();
            1.0 - t * t
        }
        Activation::GeluTanh | Activation::GeluErf if x.is_infinite() => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::GeluTanh => {
            let t = (SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x)
        }
        Activation::GeluErf => {
            let cdf = 0.5 * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2));
            let pdf = FRAC_1_SQRT_2PI * (-0.5 * x * x).exp();
            cdf + x * pdf
        }
    }
}

/// `f(x)` rounded to `f32`.
pub fn forward_scalar(act: Activation, x: f32) -> f32 {
    forward_f64(act, x as f64) as f32
}

/// `dy · f'(x)` rounded to `f32`. For ReLU this is a select, not a product:
/// `dx = dy` where `x > 0` (or NaN), else 0, as the usual frameworks do.
pub fn backward_scalar(act: Activation, x: f32, dy: f32) -> f32 {
    match act {
        Activation::Relu => {
            if x <= 0.0 {
                0.0
            } else if x.is_nan() {
                x
            } else {
                dy
            }
        }
        Activation::Identity => dy,
        _ => (dy as f64 * derivative_f64(act, x as f64)) as f32,
    }
}

/// `y[i, j] = f(x[i, j])`.
pub fn activation_forward(act: Activation, x: MatRef<'_, f32>, mut y: MatMut<'_, f32>) -> Result<()> {
    check_same_shape("y", y.shape(), x.shape())?;
    for i in 0..x.rows() {
        for j in 0..x.cols() {
            y[(i, j)] = forward_scalar(act, x[(i, j)]);
        }
    }
    Ok(())
}

/// `x[i, j] = f(x[i, j])`.
pub fn activation_forward_inplace(act: Activation, mut x: MatMut<'_, f32>) -> Result<()> {
    for i in 0..x.rows() {
        for j in 0..x.cols() {
            x[(i, j)] = forward_scalar(act, x[(i, j)]);
        }
    }
    Ok(())
}

/// `dx[i, j] = dy[i, j] · f'(x[i, j])`.
pub fn activation_backward(
    act: Activation,
    x: MatRef<'_, f32>,
    dy: MatRef<'_, f32>,
    mut dx: MatMut<'_, f32>,
) -> Result<()> {
    check_same_shape("dy", dy.shape(), x.shape())?;
    check_same_shape("dx", dx.shape(), x.shape())?;
    for i in 0..x.rows() {
        for j in 0..x.cols() {
            dx[(i, j)] = backward_scalar(act, x[(i, j)], dy[(i, j)]);
        }
    }
    Ok(())
}

/// `grad[i, j] = grad[i, j] · f'(x[i, j])`.
pub fn activation_backward_inplace(act: Activation, x: MatRef<'_, f32>, mut grad: MatMut<'_, f32>) -> Result<()> {
    check_same_shape("grad", grad.shape(), x.shape())?;
    for i in 0..x.rows() {
        for j in 0..x.cols() {
            grad[(i, j)] = backward_scalar(act, x[(i, j)], grad[(i, j)]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_values() {
        assert_eq!(forward_scalar(Activation::Relu, -2.0), 0.0);
        assert_eq!(forward_scalar(Activation::Relu, 3.0), 3.0);
        assert!(forward_scalar(Activation::Relu, f32::NAN).is_nan());
        assert_eq!(forward_scalar(Activation::Sigmoid, 0.0), 0.5);
        assert_eq!(forward_scalar(Activation::Tanh, 0.0), 0.0);
        // GELU(1) = 0.5·(1 + erf(1/√2)) = 0.841344746...
        assert!((forward_f64(Activation::GeluErf, 1.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
        // tanh form at 1: 0.5·(1 + tanh(0.7978845608·1.044715)) = 0.841191990...
        assert!((forward_f64(Activation::GeluTanh, 1.0) - 0.841_191_990_607_898_4).abs() < 1e-12);
        assert_eq!(forward_scalar(Activation::GeluErf, f32::NEG_INFINITY), 0.0);
        assert_eq!(forward_scalar(Activation::GeluTanh, f32::INFINITY), f32::INFINITY);
        assert_eq!(forward_scalar(Activation::Sigmoid, f32::NEG_INFINITY), 0.0);
        assert_eq!(forward_scalar(Activation::Sigmoid, f32::INFINITY), 1.0);
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for act in Activation::ALL {
            for &x in &[-3.1, -1.0, -0.3, 0.2, 0.9, 2.5] {
                let h = 1e-6;
                let fd = (forward_f64(act, x + h) - forward_f64(act, x - h)) / (2.0 * h);
                let d = derivative_f64(act, x);
                assert!((fd - d).abs() < 1e-8, "{act} at {x}: {fd} vs {d}");
            }
        }
    }

    #[test]
    fn relu_backward_is_a_select() {
        assert!(backward_scalar(Activation::Relu, 1.0, f32::NAN).is_nan());
        assert_eq!(backward_scalar(Activation::Relu, -1.0, f32::NAN), 0.0);
        assert_eq!(backward_scalar(Activation::Relu, 0.0, 5.0), 0.0);
        assert_eq!(backward_scalar(Activation::Relu, 1e-30, 5.0), 5.0);
    }

    #[test]
    fn shapes_must_agree() {
        let mut y = [0.0f32; 2];
        const X3: [f32; 3] = [1.0; 3];
        let x3 = &X3;
        let r = |s: &'static [f32]| MatRef::row_vector(s).unwrap();
        assert!(activation_forward(Activation::Tanh, r(x3), MatMut::new(&mut y, 1, 2).unwrap()).is_err());
        assert!(activation_backward(
            Activation::Tanh,
            r(&[1.0; 2]),
            r(x3),
            MatMut::new(&mut y, 1, 2).unwrap()
        )
        .is_err());
        assert!(activation_forward(Activation::Tanh, r(&[]), MatMut::new(&mut [], 1, 0).unwrap()).is_ok());
    }
}
