//! The CUDA backend (feature `cuda`): the model's buffers live on one
//! [`nnkern::cuda::Device`] — a GPU through the CUDA driver, or the PTX
//! executor, which runs the same kernels and host code on the CPU — and every
//! operation of a training step is a kernel launch on its stream.
//!
//! What moves between host and device: the images and the training labels
//! once per run, the epoch's order of rows once per epoch; a training step
//! copies nothing to the device and reads back only its loss and correct
//! count, once, at its end (the trainer takes its steps through
//! [`Backend::begin_step`] / [`Backend::end_step`]). Everything that changes
//! from step to step lives in device memory and is moved on by kernels: the
//! batch's position in the order ([`BatchCursor`], read by the gather, which
//! also writes the batch's labels), the Adam step count and bias corrections
//! ([`StepState`]), and the accumulators, zeroed by device-side fills. So the
//! launches of a step have the same arguments at every step of the same size,
//! and on a GPU the step is captured once into a CUDA graph and replayed: the
//! first step of each batch size runs launch by launch (it loads the kernels
//! and caches the optimizer's chunk tables), the second is captured and
//! launched as a graph, later ones replay it. The executor cannot capture; it
//! runs every step launch by launch, which are exactly the launches a graph
//! holds. `NNKERN_CUDA_GRAPHS=0` turns graphs off on a GPU too.
//!
//! A non-finite loss skips the update on the device (the optimizer kernels read
//! the loss accumulator), so the model is left as it was before that step, as
//! on the CPU. The forward layers run the GEMM with the bias and activation in
//! its epilogue (one launch per layer).
//!
//! Evaluation (validation and test scoring, predictions) still copies each
//! chunk's row indices and labels to the device.

use crate::backend::{Backend, Mat, MatOut, StepKey};
use nnkern::cuda::{
    self, BatchCursor, Device, DeviceBuffer, DeviceGraph, DeviceMatMut, DeviceMatRef, EngineKind, StepState,
    XentAccumulator,
};
use nnkern::ops::activation::Activation;
use nnkern::ops::optim::{AdamConfig, AdamState, SgdConfig, SgdState};
use nnkern::Result;
use std::ops::Range;

/// A recorded training step: its batch rows, the graph, and whether it steps Adam.
#[derive(Debug)]
struct Recorded {
    rows: usize,
    buffers: (u64, usize),
    graph: DeviceGraph,
    adam: bool,
}

/// The CUDA backend: buffers are [`DeviceBuffer`]s of one device.
#[derive(Debug)]
pub struct Cuda {
    dev: Device,
    /// The batch's row indices for the gather kernel (evaluation).
    rows: DeviceBuffer<u32>,
    /// Loss accumulator of the fused softmax + cross-entropy.
    xent: XentAccumulator,
    /// Correct-prediction counter.
    count: DeviceBuffer<u32>,
    /// Sum-of-squares accumulator of the gradient clipping.
    norm: DeviceBuffer<f32>,
    /// The training labels and the epoch's order, on the device.
    train_labels: DeviceBuffer<u32>,
    order: DeviceBuffer<u32>,
    /// Where the next training batch starts in `order`.
    cursor: BatchCursor,
    /// The optimizer's step count, bias corrections and skip flag.
    state: StepState,
    /// The Adam step count the device holds, as far as the host knows.
    state_steps: Option<u64>,
    /// Inside begin_step .. end_step.
    deferred: bool,
    /// Whether this step launched the Adam update (so the device advanced its count).
    stepped_adam: bool,
    /// Whether steps are captured into graphs (a GPU, unless NNKERN_CUDA_GRAPHS=0).
    use_graphs: bool,
    /// Batch sizes and buffers stepped once launch by launch (captured the next time).
    warmed: Vec<(usize, (u64, usize))>,
    /// The step being captured (its batch rows and buffers).
    capturing: Option<(usize, (u64, usize))>,
    graphs: Vec<Recorded>,
}

impl Cuda {
    /// The backend on CUDA GPU `ordinal`: [`nnkern::Error::NoCuda`] when there is no
    /// CUDA driver or no such device.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        Cuda::on(Device::new(ordinal)?)
    }

    /// The backend on the PTX executor (the CPU): the kernels as a GPU would
    /// run them, with bounds, uninitialised-shared-memory and race checks; slow.
    pub fn executor() -> Result<Cuda> {
        Cuda::on(Device::executor())
    }

    /// The backend on `dev`.
    pub fn on(dev: Device) -> Result<Cuda> {
        let use_graphs = dev.can_capture_graphs() && std::env::var("NNKERN_CUDA_GRAPHS").map_or(true, |v| v != "0");
        Ok(Cuda {
            rows: dev.zeros(0)?,
            xent: XentAccumulator::new(&dev)?,
            count: dev.zeros(1)?,
            norm: dev.zeros(2)?,
            train_labels: dev.zeros(0)?,
            order: dev.zeros(0)?,
            cursor: BatchCursor::new(&dev)?,
            state: StepState::new(&dev)?,
            state_steps: Some(0),
            deferred: false,
            stepped_adam: false,
            use_graphs,
            warmed: Vec::new(),
            capturing: None,
            graphs: Vec::new(),
            dev,
        })
    }

    /// Whether training steps are captured into CUDA graphs and replayed.
    pub fn uses_graphs(&self) -> bool {
        self.use_graphs
    }

    /// Turns graph capture off (or back on where the device can capture), e.g.
    /// to time the launch-by-launch path beside it.
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on && self.dev.can_capture_graphs();
    }

    /// The batch sizes whose step is recorded as a graph.
    pub fn recorded_steps(&self) -> Vec<usize> {
        self.graphs.iter().map(|g| g.rows).collect()
    }

    /// The device's Adam step count in sync with `steps` (a copy only when it is not).
    fn sync_steps(&mut self, steps: u64) -> Result<()> {
        if self.state_steps != Some(steps) {
            if self.capturing.is_some() {
                return Err(nnkern::Error::Cuda(
                    "internal: the optimizer's step count was out of step during a graph capture".into(),
                ));
            }
            self.state_steps = None;
            self.state.set_steps(&self.dev, steps)?;
            self.state_steps = Some(steps);
        }
        Ok(())
    }

    /// The device the buffers live on.
    pub fn device(&self) -> &Device {
        &self.dev
    }
}

fn view<'a>(m: &Mat<'a, DeviceBuffer<f32>>) -> Result<DeviceMatRef<'a, f32>> {
    DeviceMatRef::from_strides(
        m.buf,
        m.at.offset,
        m.at.rows,
        m.at.cols,
        m.at.row_stride,
        m.at.col_stride,
    )
}

fn view_mut(m: MatOut<'_, DeviceBuffer<f32>>) -> Result<DeviceMatMut<'_, f32>> {
    DeviceMatMut::from_strides(
        m.buf,
        m.at.offset,
        m.at.rows,
        m.at.cols,
        m.at.row_stride,
        m.at.col_stride,
    )
}

impl Backend for Cuda {
    type Buf = DeviceBuffer<f32>;
    type Bytes = DeviceBuffer<u8>;
    type Labels = DeviceBuffer<u32>;

    fn name(&self) -> &'static str {
        match self.dev.engine() {
            EngineKind::Driver => "cuda",
            EngineKind::Executor => "cuda-executor",
        }
    }

    fn alloc(&mut self, len: usize) -> Result<DeviceBuffer<f32>> {
        self.dev.zeros(len)
    }

    fn upload(&mut self, src: &[f32], dst: &mut DeviceBuffer<f32>) -> Result<()> {
        self.dev.copy_to_device(src, dst)
    }

    fn download(&mut self, src: &DeviceBuffer<f32>, dst: &mut [f32]) -> Result<()> {
        self.dev.copy_to_host(src, dst)
    }

    fn upload_bytes(&mut self, src: Vec<u8>) -> Result<DeviceBuffer<u8>> {
        self.dev.upload(&src)
    }

    fn alloc_labels(&mut self, len: usize) -> Result<DeviceBuffer<u32>> {
        // A model allocates its labels once, for the most rows it takes at a
        // time: the batch's row indices never need more room than that.
        if self.rows.len() < len {
            self.rows = self.dev.zeros(len)?;
        }
        self.dev.zeros(len)
    }

    fn upload_labels(&mut self, src: &[u32], dst: &mut DeviceBuffer<u32>) -> Result<()> {
        self.dev.copy_to_device(src, dst)
    }

    fn gather_scaled(
        &mut self,
        images: &DeviceBuffer<u8>,
        features: usize,
        rows: &[u32],
        divisor: f32,
        dst: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        if self.rows.len() < rows.len() {
            // Only for a caller that gathers more rows than any label buffer holds.
            self.rows = self.dev.zeros(rows.len())?;
        }
        let d = DeviceMatMut::new(dst, rows.len(), features)?;
        cuda::gather_scaled(&self.dev, images, features, rows, &mut self.rows, divisor, d)
    }

    fn gemm(
        &mut self,
        alpha: f32,
        a: Mat<'_, DeviceBuffer<f32>>,
        b: Mat<'_, DeviceBuffer<f32>>,
        beta: f32,
        c: MatOut<'_, DeviceBuffer<f32>>,
    ) -> Result<()> {
        cuda::gemm(&self.dev, alpha, view(&a)?, view(&b)?, beta, view_mut(c)?)
    }

    fn bias_add_activation(
        &mut self,
        act: Activation,
        x: MatOut<'_, DeviceBuffer<f32>>,
        bias: (&DeviceBuffer<f32>, Range<usize>),
        y: Option<MatOut<'_, DeviceBuffer<f32>>>,
    ) -> Result<()> {
        let y = y.map(view_mut).transpose()?;
        cuda::bias_add_activation_at(&self.dev, act, view_mut(x)?, bias.0, bias.1, y)
    }

    fn activation_backward_inplace(
        &mut self,
        act: Activation,
        x: (&DeviceBuffer<f32>, Range<usize>),
        grad: (&mut DeviceBuffer<f32>, Range<usize>),
    ) -> Result<()> {
        cuda::activation_backward_inplace_at(&self.dev, act, x.0, x.1, grad.0, grad.1)
    }

    fn bias_grad(
        &mut self,
        dy: Mat<'_, DeviceBuffer<f32>>,
        dbias: (&mut DeviceBuffer<f32>, Range<usize>),
    ) -> Result<()> {
        cuda::bias_grad_at(&self.dev, view(&dy)?, dbias.0, dbias.1)
    }

    fn softmax_xent(
        &mut self,
        logits: Mat<'_, DeviceBuffer<f32>>,
        labels: &DeviceBuffer<u32>,
        dlogits: Option<MatOut<'_, DeviceBuffer<f32>>>,
    ) -> Result<f32> {
        let d = dlogits.map(view_mut).transpose()?;
        self.xent.reset(&self.dev)?;
        cuda::softmax_xent_labels_accumulate(&self.dev, view(&logits)?, labels, d, &mut self.xent)?;
        if self.deferred {
            // Read at the end of the step.
            return Ok(0.0);
        }
        Ok(self.xent.read(&self.dev)? as f32)
    }

    fn count_correct(&mut self, logits: Mat<'_, DeviceBuffer<f32>>, labels: &DeviceBuffer<u32>) -> Result<usize> {
        self.dev.fill_bytes(&mut self.count, 0..1, 0)?;
        cuda::count_correct_accumulate(&self.dev, view(&logits)?, labels, &mut self.count)?;
        if self.deferred {
            return Ok(0);
        }
        let mut out = [0u32];
        self.dev.copy_to_host(&self.count, &mut out)?;
        Ok(out[0] as usize)
    }

    fn adam_step(
        &mut self,
        cfg: &AdamConfig,
        state: &mut AdamState<DeviceBuffer<f32>>,
        step: u64,
        w: &mut DeviceBuffer<f32>,
        g: &DeviceBuffer<f32>,
    ) -> Result<()> {
        if step == 0 {
            return Err(nnkern::Error::invalid("step", "steps count from 1"));
        }
        // The step number and bias corrections are the device's (so the launch is
        // the same every step); it holds step - 1 steps taken before this one.
        self.sync_steps(step - 1)?;
        let (m, v) = state.moments_mut();
        cuda::adam_step_with_state(&self.dev, cfg, &mut self.state, Some(&self.xent), w, g, m, v)?;
        self.state_steps = Some(step);
        self.stepped_adam = true;
        Ok(())
    }

    fn sgd_step(
        &mut self,
        cfg: &SgdConfig,
        state: &mut SgdState<DeviceBuffer<f32>>,
        w: &mut DeviceBuffer<f32>,
        g: &DeviceBuffer<f32>,
    ) -> Result<()> {
        cuda::sgd_step_with_state(
            &self.dev,
            cfg,
            &mut self.state,
            Some(&self.xent),
            w,
            g,
            state.buffer_mut(),
        )
    }

    fn clip_global_norm(&mut self, g: &mut DeviceBuffer<f32>, max_norm: f32) -> Result<f32> {
        if self.deferred {
            // The trainer does not use the norm; reading it would wait mid-step.
            cuda::clip_global_norm_queued(&self.dev, &mut [g], max_norm, &mut self.norm)?;
            return Ok(0.0);
        }
        cuda::clip_global_norm_with(&self.dev, &mut [g], max_norm, &mut self.norm)
    }

    fn gemm_bias_activation(
        &mut self,
        a: Mat<'_, DeviceBuffer<f32>>,
        b: Mat<'_, DeviceBuffer<f32>>,
        c: MatOut<'_, DeviceBuffer<f32>>,
        bias: (&DeviceBuffer<f32>, Range<usize>),
        act: Activation,
        y: Option<MatOut<'_, DeviceBuffer<f32>>>,
    ) -> Result<()> {
        // One launch: the bias add and the activation in the GEMM's epilogue.
        let y = y.map(view_mut).transpose()?;
        let act = if y.is_some() { act } else { Activation::Identity };
        cuda::gemm_bias_activation_at(
            &self.dev,
            1.0,
            view(&a)?,
            view(&b)?,
            0.0,
            view_mut(c)?,
            Some(bias),
            act,
            y,
        )
    }

    fn defers_step_results(&self) -> bool {
        true
    }

    fn stage_labels(&mut self, labels: &[u32]) -> Result<()> {
        if self.train_labels.len() != labels.len() {
            // Recorded steps read the old buffer's address.
            self.graphs.clear();
            self.train_labels = self.dev.zeros(labels.len())?;
        }
        self.dev.copy_to_device(labels, &mut self.train_labels)
    }

    fn stage_order(&mut self, order: &[u32]) -> Result<()> {
        if self.order.len() != order.len() {
            // Recorded steps read the old buffer's address.
            self.graphs.clear();
            self.order = self.dev.zeros(order.len())?;
        }
        self.dev.copy_to_device(order, &mut self.order)?;
        self.cursor.set(&self.dev, 0)?;
        Ok(())
    }

    fn gather_batch(
        &mut self,
        images: &DeviceBuffer<u8>,
        features: usize,
        order: &[u32],
        labels: &[u32],
        at: Range<usize>,
        divisor: f32,
        dst: &mut DeviceBuffer<f32>,
        dst_labels: &mut DeviceBuffer<u32>,
    ) -> Result<()> {
        if order.len() != self.order.len() || labels.len() != self.train_labels.len() {
            return Err(nnkern::Error::invalid(
                "order",
                "the order and labels must be those staged (stage_order, stage_labels)",
            ));
        }
        if at.end > order.len() || at.start > at.end {
            return Err(nnkern::Error::BufferTooShort {
                arg: "order",
                len: order.len(),
                needed: at.end,
            });
        }
        if self.capturing.is_none() {
            self.cursor.set(&self.dev, at.start)?;
        } else if self.cursor.position() != Some(at.start) {
            return Err(nnkern::Error::Cuda(
                "internal: the batch cursor was out of step during a graph capture".into(),
            ));
        }
        let d = DeviceMatMut::new(dst, at.len(), features)?;
        cuda::gather_batch(
            &self.dev,
            images,
            features,
            &self.order,
            &mut self.cursor,
            &self.train_labels,
            dst_labels,
            divisor,
            d,
        )
    }

    fn begin_step(&mut self, step: StepKey) -> Result<bool> {
        self.cancel_step();
        // Copies (when the cursor is not where this batch starts) come first: none
        // may happen while capturing.
        self.cursor.set(&self.dev, step.start)?;
        self.stepped_adam = false;
        let key = (step.rows, step.buffers);
        if let Some(i) = self.graphs.iter().position(|g| (g.rows, g.buffers) == key) {
            if self.graphs[i].adam {
                // The step count the replayed launches advance (a copy only when
                // the model's count was set from the host since).
                self.sync_steps(step.steps_done)?;
            }
            let r = &self.graphs[i];
            self.dev.launch_graph(&r.graph)?;
            self.cursor.replayed(step.rows);
            if r.adam {
                self.state_steps = self.state_steps.map(|t| t + 1);
                self.stepped_adam = true;
            }
            self.deferred = true;
            return Ok(true);
        }
        if self.use_graphs && self.warmed.contains(&key) {
            self.sync_steps(step.steps_done)?;
            self.dev.begin_capture()?;
            self.capturing = Some(key);
        } else if !self.warmed.contains(&key) {
            self.warmed.push(key);
        }
        self.deferred = true;
        Ok(false)
    }

    fn end_step(&mut self) -> Result<(f32, usize)> {
        if let Some((rows, buffers)) = self.capturing.take() {
            let graph = self.dev.end_capture()?;
            self.dev.launch_graph(&graph)?;
            self.graphs.push(Recorded {
                rows,
                buffers,
                graph,
                adam: self.stepped_adam,
            });
        }
        self.deferred = false;
        let loss = self.xent.read(&self.dev).map(|l| l as f32);
        if self.stepped_adam && !matches!(loss, Ok(l) if l.is_finite()) {
            // The device skipped the update (a non-finite loss or a bad label) and
            // kept its step count.
            self.state_steps = self.state_steps.map(|t| t.saturating_sub(1));
        }
        let loss = loss?;
        let mut out = [0u32];
        self.dev.copy_to_host(&self.count, &mut out)?;
        Ok((loss, out[0] as usize))
    }

    fn cancel_step(&mut self) {
        if self.capturing.take().is_some() {
            // The capture is abandoned; what it recorded never runs.
            let _ = self.dev.end_capture();
        }
        self.deferred = false;
    }
}
