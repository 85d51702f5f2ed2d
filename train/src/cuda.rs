//! The CUDA backend (feature `cuda`): the model's buffers live on one
//! [`nnkern::cuda::Device`] — a GPU through the CUDA driver, or the PTX
//! executor, which runs the same kernels and host code on the CPU — and every
//! operation of a training step is a kernel launch on its stream.
//!
//! A step moves only what [`Backend`] says it does: the batch's row indices
//! and labels go in (two small copies), the loss and the correct count come
//! out (two small reads, each waiting for the stream). The images are copied
//! to the device once; the row-index buffer is sized by the first label
//! buffer the model allocates (its largest batch), and the loss, count and
//! norm accumulators once, when the backend is made, so a step allocates
//! nothing on the device.

use crate::backend::{Backend, Mat, MatOut};
use nnkern::cuda::{self, Device, DeviceBuffer, DeviceMatMut, DeviceMatRef, EngineKind, XentAccumulator};
use nnkern::ops::activation::Activation;
use nnkern::ops::optim::{AdamConfig, AdamState, SgdConfig, SgdState};
use nnkern::Result;
use std::ops::Range;

/// The CUDA backend: buffers are [`DeviceBuffer`]s of one device.
#[derive(Debug)]
pub struct Cuda {
    dev: Device,
    /// The batch's row indices for the gather kernel.
    rows: DeviceBuffer<u32>,
    /// Loss accumulator of the fused softmax + cross-entropy.
    xent: XentAccumulator,
    /// Correct-prediction counter.
    count: DeviceBuffer<u32>,
    /// Sum-of-squares accumulator of the gradient clipping.
    norm: DeviceBuffer<f32>,
}

impl Cuda {
    /// The backend on CUDA GPU `ordinal`: [`Error::NoCuda`] when there is no
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
        Ok(Cuda {
            rows: dev.zeros(0)?,
            xent: XentAccumulator::new(&dev)?,
            count: dev.zeros(1)?,
            norm: dev.zeros(2)?,
            dev,
        })
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
        Ok(self.xent.read(&self.dev)? as f32)
    }

    fn count_correct(&mut self, logits: Mat<'_, DeviceBuffer<f32>>, labels: &DeviceBuffer<u32>) -> Result<usize> {
        self.dev.copy_to_device(&[0], &mut self.count)?;
        cuda::count_correct_accumulate(&self.dev, view(&logits)?, labels, &mut self.count)?;
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
        let (m, v) = state.moments_mut();
        cuda::adam_step(&self.dev, cfg, step, w, g, m, v)
    }

    fn sgd_step(
        &mut self,
        cfg: &SgdConfig,
        state: &mut SgdState<DeviceBuffer<f32>>,
        w: &mut DeviceBuffer<f32>,
        g: &DeviceBuffer<f32>,
    ) -> Result<()> {
        cuda::sgd_step(&self.dev, cfg, w, g, state.buffer_mut())
    }

    fn clip_global_norm(&mut self, g: &mut DeviceBuffer<f32>, max_norm: f32) -> Result<f32> {
        cuda::clip_global_norm_with(&self.dev, &mut [g], max_norm, &mut self.norm)
    }
}
