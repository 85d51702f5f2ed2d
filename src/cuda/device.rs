//! The device: context, stream, module cache, launches, and host↔device copies.

use super::buffer::{DeviceBuffer, DeviceElem};
use crate::error::{Error, Result};
use cudarc::driver::{result::DriverError, sys, CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig};

use cudarc::driver::{DevicePtr, PushKernelArg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(crate) const ACTIVATION_PTX: &str = include_str!("../../kernels/activation.ptx");
pub(crate) const OPTIM_PTX: &str = include_str!("../../kernels/optim.ptx");
pub(crate) const SOFTMAX_XENT_PTX: &str = include_str!("../../kernels/softmax_xent.ptx");
pub(crate) const GEMM_F32_PTX: &str = include_str!("../../kernels/gemm_f32.ptx");
pub(crate) const GEMM_TC_PTX: &str = include_str!("../../kernels/gemm_tc.ptx");

/// A chunk table's contents and its device copy.
type CachedTable = (Vec<u32>, Arc<DeviceBuffer<u32>>);

/// One kernel argument, by value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    U64(u64),
    U32(u32),
    F32(f32),
}

/// The type of a kernel parameter, as declared in the PTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    U64,
    U32,
    F32,
}

impl Arg {
    fn kind(&self) -> ParamKind {
        match self {
            Arg::U64(_) => ParamKind::U64,
            Arg::U32(_) => ParamKind::U32,
            Arg::F32(_) => ParamKind::F32,
        }
    }
}

/// A loaded kernel and its parameter list.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    name: &'static str,
    func: CudaFunction,
    params: Vec<ParamKind>,
}

/// The parameter types of `.entry name(...)` in `src`, or `None` when the
/// entry is missing or declares a type the launcher does not pass.
pub(crate) fn param_kinds(src: &str, name: &str) -> Option<Vec<ParamKind>> {
    let start = src.find(&format!(".entry {name}("))? + ".entry ".len() + name.len() + 1;
    let end = start + src[start..].find(')')?;
    if src[start..end].trim().is_empty() {
        return Some(Vec::new());
    }
    src[start..end]
        .split(',')
        .map(|p| match p.split_whitespace().nth(1)? {
            ".u64" | ".b64" | ".s64" => Some(ParamKind::U64),
            ".u32" | ".b32" | ".s32" => Some(ParamKind::U32),
            ".f32" => Some(ParamKind::F32),
            _ => None,
        })
        .collect()
}

/// The CUDA driver's version as `major.minor`, or a note when it cannot be read.
fn driver_version() -> String {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: only called once libcuda is known to be loadable (is_culib_present);
    // cuDriverGetVersion writes one int through a valid pointer and needs no context.
    let r = unsafe { sys::cuDriverGetVersion(&mut v) };
    if r == sys::CUresult::CUDA_SUCCESS {
        format!("{}.{}", v / 1000, (v % 1000) / 10)
    } else {
        format!("unknown ({r:?})")
    }
}

/// `what: CUDA_ERROR_NAME (description); driver X.Y`.
fn describe(e: &DriverError, what: &str, driver: &str) -> String {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    let desc = e
        .error_string()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{what}: {name} ({desc}); driver {driver}")
}

/// A CUDA device with its context, one stream on which every operation is
/// queued in order, and a cache of the kernel modules loaded so far.
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    driver: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, Kernel>>,
    // Chunk tables of the multi-tensor kernels, most recently used last.
    tables: Mutex<Vec<CachedTable>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("ordinal", &self.ctx.ordinal())
            .field("driver", &self.driver)
            .finish()
    }
}

impl Device {
    /// Opens device `ordinal` (0 is the first GPU).
    ///
    /// No CUDA driver installed, no such device, or a device older than compute
    /// capability 8.0 (Ampere) gives [`Error::NoCuda`] with the reason; other
    /// driver failures give [`Error::Cuda`].
    pub fn new(ordinal: usize) -> Result<Device> {
        // SAFETY: is_culib_present only tries to dlopen libcuda and reports whether it could.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::NoCuda(
                "the CUDA driver library (libcuda.so) was not found".into(),
            ));
        }
        let driver = driver_version();
        // cudarc panics on some loader failures (e.g. a symbol missing from an old
        // driver); a panic must not escape to the caller.
        let ctx = match std::panic::catch_unwind(|| CudaContext::new(ordinal)) {
            Ok(Ok(ctx)) => ctx,
            Ok(Err(e)) => {
                let msg = describe(&e, &format!("opening CUDA device {ordinal}"), &driver);
                return Err(match e.0 {
                    sys::cudaError_enum::CUDA_ERROR_NO_DEVICE
                    | sys::cudaError_enum::CUDA_ERROR_INVALID_DEVICE
                    | sys::cudaError_enum::CUDA_ERROR_NOT_INITIALIZED
                    | sys::cudaError_enum::CUDA_ERROR_STUB_LIBRARY => Error::NoCuda(msg),
                    _ => Error::Cuda(msg),
                });
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown reason".into());
                return Err(Error::NoCuda(format!(
                    "the CUDA driver could not be initialised ({what}); driver {driver}"
                )));
            }
        };
        // The kernels are written for sm_80 (cp.async, ldmatrix, mma.sync, max.NaN).
        match ctx.compute_capability() {
            Ok((major, minor)) if major < 8 => {
                return Err(Error::NoCuda(format!(
                    "CUDA device {ordinal} has compute capability {major}.{minor}; the kernels need 8.0 or newer"
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(Error::Cuda(describe(&e, "reading the compute capability", &driver))),
        }
        let stream = ctx.default_stream();
        Ok(Device {
            ctx,
            stream,
            driver,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            tables: Mutex::new(Vec::new()),
        })
    }

    /// The device's name, as the driver reports it.
    pub fn name(&self) -> Result<String> {
        self.ctx.name().map_err(|e| self.err(e, "reading the device name"))
    }

    /// The compute capability `(major, minor)`; 8.0 or higher is needed.
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        self.ctx
            .compute_capability()
            .map_err(|e| self.err(e, "reading the compute capability"))
    }

    /// The driver version, `major.minor`.
    pub fn driver_version(&self) -> &str {
        &self.driver
    }

    /// Waits until everything queued so far has run; reports any failure of it.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| self.err(e, "synchronizing the stream"))
    }

    /// The cudarc stream every operation is queued on (for timing with events,
    /// graph capture, or mixing in other libraries).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cudarc context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub(crate) fn err(&self, e: DriverError, what: &str) -> Error {
        Error::Cuda(describe(&e, what, &self.driver))
    }

    /// Copies `data` into a new device buffer.
    pub fn upload<T: DeviceElem>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        if data.is_empty() {
            return Ok(DeviceBuffer::empty());
        }
        let s = self
            .stream
            .clone_htod(data)
            .map_err(|e| self.err(e, "copying to the device"))?;
        Ok(DeviceBuffer::from_slice(s))
    }

    /// A new device buffer of `len` zeros.
    pub fn zeros<T: DeviceElem>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        if len == 0 {
            return Ok(DeviceBuffer::empty());
        }
        let s = self
            .stream
            .alloc_zeros::<T>(len)
            .map_err(|e| self.err(e, "allocating device memory"))?;
        Ok(DeviceBuffer::from_slice(s))
    }

    /// A new device buffer of `len` copies of `value` (e.g. NaN, to poison an output).
    pub fn filled<T: DeviceElem>(&self, len: usize, value: T) -> Result<DeviceBuffer<T>> {
        self.upload(&vec![value; len])
    }

    /// Copies a device buffer back into a new `Vec` (waits for the stream).
    pub fn download<T: DeviceElem>(&self, buf: &DeviceBuffer<T>) -> Result<Vec<T>> {
        match buf.slice() {
            None => Ok(Vec::new()),
            Some(s) => self
                .stream
                .clone_dtoh(s)
                .map_err(|e| self.err(e, "copying to the host")),
        }
    }

    /// Copies `src` into the start of `dst` (`src.len() <= dst.len()`).
    pub fn copy_to_device<T: DeviceElem>(&self, src: &[T], dst: &mut DeviceBuffer<T>) -> Result<()> {
        if src.len() > dst.len() {
            return Err(Error::BufferTooShort {
                arg: "dst",
                len: dst.len(),
                needed: src.len(),
            });
        }
        match dst.slice_mut() {
            None => Ok(()),
            Some(s) => {
                let mut view = s.slice_mut(0..src.len());
                self.stream
                    .memcpy_htod(src, &mut view)
                    .map_err(|e| self.err(e, "copying to the device"))
            }
        }
    }

    /// Copies the start of `src` into `dst` (`dst.len() <= src.len()`; waits for the stream).
    pub fn copy_to_host<T: DeviceElem>(&self, src: &DeviceBuffer<T>, dst: &mut [T]) -> Result<()> {
        if dst.len() > src.len() {
            return Err(Error::BufferTooShort {
                arg: "src",
                len: src.len(),
                needed: dst.len(),
            });
        }
        match src.slice() {
            None => Ok(()),
            Some(s) => {
                let view = s.slice(0..dst.len());
                self.stream
                    .memcpy_dtoh(&view, dst)
                    .map_err(|e| self.err(e, "copying to the host"))
            }
        }
    }

    /// A device copy of `words`, reused while the same table is asked for again
    /// (up to 8 distinct tables are kept; an evicted one is freed in stream order).
    pub(crate) fn cached_table(&self, words: Vec<u32>) -> Result<Arc<DeviceBuffer<u32>>> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Device address of element `offset` of `buf` (0 for an empty buffer).
    pub(crate) fn addr<T: DeviceElem>(&self, buf: &DeviceBuffer<T>, offset: usize) -> u64 {
        match buf.slice() {
            None => 0,
            Some(s) => {
                let (p, _sync) = s.device_ptr(&self.stream);
                p + (offset * std::mem::size_of::<T>()) as u64
            }
        }
    }

    fn module(&self, file: &'static str, src: &'static str) -> Result<Arc<CudaModule>> {
        let mut cache = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cache.get(file) {
            return Ok(m.clone());
        }
        let m = match self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(src)) {
            Ok(m) => m,
            Err(e) => {
                return Err(Error::Cuda(format!(
                    "{}; {}",
                    describe(&e, &format!("loading {file}"), &self.driver),
                    jit_log(src)
                )))
            }
        };
        cache.insert(file, m.clone());
        Ok(m)
    }

    pub(crate) fn function(&self, file: &'static str, src: &'static str, name: &'static str) -> Result<Kernel> {
        if let Some(f) = self.functions.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(f.clone());
        }
        let params =
            param_kinds(src, name).ok_or_else(|| Error::Cuda(format!("kernel {name} is not declared in {file}")))?;
        let m = self.module(file, src)?;
        let func = m
            .load_function(name)
            .map_err(|e| self.err(e, &format!("finding kernel {name} in {file}")))?;
        let k = Kernel { name, func, params };
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, k.clone());
        Ok(k)
    }

    /// Queues `func` on the stream with `args` (each passed by value).
    pub(crate) fn launch(
        &self,
        kernel: &Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[Arg],
    ) -> Result<()> {
        // A wrong argument list would be read as garbage by the kernel: refuse it.
        let given: Vec<ParamKind> = args.iter().map(|a| a.kind()).collect();
        if given != kernel.params {
            return Err(Error::Cuda(format!(
                "kernel {} takes parameters {:?} but was given {:?}",
                kernel.name, kernel.params, given
            )));
        }
        let func = &kernel.func;
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: block,
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(func);
        for a in args {
            match a {
                Arg::U64(v) => b.arg(v),
                Arg::U32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: the argument list matches the kernel's parameter list (the launch
        // contract in the kernel file's header), every pointer is the address of a live
        // device buffer that the caller holds borrowed for the whole call with the
        // extent the kernel touches checked by the caller, and all work is queued on one
        // stream, so it runs in order with the copies that use those buffers.
        unsafe { b.launch(cfg) }.map_err(|e| self.err(e, "launching a kernel"))?;
        Ok(())
    }
}

/// Loads `src` again with cuModuleLoadDataEx to fetch the JIT's error log.
fn jit_log(src: &str) -> String {
    let Ok(c) = std::ffi::CString::new(src) else {
        return "the PTX contains a NUL byte".into();
    };
    let mut log = vec![0u8; 16 * 1024];
    let mut opts = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    let mut vals: [*mut std::ffi::c_void; 2] = [log.as_mut_ptr().cast(), log.len() as *mut std::ffi::c_void];
    let mut module = std::mem::MaybeUninit::<sys::CUmodule>::uninit();
    // SAFETY: the image is a NUL-terminated PTX string; the two options are the log
    // buffer (valid for log.len() bytes, which outlives the call) and its size passed
    // by value in the pointer slot, as the driver API specifies; a context is current
    // (load_module bound it to this thread just before).
    let r = unsafe {
        sys::cuModuleLoadDataEx(
            module.as_mut_ptr(),
            c.as_ptr().cast(),
            2,
            opts.as_mut_ptr(),
            vals.as_mut_ptr(),
        )
    };
    if r == sys::CUresult::CUDA_SUCCESS {
        // SAFETY: the load succeeded this time, so the module handle is initialised.
        unsafe {
            let _ = sys::cuModuleUnload(module.assume_init());
        }
        return "the JIT succeeded on a second try".into();
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    format!("JIT log: {}", String::from_utf8_lossy(&log[..end]).trim())
}
