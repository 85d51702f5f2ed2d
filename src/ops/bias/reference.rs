//! The naive bias operations.

use super::check_bias;
use crate::error::Result;
use crate::matrix::{MatMut, MatRef};
use crate::ops::activation::{
    reference::{backward_scalar, forward_scalar},
    Activation,
};
use crate::ops::softmax_xent::check_same_shape;

/// `x[i, j] += bias[j]`.
pub fn bias_add(mut x: MatMut<'_, f32>, bias: &[f32]) -> Result<()> {
    check_bias("bias", bias.len(), x.cols())?;
    for i in 0..x.rows() {
        for (j, &b) in bias.iter().enumerate() {
            x[(i, j)] += b;
        }
    }
    Ok(())
}

/// `x += bias` (broadcast over rows), then `y = f(x)`.
pub fn bias_add_activation(
    act: Activation,
    mut x: MatMut<'_, f32>,
    bias: &[f32],
    mut y: MatMut<'_, f32>,
) -> Result<()> {
    check_bias("bias", bias.len(), x.cols())?;
    check_same_shape("y", y.shape(), x.shape())?;
    for i in 0..x.rows() {
        for (j, &b) in bias.iter().enumerate() {
            x[(i, j)] += b;
            y[(i, j)] = forward_scalar(act, x[(i, j)]);
        }
    }
    Ok(())
}

/// `dbias[j] = Σ_i dy[i, j]`, summed in `f64`.
pub fn bias_grad(dy: MatRef<'_, f32>, dbias: &mut [f32]) -> Result<()> {
    check_bias("dbias", dbias.len(), dy.cols())?;
    for (j, db) in dbias.iter_mut().enumerate() {
        *db = (0..dy.rows()).map(|i| dy[(i, j)] as f64).sum::<f64>() as f32;
    }
    Ok(())
}

/// `grad = grad · f'(x)` element by element, then `dbias[j] = Σ_i grad[i, j]` in `f64`.
pub fn activation_backward_bias_grad(
    act: Activation,
    x: MatRef<'_, f32>,
    mut grad: MatMut<'_, f32>,
    dbias: &mut [f32],
) -> Result<()> {
    check_same_shape("grad", grad.shape(), x.shape())?;
    check_bias("dbias", dbias.len(), x.cols())?;
    for i in 0..x.rows() {
        for j in 0..x.cols() {
            grad[(i, j)] = backward_scalar(act, x[(i, j)], grad[(i, j)]);
        }
    }
    bias_grad(grad.rb(), dbias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_grad_by_hand() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        bias_add(MatMut::new(&mut x, 2, 3).unwrap(), &[10.0, 20.0, 30.0]).unwrap();
        assert_eq!(x, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let mut db = [f32::NAN; 3];
        bias_grad(MatRef::new(&x, 2, 3).unwrap(), &mut db).unwrap();
        assert_eq!(db, [25.0, 47.0, 69.0]);
        // Column sums of the transposed view are row sums.
        let mut db2 = [0.0f32; 2];
        bias_grad(MatRef::new(&x, 2, 3).unwrap().t(), &mut db2).unwrap();
        assert_eq!(db2, [66.0, 75.0]);
    }

    #[test]
    fn fused_epilogue_is_add_then_activation() {
        let mut x = [-1.0f32, 2.0, 0.5, -3.0];
        let mut y = [f32::NAN; 4];
        bias_add_activation(
            Activation::Relu,
            MatMut::new(&mut x, 2, 2).unwrap(),
            &[0.5, -1.0],
            MatMut::new(&mut y, 2, 2).unwrap(),
        )
        .unwrap();
        assert_eq!(x, [-0.5, 1.0, 1.0, -4.0]);
        assert_eq!(y, [0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn wrong_bias_length_is_an_error() {
        let mut x = [0.0f32; 6];
        assert!(bias_add(MatMut::new(&mut x, 2, 3).unwrap(), &[1.0; 2]).is_err());
        let mut db = [0.0f32; 4];
        assert!(bias_grad(MatRef::new(&x, 2, 3).unwrap(), &mut db).is_err());
        // Zero rows: the gradient is zero.
        let mut db = [1.0f32; 3];
        bias_grad(MatRef::new(&x[..0], 0, 3).unwrap(), &mut db).unwrap();
        assert_eq!(db, [0.0; 3]);
    }
}
