//! The PTX executor engine: device memory is host memory owned by an
//! `nnkern_ptx_exec::Memory`, and a launch interprets the kernel on the CPU
//! before returning, faulting on out-of-bounds accesses (allocations are
//! separated by unmapped gaps and freed addresses are never reused), reads of
//! unwritten shared memory, shared-memory races and diverged collectives.

use super::engine::{DeviceMemory, Engine, KernelArg};
use crate::error::{Error, Result};
use nnkern_ptx_exec::{Buffer, Memory, Module, Param};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Live bytes an executor device may hold unless told otherwise.
pub(crate) const DEFAULT_MEMORY_LIMIT: usize = 4 << 30;

struct State {
    mem: Memory,
    limit: usize,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// An executor device's memory and its limit.
pub(crate) struct ExecEngine {
    state: Arc<Mutex<State>>,
}

/// An allocation in the executor's memory, freed when dropped.
pub(crate) struct ExecMem {
    state: Arc<Mutex<State>>,
    buf: Buffer,
}

impl std::fmt::Debug for ExecMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecMem")
            .field("addr", &self.buf.addr)
            .field("len", &self.buf.len)
            .finish()
    }
}

impl Drop for ExecMem {
    fn drop(&mut self) {
        // The buffer came from this memory and is freed once (drop runs once);
        // an error here would only mean the executor's bookkeeping is broken, and a
        // drop has no one to report it to.
        let _ = lock(&self.state).mem.free(self.buf);
    }
}

impl DeviceMemory for ExecMem {
    fn addr(&self) -> u64 {
        self.buf.addr
    }
    fn bytes(&self) -> usize {
        self.buf.len
    }
}

/// A kernel of a parsed module.
#[derive(Clone)]
pub(crate) struct ExecFunc {
    module: Arc<Module>,
    name: &'static str,
}

/// Parsed modules, shared by every executor device of the process (parsing
/// the GEMM files takes tens of milliseconds; the result is immutable).
fn parsed(file: &'static str, src: &'static str) -> Result<Arc<Module>> {
    // Keyed by name and by the source's address and length (the sources are statics).
    type Cache = Mutex<HashMap<(&'static str, usize, usize), Arc<Module>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (file, src.as_ptr() as usize, src.len());
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = cache.get(&key) {
        return Ok(m.clone());
    }
    let m = Arc::new(Module::parse(src).map_err(|e| Error::Cuda(format!("PTX executor: loading {file}: {e}")))?);
    cache.insert(key, m.clone());
    Ok(m)
}

impl ExecEngine {
    pub(crate) fn new(limit: usize) -> ExecEngine {
        ExecEngine {
            state: Arc::new(Mutex::new(State {
                mem: Memory::new(),
                limit,
            })),
        }
    }

    /// Bytes held by live allocations.
    pub(crate) fn allocated_bytes(&self) -> usize {
        lock(&self.state).mem.allocated_bytes()
    }
}

fn exec_err(e: nnkern_ptx_exec::Error) -> Error {
    Error::Cuda(format!("PTX executor: {e}"))
}

impl Engine for ExecEngine {
    type Mem = ExecMem;
    type Func = ExecFunc;

    fn alloc(&self, bytes: usize, zeroed: bool) -> Result<ExecMem> {
        let mut s = lock(&self.state);
        let live = s.mem.allocated_bytes();
        if bytes > s.limit.saturating_sub(live) {
            return Err(Error::Cuda(format!(
                "PTX executor: out of memory allocating {bytes} bytes ({live} of {} in use)",
                s.limit
            )));
        }
        let buf = s
            .mem
            .try_alloc(bytes, if zeroed { 0 } else { 0xFF })
            .map_err(exec_err)?;
        Ok(ExecMem {
            state: self.state.clone(),
            buf,
        })
    }

    fn write(&self, mem: &mut ExecMem, offset: usize, src: &[u8]) -> Result<()> {
        lock(&self.state)
            .mem
            .write_bytes(mem.buf, offset, src)
            .map_err(exec_err)
    }

    fn fill(&self, mem: &mut ExecMem, offset: usize, len: usize, byte: u8) -> Result<()> {
        lock(&self.state)
            .mem
            .write_bytes(mem.buf, offset, &vec![byte; len])
            .map_err(exec_err)
    }

    fn read(&self, mem: &ExecMem, offset: usize, dst: &mut [u8]) -> Result<()> {
        lock(&self.state).mem.read_into(mem.buf, offset, dst).map_err(exec_err)
    }

    fn function(&self, file: &'static str, src: &'static str, name: &'static str) -> Result<ExecFunc> {
        let module = parsed(file, src)?;
        module.kernel(name).map_err(exec_err)?;
        Ok(ExecFunc { module, name })
    }

    fn launch(
        &self,
        func: &ExecFunc,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[KernelArg],
    ) -> Result<()> {
        let kernel = func.module.kernel(func.name).map_err(exec_err)?;
        let params: Vec<Param> = args
            .iter()
            .map(|a| match *a {
                KernelArg::U64(v) => Param::U64(v),
                KernelArg::U32(v) => Param::U32(v),
                KernelArg::F32(v) => Param::F32(v),
                KernelArg::TensorMap(t) => Param::Bytes(t.bytes().to_vec()),
            })
            .collect();
        let mut s = lock(&self.state);
        nnkern_ptx_exec::launch(&mut s.mem, kernel, grid, block, shared_bytes, &params).map_err(exec_err)?;
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        // Each launch ran to completion before it returned.
        Ok(())
    }
}
