//! The trainer through the library API: learning, gradients, checkpoints,
//! determinism. Small slices of the bundled digits keep it fast while the
//! kernels behind the public API may still be the naive reference.

use nnkern::{Activation, AdamConfig, SgdConfig};
use nnkern_train::{
    checkpoint::Checkpoint, mlp::Optimizer, BatchSize, Cpu, Dataset, EpochMetrics, Split, TrainConfig, Trainer,
};

fn small(n_train: usize, n_test: usize) -> Dataset {
    Dataset::bundled().unwrap().head(n_train, n_test)
}

fn cfg(hidden: &[usize], epochs: usize) -> TrainConfig {
    TrainConfig {
        hidden: hidden.to_vec(),
        epochs,
        ..TrainConfig::default()
    }
}

fn run(t: &mut Trainer<Cpu>, epochs: usize) -> Vec<EpochMetrics> {
    while t.epochs_done() < epochs {
        t.run_epoch(&mut |_| {}).unwrap();
    }
    t.history().to_vec()
}

fn same_metrics(a: &[EpochMetrics], b: &[EpochMetrics]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        // Everything but the wall time must be bitwise equal.
        assert_eq!(
            (x.epoch, x.train_loss.to_bits(), x.train_acc.to_bits()),
            (y.epoch, y.train_loss.to_bits(), y.train_acc.to_bits())
        );
        assert_eq!(x.val_loss.map(f64::to_bits), y.val_loss.map(f64::to_bits));
        assert_eq!(x.val_acc.map(f64::to_bits), y.val_acc.map(f64::to_bits));
    }
}

#[test]
fn loss_falls_and_accuracy_rises_far_above_chance() {
    let mut t = Trainer::new(cfg(&[32], 3), small(1000, 300), Cpu::new()).unwrap();
    let h = run(&mut t, 3);
    assert!(h[2].train_loss < 0.6 * h[0].train_loss, "{h:?}");
    assert!(h[2].train_acc > h[0].train_acc, "{h:?}");
    assert!(h[2].val_acc.unwrap() > 0.75, "{h:?}");
    let test = t.test().unwrap();
    // Chance is 0.1 on ten classes.
    assert!(test.acc > 0.75 && test.loss < 1.0, "{test:?}");
}

/// A tiny data set: 12 samples of 6 "pixels", 3 classes.
fn tiny() -> Dataset {
    let images: Vec<u8> = (0..12 * 6).map(|i| ((i * 37 + 11) % 256) as u8).collect();
    let labels: Vec<u32> = (0..12).map(|i| (i % 3) as u32).collect();
    Dataset {
        train: Split {
            images: images.clone(),
            labels: labels.clone(),
            features: 6,
        },
        test: Split {
            images,
            labels,
            features: 6,
        },
        classes: 3,
        source: "tiny".into(),
    }
}

#[test]
fn gradients_of_the_whole_model_match_finite_differences() {
    // Smooth activations only: a finite difference across ReLU's kink is not a derivative.
    for act in [Activation::Tanh, Activation::Sigmoid, Activation::GeluTanh] {
        let c = TrainConfig {
            hidden: vec![5, 4],
            activation: act,
            val_split: 0.0,
            batch_size: BatchSize::Full,
            seed: 7,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(c, tiny(), Cpu::reference()).unwrap();
        let base = t.checkpoint().unwrap().params;
        // Biases start at zero; move every parameter off its initial value so
        // bias gradients are exercised away from the symmetric start.
        let p0: Vec<f32> = base
            .iter()
            .enumerate()
            .map(|(i, &w)| w + 0.1 * (((i * 7919) % 13) as f32 / 13.0 - 0.5))
            .collect();
        t.set_params(&p0).unwrap();
        let (_, grad) = t.loss_and_gradients(12).unwrap();
        // Central differences in f32 with h = 1e-2: the truncation error is
        // about h^2 |f'''| / 6, ~1e-6 here, and rounding the f32 loss (ulp 6e-8
        // near 1, a few roundings through the layers) divided by 2h gives
        // ~1e-5 (observed worst: 1e-5). So 4e-5 absolute plus 1% relative,
        // against gradients up to 0.05-0.3: a wrong gradient (missing term,
        // transposed operand, wrong scale) misses by far more.
        let h = 1e-2f32;
        let mut worst = 0.0f32;
        for i in 0..p0.len() {
            let mut p = p0.clone();
            p[i] = p0[i] + h;
            t.set_params(&p).unwrap();
            let (lp, _) = t.loss_and_gradients(12).unwrap();
            p[i] = p0[i] - h;
            t.set_params(&p).unwrap();
            let (lm, _) = t.loss_and_gradients(12).unwrap();
            let fd = (lp - lm) / (2.0 * h);
            let err = (fd - grad[i]).abs();
            worst = worst.max(err);
            assert!(
                err <= 4e-5 + 1e-2 * grad[i].abs(),
                "{act}: parameter {i}: finite difference {fd}, backprop {}",
                grad[i]
            );
        }
        assert!(grad.iter().any(|g| g.abs() > 1e-3), "{act}: gradients are all ~0");
        let gmax = grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        eprintln!("{act}: worst |finite difference - backprop| = {worst:e}, max |gradient| = {gmax:e}");
        assert!(worst < 4e-5 + 1e-2 * gmax, "{act}: worst error {worst}");
    }
}

#[test]
fn fast_and_reference_backends_train_alike() {
    let c = cfg(&[16], 1);
    let lr = f64::from(AdamConfig::keras().lr);
    let batch = 32.0;
    let mut a = Trainer::new(c.clone(), small(200, 50), Cpu::new()).unwrap();
    let mut b = Trainer::new(c, small(200, 50), Cpu::reference()).unwrap();
    let (mut sa, mut sb) = (0usize, 0usize);
    a.run_epoch(&mut |_| sa += 1).unwrap();
    b.run_epoch(&mut |_| sb += 1).unwrap();
    assert_eq!(sa, sb);
    let steps = sa as f64;
    assert!(steps >= 5.0, "{steps} steps");
    let (ha, hb) = (a.history().to_vec(), b.history().to_vec());
    // The losses are means of the same per-sample terms, each within a few
    // f32 roundings of the other backend's.
    let rel = (ha[0].train_loss - hb[0].train_loss).abs() / hb[0].train_loss;
    assert!(rel < 1e-5, "{ha:?} {hb:?}");
    let (pa, pb) = (a.checkpoint().unwrap().params, b.checkpoint().unwrap().params);
    let wmax = pb.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    let max = pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max) as f64;
    // Per step, the two backends' gradients differ by at most the GEMM bound
    // (batch + 2)·u relative (u = 2⁻²⁴; products over the batch), which
    // Adam's normalised step m̂/√v̂ (of size ≤ ~lr) carries into the update
    // about twice (m and √v); each weight also rounds once per step, up to
    // an ulp of the largest weight each side. Doubled for the first-order
    // coupling between layers. Five steps give ~2e-7; one missed or extra
    // Adam step moves weights by ~lr = 1e-3.
    let u = f64::from(f32::EPSILON) / 2.0;
    let per_step = 2.0 * lr * (batch + 2.0) * u + 2.0 * 2.0 * u * wmax;
    let bound = 2.0 * steps * per_step;
    assert!(
        max <= bound,
        "max weight difference {max:e} over {steps} steps, bound {bound:e}"
    );
}

#[test]
fn same_seed_gives_bitwise_identical_runs_and_another_seed_does_not() {
    let go = |seed| {
        let mut t = Trainer::new(TrainConfig { seed, ..cfg(&[16], 2) }, small(300, 50), Cpu::new()).unwrap();
        let h = run(&mut t, 2);
        (h, t.checkpoint().unwrap().params)
    };
    let (h1, p1) = go(3);
    let (h2, p2) = go(3);
    let (_, p3) = go(4);
    same_metrics(&h1, &h2);
    assert!(p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(p1 != p3);
}

/// The default model's shapes on 1 and 2 threads: the epoch runs in a
/// parallel region, where the batch-sized products and the optimizer split
/// over both threads, and the run is bitwise that of one thread.
#[test]
fn two_threads_give_the_bits_of_one_thread() {
    let go = |threads| {
        nnkern::with_threads(threads, || {
            let mut t = Trainer::new(cfg(&[500], 1), small(800, 100), Cpu::new()).unwrap();
            let h = run(&mut t, 1);
            let s = t.test().unwrap();
            (h, t.checkpoint().unwrap(), s.loss.to_bits())
        })
        .unwrap()
    };
    let (h1, c1, s1) = go(1);
    let (h2, c2, s2) = go(2);
    same_metrics(&h1, &h2);
    assert_eq!(s1, s2);
    assert!(c1
        .params
        .iter()
        .zip(&c2.params)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(c1
        .opt_state
        .iter()
        .flatten()
        .zip(c2.opt_state.iter().flatten())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn checkpoint_round_trips_and_resume_matches_an_uninterrupted_run() {
    for optimizer in [
        Optimizer::Adam(AdamConfig::keras()),
        Optimizer::Sgd(SgdConfig::default()),
    ] {
        let c = TrainConfig {
            optimizer,
            clip_norm: Some(5.0),
            ..cfg(&[12, 8], 3)
        };
        let data = small(300, 60);
        let mut whole = Trainer::new(c.clone(), data.clone(), Cpu::new()).unwrap();
        run(&mut whole, 3);
        let end = whole.checkpoint().unwrap();

        let mut first = Trainer::new(c.clone(), data.clone(), Cpu::new()).unwrap();
        run(&mut first, 2);
        let ck = first.checkpoint().unwrap();
        let bytes = ck.to_bytes();
        let back = Checkpoint::from_bytes(&bytes, "ck").unwrap();
        assert_eq!(back, ck);
        assert_eq!(back.to_bytes(), bytes);

        let mut resumed = Trainer::resume(c.clone(), data.clone(), Cpu::new(), &back, "ck").unwrap();
        run(&mut resumed, 3);
        let end2 = resumed.checkpoint().unwrap();
        assert_eq!(end2.params, end.params);
        assert_eq!(end2.opt_state, end.opt_state);
        assert_eq!(end2.step, end.step);
        same_metrics(&end2.history, &end.history);
    }
}

#[test]
fn resume_refuses_another_shape_other_options_or_other_data() {
    let c = cfg(&[12], 1);
    let data = small(100, 20);
    let mut t = Trainer::new(c.clone(), data.clone(), Cpu::new()).unwrap();
    run(&mut t, 1);
    let ck = t.checkpoint().unwrap();
    let err = |cfg: TrainConfig, d: Dataset| {
        Trainer::resume(cfg, d, Cpu::new(), &ck, "saved.ck")
            .err()
            .expect("must be refused")
            .to_string()
    };
    let e = err(cfg(&[13], 1), data.clone());
    assert!(
        e.contains("saved.ck") && e.contains("784-12-10") && e.contains("784-13-10"),
        "{e}"
    );
    let e = err(TrainConfig { seed: 1, ..c.clone() }, data.clone());
    assert!(e.contains("--seed"), "{e}");
    let e = err(c.clone(), small(101, 20));
    assert!(e.contains("other data"), "{e}");
    // More epochs is fine: that is how a run is extended.
    assert!(Trainer::resume(cfg(&[12], 5), data, Cpu::new(), &ck, "saved.ck").is_ok());
}

#[test]
fn damaged_checkpoints_are_refused_with_the_file_named() {
    let mut t = Trainer::new(cfg(&[4], 1), small(50, 10), Cpu::new()).unwrap();
    run(&mut t, 1);
    let bytes = t.checkpoint().unwrap().to_bytes();
    let msg = |b: &[u8]| Checkpoint::from_bytes(b, "m.ck").unwrap_err().to_string();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    assert!(msg(&flipped).contains("damaged"), "{}", msg(&flipped));
    assert!(msg(&bytes[..bytes.len() - 9]).contains("m.ck"));
    assert!(msg(b"hello world, not a checkpoint").contains("not an nnkern checkpoint"));
    let mut v2 = bytes.clone();
    v2[8] = 2;
    assert!(msg(&v2).contains("version 2"));
    assert!(msg(&[]).contains("m.ck"));
}

#[test]
fn a_diverging_run_stops_at_a_named_step() {
    let c = TrainConfig {
        optimizer: Optimizer::Sgd(SgdConfig {
            lr: 1e30,
            ..SgdConfig::default()
        }),
        ..cfg(&[8], 3)
    };
    let mut t = Trainer::new(c, small(200, 10), Cpu::new()).unwrap();
    let mut err = None;
    for _ in 0..3 {
        if let Err(e) = t.run_epoch(&mut |_| {}) {
            err = Some(e.to_string());
            break;
        }
    }
    let e = err.expect("the loss must blow up");
    assert!(e.contains("at step") && e.contains("epoch 1"), "{e}");
}

#[test]
fn options_are_checked_and_named() {
    let data = small(20, 5);
    let bad = |c: TrainConfig| Trainer::new(c, data.clone(), Cpu::new()).err().unwrap().to_string();
    assert!(bad(TrainConfig {
        batch_size: BatchSize::Rows(0),
        ..cfg(&[4], 1)
    })
    .contains("--batch-size"));
    for s in [1.0, 1.5, -0.1, f64::NAN] {
        assert!(bad(TrainConfig {
            val_split: s,
            ..cfg(&[4], 1)
        })
        .contains("--val-split"));
    }
    for lr in [f32::NAN, f32::INFINITY, -1.0] {
        let c = TrainConfig {
            optimizer: Optimizer::Adam(AdamConfig {
                lr,
                ..AdamConfig::keras()
            }),
            ..cfg(&[4], 1)
        };
        assert!(bad(c).contains("--lr"));
    }
    assert!(bad(TrainConfig {
        clip_norm: Some(0.0),
        ..cfg(&[4], 1)
    })
    .contains("--clip-norm"));
    assert!(bad(cfg(&[4, 0], 1)).contains("--hidden"));
}

#[test]
fn every_activation_and_optimizer_trains() {
    for act in [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::GeluTanh,
    ] {
        for opt in [
            Optimizer::Adam(AdamConfig::keras()),
            Optimizer::Adam(AdamConfig::adamw()),
            Optimizer::Sgd(SgdConfig {
                lr: 0.05,
                ..SgdConfig::default()
            }),
        ] {
            let c = TrainConfig {
                activation: act,
                optimizer: opt,
                ..cfg(&[16], 2)
            };
            let mut t = Trainer::new(c, small(400, 50), Cpu::new()).unwrap();
            let h = run(&mut t, 2);
            assert!(h[1].train_loss < h[0].train_loss, "{act} {opt:?}: {h:?}");
        }
    }
}

#[test]
fn batch_sizes_from_one_to_full_and_no_hidden_layer() {
    for (hidden, bs) in [
        (vec![8], BatchSize::Rows(1)),
        (vec![8], BatchSize::Full),
        (vec![], BatchSize::Rows(7)),
    ] {
        let c = TrainConfig {
            hidden,
            batch_size: bs,
            ..cfg(&[], 1)
        };
        let mut t = Trainer::new(c, small(60, 10), Cpu::new()).unwrap();
        let want = match bs {
            BatchSize::Rows(n) => 48usize.div_ceil(n),
            BatchSize::Full => 1,
        };
        assert_eq!(t.batches_per_epoch(), want);
        let h = run(&mut t, 1);
        assert!(h[0].train_loss.is_finite());
    }
}

/// The optimizer fused into the weight-gradient products (the default
/// training step) against the unfused step (whole gradient, then one
/// optimizer pass): bitwise equal parameters and optimizer state after
/// several steps, for Adam, AdamW and SGD with momentum and weight decay,
/// with two hidden layers (a middle layer's input gradient must use the
/// weights before the step), on one thread and split over two.
#[test]
fn the_fused_optimizer_step_gives_the_bits_of_the_unfused_one() {
    use nnkern_train::{Backend, Mlp};
    let data = small(256, 10);
    let dims = [784, 40, 24, 10];
    let params = {
        use rand::SeedableRng;
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7);
        nnkern_train::mlp::glorot_uniform(&dims, &mut rng).unwrap()
    };
    let opts = [
        Optimizer::Adam(AdamConfig::keras()),
        Optimizer::Adam(AdamConfig::adamw()),
        Optimizer::Sgd(SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-3,
        }),
    ];
    for opt in opts {
        for (threads, split) in [(1, false), (2, true)] {
            let go = |fused: bool| {
                nnkern::with_threads(threads, || {
                    nnkern::testing::force_min_per_task(split.then_some(1));
                    let mut be = Cpu::new();
                    let mut m = Mlp::new(&mut be, &dims, Activation::Relu, opt, &params, 32, 32).unwrap();
                    m.set_fused_update(fused);
                    let images = be.upload_bytes(data.train.images.clone()).unwrap();
                    for s in 0..6u32 {
                        let rows: Vec<u32> = (0..32).map(|i| (i * 7 + s * 32) % 256).collect();
                        let labels: Vec<u32> = rows.iter().map(|&r| data.train.labels[r as usize]).collect();
                        m.load_batch(&mut be, &images, &rows, &labels).unwrap();
                        m.train_step(&mut be, 32, None).unwrap();
                    }
                    nnkern::testing::force_min_per_task(None);
                    let (p, o) = m.state_to_host(&mut be).unwrap();
                    (p, o, m.step())
                })
                .unwrap()
            };
            let (p1, o1, s1) = go(false);
            let (p2, o2, s2) = go(true);
            assert_eq!(s1, s2);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&p1) == bits(&p2), "{opt:?}, {threads} threads: parameters differ");
            for (a, b) in o1.iter().zip(&o2) {
                assert!(
                    bits(a) == bits(b),
                    "{opt:?}, {threads} threads: optimizer state differs"
                );
            }
            assert!(p1 != params, "the steps moved the parameters");
        }
    }
}
