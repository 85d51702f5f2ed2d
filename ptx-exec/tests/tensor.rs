//! ldmatrix and mma.sync: fragment layouts checked against a plain matrix
//! product, both with fragments built on the host from the PTX ISA's layout
//! formulas and with fragments loaded by ldmatrix the way GEMM kernels do;
//! and a planted wrong fragment index that the comparison must catch.

mod common;
use common::*;
use nnkern_ptx_exec::{bf16, f16, launch, Memory, Param};

/// One element type of the multiplicands.
#[derive(Clone, Copy, PartialEq, Debug)]
enum In {
    Bf16,
    F16,
    Tf32,
}

impl In {
    fn name(self) -> &'static str {
        match self {
            In::Bf16 => "bf16",
            In::F16 => "f16",
            In::Tf32 => "tf32",
        }
    }
    /// Rounds `x` to the type; returns the value and its bits.
    fn round(self, x: f32) -> (f32, u32) {
        match self {
            In::Bf16 => (bf16::from_f32(x).to_f32(), bf16::from_f32(x).to_bits() as u32),
            In::F16 => (f16::from_f32(x).to_f32(), f16::from_f32(x).to_bits() as u32),
            In::Tf32 => {
                let b = x.to_bits() & !0x1fff;
                (f32::from_bits(b), b)
            }
        }
    }
}

/// Random `rows × cols` matrix of values exact in `ty`, with their bits.
fn matrix(rng: &mut Rng, ty: In, rows: usize, cols: usize) -> (Vec<f32>, Vec<u32>) {
    (0..rows * cols)
        .map(|_| ty.round(rng.f32().clamp(-60000.0, 60000.0)))
        .unzip()
}

/// `C + A·B` (A m×k, B k×n, row-major), each element summed in f64 and rounded once.
fn product(a: &[f32], b: &[f32], c: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut d = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = c[i * n + j] as f64;
            for p in 0..k {
                s += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            d[i * n + j] = s as f32;
        }
    }
    d
}

/// Largest error of `got` relative to `sum |a||b| + |c|` per element.
fn worst_error(got: &[f32], want: &[f32], a: &[f32], b: &[f32], c: &[f32], n: usize, k: usize) -> f64 {
    let mut worst = 0f64;
    for (idx, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (i, j) = (idx / n, idx % n);
        let scale = c[idx].abs() as f64 + (0..k).map(|p| (a[i * k + p] * b[p * n + j]).abs() as f64).sum::<f64>();
        worst = worst.max((g as f64 - w as f64).abs() / scale.max(1e-30));
    }
    worst
}

// Fragment layouts, from the PTX ISA ("Matrix Fragments for mma.m16n8k16 / m16n8k8"):
// groupID g = lane >> 2, threadID_in_group t = lane % 4; element i of a fragment.
fn a_pos(ty: In, k: usize, lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    match (ty, k) {
        (In::Tf32, _) => (g + 8 * (i % 2), t + 4 * (i / 2)),
        (_, 16) => (g + 8 * ((i / 2) % 2), t * 2 + (i % 2) + 8 * (i / 4)),
        _ => (g + 8 * (i / 2), t * 2 + i % 2),
    }
}

fn b_pos(ty: In, k: usize, lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    match (ty, k) {
        (In::Tf32, _) => (t + 4 * i, g),
        (_, 16) => (t * 2 + i % 2 + 8 * (i / 2), g),
        _ => (t * 2 + i, g),
    }
}

fn c_pos(lane: usize, i: usize) -> (usize, usize) {
    (lane / 4 + 8 * (i / 2), (lane % 4) * 2 + i % 2)
}

/// Packs the fragment elements of every lane into `.b32` registers, laid out `[reg][lane]`.
fn fragments(
    bits: &[u32],
    cols: usize,
    per_reg: usize,
    n_el: usize,
    pos: impl Fn(usize, usize) -> (usize, usize),
) -> Vec<u32> {
    let nreg = n_el / per_reg;
    let mut out = vec![0u32; nreg * 32];
    for lane in 0..32 {
        for i in 0..n_el {
            let (r, c) = pos(lane, i);
            let v = bits[r * cols + c];
            let shift = if per_reg == 2 { 16 * (i % 2) } else { 0 };
            out[(i / per_reg) * 32 + lane] |= v << shift;
        }
    }
    out
}

/// Kernel: lane loads its A, B and C registers from `[reg][lane]` arrays, runs `mma`, stores D likewise.
fn mma_kernel(instr: &str, na: usize, nb: usize) -> String {
    let mut s = String::from(
        ".visible .entry mma(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd)\n{\n\
         .reg .b32 %a<4>;\n.reg .b32 %b<2>;\n.reg .f32 %c<4>;\n.reg .f32 %d<4>;\n.reg .b32 %r<4>;\n.reg .b64 %rd<16>;\n\
         ld.param.u64 %rd1, [pa];\nld.param.u64 %rd2, [pb];\nld.param.u64 %rd3, [pc];\nld.param.u64 %rd4, [pd];\n\
         mov.u32 %r1, %laneid;\nmul.wide.u32 %rd5, %r1, 4;\n\
         add.s64 %rd1, %rd1, %rd5;\nadd.s64 %rd2, %rd2, %rd5;\nadd.s64 %rd3, %rd3, %rd5;\nadd.s64 %rd4, %rd4, %rd5;\n",
    );
    for i in 0..na {
        s += &format!("ld.global.u32 %a{i}, [%rd1+{}];\n", 128 * i);
    }
    for i in 0..nb {
        s += &format!("ld.global.u32 %b{i}, [%rd2+{}];\n", 128 * i);
    }
    for i in 0..4 {
        s += &format!("ld.global.f32 %c{i}, [%rd3+{}];\n", 128 * i);
    }
    let areg: Vec<String> = (0..na).map(|i| format!("%a{i}")).collect();
    let breg: Vec<String> = (0..nb).map(|i| format!("%b{i}")).collect();
    s += &format!(
        "{instr} {{%d0, %d1, %d2, %d3}}, {{{}}}, {{{}}}, {{%c0, %c1, %c2, %c3}};\n",
        areg.join(", "),
        breg.join(", ")
    );
    for i in 0..4 {
        s += &format!("st.global.f32 [%rd4+{}], %d{i};\n", 128 * i);
    }
    s + "ret;\n}\n"
}

fn check_mma(ty: In, k: usize, seed: u64) {
    let (m, n) = (16, 8);
    let mut rng = Rng(seed);
    let (a, abits) = matrix(&mut rng, ty, m, k);
    let (b, bbits) = matrix(&mut rng, ty, k, n);
    let c: Vec<f32> = (0..m * n).map(|_| rng.f32()).collect();
    let per_reg = if ty == In::Tf32 { 1 } else { 2 };
    let (na_el, nb_el) = (m * k / 32, k * n / 32);
    let af = fragments(&abits, k, per_reg, na_el, |l, i| a_pos(ty, k, l, i));
    let bf = fragments(&bbits, n, per_reg, nb_el, |l, i| b_pos(ty, k, l, i));
    let cbits: Vec<u32> = c.iter().map(|x| x.to_bits()).collect();
    let cf = fragments(&cbits, n, 1, 4, c_pos);
    let instr = format!("mma.sync.aligned.m16n8k{k}.row.col.f32.{0}.{0}.f32", ty.name());
    let md = module(&mma_kernel(&instr, na_el / per_reg, nb_el / per_reg));
    let mut mem = Memory::new();
    let (pa, pb, pc, pd) = (
        mem.alloc_u32(&af),
        mem.alloc_u32(&bf),
        mem.alloc_u32(&cf),
        mem.alloc(4 * 128),
    );
    launch(
        &mut mem,
        md.kernel("mma").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(pa), Param::Ptr(pb), Param::Ptr(pc), Param::Ptr(pd)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let df = mem.read_u32(pd).unwrap();
    let mut d = vec![f32::NAN; m * n];
    for lane in 0..32 {
        for i in 0..4 {
            let (r, col) = c_pos(lane, i);
            d[r * n + col] = fl(df[i * 32 + lane]);
        }
    }
    let want = product(&a, &b, &c, m, n, k);
    // f32 accumulation of exact products: a few ulp of sum |a||b| at most
    let err = worst_error(&d, &want, &a, &b, &c, n, k);
    assert!(err <= 4.0 * f32::EPSILON as f64, "{instr}: relative error {err}");
}

#[test]
fn mma_m16n8k16_bf16_and_f16_match_the_matrix_product() {
    for seed in 1..4 {
        check_mma(In::Bf16, 16, seed);
        check_mma(In::F16, 16, seed);
    }
}

#[test]
fn mma_m16n8k8_tf32_bf16_f16_match_the_matrix_product() {
    for seed in 1..4 {
        check_mma(In::Tf32, 8, seed);
        check_mma(In::Bf16, 8, seed);
        check_mma(In::F16, 8, seed);
    }
}

#[test]
fn mma_tf32_ignores_the_low_mantissa_bits() {
    // A = B = identity-like with extra low bits that tf32 drops
    let (m, n, k) = (16usize, 8usize, 8usize);
    let noisy = f32::from_bits(1.0f32.to_bits() | 0x0fff);
    let mut abits = vec![0u32; m * k];
    let mut bbits = vec![0u32; k * n];
    for i in 0..8 {
        abits[i * k + i] = noisy.to_bits();
        bbits[i * n + i] = noisy.to_bits();
    }
    let af = fragments(&abits, k, 1, 4, |l, i| a_pos(In::Tf32, k, l, i));
    let bf = fragments(&bbits, n, 1, 2, |l, i| b_pos(In::Tf32, k, l, i));
    let md = module(&mma_kernel("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", 4, 2));
    let mut mem = Memory::new();
    let (pa, pb, pc, pd) = (
        mem.alloc_u32(&af),
        mem.alloc_u32(&bf),
        mem.alloc_u32(&[0; 128]),
        mem.alloc(512),
    );
    launch(
        &mut mem,
        md.kernel("mma").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(pa), Param::Ptr(pb), Param::Ptr(pc), Param::Ptr(pd)],
    )
    .unwrap();
    let df = mem.read_u32(pd).unwrap();
    // lane 0 holds D[0][0] in d0
    assert_eq!(fl(df[0]), 1.0);
}

/// 16×16 A (row-major) and Bᵀ (8×16, row-major) go to shared memory; fragments
/// come from `ldmatrix` as GEMM kernels load them; D (16×8) goes out row-major.
/// `AREGS` is the A operand list of the mma.
const LDMATRIX_MMA: &str = r#"
.visible .entry mma_ld(.param .u64 pa, .param .u64 pbt, .param .u64 pd)
{
    .reg .pred %p<2>;
    .reg .b32 %r<20>;
    .reg .b32 %a<4>;
    .reg .b32 %b<2>;
    .reg .f32 %d<4>;
    .reg .b64 %rd<10>;
    .shared .align 16 .b8 sA[512];
    .shared .align 16 .b8 sB[256];
    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pbt];
    ld.param.u64 %rd3, [pd];
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd4, %r1, 16;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.v4.u32 {%r2, %r3, %r4, %r5}, [%rd5];
    mov.u32 %r6, sA;
    shl.b32 %r7, %r1, 4;
    add.u32 %r8, %r6, %r7;
    st.shared.v4.u32 [%r8], {%r2, %r3, %r4, %r5};
    setp.lt.u32 %p1, %r1, 16;
    add.s64 %rd6, %rd2, %rd4;
    mov.u32 %r9, sB;
    add.u32 %r10, %r9, %r7;
    @%p1 ld.global.v4.u32 {%r2, %r3, %r4, %r5}, [%rd6];
    @%p1 st.shared.v4.u32 [%r10], {%r2, %r3, %r4, %r5};
    bar.sync 0;
    // A: lane l points at row l % 16, column 8 * (l / 16)
    and.b32 %r11, %r1, 15;
    shl.b32 %r11, %r11, 5;
    shr.u32 %r12, %r1, 4;
    shl.b32 %r12, %r12, 4;
    add.u32 %r11, %r11, %r12;
    add.u32 %r11, %r6, %r11;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%a0, %a1, %a2, %a3}, [%r11];
    // Bt: lane l < 16 points at row l % 8, column 8 * (l / 8)
    and.b32 %r13, %r1, 7;
    shl.b32 %r13, %r13, 5;
    shr.u32 %r14, %r1, 3;
    and.b32 %r14, %r14, 1;
    shl.b32 %r14, %r14, 4;
    add.u32 %r13, %r13, %r14;
    add.u32 %r13, %r9, %r13;
    ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%b0, %b1}, [%r13];
    mov.f32 %d0, 0f00000000;
    mov.f32 %d1, 0f00000000;
    mov.f32 %d2, 0f00000000;
    mov.f32 %d3, 0f00000000;
    mma.sync.aligned.m16n8k16.row.col.f32.TY.TY.f32 {%d0, %d1, %d2, %d3}, {AREGS}, {%b0, %b1}, {%d0, %d1, %d2, %d3};
    // D: rows g and g + 8, columns 2t, 2t + 1
    shr.u32 %r15, %r1, 2;
    and.b32 %r16, %r1, 3;
    shl.b32 %r16, %r16, 1;
    shl.b32 %r17, %r15, 3;
    add.u32 %r17, %r17, %r16;
    mul.wide.u32 %rd7, %r17, 4;
    add.s64 %rd8, %rd3, %rd7;
    st.global.v2.f32 [%rd8], {%d0, %d1};
    st.global.v2.f32 [%rd8+256], {%d2, %d3};
    ret;
}
"#;

/// Runs the ldmatrix + mma kernel and returns its largest relative error against A·B.
fn ldmatrix_mma_error(ty: In, aregs: &str, seed: u64) -> f64 {
    let (m, n, k) = (16, 8, 16);
    let mut rng = Rng(seed);
    let (a, abits) = matrix(&mut rng, ty, m, k);
    let (bt, btbits) = matrix(&mut rng, ty, n, k);
    let b: Vec<f32> = (0..k * n).map(|i| bt[(i % n) * k + i / n]).collect();
    let src = LDMATRIX_MMA.replace("TY", ty.name()).replace("AREGS", aregs);
    let md = module(&src);
    let to16 = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect() };
    let mut mem = Memory::new();
    let pa = mem.alloc_bytes(&to16(&abits));
    let pbt = mem.alloc_bytes(&to16(&btbits));
    let pd = mem.alloc(4 * m * n);
    launch(
        &mut mem,
        md.kernel("mma_ld").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(pa), Param::Ptr(pbt), Param::Ptr(pd)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = mem.read_f32(pd).unwrap();
    let c = vec![0f32; m * n];
    worst_error(&d, &product(&a, &b, &c, m, n, k), &a, &b, &c, n, k)
}

#[test]
fn ldmatrix_fragments_feed_mma_correctly() {
    for seed in 1..4 {
        for ty in [In::Bf16, In::F16] {
            let err = ldmatrix_mma_error(ty, "%a0, %a1, %a2, %a3", seed);
            assert!(err <= 4.0 * f32::EPSILON as f64, "{ty:?}: {err}");
        }
    }
}

#[test]
fn planted_wrong_mma_fragment_index_is_caught() {
    // a1 (rows g + 8, k 0..8) and a2 (rows g, k 8..16) swapped, as an off-by-one in a
    // fragment index would do: the comparison with the plain product must fail
    for ty in [In::Bf16, In::F16] {
        let err = ldmatrix_mma_error(ty, "%a0, %a2, %a1, %a3", 1);
        assert!(err > 1e-2, "{ty:?}: a wrong fragment went unnoticed (error {err})");
    }
}

#[test]
fn ldmatrix_layouts() {
    // a 32×8 matrix of b16 values 0..256 in shared memory; lane l points at row l
    let body = ".shared .align 16 .b8 s[512];\n\
        shl.b32 %r1, %r25, 4; mov.u32 %r2, s; add.u32 %r3, %r2, %r1;\
        mul.lo.u32 %r4, %r25, 8; add.u32 %r5, %r4, 1; shl.b32 %r5, %r5, 16; or.b32 %r4, %r4, %r5;\
        add.u32 %r6, %r4, 0x00020002; add.u32 %r7, %r4, 0x00040004; add.u32 %r8, %r4, 0x00060006;\
        st.shared.v4.u32 [%r3], {%r4, %r6, %r7, %r8}; bar.warp.sync 0xffffffff;\
        ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r16, %r17, %r18, %r19}, [%r3];\
        ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%r20, %r21, %r22, %r23}, [%r3];";
    let rows = run_threads(body, &[], 32);
    // element (row, col) holds row * 8 + col
    for (l, r) in rows.iter().enumerate() {
        for i in 0..4 {
            let (row, col) = (8 * i + l / 4, 2 * (l % 4));
            let want = (row * 8 + col) as u32 | ((row * 8 + col + 1) as u32) << 16;
            assert_eq!(r[i], want, "x4 lane {l} reg {i}");
            let (r0, c0) = (8 * i + 2 * (l % 4), l / 4);
            let want_t = (r0 * 8 + c0) as u32 | (((r0 + 1) * 8 + c0) as u32) << 16;
            assert_eq!(r[4 + i], want_t, "x4.trans lane {l} reg {i}");
        }
    }
    // x1 and x2 read the addresses of lanes 0..8 and 0..16 only
    let rows = run_threads(
        &body.replace(
            "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%r20, %r21, %r22, %r23}, [%r3];",
            "setp.ge.u32 %p1, %r25, 16; @%p1 mov.u32 %r3, 999999; bar.warp.sync 0xffffffff;\
             ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%r20}, [%r3]; ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%r21, %r22}, [%r3];",
        ),
        &[],
        32,
    );
    for (l, r) in rows.iter().enumerate() {
        assert_eq!(r[4], r[0]);
        let (r0, c0) = (2 * (l % 4), l / 4);
        assert_eq!(r[5], (r0 * 8 + c0) as u32 | (((r0 + 1) * 8 + c0) as u32) << 16);
        assert_eq!(r[6], ((r0 + 8) * 8 + c0) as u32 | (((r0 + 9) * 8 + c0) as u32) << 16);
    }
}

#[test]
fn mma_with_f16_accumulators() {
    let (m, n, k) = (16usize, 8usize, 16usize);
    let mut rng = Rng(11);
    // small integers keep every partial sum exact in f16
    let small = |rng: &mut Rng| f16::from_f32((rng.u32() % 7) as f32 - 3.0);
    let a: Vec<f16> = (0..m * k).map(|_| small(&mut rng)).collect();
    let b: Vec<f16> = (0..k * n).map(|_| small(&mut rng)).collect();
    let c: Vec<f16> = (0..m * n).map(|_| small(&mut rng)).collect();
    let bits = |v: &[f16]| v.iter().map(|x| x.to_bits() as u32).collect::<Vec<u32>>();
    let af = fragments(&bits(&a), k, 2, 8, |l, i| a_pos(In::F16, k, l, i));
    let bf = fragments(&bits(&b), n, 2, 4, |l, i| b_pos(In::F16, k, l, i));
    let cf = fragments(&bits(&c), n, 2, 4, c_pos);
    let src = ".visible .entry mma(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd)\n{\n\
        .reg .b32 %a<4>;\n.reg .b32 %b<2>;\n.reg .b32 %c<2>;\n.reg .b32 %d<2>;\n.reg .b32 %r<2>;\n.reg .b64 %rd<8>;\n\
        ld.param.u64 %rd1, [pa];\nld.param.u64 %rd2, [pb];\nld.param.u64 %rd3, [pc];\nld.param.u64 %rd4, [pd];\n\
        mov.u32 %r1, %laneid;\nmul.wide.u32 %rd5, %r1, 4;\nadd.s64 %rd1, %rd1, %rd5;\nadd.s64 %rd2, %rd2, %rd5;\n\
        add.s64 %rd3, %rd3, %rd5;\nadd.s64 %rd4, %rd4, %rd5;\n\
        ld.global.u32 %a0, [%rd1];\nld.global.u32 %a1, [%rd1+128];\nld.global.u32 %a2, [%rd1+256];\nld.global.u32 %a3, [%rd1+384];\n\
        ld.global.u32 %b0, [%rd2];\nld.global.u32 %b1, [%rd2+128];\nld.global.u32 %c0, [%rd3];\nld.global.u32 %c1, [%rd3+128];\n\
        mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%d0, %d1}, {%a0, %a1, %a2, %a3}, {%b0, %b1}, {%c0, %c1};\n\
        st.global.u32 [%rd4], %d0;\nst.global.u32 [%rd4+128], %d1;\nret;\n}\n";
    let md = module(src);
    let mut mem = Memory::new();
    let (pa, pb, pc, pd) = (
        mem.alloc_u32(&af),
        mem.alloc_u32(&bf),
        mem.alloc_u32(&cf),
        mem.alloc(256),
    );
    launch(
        &mut mem,
        md.kernel("mma").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(pa), Param::Ptr(pb), Param::Ptr(pc), Param::Ptr(pd)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let df = mem.read_u32(pd).unwrap();
    let to32 = |v: &[f16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let want = product(&to32(&a), &to32(&b), &to32(&c), m, n, k);
    for lane in 0..32 {
        for i in 0..4 {
            let (r, col) = c_pos(lane, i);
            let got = f16::from_bits((df[(i / 2) * 32 + lane] >> (16 * (i % 2))) as u16);
            assert_eq!(got.to_f32(), want[r * n + col], "D[{r}][{col}]");
        }
    }
}
