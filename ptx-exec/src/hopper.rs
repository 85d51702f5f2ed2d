//! The sm_90 (Hopper) instructions: warpgroup MMA (`wgmma`), `mbarrier`s with
//! phases and transaction counts, bulk tensor copies (`cp.async.bulk.tensor`,
//! "TMA") against a tensor-map model, `setmaxnreg`, `fence.proxy.async` and
//! `elect.sync`.
//!
//! ## How they run
//! - **Warpgroups** are 4 consecutive warps starting at a warp index divisible
//!   by 4; a block using `wgmma` must consist of whole warpgroups. Each warp
//!   executes its share of a `wgmma.mma_async` (its 16 rows of the 64-row
//!   tile) when it issues it, reading shared memory and registers then, and
//!   the results are written at once; what is asynchronous is *checked*: the
//!   accumulator (and A-fragment) registers of a wgmma stay in flight until a
//!   `wgmma.wait_group` retires its group, and any other instruction naming
//!   one of them before that is a fault. `wgmma.wait_group` also waits (the
//!   warp blocks) until every warp of the warpgroup has committed the groups
//!   it retires, as the hardware's warpgroup-wide groups do. All four warps
//!   must issue the same sequence of wgmma operations (same line, same
//!   descriptors), and a wgmma whose accumulator or A registers were touched
//!   since the warp's last `wgmma.fence` is a fault (missing fence).
//!   Arithmetic: the 16 products of a k16 step are summed exactly (f64) and
//!   added to the f32 accumulator with one rounding, as `mma.sync` here; the
//!   tensor cores may differ in the last bits.
//! - **Matrix descriptors** (PTX ISA "Matrix Descriptor Format"): start
//!   address, LBO, SBO (each `>> 4`), base offset (must be 0 here), swizzle
//!   none / 32 / 64 / 128 B. Element addresses follow the ISA's canonical
//!   layouts: K-major without swizzle, LBO is the byte step between core
//!   matrices (8 rows × 16 bytes) along K and SBO along M/N; K-major swizzled,
//!   rows are the swizzle width apart inside 8-row groups SBO apart (LBO
//!   unused); MN-major swizzled, LBO steps between swizzle atoms along M/N and
//!   SBO between groups of 8 along K; MN-major without swizzle, SBO steps
//!   along M/N and LBO along K. The swizzle is the XOR of the 16-byte chunk
//!   bits (4..7) of the shared address with bits 7.. (3, 2 or 1 of them), the
//!   same function the bulk tensor copies apply when they write.
//! - **mbarriers** are objects at 8-byte aligned shared offsets, created by
//!   `mbarrier.init` and removed by `mbarrier.inval`: phase, expected and
//!   pending arrivals, tx-count. A phase completes when pending arrivals and
//!   tx-count are both zero. `try_wait` on an incomplete phase returns false
//!   the first time (its time limit, so a missing retry loop shows) and then
//!   blocks the thread until something happens that may complete it;
//!   `test_wait` returns false and lets the other warps run. When every thread left is
//!   blocked and nothing can happen any more, the launch stops with a
//!   [`Fault::Deadlock`] that lists what each warp waits for.
//! - **Bulk tensor copies** read the tensor map (the executor's encoding, see
//!   [`TensorMap`]) from the kernel parameters or global memory, copy the whole
//!   box at once (out-of-bounds elements zero, or NaN when asked), swizzled as
//!   the map says, and perform complete-tx on the mbarrier with the box's byte
//!   count — so a wrong expect-tx count leaves the phase incomplete (deadlock)
//!   or completes it early.
//! - **Ordering of the async proxy.** Bytes a bulk copy wrote carry the
//!   mbarrier phase that made them visible; a thread (ordinary load) or
//!   warpgroup (wgmma) reading them must have observed that phase's
//!   completion — by its own successful wait, or through a chain of arrivals
//!   and waits, or a `bar.sync`, from a thread that did. Bytes a wgmma read
//!   carry its warpgroup and wgmma group; a later write of them (a bulk copy
//!   or an ordinary store) must be ordered after that group's retirement in
//!   the same way. Shared bytes written by ordinary stores and read by a
//!   wgmma need a `fence.proxy.async` in the writing thread after the store,
//!   and a barrier between. Ordinary loads and stores of an mbarrier's bytes
//!   are faults.
//! - **`setmaxnreg`**: per-warp register counts starting at the kernel's
//!   `.maxnreg` (required), a per-block pool that `.dec` fills and `.inc`
//!   takes from (blocking until it can), and the ISA's range and direction
//!   checks.
//!
//! Readings of the PTX ISA that a GPU should confirm (not yet run on one):
//! the LBO/SBO reading above (the probe in the GPU recipes tries both); the
//! swizzle as a function of the absolute shared address (so copies and
//! descriptors agree only when the 1024/512/256-byte pattern is aligned,
//! which the ISA's base-offset rule implies); complete-tx counting the whole
//! box, zero-filled elements included; `elect.sync` electing the lowest
//! member lane; a wgmma group retiring for the whole warpgroup at once.
//!
//! Not modelled (an error naming the instruction): clusters and multicast,
//! im2col and gather modes, bulk copies to global memory, `.sp` and integer /
//! fp8 / tf32 wgmma, `mbarrier.arrive_drop`, `mbarrier.complete_tx`,
//! descriptor base offsets.

use std::collections::VecDeque;

use crate::error::Fault;
use crate::exec::{Exec, Shadow, ASYNC_TID, BLOCKED, EXITED, RUNNING, WAITING};
use crate::float::f16_to_f64;
use crate::ir::{Addr, Inst, Op, Space, Ty};
use crate::memory::{PARAM_WINDOW, SHARED_WINDOW, WINDOW_SIZE};
use crate::parse::{nops, space_of, Ctx, Kernel, ROp, RawInst, Sym};
use crate::Error;

/// Knowledge slots: one per mbarrier (phases seen) and one per warpgroup (wgmma groups retired).
const MAX_MBARS: usize = 56;
const MAX_WGS: usize = 8;
const NK: usize = MAX_MBARS + MAX_WGS;
/// Size of the tensor-map parameter, as CUDA's `CUtensorMap`.
pub const TENSOR_MAP_BYTES: usize = 128;
const TMAP_MAGIC: &[u8; 8] = b"nkTMAPv1";

// ---------------------------------------------------------------- tensor maps

/// Swizzle of a bulk tensor copy's shared-memory destination (and of a wgmma descriptor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swizzle {
    /// Rows as in global memory.
    None,
    /// 16-byte chunk bit 0 XOR address bit 7 (pattern repeats every 256 bytes).
    B32,
    /// Chunk bits 0..2 XOR address bits 7..9 (every 512 bytes).
    B64,
    /// Chunk bits 0..3 XOR address bits 7..10 (every 1024 bytes).
    B128,
}

impl Swizzle {
    /// Bytes of one swizzled row (0 for none).
    pub fn span(self) -> u32 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }
    fn bits(self) -> u32 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 1,
            Swizzle::B64 => 2,
            Swizzle::B128 => 3,
        }
    }
    /// The shared address `addr` is stored at under this swizzle.
    pub fn apply(self, addr: u32) -> u32 {
        let mask = (1u32 << self.bits()) - 1;
        addr ^ (((addr >> 7) & mask) << 4)
    }
    fn code(self) -> u8 {
        self.bits() as u8
    }
    fn from_code(c: u8) -> Option<Swizzle> {
        Some(match c {
            0 => Swizzle::None,
            1 => Swizzle::B32,
            2 => Swizzle::B64,
            3 => Swizzle::B128,
            _ => return None,
        })
    }
}

/// The executor's model of a tiled tensor map (what `cuTensorMapEncodeTiled` describes),
/// passed to a kernel as its 128-byte `.param .align 64 .b8 name[128]` parameter through
/// [`TensorMap::param`].
///
/// Encoding of the 128 bytes (little-endian; the rest zero): 0..8 the magic `nkTMAPv1`,
/// 8..16 global address, 16 rank, 17 element bytes, 18 swizzle (0 none, 1 32 B, 2 64 B,
/// 3 128 B, as `CU_TENSOR_MAP_SWIZZLE_*`), 19 out-of-bounds fill (0 zero, 1 NaN),
/// 24..44 global dimensions (5 × u32, elements, innermost first), 44..76 global strides
/// of dimensions 1..4 (4 × u64, bytes), 76..86 box dimensions (5 × u16), 86..91
/// element strides (5 × u8). A real GPU gets CUDA's own opaque encoding in the same slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMap {
    /// Device address of element (0, 0, ...); 16-byte aligned.
    pub global_address: u64,
    /// Bytes per element: 1, 2, 4 or 8.
    pub element_bytes: u32,
    /// Elements in each dimension, innermost (contiguous) first; 1 to 5 dimensions.
    pub dims: Vec<u32>,
    /// Byte strides of dimensions 1.. (one fewer than `dims`); multiples of 16 below 2^40.
    pub strides: Vec<u64>,
    /// Box (copied tile) size in each dimension, 1..=256; `box_dims[0] * element_bytes` a
    /// multiple of 16 and, when swizzled, equal to the swizzle span.
    pub box_dims: Vec<u32>,
    /// Traversal strides (only 1 is modelled).
    pub element_strides: Vec<u32>,
    /// Shared-memory swizzle of the copied box.
    pub swizzle: Swizzle,
    /// Out-of-bounds elements read as NaN (all ones) instead of zero.
    pub oob_nan: bool,
}

impl TensorMap {
    /// A 2-D map of a row-major `rows × cols` matrix with `row_stride_bytes` between rows,
    /// copied in boxes of `box_rows × box_cols`.
    #[allow(clippy::too_many_arguments)]
    pub fn matrix(
        global_address: u64,
        element_bytes: u32,
        rows: u32,
        cols: u32,
        row_stride_bytes: u64,
        box_rows: u32,
        box_cols: u32,
        swizzle: Swizzle,
    ) -> TensorMap {
        TensorMap {
            global_address,
            element_bytes,
            dims: vec![cols, rows],
            strides: vec![row_stride_bytes],
            box_dims: vec![box_cols, box_rows],
            element_strides: vec![1, 1],
            swizzle,
            oob_nan: false,
        }
    }

    /// Checks the map as `cuTensorMapEncodeTiled` does (those of its rules the copy relies on).
    pub fn validate(&self) -> Result<(), String> {
        let r = self.dims.len();
        if !(1..=5).contains(&r) {
            return Err(format!("rank {r} is not 1 to 5"));
        }
        if self.strides.len() + 1 != r || self.box_dims.len() != r || self.element_strides.len() != r {
            return Err("strides, box and element strides must match the rank".into());
        }
        if ![1, 2, 4, 8].contains(&self.element_bytes) {
            return Err(format!("element size {} is not 1, 2, 4 or 8", self.element_bytes));
        }
        if self.global_address % 16 != 0 {
            return Err(format!(
                "global address {:#x} is not 16-byte aligned",
                self.global_address
            ));
        }
        if self.dims.contains(&0) {
            return Err("a dimension is 0".into());
        }
        for &s in &self.strides {
            if s % 16 != 0 || s >= 1 << 40 {
                return Err(format!("stride {s} is not a multiple of 16 below 2^40"));
            }
        }
        for &b in &self.box_dims {
            if !(1..=256).contains(&b) {
                return Err(format!("box dimension {b} is not 1 to 256"));
            }
        }
        if self.element_strides.iter().any(|&e| e != 1) {
            return Err("element strides other than 1 are not modelled".into());
        }
        let inner = self.box_dims[0] * self.element_bytes;
        if inner % 16 != 0 {
            return Err(format!("inner box of {inner} bytes is not a multiple of 16"));
        }
        if self.swizzle != Swizzle::None && inner != self.swizzle.span() {
            return Err(format!(
                "inner box of {inner} bytes with a {}-byte swizzle (only an inner box of exactly the swizzle span is modelled)",
                self.swizzle.span()
            ));
        }
        Ok(())
    }

    /// The 128 bytes of the kernel parameter.
    pub fn encode(&self) -> Result<[u8; TENSOR_MAP_BYTES], String> {
        self.validate()?;
        let mut b = [0u8; TENSOR_MAP_BYTES];
        b[0..8].copy_from_slice(TMAP_MAGIC);
        b[8..16].copy_from_slice(&self.global_address.to_le_bytes());
        b[16] = self.dims.len() as u8;
        b[17] = self.element_bytes as u8;
        b[18] = self.swizzle.code();
        b[19] = self.oob_nan as u8;
        for (i, &d) in self.dims.iter().enumerate() {
            b[24 + 4 * i..28 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        for (i, &s) in self.strides.iter().enumerate() {
            b[44 + 8 * i..52 + 8 * i].copy_from_slice(&s.to_le_bytes());
        }
        for (i, &d) in self.box_dims.iter().enumerate() {
            b[76 + 2 * i..78 + 2 * i].copy_from_slice(&(d as u16).to_le_bytes());
        }
        for (i, &e) in self.element_strides.iter().enumerate() {
            b[86 + i] = e as u8;
        }
        Ok(b)
    }

    /// The kernel parameter ([`crate::Param::Bytes`] of the encoding).
    pub fn param(&self) -> Result<crate::Param, Error> {
        self.encode()
            .map(|b| crate::Param::Bytes(b.to_vec()))
            .map_err(Error::Memory)
    }

    fn decode(b: &[u8]) -> Result<TensorMap, String> {
        if b.len() < TENSOR_MAP_BYTES || &b[0..8] != TMAP_MAGIC {
            return Err("the tensor-map operand does not point at an executor tensor map (TensorMap::param)".into());
        }
        let r = b[16] as usize;
        if !(1..=5).contains(&r) {
            return Err(format!("tensor map of rank {r}"));
        }
        let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let m = TensorMap {
            global_address: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            element_bytes: b[17] as u32,
            dims: (0..r).map(|i| u32at(24 + 4 * i)).collect(),
            strides: (1..r)
                .map(|i| u64::from_le_bytes(b[44 + 8 * (i - 1)..52 + 8 * (i - 1)].try_into().unwrap()))
                .collect(),
            box_dims: (0..r)
                .map(|i| u16::from_le_bytes([b[76 + 2 * i], b[77 + 2 * i]]) as u32)
                .collect(),
            element_strides: (0..r).map(|i| b[86 + i] as u32).collect(),
            swizzle: Swizzle::from_code(b[18]).ok_or("bad swizzle code")?,
            oob_nan: b[19] != 0,
        };
        m.validate()?;
        Ok(m)
    }
}

// ---------------------------------------------------------------- decoded instructions

/// Where an mbarrier or shared operand lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SAddr {
    addr: Addr,
    /// Generic address (else a `.shared::cta` offset).
    generic: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum WgA {
    Desc(Op),
    Regs(Vec<u32>),
}

#[derive(Clone, Debug)]
pub(crate) struct Wgmma {
    n: u32,
    bf16: bool,
    d: Vec<u32>,
    a: WgA,
    b: Op,
    scale_d: (Op, bool),
    neg_a: bool,
    neg_b: bool,
    trans_a: bool,
    trans_b: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum HInst {
    WgFence,
    WgCommit,
    WgWait(u32),
    Wgmma(Box<Wgmma>),
    MbarInit {
        at: SAddr,
        count: Op,
    },
    MbarArrive {
        state: Option<u32>,
        at: SAddr,
        count: Option<Op>,
        tx: Option<Op>,
    },
    MbarExpectTx {
        at: SAddr,
        tx: Op,
    },
    MbarWait {
        p: u32,
        at: SAddr,
        parity: bool,
        arg: Op,
        blocking: bool,
    },
    MbarInval {
        at: SAddr,
    },
    TmaLoad {
        dst: SAddr,
        /// Register holding the map's generic address (ptxas refuses a parameter named
        /// directly: it takes `cvta.param` of it, or a global address).
        tmap: u32,
        coords: Vec<Op>,
        mbar: SAddr,
    },
    SetMaxNReg {
        inc: bool,
        n: u32,
    },
    FenceProxyAsync,
    Elect {
        d: Option<u32>,
        p: Option<u32>,
        mask: Op,
    },
}

fn hop(h: HInst) -> Inst {
    Inst::Hopper(Box::new(h))
}

fn saddr(cx: &Ctx, op: &ROp, flags: &[&str]) -> Result<SAddr, String> {
    let generic = match space_of(flags) {
        Space::Shared => false,
        Space::Generic if flags.iter().any(|f| f.starts_with("shared::cluster")) => false,
        Space::Generic => true,
        _ => return Err("mbarrier operands must be shared memory".into()),
    };
    Ok(SAddr {
        addr: cx.addr(op)?,
        generic,
    })
}

/// Decodes the sm_90 instructions; `None` for everything else.
pub(crate) fn decode(r: &RawInst, cx: &Ctx, name: &str, flags: &[&str]) -> Option<Result<Inst, String>> {
    let has = |f: &str| flags.contains(&f);
    Some(match name {
        "wgmma" => decode_wgmma(r, cx, flags),
        "mbarrier" => decode_mbarrier(r, cx, flags),
        "cp" if has("bulk") => decode_bulk(r, cx, flags),
        "setmaxnreg" => (|| {
            nops(r, 1)?;
            if !has("sync") || !has("aligned") || !has("u32") {
                return Err(format!("`{}` needs .sync.aligned.u32", r.opcode));
            }
            let inc = match (has("inc"), has("dec")) {
                (true, false) => true,
                (false, true) => false,
                _ => return Err(format!("`{}` needs .inc or .dec", r.opcode)),
            };
            let n = match cx.op(&r.ops[0], Ty::U32)? {
                Op::Imm(n) => n as u32,
                _ => return Err("setmaxnreg takes an immediate register count".into()),
            };
            if !(24..=256).contains(&n) || n % 8 != 0 {
                return Err(format!("setmaxnreg count {n} is not a multiple of 8 in 24..=256"));
            }
            Ok(hop(HInst::SetMaxNReg { inc, n }))
        })(),
        "fence" if has("proxy") => {
            if has("async") || flags.iter().any(|f| f.starts_with("async")) {
                Ok(hop(HInst::FenceProxyAsync))
            } else if has("tensormap") || flags.iter().any(|f| f.starts_with("tensormap")) {
                Err(format!(
                    "unknown instruction `{}` (tensormap proxy fences are not modelled)",
                    r.opcode
                ))
            } else {
                Ok(Inst::Nop)
            }
        }
        "elect" => (|| {
            nops(r, 2)?;
            if !has("sync") {
                return Err("elect needs .sync".into());
            }
            let (d, p) = match &r.ops[0] {
                ROp::Pair(a, b) => {
                    let d = if a == "_" {
                        None
                    } else {
                        Some(cx.reg(&ROp::Word(a.clone()))?)
                    };
                    (d, Some(cx.pred_reg(b)?))
                }
                ROp::Sink => (None, None),
                x => (Some(cx.reg(x)?), None),
            };
            Ok(hop(HInst::Elect {
                d,
                p,
                mask: cx.op(&r.ops[1], Ty::B32)?,
            }))
        })(),
        _ => return None,
    })
}

fn decode_wgmma(r: &RawInst, cx: &Ctx, flags: &[&str]) -> Result<Inst, String> {
    let has = |f: &str| flags.contains(&f);
    let o = &r.ops;
    if has("fence") {
        nops(r, 0)?;
        return Ok(hop(HInst::WgFence));
    }
    if has("commit_group") {
        nops(r, 0)?;
        return Ok(hop(HInst::WgCommit));
    }
    if has("wait_group") {
        nops(r, 1)?;
        return match cx.op(&o[0], Ty::U32)? {
            Op::Imm(n) => Ok(hop(HInst::WgWait(n as u32))),
            _ => Err("wgmma.wait_group takes an immediate".into()),
        };
    }
    if !has("mma_async") {
        return Err(format!("unknown instruction `{}`", r.opcode));
    }
    if !has("sync") || !has("aligned") || has("sp") {
        return Err(format!("`{}` is not supported (.sync.aligned, dense only)", r.opcode));
    }
    let shape = flags
        .iter()
        .find(|f| f.starts_with("m64n"))
        .ok_or_else(|| format!("`{}`: no .m64nNk16 shape", r.opcode))?;
    let n: u32 = shape
        .strip_prefix("m64n")
        .and_then(|x| x.strip_suffix("k16"))
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| format!("`{}`: only the k16 shapes (f16/bf16) are modelled", r.opcode))?;
    if n == 0 || n > 256 || n % 8 != 0 {
        return Err(format!("`{}`: N = {n} is not a multiple of 8 up to 256", r.opcode));
    }
    let types: Vec<Ty> = flags.iter().filter_map(|f| Ty::parse(f)).collect();
    let bf16 = match types.as_slice() {
        [Ty::F32, Ty::Bf16, Ty::Bf16] => true,
        [Ty::F32, Ty::F16, Ty::F16] => false,
        _ => {
            return Err(format!(
                "`{}` is not supported (f32 accumulators with f16 or bf16 inputs only)",
                r.opcode
            ))
        }
    };
    let d = cx.vec_regs(&o[0])?;
    if d.len() != (n / 2) as usize {
        return Err(format!(
            "`{}` needs {} accumulator registers, found {}",
            r.opcode,
            n / 2,
            d.len()
        ));
    }
    let imm = |x: &ROp| -> Result<i64, String> {
        match cx.op(x, Ty::S32)? {
            Op::Imm(v) => Ok(v as u32 as i32 as i64),
            _ => Err("wgmma scale and transpose operands are immediates".into()),
        }
    };
    let scale = |v: i64| match v {
        1 => Ok(false),
        -1 => Ok(true),
        _ => Err(format!("wgmma imm-scale must be 1 or -1, found {v}")),
    };
    let trans = |v: i64| match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(format!("wgmma imm-trans must be 0 or 1, found {v}")),
    };
    let (a, rest) = match &o.get(1) {
        Some(ROp::Vec(_)) => {
            let a = cx.vec_regs(&o[1])?;
            if a.len() != 4 {
                return Err("wgmma A from registers takes four .b32 registers".into());
            }
            (WgA::Regs(a), &o[2..])
        }
        Some(x) => (WgA::Desc(cx.op(x, Ty::B64)?), &o[2..]),
        None => return Err(format!("`{}`: missing operands", r.opcode)),
    };
    let want = if matches!(a, WgA::Desc(_)) { 6 } else { 5 };
    if rest.len() != want {
        return Err(format!(
            "`{}` takes {} operands, found {}",
            r.opcode,
            want + 2,
            rest.len() + 2
        ));
    }
    let b = cx.op(&rest[0], Ty::B64)?;
    let scale_d = match &rest[1] {
        ROp::Lit(_) => (cx.op(&rest[1], Ty::Pred)?, false),
        x => cx.pred_op(x)?,
    };
    let neg_a = scale(imm(&rest[2])?)?;
    let neg_b = scale(imm(&rest[3])?)?;
    let (trans_a, trans_b) = if matches!(a, WgA::Desc(_)) {
        (trans(imm(&rest[4])?)?, trans(imm(&rest[5])?)?)
    } else {
        (false, trans(imm(&rest[4])?)?)
    };
    Ok(hop(HInst::Wgmma(Box::new(Wgmma {
        n,
        bf16,
        d,
        a,
        b,
        scale_d,
        neg_a,
        neg_b,
        trans_a,
        trans_b,
    }))))
}

fn decode_mbarrier(r: &RawInst, cx: &Ctx, flags: &[&str]) -> Result<Inst, String> {
    let has = |f: &str| flags.contains(&f);
    let o = &r.ops;
    if !has("b64") {
        return Err(format!("`{}` needs .b64", r.opcode));
    }
    if has("cluster") || flags.contains(&"shared::cluster") {
        return Err(format!("`{}`: cluster-scope mbarriers are not modelled", r.opcode));
    }
    let op = flags.first().copied().unwrap_or("");
    Ok(match op {
        "init" => {
            nops(r, 2)?;
            hop(HInst::MbarInit {
                at: saddr(cx, &o[0], flags)?,
                count: cx.op(&o[1], Ty::U32)?,
            })
        }
        "arrive" => {
            if has("noComplete") || has("relaxed") {
                return Err(format!("`{}` is not modelled", r.opcode));
            }
            if o.len() < 2 || o.len() > 3 {
                return Err(format!("`{}` takes 2 or 3 operands", r.opcode));
            }
            let state = match &o[0] {
                ROp::Sink => None,
                x => Some(cx.reg(x)?),
            };
            let extra = o.get(2).map(|x| cx.op(x, Ty::U32)).transpose()?;
            let (count, tx) = if has("expect_tx") {
                (None, Some(extra.ok_or("mbarrier.arrive.expect_tx needs a tx count")?))
            } else {
                (extra, None)
            };
            hop(HInst::MbarArrive {
                state,
                at: saddr(cx, &o[1], flags)?,
                count,
                tx,
            })
        }
        "expect_tx" => {
            nops(r, 2)?;
            hop(HInst::MbarExpectTx {
                at: saddr(cx, &o[0], flags)?,
                tx: cx.op(&o[1], Ty::U32)?,
            })
        }
        "try_wait" | "test_wait" => {
            if has("relaxed") {
                return Err(format!("`{}` is not modelled", r.opcode));
            }
            if o.len() < 3 || o.len() > 4 || (op == "test_wait" && o.len() != 3) {
                return Err(format!("`{}`: wrong number of operands", r.opcode));
            }
            let p = match &o[0] {
                ROp::Word(w) => cx.pred_reg(w)?,
                x => return Err(format!("expected a predicate, found {x:?}")),
            };
            hop(HInst::MbarWait {
                p,
                at: saddr(cx, &o[1], flags)?,
                parity: has("parity"),
                arg: cx.op(&o[2], Ty::B64)?,
                blocking: op == "try_wait",
            })
        }
        "inval" => {
            nops(r, 1)?;
            hop(HInst::MbarInval {
                at: saddr(cx, &o[0], flags)?,
            })
        }
        _ => return Err(format!("unknown instruction `{}` (not modelled)", r.opcode)),
    })
}

fn decode_bulk(r: &RawInst, cx: &Ctx, flags: &[&str]) -> Result<Inst, String> {
    let has = |f: &str| flags.contains(&f);
    let unsupported = || Err(format!("unknown instruction `{}` (not modelled)", r.opcode));
    if flags.first() != Some(&"async") || !has("tensor") {
        return unsupported();
    }
    let dst_ok = has("shared::cluster") || has("shared::cta");
    if !dst_ok
        || !has("global")
        || !has("mbarrier::complete_tx::bytes")
        || has("multicast::cluster")
        || flags.iter().any(|f| f.starts_with("im2col") || f.starts_with("tile::"))
    {
        return unsupported();
    }
    let rank = ["1d", "2d", "3d", "4d", "5d"]
        .iter()
        .position(|d| has(d))
        .map(|i| i + 1)
        .ok_or_else(|| format!("`{}`: no .Nd", r.opcode))?;
    let o = &r.ops;
    let want = if has("L2::cache_hint") { 4 } else { 3 };
    nops(r, want)?;
    let (tname, coords) = match &o[1] {
        ROp::MemVec(w, v) => (w, v),
        x => return Err(format!("expected `[tensorMap, {{coordinates}}]`, found {x:?}")),
    };
    if coords.len() != rank {
        return Err(format!(
            "`{}` needs {rank} coordinates, found {}",
            r.opcode,
            coords.len()
        ));
    }
    let tmap = match (cx.regs.get(tname), cx.syms.get(tname)) {
        (Some((i, _)), _) => *i,
        (None, Some(Sym::Param(_))) => {
            return Err(format!(
                "tensor map `{tname}` named directly: give its generic address in a register (cvta.param)"
            ))
        }
        _ => return Err(format!("tensor map `{tname}` is not a register")),
    };
    let dst = SAddr {
        addr: cx.addr(&o[0])?,
        generic: false,
    };
    let mbar = SAddr {
        addr: cx.addr(&o[2])?,
        generic: false,
    };
    Ok(hop(HInst::TmaLoad {
        dst,
        tmap,
        coords: coords.iter().map(|c| cx.op(c, Ty::S32)).collect::<Result<_, _>>()?,
        mbar,
    }))
}

// ---------------------------------------------------------------- state

struct Mbar {
    off: u32,
    expected: u32,
    pending: i64,
    tx: i64,
    /// Completed phases.
    phase: u32,
    init_tid: usize,
    init_epoch: u32,
    /// Knowledge released into the current phase by its arrivals.
    cur: [u32; NK],
    /// Knowledge a waiter on the last completed phase acquires.
    done: [u32; NK],
}

#[derive(Clone, Copy, Default)]
struct AByte {
    /// 0 none; 1 written by a bulk copy (`mbar`, `phase`); 2 an mbarrier object.
    kind: u8,
    mbar: u8,
    phase: u32,
    /// Per warpgroup: 1 + the wgmma group of its last wgmma that read the byte (0 none).
    rd: [u32; MAX_WGS],
    /// Line of the last wgmma that read it.
    rd_line: u32,
}

#[derive(Default, Clone)]
struct WarpState {
    /// Per register: in-flight uses as an accumulator / as an A fragment.
    infl_d: Vec<u16>,
    infl_a: Vec<u16>,
    inflight: u32,
    /// Registers of the open (uncommitted) group: (reg, is accumulator).
    open: Vec<(u32, bool)>,
    groups: VecDeque<Vec<(u32, bool)>>,
    committed: u32,
    /// Per register: touched by an ordinary instruction since the last `wgmma.fence`.
    touched: Vec<bool>,
    fenced: bool,
    issued: u32,
    maxnreg: u32,
}

/// A warpgroup's wgmma log: the index of its first entry and, per wgmma, (line, A, B, scale-d).
type WgLog = (u32, VecDeque<(u32, u64, u64, bool)>);

/// What a launch of a kernel with sm_90 instructions keeps besides the plain state.
pub(crate) struct HopState {
    nthreads: usize,
    /// Registers used as wgmma accumulators or A fragments anywhere in the kernel.
    wg_regs: Vec<bool>,
    mbars: Vec<Mbar>,
    know: Vec<[u32; NK]>,
    fences: Vec<u32>,
    /// Per thread: its last `mbarrier.try_wait` on an incomplete phase returned false (the
    /// time limit): the next one blocks until the phase may have completed.
    spun: Vec<bool>,
    abytes: Vec<AByte>,
    warps: Vec<WarpState>,
    /// Per warpgroup: (first index, the (line, a, b, scale-d) of each wgmma issued since).
    logs: Vec<WgLog>,
    pool: i64,
    maxnreg: Option<u32>,
    /// Something happened that may unblock a blocked thread.
    pub(crate) event: bool,
}

impl HopState {
    /// The state for a launch of `k`, or `None` when it uses no sm_90 instruction.
    pub(crate) fn for_launch(k: &Kernel, nthreads: usize, shared: u32) -> Result<Option<Box<HopState>>, String> {
        if !k.code.iter().any(|i| matches!(i.inst, Inst::Hopper(_))) {
            return Ok(None);
        }
        let nregs = k.reg_mask.len();
        let mut wg_regs = vec![false; nregs];
        for i in &k.code {
            if let Inst::Hopper(h) = &i.inst {
                if let HInst::Wgmma(w) = &**h {
                    for &r in &w.d {
                        wg_regs[r as usize] = true;
                    }
                    if let WgA::Regs(a) = &w.a {
                        for &r in a {
                            wg_regs[r as usize] = true;
                        }
                    }
                }
            }
        }
        if let Some(m) = k.maxnreg {
            if nthreads as u64 * m as u64 > 65536 {
                return Err(format!(
                    "{nthreads} threads × .maxnreg {m} registers exceed the 65536 of the register file"
                ));
            }
        }
        let nwarps = nthreads.div_ceil(32);
        Ok(Some(Box::new(HopState {
            nthreads,
            wg_regs,
            mbars: Vec::new(),
            know: vec![[0; NK]; nthreads],
            fences: vec![0; nthreads],
            spun: vec![false; nthreads],
            abytes: vec![AByte::default(); shared as usize],
            warps: vec![
                WarpState {
                    infl_d: vec![0; nregs],
                    infl_a: vec![0; nregs],
                    touched: vec![false; nregs],
                    ..Default::default()
                };
                nwarps
            ],
            logs: vec![(0, VecDeque::new()); nwarps.div_ceil(4)],
            pool: 0,
            maxnreg: k.maxnreg,
            event: false,
        })))
    }

    pub(crate) fn reset_block(&mut self) {
        self.mbars.clear();
        self.know.iter_mut().for_each(|k| *k = [0; NK]);
        self.fences.fill(0);
        self.spun.fill(false);
        self.abytes.fill(AByte::default());
        for w in &mut self.warps {
            w.infl_d.fill(0);
            w.infl_a.fill(0);
            w.inflight = 0;
            w.open.clear();
            w.groups.clear();
            w.committed = 0;
            w.touched.fill(false);
            w.fenced = false;
            w.issued = 0;
            w.maxnreg = self.maxnreg.unwrap_or(0);
        }
        for l in &mut self.logs {
            *l = (0, VecDeque::new());
        }
        self.pool = 0;
        self.event = false;
    }

    /// A block-wide barrier: every thread knows what any knew.
    pub(crate) fn barrier(&mut self) {
        let mut all = [0u32; NK];
        for k in &self.know {
            merge(&mut all, k);
        }
        self.know.iter_mut().for_each(|k| *k = all);
    }

    fn mbar_idx(&self, off: u32) -> Option<usize> {
        self.mbars.iter().position(|m| m.off == off)
    }

    /// Checks an ordinary read of shared bytes `[o, o+len)` by thread `t`.
    pub(crate) fn generic_read(&self, t: usize, o: usize, len: usize) -> Result<(), Fault> {
        for i in o..o + len {
            let a = self.abytes[i];
            match a.kind {
                0 => {}
                2 => {
                    return Err(Fault::AsyncOrder(format!(
                        "ordinary load of shared offset {i:#x}, which is part of an mbarrier object"
                    )))
                }
                _ => {
                    if self.know[t][a.mbar as usize] <= a.phase {
                        return Err(Fault::AsyncOrder(format!(
                            "reads shared offset {i:#x}, written by a bulk tensor copy completing phase {} of the mbarrier at {:#x}, without having observed that phase (missing mbarrier wait?)",
                            a.phase, self.mbars[a.mbar as usize].off
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks an ordinary write of shared bytes by thread `t`; returns its fence count.
    pub(crate) fn generic_write(&mut self, t: usize, o: usize, len: usize) -> Result<u32, Fault> {
        for i in o..o + len {
            let a = self.abytes[i];
            if a.kind == 2 {
                return Err(Fault::AsyncOrder(format!(
                    "ordinary store to shared offset {i:#x}, which is part of an mbarrier object"
                )));
            }
            self.check_overwrite(t, i, "an ordinary store")?;
            self.abytes[i] = AByte::default();
        }
        Ok(self.fences[t])
    }

    /// A write of byte `i` by thread `t` must follow the retirement of any wgmma that read it
    /// and the completion of any bulk copy that wrote it.
    fn check_overwrite(&self, t: usize, i: usize, what: &str) -> Result<(), Fault> {
        let a = self.abytes[i];
        for (g, &r) in a.rd.iter().enumerate() {
            if r != 0 && self.know[t][MAX_MBARS + g] < r {
                return Err(Fault::AsyncOrder(format!(
                    "{what} overwrites shared offset {i:#x}, which a wgmma of warpgroup {g} (line {}) may still be reading: its group {} is not known retired here (wgmma.wait_group, then an mbarrier arrive this thread waited on)",
                    a.rd_line, r - 1
                )));
            }
        }
        if a.kind == 1 && self.know[t][a.mbar as usize] <= a.phase {
            return Err(Fault::AsyncOrder(format!(
                "{what} overwrites shared offset {i:#x} while the bulk copy that wrote it (completing phase {} of the mbarrier at {:#x}) is not known complete",
                a.phase, self.mbars[a.mbar as usize].off
            )));
        }
        Ok(())
    }
}

fn merge(into: &mut [u32; NK], from: &[u32; NK]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = (*a).max(*b);
    }
}

// ---------------------------------------------------------------- execution

impl Exec<'_> {
    fn hs(&mut self) -> &mut HopState {
        self.hop.as_mut().expect("sm_90 state")
    }

    /// Before any instruction of a kernel with sm_90 instructions: the wgmma register rules.
    pub(crate) fn hop_pre(&mut self, w: usize, pc: usize, m: u32) -> Result<(), Error> {
        let ins = &self.k.code[pc];
        if matches!(ins.inst, Inst::Hopper(_)) {
            return Ok(());
        }
        let first = w * 32 + m.trailing_zeros() as usize;
        let h = self.hop.as_mut().unwrap();
        let ws = &mut h.warps[w];
        if ws.inflight > 0 {
            for &r in ins.regs.iter() {
                let (d, a) = (ws.infl_d[r as usize], ws.infl_a[r as usize]);
                if d > 0 || a > 0 {
                    let what = if d > 0 { "accumulator" } else { "A-fragment" };
                    let msg = format!(
                        "register {} is the {what} of a wgmma.mma_async still in flight (missing wgmma.wait_group before using it)",
                        reg_name(self.k, r)
                    );
                    return Err(self.report(first, pc, Fault::AsyncOrder(msg)));
                }
            }
            if matches!(ins.inst, Inst::Exit) {
                let msg = "exits with wgmma groups still in flight (missing wgmma.wait_group)".to_string();
                return Err(self.report(first, pc, Fault::AsyncOrder(msg)));
            }
        }
        for &r in ins.regs.iter() {
            if h.wg_regs[r as usize] {
                h.warps[w].touched[r as usize] = true;
            }
        }
        Ok(())
    }

    /// Runs the blocked threads again after an event that may unblock them.
    pub(crate) fn hop_wake(&mut self) {
        for s in self.st.iter_mut().filter(|s| **s == BLOCKED) {
            *s = RUNNING;
        }
    }

    fn advance(&mut self, w: usize, m: u32) {
        let mut bits = m;
        while bits != 0 {
            let l = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.pc[w * 32 + l] += 1;
        }
    }

    fn block(&mut self, w: usize, m: u32) {
        let mut bits = m;
        while bits != 0 {
            let l = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.st[w * 32 + l] = BLOCKED;
        }
    }

    /// Warpgroup-collective instructions: the whole warp, in a block of whole warpgroups.
    fn whole_warp(&self, w: usize, pc: usize, m: u32, what: &str) -> Result<(), Error> {
        if self.nthreads % 128 != 0 {
            return Err(self.report(
                w * 32,
                pc,
                Fault::Unsupported(format!(
                    "{what} in a block of {} threads (not whole warpgroups of 128)",
                    self.nthreads
                )),
            ));
        }
        if m != u32::MAX {
            self.check_members(w, pc, m, u32::MAX, what)?;
        }
        Ok(())
    }

    fn shared_off(&self, t: usize, pc: usize, at: SAddr, align: u64) -> Result<u32, Error> {
        let a = self.ea(t, at.addr);
        let off = if at.generic {
            if !(SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&a) {
                return Err(self.report(
                    t,
                    pc,
                    Fault::Unsupported(format!("address {a:#x} is not a shared-memory address")),
                ));
            }
            a - SHARED_WINDOW
        } else {
            a & 0xffff_ffff
        };
        if off % align != 0 {
            return Err(self.report(t, pc, Fault::Misaligned { addr: off, align }));
        }
        self.shared_bounds(off, align as usize)
            .map_err(|f| self.report(t, pc, f))?;
        Ok(off as u32)
    }

    /// The mbarrier at `at` for thread `t`, checked to be initialised and visible to it.
    fn mbar_for(&self, t: usize, pc: usize, at: SAddr) -> Result<usize, Error> {
        let off = self.shared_off(t, pc, at, 8)?;
        let h = self.hop.as_ref().unwrap();
        let Some(i) = h.mbar_idx(off) else {
            return Err(self.report(
                t,
                pc,
                Fault::AsyncOrder(format!(
                    "no mbarrier is initialised at shared offset {off:#x}{} (missing mbarrier.init, or used after mbarrier.inval)",
                    self.k.shared_location(off).map(|s| format!(" ({s})")).unwrap_or_default()
                )),
            ));
        };
        let mb = &h.mbars[i];
        if mb.init_tid != t && mb.init_epoch == self.epoch {
            return Err(self.report(
                t,
                pc,
                Fault::AsyncOrder(format!(
                    "uses the mbarrier at {off:#x} that thread {:?} initialised with no barrier in between",
                    self.tid(mb.init_tid)
                )),
            ));
        }
        Ok(i)
    }

    fn complete_if_done(&mut self, i: usize) {
        let h = self.hs();
        let mb = &mut h.mbars[i];
        if mb.pending == 0 && mb.tx == 0 {
            mb.phase += 1;
            mb.pending = mb.expected as i64;
            mb.done = mb.cur;
            mb.done[i] = mb.done[i].max(mb.phase);
            mb.cur = [0; NK];
            h.event = true;
        }
    }

    pub(crate) fn hop_issue(&mut self, w: usize, pc: usize, m: u32, h: &HInst) -> Result<(), Error> {
        let lo = w * 32;
        let lanes = |m: u32| (0..32usize).filter(move |l| m & (1 << l) != 0);
        match h {
            HInst::WgFence => {
                self.whole_warp(w, pc, m, "wgmma.fence")?;
                let ws = &mut self.hs().warps[w];
                ws.touched.fill(false);
                ws.fenced = true;
                self.advance(w, m);
            }
            HInst::WgCommit => {
                self.whole_warp(w, pc, m, "wgmma.commit_group")?;
                let hs = self.hs();
                let ws = &mut hs.warps[w];
                let g = std::mem::take(&mut ws.open);
                ws.groups.push_back(g);
                ws.committed += 1;
                hs.event = true;
                self.advance(w, m);
            }
            &HInst::WgWait(n) => {
                self.whole_warp(w, pc, m, "wgmma.wait_group")?;
                let hs = self.hop.as_ref().unwrap();
                let ws = &hs.warps[w];
                let need = ws.committed.saturating_sub(n);
                let g = w / 4;
                let behind = (g * 4..g * 4 + 4).any(|x| hs.warps[x].committed < need);
                if behind {
                    self.block(w, m);
                    return Ok(());
                }
                let hs = self.hs();
                let ws = &mut hs.warps[w];
                while ws.groups.len() > n as usize {
                    for (r, acc) in ws.groups.pop_front().unwrap() {
                        let c = if acc {
                            &mut ws.infl_d[r as usize]
                        } else {
                            &mut ws.infl_a[r as usize]
                        };
                        *c -= 1;
                        ws.inflight -= 1;
                    }
                }
                for l in lanes(m) {
                    let k = &mut hs.know[lo + l][MAX_MBARS + g];
                    *k = (*k).max(need);
                }
                self.advance(w, m);
            }
            HInst::Wgmma(op) => {
                self.whole_warp(w, pc, m, "wgmma.mma_async")?;
                self.wgmma(w, pc, op)?;
                self.advance(w, m);
            }
            HInst::MbarInit { at, count } => {
                for l in lanes(m) {
                    let t = lo + l;
                    let off = self.shared_off(t, pc, *at, 8)?;
                    let c = self.rd(t, *count);
                    if c == 0 || c >= 1 << 20 {
                        return Err(self.report(
                            t,
                            pc,
                            Fault::AsyncOrder(format!("mbarrier.init count {c} is not in 1..2^20")),
                        ));
                    }
                    let epoch = self.epoch;
                    let hs = self.hs();
                    if hs.mbar_idx(off).is_some() {
                        return Err(self.report(
                            t,
                            pc,
                            Fault::AsyncOrder(format!(
                                "mbarrier.init at {off:#x} over a live mbarrier (mbarrier.inval first)"
                            )),
                        ));
                    }
                    if hs.mbars.len() >= MAX_MBARS {
                        return Err(self.report(
                            t,
                            pc,
                            Fault::Unsupported(format!("more than {MAX_MBARS} mbarriers in a block")),
                        ));
                    }
                    for b in off as usize..off as usize + 8 {
                        hs.abytes[b] = AByte {
                            kind: 2,
                            ..Default::default()
                        };
                    }
                    hs.mbars.push(Mbar {
                        off,
                        expected: c as u32,
                        pending: c as i64,
                        tx: 0,
                        phase: 0,
                        init_tid: t,
                        init_epoch: epoch,
                        cur: [0; NK],
                        done: [0; NK],
                    });
                }
                self.advance(w, m);
            }
            HInst::MbarInval { at } => {
                for l in lanes(m) {
                    let t = lo + l;
                    let i = self.mbar_for(t, pc, *at)?;
                    let hs = self.hs();
                    let off = hs.mbars[i].off as usize;
                    hs.mbars.remove(i);
                    for b in off..off + 8 {
                        hs.abytes[b] = AByte::default();
                    }
                    // indices of later mbarriers shift: their bytes' knowledge slots stay valid
                    // only if none follows; keep it simple and refuse otherwise
                    if i < hs.mbars.len() {
                        return Err(self.report(
                            t,
                            pc,
                            Fault::Unsupported("mbarrier.inval of any but the last mbarrier initialised".into()),
                        ));
                    }
                }
                self.advance(w, m);
            }
            HInst::MbarArrive { state, at, count, tx } => {
                for l in lanes(m) {
                    let t = lo + l;
                    let i = self.mbar_for(t, pc, *at)?;
                    let c = count.map_or(1, |c| self.rd(t, c)) as i64;
                    let txv = tx.map(|x| self.rd(t, x) as u32 as i64);
                    let hs = self.hs();
                    let know = hs.know[t];
                    let mb = &mut hs.mbars[i];
                    let phase = mb.phase;
                    if let Some(x) = txv {
                        mb.tx += x;
                    }
                    mb.pending -= c;
                    merge(&mut mb.cur, &know);
                    if mb.pending < 0 {
                        let msg = format!(
                            "arrives on the mbarrier at {:#x} more often than its {} expected arrivals in phase {phase}",
                            mb.off, mb.expected
                        );
                        return Err(self.report(t, pc, Fault::AsyncOrder(msg)));
                    }
                    if let Some(s) = state {
                        self.wr(t, *s, phase as u64);
                    }
                    self.complete_if_done(i);
                }
                self.advance(w, m);
            }
            HInst::MbarExpectTx { at, tx } => {
                for l in lanes(m) {
                    let t = lo + l;
                    let i = self.mbar_for(t, pc, *at)?;
                    let v = self.rd(t, *tx) as u32 as i64;
                    self.hs().mbars[i].tx += v;
                    self.complete_if_done(i);
                }
                self.advance(w, m);
            }
            HInst::MbarWait {
                p,
                at,
                parity,
                arg,
                blocking,
            } => {
                let mut wait = 0u32;
                for l in lanes(m) {
                    let t = lo + l;
                    let i = self.mbar_for(t, pc, *at)?;
                    let a = self.rd(t, *arg);
                    let hs = self.hs();
                    let mb = &hs.mbars[i];
                    let done = if *parity {
                        (a & 1) as u32 != mb.phase & 1
                    } else {
                        mb.phase as u64 > a
                    };
                    if done {
                        let d = mb.done;
                        merge(&mut hs.know[t], &d);
                        hs.spun[t] = false;
                        self.wr(t, *p, 1);
                    } else if *blocking && !hs.spun[t] {
                        // the first try on an incomplete phase comes back false (its time
                        // limit), so code that does not loop on it shows
                        hs.spun[t] = true;
                        self.wr(t, *p, 0);
                    } else {
                        if !*blocking {
                            self.wr(t, *p, 0);
                        }
                        wait |= 1 << l;
                    }
                }
                if *blocking {
                    self.advance(w, m & !wait);
                } else {
                    // a failed test_wait lets the other warps run before the thread goes on
                    self.advance(w, m);
                }
                self.block(w, wait);
            }
            HInst::TmaLoad {
                dst,
                tmap,
                coords,
                mbar,
            } => {
                for l in lanes(m) {
                    self.tma_load(lo + l, pc, *dst, *tmap, coords, *mbar)?;
                }
                self.advance(w, m);
            }
            &HInst::SetMaxNReg { inc, n } => {
                self.whole_warp(w, pc, m, "setmaxnreg")?;
                let first = lo;
                let hs = self.hop.as_ref().unwrap();
                if hs.maxnreg.is_none() {
                    return Err(self.report(
                        first,
                        pc,
                        Fault::AsyncOrder(
                            "setmaxnreg in a kernel with no register count at entry (declare .maxnreg)".into(),
                        ),
                    ));
                }
                let cur = hs.warps[w].maxnreg;
                if inc && n < cur || !inc && n > cur {
                    let msg = format!(
                        "setmaxnreg.{} {n} with {cur} registers per thread now",
                        if inc { "inc" } else { "dec" }
                    );
                    return Err(self.report(first, pc, Fault::AsyncOrder(msg)));
                }
                let delta = (n as i64 - cur as i64) * 32;
                let hs = self.hs();
                if delta > hs.pool {
                    self.block(w, m);
                    return Ok(());
                }
                hs.pool -= delta;
                hs.warps[w].maxnreg = n;
                if delta < 0 {
                    hs.event = true;
                }
                self.advance(w, m);
            }
            HInst::FenceProxyAsync => {
                for l in lanes(m) {
                    self.hs().fences[lo + l] += 1;
                }
                self.advance(w, m);
            }
            HInst::Elect { d, p, mask } => {
                let member = self.rd(lo + m.trailing_zeros() as usize, *mask) as u32;
                self.check_members(w, pc, m, member, "elect.sync")?;
                let leader = member.trailing_zeros();
                for l in lanes(m) {
                    if let Some(d) = d {
                        self.wr(lo + l, *d, leader as u64);
                    }
                    if let Some(p) = p {
                        self.wr(lo + l, *p, (l as u32 == leader) as u64);
                    }
                }
                self.advance(w, m);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn tma_load(
        &mut self,
        t: usize,
        pc: usize,
        dst: SAddr,
        tmap: u32,
        coords: &[Op],
        mbar: SAddr,
    ) -> Result<(), Error> {
        let bad = |s: &Self, f: Fault| s.report(t, pc, f);
        let raw: Vec<u8> = {
            let a = self.regs[t * self.nregs + tmap as usize];
            if (PARAM_WINDOW..PARAM_WINDOW + WINDOW_SIZE).contains(&a) {
                let o = (a - PARAM_WINDOW) as usize;
                self.params.get(o..o + TENSOR_MAP_BYTES).map(|b| b.to_vec())
            } else {
                self.mem.get(a, TENSOR_MAP_BYTES).map(|b| b.to_vec())
            }
        }
        .ok_or_else(|| {
            bad(
                self,
                Fault::AsyncOrder("the tensor-map operand is outside the parameters and global memory".into()),
            )
        })?;
        let map = TensorMap::decode(&raw).map_err(|e| bad(self, Fault::AsyncOrder(e)))?;
        if map.dims.len() != coords.len() {
            return Err(bad(
                self,
                Fault::AsyncOrder(format!(
                    "{}-D copy through a tensor map of rank {}",
                    coords.len(),
                    map.dims.len()
                )),
            ));
        }
        let dst = self.shared_off(t, pc, dst, 16)?;
        let span = map.swizzle.span();
        if dst % 128 != 0 {
            return Err(bad(
                self,
                Fault::Misaligned {
                    addr: dst as u64,
                    align: 128,
                },
            ));
        }
        let mi = self.mbar_for(t, pc, mbar)?;
        let es = map.element_bytes as usize;
        let rank = map.dims.len();
        let c: Vec<i64> = coords.iter().map(|&o| self.rd(t, o) as u32 as i32 as i64).collect();
        let total: usize = map.box_dims.iter().map(|&b| b as usize).product::<usize>() * es;
        self.shared_bounds(dst as u64, total).map_err(|f| bad(self, f))?;
        let row_bytes = map.box_dims[0] as usize * es;
        let rows = total / row_bytes;
        let mut buf = vec![0u8; row_bytes];
        let fill = if map.oob_nan { 0xff } else { 0 };
        let phase = self.hop.as_ref().unwrap().mbars[mi].phase;
        let line = self.k.code[pc].line;
        for row in 0..rows {
            // coordinates of this row's first element
            let mut idx = row;
            let mut off: Option<u64> = Some(0);
            for d in 1..rank {
                let bd = map.box_dims[d] as usize;
                let x = c[d] + (idx % bd) as i64;
                idx /= bd;
                if x < 0 || x >= map.dims[d] as i64 {
                    off = None;
                } else if let Some(o) = off.as_mut() {
                    *o += x as u64 * map.strides[d - 1];
                }
            }
            for e in 0..map.box_dims[0] as usize {
                let x = c[0] + e as i64;
                let slot = &mut buf[e * es..(e + 1) * es];
                match off {
                    Some(o) if x >= 0 && x < map.dims[0] as i64 => {
                        let a = map.global_address + o + x as u64 * es as u64;
                        let s = self.mem.get(a, es).ok_or_else(|| bad(self, self.oob_global(a, es)))?;
                        slot.copy_from_slice(s);
                    }
                    _ => slot.fill(fill),
                }
            }
            for (chunk, bytes) in buf.chunks(16).enumerate() {
                let lin = dst + (row * row_bytes + chunk * 16) as u32;
                let at = if span == 0 { lin } else { map.swizzle.apply(lin) } as usize;
                for (j, &v) in bytes.iter().enumerate() {
                    let b = at + j;
                    {
                        let hs = self.hop.as_ref().unwrap();
                        if hs.abytes[b].kind == 2 {
                            return Err(bad(
                                self,
                                Fault::AsyncOrder(format!(
                                    "bulk copy writes shared offset {b:#x}, part of an mbarrier"
                                )),
                            ));
                        }
                        hs.check_overwrite(t, b, "a bulk tensor copy")
                            .map_err(|f| bad(self, f))?;
                    }
                    self.hs().abytes[b] = AByte {
                        kind: 1,
                        mbar: mi as u8,
                        phase,
                        ..Default::default()
                    };
                    self.shared[b] = v;
                    let e = self.epoch;
                    let sh: &mut Shadow = &mut self.shadow[b];
                    sh.w_epoch = e;
                    sh.w_tid = ASYNC_TID;
                    sh.w_line = line;
                    sh.w_atomic = false;
                    sh.r_epoch = 0;
                }
            }
        }
        let hs = self.hs();
        hs.mbars[mi].tx -= total as i64;
        self.complete_if_done(mi);
        Ok(())
    }

    /// One warp's share of a wgmma: rows 16·(w%4) .. +16 of D.
    fn wgmma(&mut self, w: usize, pc: usize, op: &Wgmma) -> Result<(), Error> {
        let lo = w * 32;
        let g = w / 4;
        let wl = w % 4;
        let n = op.n as usize;
        // uniform operands
        let uni = |s: &Self, o: Op, what: &str| -> Result<u64, Error> {
            let v = s.rd(lo, o);
            for l in 1..32 {
                if s.rd(lo + l, o) != v {
                    return Err(s.report(
                        lo + l,
                        pc,
                        Fault::AsyncOrder(format!("wgmma {what} differs between the threads of the warp")),
                    ));
                }
            }
            Ok(v)
        };
        let bdesc = uni(self, op.b, "B descriptor")?;
        let adesc = match op.a {
            WgA::Desc(o) => uni(self, o, "A descriptor")?,
            WgA::Regs(_) => 0,
        };
        let sd = (uni(self, op.scale_d.0, "scale-d")? != 0) != op.scale_d.1;
        // missing fence / registers in flight
        {
            let hs = self.hop.as_ref().unwrap();
            let ws = &hs.warps[w];
            let aregs: &[u32] = match &op.a {
                WgA::Regs(a) => a,
                WgA::Desc(_) => &[],
            };
            let acc_in_chain = op.d.iter().all(|&r| ws.infl_d[r as usize] > 0);
            for &r in op.d.iter().chain(aregs) {
                let ri = r as usize;
                let chained = acc_in_chain && ws.infl_d[ri] > 0 && !aregs.contains(&r);
                if ws.touched[ri] || (!ws.fenced && !chained) {
                    let msg = format!(
                        "wgmma.mma_async register {} was accessed since the warp's last wgmma.fence (missing wgmma.fence)",
                        reg_name(self.k, r)
                    );
                    return Err(self.report(lo, pc, Fault::AsyncOrder(msg)));
                }
                if aregs.contains(&r) && ws.infl_d[ri] > 0 {
                    let msg = format!(
                        "wgmma A register {} is the accumulator of a wgmma still in flight",
                        reg_name(self.k, r)
                    );
                    return Err(self.report(lo, pc, Fault::AsyncOrder(msg)));
                }
            }
            if !acc_in_chain && op.d.iter().any(|&r| ws.infl_d[r as usize] > 0) {
                let msg = "wgmma accumulators overlap those of a wgmma still in flight without being the same set"
                    .to_string();
                return Err(self.report(lo, pc, Fault::AsyncOrder(msg)));
            }
        }
        // the four warps must issue the same sequence
        {
            let line = self.k.code[pc].line;
            let hs = self.hs();
            let idx = hs.warps[w].issued;
            let (base, log) = &mut hs.logs[g];
            let entry = (line, adesc, bdesc, sd);
            let pos = (idx - *base) as usize;
            if pos < log.len() {
                if log[pos] != entry {
                    let (l0, a0, b0, s0) = log[pos];
                    let msg = format!(
                        "the warps of warpgroup {g} issue different wgmma.mma_async as their operation {idx}: line {line} (A {adesc:#x}, B {bdesc:#x}, scale-d {sd}) here, line {l0} (A {a0:#x}, B {b0:#x}, scale-d {s0}) in another warp"
                    );
                    return Err(self.report(lo, pc, Fault::AsyncOrder(msg)));
                }
            } else {
                log.push_back(entry);
            }
            hs.warps[w].issued += 1;
            let done = (g * 4..g * 4 + 4).map(|x| hs.warps[x].issued).min().unwrap();
            let (base, log) = &mut hs.logs[g];
            while *base < done {
                log.pop_front();
                *base += 1;
            }
        }
        let seq = self.hop.as_ref().unwrap().warps[w].committed;
        let line = self.k.code[pc].line;
        // operands
        let mut a = vec![[0f64; 16]; 16];
        match &op.a {
            WgA::Desc(_) => {
                let dsc = self.desc(lo, pc, adesc)?;
                for (r, row) in a.iter_mut().enumerate() {
                    for (k, x) in row.iter_mut().enumerate() {
                        let at = dsc.addr(16 * wl + r, k, op.trans_a);
                        *x = self.wg_elem(lo, pc, g, at, op.bf16, seq, line)?;
                    }
                }
            }
            WgA::Regs(regs) => {
                for l in 0..32 {
                    let (gi, tg) = (l >> 2, l % 4);
                    for i in 0..8 {
                        let row = if i < 2 || (4..6).contains(&i) { gi } else { gi + 8 };
                        let col = tg * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
                        let v = self.regs[(lo + l) * self.nregs + regs[i / 2] as usize] >> (16 * (i & 1));
                        a[row][col] = f16_to_f64(v as u16, op.bf16);
                    }
                }
            }
        }
        if op.neg_a {
            a.iter_mut().flatten().for_each(|x| *x = -*x);
        }
        let dsc = self.desc(lo, pc, bdesc)?;
        let mut b = vec![0f64; 16 * n];
        for k in 0..16 {
            for j in 0..n {
                let at = dsc.addr(j, k, op.trans_b);
                let v = self.wg_elem(lo, pc, g, at, op.bf16, seq, line)?;
                b[k * n + j] = if op.neg_b { -v } else { v };
            }
        }
        // D: lane l, register i: row g + 8·((i>>1)&1), column 8·(i>>2) + 2·(l%4) + (i&1)
        for l in 0..32 {
            let t = lo + l;
            let (gi, tg) = (l >> 2, l % 4);
            for (i, &dr) in op.d.iter().enumerate() {
                let row = gi + 8 * ((i >> 1) & 1);
                let col = 8 * (i >> 2) + 2 * tg + (i & 1);
                let mut s = 0f64;
                for k in 0..16 {
                    s += a[row][k] * b[k * n + col];
                }
                let c = if sd {
                    f32::from_bits(self.regs[t * self.nregs + dr as usize] as u32) as f64
                } else {
                    0.0
                };
                self.wr(t, dr, ((c + s) as f32).to_bits() as u64);
            }
        }
        // in flight until its group retires
        let ws = &mut self.hs().warps[w];
        for &r in &op.d {
            ws.infl_d[r as usize] += 1;
            ws.inflight += 1;
            ws.open.push((r, true));
        }
        if let WgA::Regs(regs) = &op.a {
            for &r in regs {
                ws.infl_a[r as usize] += 1;
                ws.inflight += 1;
                ws.open.push((r, false));
            }
        }
        Ok(())
    }

    fn desc(&self, t: usize, pc: usize, d: u64) -> Result<Desc, Error> {
        let start = ((d & 0x3fff) << 4) as u32;
        let lbo = (((d >> 16) & 0x3fff) << 4) as u32;
        let sbo = (((d >> 32) & 0x3fff) << 4) as u32;
        let base = (d >> 49) & 7;
        let swizzle = match d >> 62 {
            0 => Swizzle::None,
            1 => Swizzle::B128,
            2 => Swizzle::B64,
            _ => Swizzle::B32,
        };
        if base != 0 {
            return Err(self.report(
                t,
                pc,
                Fault::Unsupported(format!("wgmma descriptor {d:#x} with a matrix base offset")),
            ));
        }
        Ok(Desc {
            start,
            lbo,
            sbo,
            swizzle,
        })
    }

    /// Reads one 16-bit element of a wgmma operand at shared offset `at`, with the
    /// async-proxy ordering checks, and records the read.
    #[allow(clippy::too_many_arguments)]
    fn wg_elem(
        &mut self,
        lo: usize,
        pc: usize,
        g: usize,
        at: u32,
        bf16: bool,
        seq: u32,
        line: u32,
    ) -> Result<f64, Error> {
        let o = self.shared_bounds(at as u64, 2).map_err(|f| self.report(lo, pc, f))?;
        for b in o..o + 2 {
            let hs = self.hop.as_ref().unwrap();
            let ab = hs.abytes[b];
            match ab.kind {
                2 => {
                    return Err(self.report(
                        lo,
                        pc,
                        Fault::AsyncOrder(format!("wgmma reads shared offset {b:#x}, part of an mbarrier")),
                    ))
                }
                1 => {
                    if let Some(l) = (0..32).find(|&l| hs.know[lo + l][ab.mbar as usize] <= ab.phase) {
                        return Err(self.report(
                            lo + l,
                            pc,
                            Fault::AsyncOrder(format!(
                                "wgmma reads shared offset {b:#x}{}, written by a bulk tensor copy completing phase {} of the mbarrier at {:#x}, before this thread observed that phase (missing mbarrier wait?)",
                                self.k.shared_location(b as u32).map(|s| format!(" ({s})")).unwrap_or_default(),
                                ab.phase,
                                hs.mbars[ab.mbar as usize].off
                            )),
                        ));
                    }
                }
                _ => {
                    let sh = self.shadow[b];
                    if sh.w_epoch < self.block_epoch {
                        return Err(self.report(lo, pc, Fault::SharedUninitialized { offset: b as u32 }));
                    }
                    if sh.w_tid != ASYNC_TID {
                        if sh.w_epoch == self.epoch && sh.w_tid as usize / 32 != lo / 32 {
                            return Err(self.report(
                                lo,
                                pc,
                                Fault::AsyncOrder(format!(
                                    "wgmma reads shared offset {b:#x}, stored by thread {:?} at line {} with no barrier in between",
                                    self.tid(sh.w_tid as usize),
                                    sh.w_line
                                )),
                            ));
                        }
                        if hs.fences[sh.w_tid as usize] <= sh.w_fence {
                            return Err(self.report(
                                lo,
                                pc,
                                Fault::AsyncOrder(format!(
                                    "wgmma reads shared offset {b:#x}, stored by thread {:?} at line {} with no fence.proxy.async after the store",
                                    self.tid(sh.w_tid as usize),
                                    sh.w_line
                                )),
                            ));
                        }
                    }
                }
            }
            let hs = self.hs();
            let ab = &mut hs.abytes[b];
            ab.rd[g] = seq + 1;
            ab.rd_line = line;
        }
        let v = u16::from_le_bytes([self.shared[o], self.shared[o + 1]]);
        Ok(f16_to_f64(v, bf16))
    }

    /// The error for a block whose remaining threads all wait for each other.
    pub(crate) fn deadlock(&self) -> Error {
        let hs = self.hop.as_ref().unwrap();
        let mut why = Vec::new();
        let mut first = None;
        let nwarps = self.nthreads.div_ceil(32);
        for w in 0..nwarps {
            let ts: Vec<usize> = (w * 32..(w * 32 + 32).min(self.nthreads)).collect();
            let blocked: Vec<usize> = ts.iter().copied().filter(|&t| self.st[t] == BLOCKED).collect();
            let waiting = ts.iter().filter(|&&t| self.st[t] == WAITING).count();
            if let Some(&t) = blocked.first() {
                first.get_or_insert(t);
                let pc = self.pc[t] as usize;
                let ins = &self.k.code[pc];
                let what = match &ins.inst {
                    Inst::Hopper(h) => match &**h {
                        HInst::MbarWait { at, .. } => {
                            let a = self.ea(t, at.addr);
                            let off = if at.generic {
                                a.wrapping_sub(SHARED_WINDOW)
                            } else {
                                a & 0xffff_ffff
                            } as u32;
                            match hs.mbar_idx(off) {
                                Some(i) => {
                                    let mb = &hs.mbars[i];
                                    format!(
                                        "mbarrier at {off:#x}{} (phase {} incomplete: {} of {} arrivals pending, tx-count {})",
                                        self.k.shared_location(off).map(|s| format!(" ({s})")).unwrap_or_default(),
                                        mb.phase,
                                        mb.pending,
                                        mb.expected,
                                        mb.tx
                                    )
                                }
                                None => format!("mbarrier at {off:#x} (gone)"),
                            }
                        }
                        HInst::WgWait(_) => "wgmma groups the other warps of its warpgroup have not committed".into(),
                        HInst::SetMaxNReg { n, .. } => {
                            format!("{n} registers per thread ({} free in the pool)", hs.pool)
                        }
                        _ => "its next test_wait".into(),
                    },
                    _ => "its next test_wait".into(),
                };
                why.push(format!(
                    "warp {w}: {} thread(s) at line {} wait for {what}",
                    blocked.len(),
                    ins.line
                ));
            }
            if waiting > 0 {
                let t = ts.iter().copied().find(|&t| self.st[t] == WAITING).unwrap();
                why.push(format!(
                    "warp {w}: {waiting} thread(s) wait at the barrier on line {}",
                    self.k.code[self.pc[t] as usize].line
                ));
            }
        }
        let exited = self.st.iter().filter(|&&s| s == EXITED).count();
        if exited > 0 {
            why.push(format!("{exited} thread(s) have exited"));
        }
        let t = first.unwrap_or(0);
        debug_assert!(self.st.iter().all(|&s| s != RUNNING));
        let _ = hs.nthreads;
        self.report(t, self.pc[t] as usize, Fault::Deadlock(why.join("; ")))
    }
}

struct Desc {
    start: u32,
    lbo: u32,
    sbo: u32,
    swizzle: Swizzle,
}

impl Desc {
    /// Shared offset of 16-bit element (row `mn` of M or N, `k`) under the canonical layouts.
    fn addr(&self, mn: usize, k: usize, mn_major: bool) -> u32 {
        let (mn, k) = (mn as u32, k as u32);
        let lin = match (mn_major, self.swizzle) {
            (false, Swizzle::None) => (mn / 8) * self.sbo + (mn % 8) * 16 + (k / 8) * self.lbo + (k % 8) * 2,
            (false, s) => (mn / 8) * self.sbo + (mn % 8) * s.span() + k * 2,
            (true, Swizzle::None) => (mn / 8) * self.sbo + (mn % 8) * 2 + (k % 8) * 16 + (k / 8) * self.lbo,
            (true, s) => {
                let per = s.span() / 2; // elements of M/N per swizzled row
                (mn / per) * self.lbo + (mn % per) * 2 + (k % 8) * s.span() + (k / 8) * self.sbo
            }
        };
        let a = self.start + lin;
        self.swizzle.apply(a)
    }
}

fn reg_name(k: &Kernel, r: u32) -> String {
    k.reg_names.get(r as usize).cloned().unwrap_or_else(|| format!("#{r}"))
}
