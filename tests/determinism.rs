//! The determinism guarantee: the same input values, shapes, strides, ISA
//! and thread count give bitwise-identical results from every kernel,
//! wherever the buffers lie in memory and however often it is called.
//!
//! Each kernel runs on every ISA this CPU supports, with 1, 2 and 4 threads
//! (the split threshold lowered so the threaded paths run), on shapes large
//! enough to take the blocked paths;
//! the inputs are copied to a buffer at another alignment for the second
//! call, and the outputs start from different garbage.

use nnkern::testing::force_min_per_task;
use nnkern::{
    activation_backward, activation_forward, adam_step, bias_add_activation, bias_grad, clip_global_norm, gemm,
    global_norm, log_softmax, sgd_step, softmax, softmax_xent, with_isa, with_threads, Activation, AdamConfig,
    AdamState, MatMut, MatRef, SgdConfig, SgdState, Targets,
};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

/// `v` copied to a buffer starting `shift` elements into its allocation,
/// so the second call sees the same values at another alignment.
fn shifted(v: &[f32], shift: usize) -> (Vec<f32>, usize) {
    let mut buf = vec![f32::NAN; v.len() + shift];
    buf[shift..].copy_from_slice(v);
    (buf, shift)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `f(shift, garbage)` twice per ISA and thread count and compares.
fn check(name: &str, f: impl Fn(usize, f32) -> Vec<u32>) {
    for isa in nnkern::testing::test_isas() {
        for threads in [1, 2, 4] {
            force_min_per_task((threads > 1).then_some(4096));
            let run = |shift, garbage| with_threads(threads, || with_isa(isa, || f(shift, garbage)).unwrap()).unwrap();
            let first = run(0, 0.0);
            let second = run(3, f32::NAN);
            force_min_per_task(None);
            assert!(first == second, "{name} [{isa}, {threads} threads] not reproducible");
        }
    }
}

#[test]
fn gemm_is_deterministic() {
    let (m, n, k) = (301, 263, 517);
    let a = data(m * k, 1);
    let b = data(k * n, 2);
    let c0 = data(m * n, 3);
    for (ta, tb) in [(false, false), (true, true)] {
        check(&format!("gemm ta={ta} tb={tb}"), |shift, _| {
            let (ab, s) = shifted(&a, shift);
            let (bb, _) = shifted(&b, shift);
            let av = if ta {
                MatRef::new(&ab[s..], k, m).unwrap().t()
            } else {
                MatRef::new(&ab[s..], m, k).unwrap()
            };
            let bv = if tb {
                MatRef::new(&bb[s..], n, k).unwrap().t()
            } else {
                MatRef::new(&bb[s..], k, n).unwrap()
            };
            let mut c = c0.clone();
            gemm(0.75, av, bv, 0.5, MatMut::new(&mut c, m, n).unwrap()).unwrap();
            bits(&c)
        });
    }
    let ah: Vec<nnkern::f16> = a.iter().map(|&x| nnkern::f16::from_f32(x)).collect();
    let bh: Vec<nnkern::f16> = b.iter().map(|&x| nnkern::f16::from_f32(x)).collect();
    check("gemm f16", |_, garbage| {
        let mut c = vec![garbage; m * n];
        gemm(
            1.0,
            MatRef::new(&ah, m, k).unwrap(),
            MatRef::new(&bh, k, n).unwrap(),
            0.0,
            MatMut::new(&mut c, m, n).unwrap(),
        )
        .unwrap();
        bits(&c)
    });
}

#[test]
fn elementwise_kernels_are_deterministic() {
    let n = 100_003;
    let x = data(n, 4);
    let dy = data(n, 5);
    for act in Activation::ALL {
        check(&format!("{act}"), |shift, garbage| {
            let (xb, s) = shifted(&x, shift);
            let (db, _) = shifted(&dy, shift);
            let mut y = vec![garbage; n];
            activation_forward(
                act,
                MatRef::row_vector(&xb[s..]).unwrap(),
                MatMut::row_vector(&mut y).unwrap(),
            )
            .unwrap();
            let mut dx = vec![garbage; n];
            activation_backward(
                act,
                MatRef::row_vector(&xb[s..]).unwrap(),
                MatRef::row_vector(&db[s..]).unwrap(),
                MatMut::row_vector(&mut dx).unwrap(),
            )
            .unwrap();
            y.extend(dx);
            bits(&y)
        });
    }
    let (rows, cols) = (517, 300);
    let x = data(rows * cols, 6);
    let bias = data(cols, 7);
    check("bias_add_activation + bias_grad", |shift, garbage| {
        let (xb, s) = shifted(&x, shift);
        let mut xm = xb[s..].to_vec();
        let mut y = vec![garbage; rows * cols];
        bias_add_activation(
            Activation::GeluTanh,
            MatMut::new(&mut xm, rows, cols).unwrap(),
            &bias,
            MatMut::new(&mut y, rows, cols).unwrap(),
        )
        .unwrap();
        let mut db = vec![garbage; cols];
        bias_grad(MatRef::new(&xb[s..], rows, cols).unwrap(), &mut db).unwrap();
        y.extend(xm);
        y.extend(db);
        bits(&y)
    });
}

#[test]
fn softmax_and_xent_are_deterministic() {
    let (rows, cols) = (257, 1001);
    let x: Vec<f32> = data(rows * cols, 8).iter().map(|v| v * 10.0).collect();
    let labels: Vec<u32> = (0..rows as u32).map(|i| (i * 37) % cols as u32).collect();
    check("softmax family", |shift, garbage| {
        let (xb, s) = shifted(&x, shift);
        let xv = MatRef::new(&xb[s..], rows, cols).unwrap();
        let mut y = vec![garbage; rows * cols];
        softmax(xv, MatMut::new(&mut y, rows, cols).unwrap()).unwrap();
        let mut l = vec![garbage; rows * cols];
        log_softmax(xv, MatMut::new(&mut l, rows, cols).unwrap()).unwrap();
        let mut d = vec![garbage; rows * cols];
        let loss = softmax_xent(xv, Targets::Labels(&labels), MatMut::new(&mut d, rows, cols).unwrap()).unwrap();
        y.extend(l);
        y.extend(d);
        y.push(loss);
        bits(&y)
    });
}

#[test]
fn optimizers_are_deterministic() {
    let n = 200_001;
    let w0 = data(n, 9);
    let g = data(n, 10);
    let m0 = data(n, 11);
    let v0: Vec<f32> = data(n, 12).iter().map(|v| v.abs()).collect();
    for cfg in [AdamConfig::default(), AdamConfig::adamw(), AdamConfig::keras()] {
        check("adam_step", |shift, _| {
            let (gb, s) = shifted(&g, shift);
            let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
            adam_step(
                &cfg,
                &mut AdamState::from_moments(&mut m[..], &mut v[..]),
                7,
                &mut w,
                &gb[s..],
            )
            .unwrap();
            w.extend(m);
            w.extend(v);
            bits(&w)
        });
    }
    check("sgd_step", |shift, _| {
        let (gb, s) = shifted(&g, shift);
        let (mut w, mut b) = (w0.clone(), m0.clone());
        sgd_step(
            &SgdConfig::default(),
            &mut SgdState::from_buffer(&mut b[..]),
            &mut w,
            &gb[s..],
        )
        .unwrap();
        w.extend(b);
        bits(&w)
    });
    check("global_norm + clip_global_norm", |shift, _| {
        let (gb, s) = shifted(&g, shift);
        let norm = global_norm(&[&gb[s..s + 1000], &gb[s + 1000..]]).unwrap();
        let mut g2 = gb[s..].to_vec();
        let (p, q) = g2.split_at_mut(777);
        let before = clip_global_norm(&mut [p, q], 1.0).unwrap();
        g2.push(norm);
        g2.push(before);
        bits(&g2)
    });
}
