//! The CUDA backend of the trainer, end to end on the PTX executor (the same
//! kernels and host code a GPU runs, interpreted on the CPU with bounds and
//! race checks), against the CPU backend; and the command line without a GPU.
//!
//! The model is small (64 → 16 → 4 on a synthetic set of 4 classes) so the
//! interpreter takes a few seconds per run.
#![cfg(feature = "cuda")]

use nnkern::AdamConfig;
use nnkern_train::{mlp::Optimizer, BatchSize, Cpu, Cuda, Dataset, EpochMetrics, Split, TrainConfig, Trainer};
use std::process::Command;

const FEATURES: usize = 64;
const CLASSES: usize = 4;

/// `n` samples: each class has its own random byte pattern; every sample is
/// its class's pattern with a quarter of its bytes replaced by noise.
fn split(n: usize, seed: u64) -> Split {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut proto = [[0u8; FEATURES]; CLASSES];
    let mut p = 0x1234_5678_9abc_def1u64;
    for row in proto.iter_mut() {
        for b in row.iter_mut() {
            p ^= p << 13;
            p ^= p >> 7;
            p ^= p << 17;
            *b = (p >> 24) as u8;
        }
    }
    let mut images = Vec::with_capacity(n * FEATURES);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = (next() % CLASSES as u64) as usize;
        labels.push(c as u32);
        for &b in &proto[c] {
            let r = next();
            images.push(if r % 4 == 0 { (r >> 32) as u8 } else { b });
        }
    }
    Split {
        images,
        labels,
        features: FEATURES,
    }
}

fn data(n_train: usize, n_test: usize) -> Dataset {
    Dataset {
        train: split(n_train, 1),
        test: split(n_test, 2),
        classes: CLASSES,
        source: "synthetic".into(),
    }
}

fn cfg(epochs: usize, batch: usize, clip_norm: Option<f32>) -> TrainConfig {
    TrainConfig {
        hidden: vec![16],
        epochs,
        batch_size: BatchSize::Rows(batch),
        clip_norm,
        ..TrainConfig::default()
    }
}

fn history<B: nnkern_train::Backend>(t: &mut Trainer<B>, epochs: usize) -> Vec<EpochMetrics> {
    while t.epochs_done() < epochs {
        t.run_epoch(&mut |_| {}).unwrap();
    }
    t.history().to_vec()
}

/// Unit roundoff of f32.
const U: f64 = f32::EPSILON as f64 / 2.0;

/// Two epochs on the executor and on the CPU from the same weights: the same
/// steps, losses and weights within the bound below, the same correct counts,
/// and a falling loss.
#[test]
fn executor_trains_like_the_cpu_backend() {
    let (epochs, batch) = (4, 32);
    let c = cfg(epochs, batch, None);
    let mut g = Trainer::new(c.clone(), data(400, 100), Cuda::executor().unwrap()).unwrap();
    let mut h = Trainer::new(c, data(400, 100), Cpu::new()).unwrap();
    assert_eq!(g.backend_name(), "cuda-executor");
    let (hg, hc) = (history(&mut g, epochs), history(&mut h, epochs));
    let steps = (epochs * g.batches_per_epoch()) as f64;
    assert!(steps >= 40.0, "{steps} steps");
    // Longest dot product of a step: the 64 inputs of the first layer (the
    // batch of 32 in the weight gradients is shorter).
    let k = FEATURES.max(batch) as f64;
    for (a, b) in hg.iter().zip(&hc) {
        // Each logit is a dot product of length k in both backends, each within
        // (k + 2)·u relative of exact (plus the bias add); the fused
        // softmax-xent's exp (ex2.approx, ≤ 3 ulp) and log (≤ 2⁻²² absolute) add
        // a few u; the mean loss moves by at most the logits' error, and the
        // weights (within the bound below) move the later steps' logits by far
        // less than that. Doubled for the two sides.
        let tol = 2.0 * ((k + 2.0) * U + 8.0 * U);
        let rel = (a.train_loss - b.train_loss).abs() / b.train_loss;
        assert!(
            rel <= tol,
            "epoch {}: train loss {a:?} vs {b:?}, bound {tol:e}",
            a.epoch
        );
        let rel = (a.val_loss.unwrap() - b.val_loss.unwrap()).abs() / b.val_loss.unwrap();
        assert!(rel <= tol, "epoch {}: val loss {a:?} vs {b:?}, bound {tol:e}", a.epoch);
        // Logits this close pick the same class unless two are within the
        // bound: none are in this data set, so the counts are equal.
        assert_eq!(a.train_acc, b.train_acc, "epoch {}", a.epoch);
        assert_eq!(a.val_acc, b.val_acc, "epoch {}", a.epoch);
    }
    eprintln!("executor {hg:?}\ncpu {hc:?}");
    assert!(hg[epochs - 1].train_loss < 0.8 * hg[0].train_loss, "{hg:?}");
    let (pg, pc) = (g.checkpoint().unwrap().params, h.checkpoint().unwrap().params);
    let wmax = pc.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    let max = pg.iter().zip(&pc).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max) as f64;
    // Per step, the gradients of the two backends differ by at most the GEMM
    // bound (k + 2)·u relative (dot products of length k ≤ 64 in either
    // order), which Adam's normalised step (of size ≤ lr) carries into the
    // update about twice (m and √v); each weight also rounds once per step,
    // up to an ulp of the largest weight each side. Doubled for the
    // first-order coupling between layers. One missed or extra Adam step
    // would move weights by ~lr = 1e-3, far above it.
    let lr = f64::from(AdamConfig::keras().lr);
    let per_step = 2.0 * lr * (k + 2.0) * U + 2.0 * 2.0 * U * wmax;
    let bound = 2.0 * steps * per_step;
    eprintln!("max weight difference {max:e} over {steps} steps, bound {bound:e}");
    assert!(
        max <= bound,
        "max weight difference {max:e} over {steps} steps, bound {bound:e}"
    );
    let (tg, tc) = (g.test().unwrap(), h.test().unwrap());
    assert_eq!(tg.acc, tc.acc);
    eprintln!("test {tg:?} {tc:?}");
    assert!(tg.acc > 0.5, "{tg:?}");
}

/// SGD, gradient clipping (the norm and the scale computed on the device), a
/// last batch shorter than the others (the row, label and logit buffers used
/// in part), batch 1 rows: all the same as on the CPU.
#[test]
fn sgd_clipping_and_ragged_batches_match_the_cpu_backend() {
    let mut c = cfg(1, 24, Some(0.5));
    c.optimizer = Optimizer::Sgd(nnkern::SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.0,
    });
    c.val_split = 0.0;
    let d = || data(60, 10);
    let mut g = Trainer::new(c.clone(), d(), Cuda::executor().unwrap()).unwrap();
    let mut h = Trainer::new(c, d(), Cpu::new()).unwrap();
    assert_eq!(g.batches_per_epoch(), 3, "60 = 24 + 24 + 12");
    let (hg, hc) = (history(&mut g, 1), history(&mut h, 1));
    let rel = (hg[0].train_loss - hc[0].train_loss).abs() / hc[0].train_loss;
    let tol = 2.0 * ((FEATURES as f64 + 2.0) * U + 8.0 * U);
    assert!(rel <= tol, "{hg:?} {hc:?}");
    assert_eq!(hg[0].train_acc, hc[0].train_acc);
    let (pg, pc) = (g.checkpoint().unwrap().params, h.checkpoint().unwrap().params);
    let wmax = pc.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    let max = pg.iter().zip(&pc).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max) as f64;
    // SGD moves each weight by lr·(momentum buffer): a gradient error of
    // (k + 2)·u relative (the gradient itself at most the clip norm 0.5 after
    // clipping) moves it by lr·0.5·(k + 2)·u·(1 + momentum) per step, plus the
    // weight's rounding; doubled as above. A skipped clip would scale the
    // whole update by the norm's ratio instead.
    let per_step = 0.05 * 0.5 * 2.0 * (FEATURES as f64 + 2.0) * U + 2.0 * 2.0 * U * wmax;
    let bound = 2.0 * 3.0 * per_step;
    eprintln!("{hg:?} {hc:?}: max weight difference {max:e}, bound {bound:e}");
    assert!(max <= bound, "max weight difference {max:e}, bound {bound:e}");
}

/// The command line: the hidden executor backend trains, and `--backend cuda`
/// without a GPU is an error naming what is missing, never a panic.
#[test]
fn cli_runs_on_the_executor_and_reports_a_missing_gpu() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("train_cuda_cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = data(48, 16);
    d.write_dir(&dir, false).unwrap();
    let run = |backend: &str| {
        Command::new(env!("CARGO_BIN_EXE_nnkern"))
            .args([
                "train",
                "--quiet",
                "--hidden",
                "8",
                "--epochs",
                "1",
                "--batch-size",
                "16",
            ])
            .args(["--backend", backend, "--data"])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let o = run("cuda-executor");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("test_accuracy"), "{out}");
    let o = run("cuda");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    if o.status.success() {
        // A machine with a GPU trains on it.
        assert!(out.contains("test_accuracy"), "{out}\n{err}");
    } else {
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("--backend: no CUDA device: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// One training step on the device is this fixed list of launches (the batch
/// gather at the device's cursor and its move, two dense layers forward with
/// the bias and activation in the GEMM epilogue, the fused softmax-xent, the
/// correct count, the backward, the clipping, the optimizer's step state and
/// one optimizer launch), with the same arguments at every step (so a graph
/// captured from one step replays any other), no host-to-device copy after the
/// first step (whose copies are the optimizer's and the clipping's chunk
/// tables, cached on the device), and the same device memory in use after
/// every step.
#[test]
fn a_step_is_a_fixed_list_of_launches_copies_nothing_and_holds_its_memory() {
    use nnkern_train::{mlp::Mlp, Backend};
    let mut be = Cuda::executor().unwrap();
    assert!(!be.uses_graphs(), "the executor cannot capture");
    let d = data(64, 1);
    let dims = [FEATURES, 16, CLASSES];
    let n_params = FEATURES * 16 + 16 + 16 * CLASSES + CLASSES;
    let params: Vec<f32> = (0..n_params).map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0).collect();
    let adam = Optimizer::Adam(AdamConfig::keras());
    let mut model = Mlp::new(&mut be, &dims, nnkern::Activation::Relu, adam, &params, 16, 16).unwrap();
    let images = be.upload_bytes(d.train.images.clone()).unwrap();
    let order: Vec<u32> = (0..64).map(|i| (i * 29 % 64) as u32).collect();
    be.stage_labels(&d.train.labels).unwrap();
    be.stage_order(&order).unwrap();
    let mut in_use = Vec::new();
    let mut steps = Vec::new();
    let mut copies = Vec::new();
    for step in 0..4usize {
        let before = be.device().host_to_device_copies();
        be.device().record_launches(true);
        let at = 16 * step..16 * (step + 1);
        let (loss, _) = model
            .train_batch_deferred(&mut be, &images, &order, &d.train.labels, at, Some(1.0))
            .unwrap();
        assert!(loss.is_finite());
        copies.push(be.device().host_to_device_copies() - before);
        steps.push(be.device().take_launches());
        in_use.push(be.device().executor_bytes_in_use().unwrap());
    }
    let ran: Vec<&str> = steps[0].iter().map(|r| r.kernel).collect();
    assert_eq!(
        ran,
        [
            "nk_gather_batch",
            "nk_advance",
            "nk_sgemm",
            "nk_sgemm",
            "nk_softmax_xent",
            "nk_count_correct",
            // Output layer: bias gradient, input gradient, weight gradient.
            "nk_bias_grad",
            "nk_sgemm",
            "nk_sgemm",
            // Hidden layer: activation backward and bias gradient, weight gradient.
            "nk_act_bwd",
            "nk_bias_grad",
            "nk_sgemm",
            "nk_sumsq",
            "nk_clip_scale",
            "nk_opt_prep",
            "nk_adam",
        ]
    );
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(*s, steps[0], "step {i} launches differ from step 0");
    }
    assert!(
        copies[1..].iter().all(|&c| c == 0),
        "host-to-device copies per step: {copies:?}"
    );
    assert!(in_use.iter().all(|&b| b == in_use[0]), "{in_use:?}");
    assert_eq!(model.step(), 4);
    // The next epoch: its order is one copy and the cursor's reset another.
    let before = be.device().host_to_device_copies();
    be.stage_order(&order).unwrap();
    assert_eq!(be.device().host_to_device_copies() - before, 2);
}

/// The batches the CUDA backend gathers from its staged order and labels (a
/// device cursor that moves itself) are the CPU backend's, bit for bit, for
/// every batch of two epochs with a ragged last batch, and for a batch taken
/// out of turn.
#[test]
fn device_batches_are_the_cpu_batches() {
    use nnkern_train::Backend;
    let (mut g, mut c) = (Cuda::executor().unwrap(), Cpu::new());
    let d = data(60, 1);
    let (gi, ci) = (
        g.upload_bytes(d.train.images.clone()).unwrap(),
        c.upload_bytes(d.train.images.clone()).unwrap(),
    );
    let labels = &d.train.labels;
    g.stage_labels(labels).unwrap();
    let (mut gx, mut gl) = (g.alloc(24 * FEATURES).unwrap(), g.alloc_labels(24).unwrap());
    let (mut cx, mut cl) = (c.alloc(24 * FEATURES).unwrap(), c.alloc_labels(24).unwrap());
    let mut check = |g: &mut Cuda, order: &[u32], at: std::ops::Range<usize>| {
        let n = at.len();
        g.gather_batch(&gi, FEATURES, order, labels, at.clone(), 255.0, &mut gx, &mut gl)
            .unwrap();
        c.gather_batch(&ci, FEATURES, order, labels, at.clone(), 255.0, &mut cx, &mut cl)
            .unwrap();
        let x = g.device().download(&gx).unwrap();
        let l = g.device().download(&gl).unwrap();
        let same = x[..n * FEATURES]
            .iter()
            .zip(&cx[..n * FEATURES])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "rows of batch {at:?}");
        assert_eq!(l[..n], cl[..n], "labels of batch {at:?}");
    };
    for epoch in 0..2u32 {
        let order: Vec<u32> = (0..60).map(|i| (i * 7 + epoch * 11) % 60).collect();
        g.stage_order(&order).unwrap();
        for at in [0..24, 24..48, 48..60] {
            check(&mut g, &order, at);
        }
        check(&mut g, &order, 5..29);
    }
}

/// A non-finite loss on the device path skips the update there: the error
/// names the step, and the weights, the optimizer state and the step count
/// are those before it (as on the CPU).
#[test]
fn a_non_finite_loss_leaves_the_model_as_it_was() {
    let mut c = cfg(1, 16, None);
    c.optimizer = Optimizer::Adam(AdamConfig {
        lr: 1e30,
        ..AdamConfig::keras()
    });
    c.val_split = 0.0;
    let mut g = Trainer::new(c.clone(), data(48, 8), Cuda::executor().unwrap()).unwrap();
    let mut h = Trainer::new(c, data(48, 8), Cpu::new()).unwrap();
    let eg = g.run_epoch(&mut |_| {}).unwrap_err().to_string();
    let eh = h.run_epoch(&mut |_| {}).unwrap_err().to_string();
    assert_eq!(eg, eh);
    let (kg, kh) = (g.checkpoint().unwrap(), h.checkpoint().unwrap());
    assert_eq!(kg.step, kh.step);
    assert!(
        kg.params.iter().all(|p| p.is_finite()),
        "weights updated by the bad step"
    );
    let (mg, mh) = (&kg.opt_state[0], &kh.opt_state[0]);
    assert!(mg
        .iter()
        .zip(mh)
        .all(|(a, b)| (a - b).abs() <= 1e-3 * b.abs().max(1e-30)));
}

/// On a GPU: the steps are captured into graphs (one per batch size: the full
/// batch and the ragged last one) and replayed, and training with graphs gives
/// the weights of training launch by launch (the same kernels in the same
/// order) within a few ulp, with no host-to-device copy per step. Skipped
/// without a GPU unless REQUIRE_GPU=1.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_graph_replay_trains_like_launch_by_launch() {
    let g = match Cuda::new(0) {
        Ok(g) => g,
        Err(e) if std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("REQUIRE_GPU=1 but {e}"),
        Err(e) => return eprintln!("skipped: {e}"),
    };
    assert!(g.uses_graphs());
    let mut l = Cuda::new(0).unwrap();
    l.set_graphs(false);
    let c = cfg(3, 32, None);
    // 413 samples at a 0.2 split: 330 training rows, 10 batches of 32 and one of 10.
    let mut tg = Trainer::new(c.clone(), data(413, 50), g).unwrap();
    let mut tl = Trainer::new(c, data(413, 50), l).unwrap();
    let (hg, hl) = (history(&mut tg, 3), history(&mut tl, 3));
    let mut recorded = tg.backend().recorded_steps();
    recorded.sort_unstable();
    assert_eq!(recorded, [10, 32]);
    assert!(tl.backend().recorded_steps().is_empty());
    for (a, b) in hg.iter().zip(&hl) {
        assert!(
            (a.train_loss - b.train_loss).abs() <= 1e-6 * b.train_loss,
            "{a:?} {b:?}"
        );
        assert_eq!(a.train_acc, b.train_acc);
    }
    let (pg, pl) = (tg.checkpoint().unwrap().params, tl.checkpoint().unwrap().params);
    let max = pg.iter().zip(&pl).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max <= 1e-5, "max weight difference {max:e}");
}
