//! Bad input through the public API: a clear error naming the argument,
//! never a panic.

use nnkern::*;

#[test]
fn gemm_rejects_mismatched_inner_dimension_naming_b() {
    let a = [1.0f32; 6];
    let mut c = [0.0f32; 4];
    let err = gemm(
        1.0,
        MatRef::new(&a, 2, 3).unwrap(),
        MatRef::new(&a, 2, 3).unwrap(),
        0.0,
        MatMut::new(&mut c, 2, 2).unwrap(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("b") && msg.contains("2x3") && msg.contains("3x3"), "{msg}");
}

#[test]
fn views_reject_short_buffers_overflow_and_self_overlap() {
    let a = [0.0f32; 10];
    let e = MatRef::from_strides_named("a", &a, 3, 4, 4, 1).unwrap_err();
    assert_eq!(e.to_string(), "a: buffer holds 10 elements but the view needs 12");
    assert!(matches!(
        MatRef::from_strides(&a, 2, 2, usize::MAX, 1),
        Err(Error::Overflow { .. })
    ));
    let mut c = [0.0f32; 10];
    assert!(matches!(
        MatMut::from_strides_named("c", &mut c, 2, 3, 2, 1),
        Err(Error::Aliasing { arg: "c", .. })
    ));
}

#[test]
fn zero_sized_operations_are_valid() {
    let empty: [f32; 0] = [];
    let mut c = [7.0f32; 3];
    // K = 0 scales C by beta.
    gemm(
        1.0,
        MatRef::new(&empty, 3, 0).unwrap(),
        MatRef::new(&empty, 0, 1).unwrap(),
        2.0,
        MatMut::new(&mut c, 3, 1).unwrap(),
    )
    .unwrap();
    assert_eq!(c, [14.0; 3]);
    gemm(
        1.0,
        MatRef::new(&empty, 0, 5).unwrap(),
        MatRef::new(&empty, 5, 0).unwrap(),
        2.0,
        MatMut::new(&mut [], 0, 0).unwrap(),
    )
    .unwrap();
    activation_forward_inplace(Activation::GeluErf, MatMut::row_vector(&mut []).unwrap()).unwrap();
    bias_add(MatMut::new(&mut [], 0, 3).unwrap(), &[1.0, 2.0, 3.0]).unwrap();
    adam_step(&AdamConfig::default(), &mut AdamState::new(0), 1, &mut [], &[]).unwrap();
    assert_eq!(global_norm(&[]).unwrap(), 0.0);
}

#[test]
fn labels_out_of_range_are_reported_with_position() {
    let x = [0.0f32; 8];
    let e = softmax_xent_loss(MatRef::new(&x, 2, 4).unwrap(), Targets::Labels(&[1, 4])).unwrap_err();
    assert_eq!(e.to_string(), "labels[1] = 4 is out of range for 4 classes");
}

#[test]
fn non_finite_hyperparameters_are_rejected() {
    let mut w = [0.0f32; 1];
    let mut state = AdamState::new(1);
    for cfg in [
        AdamConfig {
            lr: f32::NAN,
            ..AdamConfig::default()
        },
        AdamConfig {
            eps: 0.0,
            ..AdamConfig::default()
        },
        AdamConfig {
            beta1: f32::INFINITY,
            ..AdamConfig::default()
        },
        AdamConfig {
            weight_decay: -1.0,
            ..AdamConfig::default()
        },
    ] {
        assert!(matches!(
            adam_step(&cfg, &mut state, 1, &mut w, &[1.0]),
            Err(Error::InvalidValue { .. })
        ));
    }
    assert!(sgd_step(
        &SgdConfig {
            lr: f32::INFINITY,
            ..SgdConfig::default()
        },
        &mut SgdState::new(1),
        &mut w,
        &[1.0]
    )
    .is_err());
    assert!(clip_global_norm(&mut [&mut w[..]], f32::NAN).is_err());
}

#[test]
fn nan_and_inf_in_data_propagate() {
    let x = [f32::NAN, 1.0, f32::INFINITY, -1.0];
    let mut y = [0.0f32; 4];
    activation_forward(
        Activation::Tanh,
        MatRef::row_vector(&x).unwrap(),
        MatMut::row_vector(&mut y).unwrap(),
    )
    .unwrap();
    assert!(y[0].is_nan());
    assert_eq!(y[2], 1.0);
    let mut d = [0.0f32; 4];
    let loss = softmax_xent(
        MatRef::new(&x, 2, 2).unwrap(),
        Targets::Labels(&[0, 0]),
        MatMut::new(&mut d, 2, 2).unwrap(),
    )
    .unwrap();
    assert!(loss.is_nan());
}
