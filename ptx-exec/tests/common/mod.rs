//! Harness for instruction tests: a kernel body runs between a prologue that
//! loads eight input words into registers and an epilogue that stores eight
//! result registers.
#![allow(dead_code)]

use nnkern_ptx_exec::{launch, Error, FaultReport, LaunchReport, Memory, Module, Param};

pub const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

pub fn module(body: &str) -> Module {
    let src = format!("{HEADER}{body}");
    match Module::parse(&src) {
        Ok(m) => m,
        Err(e) => panic!("{e}\n{src}"),
    }
}

/// Kernel text: `%r0..%r7` and `%f0..%f7` hold `in[0..8]` (same bits),
/// `%rd0..%rd3` hold `in` read as four u64; `%r16..%r23` are stored to
/// `out[tid*8 ..]`. `%r24` holds `%tid.x`, `%r25` the lane.
pub fn scalar_kernel(body: &str) -> String {
    let mut s = String::from(
        ".visible .entry t(.param .u64 pin, .param .u64 pout)\n{\n\
         .reg .pred %p<8>;\n.reg .b16 %h<8>;\n.reg .b32 %r<32>;\n.reg .f32 %f<32>;\n\
         .reg .b64 %rd<32>;\n.reg .f64 %fd<8>;\n\
         ld.param.u64 %rd30, [pin];\nld.param.u64 %rd31, [pout];\n\
         mov.u32 %r24, %tid.x;\nmov.u32 %r25, %laneid;\n",
    );
    for i in 0..8 {
        s += &format!("ld.global.u32 %r{i}, [%rd30+{}];\n", 4 * i);
        s += &format!("ld.global.f32 %f{i}, [%rd30+{}];\n", 4 * i);
    }
    for i in 0..4 {
        s += &format!("ld.global.u64 %rd{i}, [%rd30+{}];\n", 8 * i);
    }
    for i in 16..24 {
        s += &format!("mov.u32 %r{i}, 0;\n");
    }
    s += body;
    s += "\nmul.wide.u32 %rd29, %r24, 32;\nadd.s64 %rd29, %rd31, %rd29;\n";
    for i in 0..8 {
        s += &format!("st.global.u32 [%rd29+{}], %r{};\n", 4 * i, 16 + i);
    }
    s += "ret;\n}\n";
    s
}

/// Runs `body` (see [`scalar_kernel`]) on `threads` threads of one block.
pub fn try_run(body: &str, input: &[u32], threads: u32) -> Result<Vec<u32>, Error> {
    let m = module(&scalar_kernel(body));
    let mut mem = Memory::new();
    let mut inp = input.to_vec();
    inp.resize(8, 0);
    let pin = mem.alloc_u32(&inp);
    let pout = mem.alloc(32 * threads as usize);
    launch(
        &mut mem,
        m.kernel("t")?,
        (1, 1, 1),
        (threads, 1, 1),
        0,
        &[Param::Ptr(pin), Param::Ptr(pout)],
    )?;
    mem.read_u32(pout)
}

pub fn run(body: &str, input: &[u32]) -> Vec<u32> {
    match try_run(body, input, 1) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Per-thread outputs, `threads` rows of 8 words.
pub fn run_threads(body: &str, input: &[u32], threads: u32) -> Vec<[u32; 8]> {
    match try_run(body, input, threads) {
        Ok(v) => v.chunks(8).map(|c| c.try_into().unwrap()).collect(),
        Err(e) => panic!("{e}"),
    }
}

pub fn fault_of(r: Result<LaunchReport, Error>) -> FaultReport {
    match r {
        Err(Error::Fault(f)) => *f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

pub fn f(x: f32) -> u32 {
    x.to_bits()
}

pub fn fl(x: u32) -> f32 {
    f32::from_bits(x)
}

/// Small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
    /// Mostly small values, some edge values, so carries, signs and overflow all occur.
    pub fn int(&mut self) -> u32 {
        match self.u32() % 8 {
            0 => [0, 1, u32::MAX, i32::MIN as u32, i32::MAX as u32, 31, 32, 33][self.u32() as usize % 8],
            1..=3 => self.u32() % 100,
            4 => (self.u32() % 100).wrapping_neg(),
            _ => self.u32(),
        }
    }
    pub fn f32(&mut self) -> f32 {
        let m = (self.u32() >> 9) as f32 / (1u32 << 23) as f32 + 1.0;
        let e = (self.u32() % 40) as i32 - 20;
        let s = if self.u32() % 2 == 0 { 1.0 } else { -1.0 };
        s * m * 2f32.powi(e)
    }
}
