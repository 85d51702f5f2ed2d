//! A multilayer perceptron over any [`Backend`]: dense layers with one
//! activation, softmax + cross-entropy on the last.
//!
//! Shapes (batch `n`, layer `l` maps `d[l]` features to `d[l+1]`):
//! ```text
//! forward   Z_l = A_{l-1} · W_l           gemm, W_l stored d[l] × d[l+1] row-major (Keras's kernel layout)
//!           A_l = f(Z_l + b_l)            bias_add_activation (Z_l keeps the pre-activation)
//!           logits = Z_L + b_L            bias_add
//! loss      dlogits = (softmax − onehot)/n   softmax_xent, fused
//! backward  dW_l = A_{l-1}ᵀ · dZ_l        gemm with a transposed view
//!           db_l = Σ_rows dZ_l            bias_grad
//!           dA_{l-1} = dZ_l · W_lᵀ        gemm with a transposed view
//!           dZ_{l-1} = dA_{l-1} ⊙ f'(Z_{l-1})   activation_backward_inplace
//! ```
//! All parameters live in one buffer (`W_1, b_1, W_2, b_2, …`), and so do
//! their gradients, so clipping and the optimizer update are one call each.
//! Every buffer is sized when the model is built; a training step allocates
//! nothing.

use super::backend::{Backend, Layout, Mat, MatOut, StepKey};
use crate::error::{Error, Result};
use nnkern::ops::activation::Activation;
use nnkern::ops::optim::{AdamConfig, AdamState, SgdConfig, SgdState};
use rand::rngs::Xoshiro256PlusPlus;
use rand::RngExt;

/// Where one dense layer's parameters sit in the parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseLayout {
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
    /// Offset of the `inputs × outputs` weight matrix (row-major).
    pub w: usize,
    /// Offset of the `outputs` biases.
    pub b: usize,
}

impl DenseLayout {
    fn w_layout(&self) -> Layout {
        Layout::row_major(self.w, self.inputs, self.outputs)
    }
    fn b_range(&self) -> std::ops::Range<usize> {
        self.b..self.b + self.outputs
    }
}

/// The layer widths `[inputs, hidden…, classes]` and where each layer's
/// parameters sit; returns the layouts and the total parameter count.
pub fn param_layout(dims: &[usize]) -> Result<(Vec<DenseLayout>, usize)> {
    if dims.len() < 2 {
        return Err(Error::invalid("dims", "a model needs an input and an output width"));
    }
    if let Some(i) = dims.iter().position(|&d| d == 0) {
        return Err(Error::invalid("hidden", format!("layer width {i} is 0")));
    }
    let mut layers = Vec::with_capacity(dims.len() - 1);
    let mut off = 0usize;
    for pair in dims.windows(2) {
        let (i, o) = (pair[0], pair[1]);
        let w = off;
        let wn = i.checked_mul(o).and_then(|x| x.checked_add(o)).ok_or(Error::Overflow {
            arg: "hidden",
            what: "parameter count",
        })?;
        off = off.checked_add(wn).ok_or(Error::Overflow {
            arg: "hidden",
            what: "parameter count",
        })?;
        layers.push(DenseLayout {
            inputs: i,
            outputs: o,
            w,
            // i·o + o was checked above, so i·o and w + i·o ≤ off fit.
            b: w + i * o,
        });
    }
    Ok((layers, off))
}

/// Glorot-uniform weights (`U(±√(6/(fan_in+fan_out)))`, as Keras's default
/// initializer) and zero biases, drawn layer by layer from `rng`.
pub fn glorot_uniform(dims: &[usize], rng: &mut Xoshiro256PlusPlus) -> Result<Vec<f32>> {
    let (layers, total) = param_layout(dims)?;
    let mut p = vec![0.0f32; total];
    for l in &layers {
        let limit = (6.0 / (l.inputs + l.outputs) as f64).sqrt() as f32;
        for w in &mut p[l.w..l.w + l.inputs * l.outputs] {
            *w = rng.random_range(-limit..limit);
        }
    }
    Ok(p)
}

/// The optimizer and its state, in backend buffers the size of the parameters.
#[derive(Debug)]
pub enum OptimizerState<B: Backend> {
    /// Adam or AdamW.
    Adam {
        /// Hyperparameters.
        cfg: AdamConfig,
        /// First and second moments.
        state: AdamState<B::Buf>,
    },
    /// SGD with momentum.
    Sgd {
        /// Hyperparameters.
        cfg: SgdConfig,
        /// Momentum buffer.
        state: SgdState<B::Buf>,
    },
}

/// The model, its gradients, its optimizer state and its work buffers.
pub struct Mlp<B: Backend> {
    dims: Vec<usize>,
    act: Activation,
    layers: Vec<DenseLayout>,
    n_params: usize,
    /// Rows the forward buffers hold (the largest batch forwarded at once).
    rows: usize,
    /// Rows the backward buffers hold (the training batch).
    train_rows: usize,
    params: B::Buf,
    grads: B::Buf,
    opt: OptimizerState<B>,
    /// Optimizer steps taken so far.
    step: u64,
    x: B::Buf,
    labels: B::Labels,
    /// Per layer: pre-activation (for the last layer: the logits).
    z: Vec<B::Buf>,
    /// Per hidden layer: activation output.
    a: Vec<B::Buf>,
    /// Per layer: gradient with respect to its output.
    g: Vec<B::Buf>,
    /// Fuse the optimizer into the weight-gradient products when possible.
    fused: bool,
    /// Unique in the process (see [`StepKey::buffers`]).
    id: u64,
}

/// Which optimizer to build, with its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// Adam or AdamW (`AdamConfig::decay`).
    Adam(AdamConfig),
    /// SGD with momentum.
    Sgd(SgdConfig),
}

impl<B: Backend> Mlp<B> {
    /// A model of widths `dims` (`[inputs, hidden…, classes]`) with
    /// parameters `params` and a fresh optimizer state. Forward passes take up
    /// to `rows` rows at once, training steps up to `train_rows`.
    pub fn new(
        be: &mut B,
        dims: &[usize],
        act: Activation,
        optimizer: Optimizer,
        params: &[f32],
        rows: usize,
        train_rows: usize,
    ) -> Result<Self> {
        let (layers, n_params) = param_layout(dims)?;
        if params.len() != n_params {
            return Err(Error::shape("params", (params.len(), 1), (n_params, 1)));
        }
        if train_rows == 0 || rows == 0 {
            return Err(Error::invalid("batch-size", "at least 1 row per batch expected"));
        }
        let rows = rows.max(train_rows);
        let mut p = be.alloc(n_params)?;
        be.upload(params, &mut p)?;
        let opt = match optimizer {
            Optimizer::Adam(cfg) => {
                cfg.validate()?;
                OptimizerState::Adam {
                    cfg,
                    state: AdamState::from_moments(be.alloc(n_params)?, be.alloc(n_params)?),
                }
            }
            Optimizer::Sgd(cfg) => {
                cfg.validate()?;
                OptimizerState::Sgd {
                    cfg,
                    state: SgdState::from_buffer(be.alloc(n_params)?),
                }
            }
        };
        let n_layers = layers.len();
        let mut z = Vec::with_capacity(n_layers);
        let mut a = Vec::with_capacity(n_layers - 1);
        let mut g = Vec::with_capacity(n_layers);
        // Buffer sizes: batch rows × layer width, checked (a "full" batch
        // of a large data set times a wide layer could wrap).
        let elems = |r: usize, w: usize| {
            r.checked_mul(w).ok_or(Error::Overflow {
                arg: "batch-size",
                what: "batch rows × layer width",
            })
        };
        for (i, l) in layers.iter().enumerate() {
            z.push(be.alloc(elems(rows, l.outputs)?)?);
            if i + 1 < n_layers {
                a.push(be.alloc(elems(rows, l.outputs)?)?);
            }
            g.push(be.alloc(elems(train_rows, l.outputs)?)?);
        }
        let x = be.alloc(elems(rows, dims[0])?)?;
        Ok(Mlp {
            dims: dims.to_vec(),
            act,
            layers,
            n_params,
            rows,
            train_rows,
            grads: be.alloc(n_params)?,
            params: p,
            opt,
            step: 0,
            fused: true,
            x,
            labels: be.alloc_labels(rows)?,
            z,
            a,
            g,
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }

    /// Layer widths `[inputs, hidden…, classes]`.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }
    /// The hidden layers' activation.
    pub fn activation(&self) -> Activation {
        self.act
    }
    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.n_params
    }
    /// Optimizer steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }
    /// The parameter layouts.
    pub fn layers(&self) -> &[DenseLayout] {
        &self.layers
    }

    /// Copies parameters, then optimizer state buffers (m and v for Adam, the
    /// momentum for SGD) to the host.
    pub fn state_to_host(&self, be: &mut B) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let mut p = vec![0.0; self.n_params];
        be.download(&self.params, &mut p)?;
        let bufs: Vec<&B::Buf> = match &self.opt {
            OptimizerState::Adam { state, .. } => vec![state.m(), state.v()],
            OptimizerState::Sgd { state, .. } => vec![state.buffer()],
        };
        let mut out = Vec::with_capacity(bufs.len());
        for b in bufs {
            let mut h = vec![0.0; self.n_params];
            be.download(b, &mut h)?;
            out.push(h);
        }
        Ok((p, out))
    }

    /// Restores parameters, optimizer buffers and the step count (from a checkpoint).
    pub fn set_state(&mut self, be: &mut B, params: &[f32], opt: &[Vec<f32>], step: u64) -> Result<()> {
        if params.len() != self.n_params {
            return Err(Error::shape("params", (params.len(), 1), (self.n_params, 1)));
        }
        let bufs: Vec<&mut B::Buf> = match &mut self.opt {
            OptimizerState::Adam { state, .. } => {
                let (m, v) = state.moments_mut();
                vec![m, v]
            }
            OptimizerState::Sgd { state, .. } => vec![state.buffer_mut()],
        };
        if bufs.len() != opt.len() || opt.iter().any(|o| o.len() != self.n_params) {
            return Err(Error::invalid(
                "optimizer state",
                "does not match the optimizer's buffers",
            ));
        }
        for (b, h) in bufs.into_iter().zip(opt) {
            be.upload(h, b)?;
        }
        be.upload(params, &mut self.params)?;
        self.step = step;
        Ok(())
    }

    /// Copies the gradients of the last [`Mlp::compute_gradients`] to the host.
    pub fn grads_to_host(&self, be: &mut B) -> Result<Vec<f32>> {
        let mut g = vec![0.0; self.n_params];
        be.download(&self.grads, &mut g)?;
        Ok(g)
    }

    /// Loads rows `rows` of `images` (scaled by 1/255) and their labels as the input.
    pub fn load_batch(&mut self, be: &mut B, images: &B::Bytes, rows: &[u32], labels: &[u32]) -> Result<()> {
        if rows.len() > self.rows || labels.len() != rows.len() {
            return Err(Error::invalid(
                "batch",
                format!(
                    "{} rows, {} labels for buffers of {}",
                    rows.len(),
                    labels.len(),
                    self.rows
                ),
            ));
        }
        be.gather_scaled(images, self.dims[0], rows, 255.0, &mut self.x)?;
        Ok(be.upload_labels(labels, &mut self.labels)?)
    }

    /// Forward pass over the first `n` loaded rows; the logits land in `z[L-1]`.
    fn forward(&mut self, be: &mut B, n: usize) -> Result<()> {
        for (li, l) in self.layers.iter().enumerate() {
            let out = Layout::row_major(0, n, l.outputs);
            let zl = &mut self.z[li];
            // a[li-1] is this layer's input, a[li] (absent for the last layer) its output.
            let (a_in, a_out) = self.a.split_at_mut(li);
            let input = Mat {
                buf: if li == 0 { &self.x } else { &a_in[li - 1] },
                at: Layout::row_major(0, n, l.inputs),
            };
            let w = Mat {
                buf: &self.params,
                at: l.w_layout(),
            };
            let y = a_out.first_mut().map(|buf| MatOut { buf, at: out });
            be.gemm_bias_activation(
                input,
                w,
                MatOut { buf: zl, at: out },
                (&self.params, l.b_range()),
                self.act,
                y,
            )?;
        }
        Ok(())
    }

    fn logits(&self, n: usize) -> Mat<'_, B::Buf> {
        let last = self.layers.len() - 1;
        Mat {
            buf: &self.z[last],
            at: Layout::row_major(0, n, self.layers[last].outputs),
        }
    }

    /// Loss and correct predictions of the first `n` loaded rows, no gradients.
    pub fn evaluate_loaded(&mut self, be: &mut B, n: usize) -> Result<(f32, usize)> {
        if n > self.rows {
            return Err(Error::invalid("rows", format!("{n} rows for buffers of {}", self.rows)));
        }
        self.forward(be, n)?;
        let loss = be.softmax_xent(self.logits(n), &self.labels, None)?;
        let correct = be.count_correct(self.logits(n), &self.labels)?;
        Ok((loss, correct))
    }

    /// Forward pass over the first `n` loaded rows, then copies the logits
    /// (`n × classes`) to `out`.
    pub fn predict_loaded(&mut self, be: &mut B, n: usize, out: &mut [f32]) -> Result<()> {
        if n > self.rows {
            return Err(Error::invalid("rows", format!("{n} rows for buffers of {}", self.rows)));
        }
        self.forward(be, n)?;
        let last = self.layers.len() - 1;
        Ok(be.download(&self.z[last], out)?)
    }

    /// Forward and backward over the first `n` loaded rows: fills the
    /// gradient buffer and returns the mean loss and the correct count
    /// (of the predictions before the update).
    pub fn compute_gradients(&mut self, be: &mut B, n: usize) -> Result<(f32, usize)> {
        let (loss, correct) = self.forward_loss(be, n)?;
        if loss.is_finite() {
            self.backward(be, n, false)?;
        }
        Ok((loss, correct))
    }

    /// Forward pass, loss and output gradient (`g[last]`) of the first `n`
    /// loaded rows; returns the mean loss and the correct count.
    fn forward_loss(&mut self, be: &mut B, n: usize) -> Result<(f32, usize)> {
        if n == 0 || n > self.train_rows {
            return Err(Error::invalid(
                "rows",
                format!("{n} rows for a training batch of at most {}", self.train_rows),
            ));
        }
        self.forward(be, n)?;
        let last = self.layers.len() - 1;
        let classes = self.layers[last].outputs;
        let loss = {
            let logits = Mat {
                buf: &self.z[last],
                at: Layout::row_major(0, n, classes),
            };
            let d = MatOut {
                buf: &mut self.g[last],
                at: Layout::row_major(0, n, classes),
            };
            be.softmax_xent(logits, &self.labels, Some(d))?
        };
        let correct = be.count_correct(self.logits(n), &self.labels)?;
        Ok((loss, correct))
    }

    /// The backward pass from `g[last]`. Unfused, it fills the gradient
    /// buffer. Fused (`update`), it takes the optimizer step `self.step`
    /// (already counted) as it goes: each layer's input gradient is computed
    /// first (with the weights before the step), then its weights are
    /// updated straight from the weight-gradient product
    /// ([`Backend::gemm_adam_step`]) and its bias from the bias gradient —
    /// the same values, bit for bit, as the unfused gradient followed by one
    /// optimizer step over all parameters.
    fn backward(&mut self, be: &mut B, n: usize, update: bool) -> Result<()> {
        let last = self.layers.len() - 1;
        for li in (0..self.layers.len()).rev() {
            let l = self.layers[li];
            let out = Layout::row_major(0, n, l.outputs);
            let (g_lo, g_hi) = self.g.split_at_mut(li);
            let gl = &mut g_hi[0];
            if li < last {
                // dz = dy·act'(z) and the bias gradient Σ_i dz[i, :] in one pass.
                be.activation_backward_bias_grad(
                    self.act,
                    Mat {
                        buf: &self.z[li],
                        at: out,
                    },
                    MatOut { buf: &mut *gl, at: out },
                    (&mut self.grads, l.b_range()),
                )?;
            } else {
                be.bias_grad(Mat { buf: &*gl, at: out }, (&mut self.grads, l.b_range()))?;
            }
            let dz = Mat { buf: &*gl, at: out };
            let input = if li == 0 {
                Mat {
                    buf: &self.x,
                    at: Layout::row_major(0, n, l.inputs),
                }
            } else {
                Mat {
                    buf: &self.a[li - 1],
                    at: Layout::row_major(0, n, l.inputs),
                }
            };
            if li > 0 {
                let w = Mat {
                    buf: &self.params,
                    at: l.w_layout(),
                };
                be.gemm(
                    1.0,
                    dz,
                    w.t(),
                    0.0,
                    MatOut {
                        buf: &mut g_lo[li - 1],
                        at: Layout::row_major(0, n, l.inputs),
                    },
                )?;
            }
            if !update {
                be.gemm(
                    1.0,
                    input.t(),
                    dz,
                    0.0,
                    MatOut {
                        buf: &mut self.grads,
                        at: l.w_layout(),
                    },
                )?;
                continue;
            }
            match &mut self.opt {
                OptimizerState::Adam { cfg, state } => {
                    be.gemm_adam_step(cfg, state, self.step, &mut self.params, l.w_layout(), input.t(), dz)?;
                    be.adam_step_range(cfg, state, self.step, &mut self.params, &self.grads, l.b_range())?;
                }
                OptimizerState::Sgd { cfg, state } => {
                    be.gemm_sgd_step(cfg, state, &mut self.params, l.w_layout(), input.t(), dz)?;
                    be.sgd_step_range(cfg, state, &mut self.params, &self.grads, l.b_range())?;
                }
            }
        }
        Ok(())
    }

    /// Whether [`Mlp::train_step`] fuses the optimizer into the
    /// weight-gradient products when it can (no clipping, a backend that
    /// supports it); on by default. Off, it always computes the whole
    /// gradient first: the results are the same bit for bit.
    pub fn set_fused_update(&mut self, on: bool) {
        self.fused = on;
    }

    /// Clips the gradients to global norm `max_norm` when given, then takes
    /// one optimizer step.
    pub fn apply_gradients(&mut self, be: &mut B, clip_norm: Option<f32>) -> Result<()> {
        if let Some(c) = clip_norm {
            be.clip_global_norm(&mut self.grads, c)?;
        }
        self.step += 1;
        match &mut self.opt {
            OptimizerState::Adam { cfg, state } => {
                be.adam_step(cfg, state, self.step, &mut self.params, &self.grads)?
            }
            OptimizerState::Sgd { cfg, state } => be.sgd_step(cfg, state, &mut self.params, &self.grads)?,
        }
        Ok(())
    }

    /// One optimizer step over parameters `r` only, from the gradients of
    /// the same elements (no clipping), the step count advancing: for a
    /// data-parallel run in which each rank updates its own part of the
    /// parameters, the parts being exchanged afterwards. An error where the
    /// backend has no ranged steps ([`Backend::supports_ranged_update`]).
    pub fn apply_gradients_range(&mut self, be: &mut B, r: std::ops::Range<usize>) -> Result<()> {
        if r.start > r.end || r.end > self.n_params {
            return Err(Error::invalid(
                "range",
                format!("{r:?} is not a range of the {} parameters", self.n_params),
            ));
        }
        let step = self.step + 1;
        match &mut self.opt {
            OptimizerState::Adam { cfg, state } => {
                be.adam_step_range(cfg, state, step, &mut self.params, &self.grads, r)?
            }
            OptimizerState::Sgd { cfg, state } => be.sgd_step_range(cfg, state, &mut self.params, &self.grads, r)?,
        }
        self.step = step;
        Ok(())
    }

    /// The parameter and gradient buffers, for collectives that read and
    /// write them in place (see [`Backend::host_mut`]).
    pub fn params_and_grads_mut(&mut self) -> (&mut B::Buf, &mut B::Buf) {
        (&mut self.params, &mut self.grads)
    }

    /// One training step on batch `order[at]` of `images` (labels from
    /// `labels`), for a backend that [defers step results](Backend::defers_step_results):
    /// the batch load, forward, backward and update are issued (or replayed by
    /// the backend) without waiting, then the loss and correct count are read once.
    /// A non-finite loss is returned with the update skipped (on the device) and
    /// the step count unchanged.
    #[allow(clippy::too_many_arguments)]
    pub fn train_batch_deferred(
        &mut self,
        be: &mut B,
        images: &B::Bytes,
        order: &[u32],
        labels: &[u32],
        at: std::ops::Range<usize>,
        clip_norm: Option<f32>,
    ) -> Result<(f32, usize)> {
        let n = at.len();
        if n == 0 || n > self.train_rows {
            return Err(Error::invalid(
                "rows",
                format!("{n} rows for a training batch of at most {}", self.train_rows),
            ));
        }
        let issued = (|| -> Result<()> {
            let key = StepKey {
                rows: n,
                start: at.start,
                buffers: (self.id, images as *const B::Bytes as usize),
                steps_done: self.step,
            };
            if !be.begin_step(key)? {
                let features = self.dims[0];
                be.gather_batch(
                    images,
                    features,
                    order,
                    labels,
                    at,
                    255.0,
                    &mut self.x,
                    &mut self.labels,
                )?;
                self.compute_gradients(be, n)?;
                self.apply_gradients(be, clip_norm)?;
            } else {
                self.step += 1;
            }
            Ok(())
        })();
        if let Err(e) = issued {
            be.cancel_step();
            return Err(e);
        }
        // An error here (a bad label, which also skips the update on the device)
        // leaves the step count as it was, like a non-finite loss.
        let (loss, correct) = be.end_step().inspect_err(|_| self.step -= 1)?;
        if !loss.is_finite() {
            self.step -= 1;
        }
        Ok((loss, correct))
    }

    /// One training step on the first `n` loaded rows: returns the loss and
    /// correct count. A non-finite loss is returned without updating anything.
    pub fn train_step(&mut self, be: &mut B, n: usize, clip_norm: Option<f32>) -> Result<(f32, usize)> {
        let (loss, correct) = self.forward_loss(be, n)?;
        if !loss.is_finite() {
            return Ok((loss, correct));
        }
        if clip_norm.is_none() && self.fused && be.supports_fused_update() {
            self.step += 1;
            if let Err(e) = self.backward(be, n, true) {
                self.step -= 1;
                return Err(e);
            }
        } else {
            self.backward(be, n, false)?;
            self.apply_gradients(be, clip_norm)?;
        }
        Ok((loss, correct))
    }

    /// Copies the gradients of the last [`Mlp::compute_gradients`] into
    /// `out` (`n_params` long), without allocating.
    pub fn grads_into(&self, be: &mut B, out: &mut [f32]) -> Result<()> {
        if out.len() != self.n_params {
            return Err(Error::shape("grads", (out.len(), 1), (self.n_params, 1)));
        }
        Ok(be.download(&self.grads, out)?)
    }

    /// Replaces the gradient buffer (e.g. with a sum over several
    /// processes) before [`Mlp::apply_gradients`].
    pub fn set_grads(&mut self, be: &mut B, grads: &[f32]) -> Result<()> {
        if grads.len() != self.n_params {
            return Err(Error::shape("grads", (grads.len(), 1), (self.n_params, 1)));
        }
        Ok(be.upload(grads, &mut self.grads)?)
    }
}
