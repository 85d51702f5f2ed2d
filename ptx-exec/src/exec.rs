//! Kernel execution: blocks one after another, warps of 32 lanes inside a
//! block, lanes of a warp stepped together.
//!
//! Divergence: every lane has its own program counter and the warp always
//! issues the instruction with the lowest pc among its running lanes, for the
//! lanes that sit there. Lanes that branch ahead wait until the others catch
//! up, so a warp reconverges at the first instruction all its paths reach —
//! the immediate post-dominator for structured code — and a warp-collective
//! instruction sees exactly the lanes that arrive together; any lane its
//! member mask names that is elsewhere is reported as divergence.
//!
//! Shared-memory checking keeps a shadow record per byte: the last writer and
//! the readers since the last barrier (the *epoch*). Two accesses of one byte
//! in one epoch by different threads, one a write, are a race unless they are
//! the same warp instruction or the warp executed `bar.warp.sync` between them.

use std::collections::VecDeque;

use crate::error::{Fault, FaultReport};
use crate::float::*;
use crate::ir::*;
use crate::memory::{Buffer, Memory, LOCAL_WINDOW, PARAM_WINDOW, SHARED_WINDOW, WINDOW_SIZE};
use crate::parse::Kernel;
use crate::Error;

/// A kernel argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A `.u32`/`.s32`/`.b32` parameter.
    U32(u32),
    /// A `.s32` parameter.
    I32(i32),
    /// A `.u64`/`.b64` parameter.
    U64(u64),
    /// A `.f32` parameter.
    F32(f32),
    /// A `.f64` parameter.
    F64(f64),
    /// A pointer parameter (`.u64`): the buffer's device address.
    Ptr(Buffer),
    /// Raw bytes for an aggregate (`.b8 name[N]`) parameter.
    Bytes(Vec<u8>),
}

impl Param {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Param::U32(v) => v.to_le_bytes().to_vec(),
            Param::I32(v) => v.to_le_bytes().to_vec(),
            Param::U64(v) => v.to_le_bytes().to_vec(),
            Param::F32(v) => v.to_le_bytes().to_vec(),
            Param::F64(v) => v.to_le_bytes().to_vec(),
            Param::Ptr(b) => b.addr.to_le_bytes().to_vec(),
            Param::Bytes(b) => b.clone(),
        }
    }
}

/// What a launch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchReport {
    /// Blocks run.
    pub blocks: u64,
    /// Warp instructions issued.
    pub warp_instructions: u64,
    /// Instructions executed summed over threads.
    pub thread_instructions: u64,
    /// Block-wide barriers completed, summed over blocks.
    pub barriers: u64,
    /// Shared bytes per block (static + dynamic).
    pub shared_bytes: u32,
}

/// Most shared memory a block may have (sm_90: 227 KiB).
const MAX_SHARED: u32 = 227 * 1024;
/// Warp instructions per launch before it is reported as hung (a minute or so of
/// executing; test-sized launches need well under a million).
const STEP_LIMIT: u64 = 50_000_000;

const PLAIN_RN: FFlags = FFlags {
    rnd: Rnd::Rn,
    ftz: false,
    sat: false,
    nan: false,
};

pub(crate) const EXITED: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
pub(crate) const WAITING: u8 = 2;
/// Blocked in an `mbarrier.try_wait`, `wgmma.wait_group` or `setmaxnreg.inc`: runs again
/// (from its pc) after the next event that may unblock it.
pub(crate) const BLOCKED: u8 = 3;
/// The writer recorded in the shadow for bytes the async proxy (bulk tensor copies) wrote:
/// their ordering is checked against mbarrier phases instead of barriers.
pub(crate) const ASYNC_TID: u32 = u32::MAX - 1;
const MULTI: u32 = u32::MAX;

#[derive(Clone, Copy, Default)]
pub(crate) struct Shadow {
    pub(crate) w_epoch: u32,
    pub(crate) w_tid: u32,
    w_step: u32,
    pub(crate) w_line: u32,
    w_sync: u32,
    pub(crate) w_atomic: bool,
    pub(crate) r_epoch: u32,
    r_tid: u32,
    r_last: u32,
    /// A reader other than `r_last`, when there were several.
    r_prev: u32,
    r_warp: u32,
    r_step: u32,
    r_line: u32,
    r_sync: u32,
    pending: u32,
    /// The writer's `fence.proxy.async` count when it wrote (the async proxy reads need a later fence).
    pub(crate) w_fence: u32,
}

struct CpOp {
    dst: u32,
    src: u64,
    size: u32,
    src_bytes: u32,
    line: u32,
}

#[derive(Default)]
struct CpState {
    open: Vec<CpOp>,
    groups: VecDeque<Vec<CpOp>>,
}

/// Runs `kernel` over `grid` × `block` threads against `mem`, with
/// `dynamic_shared_bytes` of dynamic shared memory and `params` in
/// declaration order. Any fault stops the launch and is returned with the
/// kernel, PTX line, thread and block.
pub fn launch(
    mem: &mut Memory,
    kernel: &Kernel,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    dynamic_shared_bytes: u32,
    params: &[Param],
) -> Result<LaunchReport, Error> {
    let lerr = |msg: String| Error::Launch {
        kernel: kernel.name.clone(),
        msg,
    };
    let ntid = [block.0, block.1, block.2];
    let nctaid = [grid.0, grid.1, grid.2];
    let nthreads = ntid.iter().map(|&x| x as u64).product::<u64>();
    if ntid.contains(&0) || nctaid.contains(&0) {
        return Err(lerr(format!("empty grid {grid:?} or block {block:?}")));
    }
    if nthreads > 1024 || block.2 > 64 {
        return Err(lerr(format!("block {block:?} has more than 1024 threads or z > 64")));
    }
    if let Some(r) = kernel.reqntid {
        if r != ntid {
            return Err(lerr(format!("block {block:?} differs from .reqntid {r:?}")));
        }
    }
    if let Some(m) = kernel.maxntid {
        if nthreads > m.iter().map(|&x| x as u64).product::<u64>() {
            return Err(lerr(format!("block {block:?} exceeds .maxntid {m:?}")));
        }
    }
    if params.len() != kernel.params.len() {
        return Err(lerr(format!(
            "{} parameters given, the kernel declares {}",
            params.len(),
            kernel.params.len()
        )));
    }
    let mut pbuf = vec![0u8; kernel.param_bytes];
    for (i, (p, d)) in params.iter().zip(&kernel.params).enumerate() {
        let b = p.bytes();
        if b.len() != d.size {
            return Err(lerr(format!(
                "parameter {i} (`{}`) is {} bytes, {:?} gives {}",
                d.name,
                d.size,
                p,
                b.len()
            )));
        }
        pbuf[d.offset..d.offset + d.size].copy_from_slice(&b);
    }
    let shared_limit = kernel.dyn_shared_offset.max(kernel.static_shared) as u64 + dynamic_shared_bytes as u64;
    let shared_limit = if dynamic_shared_bytes == 0 {
        kernel.static_shared as u64
    } else {
        shared_limit
    };
    if shared_limit > MAX_SHARED as u64 {
        return Err(lerr(format!(
            "{shared_limit} bytes of shared memory exceed the {MAX_SHARED} a block can have"
        )));
    }
    let n = nthreads as usize;
    let nregs = kernel.reg_mask.len();
    let mut ex = Exec {
        k: kernel,
        mem,
        nregs,
        regs: vec![0; n * nregs],
        pc: vec![0; n],
        st: vec![RUNNING; n],
        nthreads: n,
        ntid,
        nctaid,
        ctaid: [0; 3],
        params: pbuf,
        shared: vec![0; shared_limit as usize],
        shadow: vec![Shadow::default(); shared_limit as usize],
        shared_limit: shared_limit as u32,
        dyn_bytes: dynamic_shared_bytes,
        local: vec![0; n * kernel.local_bytes as usize],
        epoch: 1,
        block_epoch: 1,
        step: 0,
        warp_sync: vec![0; n.div_ceil(32)],
        cp: (0..n).map(|_| CpState::default()).collect(),
        report: LaunchReport {
            shared_bytes: shared_limit as u32,
            ..Default::default()
        },
        hop: None,
    };
    ex.hop = crate::hopper::HopState::for_launch(kernel, n, shared_limit as u32).map_err(lerr)?;
    for bz in 0..grid.2 {
        for by in 0..grid.1 {
            for bx in 0..grid.0 {
                ex.run_block([bx, by, bz])?;
            }
        }
    }
    Ok(ex.report)
}

pub(crate) struct Exec<'a> {
    pub(crate) k: &'a Kernel,
    pub(crate) mem: &'a mut Memory,
    pub(crate) nregs: usize,
    pub(crate) regs: Vec<u64>,
    pub(crate) pc: Vec<u32>,
    pub(crate) st: Vec<u8>,
    pub(crate) nthreads: usize,
    ntid: [u32; 3],
    nctaid: [u32; 3],
    ctaid: [u32; 3],
    pub(crate) params: Vec<u8>,
    pub(crate) shared: Vec<u8>,
    pub(crate) shadow: Vec<Shadow>,
    shared_limit: u32,
    dyn_bytes: u32,
    local: Vec<u8>,
    pub(crate) epoch: u32,
    pub(crate) block_epoch: u32,
    step: u32,
    warp_sync: Vec<u32>,
    cp: Vec<CpState>,
    report: LaunchReport,
    /// The sm_90 state (mbarriers, wgmma groups, async-proxy shadow), for kernels that use it.
    pub(crate) hop: Option<Box<crate::hopper::HopState>>,
}

fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn bits_of(x: f32) -> u64 {
    x.to_bits() as u64
}

fn fmin(a: f64, b: f64, nan: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return f64::NAN;
        }
        return if a.is_nan() { b } else { a };
    }
    if a == b {
        return if a.is_sign_negative() { a } else { b };
    }
    a.min(b)
}

fn fmax(a: f64, b: f64, nan: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return f64::NAN;
        }
        return if a.is_nan() { b } else { a };
    }
    if a == b {
        return if a.is_sign_positive() { a } else { b };
    }
    a.max(b)
}

fn sat32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Value of a float operand of type `ty` as f64 (exact), one 16-bit half of `v` for x2 types.
fn fval(ty: Ty, v: u64) -> f64 {
    match ty {
        Ty::F32 | Ty::Tf32 => f32_of(v) as f64,
        Ty::F64 => f64::from_bits(v),
        Ty::F16 | Ty::F16x2 => f16_to_f64(v as u16, false),
        Ty::Bf16 | Ty::Bf16x2 => f16_to_f64(v as u16, true),
        _ => unreachable!(),
    }
}

impl<'a> Exec<'a> {
    pub(crate) fn tid(&self, t: usize) -> [u32; 3] {
        let t = t as u32;
        let x = t % self.ntid[0];
        let y = (t / self.ntid[0]) % self.ntid[1];
        let z = t / (self.ntid[0] * self.ntid[1]);
        [x, y, z]
    }

    pub(crate) fn report(&self, t: usize, pc: usize, fault: Fault) -> Error {
        let ins = &self.k.code[pc];
        let line = ins.line;
        let text = self.k.lines.get(line as usize - 1).cloned().unwrap_or_default();
        let shared_location = match fault {
            Fault::SharedUninitialized { offset }
            | Fault::SharedRace { offset, .. }
            | Fault::CpAsyncInFlight { offset } => self.k.shared_location(offset),
            _ => None,
        };
        Error::Fault(Box::new(FaultReport {
            kernel: self.k.name.clone(),
            line,
            instruction: text,
            block: self.ctaid,
            thread: self.tid(t),
            fault,
            shared_location,
        }))
    }

    fn run_block(&mut self, ctaid: [u32; 3]) -> Result<(), Error> {
        self.ctaid = ctaid;
        // Registers start as all ones (NaN as f32, true as a predicate, an unmapped address):
        // a kernel that reads a register before writing it gets garbage on a GPU too.
        for t in 0..self.nthreads {
            self.regs[t * self.nregs..(t + 1) * self.nregs].copy_from_slice(&self.k.reg_mask);
        }
        self.pc.fill(0);
        self.st.fill(RUNNING);
        self.warp_sync.fill(0);
        for c in &mut self.cp {
            c.open.clear();
            c.groups.clear();
        }
        self.epoch += 1;
        self.block_epoch = self.epoch;
        self.report.blocks += 1;
        if let Some(h) = &mut self.hop {
            h.reset_block();
        }
        let nwarps = self.nthreads.div_ceil(32);
        loop {
            for w in 0..nwarps {
                self.run_warp(w)?;
            }
            // every thread now waits at a barrier, is blocked (sm_90 waits) or has exited
            if self.hop.is_some() && self.st.contains(&BLOCKED) {
                if self.hop.as_mut().is_some_and(|h| std::mem::take(&mut h.event)) {
                    self.hop_wake();
                    continue;
                }
                return Err(self.deadlock());
            }
            let mut any = false;
            for t in 0..self.nthreads {
                if self.st[t] == WAITING {
                    self.st[t] = RUNNING;
                    self.pc[t] += 1;
                    any = true;
                }
            }
            if !any {
                return Ok(());
            }
            if let Some(h) = &mut self.hop {
                h.barrier();
            }
            self.epoch += 1;
            self.report.barriers += 1;
        }
    }

    fn run_warp(&mut self, w: usize) -> Result<(), Error> {
        let lo = w * 32;
        let hi = (lo + 32).min(self.nthreads);
        // When every running lane sat at the issued pc and the instruction cannot move
        // lanes apart or stop them, they all sit at the next pc: no need to scan.
        let mut next: Option<(u32, u32)> = None;
        loop {
            let (minpc, mask) = match next.take() {
                Some(x) => x,
                None => {
                    let mut minpc = u32::MAX;
                    let mut mask = 0u32;
                    let mut running = 0u32;
                    for t in lo..hi {
                        if self.st[t] == RUNNING {
                            let p = self.pc[t];
                            running |= 1 << (t - lo);
                            if p < minpc {
                                minpc = p;
                                mask = 1 << (t - lo);
                            } else if p == minpc {
                                mask |= 1 << (t - lo);
                            }
                        }
                    }
                    if mask == 0 {
                        return Ok(());
                    }
                    if mask == running {
                        next = Some((minpc, mask));
                    }
                    (minpc, mask)
                }
            };
            self.step = self.step.wrapping_add(1);
            self.report.warp_instructions += 1;
            if self.report.warp_instructions > STEP_LIMIT {
                return Err(self.report(
                    lo + mask.trailing_zeros() as usize,
                    minpc as usize,
                    Fault::Unsupported(format!(
                        "more than {STEP_LIMIT} warp instructions: the kernel seems to hang"
                    )),
                ));
            }
            self.issue(w, minpc as usize, mask)?;
            next = match (next, &self.k.code[minpc as usize].inst) {
                (_, Inst::Bra { .. } | Inst::Exit | Inst::Bar { .. } | Inst::Hopper(_)) => None,
                (Some(_), _) => Some((minpc + 1, mask)),
                (None, _) => None,
            };
        }
    }

    #[inline(always)]
    pub(crate) fn rd(&self, t: usize, op: Op) -> u64 {
        match op {
            Op::Reg(r) => self.regs[t * self.nregs + r as usize],
            Op::Imm(v) => v,
            Op::Sreg(s) => self.sreg(t, s),
        }
    }

    #[inline(always)]
    pub(crate) fn wr(&mut self, t: usize, r: u32, v: u64) {
        self.regs[t * self.nregs + r as usize] = v & self.k.reg_mask[r as usize];
    }

    fn sreg(&self, t: usize, s: Sreg) -> u64 {
        let lane = (t % 32) as u32;
        match s {
            Sreg::Tid(d) => self.tid(t)[d as usize] as u64,
            Sreg::Ntid(d) => self.ntid[d as usize] as u64,
            Sreg::Ctaid(d) => self.ctaid[d as usize] as u64,
            Sreg::Nctaid(d) => self.nctaid[d as usize] as u64,
            Sreg::LaneId => lane as u64,
            Sreg::WarpId => (t / 32) as u64,
            Sreg::NWarpId => self.nthreads.div_ceil(32) as u64,
            Sreg::LaneMaskEq => 1u64 << lane,
            Sreg::LaneMaskLt => (1u64 << lane) - 1,
            Sreg::LaneMaskLe => (1u64 << (lane + 1)) - 1,
            Sreg::LaneMaskGt => (!((1u64 << (lane + 1)) - 1)) & 0xffff_ffff,
            Sreg::LaneMaskGe => (!((1u64 << lane) - 1)) & 0xffff_ffff,
            Sreg::Clock => self.report.warp_instructions & 0xffff_ffff,
            Sreg::Clock64 => self.report.warp_instructions,
            Sreg::SmId | Sreg::GridId => 0,
            Sreg::DynSmemSize => self.dyn_bytes as u64,
            Sreg::TotalSmemSize => self.shared_limit as u64,
        }
    }

    /// Issues the instruction at `pc` for the lanes in `mask` of warp `w`.
    fn issue(&mut self, w: usize, pc: usize, mask: u32) -> Result<(), Error> {
        let k = self.k;
        let ins = &k.code[pc];
        let lo = w * 32;
        let mut m = mask;
        if let Some((p, neg)) = ins.guard {
            let mut bits = mask;
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let t = lo + l;
                let v = self.regs[t * self.nregs + p as usize] != 0;
                if v == neg {
                    m &= !(1 << l);
                    self.pc[t] += 1;
                }
            }
            if m == 0 {
                return Ok(());
            }
        }
        self.report.thread_instructions += m.count_ones() as u64;
        if self.hop.is_some() {
            self.hop_pre(w, pc, m)?;
        }
        match &ins.inst {
            Inst::Hopper(h) => self.hop_issue(w, pc, m, h)?,
            Inst::Bra { target } => {
                let mut bits = m;
                while bits != 0 {
                    let l = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.pc[lo + l] = *target;
                }
            }
            Inst::Exit => {
                let mut bits = m;
                while bits != 0 {
                    let l = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.st[lo + l] = EXITED;
                }
            }
            Inst::Bar { count, aligned, .. } => {
                if let Some(c) = count {
                    let c = self.rd(lo + m.trailing_zeros() as usize, *c);
                    let full = self.nthreads.div_ceil(32) as u64 * 32;
                    if c != self.nthreads as u64 && c != full {
                        return Err(self.report(
                            lo + m.trailing_zeros() as usize,
                            pc,
                            Fault::Unsupported(format!(
                                "barrier with a thread count ({c}) other than the whole block ({})",
                                self.nthreads
                            )),
                        ));
                    }
                }
                if *aligned {
                    let running = self.running_mask(w);
                    if running != m {
                        let l = (running & !m).trailing_zeros() as usize;
                        return Err(self.report(
                            lo + m.trailing_zeros() as usize,
                            pc,
                            Fault::Diverged(format!(
                                "bar.sync reached by a diverged warp: lane {l} is at line {} instead",
                                self.k.code[self.pc[lo + l] as usize].line
                            )),
                        ));
                    }
                }
                let mut bits = m;
                while bits != 0 {
                    let l = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.st[lo + l] = WAITING;
                }
            }
            Inst::Shfl { .. }
            | Inst::Vote { .. }
            | Inst::Redux { .. }
            | Inst::WarpSync { .. }
            | Inst::Activemask { .. }
            | Inst::Ldmatrix { .. }
            | Inst::Mma { .. } => {
                self.collective(w, pc, m, &ins.inst)?;
                let mut bits = m;
                while bits != 0 {
                    let l = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.pc[lo + l] += 1;
                }
            }
            // The GEMM inner loops are mostly plain f32 fma: one dispatch for the whole warp.
            &Inst::Fma {
                ty: Ty::F32,
                fl,
                d,
                a,
                b,
                c,
            } if fl == PLAIN_RN => {
                let mut bits = m;
                while bits != 0 {
                    let l = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let t = lo + l;
                    let r = f32_of(self.rd(t, a)).mul_add(f32_of(self.rd(t, b)), f32_of(self.rd(t, c)));
                    self.wr(t, d, bits_of(r));
                    self.pc[t] += 1;
                }
            }
            inst => {
                let mut bits = m;
                while bits != 0 {
                    let l = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let t = lo + l;
                    if let Err(f) = self.lane(inst, t, pc) {
                        return Err(self.report(t, pc, f));
                    }
                    self.pc[t] += 1;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn running_mask(&self, w: usize) -> u32 {
        let lo = w * 32;
        let hi = (lo + 32).min(self.nthreads);
        let mut m = 0;
        for t in lo..hi {
            if self.st[t] == RUNNING {
                m |= 1 << (t - lo);
            }
        }
        m
    }

    /// Checks that the lanes executing a collective (`m`) are exactly the lanes of `member`.
    pub(crate) fn check_members(&self, w: usize, pc: usize, m: u32, member: u32, what: &str) -> Result<(), Error> {
        let lo = w * 32;
        let first = lo + m.trailing_zeros() as usize;
        if m & !member != 0 {
            let l = (m & !member).trailing_zeros();
            return Err(self.report(
                lo + l as usize,
                pc,
                Fault::Diverged(format!(
                    "lane {l} executes {what} but is not in its member mask {member:#010x}"
                )),
            ));
        }
        let missing = member & !m;
        if missing != 0 {
            let l = missing.trailing_zeros() as usize;
            let t = lo + l;
            let why = if t >= self.nthreads {
                "does not exist (partial warp)".to_string()
            } else if self.st[t] == EXITED {
                "has exited".to_string()
            } else if self.st[t] == WAITING {
                format!("waits at the barrier on line {}", self.k.code[self.pc[t] as usize].line)
            } else if self.pc[t] as usize == pc + 1 && self.k.code[pc].guard.is_some() {
                "skipped it (its guard predicate is false)".to_string()
            } else {
                format!("is at line {}", self.k.code[self.pc[t] as usize].line)
            };
            return Err(self.report(
                first,
                pc,
                Fault::Diverged(format!(
                    "{what} with member mask {member:#010x} reached by a diverged warp: lane {l} {why}"
                )),
            ));
        }
        Ok(())
    }

    fn collective(&mut self, w: usize, pc: usize, m: u32, inst: &Inst) -> Result<(), Error> {
        let lo = w * 32;
        let first = lo + m.trailing_zeros() as usize;
        let lanes = |m: u32| (0..32usize).filter(move |l| m & (1 << l) != 0);
        match *inst {
            Inst::Activemask { d } => {
                for l in lanes(m) {
                    self.wr(lo + l, d, m as u64);
                }
            }
            Inst::WarpSync { mask } => {
                let member = self.rd(first, mask) as u32;
                self.check_members(w, pc, m, member, "bar.warp.sync")?;
                self.warp_sync[w] += 1;
            }
            Inst::Vote { mode, d, a, neg, mask } => {
                let member = self.rd(first, mask) as u32;
                self.check_members(w, pc, m, member, "vote.sync")?;
                let mut ballot = 0u32;
                for l in lanes(m) {
                    if (self.rd(lo + l, a) != 0) != neg {
                        ballot |= 1 << l;
                    }
                }
                let v = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::All => (ballot == m) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == m || ballot == 0) as u64,
                };
                for l in lanes(m) {
                    self.wr(lo + l, d, v);
                }
            }
            Inst::Redux { op, ty, d, a, mask } => {
                let member = self.rd(first, mask) as u32;
                self.check_members(w, pc, m, member, "redux.sync")?;
                let mut acc: Option<u64> = None;
                for l in lanes(m) {
                    let v = self.rd(lo + l, a);
                    acc = Some(match acc {
                        None => v & ty.mask(),
                        Some(x) => int_bin(op, ty, false, x, v),
                    });
                }
                let v = acc.unwrap_or(0);
                for l in lanes(m) {
                    self.wr(lo + l, d, v);
                }
            }
            Inst::Shfl {
                mode,
                d,
                p,
                a,
                b,
                c,
                mask,
            } => {
                let member = self.rd(first, mask) as u32;
                self.check_members(w, pc, m, member, "shfl.sync")?;
                let mut vals = [0u64; 32];
                for l in lanes(m) {
                    vals[l] = self.rd(lo + l, a);
                }
                let mut out = [(0u64, false); 32];
                for l in lanes(m) {
                    let t = lo + l;
                    let lane = l as u32;
                    let bval = self.rd(t, b) as u32 & 31;
                    let cv = self.rd(t, c) as u32;
                    let cval = cv & 31;
                    let segmask = (cv >> 8) & 31;
                    let max_lane = (lane & segmask) | (cval & !segmask);
                    let min_lane = lane & segmask;
                    let (j, pval) = match mode {
                        ShflMode::Up => {
                            let j = lane as i32 - bval as i32;
                            (j, j >= max_lane as i32)
                        }
                        ShflMode::Down => {
                            let j = (lane + bval) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Bfly => {
                            let j = (lane ^ bval) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Idx => {
                            let j = (min_lane | (bval & !segmask)) as i32;
                            (j, j <= max_lane as i32)
                        }
                    };
                    let j = if pval { j as usize } else { l };
                    if m & (1 << j) == 0 {
                        return Err(self.report(
                            t,
                            pc,
                            Fault::Diverged(format!("shfl.sync reads lane {j}, which does not take part")),
                        ));
                    }
                    out[l] = (vals[j], pval);
                }
                for l in lanes(m) {
                    self.wr(lo + l, d, out[l].0);
                    if let Some(p) = p {
                        self.wr(lo + l, p, out[l].1 as u64);
                    }
                }
            }
            Inst::Ldmatrix {
                num,
                trans,
                ref ds,
                addr,
                generic,
            } => {
                if m != u32::MAX {
                    self.check_members(w, pc, m, u32::MAX, "ldmatrix.sync.aligned")?;
                }
                let mut mats = [[[0u16; 8]; 8]; 4];
                for (i, mat) in mats.iter_mut().enumerate().take(num as usize) {
                    for (r, row) in mat.iter_mut().enumerate() {
                        let t = lo + i * 8 + r;
                        let a = self.ea(t, addr);
                        let off = if generic {
                            if !(SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&a) {
                                return Err(self.report(
                                    t,
                                    pc,
                                    Fault::Unsupported(format!(
                                        "ldmatrix row address {a:#x} is not a shared-memory address"
                                    )),
                                ));
                            }
                            a - SHARED_WINDOW
                        } else {
                            a & 0xffff_ffff
                        };
                        if off % 16 != 0 {
                            return Err(self.report(t, pc, Fault::Misaligned { addr: off, align: 16 }));
                        }
                        let mut buf = [0u8; 16];
                        self.shared_read(t, pc, off, &mut buf)
                            .map_err(|f| self.report(t, pc, f))?;
                        for (e, x) in row.iter_mut().enumerate() {
                            *x = u16::from_le_bytes([buf[2 * e], buf[2 * e + 1]]);
                        }
                    }
                }
                for l in 0..32 {
                    for (i, &dr) in ds.iter().enumerate() {
                        let (e0, e1) = if trans {
                            (mats[i][(l % 4) * 2][l / 4], mats[i][(l % 4) * 2 + 1][l / 4])
                        } else {
                            (mats[i][l / 4][(l % 4) * 2], mats[i][l / 4][(l % 4) * 2 + 1])
                        };
                        self.wr(lo + l, dr, e0 as u64 | (e1 as u64) << 16);
                    }
                }
            }
            Inst::Mma {
                kind,
                f16_acc,
                ref d,
                ref a,
                ref b,
                ref c,
            } => {
                if m != u32::MAX {
                    self.check_members(w, pc, m, u32::MAX, "mma.sync.aligned")?;
                }
                self.mma(lo, kind, f16_acc, d, a, b, c);
            }
            _ => unreachable!(),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn mma(&mut self, lo: usize, kind: MmaKind, f16_acc: bool, d: &[u32], a: &[u32], b: &[u32], c: &[Op]) {
        let mut am = [[0f64; 16]; 16];
        let mut bm = [[0f64; 8]; 16];
        let mut cm = [[0f64; 8]; 16];
        let half = |v: u64, i: usize| (v >> (16 * (i & 1))) as u16;
        let kdim = match kind {
            MmaKind::M16n8k16 { .. } => 16,
            _ => 8,
        };
        for l in 0..32 {
            let t = lo + l;
            let g = l >> 2;
            let tg = l % 4;
            let reg = |r: u32| self.regs[t * self.nregs + r as usize];
            match kind {
                MmaKind::M16n8k16 { bf16 } => {
                    for i in 0..8 {
                        let row = if i < 2 || (4..6).contains(&i) { g } else { g + 8 };
                        let col = tg * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
                        am[row][col] = f16_to_f64(half(reg(a[i / 2]), i), bf16);
                    }
                    for i in 0..4 {
                        let row = tg * 2 + (i & 1) + if i >= 2 { 8 } else { 0 };
                        bm[row][g] = f16_to_f64(half(reg(b[i / 2]), i), bf16);
                    }
                }
                MmaKind::M16n8k8 { bf16 } => {
                    for i in 0..4 {
                        let row = if i < 2 { g } else { g + 8 };
                        am[row][tg * 2 + (i & 1)] = f16_to_f64(half(reg(a[i / 2]), i), bf16);
                    }
                    for i in 0..2 {
                        bm[tg * 2 + i][g] = f16_to_f64(half(reg(b[0]), i), bf16);
                    }
                }
                MmaKind::M16n8k8Tf32 => {
                    // tensor cores read the 19 high bits of each operand
                    let tf = |v: u64| f32::from_bits(v as u32 & !0x1fff) as f64;
                    for i in 0..4 {
                        let row = if i % 2 == 0 { g } else { g + 8 };
                        let col = if i < 2 { tg } else { tg + 4 };
                        am[row][col] = tf(reg(a[i]));
                    }
                    for i in 0..2 {
                        bm[tg + 4 * i][g] = tf(reg(b[i]));
                    }
                }
            }
            for i in 0..4 {
                let row = if i < 2 { g } else { g + 8 };
                let col = tg * 2 + (i & 1);
                cm[row][col] = if f16_acc {
                    f16_to_f64(half(self.rd(t, c[i / 2]), i), false)
                } else {
                    f32_of(self.rd(t, c[i])) as f64
                };
            }
        }
        // Products of 11- or 8-bit significands are exact in f64 and the sum of 16 of them
        // loses nothing in practice; the result is rounded once to the accumulator type.
        let mut dm = [[0f64; 8]; 16];
        for (r, drow) in dm.iter_mut().enumerate() {
            for (col, dv) in drow.iter_mut().enumerate() {
                let mut s = cm[r][col];
                for kk in 0..kdim {
                    s += am[r][kk] * bm[kk][col];
                }
                *dv = s;
            }
        }
        for l in 0..32 {
            let t = lo + l;
            let g = l >> 2;
            let tg = l % 4;
            if f16_acc {
                for (ri, &dr) in d.iter().enumerate() {
                    let row = if ri == 0 { g } else { g + 8 };
                    let lo16 = round_16(dm[row][tg * 2], false, Rnd::Rn) as u64;
                    let hi16 = round_16(dm[row][tg * 2 + 1], false, Rnd::Rn) as u64;
                    self.wr(t, dr, lo16 | hi16 << 16);
                }
            } else {
                for (i, &dr) in d.iter().enumerate() {
                    let row = if i < 2 { g } else { g + 8 };
                    self.wr(t, dr, bits_of(dm[row][tg * 2 + (i & 1)] as f32));
                }
            }
        }
    }

    #[inline]
    pub(crate) fn ea(&self, t: usize, a: Addr) -> u64 {
        let base = match a.base {
            Some(r) => self.regs[t * self.nregs + r as usize],
            None => 0,
        };
        base.wrapping_add(a.off as u64)
    }

    fn resolve(space: Space, addr: u64) -> (Space, u64) {
        match space {
            Space::Generic => {
                if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&addr) {
                    (Space::Shared, addr - SHARED_WINDOW)
                } else if (PARAM_WINDOW..PARAM_WINDOW + WINDOW_SIZE).contains(&addr) {
                    (Space::Param, addr - PARAM_WINDOW)
                } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&addr) {
                    (Space::Local, addr - LOCAL_WINDOW)
                } else {
                    (Space::Global, addr)
                }
            }
            s => (s, addr),
        }
    }

    pub(crate) fn oob_global(&self, addr: u64, size: usize) -> Fault {
        Fault::GlobalOutOfBounds {
            addr,
            size,
            near: self.mem.describe_near(addr),
        }
    }

    pub(crate) fn shared_bounds(&self, off: u64, size: usize) -> Result<usize, Fault> {
        if off
            .checked_add(size as u64)
            .is_none_or(|e| e > self.shared_limit as u64)
        {
            return Err(Fault::SharedOutOfBounds {
                offset: off,
                size,
                limit: self.shared_limit,
            });
        }
        Ok(off as usize)
    }

    fn other_tid(&self, t: u32) -> [u32; 3] {
        if t == MULTI {
            [u32::MAX; 3]
        } else {
            self.tid(t as usize)
        }
    }

    #[inline]
    fn conflicts(&self, t: usize, ws: u32, o_tid: u32, o_step: u32, o_sync: u32) -> bool {
        o_tid != ASYNC_TID
            && o_tid as usize != t
            && o_step != self.step
            && !(o_tid as usize / 32 == t / 32 && ws > o_sync)
    }

    pub(crate) fn shared_read(&mut self, t: usize, pc: usize, off: u64, out: &mut [u8]) -> Result<(), Fault> {
        let o = self.shared_bounds(off, out.len())?;
        if let Some(h) = &self.hop {
            h.generic_read(t, o, out.len())?;
        }
        let (e, w, ws, step) = (self.epoch, (t / 32) as u32, self.warp_sync[t / 32], self.step);
        let line = self.k.code[pc].line;
        for i in 0..out.len() {
            let sh = self.shadow[o + i];
            if sh.pending > 0 {
                return Err(Fault::CpAsyncInFlight { offset: (o + i) as u32 });
            }
            if sh.w_epoch < self.block_epoch {
                return Err(Fault::SharedUninitialized { offset: (o + i) as u32 });
            }
            if sh.w_epoch == e && self.conflicts(t, ws, sh.w_tid, sh.w_step, sh.w_sync) {
                return Err(Fault::SharedRace {
                    offset: (o + i) as u32,
                    this: "read",
                    other: "write",
                    other_thread: self.other_tid(sh.w_tid),
                    other_line: sh.w_line,
                });
            }
            let s = &mut self.shadow[o + i];
            if s.r_epoch != e {
                s.r_epoch = e;
                s.r_tid = t as u32;
                s.r_warp = w;
                s.r_step = step;
                s.r_sync = ws;
            } else {
                if s.r_tid != t as u32 {
                    s.r_tid = MULTI;
                    if s.r_warp != w {
                        s.r_warp = MULTI;
                    }
                }
                if s.r_step != step {
                    s.r_step = MULTI;
                }
                s.r_sync = s.r_sync.min(ws);
            }
            if s.r_last != t as u32 {
                s.r_prev = s.r_last;
            }
            s.r_last = t as u32;
            s.r_line = line;
        }
        out.copy_from_slice(&self.shared[o..o + out.len()]);
        Ok(())
    }

    /// Records a write of shared bytes `[o, o+len)` by thread `t`, checking races.
    fn shared_mark_write(&mut self, t: usize, line: u32, o: usize, len: usize, atomic: bool) -> Result<(), Fault> {
        let (e, w, ws, step) = (self.epoch, (t / 32) as u32, self.warp_sync[t / 32], self.step);
        let fence = match &mut self.hop {
            Some(h) => h.generic_write(t, o, len)?,
            None => 0,
        };
        for i in 0..len {
            let sh = self.shadow[o + i];
            if sh.pending > 0 {
                return Err(Fault::CpAsyncInFlight { offset: (o + i) as u32 });
            }
            if sh.w_epoch == e && !(atomic && sh.w_atomic) && self.conflicts(t, ws, sh.w_tid, sh.w_step, sh.w_sync) {
                return Err(Fault::SharedRace {
                    offset: (o + i) as u32,
                    this: "write",
                    other: "write",
                    other_thread: self.other_tid(sh.w_tid),
                    other_line: sh.w_line,
                });
            }
            if sh.r_epoch == e {
                let racy = if sh.r_tid == MULTI {
                    !(sh.r_warp == w && ws > sh.r_sync) && sh.r_step != step
                } else {
                    self.conflicts(t, ws, sh.r_tid, sh.r_step, sh.r_sync)
                };
                if racy {
                    let other = if sh.r_last as usize == t { sh.r_prev } else { sh.r_last };
                    return Err(Fault::SharedRace {
                        offset: (o + i) as u32,
                        this: "write",
                        other: "read",
                        other_thread: self.other_tid(other),
                        other_line: sh.r_line,
                    });
                }
            }
            let s = &mut self.shadow[o + i];
            s.w_epoch = e;
            s.w_tid = t as u32;
            s.w_step = step;
            s.w_line = line;
            s.w_sync = ws;
            s.w_atomic = atomic;
            s.w_fence = fence;
        }
        Ok(())
    }

    fn shared_write(&mut self, t: usize, pc: usize, off: u64, data: &[u8]) -> Result<(), Fault> {
        let o = self.shared_bounds(off, data.len())?;
        self.shared_mark_write(t, self.k.code[pc].line, o, data.len(), false)?;
        self.shared[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read_mem(&mut self, t: usize, pc: usize, space: Space, addr: u64, out: &mut [u8]) -> Result<(), Fault> {
        let n = out.len();
        if addr % n as u64 != 0 {
            return Err(Fault::Misaligned { addr, align: n as u64 });
        }
        let (space, a) = Self::resolve(space, addr);
        match space {
            Space::Global | Space::Generic => {
                let s = self.mem.get(a, n).ok_or_else(|| self.oob_global(a, n))?;
                out.copy_from_slice(s);
            }
            Space::Shared => self.shared_read(t, pc, a, out)?,
            Space::Local => {
                let lb = self.k.local_bytes as u64;
                if a.saturating_add(n as u64) > lb {
                    return Err(Fault::OutOfBounds {
                        space: "local",
                        offset: a,
                        size: n,
                        limit: lb,
                    });
                }
                let o = t * lb as usize + a as usize;
                out.copy_from_slice(&self.local[o..o + n]);
            }
            Space::Param => {
                let pb = self.params.len() as u64;
                if a.saturating_add(n as u64) > pb {
                    return Err(Fault::OutOfBounds {
                        space: "param",
                        offset: a,
                        size: n,
                        limit: pb,
                    });
                }
                out.copy_from_slice(&self.params[a as usize..a as usize + n]);
            }
        }
        Ok(())
    }

    fn write_mem(&mut self, t: usize, pc: usize, space: Space, addr: u64, data: &[u8]) -> Result<(), Fault> {
        let n = data.len();
        if addr % n as u64 != 0 {
            return Err(Fault::Misaligned { addr, align: n as u64 });
        }
        let (space, a) = Self::resolve(space, addr);
        match space {
            Space::Global | Space::Generic => {
                if self.mem.get(a, n).is_none() {
                    return Err(self.oob_global(a, n));
                }
                self.mem.get_mut(a, n).unwrap().copy_from_slice(data);
            }
            Space::Shared => self.shared_write(t, pc, a, data)?,
            Space::Local => {
                let lb = self.k.local_bytes as u64;
                if a.saturating_add(n as u64) > lb {
                    return Err(Fault::OutOfBounds {
                        space: "local",
                        offset: a,
                        size: n,
                        limit: lb,
                    });
                }
                let o = t * lb as usize + a as usize;
                self.local[o..o + n].copy_from_slice(data);
            }
            Space::Param => return Err(Fault::Unsupported("stores to the param space".into())),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn atom(
        &mut self,
        t: usize,
        pc: usize,
        space: Space,
        op: AtomOp,
        ty: Ty,
        addr: u64,
        b: u64,
        c: Option<u64>,
    ) -> Result<u64, Fault> {
        let n = ty.bytes();
        if addr % n as u64 != 0 {
            return Err(Fault::Misaligned { addr, align: n as u64 });
        }
        let (space, a) = Self::resolve(space, addr);
        let mut buf = [0u8; 8];
        let old = match space {
            Space::Global | Space::Generic => {
                let s = self.mem.get(a, n).ok_or_else(|| self.oob_global(a, n))?;
                buf[..n].copy_from_slice(s);
                u64::from_le_bytes(buf)
            }
            Space::Shared => {
                let o = self.shared_bounds(a, n)?;
                for i in 0..n {
                    let sh = self.shadow[o + i];
                    if sh.pending > 0 {
                        return Err(Fault::CpAsyncInFlight { offset: (o + i) as u32 });
                    }
                    if sh.w_epoch < self.block_epoch {
                        return Err(Fault::SharedUninitialized { offset: (o + i) as u32 });
                    }
                }
                self.shared_mark_write(t, self.k.code[pc].line, o, n, true)?;
                buf[..n].copy_from_slice(&self.shared[o..o + n]);
                u64::from_le_bytes(buf)
            }
            _ => return Err(Fault::Unsupported("atomics outside global and shared memory".into())),
        };
        let mask = ty.mask();
        let new = match op {
            AtomOp::Add => match ty {
                // atom.add.f32 flushes subnormal inputs and results
                Ty::F32 => bits_of(ftz32(ftz32(f32_of(old)) + ftz32(f32_of(b)))),
                Ty::F64 => (f64::from_bits(old) + f64::from_bits(b)).to_bits(),
                _ => old.wrapping_add(b) & mask,
            },
            AtomOp::Min | AtomOp::Max => {
                let less = match ty {
                    Ty::F32 => f32_of(b) < f32_of(old),
                    Ty::F64 => f64::from_bits(b) < f64::from_bits(old),
                    _ if ty.signed() => sext(b, ty.bits()) < sext(old, ty.bits()),
                    _ => b < old,
                };
                let greater = match ty {
                    Ty::F32 => f32_of(b) > f32_of(old),
                    Ty::F64 => f64::from_bits(b) > f64::from_bits(old),
                    _ if ty.signed() => sext(b, ty.bits()) > sext(old, ty.bits()),
                    _ => b > old,
                };
                if (op == AtomOp::Min && less) || (op == AtomOp::Max && greater) {
                    b
                } else {
                    old
                }
            }
            AtomOp::And => old & b,
            AtomOp::Or => old | b,
            AtomOp::Xor => old ^ b,
            AtomOp::Exch => b,
            AtomOp::Cas => {
                if old == b {
                    c.unwrap_or(0)
                } else {
                    old
                }
            }
            AtomOp::Inc => {
                if old >= b {
                    0
                } else {
                    old + 1
                }
            }
            AtomOp::Dec => {
                if old == 0 || old > b {
                    b
                } else {
                    old - 1
                }
            }
        } & mask;
        let nb = new.to_le_bytes();
        match space {
            Space::Shared => {
                let o = a as usize;
                self.shared[o..o + n].copy_from_slice(&nb[..n]);
            }
            _ => self.mem.get_mut(a, n).unwrap().copy_from_slice(&nb[..n]),
        }
        Ok(old)
    }

    fn cp_async_issue(
        &mut self,
        t: usize,
        pc: usize,
        dst: u64,
        src: u64,
        size: u32,
        src_bytes: u32,
    ) -> Result<(), Fault> {
        if src_bytes > size {
            return Err(Fault::Unsupported(format!(
                "cp.async src-size {src_bytes} exceeds the copy size {size}"
            )));
        }
        if dst % size as u64 != 0 {
            return Err(Fault::Misaligned {
                addr: dst,
                align: size as u64,
            });
        }
        if src % size as u64 != 0 && src_bytes > 0 {
            return Err(Fault::Misaligned {
                addr: src,
                align: size as u64,
            });
        }
        if src_bytes > 0 && self.mem.get(src, src_bytes as usize).is_none() {
            return Err(self.oob_global(src, src_bytes as usize));
        }
        let o = self.shared_bounds(dst, size as usize)?;
        let line = self.k.code[pc].line;
        self.shared_mark_write(t, line, o, size as usize, false)?;
        for i in 0..size as usize {
            self.shadow[o + i].pending += 1;
        }
        self.cp[t].open.push(CpOp {
            dst: o as u32,
            src,
            size,
            src_bytes,
            line,
        });
        Ok(())
    }

    fn cp_async_complete(&mut self, t: usize, op: CpOp) -> Result<(), Fault> {
        let mut buf = [0u8; 16];
        if op.src_bytes > 0 {
            let s = self
                .mem
                .get(op.src, op.src_bytes as usize)
                .ok_or_else(|| self.oob_global(op.src, 16))?;
            buf[..op.src_bytes as usize].copy_from_slice(s);
        }
        let o = op.dst as usize;
        for i in 0..op.size as usize {
            self.shadow[o + i].pending -= 1;
        }
        self.shared_mark_write(t, op.line, o, op.size as usize, false)?;
        self.shared[o..o + op.size as usize].copy_from_slice(&buf[..op.size as usize]);
        Ok(())
    }

    /// Executes a non-collective instruction for one thread.
    fn lane(&mut self, inst: &Inst, t: usize, pc: usize) -> Result<(), Fault> {
        match *inst {
            Inst::Mov { d, a } => {
                let v = self.rd(t, a);
                self.wr(t, d, v);
            }
            Inst::Pack { d, ref parts, bits } => {
                let mut v = 0u64;
                for (i, &p) in parts.iter().enumerate() {
                    v |= (self.rd(t, p) & width_mask(bits)) << (i as u32 * bits);
                }
                self.wr(t, d, v);
            }
            Inst::Unpack { ref ds, a, bits } => {
                let v = self.rd(t, a);
                for (i, d) in ds.iter().enumerate() {
                    if let Some(d) = d {
                        self.wr(t, *d, (v >> (i as u32 * bits)) & width_mask(bits));
                    }
                }
            }
            Inst::Int { op, ty, sat, d, a, b } => {
                let r = int_bin(op, ty, sat, self.rd(t, a), self.rd(t, b));
                self.wr(t, d, r);
            }
            Inst::IntUn { op, ty, d, a } => {
                let bits = ty.bits();
                let m = ty.mask();
                let a = self.rd(t, a) & m;
                let r = match op {
                    IntUn::Neg => a.wrapping_neg() & m,
                    IntUn::Abs => (sext(a, bits).wrapping_abs() as u64) & m,
                    IntUn::Not => !a & m,
                    IntUn::Cnot => (a == 0) as u64,
                    IntUn::Popc => a.count_ones() as u64,
                    IntUn::Clz => (a.leading_zeros() - (64 - bits)) as u64,
                    IntUn::Brev => a.reverse_bits() >> (64 - bits),
                    IntUn::Bfind { shiftamt } => {
                        // for negative signed values the first 0 below the sign counts
                        let v = if ty.signed() && sext(a, bits) < 0 { !a & m } else { a };
                        if v == 0 {
                            m & 0xffff_ffff
                        } else {
                            let pos = 63 - v.leading_zeros() as u64;
                            if shiftamt {
                                bits as u64 - 1 - pos
                            } else {
                                pos
                            }
                        }
                    }
                };
                self.wr(t, d, r);
            }
            Inst::Mad { kind, ty, d, a, b, c } => {
                let (a, b, c) = (self.rd(t, a), self.rd(t, b), self.rd(t, c));
                let r = match kind {
                    MadKind::Lo => int_bin(IntOp::MulLo, ty, false, a, b).wrapping_add(c) & ty.mask(),
                    MadKind::Hi => int_bin(IntOp::MulHi, ty, false, a, b).wrapping_add(c) & ty.mask(),
                    MadKind::Wide => {
                        int_bin(IntOp::MulWide, ty, false, a, b).wrapping_add(c) & width_mask(2 * ty.bits())
                    }
                };
                self.wr(t, d, r);
            }
            Inst::Bfe { ty, d, a, b, c } => {
                let bits = ty.bits();
                let a = self.rd(t, a);
                let pos = (self.rd(t, b) & 0xff) as u32;
                let len = (self.rd(t, c) & 0xff) as u32;
                let msb = bits - 1;
                let sbit = if ty.signed() && len > 0 {
                    let i = (pos + len - 1).min(msb);
                    (a >> i) & 1
                } else {
                    0
                };
                let mut r = 0u64;
                for i in 0..bits {
                    let bit = if i < len && pos + i <= msb {
                        (a >> (pos + i)) & 1
                    } else {
                        sbit
                    };
                    r |= bit << i;
                }
                self.wr(t, d, r);
            }
            Inst::Bfi { ty, d, f, b, c, len } => {
                let bits = ty.bits();
                let f = self.rd(t, f);
                let mut r = self.rd(t, b) & ty.mask();
                let pos = (self.rd(t, c) & 0xff) as u32;
                let len = (self.rd(t, len) & 0xff) as u32;
                let mut i = 0;
                while i < len && pos + i < bits {
                    r = (r & !(1 << (pos + i))) | (((f >> i) & 1) << (pos + i));
                    i += 1;
                }
                self.wr(t, d, r);
            }
            Inst::Prmt { d, a, b, c } => {
                let src = (self.rd(t, a) & 0xffff_ffff) | (self.rd(t, b) & 0xffff_ffff) << 32;
                let sel = self.rd(t, c);
                let mut r = 0u64;
                for i in 0..4 {
                    let s = (sel >> (4 * i)) & 0xf;
                    let byte = (src >> (8 * (s & 7))) & 0xff;
                    let byte = if s & 8 != 0 {
                        if byte & 0x80 != 0 {
                            0xff
                        } else {
                            0
                        }
                    } else {
                        byte
                    };
                    r |= byte << (8 * i);
                }
                self.wr(t, d, r);
            }
            Inst::Lop3 { d, a, b, c, lut } => {
                let (a, b, c) = (self.rd(t, a), self.rd(t, b), self.rd(t, c));
                let mut r = 0u64;
                for i in 0..8u32 {
                    if lut & (1 << i) != 0 {
                        let ma = if i & 4 != 0 { a } else { !a };
                        let mb = if i & 2 != 0 { b } else { !b };
                        let mc = if i & 1 != 0 { c } else { !c };
                        r |= ma & mb & mc;
                    }
                }
                self.wr(t, d, r & 0xffff_ffff);
            }
            Inst::FBin { op, ty, fl, d, a, b } => {
                let (a, b) = (self.rd(t, a), self.rd(t, b));
                let r = match ty {
                    Ty::F32 => {
                        let (x, y) = if fl.ftz {
                            (ftz32(f32_of(a)), ftz32(f32_of(b)))
                        } else {
                            (f32_of(a), f32_of(b))
                        };
                        let r = match op {
                            FBin::Add => add32(x, y, fl.rnd),
                            FBin::Sub => add32(x, -y, fl.rnd),
                            FBin::Mul => mul32(x, y, fl.rnd),
                            FBin::Div => div32(x, y, fl.rnd),
                            FBin::Min => fmin(x as f64, y as f64, fl.nan) as f32,
                            FBin::Max => fmax(x as f64, y as f64, fl.nan) as f32,
                            FBin::Copysign => y.copysign(x),
                        };
                        bits_of(post32(r, fl))
                    }
                    Ty::F64 => {
                        let (x, y) = (f64::from_bits(a), f64::from_bits(b));
                        let r = match op {
                            FBin::Add => x + y,
                            FBin::Sub => x - y,
                            FBin::Mul => x * y,
                            FBin::Div => x / y,
                            FBin::Min => fmin(x, y, fl.nan),
                            FBin::Max => fmax(x, y, fl.nan),
                            FBin::Copysign => y.copysign(x),
                        };
                        let r = if fl.sat { sat64(r) } else { r };
                        r.to_bits()
                    }
                    _ => map16(ty, a, b, 0, |x, y, _| {
                        // exact in f64 for + − × of two 16-bit floats, then one rounding
                        let r = match op {
                            FBin::Add => x + y,
                            FBin::Sub => x - y,
                            FBin::Mul => x * y,
                            FBin::Div => x / y,
                            FBin::Min => fmin(x, y, fl.nan),
                            FBin::Max => fmax(x, y, fl.nan),
                            FBin::Copysign => y.copysign(x),
                        };
                        if fl.sat {
                            sat64(r)
                        } else {
                            r
                        }
                    }),
                };
                self.wr(t, d, r);
            }
            Inst::FUn { op, ty, fl, d, a } => {
                let a = self.rd(t, a);
                let r = match ty {
                    Ty::F32 => {
                        let x = if fl.ftz { ftz32(f32_of(a)) } else { f32_of(a) };
                        // The .approx functions are computed in f64 and rounded once:
                        // within the documented error bounds of the hardware.
                        let r = match op {
                            FUn::Neg => -x,
                            FUn::Abs => x.abs(),
                            FUn::Sqrt => sqrt32(x, fl.rnd),
                            FUn::Rsqrt => (1.0 / (x as f64).sqrt()) as f32,
                            FUn::Rcp => div32(1.0, x, fl.rnd),
                            FUn::Ex2 => (x as f64).exp2() as f32,
                            FUn::Lg2 => (x as f64).log2() as f32,
                            FUn::Sin => (x as f64).sin() as f32,
                            FUn::Cos => (x as f64).cos() as f32,
                            FUn::Tanh => (x as f64).tanh() as f32,
                        };
                        bits_of(post32(r, fl))
                    }
                    Ty::F64 => {
                        let x = f64::from_bits(a);
                        let r = match op {
                            FUn::Neg => -x,
                            FUn::Abs => x.abs(),
                            FUn::Sqrt => x.sqrt(),
                            FUn::Rsqrt => 1.0 / x.sqrt(),
                            FUn::Rcp => 1.0 / x,
                            FUn::Ex2 => x.exp2(),
                            FUn::Lg2 => x.log2(),
                            FUn::Sin => x.sin(),
                            FUn::Cos => x.cos(),
                            FUn::Tanh => x.tanh(),
                        };
                        r.to_bits()
                    }
                    _ => map16(ty, a, 0, 0, |x, _, _| match op {
                        FUn::Neg => -x,
                        FUn::Abs => x.abs(),
                        FUn::Sqrt => x.sqrt(),
                        FUn::Rsqrt => 1.0 / x.sqrt(),
                        FUn::Rcp => 1.0 / x,
                        FUn::Ex2 => x.exp2(),
                        FUn::Lg2 => x.log2(),
                        FUn::Sin => x.sin(),
                        FUn::Cos => x.cos(),
                        FUn::Tanh => x.tanh(),
                    }),
                };
                self.wr(t, d, r);
            }
            Inst::Fma { ty, fl, d, a, b, c } => {
                let (a, b, c) = (self.rd(t, a), self.rd(t, b), self.rd(t, c));
                let r = match ty {
                    Ty::F32 => {
                        let f = |v| if fl.ftz { ftz32(f32_of(v)) } else { f32_of(v) };
                        bits_of(post32(fma32(f(a), f(b), f(c), fl.rnd), fl))
                    }
                    Ty::F64 => {
                        let r = f64::from_bits(a).mul_add(f64::from_bits(b), f64::from_bits(c));
                        (if fl.sat { sat64(r) } else { r }).to_bits()
                    }
                    _ => map16(ty, a, b, c, |x, y, z| {
                        let r = x.mul_add(y, z);
                        if fl.sat {
                            sat64(r)
                        } else {
                            r
                        }
                    }),
                };
                self.wr(t, d, r);
            }
            Inst::Testp { op, ty, d, a } => {
                let x = fval(ty, self.rd(t, a));
                let r = match op {
                    TestP::Finite => x.is_finite(),
                    TestP::Infinite => x.is_infinite(),
                    TestP::Number => !x.is_nan(),
                    TestP::NotANumber => x.is_nan(),
                    TestP::Normal => {
                        if ty == Ty::F32 {
                            (x as f32).is_normal()
                        } else {
                            x.is_normal()
                        }
                    }
                    TestP::Subnormal => {
                        if ty == Ty::F32 {
                            (x as f32).is_subnormal()
                        } else {
                            x.is_subnormal()
                        }
                    }
                };
                self.wr(t, d, r as u64);
            }
            Inst::Setp {
                cmp,
                ty,
                ftz,
                p,
                q,
                a,
                b,
                comb,
            } => {
                let (a, b) = (self.rd(t, a), self.rd(t, b));
                let r = compare(cmp, ty, ftz, a, b);
                let (rp, rq) = match comb {
                    Some((op, c, neg)) => {
                        let c = (self.rd(t, c) != 0) != neg;
                        let f = |x: bool| match op {
                            BoolOp::And => x && c,
                            BoolOp::Or => x || c,
                            BoolOp::Xor => x != c,
                        };
                        (f(r), f(!r))
                    }
                    None => (r, !r),
                };
                self.wr(t, p, rp as u64);
                if let Some(q) = q {
                    self.wr(t, q, rq as u64);
                }
            }
            Inst::Selp { ty, d, a, b, c } => {
                let v = if self.rd(t, c) != 0 {
                    self.rd(t, a)
                } else {
                    self.rd(t, b)
                };
                self.wr(t, d, v & ty.mask());
            }
            Inst::Cvt {
                dty,
                sty,
                rnd,
                int_rnd,
                ftz,
                sat,
                satfinite,
                d,
                a,
            } => {
                let v = cvt(dty, sty, rnd, int_rnd, ftz, sat, self.rd(t, a));
                let v = if satfinite { saturate_finite(dty, v) } else { v };
                self.wr(t, d, v);
            }
            Inst::CvtPack {
                bf16,
                rnd,
                relu,
                d,
                hi,
                lo,
            } => {
                let f = |v: u64| {
                    let x = f32_of(v) as f64;
                    let x = if relu && x < 0.0 { 0.0 } else { x };
                    round_16(x, bf16, rnd) as u64
                };
                let v = f(self.rd(t, hi)) << 16 | f(self.rd(t, lo));
                self.wr(t, d, v);
            }
            Inst::Cvta { to, space, d, a } => {
                let v = self.rd(t, a);
                let base = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    Space::Param => PARAM_WINDOW,
                    _ => 0,
                };
                let r = if to {
                    v.wrapping_sub(base)
                } else {
                    (v & 0xffff_ffff).wrapping_add(base)
                };
                let r = if base == 0 { v } else { r };
                self.wr(t, d, r);
            }
            Inst::Ld {
                space,
                ty,
                ref ds,
                addr,
            } => {
                let a = self.ea(t, addr);
                let es = ty.bytes();
                let n = ds.len();
                let mut buf = [0u8; 64];
                self.read_mem(t, pc, space, a, &mut buf[..es * n])?;
                for (i, d) in ds.iter().enumerate() {
                    if let Some(d) = *d {
                        let mut b8 = [0u8; 8];
                        b8[..es].copy_from_slice(&buf[i * es..(i + 1) * es]);
                        let raw = u64::from_le_bytes(b8);
                        let v = if ty.signed() { sext(raw, ty.bits()) as u64 } else { raw };
                        self.wr(t, d, v);
                    }
                }
            }
            Inst::St {
                space,
                ty,
                ref srcs,
                addr,
            } => {
                let a = self.ea(t, addr);
                let es = ty.bytes();
                let mut buf = [0u8; 64];
                for (i, &s) in srcs.iter().enumerate() {
                    let v = self.rd(t, s);
                    buf[i * es..(i + 1) * es].copy_from_slice(&v.to_le_bytes()[..es]);
                }
                self.write_mem(t, pc, space, a, &buf[..es * srcs.len()])?;
            }
            Inst::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b,
                c,
            } => {
                let a = self.ea(t, addr);
                let (b, c) = (self.rd(t, b), c.map(|c| self.rd(t, c)));
                let old = self.atom(t, pc, space, op, ty, a, b, c)?;
                if let Some(d) = d {
                    let v = if ty.signed() { sext(old, ty.bits()) as u64 } else { old };
                    self.wr(t, d, v);
                }
            }
            Inst::CpAsync {
                dst,
                src,
                size,
                src_size,
                ignore_src,
            } => {
                let dst_a = self.ea(t, dst) & 0xffff_ffff;
                let src_a = self.ea(t, src);
                let mut sb = match src_size {
                    Some(s) => self.rd(t, s) as u32,
                    None => size,
                };
                if let Some(p) = ignore_src {
                    if self.rd(t, p) != 0 {
                        sb = 0;
                    }
                }
                self.cp_async_issue(t, pc, dst_a, src_a, size, sb)?;
            }
            Inst::CpAsyncCommit => {
                let g = std::mem::take(&mut self.cp[t].open);
                self.cp[t].groups.push_back(g);
            }
            Inst::CpAsyncWait { n, all } => {
                if all {
                    let g = std::mem::take(&mut self.cp[t].open);
                    self.cp[t].groups.push_back(g);
                }
                while self.cp[t].groups.len() > n as usize {
                    let g = self.cp[t].groups.pop_front().unwrap();
                    for op in g {
                        self.cp_async_complete(t, op)?;
                    }
                }
            }
            Inst::Shf {
                left,
                clamp,
                d,
                lo,
                hi,
                n,
            } => {
                let x = (self.rd(t, hi) & 0xffff_ffff) << 32 | (self.rd(t, lo) & 0xffff_ffff);
                let n = self.rd(t, n) as u32;
                let n = if clamp { n.min(32) } else { n & 31 } as u64;
                let r = if left { (x << n) >> 32 } else { x >> n };
                self.wr(t, d, r & 0xffff_ffff);
            }
            Inst::Slct { cty, ftz, d, a, b, c } => {
                let c = self.rd(t, c);
                let pick_a = if cty == Ty::F32 {
                    let x = if ftz { ftz32(f32_of(c)) } else { f32_of(c) };
                    x >= 0.0
                } else {
                    sext(c, 32) >= 0
                };
                let v = if pick_a { self.rd(t, a) } else { self.rd(t, b) };
                self.wr(t, d, v);
            }
            Inst::Trap => return Err(Fault::Trap),
            Inst::Nop => {}
            Inst::Bra { .. }
            | Inst::Exit
            | Inst::Bar { .. }
            | Inst::Shfl { .. }
            | Inst::Vote { .. }
            | Inst::WarpSync { .. }
            | Inst::Activemask { .. }
            | Inst::Ldmatrix { .. }
            | Inst::Redux { .. }
            | Inst::Hopper(_)
            | Inst::Mma { .. } => unreachable!("handled per warp"),
        }
        Ok(())
    }
}

fn post32(r: f32, fl: FFlags) -> f32 {
    let r = if fl.ftz { ftz32(r) } else { r };
    if fl.sat {
        sat32(r)
    } else {
        r
    }
}

fn sat64(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Applies `f` to the 16-bit float lanes of `ty` (one for f16/bf16, two for the x2 types).
fn map16(ty: Ty, a: u64, b: u64, c: u64, f: impl Fn(f64, f64, f64) -> f64) -> u64 {
    let bf = matches!(ty, Ty::Bf16 | Ty::Bf16x2);
    let lanes = if matches!(ty, Ty::F16x2 | Ty::Bf16x2) { 2 } else { 1 };
    let mut r = 0u64;
    for i in 0..lanes {
        let g = |v: u64| f16_to_f64((v >> (16 * i)) as u16, bf);
        let x = f(g(a), g(b), g(c));
        r |= (round_16(x, bf, Rnd::Rn) as u64) << (16 * i);
    }
    r
}

#[inline]
fn int_bin(op: IntOp, ty: Ty, sat: bool, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    let m = ty.mask();
    let s = ty.signed();
    let (a, b) = (
        a & m,
        if matches!(op, IntOp::Shl | IntOp::Shr) {
            b & 0xffff_ffff
        } else {
            b & m
        },
    );
    match op {
        IntOp::Add | IntOp::Sub if sat && ty == Ty::S32 => {
            let (x, y) = (sext(a, 32) as i32, sext(b, 32) as i32);
            let r = if op == IntOp::Add {
                x.saturating_add(y)
            } else {
                x.saturating_sub(y)
            };
            r as u32 as u64
        }
        IntOp::Add => a.wrapping_add(b) & m,
        IntOp::Sub => a.wrapping_sub(b) & m,
        IntOp::MulLo => a.wrapping_mul(b) & m,
        IntOp::MulHi => {
            if s {
                ((sext(a, bits) as i128 * sext(b, bits) as i128) >> bits) as u64 & m
            } else {
                ((a as u128 * b as u128) >> bits) as u64 & m
            }
        }
        IntOp::MulWide => {
            if s {
                (sext(a, bits) as i128 * sext(b, bits) as i128) as u64 & width_mask(2 * bits)
            } else {
                (a as u128 * b as u128) as u64 & width_mask(2 * bits)
            }
        }
        IntOp::Div => {
            if b == 0 {
                m
            } else if s {
                sext(a, bits).wrapping_div(sext(b, bits)) as u64 & m
            } else {
                a / b
            }
        }
        IntOp::Rem => {
            if b == 0 {
                a
            } else if s {
                sext(a, bits).wrapping_rem(sext(b, bits)) as u64 & m
            } else {
                a % b
            }
        }
        IntOp::Min | IntOp::Max => {
            let less = if s { sext(a, bits) < sext(b, bits) } else { a < b };
            if (op == IntOp::Min) == less {
                a
            } else {
                b
            }
        }
        IntOp::Mul24Lo | IntOp::Mul24Hi => {
            let (x, y) = if s {
                (sext(a & 0xff_ffff, 24), sext(b & 0xff_ffff, 24))
            } else {
                ((a & 0xff_ffff) as i64, (b & 0xff_ffff) as i64)
            };
            let p = x * y;
            let r = if op == IntOp::Mul24Lo { p } else { p >> 16 };
            r as u64 & m
        }
        IntOp::And => a & b,
        IntOp::Or => a | b,
        IntOp::Xor => a ^ b,
        IntOp::Shl => {
            if b >= bits as u64 {
                0
            } else {
                (a << b) & m
            }
        }
        IntOp::Shr => {
            if s {
                (sext(a, bits) >> b.min(bits as u64 - 1)) as u64 & m
            } else if b >= bits as u64 {
                0
            } else {
                a >> b
            }
        }
    }
}

#[inline]
fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (x, y) = if ty == Ty::F32 && ftz {
            (ftz32(f32_of(a)) as f64, ftz32(f32_of(b)) as f64)
        } else {
            (fval(ty, a), fval(ty, b))
        };
        let un = x.is_nan() || y.is_nan();
        match cmp {
            Cmp::Eq => !un && x == y,
            Cmp::Ne => !un && x != y,
            Cmp::Lt | Cmp::Lo => !un && x < y,
            Cmp::Le | Cmp::Ls => !un && x <= y,
            Cmp::Gt | Cmp::Hi => !un && x > y,
            Cmp::Ge | Cmp::Hs => !un && x >= y,
            Cmp::Equ => un || x == y,
            Cmp::Neu => un || x != y,
            Cmp::Ltu => un || x < y,
            Cmp::Leu => un || x <= y,
            Cmp::Gtu => un || x > y,
            Cmp::Geu => un || x >= y,
            Cmp::Num => !un,
            Cmp::Nan => un,
        }
    } else {
        let bits = ty.bits();
        let m = ty.mask();
        let (ua, ub) = (a & m, b & m);
        let (sa, sb) = (sext(ua, bits), sext(ub, bits));
        let signed = ty.signed();
        let lt = if signed { sa < sb } else { ua < ub };
        let gt = if signed { sa > sb } else { ua > ub };
        match cmp {
            Cmp::Eq | Cmp::Equ => ua == ub,
            Cmp::Ne | Cmp::Neu => ua != ub,
            Cmp::Lt | Cmp::Ltu => lt,
            Cmp::Le | Cmp::Leu => !gt,
            Cmp::Gt | Cmp::Gtu => gt,
            Cmp::Ge | Cmp::Geu => !lt,
            Cmp::Lo => ua < ub,
            Cmp::Ls => ua <= ub,
            Cmp::Hi => ua > ub,
            Cmp::Hs => ua >= ub,
            Cmp::Num => true,
            Cmp::Nan => false,
        }
    }
}

fn int_range(ty: Ty) -> (i128, i128) {
    let bits = ty.bits();
    if ty.signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// `.satfinite`: infinities become the largest finite value of the same sign; NaN stays.
fn saturate_finite(dty: Ty, v: u64) -> u64 {
    match dty {
        Ty::F32 | Ty::Tf32 => {
            let x = f32_of(v);
            if x.is_infinite() {
                let max = if dty == Ty::Tf32 {
                    f32::MAX.to_bits() & !0x1fff
                } else {
                    f32::MAX.to_bits()
                };
                (max | (v as u32 & 0x8000_0000)) as u64
            } else {
                v
            }
        }
        Ty::F16 | Ty::Bf16 => {
            let inf = if dty == Ty::F16 { 0x7c00 } else { 0x7f80 };
            if v & 0x7fff == inf {
                (v & 0x8000) | (inf - 1)
            } else {
                v
            }
        }
        _ => v,
    }
}

/// Chops to the destination format, then extends to the register as that format's signedness says.
fn narrow_int(v: i128, dty: Ty) -> u64 {
    let v = v as u64 & dty.mask();
    if dty.signed() {
        sext(v, dty.bits()) as u64
    } else {
        v
    }
}

#[allow(clippy::too_many_arguments)]
fn cvt(dty: Ty, sty: Ty, rnd: Option<Rnd>, int_rnd: bool, ftz: bool, sat: bool, a: u64) -> u64 {
    let rnd_or = rnd.unwrap_or(Rnd::Rn);
    match (dty.is_float(), sty.is_float()) {
        (false, false) => {
            let v: i128 = if sty.signed() {
                sext(a, sty.bits()) as i128
            } else {
                (a & sty.mask()) as i128
            };
            let v = if sat {
                let (lo, hi) = int_range(dty);
                v.clamp(lo, hi)
            } else {
                v
            };
            narrow_int(v, dty)
        }
        (false, true) => {
            let mut x = fval(sty, a);
            if sty == Ty::F32 && ftz {
                x = ftz32(x as f32) as f64;
            }
            if x.is_nan() {
                return 0;
            }
            let r = round_int(x, if int_rnd { rnd_or } else { Rnd::Rz });
            let (lo, hi) = int_range(dty);
            let v = if r <= lo as f64 {
                lo
            } else if r >= hi as f64 {
                hi
            } else {
                r as i128
            };
            narrow_int(v, dty)
        }
        (true, false) => {
            let v: i128 = if sty.signed() {
                sext(a, sty.bits()) as i128
            } else {
                (a & sty.mask()) as i128
            };
            let s = v as f64;
            let e = (v - s as i128) as f64;
            match dty {
                Ty::F32 => {
                    let r = if rnd_or == Rnd::Rn {
                        v as f32
                    } else {
                        round_f32(s, e, rnd_or)
                    };
                    let r = if sat { sat32(r) } else { r };
                    bits_of(r)
                }
                Ty::F64 => (if sat { sat64(s) } else { s }).to_bits(),
                Ty::F16 | Ty::Bf16 => {
                    let x = if sat { sat64(s) } else { s };
                    round_16(x, dty == Ty::Bf16, rnd_or) as u64
                }
                _ => 0,
            }
        }
        (true, true) => {
            let mut x = fval(sty, a);
            if sty == Ty::F32 && ftz {
                x = ftz32(x as f32) as f64;
            }
            if int_rnd && !x.is_nan() && x.is_finite() {
                x = round_int(x, rnd_or);
            }
            if sat {
                x = sat64(x);
            }
            match dty {
                Ty::F32 => {
                    let r = if x.is_nan() {
                        f32::NAN
                    } else if rnd_or == Rnd::Rn {
                        x as f32
                    } else {
                        round_f32(x, 0.0, rnd_or)
                    };
                    bits_of(if ftz { ftz32(r) } else { r })
                }
                Ty::F64 => x.to_bits(),
                Ty::F16 | Ty::Bf16 => round_16(x, dty == Ty::Bf16, rnd_or) as u64,
                Ty::Tf32 => {
                    let f = x as f32;
                    match rnd_or {
                        Rnd::Rz => (f.to_bits() & !0x1fff) as u64,
                        _ => tf32_rna(f) as u64,
                    }
                }
                _ => 0,
            }
        }
    }
}
