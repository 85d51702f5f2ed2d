//! Where the model's tensors live and which kernels run on them.
//!
//! The model ([`super::mlp::Mlp`]) is written once against [`Backend`]: it
//! owns buffers of the backend's type and describes every operand as a
//! buffer plus a [`Layout`] (offset, shape and strides), so a transposed
//! operand is a layout with swapped strides, never a copy. A CPU backend
//! hands those descriptions to the library's public kernels as
//! [`MatRef`]/[`MatMut`] views; a GPU backend would hand the same
//! descriptions to its PTX kernels over device memory.
//!
//! Host ↔ backend traffic is limited to what a training step needs: the
//! batch's row indices and labels go in, the loss and the number of correct
//! predictions come out.

use nnkern::matrix::{MatMut, MatRef};
use nnkern::ops::activation::Activation;
use nnkern::ops::optim::{AdamConfig, AdamState, SgdConfig, SgdState};
use nnkern::ops::softmax_xent::Targets;
use nnkern::{Error, Result};
use std::ops::Range;

/// Shape and placement of a matrix inside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Index of element `(0, 0)` in the buffer.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between `(i, j)` and `(i + 1, j)`.
    pub row_stride: usize,
    /// Distance between `(i, j)` and `(i, j + 1)`.
    pub col_stride: usize,
}

impl Layout {
    /// A row-major `rows × cols` matrix starting at `offset`.
    pub const fn row_major(offset: usize, rows: usize, cols: usize) -> Layout {
        Layout {
            offset,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose: same elements, swapped shape and strides.
    #[must_use]
    pub const fn t(self) -> Layout {
        Layout {
            offset: self.offset,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// The first `rows` rows.
    #[must_use]
    pub const fn top(self, rows: usize) -> Layout {
        Layout { rows, ..self }
    }

    /// The elements of a row-major contiguous layout as a range of the buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.rows * self.cols
    }
}

/// A read-only operand: a buffer and where the matrix sits in it.
#[derive(Debug)]
pub struct Mat<'a, B> {
    /// The buffer.
    pub buf: &'a B,
    /// The matrix inside it.
    pub at: Layout,
}

impl<B> Clone for Mat<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for Mat<'_, B> {}

impl<'a, B> Mat<'a, B> {
    /// The transposed operand (no data moves).
    #[must_use]
    pub fn t(self) -> Self {
        Mat {
            buf: self.buf,
            at: self.at.t(),
        }
    }
}

/// A written operand.
#[derive(Debug)]
pub struct MatOut<'a, B> {
    /// The buffer.
    pub buf: &'a mut B,
    /// The matrix inside it.
    pub at: Layout,
}

/// A deferred training step as [`Backend::begin_step`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepKey {
    /// Rows of the batch.
    pub rows: usize,
    /// Where the batch starts in the staged order.
    pub start: usize,
    /// The model's identity (unique in the process) and the images' address: a
    /// backend replays a recorded step only over the same buffers.
    pub buffers: (u64, usize),
    /// Optimizer steps the model has taken before this one.
    pub steps_done: u64,
}

/// The operations the model needs, over the backend's own buffers.
///
/// Every method validates its operands (through the kernels it calls) and
/// returns an error rather than panicking.
pub trait Backend {
    /// A buffer of `f32`.
    type Buf;
    /// A buffer of bytes (the data set's images).
    type Bytes;
    /// A buffer of class labels.
    type Labels;

    /// Short name for messages (`cpu`, `cpu-reference`, `cuda`).
    fn name(&self) -> &'static str;
    /// Whether a loop of many calls (an epoch) should run inside
    /// [`nnkern::parallel_region`], so the library's CPU threads stay awake
    /// and split batch-sized work. Backends whose work is not on the CPU's
    /// threads say no (the default): spinning threads would only burn cores.
    fn wants_parallel_region(&self) -> bool {
        false
    }
    /// A zero-filled buffer of `len` floats.
    fn alloc(&mut self, len: usize) -> Result<Self::Buf>;
    /// Copies `src` into the start of `dst`.
    fn upload(&mut self, src: &[f32], dst: &mut Self::Buf) -> Result<()>;
    /// Copies the start of `src` into `dst`.
    fn download(&mut self, src: &Self::Buf, dst: &mut [f32]) -> Result<()>;
    /// The buffer's floats in place, where it lives in host memory (so a
    /// data-parallel run exchanges it without copies); `None` (the default)
    /// where it does not.
    fn host_mut<'a>(&self, _buf: &'a mut Self::Buf) -> Option<&'a mut [f32]> {
        None
    }
    /// A byte buffer holding `src` (taken by value so host memory can be
    /// reused rather than copied).
    fn upload_bytes(&mut self, src: Vec<u8>) -> Result<Self::Bytes>;
    /// A label buffer of `len` zeros.
    fn alloc_labels(&mut self, len: usize) -> Result<Self::Labels>;
    /// Copies `src` into the start of `dst`.
    fn upload_labels(&mut self, src: &[u32], dst: &mut Self::Labels) -> Result<()>;

    /// Row `i` of `dst` (row-major, `features` columns) = `images` row
    /// `rows[i]` converted to `f32` and divided by `divisor`.
    fn gather_scaled(
        &mut self,
        images: &Self::Bytes,
        features: usize,
        rows: &[u32],
        divisor: f32,
        dst: &mut Self::Buf,
    ) -> Result<()>;
    /// `c = alpha·a·b + beta·c`.
    fn gemm(
        &mut self,
        alpha: f32,
        a: Mat<'_, Self::Buf>,
        b: Mat<'_, Self::Buf>,
        beta: f32,
        c: MatOut<'_, Self::Buf>,
    ) -> Result<()>;
    /// `x += bias` (broadcast over rows); then `y = act(x)`, or nothing more when `y` is `None`.
    fn bias_add_activation(
        &mut self,
        act: Activation,
        x: MatOut<'_, Self::Buf>,
        bias: (&Self::Buf, Range<usize>),
        y: Option<MatOut<'_, Self::Buf>>,
    ) -> Result<()>;
    /// `grad[i] *= act'(x[i])` over the ranges.
    fn activation_backward_inplace(
        &mut self,
        act: Activation,
        x: (&Self::Buf, Range<usize>),
        grad: (&mut Self::Buf, Range<usize>),
    ) -> Result<()>;
    /// `dbias[j] = Σ_i dy[i, j]`.
    fn bias_grad(&mut self, dy: Mat<'_, Self::Buf>, dbias: (&mut Self::Buf, Range<usize>)) -> Result<()>;
    /// `grad[i, j] *= act'(x[i, j])` in place, then `dbias[j] = Σ_i grad[i, j]`
    /// (`x` and `grad` contiguous row-major, `dbias.len()` columns). The
    /// default runs the two operations one after the other; a backend with a
    /// fused kernel reads `grad` once.
    fn activation_backward_bias_grad(
        &mut self,
        act: Activation,
        x: Mat<'_, Self::Buf>,
        grad: MatOut<'_, Self::Buf>,
        dbias: (&mut Self::Buf, Range<usize>),
    ) -> Result<()> {
        let at = grad.at;
        self.activation_backward_inplace(act, (x.buf, x.at.range()), (&mut *grad.buf, at.range()))?;
        self.bias_grad(Mat { buf: &*grad.buf, at }, dbias)
    }
    /// Mean cross-entropy of the first `n` labels against `logits` (n rows);
    /// writes `dlogits` when given.
    fn softmax_xent(
        &mut self,
        logits: Mat<'_, Self::Buf>,
        labels: &Self::Labels,
        dlogits: Option<MatOut<'_, Self::Buf>>,
    ) -> Result<f32>;
    /// Rows of `logits` whose argmax equals the label.
    fn count_correct(&mut self, logits: Mat<'_, Self::Buf>, labels: &Self::Labels) -> Result<usize>;
    /// One Adam / AdamW step over whole buffers.
    fn adam_step(
        &mut self,
        cfg: &AdamConfig,
        state: &mut AdamState<Self::Buf>,
        step: u64,
        w: &mut Self::Buf,
        g: &Self::Buf,
    ) -> Result<()>;
    /// One SGD-with-momentum step over whole buffers.
    fn sgd_step(
        &mut self,
        cfg: &SgdConfig,
        state: &mut SgdState<Self::Buf>,
        w: &mut Self::Buf,
        g: &Self::Buf,
    ) -> Result<()>;
    /// Scales `g` to global norm `max_norm` when above it; returns the norm before.
    fn clip_global_norm(&mut self, g: &mut Self::Buf, max_norm: f32) -> Result<f32>;

    /// Whether [`Backend::gemm_adam_step`], [`Backend::gemm_sgd_step`] and
    /// the ranged optimizer steps are implemented, so a training step may
    /// fuse its optimizer into the weight-gradient products.
    fn supports_fused_update(&self) -> bool {
        false
    }
    /// One Adam / AdamW step of the weights at `at` (contiguous row-major) in
    /// `params` and the same elements of the moments, with gradient `a·b`
    /// (never written out): the values of a GEMM into a gradient buffer
    /// followed by [`Backend::adam_step`], bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn gemm_adam_step(
        &mut self,
        _cfg: &AdamConfig,
        _state: &mut AdamState<Self::Buf>,
        _step: u64,
        _params: &mut Self::Buf,
        _at: Layout,
        _a: Mat<'_, Self::Buf>,
        _b: Mat<'_, Self::Buf>,
    ) -> Result<()> {
        Err(no_fused_update(self.name()))
    }
    /// As [`Backend::gemm_adam_step`], for SGD with momentum.
    fn gemm_sgd_step(
        &mut self,
        _cfg: &SgdConfig,
        _state: &mut SgdState<Self::Buf>,
        _params: &mut Self::Buf,
        _at: Layout,
        _a: Mat<'_, Self::Buf>,
        _b: Mat<'_, Self::Buf>,
    ) -> Result<()> {
        Err(no_fused_update(self.name()))
    }
    /// Whether [`Backend::adam_step_range`] and [`Backend::sgd_step_range`]
    /// are implemented (by default, where the fused update is).
    fn supports_ranged_update(&self) -> bool {
        self.supports_fused_update()
    }
    /// One Adam / AdamW step over elements `r` of the parameters, gradients and moments.
    fn adam_step_range(
        &mut self,
        _cfg: &AdamConfig,
        _state: &mut AdamState<Self::Buf>,
        _step: u64,
        _params: &mut Self::Buf,
        _grads: &Self::Buf,
        _r: Range<usize>,
    ) -> Result<()> {
        Err(no_fused_update(self.name()))
    }
    /// One SGD step over elements `r` of the parameters, gradients and momentum.
    fn sgd_step_range(
        &mut self,
        _cfg: &SgdConfig,
        _state: &mut SgdState<Self::Buf>,
        _params: &mut Self::Buf,
        _grads: &Self::Buf,
        _r: Range<usize>,
    ) -> Result<()> {
        Err(no_fused_update(self.name()))
    }

    // The methods below have defaults that do what the ones above do; a device
    // backend overrides them to keep the data of a run on the device and to
    // run a training step without waiting for it until its end.

    /// The forward pass of a dense layer: `c = a·b`, then `c += bias` and
    /// `y = act(c)` as [`Backend::bias_add_activation`] does. A GPU backend fuses
    /// this into the GEMM's epilogue.
    fn gemm_bias_activation(
        &mut self,
        a: Mat<'_, Self::Buf>,
        b: Mat<'_, Self::Buf>,
        c: MatOut<'_, Self::Buf>,
        bias: (&Self::Buf, Range<usize>),
        act: Activation,
        y: Option<MatOut<'_, Self::Buf>>,
    ) -> Result<()> {
        let at = c.at;
        self.gemm(1.0, a, b, 0.0, MatOut { buf: &mut *c.buf, at })?;
        self.bias_add_activation(act, c, bias, y)
    }

    /// Whether training steps go through [`Backend::begin_step`] /
    /// [`Backend::end_step`] with the batches from [`Backend::gather_batch`]
    /// (the loss and the correct count read once, at the end of the step). The
    /// default: no, the plain step.
    fn defers_step_results(&self) -> bool {
        false
    }

    /// The training set's labels, once per run, for [`Backend::gather_batch`]
    /// (a device backend keeps them on the device). The default keeps nothing.
    fn stage_labels(&mut self, labels: &[u32]) -> Result<()> {
        let _ = labels;
        Ok(())
    }

    /// The epoch's order of training rows, once per epoch, for
    /// [`Backend::gather_batch`]. The default keeps nothing.
    fn stage_order(&mut self, order: &[u32]) -> Result<()> {
        let _ = order;
        Ok(())
    }

    /// Loads the training batch `order[at]`: row `i` of `dst` = `images` row
    /// `order[at.start + i]` scaled as [`Backend::gather_scaled`] does, and
    /// `dst_labels[i]` = its label. `order` and `labels` are those last given to
    /// [`Backend::stage_order`] and [`Backend::stage_labels`], which a device
    /// backend reads instead (no copy per batch). The default gathers on the host.
    #[allow(clippy::too_many_arguments)]
    fn gather_batch(
        &mut self,
        images: &Self::Bytes,
        features: usize,
        order: &[u32],
        labels: &[u32],
        at: Range<usize>,
        divisor: f32,
        dst: &mut Self::Buf,
        dst_labels: &mut Self::Labels,
    ) -> Result<()> {
        let len = order.len();
        let rows = order.get(at.clone()).ok_or(Error::BufferTooShort {
            arg: "order",
            len,
            needed: at.end,
        })?;
        let lab = rows
            .iter()
            .map(|&r| labels.get(r as usize).copied())
            .collect::<Option<Vec<u32>>>()
            .ok_or(Error::invalid("order", "a row past the labels"))?;
        self.gather_scaled(images, features, rows, divisor, dst)?;
        self.upload_labels(&lab, dst_labels)
    }

    /// Starts a deferred training step. `Ok(true)`: the backend replayed a
    /// recorded step of that size over the same buffers itself (nothing more is
    /// to be issued before [`Backend::end_step`]); `Ok(false)`: the caller issues
    /// the step's operations, which return placeholder values (0) for the loss
    /// and count.
    fn begin_step(&mut self, step: StepKey) -> Result<bool> {
        let _ = step;
        Ok(false)
    }

    /// Ends a deferred step: the loss and correct count of its batch. A non-finite
    /// loss means the update was skipped (the parameters and optimizer state are
    /// as before the step).
    fn end_step(&mut self) -> Result<(f32, usize)> {
        Err(Error::invalid("backend", "this backend does not defer step results"))
    }

    /// Abandons a deferred step after an error in it.
    fn cancel_step(&mut self) {}
}

fn no_fused_update(backend: &str) -> Error {
    Error::invalid(
        "backend",
        format!("the {backend} backend has no fused optimizer update"),
    )
}

/// Which implementation of each kernel the CPU backend calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuKernels {
    /// The library's dispatched kernels (`nnkern::gemm`, …).
    #[default]
    Fast,
    /// The naive reference (`nnkern::reference::*`): slow, the oracle.
    Reference,
}

/// The CPU backend: buffers are `Vec`s, operations are the library's kernels.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    kernels: CpuKernels,
}

impl Cpu {
    /// A CPU backend calling the fast (dispatched) kernels.
    pub fn new() -> Cpu {
        Cpu::default()
    }
    /// A CPU backend calling the naive reference kernels.
    pub fn reference() -> Cpu {
        Cpu {
            kernels: CpuKernels::Reference,
        }
    }
    /// Which kernels it calls.
    pub fn kernels(&self) -> CpuKernels {
        self.kernels
    }
}

fn view<'a>(arg: &'static str, m: &Mat<'a, Vec<f32>>) -> Result<MatRef<'a, f32>> {
    let data = m.buf.get(m.at.offset..).ok_or(Error::BufferTooShort {
        arg,
        len: m.buf.len(),
        needed: m.at.offset,
    })?;
    MatRef::from_strides_named(arg, data, m.at.rows, m.at.cols, m.at.row_stride, m.at.col_stride)
}

fn view_mut<'a>(arg: &'static str, m: MatOut<'a, Vec<f32>>) -> Result<MatMut<'a, f32>> {
    let len = m.buf.len();
    let data = m.buf.get_mut(m.at.offset..).ok_or(Error::BufferTooShort {
        arg,
        len,
        needed: m.at.offset,
    })?;
    MatMut::from_strides_named(arg, data, m.at.rows, m.at.cols, m.at.row_stride, m.at.col_stride)
}

fn slice<'a>(arg: &'static str, buf: &'a [f32], r: Range<usize>) -> Result<&'a [f32]> {
    let len = buf.len();
    buf.get(r.clone()).ok_or(Error::BufferTooShort {
        arg,
        len,
        needed: r.end,
    })
}

fn slice_mut<'a>(arg: &'static str, buf: &'a mut [f32], r: Range<usize>) -> Result<&'a mut [f32]> {
    let len = buf.len();
    buf.get_mut(r.clone()).ok_or(Error::BufferTooShort {
        arg,
        len,
        needed: r.end,
    })
}

fn labels_for(labels: &[u32], rows: usize) -> Result<&[u32]> {
    labels
        .get(..rows)
        .ok_or(Error::shape("labels", (labels.len(), 1), (rows, 1)))
}

/// `dst[i] = src[i] / divisor`, a correctly rounded division as NumPy and
/// Keras compute x/255 (multiplying by 1/255 would differ in the last bit for
/// some bytes). The loop is compiled once more with AVX-512 or AVX2 enabled so
/// the conversion and the division run 16 or 8 lanes wide: the batch gather
/// touches every input pixel of every step.
fn scale_row(isa: nnkern::Isa, src: &[u8], dst: &mut [f32], divisor: f32) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `active_isa` only reports an ISA this CPU supports, and
        // AVX-512 there includes AVX-512F.
        nnkern::Isa::Avx512 => return unsafe { scale_row_avx512(src, dst, divisor) },
        // SAFETY: as above; the AVX2 level includes AVX2.
        nnkern::Isa::Avx2 => return unsafe { scale_row_avx2(src, dst, divisor) },
        _ => {}
    }
    let _ = isa;
    scale_row_portable(src, dst, divisor)
}

#[inline(always)]
fn scale_row_portable(src: &[u8], dst: &mut [f32], divisor: f32) {
    for (o, &b) in dst.iter_mut().zip(src) {
        *o = f32::from(b) / divisor;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scale_row_avx512(src: &[u8], dst: &mut [f32], divisor: f32) {
    scale_row_portable(src, dst, divisor)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scale_row_avx2(src: &[u8], dst: &mut [f32], divisor: f32) {
    scale_row_portable(src, dst, divisor)
}

impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Bytes = Vec<u8>;
    type Labels = Vec<u32>;

    fn name(&self) -> &'static str {
        match self.kernels {
            CpuKernels::Fast => "cpu",
            CpuKernels::Reference => "cpu-reference",
        }
    }

    fn wants_parallel_region(&self) -> bool {
        self.kernels == CpuKernels::Fast
    }

    fn alloc(&mut self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&mut self, src: &[f32], dst: &mut Vec<f32>) -> Result<()> {
        let len = dst.len();
        dst.get_mut(..src.len())
            .ok_or(Error::BufferTooShort {
                arg: "dst",
                len,
                needed: src.len(),
            })?
            .copy_from_slice(src);
        Ok(())
    }

    fn download(&mut self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(slice("src", src, 0..dst.len())?);
        Ok(())
    }

    fn host_mut<'a>(&self, buf: &'a mut Vec<f32>) -> Option<&'a mut [f32]> {
        Some(buf.as_mut_slice())
    }

    fn upload_bytes(&mut self, src: Vec<u8>) -> Result<Vec<u8>> {
        Ok(src)
    }

    fn alloc_labels(&mut self, len: usize) -> Result<Vec<u32>> {
        Ok(vec![0; len])
    }

    fn upload_labels(&mut self, src: &[u32], dst: &mut Vec<u32>) -> Result<()> {
        let len = dst.len();
        dst.get_mut(..src.len())
            .ok_or(Error::BufferTooShort {
                arg: "labels",
                len,
                needed: src.len(),
            })?
            .copy_from_slice(src);
        Ok(())
    }

    fn gather_scaled(
        &mut self,
        images: &Vec<u8>,
        features: usize,
        rows: &[u32],
        divisor: f32,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        let needed = rows.len() * features;
        if dst.len() < needed {
            return Err(Error::BufferTooShort {
                arg: "dst",
                len: dst.len(),
                needed,
            });
        }
        let count = images.len() / features.max(1);
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= count) {
            return Err(Error::invalid("rows", format!("row {r} of a set of {count}")));
        }
        let isa = nnkern::active_isa();
        for (out, &r) in dst.chunks_exact_mut(features.max(1)).zip(rows) {
            let r = r as usize;
            scale_row(isa, &images[r * features..(r + 1) * features], out, divisor);
        }
        Ok(())
    }

    fn gemm(
        &mut self,
        alpha: f32,
        a: Mat<'_, Vec<f32>>,
        b: Mat<'_, Vec<f32>>,
        beta: f32,
        c: MatOut<'_, Vec<f32>>,
    ) -> Result<()> {
        let (a, b, c) = (view("a", &a)?, view("b", &b)?, view_mut("c", c)?);
        match self.kernels {
            CpuKernels::Fast => nnkern::gemm(alpha, a, b, beta, c),
            CpuKernels::Reference => nnkern::reference::gemm(alpha, a, b, beta, c),
        }
    }

    fn bias_add_activation(
        &mut self,
        act: Activation,
        x: MatOut<'_, Vec<f32>>,
        bias: (&Vec<f32>, Range<usize>),
        y: Option<MatOut<'_, Vec<f32>>>,
    ) -> Result<()> {
        let x = view_mut("x", x)?;
        let bias = slice("bias", bias.0, bias.1)?;
        match (y, self.kernels) {
            (Some(y), CpuKernels::Fast) => nnkern::bias_add_activation(act, x, bias, view_mut("y", y)?),
            (Some(y), CpuKernels::Reference) => nnkern::reference::bias_add_activation(act, x, bias, view_mut("y", y)?),
            (None, CpuKernels::Fast) => nnkern::bias_add(x, bias),
            (None, CpuKernels::Reference) => nnkern::reference::bias_add(x, bias),
        }
    }

    fn activation_backward_inplace(
        &mut self,
        act: Activation,
        x: (&Vec<f32>, Range<usize>),
        grad: (&mut Vec<f32>, Range<usize>),
    ) -> Result<()> {
        let x = slice("x", x.0, x.1)?;
        let g = slice_mut("grad", grad.0, grad.1)?;
        match self.kernels {
            CpuKernels::Fast => {
                nnkern::activation_backward_inplace(act, MatRef::row_vector(x)?, MatMut::row_vector(g)?)
            }
            CpuKernels::Reference => {
                nnkern::reference::activation_backward_inplace(act, MatRef::row_vector(x)?, MatMut::row_vector(g)?)
            }
        }
    }

    fn activation_backward_bias_grad(
        &mut self,
        act: Activation,
        x: Mat<'_, Vec<f32>>,
        grad: MatOut<'_, Vec<f32>>,
        dbias: (&mut Vec<f32>, Range<usize>),
    ) -> Result<()> {
        let (x, g) = (view("x", &x)?, view_mut("grad", grad)?);
        let db = slice_mut("dbias", dbias.0, dbias.1)?;
        match self.kernels {
            CpuKernels::Fast => nnkern::activation_backward_bias_grad(act, x, g, db),
            CpuKernels::Reference => nnkern::reference::activation_backward_bias_grad(act, x, g, db),
        }
    }

    fn bias_grad(&mut self, dy: Mat<'_, Vec<f32>>, dbias: (&mut Vec<f32>, Range<usize>)) -> Result<()> {
        let dy = view("dy", &dy)?;
        let db = slice_mut("dbias", dbias.0, dbias.1)?;
        match self.kernels {
            CpuKernels::Fast => nnkern::bias_grad(dy, db),
            CpuKernels::Reference => nnkern::reference::bias_grad(dy, db),
        }
    }

    fn softmax_xent(
        &mut self,
        logits: Mat<'_, Vec<f32>>,
        labels: &Vec<u32>,
        dlogits: Option<MatOut<'_, Vec<f32>>>,
    ) -> Result<f32> {
        let logits = view("logits", &logits)?;
        let t = Targets::Labels(labels_for(labels, logits.rows())?);
        match (dlogits, self.kernels) {
            (Some(d), CpuKernels::Fast) => nnkern::softmax_xent(logits, t, view_mut("dlogits", d)?),
            (Some(d), CpuKernels::Reference) => nnkern::reference::softmax_xent(logits, t, view_mut("dlogits", d)?),
            (None, CpuKernels::Fast) => nnkern::softmax_xent_loss(logits, t),
            (None, CpuKernels::Reference) => nnkern::reference::softmax_xent_loss(logits, t),
        }
    }

    fn count_correct(&mut self, logits: Mat<'_, Vec<f32>>, labels: &Vec<u32>) -> Result<usize> {
        let logits = view("logits", &logits)?;
        let labels = labels_for(labels, logits.rows())?;
        match self.kernels {
            CpuKernels::Fast => nnkern::count_correct(logits, labels),
            CpuKernels::Reference => nnkern::reference::count_correct(logits, labels),
        }
    }

    fn adam_step(
        &mut self,
        cfg: &AdamConfig,
        state: &mut AdamState<Vec<f32>>,
        step: u64,
        w: &mut Vec<f32>,
        g: &Vec<f32>,
    ) -> Result<()> {
        match self.kernels {
            CpuKernels::Fast => nnkern::adam_step(cfg, state, step, w, g),
            CpuKernels::Reference => nnkern::reference::adam_step(cfg, state, step, w, g),
        }
    }

    fn sgd_step(
        &mut self,
        cfg: &SgdConfig,
        state: &mut SgdState<Vec<f32>>,
        w: &mut Vec<f32>,
        g: &Vec<f32>,
    ) -> Result<()> {
        match self.kernels {
            CpuKernels::Fast => nnkern::sgd_step(cfg, state, w, g),
            CpuKernels::Reference => nnkern::reference::sgd_step(cfg, state, w, g),
        }
    }

    fn supports_fused_update(&self) -> bool {
        // The reference kernels stay the plain composition of operations.
        self.kernels == CpuKernels::Fast
    }

    fn supports_ranged_update(&self) -> bool {
        // Both kernel sets: the reference one steps a range as it steps the whole.
        true
    }

    fn gemm_adam_step(
        &mut self,
        cfg: &AdamConfig,
        state: &mut AdamState<Vec<f32>>,
        step: u64,
        params: &mut Vec<f32>,
        at: Layout,
        a: Mat<'_, Vec<f32>>,
        b: Mat<'_, Vec<f32>>,
    ) -> Result<()> {
        let (a, b) = (view("a", &a)?, view("b", &b)?);
        let r = at.range();
        let w = slice_mut("params", params, r.clone())?;
        let (m, v) = state.moments_mut();
        let mut st = AdamState::from_moments(slice_mut("m", m, r.clone())?, slice_mut("v", v, r)?);
        match self.kernels {
            CpuKernels::Fast => nnkern::gemm_adam_step(cfg, &mut st, step, w, a, b),
            CpuKernels::Reference => {
                // The reference has no fused form: the product, then the step.
                let mut g = vec![0.0f32; w.len()];
                nnkern::reference::gemm(1.0, a, b, 0.0, MatMut::new(&mut g, at.rows, at.cols)?)?;
                nnkern::reference::adam_step(cfg, &mut st, step, w, &g)
            }
        }
    }

    fn gemm_sgd_step(
        &mut self,
        cfg: &SgdConfig,
        state: &mut SgdState<Vec<f32>>,
        params: &mut Vec<f32>,
        at: Layout,
        a: Mat<'_, Vec<f32>>,
        b: Mat<'_, Vec<f32>>,
    ) -> Result<()> {
        let (a, b) = (view("a", &a)?, view("b", &b)?);
        let r = at.range();
        let w = slice_mut("params", params, r.clone())?;
        let mut st = SgdState::from_buffer(slice_mut("momentum", state.buffer_mut(), r)?);
        match self.kernels {
            CpuKernels::Fast => nnkern::gemm_sgd_step(cfg, &mut st, w, a, b),
            CpuKernels::Reference => {
                let mut g = vec![0.0f32; w.len()];
                nnkern::reference::gemm(1.0, a, b, 0.0, MatMut::new(&mut g, at.rows, at.cols)?)?;
                nnkern::reference::sgd_step(cfg, &mut st, w, &g)
            }
        }
    }

    fn adam_step_range(
        &mut self,
        cfg: &AdamConfig,
        state: &mut AdamState<Vec<f32>>,
        step: u64,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        r: Range<usize>,
    ) -> Result<()> {
        let w = slice_mut("params", params, r.clone())?;
        let g = slice("grads", grads, r.clone())?;
        let (m, v) = state.moments_mut();
        let mut st = AdamState::from_moments(slice_mut("m", m, r.clone())?, slice_mut("v", v, r)?);
        match self.kernels {
            CpuKernels::Fast => nnkern::adam_step(cfg, &mut st, step, w, g),
            CpuKernels::Reference => nnkern::reference::adam_step(cfg, &mut st, step, w, g),
        }
    }

    fn sgd_step_range(
        &mut self,
        cfg: &SgdConfig,
        state: &mut SgdState<Vec<f32>>,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        r: Range<usize>,
    ) -> Result<()> {
        let w = slice_mut("params", params, r.clone())?;
        let g = slice("grads", grads, r.clone())?;
        let mut st = SgdState::from_buffer(slice_mut("momentum", state.buffer_mut(), r)?);
        match self.kernels {
            CpuKernels::Fast => nnkern::sgd_step(cfg, &mut st, w, g),
            CpuKernels::Reference => nnkern::reference::sgd_step(cfg, &mut st, w, g),
        }
    }

    fn clip_global_norm(&mut self, g: &mut Vec<f32>, max_norm: f32) -> Result<f32> {
        match self.kernels {
            CpuKernels::Fast => nnkern::clip_global_norm(&mut [g.as_mut_slice()], max_norm),
            CpuKernels::Reference => nnkern::reference::clip_global_norm(&mut [g.as_mut_slice()], max_norm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_divides_exactly_on_every_isa() {
        // Two rows holding every byte value (and a tail shorter than a vector).
        let features = 256 + 13;
        let images: Vec<u8> = (0..2 * features).map(|i| (i * 7 % 256) as u8).collect();
        for isa in nnkern::testing::test_isas() {
            let mut dst = vec![f32::NAN; 3 * features];
            nnkern::with_isa(isa, || {
                Cpu::new()
                    .gather_scaled(&images, features, &[1, 0, 1], 255.0, &mut dst)
                    .unwrap()
            })
            .unwrap();
            for (i, &d) in dst.iter().enumerate() {
                let row = [1, 0, 1][i / features];
                let want = f32::from(images[row * features + i % features]) / 255.0;
                assert_eq!(d.to_bits(), want.to_bits(), "{isa}: element {i}");
            }
        }
        let mut dst = vec![0.0; features];
        assert!(Cpu::new()
            .gather_scaled(&images, features, &[2], 255.0, &mut dst)
            .is_err());
    }
}
