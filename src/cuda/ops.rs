//! The operations on device buffers: the same names, checks and errors as the
//! CPU side, each one or a few kernel launches on the device's stream.

use super::buffer::{DeviceBuffer, DeviceElem, DeviceMatMut, DeviceMatRef};
use super::device::{Device, ACTIVATION_PTX, GEMM_F32_PTX, GEMM_SM90_PTX, GEMM_TC_PTX, OPTIM_PTX, SOFTMAX_XENT_PTX};
use super::engine::KernelArg as Arg;
use super::tensor_map::{TensorMapElem, TensorMapSwizzle, TiledTensorMap};
use crate::error::{Error, Result};
use crate::ops::activation::{check_same_len, Activation};
use crate::ops::bias::check_bias;
use crate::ops::optim::{check_adam, check_clip, AdamConfig, AdamEpsilon, SgdConfig, WeightDecay};
use crate::ops::softmax_xent::check_same_shape;
use half::{bf16, f16};
use std::ops::Range;
use std::sync::Arc;

const BLOCK: u32 = 256;
/// Largest grid.y (and the cap used for grid-stride x dimensions).
const GRID_CAP: usize = 65535;
/// Elements per chunk of the multi-tensor optimizer kernels.
const CHUNK: usize = 8192;

fn act_code(act: Activation) -> u32 {
    match act {
        Activation::Identity => 0,
        Activation::Relu => 1,
        Activation::Sigmoid => 2,
        Activation::Tanh => 3,
        Activation::GeluTanh => 4,
        Activation::GeluErf => 5,
    }
}

// Launch geometry: every grid dimension below is clamped to GRID_CAP (or checked
// against i32::MAX) before the cast to u32, so no cast truncates; the kernels
// stride over what one grid does not cover.
// The grid-stride kernels take at most `dev.grid_cap()` (GRID_CAP unless a test
// lowered it) blocks per dimension.
fn grid_1d(dev: &Device, n: usize) -> (u32, u32, u32) {
    (n.div_ceil(BLOCK as usize).clamp(1, dev.grid_cap(GRID_CAP)) as u32, 1, 1)
}

fn grid_2d(dev: &Device, rows: usize, cols: usize) -> (u32, u32, u32) {
    let cap = dev.grid_cap(GRID_CAP);
    (
        cols.div_ceil(BLOCK as usize).clamp(1, cap) as u32,
        rows.clamp(1, cap) as u32,
        1,
    )
}

/// The epilogue's device addresses and Y strides: the bias (0 when none) and
/// Y (0 with zero strides when none), as both GEMM kernels take them.
fn epilogue_addrs(
    dev: &Device,
    bias: Option<BiasAt<'_>>,
    y: &Option<DeviceMatMut<'_, f32>>,
) -> Result<(u64, u64, usize, usize)> {
    let pbias = match bias {
        Some((b, at)) => range_addr(dev, "bias", b, &at)?,
        None => 0,
    };
    let (py, yrs, ycs) = match y {
        Some(y) => (dev.addr(y.buf, y.offset)?, y.rs, y.cs),
        None => (0, 0, 0),
    };
    Ok((pbias, py, yrs, ycs))
}

/// A bias: elements `.1` of buffer `.0`.
type BiasAt<'a> = (&'a DeviceBuffer<f32>, Range<usize>);

fn whole(b: Option<&DeviceBuffer<f32>>) -> Option<BiasAt<'_>> {
    b.map(|b| (b, 0..b.len()))
}

fn u64_of(v: usize) -> Arg {
    Arg::U64(v as u64)
}

// ---------------------------------------------------------------- activations

/// `y[i] = f(x[i])` on the device.
pub fn activation_forward(
    dev: &Device,
    act: Activation,
    x: &DeviceBuffer<f32>,
    y: &mut DeviceBuffer<f32>,
) -> Result<()> {
    check_same_len("y", y.len(), x.len())?;
    let (px, py) = (dev.addr(x, 0)?, dev.addr(y, 0)?);
    act_fwd(dev, act, px, py, x.len())
}

/// `x[i] = f(x[i])` in place on the device.
pub fn activation_forward_inplace(dev: &Device, act: Activation, x: &mut DeviceBuffer<f32>) -> Result<()> {
    let p = dev.addr(x, 0)?;
    act_fwd(dev, act, p, p, x.len())
}

fn act_fwd(dev: &Device, act: Activation, px: u64, py: u64, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let f = dev.function("activation.ptx", ACTIVATION_PTX, "nk_act_fwd")?;
    let args = [Arg::U64(px), Arg::U64(py), u64_of(n), Arg::U32(act_code(act))];
    dev.launch(&f, grid_1d(dev, n), (BLOCK, 1, 1), &args)
}

/// `dx[i] = dy[i] · f'(x[i])` on the device.
pub fn activation_backward(
    dev: &Device,
    act: Activation,
    x: &DeviceBuffer<f32>,
    dy: &DeviceBuffer<f32>,
    dx: &mut DeviceBuffer<f32>,
) -> Result<()> {
    check_same_len("dy", dy.len(), x.len())?;
    check_same_len("dx", dx.len(), x.len())?;
    let (px, pdy, pdx) = (dev.addr(x, 0)?, dev.addr(dy, 0)?, dev.addr(dx, 0)?);
    act_bwd(dev, act, px, pdy, pdx, x.len())
}

/// `grad[i] = grad[i] · f'(x[i])` in place on the device.
pub fn activation_backward_inplace(
    dev: &Device,
    act: Activation,
    x: &DeviceBuffer<f32>,
    grad: &mut DeviceBuffer<f32>,
) -> Result<()> {
    check_same_len("grad", grad.len(), x.len())?;
    let (px, pg) = (dev.addr(x, 0)?, dev.addr(grad, 0)?);
    act_bwd(dev, act, px, pg, pg, x.len())
}

/// [`activation_backward_inplace`] over elements `x_at` of `x` and `grad_at`
/// of `grad` (ranges of equal length inside each buffer).
pub fn activation_backward_inplace_at(
    dev: &Device,
    act: Activation,
    x: &DeviceBuffer<f32>,
    x_at: Range<usize>,
    grad: &mut DeviceBuffer<f32>,
    grad_at: Range<usize>,
) -> Result<()> {
    let px = range_addr(dev, "x", x, &x_at)?;
    let pg = range_addr(dev, "grad", grad, &grad_at)?;
    check_same_len("grad", grad_at.len(), x_at.len())?;
    act_bwd(dev, act, px, pg, pg, x_at.len())
}

fn act_bwd(dev: &Device, act: Activation, px: u64, pdy: u64, pdx: u64, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let f = dev.function("activation.ptx", ACTIVATION_PTX, "nk_act_bwd")?;
    let args = [
        Arg::U64(px),
        Arg::U64(pdy),
        Arg::U64(pdx),
        u64_of(n),
        Arg::U32(act_code(act)),
    ];
    dev.launch(&f, grid_1d(dev, n), (BLOCK, 1, 1), &args)
}

// ---------------------------------------------------------------- bias

/// `x[i, j] += bias[j]` on the device.
pub fn bias_add(dev: &Device, x: DeviceMatMut<'_, f32>, bias: &DeviceBuffer<f32>) -> Result<()> {
    check_bias("bias", bias.len(), x.cols)?;
    bias_act(dev, Activation::Identity, &x, dev.addr(bias, 0)?, None)
}

/// `x[i, j] += bias[j]`, then `y = f(x)`, on the device (the forward epilogue of a
/// dense layer; `x` keeps the pre-activation).
pub fn bias_add_activation(
    dev: &Device,
    act: Activation,
    x: DeviceMatMut<'_, f32>,
    bias: &DeviceBuffer<f32>,
    y: DeviceMatMut<'_, f32>,
) -> Result<()> {
    check_bias("bias", bias.len(), x.cols)?;
    check_same_shape("y", y.shape(), x.shape())?;
    bias_act(dev, act, &x, dev.addr(bias, 0)?, Some(&y))
}

/// The address of elements `at` of `buf`, after checking that they lie inside it.
fn range_addr<T: DeviceElem>(dev: &Device, arg: &'static str, buf: &DeviceBuffer<T>, at: &Range<usize>) -> Result<u64> {
    if at.start > at.end {
        return Err(Error::invalid(arg, format!("range {at:?} ends before it starts")));
    }
    if at.end > buf.len() {
        return Err(Error::BufferTooShort {
            arg,
            len: buf.len(),
            needed: at.end,
        });
    }
    dev.addr(buf, at.start)
}

/// [`bias_add_activation`] (or, when `y` is `None`, [`bias_add`]) with the bias
/// at elements `bias_at` of a larger buffer (e.g. one holding every layer's
/// parameters).
pub fn bias_add_activation_at(
    dev: &Device,
    act: Activation,
    x: DeviceMatMut<'_, f32>,
    bias: &DeviceBuffer<f32>,
    bias_at: Range<usize>,
    y: Option<DeviceMatMut<'_, f32>>,
) -> Result<()> {
    let pb = range_addr(dev, "bias", bias, &bias_at)?;
    check_bias("bias", bias_at.len(), x.cols)?;
    if let Some(y) = &y {
        check_same_shape("y", y.shape(), x.shape())?;
    }
    match &y {
        Some(y) => bias_act(dev, act, &x, pb, Some(y)),
        None => bias_act(dev, Activation::Identity, &x, pb, None),
    }
}

fn bias_act(
    dev: &Device,
    act: Activation,
    x: &DeviceMatMut<'_, f32>,
    pbias: u64,
    y: Option<&DeviceMatMut<'_, f32>>,
) -> Result<()> {
    if x.rows == 0 || x.cols == 0 {
        return Ok(());
    }
    let f = dev.function("activation.ptx", ACTIVATION_PTX, "nk_bias_act")?;
    let (py, yrs, ycs) = match y {
        Some(y) => (dev.addr(y.buf, y.offset)?, y.rs, y.cs),
        None => (0, 0, 0),
    };
    let args = [
        Arg::U64(dev.addr(x.buf, x.offset)?),
        u64_of(x.rows),
        u64_of(x.cols),
        u64_of(x.rs),
        u64_of(x.cs),
        Arg::U64(pbias),
        Arg::U64(py),
        u64_of(yrs),
        u64_of(ycs),
        Arg::U32(act_code(act)),
        Arg::U32(u32::from(y.is_some())),
    ];
    dev.launch(&f, grid_2d(dev, x.rows, x.cols), (BLOCK, 1, 1), &args)
}

/// `dbias[j] = Σ_i dy[i, j]` on the device (overwrites `dbias`).
pub fn bias_grad(dev: &Device, dy: DeviceMatRef<'_, f32>, dbias: &mut DeviceBuffer<f32>) -> Result<()> {
    check_bias("dbias", dbias.len(), dy.cols)?;
    let pd = dev.addr(dbias, 0)?;
    bias_grad_impl(dev, dy, pd)
}

/// [`bias_grad`] into elements `at` of a larger buffer (e.g. one holding every
/// layer's gradients); the rest of the buffer is left alone.
pub fn bias_grad_at(
    dev: &Device,
    dy: DeviceMatRef<'_, f32>,
    dbias: &mut DeviceBuffer<f32>,
    at: Range<usize>,
) -> Result<()> {
    let pd = range_addr(dev, "dbias", dbias, &at)?;
    check_bias("dbias", at.len(), dy.cols)?;
    bias_grad_impl(dev, dy, pd)
}

fn bias_grad_impl(dev: &Device, dy: DeviceMatRef<'_, f32>, pdbias: u64) -> Result<()> {
    if dy.cols == 0 {
        return Ok(());
    }
    let f = dev.function("activation.ptx", ACTIVATION_PTX, "nk_bias_grad")?;
    let blocks = dy.cols.div_ceil(32);
    if blocks > i32::MAX as usize {
        return Err(Error::invalid("dy", "more than 2^36 columns"));
    }
    let args = [
        Arg::U64(dev.addr(dy.buf, dy.offset)?),
        u64_of(dy.rows),
        u64_of(dy.cols),
        u64_of(dy.rs),
        u64_of(dy.cs),
        Arg::U64(pdbias),
    ];
    dev.launch(&f, (blocks as u32, 1, 1), (32, 8, 1), &args)
}

// ---------------------------------------------------------------- GEMM

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// An input type the device GEMM accepts: `f32` (CUDA cores), `bf16` and `f16`
/// (tensor cores, f32 accumulation).
pub trait GpuGemmInput: sealed::Sealed + DeviceElem {
    #[doc(hidden)]
    const KERNEL: &'static str;
    /// The sm_90a kernel and its tensor maps' element type, for the types it takes.
    #[doc(hidden)]
    const SM90: Option<(&'static str, TensorMapElem)>;
}
impl GpuGemmInput for f32 {
    const KERNEL: &'static str = "nk_sgemm";
    const SM90: Option<(&'static str, TensorMapElem)> = None;
}
impl GpuGemmInput for bf16 {
    const KERNEL: &'static str = "nk_gemm_bf16";
    const SM90: Option<(&'static str, TensorMapElem)> = Some((SM90_KERNELS[0], TensorMapElem::Bf16));
}
impl GpuGemmInput for f16 {
    const KERNEL: &'static str = "nk_gemm_f16";
    const SM90: Option<(&'static str, TensorMapElem)> = Some((SM90_KERNELS[1], TensorMapElem::F16));
}

/// The sm_90a GEMM kernels (`kernels/gemm_sm90.ptx`): bf16 and f16 inputs.
pub const SM90_KERNELS: [&str; 2] = ["nk_gemm_sm90_bf16", "nk_gemm_sm90_f16"];
/// The sm_90a kernel's block tile (rows of A, rows of Bᵀ) and k tile.
const SM90_BM: u32 = 128;
const SM90_BN: u32 = 256;
const SM90_BK: u32 = 64;
/// Its threads per block and dynamic shared memory (the 4-stage ring of
/// (128 + 256) × 64 16-bit elements and 1024 bytes to align it).
const SM90_THREADS: u32 = 384;
const SM90_SHARED: u32 = 4 * (SM90_BM + SM90_BN) * SM90_BK * 2 + 1024;

/// The tensor map the sm_90a GEMM reads an operand through (the kernel's launch
/// contract): `rows` rows of `k` 16-bit elements, rows `ld` elements apart,
/// starting at `global_address`, in boxes of `box_rows` (128 for A, 256 for Bᵀ)
/// × 64, 128-byte swizzle, zero fill past the edges. Errors when the layout breaks
/// a rule of the bulk tensor copies (see [`TiledTensorMap::validate`]) or its sizes
/// overflow.
pub fn sm90_operand_map(
    global_address: u64,
    elem: TensorMapElem,
    rows: usize,
    k: usize,
    ld: usize,
    box_rows: u32,
) -> Result<TiledTensorMap> {
    let overflow = || Error::Overflow {
        arg: "a",
        what: "an operand's row stride in bytes",
    };
    let stride = u64::try_from(ld)
        .ok()
        .and_then(|ld| ld.checked_mul(u64::from(elem.bytes())))
        .ok_or_else(overflow)?;
    TiledTensorMap::matrix(
        global_address,
        elem,
        rows as u64,
        k as u64,
        stride,
        box_rows,
        SM90_BK,
        TensorMapSwizzle::B128,
    )
}

fn check_dims(m: usize, n: usize, k: usize) -> Result<()> {
    let limit = i32::MAX as usize;
    if m > limit || n > limit || k > limit {
        return Err(Error::invalid(
            "a",
            "GEMM dimensions above 2^31-1 are not supported on the GPU",
        ));
    }
    if m.div_ceil(128) > GRID_CAP {
        return Err(Error::invalid(
            "a",
            "more than 65535*128 rows are not supported on the GPU",
        ));
    }
    Ok(())
}

/// `C = alpha·A·B + beta·C` on the device. `f32` inputs run on the CUDA cores,
/// `bf16`/`f16` on the tensor cores; accumulation and `C` are `f32`.
///
/// BLAS conventions as on the CPU: `beta = 0` never reads `C`, `alpha = 0` or
/// `k = 0` never reads `A` or `B`.
pub fn gemm<T: GpuGemmInput>(
    dev: &Device,
    alpha: f32,
    a: DeviceMatRef<'_, T>,
    b: DeviceMatRef<'_, T>,
    beta: f32,
    c: DeviceMatMut<'_, f32>,
) -> Result<()> {
    gemm_bias_activation(dev, alpha, a, b, beta, c, None, Activation::Identity, None)
}

/// The forward pass of a dense layer in one kernel: `C = alpha·A·B + beta·C`,
/// then `C += bias` (broadcast over rows) when `bias` is given, then `Y = f(C)`
/// when `y` is given (`C` keeps the pre-activation).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_activation<T: GpuGemmInput>(
    dev: &Device,
    alpha: f32,
    a: DeviceMatRef<'_, T>,
    b: DeviceMatRef<'_, T>,
    beta: f32,
    c: DeviceMatMut<'_, f32>,
    bias: Option<&DeviceBuffer<f32>>,
    act: Activation,
    y: Option<DeviceMatMut<'_, f32>>,
) -> Result<()> {
    gemm_bias_activation_at(dev, alpha, a, b, beta, c, bias.map(|b| (b, 0..b.len())), act, y)
}

/// [`gemm_bias_activation`] with the bias at elements `bias.1` of a larger
/// buffer (e.g. one holding every layer's parameters).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_activation_at<T: GpuGemmInput>(
    dev: &Device,
    alpha: f32,
    a: DeviceMatRef<'_, T>,
    b: DeviceMatRef<'_, T>,
    beta: f32,
    c: DeviceMatMut<'_, f32>,
    bias: Option<(&DeviceBuffer<f32>, Range<usize>)>,
    act: Activation,
    y: Option<DeviceMatMut<'_, f32>>,
) -> Result<()> {
    if let Some((kernel, elem)) = T::SM90 {
        if dev.runs_sm90_kernels()? {
            if let Some(maps) = sm90_maps(dev, elem, alpha, &a, &b, &c)? {
                return gemm_sm90(dev, kernel, maps, alpha, beta, c, bias, act, y);
            }
        }
    }
    gemm_impl(dev, T::KERNEL, alpha, a, b, beta, c, bias, act, y)
}

/// The tensor maps of A (M×K) and Bᵀ (N×K) for the sm_90a kernel, or `None` when
/// it cannot take this problem and the mma.sync kernel runs instead: operands the
/// bulk tensor copies cannot read in place (K not contiguous, rows not 16-byte
/// aligned or not a multiple of 8 elements apart), nothing to multiply (K = 0 or
/// alpha = 0 reads neither operand), more tiles than its 32-bit tile loop counts, or
/// a shape error (left for the common checks to report).
fn sm90_maps<T: DeviceElem>(
    dev: &Device,
    elem: TensorMapElem,
    alpha: f32,
    a: &DeviceMatRef<'_, T>,
    b: &DeviceMatRef<'_, T>,
    c: &DeviceMatMut<'_, f32>,
) -> Result<Option<[TiledTensorMap; 2]>> {
    let (m, k) = a.shape();
    let (kb, n) = b.shape();
    if kb != k || c.shape() != (m, n) || check_dims(m, n, k).is_err() {
        return Ok(None);
    }
    if m == 0 || n == 0 || k == 0 || alpha == 0.0 {
        return Ok(None);
    }
    // check_dims: m, n < 2^31, so the tile count is below 2^47: no overflow in u64.
    let tiles = m.div_ceil(SM90_BM as usize) as u64 * n.div_ceil(SM90_BN as usize) as u64;
    if tiles > i32::MAX as u64 {
        return Ok(None);
    }
    // Row-major A (K contiguous) and column-major B (Bᵀ row-major); a single column
    // of K has no K stride to speak of.
    let (pa, pb) = (dev.addr(a.buf, a.offset)?, dev.addr(b.buf, b.offset)?);
    let (a_ok, b_ok) = (a.cs == 1 || k == 1, b.rs == 1 || k == 1);
    if !a_ok || !b_ok {
        return Ok(None);
    }
    let ma = sm90_operand_map(pa, elem, m, k, a.rs, SM90_BM);
    let mb = sm90_operand_map(pb, elem, n, k, b.cs, SM90_BN);
    match (ma, mb) {
        (Ok(ma), Ok(mb)) => Ok(Some([ma, mb])),
        _ => Ok(None),
    }
}

/// `C = alpha·A·B + beta·C` (+ bias, activation) by the sm_90a kernel: a
/// persistent grid of one 384-thread block per multiprocessor (or per tile when
/// there are fewer), each taking tiles `ctaid.x, ctaid.x + grid, ...`.
#[allow(clippy::too_many_arguments)]
fn gemm_sm90(
    dev: &Device,
    kernel: &'static str,
    maps: [TiledTensorMap; 2],
    alpha: f32,
    beta: f32,
    c: DeviceMatMut<'_, f32>,
    bias: Option<BiasAt<'_>>,
    act: Activation,
    y: Option<DeviceMatMut<'_, f32>>,
) -> Result<()> {
    let (m, n) = c.shape();
    // The maps were built from the validated views: dims[0] is K, dims[1] the rows.
    let k = maps[0].dims[0] as usize;
    if let Some((_, at)) = &bias {
        check_bias("bias", at.len(), n)?;
    }
    if let Some(y) = &y {
        check_same_shape("y", y.shape(), (m, n))?;
    }
    let f = dev.function("gemm_sm90.ptx", GEMM_SM90_PTX, kernel)?;
    let (ta, tb) = (dev.tensor_map(&maps[0])?, dev.tensor_map(&maps[1])?);
    // sm90_maps: at most 2^31 - 1 tiles.
    let tiles = (m.div_ceil(SM90_BM as usize) * n.div_ceil(SM90_BN as usize)) as u32;
    let sms = dev.multiprocessor_count()?.max(1) as usize;
    let grid = (tiles.min(dev.grid_cap(sms) as u32).max(1), 1, 1);
    let (pbias, py, yrs, ycs) = epilogue_addrs(dev, bias, &y)?;
    // check_dims (through sm90_maps): m, n, k < 2^31, so the u32 casts are exact.
    let args = [
        Arg::TensorMap(ta),
        Arg::TensorMap(tb),
        Arg::U64(dev.addr(c.buf, c.offset)?),
        Arg::U32(m as u32),
        Arg::U32(n as u32),
        Arg::U32(k as u32),
        u64_of(c.rs),
        u64_of(c.cs),
        Arg::F32(alpha),
        Arg::F32(beta),
        Arg::U64(pbias),
        Arg::U64(py),
        u64_of(yrs),
        u64_of(ycs),
        Arg::U32(act_code(act)),
    ];
    dev.launch_with_shared(&f, grid, (SM90_THREADS, 1, 1), SM90_SHARED, &args)
}

/// [`gemm`] for `f32` inputs on the tensor cores in TF32: each input is rounded
/// to 11 significant bits (relative error ≤ 2⁻¹¹), products are accumulated in
/// `f32`. An opt-in precision: faster than the CUDA-core SGEMM on large
/// problems, less accurate.
pub fn gemm_tf32(
    dev: &Device,
    alpha: f32,
    a: DeviceMatRef<'_, f32>,
    b: DeviceMatRef<'_, f32>,
    beta: f32,
    c: DeviceMatMut<'_, f32>,
) -> Result<()> {
    gemm_impl(
        dev,
        "nk_gemm_tf32",
        alpha,
        a,
        b,
        beta,
        c,
        None,
        Activation::Identity,
        None,
    )
}

/// [`gemm_bias_activation`] for `f32` inputs on the tensor cores in TF32 (see [`gemm_tf32`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_activation_tf32(
    dev: &Device,
    alpha: f32,
    a: DeviceMatRef<'_, f32>,
    b: DeviceMatRef<'_, f32>,
    beta: f32,
    c: DeviceMatMut<'_, f32>,
    bias: Option<&DeviceBuffer<f32>>,
    act: Activation,
    y: Option<DeviceMatMut<'_, f32>>,
) -> Result<()> {
    gemm_impl(dev, "nk_gemm_tf32", alpha, a, b, beta, c, whole(bias), act, y)
}

#[allow(clippy::too_many_arguments)]
fn gemm_impl<T: DeviceElem>(
    dev: &Device,
    kernel: &'static str,
    alpha: f32,
    a: DeviceMatRef<'_, T>,
    b: DeviceMatRef<'_, T>,
    beta: f32,
    c: DeviceMatMut<'_, f32>,
    bias: Option<BiasAt<'_>>,
    act: Activation,
    y: Option<DeviceMatMut<'_, f32>>,
) -> Result<()> {
    let (m, k) = a.shape();
    let (kb, n) = b.shape();
    if kb != k {
        return Err(Error::shape("b", (kb, n), (k, n)));
    }
    if c.shape() != (m, n) {
        return Err(Error::shape("c", c.shape(), (m, n)));
    }
    if let Some((_, at)) = &bias {
        check_bias("bias", at.len(), n)?;
    }
    if let Some(y) = &y {
        check_same_shape("y", y.shape(), (m, n))?;
    }
    check_dims(m, n, k)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // alpha = 0 must not read A or B: run with K = 0 (the accumulators stay 0).
    let k_eff = if alpha == 0.0 { 0 } else { k };
    // check_dims: m, n, k < 2^31 (so the u32 casts below are exact and k rounded up
    // to a multiple of 8 cannot overflow) and ceil(m/128) <= 65535 (grid.y).
    let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1);
    let pc = dev.addr(c.buf, c.offset)?;
    let (pbias, py, yrs, ycs) = epilogue_addrs(dev, bias, &y)?;
    let epilogue = [
        Arg::F32(alpha),
        Arg::F32(beta),
        Arg::U64(pbias),
        Arg::U64(py),
        u64_of(yrs),
        u64_of(ycs),
        Arg::U32(act_code(act)),
    ];
    if kernel == "nk_sgemm" {
        let f = dev.function("gemm_f32.ptx", GEMM_F32_PTX, "nk_sgemm")?;
        // Thread mapping that keeps the scalar global loads coalesced.
        let (pa, pb) = (dev.addr(a.buf, a.offset)?, dev.addr(b.buf, b.offset)?);
        let flags = sgemm_flags((a.rs, a.cs), (b.rs, b.cs), pa, pb);
        let mut args = vec![
            Arg::U64(pa),
            Arg::U64(pb),
            Arg::U64(pc),
            Arg::U32(m as u32),
            Arg::U32(n as u32),
            Arg::U32(k_eff as u32),
            u64_of(a.rs),
            u64_of(a.cs),
            u64_of(b.rs),
            u64_of(b.cs),
            u64_of(c.rs),
            u64_of(c.cs),
        ];
        args.extend_from_slice(&epilogue[..6]);
        args.push(epilogue[6]);
        args.push(Arg::U32(flags));
        return dev.launch(&f, grid, (256, 1, 1), &args);
    }
    // Tensor cores: A must be M x K with K contiguous, B given as N x K with K
    // contiguous, 16-byte aligned rows; other layouts are packed first.
    let f = dev.function("gemm_tc.ptx", GEMM_TC_PTX, kernel)?;
    // Rows must start 16-byte aligned: 8 elements of 16 bits, 4 of 32.
    let align = 16 / std::mem::size_of::<T>();
    let fits = |ptr: u64, kstride: usize, ld: usize| {
        (kstride == 1 || k_eff <= 1) && ld.is_multiple_of(align) && ptr.is_multiple_of(16) && ld >= k_eff.max(1)
    };
    let mut packed_a = None;
    let mut packed_b = None;
    let (mut pa, mut lda) = (dev.addr(a.buf, a.offset)?, a.rs);
    let (mut pb, mut ldb) = (dev.addr(b.buf, b.offset)?, b.cs);
    if k_eff > 0 {
        if !fits(pa, a.cs, a.rs) {
            let ld = k_eff.next_multiple_of(align);
            let buf = pack(dev, a, m, k_eff, ld)?;
            pa = dev.addr(&buf, 0)?;
            lda = ld;
            packed_a = Some(buf);
        }
        // Bᵀ (N x K) has element (j, p) at b[p*rs + j*cs]: its row stride is b.cs.
        if !fits(pb, b.rs, b.cs) {
            let ld = k_eff.next_multiple_of(align);
            let bt = b.t();
            let buf = pack(dev, bt, n, k_eff, ld)?;
            pb = dev.addr(&buf, 0)?;
            ldb = ld;
            packed_b = Some(buf);
        }
    }
    let mut args = vec![
        Arg::U64(pa),
        Arg::U64(pb),
        Arg::U64(pc),
        Arg::U32(m as u32),
        Arg::U32(n as u32),
        Arg::U32(k_eff as u32),
        u64_of(lda),
        u64_of(ldb),
        u64_of(c.rs),
        u64_of(c.cs),
    ];
    args.extend_from_slice(&epilogue);
    dev.launch(&f, grid, (256, 1, 1), &args)?;
    // Freeing is ordered on the stream after the kernel that reads the packed copies.
    drop((packed_a, packed_b));
    Ok(())
}

/// The SGEMM kernel's layout flags (see gemm_f32.ptx; tests/common has the same
/// rule for the executor tests): which thread mapping keeps
/// the loads of A (strides `(rs, cs)`, m×k) and B (k×n) coalesced, and whether each
/// thread's four elements can be one aligned 128-bit load.
pub(crate) fn sgemm_flags(a: (usize, usize), b: (usize, usize), pa: u64, pb: u64) -> u32 {
    let a_mfast = a.0 == 1 && a.1 != 1;
    let b_nfast = b.1 == 1 || b.0 != 1;
    // contiguous stride 1, the other a multiple of 4, base 16-byte aligned
    let (a_contig, a_other) = if a_mfast { a } else { (a.1, a.0) };
    let (b_contig, b_other) = if b_nfast { (b.1, b.0) } else { b };
    let a_vec = a_contig == 1 && a_other % 4 == 0 && pa.is_multiple_of(16);
    let b_vec = b_contig == 1 && b_other % 4 == 0 && pb.is_multiple_of(16);
    u32::from(a_mfast) | (u32::from(b_nfast) << 1) | (u32::from(a_vec) << 2) | (u32::from(b_vec) << 3)
}

/// Copies the `rows × cols` view `src` into a new buffer with rows `ld` apart.
fn pack<T: DeviceElem>(
    dev: &Device,
    src: DeviceMatRef<'_, T>,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<DeviceBuffer<T>> {
    let len = rows.checked_mul(ld).ok_or(Error::Overflow {
        arg: "a",
        what: "the packed copy's rows * leading dimension",
    })?;
    let dst = dev.zeros::<T>(len)?;
    let name = if std::mem::size_of::<T>() == 4 {
        "nk_pack32"
    } else {
        "nk_pack16"
    };
    let f = dev.function("gemm_tc.ptx", GEMM_TC_PTX, name)?;
    let args = [
        Arg::U64(dev.addr(src.buf, src.offset)?),
        u64_of(rows),
        u64_of(cols),
        u64_of(src.rs),
        u64_of(src.cs),
        Arg::U64(dev.addr(&dst, 0)?),
        u64_of(ld),
    ];
    dev.launch(&f, grid_2d(dev, rows, cols), (BLOCK, 1, 1), &args)?;
    Ok(dst)
}

// ---------------------------------------------------------------- softmax / cross-entropy

/// What device logits are scored against.
#[derive(Debug, Clone, Copy)]
pub enum DeviceTargets<'a> {
    /// One class index per row (`u32`), each `< classes`.
    Labels(&'a DeviceBuffer<u32>),
    /// A probability row per sample, same shape as the logits.
    Soft(DeviceMatRef<'a, f32>),
}

fn row_grid(rows: usize) -> Result<(u32, u32, u32)> {
    let blocks = rows.div_ceil(8);
    if blocks > i32::MAX as usize {
        return Err(Error::invalid("logits", "too many rows for one launch"));
    }
    Ok((blocks as u32, 1, 1))
}

/// `y = softmax(x)` row by row on the device.
pub fn softmax(dev: &Device, x: DeviceMatRef<'_, f32>, y: DeviceMatMut<'_, f32>) -> Result<()> {
    softmax_impl(dev, x, y, false)
}

/// `y = log(softmax(x))` row by row on the device.
pub fn log_softmax(dev: &Device, x: DeviceMatRef<'_, f32>, y: DeviceMatMut<'_, f32>) -> Result<()> {
    softmax_impl(dev, x, y, true)
}

fn softmax_impl(dev: &Device, x: DeviceMatRef<'_, f32>, y: DeviceMatMut<'_, f32>, log: bool) -> Result<()> {
    check_same_shape("y", y.shape(), x.shape())?;
    if x.rows == 0 || x.cols == 0 {
        return Ok(());
    }
    let f = dev.function("softmax_xent.ptx", SOFTMAX_XENT_PTX, "nk_softmax")?;
    let args = [
        Arg::U64(dev.addr(x.buf, x.offset)?),
        u64_of(x.rows),
        u64_of(x.cols),
        u64_of(x.rs),
        u64_of(x.cs),
        Arg::U64(dev.addr(y.buf, y.offset)?),
        u64_of(y.rs),
        u64_of(y.cs),
        Arg::U32(u32::from(log)),
    ];
    dev.launch(&f, row_grid(x.rows)?, (BLOCK, 1, 1), &args)
}

fn check_device_xent(
    logits: &DeviceMatRef<'_, f32>,
    targets: &DeviceTargets<'_>,
    dlogits: Option<&DeviceMatMut<'_, f32>>,
) -> Result<(usize, usize)> {
    let (rows, cols) = logits.shape();
    if rows > 0 && cols == 0 {
        return Err(Error::invalid("logits", format!("{rows} rows with 0 classes")));
    }
    match targets {
        DeviceTargets::Labels(l) => {
            if l.len() != rows {
                return Err(Error::shape("labels", (l.len(), 1), (rows, 1)));
            }
        }
        DeviceTargets::Soft(t) => check_same_shape("targets", t.shape(), (rows, cols))?,
    }
    if let Some(d) = dlogits {
        check_same_shape("dlogits", d.shape(), (rows, cols))?;
    }
    Ok((rows, cols))
}

/// Mean cross-entropy of `softmax(logits)` against `targets` on the device
/// (0 for an empty batch). Waits for the result.
pub fn softmax_xent_loss(dev: &Device, logits: DeviceMatRef<'_, f32>, targets: DeviceTargets<'_>) -> Result<f32> {
    let shape = check_device_xent(&logits, &targets, None)?;
    xent_impl(dev, logits, targets, None, shape)
}

/// Fused forward and backward on the device: returns the mean loss and writes
/// `dlogits = (softmax(logits) − target) / batch`. Waits for the loss.
///
/// A label `>= classes` is [`Error::LabelOutOfRange`] (found by the kernel;
/// `dlogits` is then unspecified).
pub fn softmax_xent(
    dev: &Device,
    logits: DeviceMatRef<'_, f32>,
    targets: DeviceTargets<'_>,
    dlogits: DeviceMatMut<'_, f32>,
) -> Result<f32> {
    let shape = check_device_xent(&logits, &targets, Some(&dlogits))?;
    xent_impl(dev, logits, targets, Some(dlogits), shape)
}

fn xent_impl(
    dev: &Device,
    logits: DeviceMatRef<'_, f32>,
    targets: DeviceTargets<'_>,
    dlogits: Option<DeviceMatMut<'_, f32>>,
    shape: (usize, usize),
) -> Result<f32> {
    if shape.0 == 0 {
        return Ok(0.0);
    }
    let mut acc = XentAccumulator::new(dev)?;
    xent_launch(dev, logits, targets, dlogits, shape, &mut acc)?;
    Ok(acc.read(dev)? as f32)
}

fn xent_launch(
    dev: &Device,
    logits: DeviceMatRef<'_, f32>,
    targets: DeviceTargets<'_>,
    dlogits: Option<DeviceMatMut<'_, f32>>,
    (rows, cols): (usize, usize),
    acc: &mut XentAccumulator,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    if rows > u32::MAX as usize {
        return Err(Error::invalid("logits", "more than 2^32-1 rows"));
    }
    acc.classes = cols;
    let ps = dev.addr(&acc.buf, 0)?;
    let f = dev.function("softmax_xent.ptx", SOFTMAX_XENT_PTX, "nk_softmax_xent")?;
    let (plabels, pt, trs, tcs, soft) = match targets {
        DeviceTargets::Labels(l) => (dev.addr(l, 0)?, 0, 0, 0, 0),
        DeviceTargets::Soft(t) => (0, dev.addr(t.buf, t.offset)?, t.rs, t.cs, 1),
    };
    let (pd, drs, dcs) = match &dlogits {
        Some(d) => (dev.addr(d.buf, d.offset)?, d.rs, d.cs),
        None => (0, 0, 0),
    };
    let args = [
        Arg::U64(dev.addr(logits.buf, logits.offset)?),
        u64_of(rows),
        u64_of(cols),
        u64_of(logits.rs),
        u64_of(logits.cs),
        Arg::U64(plabels),
        Arg::U64(pt),
        u64_of(trs),
        u64_of(tcs),
        Arg::U64(pd),
        u64_of(drs),
        u64_of(dcs),
        Arg::F32((1.0 / rows as f64) as f32),
        // the accumulator's two 8-byte halves (its buffer holds 16 bytes)
        Arg::U64(ps),
        Arg::U64(ps + 8),
        Arg::U32(soft),
    ];
    dev.launch(&f, row_grid(rows)?, (BLOCK, 1, 1), &args)
}

/// Device-side totals of [`softmax_xent_accumulate`]: the sum of the batches'
/// mean losses and the first out-of-range label seen, kept on the device so a
/// training loop reads them once (e.g. per epoch), not once per step.
#[derive(Debug)]
pub struct XentAccumulator {
    // [loss sum as f64 bits (2 words), first bad (row << 32 | label) (2 words)]
    buf: DeviceBuffer<u32>,
    classes: usize,
}

impl XentAccumulator {
    /// A zeroed accumulator on `dev`.
    pub fn new(dev: &Device) -> Result<Self> {
        Ok(XentAccumulator {
            buf: dev.upload(&[0u32, 0, u32::MAX, u32::MAX])?,
            classes: 0,
        })
    }

    /// Zeroes the totals (queued on the stream, a device-side fill: no host copy).
    pub fn reset(&mut self, dev: &Device) -> Result<()> {
        dev.fill_bytes(&mut self.buf, 0..2, 0)?;
        dev.fill_bytes(&mut self.buf, 2..4, 0xFF)
    }

    /// Waits for the stream and returns the sum of the mean losses since the last
    /// reset, or [`Error::LabelOutOfRange`] for the first bad label (by row) seen.
    pub fn read(&self, dev: &Device) -> Result<f64> {
        let mut out = [0u32; 4];
        dev.copy_to_host(&self.buf, &mut out)?;
        let bad = u64::from(out[2]) | (u64::from(out[3]) << 32);
        if bad != u64::MAX {
            return Err(Error::LabelOutOfRange {
                arg: "labels",
                index: (bad >> 32) as usize,
                label: bad & 0xffff_ffff,
                classes: self.classes,
            });
        }
        Ok(f64::from_bits(u64::from(out[0]) | (u64::from(out[1]) << 32)))
    }
}

/// [`softmax_xent`] without waiting: writes `dlogits` and adds the batch's mean
/// loss to `acc` on the device (labels out of range are recorded there too and
/// reported by [`XentAccumulator::read`]). No host round trip.
pub fn softmax_xent_accumulate(
    dev: &Device,
    logits: DeviceMatRef<'_, f32>,
    targets: DeviceTargets<'_>,
    dlogits: DeviceMatMut<'_, f32>,
    acc: &mut XentAccumulator,
) -> Result<()> {
    let shape = check_device_xent(&logits, &targets, Some(&dlogits))?;
    xent_launch(dev, logits, targets, Some(dlogits), shape, acc)
}

/// [`softmax_xent_accumulate`] scored against the first `logits` rows of
/// `labels` (a buffer sized for the largest batch, reused for smaller ones);
/// `dlogits = None` adds the loss only. Nothing is waited for.
pub fn softmax_xent_labels_accumulate(
    dev: &Device,
    logits: DeviceMatRef<'_, f32>,
    labels: &DeviceBuffer<u32>,
    dlogits: Option<DeviceMatMut<'_, f32>>,
    acc: &mut XentAccumulator,
) -> Result<()> {
    let (rows, cols) = logits.shape();
    if labels.len() < rows {
        return Err(Error::shape("labels", (labels.len(), 1), (rows, 1)));
    }
    if rows > 0 && cols == 0 {
        return Err(Error::invalid("logits", format!("{rows} rows with 0 classes")));
    }
    if let Some(d) = &dlogits {
        check_same_shape("dlogits", d.shape(), (rows, cols))?;
    }
    xent_launch(dev, logits, DeviceTargets::Labels(labels), dlogits, (rows, cols), acc)
}

fn check_argmax_rows(logits: &DeviceMatRef<'_, f32>) -> Result<()> {
    let (rows, cols) = logits.shape();
    if rows > 0 && cols == 0 {
        return Err(Error::invalid("x", "argmax of a row with no columns"));
    }
    if cols > u32::MAX as usize {
        return Err(Error::invalid("x", "more columns than a u32 index holds"));
    }
    Ok(())
}

/// How many rows of `logits` have their argmax (the first on ties; a NaN
/// counts as largest) equal to the label, on the device, as
/// [`crate::count_correct`] counts them. Waits for the count.
pub fn count_correct(dev: &Device, logits: DeviceMatRef<'_, f32>, labels: &DeviceBuffer<u32>) -> Result<usize> {
    if labels.len() != logits.rows {
        return Err(Error::shape("labels", (labels.len(), 1), (logits.rows, 1)));
    }
    let mut count = dev.zeros::<u32>(1)?;
    count_correct_accumulate(dev, logits, labels, &mut count)?;
    let mut out = [0u32];
    dev.copy_to_host(&count, &mut out)?;
    Ok(out[0] as usize)
}

/// Adds to `count[0]` the rows of `logits` whose argmax equals their label
/// (the first `logits` rows of `labels`), without waiting: a training loop can
/// sum many batches on the device and read the total once.
pub fn count_correct_accumulate(
    dev: &Device,
    logits: DeviceMatRef<'_, f32>,
    labels: &DeviceBuffer<u32>,
    count: &mut DeviceBuffer<u32>,
) -> Result<()> {
    check_argmax_rows(&logits)?;
    let rows = logits.rows;
    if labels.len() < rows {
        return Err(Error::shape("labels", (labels.len(), 1), (rows, 1)));
    }
    if count.is_empty() {
        return Err(Error::BufferTooShort {
            arg: "count",
            len: 0,
            needed: 1,
        });
    }
    if rows == 0 {
        return Ok(());
    }
    let blocks = rows.div_ceil(BLOCK as usize);
    if blocks > i32::MAX as usize {
        return Err(Error::invalid("logits", "too many rows for one launch"));
    }
    let f = dev.function("softmax_xent.ptx", SOFTMAX_XENT_PTX, "nk_count_correct")?;
    let args = [
        Arg::U64(dev.addr(logits.buf, logits.offset)?),
        u64_of(rows),
        u64_of(logits.cols),
        u64_of(logits.rs),
        u64_of(logits.cs),
        Arg::U64(dev.addr(labels, 0)?),
        Arg::U64(dev.addr(count, 0)?),
    ];
    dev.launch(&f, (blocks as u32, 1, 1), (BLOCK, 1, 1), &args)
}

// ---------------------------------------------------------------- batch gather

/// Row `i` of `dst` = row `rows[i]` of `images` (rows of `features` bytes)
/// converted to `f32` and divided by `divisor` (correctly rounded, as the host
/// divides), on the device. The row indices are checked on the host, then
/// copied into `rows_dev` (at least `rows.len()` long, reused from step to
/// step) for the kernel; `dst` is `rows.len() × features`.
pub fn gather_scaled(
    dev: &Device,
    images: &DeviceBuffer<u8>,
    features: usize,
    rows: &[u32],
    rows_dev: &mut DeviceBuffer<u32>,
    divisor: f32,
    dst: DeviceMatMut<'_, f32>,
) -> Result<()> {
    check_same_shape("dst", dst.shape(), (rows.len(), features))?;
    if rows_dev.len() < rows.len() {
        return Err(Error::BufferTooShort {
            arg: "rows_dev",
            len: rows_dev.len(),
            needed: rows.len(),
        });
    }
    if rows.is_empty() || features == 0 {
        return Ok(());
    }
    let count = images.len() / features;
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= count) {
        return Err(Error::invalid("rows", format!("row {r} of a set of {count}")));
    }
    dev.copy_to_device(rows, rows_dev)?;
    let f = dev.function("activation.ptx", ACTIVATION_PTX, "nk_gather_scaled")?;
    let args = [
        Arg::U64(dev.addr(images, 0)?),
        u64_of(count),
        u64_of(features),
        Arg::U64(dev.addr(rows_dev, 0)?),
        u64_of(rows.len()),
        Arg::F32(divisor),
        Arg::U64(dev.addr(dst.buf, dst.offset)?),
        u64_of(dst.rs),
        u64_of(dst.cs),
    ];
    dev.launch(&f, grid_2d(dev, rows.len(), features), (BLOCK, 1, 1), &args)
}

/// Where the next training batch starts in an epoch's order of rows: one `u32`
/// on the device, read by [`gather_batch`] and moved on by it (on the device),
/// so consecutive batches need no host copy. The host remembers the value it
/// expects, so [`BatchCursor::set`] copies only when that differs.
#[derive(Debug)]
pub struct BatchCursor {
    word: DeviceBuffer<u32>,
    at: Option<usize>,
}

impl BatchCursor {
    /// A cursor at position 0.
    pub fn new(dev: &Device) -> Result<Self> {
        Ok(BatchCursor {
            word: dev.zeros(1)?,
            at: Some(0),
        })
    }

    /// Moves the cursor to `pos`: one host-to-device copy unless it is there
    /// already (as after the batch before it). Returns whether it copied.
    pub fn set(&mut self, dev: &Device, pos: usize) -> Result<bool> {
        if self.at == Some(pos) {
            return Ok(false);
        }
        let word = u32::try_from(pos).map_err(|_| Error::invalid("pos", "a position past 2^32-1"))?;
        self.at = None;
        dev.copy_to_device(&[word], &mut self.word)?;
        self.at = Some(pos);
        Ok(true)
    }

    /// Where the host expects the cursor (`None` when it does not know).
    pub fn position(&self) -> Option<usize> {
        self.at
    }

    /// Records that the device moved the cursor on by `n` outside [`gather_batch`]
    /// (a replayed graph of its launches).
    pub fn replayed(&mut self, n: usize) {
        self.at = self.at.and_then(|a| a.checked_add(n));
    }

    /// Reads the device's cursor (waits for the stream).
    pub fn read(&self, dev: &Device) -> Result<usize> {
        let mut out = [0u32];
        dev.copy_to_host(&self.word, &mut out)?;
        Ok(out[0] as usize)
    }
}

/// The training batch at `cursor`: with `r = order[cursor + i]`, row `i` of
/// `dst` (`n × features`) = row `r` of `images` converted to `f32` and divided
/// by `divisor`, and `labels_out[i] = labels[r]`; then the cursor moves on by
/// `n`, on the device. Two launches whose arguments are the same for every
/// batch of `n` rows; nothing is copied. A position past the order's end or a
/// row past the images gives a NaN row and the label `u32::MAX`, which the loss
/// reports as [`Error::LabelOutOfRange`].
#[allow(clippy::too_many_arguments)]
pub fn gather_batch(
    dev: &Device,
    images: &DeviceBuffer<u8>,
    features: usize,
    order: &DeviceBuffer<u32>,
    cursor: &mut BatchCursor,
    labels: &DeviceBuffer<u32>,
    labels_out: &mut DeviceBuffer<u32>,
    divisor: f32,
    dst: DeviceMatMut<'_, f32>,
) -> Result<()> {
    let n = dst.rows;
    check_same_shape("dst", dst.shape(), (n, features))?;
    if labels_out.len() < n {
        return Err(Error::BufferTooShort {
            arg: "labels_out",
            len: labels_out.len(),
            needed: n,
        });
    }
    let inc = u32::try_from(n).map_err(|_| Error::invalid("dst", "more than 2^32-1 rows"))?;
    if n == 0 || features == 0 {
        return Ok(());
    }
    let count = images.len() / features;
    let f = dev.function("activation.ptx", ACTIVATION_PTX, "nk_gather_batch")?;
    let pcursor = dev.addr(&cursor.word, 0)?;
    let args = [
        Arg::U64(dev.addr(images, 0)?),
        u64_of(count),
        u64_of(features),
        Arg::U64(dev.addr(order, 0)?),
        u64_of(order.len()),
        Arg::U64(pcursor),
        u64_of(n),
        Arg::U64(dev.addr(labels, 0)?),
        u64_of(labels.len()),
        Arg::U64(dev.addr(labels_out, 0)?),
        Arg::F32(divisor),
        Arg::U64(dev.addr(dst.buf, dst.offset)?),
        u64_of(dst.rs),
        u64_of(dst.cs),
    ];
    dev.launch(&f, grid_2d(dev, n, features), (BLOCK, 1, 1), &args)?;
    let f = dev.function("activation.ptx", ACTIVATION_PTX, "nk_advance")?;
    dev.launch(&f, (1, 1, 1), (1, 1, 1), &[Arg::U64(pcursor), Arg::U32(inc)])?;
    cursor.replayed(n);
    Ok(())
}

// ---------------------------------------------------------------- optimizers

/// The four buffers of one parameter tensor for [`adam_step_many`].
#[derive(Debug)]
pub struct AdamParam<'a> {
    /// Parameters, updated in place.
    pub w: &'a mut DeviceBuffer<f32>,
    /// Gradients.
    pub grad: &'a DeviceBuffer<f32>,
    /// First moments, updated in place.
    pub m: &'a mut DeviceBuffer<f32>,
    /// Second moments, updated in place.
    pub v: &'a mut DeviceBuffer<f32>,
}

/// Builds the chunk table (see optim.ptx) for arrays of equal length per entry.
/// The table is cached on the device by content, so a training loop that steps
/// the same tensors uploads it once, not every step.
fn chunk_table(dev: &Device, tensors: &[[u64; 4]], lens: &[usize]) -> Result<(Arc<DeviceBuffer<u32>>, usize)> {
    // Count first, so an impossible launch is refused before the table is built.
    let chunks = lens
        .iter()
        .try_fold(0usize, |n, &len| n.checked_add(len.div_ceil(CHUNK)))
        .filter(|&n| n <= i32::MAX as usize)
        .ok_or_else(|| Error::invalid("params", "too many parameters for one launch"))?;
    let entries = chunks.checked_mul(6).ok_or(Error::Overflow {
        arg: "params",
        what: "the chunk table's size",
    })?;
    let mut table: Vec<u64> = Vec::with_capacity(entries);
    for (ptrs, &len) in tensors.iter().zip(lens) {
        let mut start = 0;
        while start < len {
            let count = CHUNK.min(len - start);
            // start < len, and each pointer's buffer holds len f32 (len * 4 bytes were
            // allocated), so the byte offset fits and p + off stays inside that buffer.
            let off = (start * 4) as u64;
            for &p in ptrs {
                table.push(if p == 0 { 0 } else { p + off });
            }
            table.push(count as u64);
            table.push(0);
            start += count;
        }
    }
    debug_assert_eq!(table.len(), entries);
    let words: Vec<u32> = table.iter().flat_map(|&v| [v as u32, (v >> 32) as u32]).collect();
    Ok((dev.cached_table(words)?, chunks))
}

fn chunk_grid(chunks: usize) -> Result<(u32, u32, u32)> {
    if chunks > i32::MAX as usize {
        return Err(Error::invalid("params", "too many parameters for one launch"));
    }
    Ok((chunks as u32, 1, 1))
}

/// One Adam/AdamW step (`step` counts from 1) over one parameter tensor on the device.
pub fn adam_step(
    dev: &Device,
    cfg: &AdamConfig,
    step: u64,
    w: &mut DeviceBuffer<f32>,
    grad: &DeviceBuffer<f32>,
    m: &mut DeviceBuffer<f32>,
    v: &mut DeviceBuffer<f32>,
) -> Result<()> {
    adam_step_many(dev, cfg, step, &mut [AdamParam { w, grad, m, v }])
}

/// One Adam/AdamW step over every parameter tensor in `params`, in one launch.
pub fn adam_step_many(dev: &Device, cfg: &AdamConfig, step: u64, params: &mut [AdamParam<'_>]) -> Result<()> {
    adam_impl(dev, cfg, step, params, 0)
}

/// `nk_adam` over `params`; `pstate` 0, or a [`StepState`]'s address whose scalars
/// (and skip flag) replace those of `step`.
fn adam_impl(dev: &Device, cfg: &AdamConfig, step: u64, params: &mut [AdamParam<'_>], pstate: u64) -> Result<()> {
    for p in params.iter() {
        check_adam(cfg, step, p.w.len(), p.grad.len(), p.m.len(), p.v.len())?;
    }
    if params.is_empty() {
        cfg.validate()?;
        if step == 0 {
            return Err(Error::invalid("step", "steps count from 1"));
        }
    }
    let ptrs = params
        .iter()
        .map(|p| {
            Ok([
                dev.addr(p.w, 0)?,
                dev.addr(p.grad, 0)?,
                dev.addr(p.m, 0)?,
                dev.addr(p.v, 0)?,
            ])
        })
        .collect::<Result<Vec<[u64; 4]>>>()?;
    let lens: Vec<usize> = params.iter().map(|p| p.w.len()).collect();
    let (table, chunks) = chunk_table(dev, &ptrs, &lens)?;
    if chunks == 0 {
        return Ok(());
    }
    let (c1, c2) = cfg.bias_corrections(step);
    let (lr, b1, b2) = (cfg.lr as f64, cfg.beta1 as f64, cfg.beta2 as f64);
    let flags = u32::from(cfg.decay == WeightDecay::Decoupled) | (u32::from(cfg.epsilon == AdamEpsilon::Keras) << 1);
    let f = dev.function("optim.ptx", OPTIM_PTX, "nk_adam")?;
    let args = [
        Arg::U64(dev.addr(&*table, 0)?),
        Arg::F32(cfg.lr),
        Arg::F32(cfg.beta1),
        Arg::F32(cfg.beta2),
        Arg::F32((1.0 - b1) as f32),
        Arg::F32((1.0 - b2) as f32),
        Arg::F32(cfg.eps),
        Arg::F32(cfg.weight_decay),
        Arg::F32((lr * cfg.weight_decay as f64) as f32),
        Arg::F32((1.0 / c1) as f32),
        Arg::F32((1.0 / c2.sqrt()) as f32),
        Arg::F32((lr * c2.sqrt() / c1) as f32),
        Arg::U32(flags),
        Arg::U64(pstate),
    ];
    // Dropping the table is ordered on the stream after the kernel that reads it.
    dev.launch(&f, chunk_grid(chunks)?, (BLOCK, 1, 1), &args)
}

/// One SGD-with-momentum step on the device.
pub fn sgd_step(
    dev: &Device,
    cfg: &SgdConfig,
    w: &mut DeviceBuffer<f32>,
    grad: &DeviceBuffer<f32>,
    buf: &mut DeviceBuffer<f32>,
) -> Result<()> {
    sgd_impl(dev, cfg, w, grad, buf, 0)
}

/// The optimizer's per-step state kept on the device (32 bytes, see optim.ptx):
/// the number of Adam steps taken, this step's Adam scalars (the bias
/// corrections) and whether this step's update is skipped. With it, an
/// optimizer launch has the same arguments at every step (so a captured graph
/// replays it unchanged): [`adam_step_with_state`] and [`sgd_step_with_state`]
/// first run a one-thread kernel that advances the step count and computes the
/// scalars on the device, bitwise as [`AdamConfig::bias_corrections`] does on
/// the host.
#[derive(Debug)]
pub struct StepState {
    buf: DeviceBuffer<u32>,
}

impl StepState {
    /// A state at step 0 (no Adam step taken).
    pub fn new(dev: &Device) -> Result<Self> {
        Ok(StepState { buf: dev.zeros(8)? })
    }

    /// Sets the number of Adam steps taken (one host-to-device copy), e.g. when a
    /// run resumes from a checkpoint; steps past 2³¹ − 1 count as 2³¹ − 1, as the
    /// host's bias corrections do.
    pub fn set_steps(&mut self, dev: &Device, steps: u64) -> Result<()> {
        dev.copy_to_device(&[steps.min(i32::MAX as u64) as u32, 0], &mut self.buf)
    }

    /// The number of Adam steps taken and whether the last update was skipped
    /// (waits for the stream).
    pub fn read(&self, dev: &Device) -> Result<(u64, bool)> {
        let mut out = [0u32; 2];
        dev.copy_to_host(&self.buf, &mut out)?;
        Ok((u64::from(out[0]), out[1] != 0))
    }
}

/// Launches `nk_opt_prep`: the skip flag from `guard`'s loss and bad label, and
/// (for Adam) the step count and scalars.
fn opt_prep(
    dev: &Device,
    state: &mut StepState,
    guard: Option<&XentAccumulator>,
    lr: f32,
    betas: Option<(f32, f32)>,
) -> Result<u64> {
    let pstate = dev.addr(&state.buf, 0)?;
    let ploss = match guard {
        Some(g) => dev.addr(&g.buf, 0)?,
        None => 0,
    };
    let (b1, b2) = betas.unwrap_or((0.0, 0.0));
    let f = dev.function("optim.ptx", OPTIM_PTX, "nk_opt_prep")?;
    let args = [
        Arg::U64(pstate),
        Arg::U64(ploss),
        Arg::F32(lr),
        Arg::F32(b1),
        Arg::F32(b2),
        Arg::U32(u32::from(betas.is_some())),
    ];
    dev.launch(&f, (1, 1, 1), (1, 1, 1), &args)?;
    Ok(pstate)
}

/// One Adam/AdamW step whose step number and bias corrections come from
/// `state` on the device (advanced there by one), skipped on the device — the
/// parameters, moments and step count left as they were — when `guard`'s loss
/// is not finite or it saw a bad label. Two launches whose arguments do not
/// change from step to step; nothing is copied or waited for.
#[allow(clippy::too_many_arguments)]
pub fn adam_step_with_state(
    dev: &Device,
    cfg: &AdamConfig,
    state: &mut StepState,
    guard: Option<&XentAccumulator>,
    w: &mut DeviceBuffer<f32>,
    grad: &DeviceBuffer<f32>,
    m: &mut DeviceBuffer<f32>,
    v: &mut DeviceBuffer<f32>,
) -> Result<()> {
    // The checks of step 1 (the step itself is the device's).
    check_adam(cfg, 1, w.len(), grad.len(), m.len(), v.len())?;
    let pstate = opt_prep(dev, state, guard, cfg.lr, Some((cfg.beta1, cfg.beta2)))?;
    adam_impl(dev, cfg, 1, &mut [AdamParam { w, grad, m, v }], pstate)
}

/// One SGD-with-momentum step, skipped on the device when `guard`'s loss is not
/// finite or it saw a bad label (see [`adam_step_with_state`]).
pub fn sgd_step_with_state(
    dev: &Device,
    cfg: &SgdConfig,
    state: &mut StepState,
    guard: Option<&XentAccumulator>,
    w: &mut DeviceBuffer<f32>,
    grad: &DeviceBuffer<f32>,
    buf: &mut DeviceBuffer<f32>,
) -> Result<()> {
    cfg.validate()?;
    for (arg, len) in [("grad", grad.len()), ("buf", buf.len())] {
        if len != w.len() {
            return Err(Error::shape(arg, (len, 1), (w.len(), 1)));
        }
    }
    let pstate = opt_prep(dev, state, guard, cfg.lr, None)?;
    sgd_impl(dev, cfg, w, grad, buf, pstate)
}

fn sgd_impl(
    dev: &Device,
    cfg: &SgdConfig,
    w: &mut DeviceBuffer<f32>,
    grad: &DeviceBuffer<f32>,
    buf: &mut DeviceBuffer<f32>,
    pstate: u64,
) -> Result<()> {
    cfg.validate()?;
    for (arg, len) in [("grad", grad.len()), ("buf", buf.len())] {
        if len != w.len() {
            return Err(Error::shape(arg, (len, 1), (w.len(), 1)));
        }
    }
    let ptrs = [[dev.addr(w, 0)?, dev.addr(grad, 0)?, dev.addr(buf, 0)?, 0]];
    let (table, chunks) = chunk_table(dev, &ptrs, &[w.len()])?;
    if chunks == 0 {
        return Ok(());
    }
    let f = dev.function("optim.ptx", OPTIM_PTX, "nk_sgd")?;
    let args = [
        Arg::U64(dev.addr(&*table, 0)?),
        Arg::F32(cfg.lr),
        Arg::F32(cfg.momentum),
        Arg::F32(cfg.weight_decay),
        Arg::U64(pstate),
    ];
    dev.launch(&f, chunk_grid(chunks)?, (BLOCK, 1, 1), &args)
}

/// Zeroes `acc` (two f32 slots holding an f64) and adds the sum of squares of
/// the tensors into it on the device.
fn sumsq(
    dev: &Device,
    ptrs: &[[u64; 4]],
    lens: &[usize],
    acc: &mut DeviceBuffer<f32>,
) -> Result<(Arc<DeviceBuffer<u32>>, usize)> {
    if acc.len() < 2 {
        return Err(Error::BufferTooShort {
            arg: "acc",
            len: acc.len(),
            needed: 2,
        });
    }
    let (table, chunks) = chunk_table(dev, ptrs, lens)?;
    dev.fill_bytes(acc, 0..2, 0)?;
    if chunks > 0 {
        let f = dev.function("optim.ptx", OPTIM_PTX, "nk_sumsq")?;
        let args = [Arg::U64(dev.addr(&*table, 0)?), Arg::U64(dev.addr(acc, 0)?)];
        dev.launch(&f, chunk_grid(chunks)?, (BLOCK, 1, 1), &args)?;
    }
    Ok((table, chunks))
}

fn read_f64(dev: &Device, acc: &DeviceBuffer<f32>) -> Result<f64> {
    let mut out = [0f32; 2];
    dev.copy_to_host(acc, &mut out)?;
    Ok(f64::from_bits(
        u64::from(out[0].to_bits()) | (u64::from(out[1].to_bits()) << 32),
    ))
}

/// The Euclidean norm of all gradients together, on the device. Waits for it.
pub fn global_norm(dev: &Device, grads: &[&DeviceBuffer<f32>]) -> Result<f32> {
    let ptrs = grads
        .iter()
        .map(|g| Ok([dev.addr(g, 0)?, 0, 0, 0]))
        .collect::<Result<Vec<[u64; 4]>>>()?;
    let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    let mut acc = dev.zeros::<f32>(2)?;
    let (_table, _) = sumsq(dev, &ptrs, &lens, &mut acc)?;
    Ok(read_f64(dev, &acc)?.sqrt() as f32)
}

/// Scales all gradients by `max_norm / norm` when their global norm exceeds
/// `max_norm` (or is NaN), on the device; returns the norm before clipping.
/// The norm and the scale are computed on the device (two launches); only the
/// returned value is waited for.
pub fn clip_global_norm(dev: &Device, grads: &mut [&mut DeviceBuffer<f32>], max_norm: f32) -> Result<f32> {
    let mut acc = dev.zeros::<f32>(2)?;
    clip_global_norm_with(dev, grads, max_norm, &mut acc)
}

/// [`clip_global_norm`] with its accumulator supplied (at least 2 `f32` of
/// scratch, overwritten), so a training loop allocates nothing per step.
pub fn clip_global_norm_with(
    dev: &Device,
    grads: &mut [&mut DeviceBuffer<f32>],
    max_norm: f32,
    acc: &mut DeviceBuffer<f32>,
) -> Result<f32> {
    clip_global_norm_queued(dev, grads, max_norm, acc)?;
    Ok(read_f64(dev, acc)?.sqrt() as f32)
}

/// [`clip_global_norm_with`] without waiting: the norm is left in `acc` (an
/// f64 in its first two words) and not read, so a step can be queued (or
/// captured) whole.
pub fn clip_global_norm_queued(
    dev: &Device,
    grads: &mut [&mut DeviceBuffer<f32>],
    max_norm: f32,
    acc: &mut DeviceBuffer<f32>,
) -> Result<()> {
    check_clip(max_norm)?;
    let ptrs = grads
        .iter()
        .map(|g| Ok([dev.addr(g, 0)?, 0, 0, 0]))
        .collect::<Result<Vec<[u64; 4]>>>()?;
    let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    let (table, chunks) = sumsq(dev, &ptrs, &lens, acc)?;
    if chunks > 0 {
        let f = dev.function("optim.ptx", OPTIM_PTX, "nk_clip_scale")?;
        let args = [
            Arg::U64(dev.addr(&*table, 0)?),
            Arg::U64(dev.addr(acc, 0)?),
            Arg::F32(max_norm),
        ];
        dev.launch(&f, chunk_grid(chunks)?, (BLOCK, 1, 1), &args)?;
    }
    Ok(())
}
