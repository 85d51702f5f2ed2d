//! The CUDA driver engine (cudarc): a context, one stream, and the modules
//! JIT-compiled so far.

use super::engine::{DeviceMemory, Engine, KernelArg};
use crate::error::{Error, Result};
use cudarc::driver::{
    result::DriverError, sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// A CUDA context with the one stream every operation is queued on.
pub(crate) struct DriverEngine {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    driver: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

/// Device memory from the driver, freed (stream-ordered) when dropped.
#[derive(Debug)]
pub(crate) struct DriverMem {
    slice: CudaSlice<u8>,
    ptr: u64,
}

impl DeviceMemory for DriverMem {
    fn addr(&self) -> u64 {
        self.ptr
    }
    fn bytes(&self) -> usize {
        self.slice.len()
    }
}

impl DriverEngine {
    /// Opens device `ordinal`; see [`Device::new`](super::Device::new) for the errors.
    pub(crate) fn new(ordinal: usize) -> Result<DriverEngine> {
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
        Ok(DriverEngine {
            ctx,
            stream,
            driver,
            modules: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn err(&self, e: DriverError, what: &str) -> Error {
        Error::Cuda(describe(&e, what, &self.driver))
    }

    pub(crate) fn name(&self) -> Result<String> {
        self.ctx.name().map_err(|e| self.err(e, "reading the device name"))
    }

    pub(crate) fn compute_capability(&self) -> Result<(i32, i32)> {
        self.ctx
            .compute_capability()
            .map_err(|e| self.err(e, "reading the compute capability"))
    }

    pub(crate) fn driver_version(&self) -> &str {
        &self.driver
    }

    pub(crate) fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
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
}

impl Engine for DriverEngine {
    type Mem = DriverMem;
    type Func = CudaFunction;

    fn alloc(&self, bytes: usize, zeroed: bool) -> Result<DriverMem> {
        let slice = if zeroed {
            self.stream.alloc_zeros::<u8>(bytes)
        } else {
            // SAFETY: cudarc marks this unsafe because the memory is left unset; any
            // byte pattern is a valid u8, and the engine contract says the contents are
            // unspecified until written.
            unsafe { self.stream.alloc::<u8>(bytes) }
        }
        .map_err(|e| self.err(e, &format!("allocating {bytes} bytes of device memory")))?;
        let ptr = slice.device_ptr(&self.stream).0;
        Ok(DriverMem { slice, ptr })
    }

    fn write(&self, mem: &mut DriverMem, offset: usize, src: &[u8]) -> Result<()> {
        // The caller checked offset + src.len() <= the allocation's length.
        let mut view = mem.slice.slice_mut(offset..offset + src.len());
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(|e| self.err(e, "copying to the device"))
    }

    fn read(&self, mem: &DriverMem, offset: usize, dst: &mut [u8]) -> Result<()> {
        let view = mem.slice.slice(offset..offset + dst.len());
        self.stream
            .memcpy_dtoh(&view, dst)
            .map_err(|e| self.err(e, "copying to the host"))
    }

    fn function(&self, file: &'static str, src: &'static str, name: &'static str) -> Result<CudaFunction> {
        self.module(file, src)?
            .load_function(name)
            .map_err(|e| self.err(e, &format!("finding kernel {name} in {file}")))
    }

    fn launch(
        &self,
        func: &CudaFunction,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[KernelArg],
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: block,
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(func);
        for a in args {
            match a {
                KernelArg::U64(v) => b.arg(v),
                KernelArg::U32(v) => b.arg(v),
                KernelArg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: the device checked the argument list against the kernel's parameter
        // list (the launch contract in the kernel file's header) and the grid against
        // the hardware limits; every pointer is the address of a live device buffer that
        // the caller holds borrowed for the whole call, with the extent the kernel
        // touches checked by the caller; all work is queued on one stream, so it runs
        // in order with the copies and frees that use those buffers.
        unsafe { b.launch(cfg) }.map_err(|e| self.err(e, "launching a kernel"))?;
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| self.err(e, "synchronizing the stream"))
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
