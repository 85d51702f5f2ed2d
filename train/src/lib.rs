//! The reference trainer behind `nnkern train`: an MLP on MNIST-format data,
//! built only from the library's public kernels.
//!
//! - [`data`]: IDX files (gzipped or plain), validated; the bundled digits.
//! - [`backend`]: the [`Backend`] trait the model is written against, and the CPU backend;
//!   `cuda` (feature `cuda`): the CUDA backend, on a GPU or the PTX executor.
//! - [`mlp`]: the model: forward, backward, optimizer step, all buffers sized once.
//! - [`checkpoint`]: the checkpoint format, written atomically.
//! - [`metrics`]: JSON-lines metrics; [`plot`]: loss and accuracy curves.
//! - [`distributed`]: data-parallel training over MPI (feature `mpi`).
//!
//! The default [`TrainConfig`] is the classic Keras MNIST program: 784 → 500
//! ReLU → 10 softmax, Glorot-uniform weights, zero biases, Adam with Keras's
//! defaults (lr 1e-3, β 0.9/0.999, ε 1e-7 added before the bias correction of
//! `v`, as Keras does — [`AdamConfig::keras`]), batch 32, 10 epochs, the last
//! 20% of the training set held out for validation and the rest shuffled
//! every epoch.
//!
//! Determinism: the initial weights come from a xoshiro256++ stream seeded
//! with the seed, and epoch `e`'s shuffle from a stream seeded with
//! `(seed, e)` alone, so a run resumed from the checkpoint of epoch `e`
//! replays exactly what an uninterrupted run does; with the same thread count
//! the kernels are deterministic too, so the weights are bitwise identical.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod backend;
pub mod checkpoint;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod distributed;
pub mod error;
pub mod fsutil;
pub mod metrics;
pub mod mlp;
pub mod plot;

pub use backend::{Backend, Cpu, CpuKernels, Layout};
pub use checkpoint::Checkpoint;
#[cfg(feature = "cuda")]
pub use cuda::Cuda;
pub use data::{Dataset, Split};
pub use error::{Error, Result};
pub use mlp::{Mlp, Optimizer};

use nnkern::ops::activation::Activation;
use nnkern::ops::optim::{AdamConfig, AdamEpsilon, SgdConfig, WeightDecay};
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::time::Instant;

/// Rows forwarded at once when evaluating (validation and test sets), when
/// the training batch is smaller. Small on purpose: the forward buffers are
/// sized for it, and at 64 rows GEMM is already as efficient as at the
/// training batch, so a larger chunk would only cost memory.
pub const EVAL_ROWS: usize = 64;

/// How many samples a training step takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// A fixed number of samples (1 = stochastic gradient descent).
    Rows(usize),
    /// The whole training split in one step (batch gradient descent).
    Full,
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Rows(n) => write!(f, "{n}"),
            BatchSize::Full => f.write_str("full"),
        }
    }
}

impl std::str::FromStr for BatchSize {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "full" | "all" => Ok(BatchSize::Full),
            t => match t.parse::<usize>() {
                Ok(0) => Err(Error::invalid("--batch-size", "0: expected at least 1 (or `full`)")),
                Ok(n) => Ok(BatchSize::Rows(n)),
                Err(_) => Err(Error::invalid(
                    "--batch-size",
                    format!("{t:?}: expected a positive integer or `full`"),
                )),
            },
        }
    }
}

/// Everything that defines a training run (and must match to resume one).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Hidden layer widths, input side first (any depth, including none).
    pub hidden: Vec<usize>,
    /// Activation of every hidden layer.
    pub activation: Activation,
    /// Optimizer and its hyperparameters (learning rate included).
    pub optimizer: Optimizer,
    /// Samples per step.
    pub batch_size: BatchSize,
    /// Epochs to train in all (a resumed run continues up to this many).
    pub epochs: usize,
    /// Fraction of the training set, taken from its end, held out for validation; in `[0, 1)`.
    pub val_split: f64,
    /// Clip the gradients to this global norm before each step.
    pub clip_norm: Option<f32>,
    /// Seed of the initial weights and of every epoch's shuffle.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The classic Keras MNIST experiment.
    fn default() -> Self {
        TrainConfig {
            hidden: vec![500],
            activation: Activation::Relu,
            optimizer: Optimizer::Adam(AdamConfig::keras()),
            batch_size: BatchSize::Rows(32),
            epochs: 10,
            val_split: 0.2,
            clip_norm: None,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every option, naming it in the error as the command line spells it.
    pub fn validate(&self) -> Result<()> {
        if let Some(i) = self.hidden.iter().position(|&h| h == 0) {
            return Err(Error::invalid(
                "--hidden",
                format!("layer {} has width 0; widths must be at least 1", i + 1),
            ));
        }
        if self.batch_size == BatchSize::Rows(0) {
            return Err(Error::invalid("--batch-size", "0: expected at least 1 (or `full`)"));
        }
        if !(self.val_split.is_finite() && (0.0..1.0).contains(&self.val_split)) {
            return Err(Error::InvalidValue {
                arg: "--val-split",
                value: self.val_split,
                expected: "a fraction in [0, 1)",
            });
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::InvalidValue {
                    arg: "--clip-norm",
                    value: c as f64,
                    expected: "a finite value > 0",
                });
            }
        }
        let lr = match self.optimizer {
            Optimizer::Adam(c) => c.lr,
            Optimizer::Sgd(c) => c.lr,
        };
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::InvalidValue {
                arg: "--lr",
                value: lr as f64,
                expected: "a finite value >= 0",
            });
        }
        match self.optimizer {
            Optimizer::Adam(c) => c.validate(),
            Optimizer::Sgd(c) => c.validate(),
        }
        .map_err(|e| match e {
            nnkern::Error::InvalidValue { arg, value, expected } => Error::InvalidValue {
                arg: match arg {
                    "momentum" => "--momentum",
                    "weight_decay" => "--weight-decay",
                    other => other,
                },
                value,
                expected,
            },
            other => other.into(),
        })
    }

    /// Samples in the training part and in the validation part of `n`
    /// training samples (Keras's rule: the first ⌊n·(1 − split)⌋ train).
    pub fn split_sizes(&self, n: usize) -> (usize, usize) {
        let fit = ((n as f64) * (1.0 - self.val_split)).floor() as usize;
        let fit = fit.min(n);
        (fit, n - fit)
    }

    /// The layer widths of the model for `features` inputs and `classes` outputs.
    pub fn dims(&self, features: usize, classes: usize) -> Vec<usize> {
        let mut d = Vec::with_capacity(self.hidden.len() + 2);
        d.push(features);
        d.extend_from_slice(&self.hidden);
        d.push(classes);
        d
    }

    /// A one-line description of the optimizer.
    pub fn optimizer_name(&self) -> String {
        match self.optimizer {
            Optimizer::Adam(c) => {
                let kind = if c.decay == WeightDecay::Decoupled {
                    "adamw"
                } else {
                    "adam"
                };
                let eps = match c.epsilon {
                    AdamEpsilon::Keras => "keras",
                    AdamEpsilon::PyTorch => "pytorch",
                };
                format!(
                    "{kind} (lr {}, betas {}/{}, eps {} {eps}-style, weight decay {})",
                    num(c.lr),
                    num(c.beta1),
                    num(c.beta2),
                    num(c.eps),
                    num(c.weight_decay)
                )
            }
            Optimizer::Sgd(c) => format!(
                "sgd (lr {}, momentum {}, weight decay {})",
                num(c.lr),
                num(c.momentum),
                num(c.weight_decay)
            ),
        }
    }
}

/// A hyperparameter as a person writes it: `0.001`, `1e-7`, `1e30`.
fn num(x: f32) -> String {
    if x != 0.0 && !(1e-3..1e4).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Default hyperparameters of each optimizer, as the CLI names them.
pub fn optimizer_by_name(name: &str, lr: Option<f32>, momentum: Option<f32>, wd: Option<f32>) -> Result<Optimizer> {
    let opt = match name.trim().to_ascii_lowercase().as_str() {
        "adam" => {
            let mut c = AdamConfig::keras();
            if let Some(lr) = lr {
                c.lr = lr;
            }
            if let Some(wd) = wd {
                c.weight_decay = wd;
            }
            Optimizer::Adam(c)
        }
        "adamw" => {
            let mut c = AdamConfig::adamw();
            if let Some(lr) = lr {
                c.lr = lr;
            }
            if let Some(wd) = wd {
                c.weight_decay = wd;
            }
            Optimizer::Adam(c)
        }
        "sgd" => {
            let mut c = SgdConfig::default();
            if let Some(lr) = lr {
                c.lr = lr;
            }
            if let Some(m) = momentum {
                c.momentum = m;
            }
            if let Some(wd) = wd {
                c.weight_decay = wd;
            }
            Optimizer::Sgd(c)
        }
        other => {
            return Err(Error::invalid(
                "--optimizer",
                format!("unknown optimizer {other:?}; expected adam, adamw or sgd"),
            ))
        }
    };
    if momentum.is_some() && !matches!(opt, Optimizer::Sgd(_)) {
        return Err(Error::invalid("--momentum", "applies to --optimizer sgd only"));
    }
    Ok(opt)
}

/// What one epoch measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean loss over the epoch's steps (weighted by batch size), as Keras reports it.
    pub train_loss: f64,
    /// Fraction of training samples predicted right during the epoch.
    pub train_acc: f64,
    /// Loss on the validation split after the epoch (`None` without one).
    pub val_loss: Option<f64>,
    /// Accuracy on the validation split after the epoch.
    pub val_acc: Option<f64>,
    /// Wall time of the epoch, validation included.
    pub epoch_seconds: f64,
}

/// Progress inside an epoch, reported after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// Steps done in this epoch.
    pub batch: usize,
    /// Steps in the epoch.
    pub batches: usize,
    /// Running mean loss of the epoch.
    pub loss: f64,
    /// Running accuracy of the epoch.
    pub acc: f64,
}

/// Loss and accuracy on a data split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction predicted right.
    pub acc: f64,
}

fn epoch_rng(seed: u64, epoch: usize) -> Xoshiro256PlusPlus {
    // A stream per (seed, epoch): seed_from_u64 scrambles its input with
    // SplitMix64, so nearby inputs give unrelated streams.
    Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1))
}

/// A training run: data on the backend, the model, and the run's history.
pub struct Trainer<B: Backend> {
    cfg: TrainConfig,
    be: B,
    model: Mlp<B>,
    features: usize,
    classes: usize,
    train_images: B::Bytes,
    train_labels: Vec<u32>,
    test_images: B::Bytes,
    test_labels: Vec<u32>,
    n_fit: usize,
    n_val: usize,
    batch: usize,
    perm: Vec<u32>,
    batch_labels: Vec<u32>,
    eval_rows: Vec<u32>,
    history: Vec<EpochMetrics>,
    fingerprint: u32,
    source: String,
    /// Where the CPU steps run: the thread team or this thread alone,
    /// whichever was timed faster lately (same values either way).
    placement: nnkern::AdaptiveThreads,
}

impl<B: Backend> Trainer<B> {
    /// A fresh run: validates the options, moves the data to the backend and
    /// initialises the weights from the seed.
    pub fn new(cfg: TrainConfig, data: Dataset, be: B) -> Result<Self> {
        cfg.validate()?;
        let dims = cfg.dims(data.train.features, data.classes);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let params = mlp::glorot_uniform(&dims, &mut rng)?;
        Trainer::build(cfg, data, be, &params)
    }

    fn build(cfg: TrainConfig, data: Dataset, mut be: B, params: &[f32]) -> Result<Self> {
        let dims = cfg.dims(data.train.features, data.classes);
        let (n_fit, n_val) = cfg.split_sizes(data.train.len());
        if n_fit == 0 {
            return Err(Error::InvalidValue {
                arg: "--val-split",
                value: cfg.val_split,
                expected: "a fraction that leaves at least one training sample",
            });
        }
        let batch = match cfg.batch_size {
            BatchSize::Rows(n) => n.min(n_fit),
            BatchSize::Full => n_fit,
        };
        let fingerprint = data.train_fingerprint();
        let rows = batch.max(EVAL_ROWS);
        let model = Mlp::new(&mut be, &dims, cfg.activation, cfg.optimizer, params, rows, batch)?;
        if be.defers_step_results() {
            be.stage_labels(&data.train.labels)?;
        }
        let Dataset {
            train,
            test,
            classes,
            source,
        } = data;
        Ok(Trainer {
            features: train.features,
            classes,
            train_images: be.upload_bytes(train.images)?,
            train_labels: train.labels,
            test_images: be.upload_bytes(test.images)?,
            test_labels: test.labels,
            n_fit,
            n_val,
            batch,
            perm: (0..n_fit as u32).collect(),
            batch_labels: vec![0; rows],
            eval_rows: vec![0; rows],
            history: Vec::with_capacity(cfg.epochs),
            fingerprint,
            source,
            placement: nnkern::AdaptiveThreads::new(),
            model,
            be,
            cfg,
        })
    }

    /// Continues the run saved in `ck` (read from `path`, named in errors):
    /// `cfg` and `data` must be those it was started with, except `epochs`.
    pub fn resume(cfg: TrainConfig, data: Dataset, be: B, ck: &Checkpoint, path: &str) -> Result<Self> {
        cfg.validate()?;
        ck.check_compatible(&cfg, &data, path)?;
        let mut t = Trainer::build(cfg, data, be, &ck.params)?;
        t.model.set_state(&mut t.be, &ck.params, &ck.opt_state, ck.step)?;
        t.history.clear();
        t.history.extend_from_slice(&ck.history);
        Ok(t)
    }

    /// The run's options.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    /// Epochs completed.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }
    /// Metrics of every completed epoch.
    pub fn history(&self) -> &[EpochMetrics] {
        &self.history
    }
    /// Steps per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.n_fit.div_ceil(self.batch)
    }
    /// `(training, validation, test)` sample counts.
    pub fn split_counts(&self) -> (usize, usize, usize) {
        (self.n_fit, self.n_val, self.test_labels.len())
    }
    /// The model.
    pub fn model(&self) -> &Mlp<B> {
        &self.model
    }
    /// Where the data came from.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Input features per sample.
    pub fn features(&self) -> usize {
        self.features
    }
    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.be.name()
    }
    /// The backend.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// Trains one epoch, then scores the validation split. `on_step` is called
    /// after every step. A non-finite loss stops the epoch with an error
    /// naming the step; the model is then left as it was before that step.
    pub fn run_epoch(&mut self, on_step: &mut dyn FnMut(StepProgress)) -> Result<EpochMetrics> {
        in_region(self.be.wants_parallel_region(), || self.run_epoch_here(on_step))
    }

    fn run_epoch_here(&mut self, on_step: &mut dyn FnMut(StepProgress)) -> Result<EpochMetrics> {
        let start = Instant::now();
        let epoch = self.history.len();
        for (i, p) in self.perm.iter_mut().enumerate() {
            *p = i as u32;
        }
        self.perm.shuffle(&mut epoch_rng(self.cfg.seed, epoch));
        let batches = self.batches_per_epoch();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        // A device backend takes the epoch's order once and its steps whole.
        let deferred = self.be.defers_step_results();
        if deferred {
            self.be.stage_order(&self.perm)?;
        }
        for b in 0..batches {
            let at = b * self.batch..((b + 1) * self.batch).min(self.n_fit);
            let n = at.len();
            let (loss, c) = if deferred {
                self.model.train_batch_deferred(
                    &mut self.be,
                    &self.train_images,
                    &self.perm,
                    &self.train_labels,
                    at,
                    self.cfg.clip_norm,
                )?
            } else {
                let adaptive = self.be.wants_parallel_region();
                let rows = &self.perm[at];
                for (dst, &r) in self.batch_labels.iter_mut().zip(rows) {
                    *dst = self.train_labels[r as usize];
                }
                let (model, be, images, labels) = (
                    &mut self.model,
                    &mut self.be,
                    &self.train_images,
                    &self.batch_labels[..n],
                );
                let clip = self.cfg.clip_norm;
                let mut step = || -> Result<(f32, usize)> {
                    model.load_batch(be, images, rows, labels)?;
                    model.train_step(be, n, clip)
                };
                if adaptive {
                    self.placement.run(step)?
                } else {
                    step()?
                }
            };
            if !loss.is_finite() {
                return Err(Error::invalid(
                    "training stopped",
                    format!(
                        "the loss became {loss} at step {} (epoch {}, batch {} of {batches})",
                        self.model.step() + 1,
                        epoch + 1,
                        b + 1
                    ),
                ));
            }
            loss_sum += loss as f64 * n as f64;
            correct += c;
            seen += n;
            on_step(StepProgress {
                batch: b + 1,
                batches,
                loss: loss_sum / seen as f64,
                acc: correct as f64 / seen as f64,
            });
        }
        let val = if self.n_val > 0 {
            // On the placement the steps found faster.
            let bound = self.placement.chosen_bound();
            Some(nnkern::with_threads(bound, || {
                self.score_train_range(self.n_fit, self.n_val)
            })??)
        } else {
            None
        };
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / seen as f64,
            train_acc: correct as f64 / seen as f64,
            val_loss: val.map(|s| s.loss),
            val_acc: val.map(|s| s.acc),
            epoch_seconds: start.elapsed().as_secs_f64(),
        };
        self.history.push(m);
        Ok(m)
    }

    fn score_train_range(&mut self, start: usize, n: usize) -> Result<Score> {
        score(
            &mut self.be,
            &mut self.model,
            &self.train_images,
            &self.train_labels[start..start + n],
            start,
            &mut self.eval_rows,
        )
    }

    /// Loss and accuracy on the test split.
    pub fn test(&mut self) -> Result<Score> {
        in_region(self.be.wants_parallel_region(), || self.test_here())
    }

    fn test_here(&mut self) -> Result<Score> {
        score(
            &mut self.be,
            &mut self.model,
            &self.test_images,
            &self.test_labels,
            0,
            &mut self.eval_rows,
        )
    }

    /// Predicted class of every test sample.
    pub fn test_predictions(&mut self) -> Result<Vec<u32>> {
        let n = self.test_labels.len();
        let mut pred = vec![0u32; n];
        let chunk = self.eval_rows.len();
        let len = chunk.checked_mul(self.classes).ok_or(Error::Overflow {
            arg: "eval rows",
            what: "rows × classes",
        })?;
        let mut logits = vec![0.0f32; len];
        let mut start = 0;
        while start < n {
            let m = chunk.min(n - start);
            for (i, r) in self.eval_rows[..m].iter_mut().enumerate() {
                *r = (start + i) as u32;
            }
            self.model.load_batch(
                &mut self.be,
                &self.test_images,
                &self.eval_rows[..m],
                &self.test_labels[start..start + m],
            )?;
            self.model
                .predict_loaded(&mut self.be, m, &mut logits[..m * self.classes])?;
            nnkern::argmax_rows(
                nnkern::MatRef::new(&logits[..m * self.classes], m, self.classes)?,
                &mut pred[start..start + m],
            )?;
            start += m;
        }
        Ok(pred)
    }

    /// The state to save: options, history, weights and optimizer state.
    pub fn checkpoint(&mut self) -> Result<Checkpoint> {
        let (params, opt_state) = self.model.state_to_host(&mut self.be)?;
        Ok(Checkpoint {
            dims: self.model.dims().to_vec(),
            config: self.cfg.clone(),
            train_samples: self.train_labels.len(),
            train_fingerprint: self.fingerprint,
            step: self.model.step(),
            history: self.history.clone(),
            params,
            opt_state,
        })
    }

    /// Runs forward/backward over the first `n` training rows (in order) and
    /// returns the loss and the gradients, without updating (for tests).
    pub fn loss_and_gradients(&mut self, n: usize) -> Result<(f32, Vec<f32>)> {
        for (i, r) in self.eval_rows[..n].iter_mut().enumerate() {
            *r = i as u32;
        }
        self.model.load_batch(
            &mut self.be,
            &self.train_images,
            &self.eval_rows[..n],
            &self.train_labels[..n],
        )?;
        let (loss, _) = self.model.compute_gradients(&mut self.be, n)?;
        Ok((loss, self.model.grads_to_host(&mut self.be)?))
    }

    /// Replaces the weights (keeping the optimizer state; for tests).
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        let (_, opt) = self.model.state_to_host(&mut self.be)?;
        let step = self.model.step();
        self.model.set_state(&mut self.be, params, &opt, step)
    }
}

/// Mean loss and accuracy of `model` over `labels.len()` rows of `images`
/// starting at row `first`, forwarded in chunks of `rows.len()`.
/// Runs `f` inside a [`nnkern::parallel_region`] when `wanted`.
fn in_region<R>(wanted: bool, f: impl FnOnce() -> R) -> R {
    if wanted {
        nnkern::parallel_region(f)
    } else {
        f()
    }
}

fn score<B: Backend>(
    be: &mut B,
    model: &mut Mlp<B>,
    images: &B::Bytes,
    labels: &[u32],
    first: usize,
    rows: &mut [u32],
) -> Result<Score> {
    let n = labels.len();
    if n == 0 {
        return Ok(Score { loss: 0.0, acc: 0.0 });
    }
    let chunk = rows.len();
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut start = 0;
    while start < n {
        let m = chunk.min(n - start);
        for (i, r) in rows[..m].iter_mut().enumerate() {
            *r = (first + start + i) as u32;
        }
        model.load_batch(be, images, &rows[..m], &labels[start..start + m])?;
        let (loss, c) = model.evaluate_loaded(be, m)?;
        loss_sum += loss as f64 * m as f64;
        correct += c;
        start += m;
    }
    Ok(Score {
        loss: loss_sum / n as f64,
        acc: correct as f64 / n as f64,
    })
}

/// What `nnkern eval` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Loss and accuracy on the test split.
    pub score: Score,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// Scores the model of a checkpoint on `data`'s test split.
pub fn evaluate_checkpoint<B: Backend>(ck: &Checkpoint, data: Dataset, be: B, path: &str) -> Result<EvalReport> {
    let features = data.train.features;
    if ck.dims[0] != features || *ck.dims.last().unwrap_or(&0) != data.classes {
        return Err(Error::Data {
            path: path.to_string(),
            what: format!(
                "the model maps {} inputs to {} classes but the data ({}) has {} inputs and {} classes",
                ck.dims[0],
                ck.dims.last().unwrap_or(&0),
                data.source,
                features,
                data.classes
            ),
        });
    }
    let cfg = TrainConfig {
        batch_size: BatchSize::Rows(1),
        val_split: 0.0,
        ..ck.config.clone()
    };
    let labels = data.test.labels.clone();
    let mut t = Trainer::build(cfg, data, be, &ck.params)?;
    let score = t.test()?;
    let pred = t.test_predictions()?;
    let k = t.classes();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&l, &p) in labels.iter().zip(&pred) {
        confusion[l as usize][p as usize] += 1;
    }
    Ok(EvalReport { score, confusion })
}
