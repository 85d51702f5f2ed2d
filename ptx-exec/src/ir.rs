//! Decoded instructions: every operand is resolved to a register index, an
//! immediate or a special register at parse time, so execution does no
//! string work.

/// A PTX scalar type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    Tf32,
    F32,
    F64,
    Pred,
}

impl Ty {
    pub(crate) fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "tf32" => Ty::Tf32,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    pub(crate) fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F16x2 | Ty::Bf16x2 | Ty::Tf32 | Ty::F32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
        }
    }

    pub(crate) fn bytes(self) -> usize {
        (self.bits() as usize).div_ceil(8)
    }

    pub(crate) fn signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    pub(crate) fn is_float(self) -> bool {
        matches!(
            self,
            Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2 | Ty::Tf32 | Ty::F32 | Ty::F64
        )
    }

    /// All-ones mask of the type's width.
    pub(crate) fn mask(self) -> u64 {
        width_mask(self.bits())
    }
}

pub(crate) fn width_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Special (read-only) registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    Clock,
    Clock64,
    SmId,
    GridId,
    DynSmemSize,
    TotalSmemSize,
}

/// An instruction source operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Reg(u32),
    Imm(u64),
    Sreg(Sreg),
}

/// A memory operand `[base+offset]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addr {
    /// Register holding the base, or `None` for an absolute (symbol) address.
    pub base: Option<u32>,
    pub off: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Generic,
    Global,
    Shared,
    Local,
    Param,
}

/// IEEE rounding of a float result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rnd {
    /// Nearest, ties to even.
    Rn,
    /// Toward zero.
    Rz,
    /// Toward −∞.
    Rm,
    /// Toward +∞.
    Rp,
    /// Nearest, ties away from zero (tf32 only).
    Rna,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    /// `mul24.lo`: the low 32 bits of the product of the low 24 bits.
    Mul24Lo,
    /// `mul24.hi`: bits 16..48 of that product.
    Mul24Hi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntUn {
    Neg,
    Abs,
    Not,
    Cnot,
    Popc,
    Clz,
    Brev,
    /// Position of the most significant non-sign bit (`bfind`), or `bits-1-pos` with `.shiftamt`.
    Bfind {
        shiftamt: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MadKind {
    Lo,
    Hi,
    Wide,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FBin {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    Copysign,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FUn {
    Neg,
    Abs,
    Sqrt,
    Rsqrt,
    Rcp,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
}

/// Flags of a float instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FFlags {
    pub rnd: Rnd,
    pub ftz: bool,
    pub sat: bool,
    /// `min.NaN` / `max.NaN`: NaN in, NaN out.
    pub nan: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtomOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
    Exch,
    Cas,
    Inc,
    Dec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TestP {
    Finite,
    Infinite,
    Number,
    NotANumber,
    Normal,
    Subnormal,
}

/// mma.sync shapes and types supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MmaKind {
    /// m16n8k16, f16 or bf16 inputs.
    M16n8k16 { bf16: bool },
    /// m16n8k8, f16 or bf16 inputs.
    M16n8k8 { bf16: bool },
    /// m16n8k8, tf32 inputs.
    M16n8k8Tf32,
}

/// A decoded instruction.
#[derive(Clone, Debug)]
pub(crate) enum Inst {
    Mov {
        d: u32,
        a: Op,
    },
    /// `mov.b64 %rd, {%r1, %r2}`: pack parts, lowest first.
    Pack {
        d: u32,
        parts: Vec<Op>,
        bits: u32,
    },
    /// `mov.b64 {%r1, %r2}, %rd`.
    Unpack {
        ds: Vec<Option<u32>>,
        a: Op,
        bits: u32,
    },
    Int {
        op: IntOp,
        ty: Ty,
        sat: bool,
        d: u32,
        a: Op,
        b: Op,
    },
    IntUn {
        op: IntUn,
        ty: Ty,
        d: u32,
        a: Op,
    },
    Mad {
        kind: MadKind,
        ty: Ty,
        d: u32,
        a: Op,
        b: Op,
        c: Op,
    },
    Bfe {
        ty: Ty,
        d: u32,
        a: Op,
        b: Op,
        c: Op,
    },
    Bfi {
        ty: Ty,
        d: u32,
        f: Op,
        b: Op,
        c: Op,
        len: Op,
    },
    Prmt {
        d: u32,
        a: Op,
        b: Op,
        c: Op,
    },
    Lop3 {
        d: u32,
        a: Op,
        b: Op,
        c: Op,
        lut: u8,
    },
    FBin {
        op: FBin,
        ty: Ty,
        fl: FFlags,
        d: u32,
        a: Op,
        b: Op,
    },
    FUn {
        op: FUn,
        ty: Ty,
        fl: FFlags,
        d: u32,
        a: Op,
    },
    Fma {
        ty: Ty,
        fl: FFlags,
        d: u32,
        a: Op,
        b: Op,
        c: Op,
    },
    Testp {
        op: TestP,
        ty: Ty,
        d: u32,
        a: Op,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        p: u32,
        q: Option<u32>,
        a: Op,
        b: Op,
        comb: Option<(BoolOp, Op, bool)>,
    },
    Selp {
        ty: Ty,
        d: u32,
        a: Op,
        b: Op,
        c: Op,
    },
    Cvt {
        dty: Ty,
        sty: Ty,
        rnd: Option<Rnd>,
        int_rnd: bool,
        ftz: bool,
        sat: bool,
        /// `.satfinite`: out-of-range results become the largest finite value.
        satfinite: bool,
        d: u32,
        a: Op,
    },
    /// Funnel shift: `shf.{l,r}.{wrap,clamp}.b32 d, lo, hi, n`.
    Shf {
        left: bool,
        clamp: bool,
        d: u32,
        lo: Op,
        hi: Op,
        n: Op,
    },
    /// `slct.dty.{s32,f32} d, a, b, c`: `c >= 0 ? a : b`.
    Slct {
        cty: Ty,
        ftz: bool,
        d: u32,
        a: Op,
        b: Op,
        c: Op,
    },
    /// `redux.sync.op.type d, a, membermask` (integer reductions over the warp).
    Redux {
        op: IntOp,
        ty: Ty,
        d: u32,
        a: Op,
        mask: Op,
    },
    /// `cvt.rn.bf16x2.f32 d, hi, lo` and the f16x2 form.
    CvtPack {
        bf16: bool,
        rnd: Rnd,
        relu: bool,
        d: u32,
        hi: Op,
        lo: Op,
    },
    Cvta {
        to: bool,
        space: Space,
        d: u32,
        a: Op,
    },
    Ld {
        space: Space,
        ty: Ty,
        ds: Vec<Option<u32>>,
        addr: Addr,
    },
    St {
        space: Space,
        ty: Ty,
        srcs: Vec<Op>,
        addr: Addr,
    },
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
        d: Option<u32>,
        addr: Addr,
        b: Op,
        c: Option<Op>,
    },
    CpAsync {
        dst: Addr,
        src: Addr,
        size: u32,
        src_size: Option<Op>,
        ignore_src: Option<Op>,
    },
    CpAsyncCommit,
    /// `cp.async.wait_group n`, or `cp.async.wait_all` (commit, then wait for 0) when `all`.
    CpAsyncWait {
        n: u32,
        all: bool,
    },
    Ldmatrix {
        num: u8,
        trans: bool,
        ds: Vec<u32>,
        addr: Addr,
        generic: bool,
    },
    Mma {
        kind: MmaKind,
        f16_acc: bool,
        d: Vec<u32>,
        a: Vec<u32>,
        b: Vec<u32>,
        c: Vec<Op>,
    },
    Shfl {
        mode: ShflMode,
        d: u32,
        p: Option<u32>,
        a: Op,
        b: Op,
        c: Op,
        mask: Op,
    },
    Vote {
        mode: VoteMode,
        d: u32,
        a: Op,
        neg: bool,
        mask: Op,
    },
    Activemask {
        d: u32,
    },
    Bar {
        count: Option<Op>,
        aligned: bool,
    },
    WarpSync {
        mask: Op,
    },
    Bra {
        target: u32,
    },
    Exit,
    Trap,
    Nop,
    /// The sm_90 instructions (`wgmma`, `mbarrier`, bulk tensor copies, ...): see `hopper.rs`.
    Hopper(Box<crate::hopper::HInst>),
}

/// One decoded instruction with its guard predicate and source line.
#[derive(Clone, Debug)]
pub(crate) struct Instr {
    /// `@%p` / `@!%p`: predicate register and whether it is negated.
    pub guard: Option<(u32, bool)>,
    pub inst: Inst,
    /// 1-based line in the PTX source.
    pub line: u32,
    /// Every register the instruction names (the `wgmma` register checks read it).
    pub regs: Box<[u32]>,
}
