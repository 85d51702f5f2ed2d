//! A minimal program using the kernels: softmax regression (one dense
//! layer) trained with Adam on a synthetic 3-class problem.
//!
//! Each step is the usual chain: `logits = X·W + b` (GEMM + bias add),
//! fused softmax-cross-entropy giving the loss and `dlogits`, then the
//! gradients `dW = Xᵀ·dlogits` (GEMM on a transposed view, no copy) and
//! `db = column sums of dlogits`, and one Adam step per parameter.
//!
//! Run: `cargo run --release --example softmax_regression`

use nnkern::{
    adam_step, bias_add, bias_grad, count_correct, gemm, softmax_xent, AdamConfig, AdamState, MatMut, MatRef, Targets,
};

fn main() -> Result<(), nnkern::Error> {
    const BATCH: usize = 96;
    const FEATURES: usize = 4;
    const CLASSES: usize = 3;

    // Class c is centred at feature c (and feature 3 is noise).
    let mut x = vec![0.0f32; BATCH * FEATURES];
    let mut labels = vec![0u32; BATCH];
    let mut seed = 12345u32;
    let mut noise = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    for i in 0..BATCH {
        let class = i % CLASSES;
        labels[i] = class as u32;
        for f in 0..FEATURES {
            x[i * FEATURES + f] = noise() + if f == class { 2.0 } else { 0.0 };
        }
    }

    let mut w = vec![0.0f32; FEATURES * CLASSES];
    let mut b = vec![0.0f32; CLASSES];
    let (mut adam_w, mut adam_b) = (AdamState::new(w.len()), AdamState::new(b.len()));
    let cfg = AdamConfig {
        lr: 0.05,
        ..AdamConfig::default()
    };
    let xv = MatRef::new(&x, BATCH, FEATURES)?;
    let mut logits = vec![0.0f32; BATCH * CLASSES];
    let mut dlogits = vec![0.0f32; BATCH * CLASSES];
    let (mut dw, mut db) = (vec![0.0f32; w.len()], vec![0.0f32; b.len()]);

    for step in 1..=60u64 {
        gemm(
            1.0,
            xv,
            MatRef::new(&w, FEATURES, CLASSES)?,
            0.0,
            MatMut::new(&mut logits, BATCH, CLASSES)?,
        )?;
        bias_add(MatMut::new(&mut logits, BATCH, CLASSES)?, &b)?;
        let loss = softmax_xent(
            MatRef::new(&logits, BATCH, CLASSES)?,
            Targets::Labels(&labels),
            MatMut::new(&mut dlogits, BATCH, CLASSES)?,
        )?;
        let dl = MatRef::new(&dlogits, BATCH, CLASSES)?;
        gemm(1.0, xv.t(), dl, 0.0, MatMut::new(&mut dw, FEATURES, CLASSES)?)?;
        bias_grad(dl, &mut db)?;
        adam_step(&cfg, &mut adam_w, step, &mut w, &dw)?;
        adam_step(&cfg, &mut adam_b, step, &mut b, &db)?;
        if step % 10 == 0 {
            let correct = count_correct(MatRef::new(&logits, BATCH, CLASSES)?, &labels)?;
            println!("step {step:3}  loss {loss:.4}  accuracy {correct}/{BATCH}");
        }
    }
    Ok(())
}
