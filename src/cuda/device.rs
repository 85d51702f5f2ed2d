//! The device: one engine (the CUDA driver or the PTX executor) behind the
//! same memory, copy and launch calls; the kernel cache; launch checks.

use super::buffer::{DeviceBuffer, DeviceElem};
use super::driver::{DriverEngine, DriverMem};
use super::engine::{
    check_launch, param_kinds, DeviceMemory, Engine, EngineKind, KernelArg, LaunchRecord, ParamKind, Shared,
};
use super::executor::{ExecEngine, ExecFunc, ExecMem, DEFAULT_MEMORY_LIMIT};
use super::tensor_map::{TensorMapArg, TiledTensorMap};
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaStream};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) const ACTIVATION_PTX: &str = include_str!("../../kernels/activation.ptx");
pub(crate) const OPTIM_PTX: &str = include_str!("../../kernels/optim.ptx");
pub(crate) const SOFTMAX_XENT_PTX: &str = include_str!("../../kernels/softmax_xent.ptx");
pub(crate) const GEMM_F32_PTX: &str = include_str!("../../kernels/gemm_f32.ptx");
pub(crate) const GEMM_TC_PTX: &str = include_str!("../../kernels/gemm_tc.ptx");
pub(crate) const GEMM_SM90_PTX: &str = include_str!("../../kernels/gemm_sm90.ptx");

/// Tensor maps a device keeps encoded (most recently used last).
const TENSOR_MAP_CACHE: usize = 64;

/// What an executor device models: the compute capability it reports, its
/// multiprocessors and its shared memory per block (the opt-in maximum).
#[derive(Debug, Clone, Copy)]
struct ExecModel {
    cc: (i32, i32),
    sms: u32,
    max_shared: u32,
}

/// sm_80 as an A100: 108 SMs, 163 KiB of shared memory per block.
const EXEC_SM80: ExecModel = ExecModel {
    cc: (8, 0),
    sms: 108,
    max_shared: 166_912,
};
/// sm_90 as an H200 (and H100 SXM): 132 SMs, 227 KiB of shared memory per block.
const EXEC_SM90: ExecModel = ExecModel {
    cc: (9, 0),
    sms: 132,
    max_shared: 232_448,
};

/// A chunk table's contents and its device copy.
type CachedTable = (Vec<u32>, Arc<DeviceBuffer<u32>>);

/// Device memory of either engine.
#[derive(Debug)]
pub(crate) enum Mem {
    Driver(DriverMem),
    Executor(ExecMem),
}

impl DeviceMemory for Mem {
    fn addr(&self) -> u64 {
        match self {
            Mem::Driver(m) => m.addr(),
            Mem::Executor(m) => m.addr(),
        }
    }
    fn bytes(&self) -> usize {
        match self {
            Mem::Driver(m) => m.bytes(),
            Mem::Executor(m) => m.bytes(),
        }
    }
}

#[derive(Clone)]
enum Func {
    Driver(CudaFunction),
    Executor(ExecFunc),
}

enum Engines {
    Driver(DriverEngine),
    Executor(ExecEngine, ExecModel),
}

/// A loaded kernel and its parameter list.
#[derive(Clone)]
pub(crate) struct Kernel {
    name: &'static str,
    params: Vec<ParamKind>,
    func: Func,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("name", &self.name)
            .field("params", &self.params)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn foreign() -> Error {
    Error::invalid("buffer", "the buffer belongs to another device")
}

/// A device with one stream on which every operation is queued in order, a
/// cache of the kernels loaded so far, and the engine that runs them: a CUDA
/// GPU ([`Device::new`]) or the PTX executor on the CPU ([`Device::executor`]).
/// Every operation in [`cuda`](super) takes a device and runs the same host
/// code (checks, launch geometry, packing, parameter lists) on either.
pub struct Device {
    id: u64,
    engine: Engines,
    functions: Mutex<HashMap<(&'static str, &'static str), Kernel>>,
    // Chunk tables of the multi-tensor kernels, most recently used last.
    tables: Mutex<Vec<CachedTable>>,
    log: Mutex<Option<Vec<LaunchRecord>>>,
    // Most blocks per grid dimension of the grid-stride kernels (a test hook).
    grid_limit: AtomicUsize,
    // Encoded tensor maps by layout, most recently used last, and how many were encoded.
    tensor_maps: Mutex<Vec<(TiledTensorMap, TensorMapArg)>>,
    tensor_maps_encoded: AtomicUsize,
    // Whether the GEMM may dispatch to the sm_90a kernels (a benchmark hook).
    sm90_kernels: AtomicBool,
    // Host-to-device copies queued so far.
    h2d_copies: AtomicUsize,
}

/// A captured sequence of this device's work (a CUDA graph), replayed by
/// [`Device::launch_graph`]: the same launches with the same arguments, so
/// anything that changes from one replay to the next must be read by the
/// kernels from device memory. Only a GPU captures ([`Device::can_capture_graphs`]).
pub struct DeviceGraph {
    device_id: u64,
    graph: CudaGraph,
}

impl std::fmt::Debug for DeviceGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceGraph").field("device", &self.device_id).finish()
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Device");
        d.field("engine", &self.engine());
        if let Engines::Driver(e) = &self.engine {
            d.field("ordinal", &e.ordinal()).field("driver", &e.driver_version());
        }
        d.finish()
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Device {
    fn with(engine: Engines) -> Device {
        Device {
            id: next_id(),
            engine,
            functions: Mutex::new(HashMap::new()),
            tables: Mutex::new(Vec::new()),
            log: Mutex::new(None),
            grid_limit: AtomicUsize::new(usize::MAX),
            tensor_maps: Mutex::new(Vec::new()),
            tensor_maps_encoded: AtomicUsize::new(0),
            sm90_kernels: AtomicBool::new(true),
            h2d_copies: AtomicUsize::new(0),
        }
    }

    /// Opens CUDA device `ordinal` (0 is the first GPU).
    ///
    /// No CUDA driver installed, no such device, or a device older than compute
    /// capability 8.0 (Ampere) gives [`Error::NoCuda`] with the reason; other
    /// driver failures give [`Error::Cuda`].
    pub fn new(ordinal: usize) -> Result<Device> {
        Ok(Device::with(Engines::Driver(DriverEngine::new(ordinal)?)))
    }

    /// A device on the PTX executor: the same kernels and host code, run on the
    /// CPU one launch at a time, with every launch checked for out-of-bounds
    /// accesses, reads of unwritten shared memory, shared-memory races and
    /// diverged warp collectives (each an [`Error::Cuda`] naming the kernel, PTX
    /// line, block and thread). Needs no GPU; orders of magnitude slower than
    /// one. It may hold 4 GiB of live buffers.
    pub fn executor() -> Device {
        Device::executor_with_memory_limit(DEFAULT_MEMORY_LIMIT)
    }

    /// [`Device::executor`] holding at most `bytes` of live buffers (more is an
    /// out-of-memory [`Error::Cuda`], as on a GPU).
    pub fn executor_with_memory_limit(bytes: usize) -> Device {
        Device::with(Engines::Executor(ExecEngine::new(bytes), EXEC_SM80))
    }

    /// [`Device::executor`] modelling an sm_90 GPU (compute capability 9.0, 132
    /// multiprocessors and 227 KiB of shared memory per block, as an H200): the
    /// operations dispatch as on such a GPU, so the sm_90a kernels (wgmma, bulk
    /// tensor copies through tensor maps, mbarriers) and their host code run here.
    pub fn executor_sm90() -> Device {
        Device::with(Engines::Executor(ExecEngine::new(DEFAULT_MEMORY_LIMIT), EXEC_SM90))
    }

    /// Which engine runs this device's kernels.
    pub fn engine(&self) -> EngineKind {
        match self.engine {
            Engines::Driver(_) => EngineKind::Driver,
            Engines::Executor(..) => EngineKind::Executor,
        }
    }

    /// The device's name, as the driver reports it (`PTX executor (CPU)` on the executor).
    pub fn name(&self) -> Result<String> {
        match &self.engine {
            Engines::Driver(e) => e.name(),
            Engines::Executor(_, m) if m.cc == EXEC_SM90.cc => Ok("PTX executor (CPU, sm_90 model)".into()),
            Engines::Executor(..) => Ok("PTX executor (CPU)".into()),
        }
    }

    /// The compute capability `(major, minor)`; 8.0 or higher is needed. The
    /// executor reports the one it models: 8.0 ([`Device::executor`]) or 9.0
    /// ([`Device::executor_sm90`]).
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        match &self.engine {
            Engines::Driver(e) => e.compute_capability(),
            Engines::Executor(_, m) => Ok(m.cc),
        }
    }

    /// The number of multiprocessors (the executor: the number its model has).
    pub fn multiprocessor_count(&self) -> Result<u32> {
        match &self.engine {
            Engines::Driver(e) => e.multiprocessor_count(),
            Engines::Executor(_, m) => Ok(m.sms),
        }
    }

    /// The most dynamic shared memory one block may be given, in bytes (the
    /// opt-in maximum; the executor: its model's).
    pub fn max_dynamic_shared_bytes(&self) -> u32 {
        match &self.engine {
            Engines::Driver(e) => e.max_shared(),
            Engines::Executor(_, m) => m.max_shared,
        }
    }

    /// `map` encoded for this device's engine (`cuTensorMapEncodeTiled` on a GPU,
    /// the executor's model on the executor), after the same checks on both
    /// ([`TiledTensorMap::validate`]). Encodings are kept per layout (the last 64),
    /// so an operand layout used again is not encoded again.
    pub fn tensor_map(&self, map: &TiledTensorMap) -> Result<TensorMapArg> {
        map.validate()?;
        let mut cache = lock(&self.tensor_maps);
        if let Some(pos) = cache.iter().position(|(m, _)| m == map) {
            let entry = cache.remove(pos);
            let arg = entry.1;
            cache.push(entry);
            return Ok(arg);
        }
        let arg = match &self.engine {
            Engines::Driver(e) => e.encode_tensor_map(map)?,
            Engines::Executor(..) => map.executor_encoding()?,
        };
        self.tensor_maps_encoded.fetch_add(1, Ordering::Relaxed);
        if cache.len() >= TENSOR_MAP_CACHE {
            cache.remove(0);
        }
        cache.push((*map, arg));
        Ok(arg)
    }

    /// How many tensor maps this device has encoded (not counting those reused from
    /// its cache): a test can check that a layout is encoded once.
    pub fn tensor_maps_encoded(&self) -> usize {
        self.tensor_maps_encoded.load(Ordering::Relaxed)
    }

    /// The driver version, `major.minor` (`none` on the executor).
    pub fn driver_version(&self) -> &str {
        match &self.engine {
            Engines::Driver(e) => e.driver_version(),
            Engines::Executor(..) => "none",
        }
    }

    /// Waits until everything queued so far has run; reports any failure of it.
    pub fn synchronize(&self) -> Result<()> {
        match &self.engine {
            Engines::Driver(e) => e.synchronize(),
            Engines::Executor(e, _) => e.synchronize(),
        }
    }

    /// The cudarc stream every operation is queued on (for timing with events,
    /// graph capture, or mixing in other libraries); `None` on the executor.
    pub fn stream(&self) -> Option<&Arc<CudaStream>> {
        match &self.engine {
            Engines::Driver(e) => Some(e.stream()),
            Engines::Executor(..) => None,
        }
    }

    /// The cudarc context; `None` on the executor.
    pub fn context(&self) -> Option<&Arc<CudaContext>> {
        match &self.engine {
            Engines::Driver(e) => Some(e.context()),
            Engines::Executor(..) => None,
        }
    }

    /// Bytes of live buffers on an executor device (`None` on a GPU): a test can
    /// check that an operation frees its temporaries.
    pub fn executor_bytes_in_use(&self) -> Option<usize> {
        match &self.engine {
            Engines::Driver(_) => None,
            Engines::Executor(e, _) => Some(e.allocated_bytes()),
        }
    }

    /// Host-to-device copies queued on this device so far (each [`Device::upload`],
    /// [`Device::copy_to_device`] or [`Device::filled`] chunk of at least one element,
    /// including the chunk tables the operations cache): a test can check that a loop
    /// copies nothing per iteration. Device-side fills ([`Device::fill_bytes`]) are not copies.
    pub fn host_to_device_copies(&self) -> usize {
        self.h2d_copies.load(Ordering::Relaxed)
    }

    /// Sets every byte of elements `at` of `buf` to `byte`, on the device and in
    /// stream order (a memset: no host data moves, and a graph can capture it).
    pub fn fill_bytes<T: DeviceElem>(&self, buf: &mut DeviceBuffer<T>, at: Range<usize>, byte: u8) -> Result<()> {
        if at.start > at.end {
            return Err(Error::invalid("at", format!("range {at:?} ends before it starts")));
        }
        let off = self.byte_range(buf, at.start, at.len(), "buf")?;
        let len = at.len() * std::mem::size_of::<T>();
        if len == 0 {
            return Ok(());
        }
        match (&self.engine, buf.mem_mut()) {
            (_, None) => Ok(()),
            (Engines::Driver(e), Some(Mem::Driver(m))) => e.fill(m, off, len, byte),
            (Engines::Executor(e, _), Some(Mem::Executor(m))) => e.fill(m, off, len, byte),
            _ => Err(foreign()),
        }
    }

    /// Whether this device captures its work into graphs: a GPU does; the
    /// executor runs each launch as it comes and cannot.
    pub fn can_capture_graphs(&self) -> bool {
        matches!(self.engine, Engines::Driver(_))
    }

    /// Starts capturing: until [`Device::end_capture`], the operations queued on
    /// this device's stream are recorded, not run. Host copies and waits are not
    /// allowed meanwhile (the driver refuses them and the capture fails). An error on
    /// the executor.
    pub fn begin_capture(&self) -> Result<()> {
        match &self.engine {
            Engines::Driver(e) => e.begin_capture(),
            Engines::Executor(..) => Err(Error::Cuda("the PTX executor cannot capture graphs".into())),
        }
    }

    /// Ends the capture started by [`Device::begin_capture`] and returns the
    /// captured work, ready to launch.
    pub fn end_capture(&self) -> Result<DeviceGraph> {
        match &self.engine {
            Engines::Driver(e) => Ok(DeviceGraph {
                device_id: self.id,
                graph: e.end_capture()?,
            }),
            Engines::Executor(..) => Err(Error::Cuda("the PTX executor cannot capture graphs".into())),
        }
    }

    /// Queues a graph this device captured.
    pub fn launch_graph(&self, graph: &DeviceGraph) -> Result<()> {
        if graph.device_id != self.id {
            return Err(Error::invalid("graph", "the graph belongs to another device"));
        }
        match &self.engine {
            Engines::Driver(e) => e.launch_graph(&graph.graph),
            Engines::Executor(..) => Err(Error::Cuda("the PTX executor cannot launch graphs".into())),
        }
    }

    /// Starts (`true`) or stops recording every launch: kernel, grid, block and
    /// arguments, on either engine. For tests that check which kernels an
    /// operation ran and how; [`Device::take_launches`] returns the records.
    pub fn record_launches(&self, on: bool) {
        let mut log = lock(&self.log);
        match (on, log.is_some()) {
            (true, false) => *log = Some(Vec::new()),
            (false, _) => *log = None,
            (true, true) => {}
        }
    }

    /// The launches recorded since recording started or since the last call.
    pub fn take_launches(&self) -> Vec<LaunchRecord> {
        lock(&self.log).as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Test hook: launch the grid-stride kernels (element-wise, bias, packing)
    /// with at most `blocks` (≥ 1) blocks per grid dimension, so that small
    /// shapes run their stride loops. Results do not change; only the geometry.
    #[cfg(any(test, feature = "testing"))]
    pub fn limit_grid_for_tests(&self, blocks: usize) {
        self.grid_limit.store(blocks.max(1), Ordering::Relaxed);
    }

    /// Benchmark hook: with `false`, the GEMM runs the mma.sync kernels even on an
    /// sm_90 device (to time them beside the sm_90a kernel); `true` (the default)
    /// restores the normal dispatch. Results stay within the same bounds.
    #[cfg(any(test, feature = "testing"))]
    pub fn allow_sm90_kernels(&self, on: bool) {
        self.sm90_kernels.store(on, Ordering::Relaxed);
    }

    /// Whether the sm_90a kernels may run here: compute capability 9.0 and not
    /// switched off by the benchmark hook `Device::allow_sm90_kernels`.
    pub(crate) fn runs_sm90_kernels(&self) -> Result<bool> {
        Ok(self.sm90_kernels.load(Ordering::Relaxed) && self.compute_capability()? == (9, 0))
    }

    /// `cap`, or less when a test lowered it.
    pub(crate) fn grid_cap(&self, cap: usize) -> usize {
        cap.min(self.grid_limit.load(Ordering::Relaxed))
    }

    /// A new buffer of `len` elements, zeroed or with unspecified contents.
    fn alloc<T: DeviceElem>(&self, len: usize, zeroed: bool) -> Result<DeviceBuffer<T>> {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or(Error::Overflow {
            arg: "len",
            what: "len * element size",
        })?;
        if bytes == 0 {
            return Ok(DeviceBuffer::empty(self.id));
        }
        let mem = match &self.engine {
            Engines::Driver(e) => Mem::Driver(e.alloc(bytes, zeroed)?),
            Engines::Executor(e, _) => Mem::Executor(e.alloc(bytes, zeroed)?),
        };
        Ok(DeviceBuffer::from_mem(self.id, len, mem))
    }

    /// Copies `data` into a new device buffer.
    pub fn upload<T: DeviceElem>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        let mut buf = self.alloc(data.len(), false)?;
        self.write_at(&mut buf, 0, data)?;
        Ok(buf)
    }

    /// A new device buffer of `len` zeros.
    pub fn zeros<T: DeviceElem>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.alloc(len, true)
    }

    /// A new device buffer of `len` copies of `value` (e.g. NaN, to poison an output).
    pub fn filled<T: DeviceElem>(&self, len: usize, value: T) -> Result<DeviceBuffer<T>> {
        let mut buf = self.alloc(len, false)?;
        let mut chunk = vec![value; len.min(1 << 16)];
        let mut done = 0;
        while done < len {
            let n = chunk.len().min(len - done);
            chunk.truncate(n);
            self.write_at(&mut buf, done, &chunk)?;
            done += n;
        }
        Ok(buf)
    }

    /// Copies `src` into `dst` starting at element `offset` (the copy must fit).
    fn write_at<T: DeviceElem>(&self, dst: &mut DeviceBuffer<T>, offset: usize, src: &[T]) -> Result<()> {
        let at = self.byte_range(dst, offset, src.len(), "dst")?;
        let bytes: &[u8] = bytemuck::cast_slice(src);
        if !bytes.is_empty() && dst.mem().is_some() {
            self.h2d_copies.fetch_add(1, Ordering::Relaxed);
        }
        match (&self.engine, dst.mem_mut()) {
            (_, None) => Ok(()),
            (Engines::Driver(e), Some(Mem::Driver(m))) => e.write(m, at, bytes),
            (Engines::Executor(e, _), Some(Mem::Executor(m))) => e.write(m, at, bytes),
            _ => Err(foreign()),
        }
    }

    /// Copies elements `offset..offset + dst.len()` of `src` into `dst` (waits for the stream).
    fn read_at<T: DeviceElem>(&self, src: &DeviceBuffer<T>, offset: usize, dst: &mut [T]) -> Result<()> {
        let at = self.byte_range(src, offset, dst.len(), "src")?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(dst);
        match (&self.engine, src.mem()) {
            (_, None) => Ok(()),
            (Engines::Driver(e), Some(Mem::Driver(m))) => e.read(m, at, bytes),
            (Engines::Executor(e, _), Some(Mem::Executor(m))) => e.read(m, at, bytes),
            _ => Err(foreign()),
        }
    }

    /// The byte offset of element `offset` of `buf`, after checking that the buffer is
    /// this device's and that elements `offset..offset + count` are inside it.
    fn byte_range<T: DeviceElem>(
        &self,
        buf: &DeviceBuffer<T>,
        offset: usize,
        count: usize,
        arg: &'static str,
    ) -> Result<usize> {
        if buf.device_id() != self.id {
            return Err(foreign());
        }
        if offset.checked_add(count).is_none_or(|end| end > buf.len()) {
            return Err(Error::BufferTooShort {
                arg,
                len: buf.len(),
                needed: offset.saturating_add(count),
            });
        }
        // offset + count <= len and the allocation holds len * size_of::<T>() bytes
        // (checked when it was made): neither product overflows.
        let (at, bytes) = (offset * std::mem::size_of::<T>(), count * std::mem::size_of::<T>());
        if let Some(m) = buf.mem() {
            if at + bytes > m.bytes() {
                return Err(Error::Cuda(format!(
                    "internal: {bytes} bytes at {at} exceed a {}-byte allocation",
                    m.bytes()
                )));
            }
        }
        Ok(at)
    }

    /// Copies a device buffer back into a new `Vec` (waits for the stream).
    pub fn download<T: DeviceElem>(&self, buf: &DeviceBuffer<T>) -> Result<Vec<T>> {
        let mut out = vec![T::default(); buf.len()];
        self.read_at(buf, 0, &mut out)?;
        Ok(out)
    }

    /// Copies `src` into the start of `dst` (`src.len() <= dst.len()`).
    pub fn copy_to_device<T: DeviceElem>(&self, src: &[T], dst: &mut DeviceBuffer<T>) -> Result<()> {
        self.write_at(dst, 0, src)
    }

    /// Copies the start of `src` into `dst` (`dst.len() <= src.len()`; waits for the stream).
    pub fn copy_to_host<T: DeviceElem>(&self, src: &DeviceBuffer<T>, dst: &mut [T]) -> Result<()> {
        self.read_at(src, 0, dst)
    }

    /// A device copy of `words`, reused while the same table is asked for again
    /// (up to 8 distinct tables are kept; an evicted one is freed in stream order).
    pub(crate) fn cached_table(&self, words: Vec<u32>) -> Result<Arc<DeviceBuffer<u32>>> {
        let mut tables = lock(&self.tables);
        if let Some(pos) = tables.iter().position(|(w, _)| *w == words) {
            let entry = tables.remove(pos);
            let buf = entry.1.clone();
            tables.push(entry);
            return Ok(buf);
        }
        let buf = Arc::new(self.upload(&words)?);
        if tables.len() >= 8 {
            tables.remove(0);
        }
        tables.push((words, buf.clone()));
        Ok(buf)
    }

    /// Device address of element `offset` of `buf` (0 for an empty buffer); an
    /// error for a buffer of another device. `offset` is clamped to the buffer's
    /// length (only views of no elements start past the end, and nothing reads them).
    pub(crate) fn addr<T: DeviceElem>(&self, buf: &DeviceBuffer<T>, offset: usize) -> Result<u64> {
        if buf.device_id() != self.id {
            return Err(foreign());
        }
        Ok(match buf.mem() {
            None => 0,
            // offset <= len and len * size_of::<T>() bytes were allocated: the product
            // fits, and the sum stays inside the allocation's address range.
            Some(m) => m.addr() + (offset.min(buf.len()) * std::mem::size_of::<T>()) as u64,
        })
    }

    /// Kernel `name` of module `src` (named `file` in messages), loaded once per device.
    pub(crate) fn function(&self, file: &'static str, src: &'static str, name: &'static str) -> Result<Kernel> {
        if let Some(f) = lock(&self.functions).get(&(file, name)) {
            return Ok(f.clone());
        }
        let params =
            param_kinds(src, name).ok_or_else(|| Error::Cuda(format!("kernel {name} is not declared in {file}")))?;
        // An architecture-specific target (sm_90a) runs only on that architecture.
        if let Some(t) = src.lines().find_map(|l| l.trim().strip_prefix(".target ")) {
            let t = t.trim();
            if let Some(arch) = t.strip_prefix("sm_").and_then(|a| a.strip_suffix('a')) {
                let cc = self.compute_capability()?;
                if arch != format!("{}{}", cc.0, cc.1) {
                    return Err(Error::Cuda(format!(
                        "{file} targets {t}, which a device of compute capability {}.{} cannot run",
                        cc.0, cc.1
                    )));
                }
            }
        }
        let func = match &self.engine {
            Engines::Driver(e) => Func::Driver(e.function(file, src, name)?),
            Engines::Executor(e, _) => Func::Executor(e.function(file, src, name)?),
        };
        let k = Kernel { name, params, func };
        lock(&self.functions).insert((file, name), k.clone());
        Ok(k)
    }

    /// Queues `kernel` on the stream with `args` (each passed by value), after
    /// checking them against its parameter list and the grid against the limits.
    pub(crate) fn launch(
        &self,
        kernel: &Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[KernelArg],
    ) -> Result<()> {
        self.launch_with_shared(kernel, grid, block, 0, args)
    }

    /// [`Device::launch`] with `shared_bytes` of dynamic shared memory per block
    /// (at most [`Device::max_dynamic_shared_bytes`]).
    pub(crate) fn launch_with_shared(
        &self,
        kernel: &Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[KernelArg],
    ) -> Result<()> {
        let shared = Shared {
            bytes: shared_bytes,
            max: self.max_dynamic_shared_bytes(),
        };
        // A wrong argument list would be read as garbage by the kernel: refuse it.
        check_launch(kernel.name, &kernel.params, grid, block, shared, args)?;
        if let Some(log) = lock(&self.log).as_mut() {
            log.push(LaunchRecord {
                kernel: kernel.name,
                grid,
                block,
                shared_bytes,
                args: args.to_vec(),
            });
        }
        match (&self.engine, &kernel.func) {
            (Engines::Driver(e), Func::Driver(f)) => e.launch(f, grid, block, shared_bytes, args),
            (Engines::Executor(e, _), Func::Executor(f)) => e.launch(f, grid, block, shared_bytes, args),
            _ => Err(Error::Cuda(format!(
                "kernel {} was loaded by another engine",
                kernel.name
            ))),
        }
    }
}
