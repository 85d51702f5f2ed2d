//! The one interface a [`Device`](super::Device) launches through, and what it
//! checks before a launch reaches either engine.
//!
//! Two engines implement [`Engine`]: the CUDA driver (`driver.rs`, through
//! cudarc) and the PTX executor (`executor.rs`, nnkern-ptx-exec running the
//! same PTX on the CPU with bounds, uninitialised-shared-memory and race
//! checks). Everything above this interface — validation, launch geometry,
//! packing decisions, parameter lists — is shared, so the executor runs
//! exactly the host code a GPU runs.
//!
//! The interface is the driver API's shape, in bytes and device addresses:
//! allocations owned by a handle that frees them when dropped (in stream
//! order), host↔device copies into and out of part of an allocation, kernel
//! lookup in a module loaded once, a launch of one kernel over a grid, and a
//! wait for everything queued. Work is queued on one stream and runs in
//! order; the executor runs each launch to completion before returning, which
//! is one valid schedule of that stream.

use super::tensor_map::TensorMapArg;
use crate::error::{Error, Result};

/// Which engine a [`Device`](super::Device) runs its kernels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// A CUDA GPU through the CUDA driver (the PTX is JIT-compiled by the driver).
    Driver,
    /// The PTX executor: the same kernels interpreted on the CPU, one launch at a
    /// time, faulting on out-of-bounds accesses, reads of unwritten shared memory,
    /// shared-memory races and diverged warp collectives. For tests and for
    /// machines without a GPU; far slower than a GPU.
    Executor,
}

/// One kernel argument, by value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KernelArg {
    /// A `.u64` / `.b64` / `.s64` parameter (device addresses, sizes, strides).
    U64(u64),
    /// A `.u32` / `.b32` / `.s32` parameter.
    U32(u32),
    /// A `.f32` parameter.
    F32(f32),
    /// A `.param .align 64 .b8 name[128]` parameter: a tensor map, encoded by the
    /// device that launches it (see [`TiledTensorMap`](super::TiledTensorMap)).
    TensorMap(TensorMapArg),
}

/// The type of a kernel parameter, as declared in the PTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    U64,
    U32,
    F32,
    /// 128 bytes aligned to at least 64 (a `CUtensorMap`).
    TensorMap,
}

impl KernelArg {
    pub(crate) fn kind(&self) -> ParamKind {
        match self {
            KernelArg::U64(_) => ParamKind::U64,
            KernelArg::U32(_) => ParamKind::U32,
            KernelArg::F32(_) => ParamKind::F32,
            KernelArg::TensorMap(_) => ParamKind::TensorMap,
        }
    }
}

/// The parameter types of `.entry name(...)` in `src`, or `None` when the
/// entry is missing or declares a type the launcher does not pass.
pub(crate) fn param_kinds(src: &str, name: &str) -> Option<Vec<ParamKind>> {
    let start = src.find(&format!(".entry {name}("))? + ".entry ".len() + name.len() + 1;
    let end = start + src[start..].find(')')?;
    if src[start..end].trim().is_empty() {
        return Some(Vec::new());
    }
    src[start..end].split(',').map(param_kind).collect()
}

/// One declaration, `.param [.align A] .type name[[N]]`.
fn param_kind(decl: &str) -> Option<ParamKind> {
    let mut words = decl.split_whitespace();
    if words.next()? != ".param" {
        return None;
    }
    let mut ty = words.next()?;
    let mut align = None;
    if ty == ".align" {
        align = Some(words.next()?.parse::<u32>().ok()?);
        ty = words.next()?;
    }
    let name = words.next()?;
    if words.next().is_some() {
        return None;
    }
    match (ty, name.split_once('[')) {
        // A tensor map: 128 bytes, aligned to 64 (CUDA's CUtensorMap) or more.
        (".b8", Some((_, "128]"))) if align.is_some_and(|a| a >= 64 && a.is_power_of_two()) => {
            Some(ParamKind::TensorMap)
        }
        (_, Some(_)) => None,
        (".u64" | ".b64" | ".s64", None) => Some(ParamKind::U64),
        (".u32" | ".b32" | ".s32", None) => Some(ParamKind::U32),
        (".f32", None) => Some(ParamKind::F32),
        _ => None,
    }
}

/// A launch as the device records it (see [`Device::record_launches`](super::Device::record_launches)).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRecord {
    /// The kernel's name.
    pub kernel: &'static str,
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Bytes of dynamic shared memory per block.
    pub shared_bytes: u32,
    /// The arguments, in parameter order.
    pub args: Vec<KernelArg>,
}

/// Checks a launch against the kernel's declared parameters and the hardware's
/// limits on grid and block shape (sm_80: grid.x ≤ 2³¹−1, grid.y and grid.z ≤
/// 65535, at most 1024 threads per block, block.z ≤ 64) and on dynamic shared
/// memory (`max_shared`, the device's opt-in limit per block), so that a
/// host-code mistake is the same error on both engines.
pub(crate) fn check_launch(
    kernel: &str,
    params: &[ParamKind],
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared: Shared,
    args: &[KernelArg],
) -> Result<()> {
    let given: Vec<ParamKind> = args.iter().map(|a| a.kind()).collect();
    if given != params {
        return Err(Error::Cuda(format!(
            "kernel {kernel} takes parameters {params:?} but was given {given:?}"
        )));
    }
    let (gx, gy, gz) = grid;
    if gx == 0 || gy == 0 || gz == 0 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
        return Err(Error::Cuda(format!(
            "kernel {kernel}: grid {grid:?} is outside 1..=2^31-1 x 1..=65535 x 1..=65535"
        )));
    }
    let (bx, by, bz) = block;
    // Each factor is at most 1024 (or 64) once the first checks pass: no overflow.
    if bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || bx * by * bz > 1024 {
        return Err(Error::Cuda(format!(
            "kernel {kernel}: block {block:?} is empty or has more than 1024 threads"
        )));
    }
    if shared.bytes > shared.max {
        return Err(Error::Cuda(format!(
            "kernel {kernel}: {} bytes of dynamic shared memory, more than the device's {} per block",
            shared.bytes, shared.max
        )));
    }
    Ok(())
}

/// Dynamic shared memory of a launch and the device's limit per block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared {
    pub(crate) bytes: u32,
    pub(crate) max: u32,
}

/// What the device needs from an engine. Sizes are in bytes; `Mem` handles
/// own their allocation and free it when dropped, ordered after the work
/// already queued.
pub(crate) trait Engine {
    /// An allocation of device memory.
    type Mem: DeviceMemory;
    /// A kernel found in a loaded module, ready to launch.
    type Func: Clone;

    /// `bytes` (> 0) of device memory, zero-filled when `zeroed`, else with
    /// unspecified contents (the executor fills them with `0xFF`, NaN as f32,
    /// so a read of an element nothing wrote shows).
    fn alloc(&self, bytes: usize, zeroed: bool) -> Result<Self::Mem>;
    /// Copies `src` into the allocation starting `offset` bytes in
    /// (the caller checked that it fits).
    fn write(&self, mem: &mut Self::Mem, offset: usize, src: &[u8]) -> Result<()>;
    /// Sets `len` bytes starting `offset` bytes in to `byte`, queued in stream order
    /// (a device-side memset: no host data moves; the caller checked that they fit).
    fn fill(&self, mem: &mut Self::Mem, offset: usize, len: usize, byte: u8) -> Result<()>;
    /// Copies `dst.len()` bytes starting `offset` bytes in into `dst`, after the
    /// work queued before (the caller checked that they exist).
    fn read(&self, mem: &Self::Mem, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Kernel `name` of the module `src` (named `file` in messages), loading the
    /// module the first time.
    fn function(&self, file: &'static str, src: &'static str, name: &'static str) -> Result<Self::Func>;
    /// Queues `func` over `grid` × `block` threads with `shared_bytes` of dynamic
    /// shared memory and `args` (checked by [`check_launch`] against the kernel's
    /// parameter list and the device's limits).
    fn launch(
        &self,
        func: &Self::Func,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[KernelArg],
    ) -> Result<()>;
    /// Waits for everything queued and reports any failure of it.
    fn synchronize(&self) -> Result<()>;
}

/// An allocation an [`Engine`] made.
pub(crate) trait DeviceMemory {
    /// The device address of its first byte.
    fn addr(&self) -> u64;
    /// Its length in bytes.
    fn bytes(&self) -> usize;
}
