//! The executor's one error type.

use std::fmt;

/// Everything that can go wrong parsing a module or running a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PTX text could not be parsed or uses something the executor does not know.
    #[error("PTX line {line}: {msg}")]
    Parse {
        /// 1-based line of the PTX source.
        line: u32,
        /// What was wrong.
        msg: String,
    },
    /// [`crate::Module::kernel`] was asked for a kernel the module lacks.
    #[error("no kernel named `{0}` in the module")]
    NoKernel(String),
    /// The launch configuration or parameters do not fit the kernel.
    #[error("launch of `{kernel}`: {msg}")]
    Launch {
        /// Kernel name.
        kernel: String,
        /// What was wrong.
        msg: String,
    },
    /// A thread did something wrong while the kernel ran.
    #[error("{0}")]
    Fault(Box<FaultReport>),
    /// A host-side access to [`crate::Memory`] was out of bounds.
    #[error("memory: {0}")]
    Memory(String),
}

impl Error {
    /// The fault report, when this error is a fault raised while executing.
    pub fn fault(&self) -> Option<&FaultReport> {
        match self {
            Error::Fault(f) => Some(f),
            _ => None,
        }
    }
}

/// Where and how a kernel went wrong.
#[derive(Debug, Clone)]
pub struct FaultReport {
    /// Kernel name.
    pub kernel: String,
    /// 1-based PTX line of the faulting instruction.
    pub line: u32,
    /// The source text of that line.
    pub instruction: String,
    /// `%ctaid` of the faulting thread.
    pub block: [u32; 3],
    /// `%tid` of the faulting thread.
    pub thread: [u32; 3],
    /// What went wrong.
    pub fault: Fault,
    /// For shared-memory faults, the variable and offset within it (`tile+64`).
    pub shared_location: Option<String>,
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel `{}`, line {} `{}`, block ({},{},{}), thread ({},{},{}): {}",
            self.kernel,
            self.line,
            self.instruction,
            self.block[0],
            self.block[1],
            self.block[2],
            self.thread[0],
            self.thread[1],
            self.thread[2],
            self.fault
        )?;
        if let Some(loc) = &self.shared_location {
            write!(f, " [{loc}]")?;
        }
        Ok(())
    }
}

/// The kinds of fault the executor detects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Fault {
    /// A global (or generic) access not wholly inside one allocation.
    #[error("global access of {size} bytes at {addr:#x} is outside every allocation{near}")]
    GlobalOutOfBounds {
        /// Address accessed.
        addr: u64,
        /// Bytes accessed.
        size: usize,
        /// Description of the nearest allocation, if any.
        near: String,
    },
    /// A shared access beyond the static plus dynamic shared size.
    #[error("shared access of {size} bytes at offset {offset:#x} is beyond the {limit} bytes of shared memory")]
    SharedOutOfBounds {
        /// Offset accessed.
        offset: u64,
        /// Bytes accessed.
        size: usize,
        /// Shared bytes of the launch (static + dynamic).
        limit: u32,
    },
    /// A local or parameter access out of range.
    #[error("{space} access of {size} bytes at offset {offset:#x} is beyond its {limit} bytes")]
    OutOfBounds {
        /// State space.
        space: &'static str,
        /// Offset accessed.
        offset: u64,
        /// Bytes accessed.
        size: usize,
        /// Size of the space.
        limit: u64,
    },
    /// An access whose address is not a multiple of its size.
    #[error("misaligned access: address {addr:#x} is not a multiple of {align}")]
    Misaligned {
        /// Address accessed.
        addr: u64,
        /// Required alignment.
        align: u64,
    },
    /// A read of a shared byte that no thread of the block has written since launch.
    #[error("reads shared offset {offset:#x}, which no thread of this block has written")]
    SharedUninitialized {
        /// Offset read.
        offset: u32,
    },
    /// Two threads touched the same shared byte between barriers, at least one writing.
    #[error(
        "shared-memory race at offset {offset:#x}: this {this} conflicts with a {other} by thread ({},{},{}) at line {other_line} with no barrier between",
        other_thread[0], other_thread[1], other_thread[2]
    )]
    SharedRace {
        /// Offset both touched.
        offset: u32,
        /// "read" or "write" (this access).
        this: &'static str,
        /// "read" or "write" (the earlier access).
        other: &'static str,
        /// `%tid` of the other thread.
        other_thread: [u32; 3],
        /// Line of the other access.
        other_line: u32,
    },
    /// Shared memory accessed while a `cp.async` into it is still in flight.
    #[error(
        "touches shared offset {offset:#x} while a cp.async into it is still in flight (missing cp.async.wait_group?)"
    )]
    CpAsyncInFlight {
        /// Offset touched.
        offset: u32,
    },
    /// A warp-collective instruction reached with the wrong set of lanes.
    #[error("{0}")]
    Diverged(String),
    /// `trap` executed.
    #[error("trap executed")]
    Trap,
    /// Every thread that has not exited waits for something no running thread can bring
    /// about (an mbarrier phase, other warps' wgmma groups, registers, a barrier).
    #[error("deadlock: {0}")]
    Deadlock(String),
    /// A `wgmma` register or shared-memory ordering rule broken (the result is undefined on a GPU).
    #[error("{0}")]
    AsyncOrder(String),
    /// Something the executor does not model.
    #[error("unsupported: {0}")]
    Unsupported(String),
}
