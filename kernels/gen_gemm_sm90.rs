//! Emits `kernels/gemm_sm90.ptx`, the sm_90a GEMM (warp-specialised, bulk tensor
//! copies into a 4-stage shared ring, wgmma m64n256k16). The test
//! `tests/ptx_sm90.rs` checks that the committed file is exactly what this emits;
//! `NNKERN_REGENERATE=1 cargo test --release --test ptx_sm90 generated` rewrites it.
//!
//! The generator only unrolls: the kernel is one hand-designed program whose
//! repetitive parts (128 accumulator registers, the four k16 steps, the masked
//! epilogue of each accumulator) are written out here.

use std::fmt::Write;

/// Rows of C per block (two consumer warpgroups of 64 rows).
pub const BM: u32 = 128;
/// Columns of C per block (one wgmma m64n256k16 per consumer warpgroup and k16 step).
pub const BN: u32 = 256;
/// K per ring stage: 64 bf16 = 128 bytes, one 128-byte swizzle row.
pub const BK: u32 = 64;
/// Ring stages.
pub const STAGES: u32 = 4;
/// Bytes of one stage: A 128×64 and B 256×64, 16-bit elements.
pub const STAGE_BYTES: u32 = (BM + BN) * BK * 2;
/// Dynamic shared memory to launch with: the ring plus 1 KiB to align it to 1024 bytes.
pub const DYNAMIC_SHARED: u32 = STAGES * STAGE_BYTES + 1024;
/// Threads per block: producer warpgroup + two consumer warpgroups.
pub const THREADS: u32 = 384;
/// M tiles per group of the tile order (consecutive tiles share B columns and A rows in L2).
pub const GROUP_M: u32 = 8;
/// Register counts: at entry (65536 / 384, rounded down to 8), producer, consumers.
pub const REGS_ENTRY: u32 = 168;
pub const REGS_PRODUCER: u32 = 40;
pub const REGS_CONSUMER: u32 = 232;

const ACTIVATION: &str = include_str!("activation.ptx");

fn activation_helpers() -> &'static str {
    let b = ACTIVATION
        .find("// ---- begin activation helpers")
        .expect("begin marker");
    let e = ACTIVATION
        .find("// ---- end activation helpers ----")
        .expect("end marker");
    let e = e + ACTIVATION[e..].find('\n').expect("newline") + 1;
    &ACTIVATION[b..e]
}

struct Out(String);

impl Out {
    fn l(&mut self, s: &str) {
        self.0.push_str("    ");
        self.0.push_str(s);
        self.0.push('\n');
    }
    fn label(&mut self, s: &str) {
        let _ = writeln!(self.0, "{s}:");
    }
    fn raw(&mut self, s: &str) {
        self.0.push_str(s);
    }
}

const HEADER: &str = "//
// nnkern: sm_90a (Hopper) GEMM, bf16 or f16 inputs, f32 accumulation and output:
// C = alpha*A*B + beta*C, with the same optional fused epilogue as gemm_tc.ptx
// (C += bias[col], then Y = f(C)). Emitted by kernels/gen_gemm_sm90.rs (do not edit by hand).
//
// Design: persistent blocks of 384 threads = 3 warpgroups, warp-specialised.
//   Warpgroup 0 (producer, setmaxnreg.dec to 40): one elected thread issues the bulk tensor
//   copies (cp.async.bulk.tensor.2d, 128-byte swizzle) of A (128 x 64) and B^T (256 x 64)
//   tiles into a 4-stage shared ring, 48 KiB a stage; each stage has a full mbarrier
//   (1 arrival + 49152 transaction bytes) and an empty mbarrier (8 arrivals: lane 0 of
//   each consumer warp, after its wgmma.wait_group retired the stage's group).
//   Warpgroups 1 and 2 (consumers, setmaxnreg.inc to 232): wait on the full barrier, issue
//   4 x wgmma.mma_async.m64n256k16 (rows 64*(g-1).. of the 128 x 256 block tile, K-major
//   128-byte-swizzle descriptors, start address +32 bytes per k16), commit, keep one group
//   in flight (wait_group 1) and release the stage before it to the producer.
//   128 f32 accumulators per consumer thread.
// Tile order: tile t = ctaid.x, ctaid.x + nctaid.x, ...; tiles are numbered in groups of 8
//   M-tiles: within a group M varies fastest, so the blocks in flight at once share A rows
//   and B columns in L2. For the H200 (132 SMs): grid = min(#tiles, 132), one block per SM
//   (197632 bytes of dynamic shared memory).
// Edges: the bulk copies zero-fill rows past M / N and k past K (the tensor maps carry the
//   true sizes); the epilogue stores only rows < M and columns < N.
// Layout assumptions (as gemm_tc.ptx): A is M x K with K contiguous, B is given as its
//   transpose, N x K with K contiguous; both 16-byte aligned with row strides (lda, ldb)
//   multiples of 8 elements; M, N, K < 2^31. C (f32) has any strides. beta = 0 never reads
//   C; alpha = 0 is handled by the host passing K = 0 (no copy is issued then).
// Registers (ptxas 13.0 -v): 168 at entry (the .maxnreg cap), then 40 in the producer and
//   232 in the consumers; no spills, no local memory.
// ci: requires HGMMA UTMALDG (the CI fails when the SASS lacks wgmma or bulk tensor loads).
// Accuracy: products of bf16/f16 values are exact in f32; accumulation order is the tensor
//   core's (error <= (K + 2) * 2^-24 * sum|a||b| is what the executor tests allow; the
//   tensor cores' own rounding is still to be compared on a GPU).
// Measured speed: not yet measured on a GPU.
//
// Launch contract: nk_gemm_sm90_bf16 / nk_gemm_sm90_f16, block = 384 threads,
//   grid = (min(ceil(M/128) * ceil(N/256), number of SMs), 1, 1), dynamic shared memory
//   197632 bytes (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES raised to it first),
//   .maxnreg 168 (in the PTX).
//   Params (in order):
//   tma, tmb (128-byte CUtensorMap by value, __grid_constant__):
//     tma: A, 2-D, 16-bit elements, dims {K, M}, row stride lda*2 bytes, box {64, 128},
//          swizzle 128B, interleave none, out-of-bounds fill zero (not NaN);
//     tmb: B^T, dims {K, N}, row stride ldb*2 bytes, box {64, 256}, swizzle 128B, zero fill;
//     (for K = 0 any valid map, e.g. dims {1, rows}: it is not read);
//   c (u64), M, N, K (u32), rsc, csc (u64 element strides of C), alpha, beta (f32),
//   bias (u64, 0 = none), y (u64, 0 = none), yrs, ycs (u64), act (u32, as in activation.ptx).
//
.version 8.0
.target sm_90a
.address_size 64

";

/// The whole `kernels/gemm_sm90.ptx`.
pub fn generate() -> String {
    let mut o = Out(String::new());
    o.raw(HEADER);
    o.raw("\n");
    o.raw(activation_helpers());
    o.raw("\n// The ring: 4 stages of A (16 KiB) and B (32 KiB), aligned to 1024 bytes at run time.\n");
    o.raw(".extern .shared .align 1024 .b8 nk_sm90_ring[];\n");
    for (name, ty) in [("nk_gemm_sm90_bf16", "bf16"), ("nk_gemm_sm90_f16", "f16")] {
        o.raw("\n");
        entry(&mut o, name, ty);
    }
    o.0
}

/// tile index %r17 -> m0 in %r20, n0 in %r21 (grouped order); uses %r18, %r19, %r23..%r26.
fn tile_coords(o: &mut Out) {
    o.l("// (tm, tn) of tile %r17: groups of 8 M-tiles, M fastest inside a group");
    o.l(&format!("mul.lo.u32 %r23, %r8, {GROUP_M};    // tiles per group"));
    o.l("div.u32 %r24, %r17, %r23;         // group");
    o.l(&format!("mul.lo.u32 %r25, %r24, {GROUP_M};    // its first M-tile"));
    o.l("sub.u32 %r26, %r7, %r25;");
    o.l(&format!(
        "min.u32 %r26, %r26, {GROUP_M};       // M-tiles in this group"
    ));
    o.l("mul.lo.u32 %r24, %r24, %r23;");
    o.l("sub.u32 %r24, %r17, %r24;         // index inside the group");
    o.l("rem.u32 %r18, %r24, %r26;");
    o.l("add.u32 %r18, %r18, %r25;         // tm");
    o.l("div.u32 %r19, %r24, %r26;         // tn");
    o.l(&format!("shl.b32 %r20, %r18, {};           // m0", BM.trailing_zeros()));
    o.l(&format!("shl.b32 %r21, %r19, {};           // n0", BN.trailing_zeros()));
}

fn entry(o: &mut Out, name: &str, ty: &str) {
    let _ = writeln!(
        o.0,
        ".visible .entry {name}(
    .param .align 64 .b8 p_tma[128], .param .align 64 .b8 p_tmb[128],
    .param .u64 p_c, .param .u32 p_m, .param .u32 p_n, .param .u32 p_k,
    .param .u64 p_rsc, .param .u64 p_csc, .param .f32 p_alpha, .param .f32 p_beta,
    .param .u64 p_bias, .param .u64 p_y, .param .u64 p_yrs, .param .u64 p_ycs,
    .param .u32 p_act)
.maxntid {THREADS}, 1, 1
.maxnreg {REGS_ENTRY}
{{"
    );
    let p = |s: &str| format!("{name}_{s}");
    o.l(&format!(".shared .align 8 .b64 full[{STAGES}];"));
    o.l(&format!(".shared .align 8 .b64 empty[{STAGES}];"));
    o.l(".reg .pred %p, %q, %leader, %sd, %hasbeta, %hasbias, %hasy, %pr0, %pr1, %pc;");
    o.l(".reg .b32 %r<48>;");
    o.l(".reg .b64 %rd<32>;");
    o.l(".reg .f32 %d<128>;");
    o.l(".reg .f32 %f<8>;");
    o.l("mov.u32 %r0, %tid.x;");
    o.l("shr.u32 %r1, %r0, 7;              // warpgroup");
    o.l("mov.u32 %r2, full;");
    o.l("mov.u32 %r3, empty;");
    o.l("setp.eq.u32 %p, %r0, 0;");
    o.l(&format!("@!%p bra {};", p("INIT_DONE")));
    for s in 0..STAGES {
        o.l(&format!("mbarrier.init.shared::cta.b64 [full+{}], 1;", 8 * s));
        o.l(&format!("mbarrier.init.shared::cta.b64 [empty+{}], 8;", 8 * s));
    }
    o.l("fence.mbarrier_init.release.cluster;");
    o.label(&p("INIT_DONE"));
    o.l("bar.sync 0;");
    o.l("ld.param.u32 %r4, [p_m];");
    o.l("ld.param.u32 %r5, [p_n];");
    o.l("ld.param.u32 %r6, [p_k];");
    o.l(&format!("add.u32 %r7, %r4, {};", BM - 1));
    o.l(&format!(
        "shr.u32 %r7, %r7, {};             // M-tiles",
        BM.trailing_zeros()
    ));
    o.l(&format!("add.u32 %r8, %r5, {};", BN - 1));
    o.l(&format!(
        "shr.u32 %r8, %r8, {};             // N-tiles",
        BN.trailing_zeros()
    ));
    o.l("mul.lo.u32 %r9, %r7, %r8;         // tiles");
    o.l(&format!("add.u32 %r10, %r6, {};", BK - 1));
    o.l(&format!(
        "shr.u32 %r10, %r10, {};           // k tiles",
        BK.trailing_zeros()
    ));
    o.l("mov.u32 %r11, %ctaid.x;           // first tile");
    o.l("mov.u32 %r12, %nctaid.x;          // tile step");
    o.l("mov.u32 %r13, nk_sm90_ring;");
    o.l("add.u32 %r13, %r13, 1023;");
    o.l("and.b32 %r13, %r13, -1024;        // ring base, 1024-aligned (the 128B swizzle pattern)");
    o.l("setp.ne.u32 %p, %r1, 0;");
    o.l(&format!("@%p bra {};", p("CONSUMER")));

    // ---------------- producer
    o.l("// ---- producer warpgroup: one thread issues the copies");
    o.l(&format!("setmaxnreg.dec.sync.aligned.u32 {REGS_PRODUCER};"));
    o.l("shr.u32 %r14, %r0, 5;");
    o.l("setp.ne.u32 %p, %r14, 0;");
    o.l(&format!("@%p bra {};", p("PDONE")));
    o.l("elect.sync %r15|%leader, 0xffffffff;");
    o.l(&format!("@!%leader bra {};", p("PDONE")));
    o.l("cvta.param.u64 %rd0, p_tma;");
    o.l("cvta.param.u64 %rd1, p_tmb;");
    o.l("mov.u32 %r16, 0;                  // k iterations issued (all tiles)");
    o.l("mov.u32 %r17, %r11;               // tile");
    o.label(&p("PTILE"));
    o.l("setp.ge.u32 %p, %r17, %r9;");
    o.l(&format!("@%p bra {};", p("PDONE")));
    tile_coords(o);
    o.l("mov.u32 %r22, 0;                  // k tile");
    o.label(&p("PK"));
    o.l("setp.ge.u32 %p, %r22, %r10;");
    o.l(&format!("@%p bra {};", p("PNEXT")));
    o.l(&format!("and.b32 %r23, %r16, {};           // stage", STAGES - 1));
    o.l(&format!("shr.u32 %r24, %r16, {};", STAGES.trailing_zeros()));
    o.l("and.b32 %r24, %r24, 1;");
    o.l("xor.b32 %r24, %r24, 1;            // empty parity: the first round passes at once");
    o.l("shl.b32 %r25, %r23, 3;");
    o.l("add.u32 %r26, %r3, %r25;          // &empty[stage]");
    o.label(&p("PWAIT"));
    o.l("mbarrier.try_wait.parity.shared::cta.b64 %q, [%r26], %r24;");
    o.l(&format!("@!%q bra {};", p("PWAIT")));
    o.l("add.u32 %r27, %r2, %r25;          // &full[stage]");
    o.l(&format!(
        "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r27], {STAGE_BYTES};"
    ));
    o.l(&format!("mul.lo.u32 %r28, %r23, {STAGE_BYTES};"));
    o.l("add.u32 %r28, %r28, %r13;         // A of the stage");
    o.l(&format!(
        "add.u32 %r29, %r28, {};        // B of the stage",
        BM * BK * 2
    ));
    o.l(&format!("shl.b32 %r30, %r22, {};           // k0", BK.trailing_zeros()));
    o.l("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r28], [%rd0, {%r30, %r20}], [%r27];");
    o.l("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r29], [%rd1, {%r30, %r21}], [%r27];");
    o.l("add.u32 %r16, %r16, 1;");
    o.l("add.u32 %r22, %r22, 1;");
    o.l(&format!("bra {};", p("PK")));
    o.label(&p("PNEXT"));
    o.l("add.u32 %r17, %r17, %r12;");
    o.l(&format!("bra {};", p("PTILE")));
    o.label(&p("PDONE"));
    o.l("ret;");

    // ---------------- consumers
    o.label(&p("CONSUMER"));
    o.l("// ---- consumer warpgroups 1, 2: rows 64*(g-1) .. +64 of the block tile");
    o.l(&format!("setmaxnreg.inc.sync.aligned.u32 {REGS_CONSUMER};"));
    o.l("sub.u32 %r14, %r1, 1;             // consumer index");
    o.l("and.b32 %r15, %r0, 127;           // thread in the warpgroup");
    o.l("and.b32 %r32, %r15, 31;");
    o.l("setp.eq.u32 %leader, %r32, 0;     // lane 0 of each warp releases the stages");
    o.l("shr.u32 %r31, %r15, 5;            // warp in the warpgroup");
    o.l("and.b32 %r32, %r15, 31;           // lane");
    o.l("shl.b32 %r33, %r14, 6;");
    o.l("shl.b32 %r34, %r31, 4;");
    o.l("add.u32 %r33, %r33, %r34;");
    o.l("shr.u32 %r34, %r32, 2;");
    o.l("add.u32 %r33, %r33, %r34;         // row in the tile of accumulators 0, 1 (+8: 2, 3)");
    o.l("and.b32 %r34, %r32, 3;");
    o.l("shl.b32 %r34, %r34, 1;            // column in the tile of accumulator 0 (+8j, +1)");
    o.l(&format!(
        "shl.b32 %r35, %r14, {};        // A rows of this warpgroup, bytes",
        (64 * BK * 2).trailing_zeros()
    ));
    o.l("ld.param.u64 %rd2, [p_c];");
    o.l("ld.param.u64 %rd3, [p_rsc];");
    o.l("ld.param.u64 %rd4, [p_csc];");
    o.l("ld.param.f32 %f1, [p_alpha];");
    o.l("ld.param.f32 %f2, [p_beta];");
    o.l("ld.param.u64 %rd5, [p_bias];");
    o.l("ld.param.u64 %rd6, [p_y];");
    o.l("ld.param.u64 %rd7, [p_yrs];");
    o.l("ld.param.u64 %rd8, [p_ycs];");
    o.l("ld.param.u32 %r36, [p_act];");
    o.l("setp.ne.f32 %hasbeta, %f2, 0f00000000;");
    o.l("setp.ne.u64 %hasbias, %rd5, 0;");
    o.l("setp.ne.u64 %hasy, %rd6, 0;");
    o.l("cvta.to.global.u64 %rd2, %rd2;");
    o.l("cvta.to.global.u64 %rd5, %rd5;");
    o.l("cvta.to.global.u64 %rd6, %rd6;");
    o.l("mov.u32 %r16, 0;                  // k iterations consumed (all tiles)");
    o.l("mov.u32 %r17, %r11;               // tile");
    o.label(&p("CTILE"));
    o.l("setp.ge.u32 %p, %r17, %r9;");
    o.l(&format!("@%p bra {};", p("CDONE")));
    tile_coords(o);
    o.l("setp.eq.u32 %p, %r10, 0;");
    o.l(&format!("@%p bra {};", p("ZERO")));
    o.l("mov.u32 %r22, 0;                  // k tile");
    o.label(&p("CK"));
    o.l(&format!("and.b32 %r23, %r16, {};           // stage", STAGES - 1));
    o.l(&format!("shr.u32 %r24, %r16, {};", STAGES.trailing_zeros()));
    o.l("and.b32 %r24, %r24, 1;            // full parity");
    o.l("shl.b32 %r25, %r23, 3;");
    o.l("add.u32 %r26, %r2, %r25;          // &full[stage]");
    o.label(&p("CWAIT"));
    o.l("mbarrier.try_wait.parity.shared::cta.b64 %q, [%r26], %r24;");
    o.l(&format!("@!%q bra {};", p("CWAIT")));
    o.l(&format!("mul.lo.u32 %r27, %r23, {STAGE_BYTES};"));
    o.l("add.u32 %r27, %r27, %r13;");
    o.l(&format!(
        "add.u32 %r28, %r27, {};        // B of the stage",
        BM * BK * 2
    ));
    o.l("add.u32 %r27, %r27, %r35;         // this warpgroup's A rows");
    o.l("// descriptors: (address >> 4), LBO 16 (unused by swizzled K-major), SBO 1024, 128B swizzle");
    o.l("cvt.u64.u32 %rd9, %r27;");
    o.l("shr.u64 %rd9, %rd9, 4;");
    o.l("or.b64 %rd9, %rd9, 0x4000004000010000;");
    o.l("cvt.u64.u32 %rd10, %r28;");
    o.l("shr.u64 %rd10, %rd10, 4;");
    o.l("or.b64 %rd10, %rd10, 0x4000004000010000;");
    o.l("setp.ne.u32 %sd, %r22, 0;         // accumulate except in the first k16 step of a tile");
    o.l("wgmma.fence.sync.aligned;");
    let acc: Vec<String> = (0..128).map(|i| format!("%d{i}")).collect();
    let acc = acc.join(", ");
    for j in 0..BK / 16 {
        if j > 0 {
            o.l("add.u64 %rd9, %rd9, 2;            // +32 bytes: the next k16 inside the swizzled row");
            o.l("add.u64 %rd10, %rd10, 2;");
        }
        let scale_d = if j == 0 { "%sd" } else { "1" };
        o.l(&format!(
            "wgmma.mma_async.sync.aligned.m64n{BN}k16.f32.{ty}.{ty} {{{acc}}}, %rd9, %rd10, {scale_d}, 1, 1, 0, 0;"
        ));
    }
    o.l("wgmma.commit_group.sync.aligned;");
    o.l("setp.eq.u32 %p, %r22, 0;");
    o.l(&format!("@%p bra {};", p("CFIRST")));
    o.l("// the previous stage's group is done: hand that stage back");
    o.l("wgmma.wait_group.sync.aligned 1;");
    o.l("add.u32 %r29, %r16, -1;");
    o.l(&format!("and.b32 %r29, %r29, {};", STAGES - 1));
    o.l("shl.b32 %r29, %r29, 3;");
    o.l("add.u32 %r29, %r29, %r3;");
    o.l("@%leader mbarrier.arrive.shared::cta.b64 _, [%r29];");
    o.label(&p("CFIRST"));
    o.l("add.u32 %r16, %r16, 1;");
    o.l("add.u32 %r22, %r22, 1;");
    o.l("setp.lt.u32 %p, %r22, %r10;");
    o.l(&format!("@%p bra {};", p("CK")));
    o.l("wgmma.wait_group.sync.aligned 0;");
    o.l("add.u32 %r29, %r16, -1;");
    o.l(&format!("and.b32 %r29, %r29, {};", STAGES - 1));
    o.l("shl.b32 %r29, %r29, 3;");
    o.l("add.u32 %r29, %r29, %r3;");
    o.l("@%leader mbarrier.arrive.shared::cta.b64 _, [%r29];");
    o.l(&format!("bra {};", p("EPI")));
    o.label(&p("ZERO"));
    for i in 0..128 {
        o.l(&format!("mov.f32 %d{i}, 0f00000000;"));
    }
    o.label(&p("EPI"));
    epilogue(o, &p("E"));
    o.l("add.u32 %r17, %r17, %r12;");
    o.l(&format!("bra {};", p("CTILE")));
    o.label(&p("CDONE"));
    o.l("ret;");
    o.raw("}\n");
}

/// Stores the 128 accumulators of a consumer thread of tile (m0 = %r20, n0 = %r21).
/// Accumulator i = 4j + 2h + e is element (row + 8h, col + 8j + e).
fn epilogue(o: &mut Out, lbl: &str) {
    o.l("// ---- epilogue: C = alpha*acc (+ beta*C) (+ bias[col]); Y = f(C)");
    o.l("add.u32 %r37, %r20, %r33;         // row of h = 0");
    o.l("add.u32 %r38, %r21, %r34;         // column of j = 0, e = 0");
    for h in 0..2 {
        o.l(&format!("add.u32 %r39, %r37, {};", 8 * h));
        o.l(&format!("setp.lt.u32 %pr{h}, %r39, %r4;"));
        o.l("cvt.u64.u32 %rd11, %r39;");
        o.l(&format!(
            "mul.lo.u64 %rd{}, %rd11, %rd3;     // row offset in C",
            12 + 2 * h
        ));
        o.l(&format!(
            "mul.lo.u64 %rd{}, %rd11, %rd7;     // row offset in Y",
            13 + 2 * h
        ));
    }
    for j in 0..BN / 8 {
        for h in 0..2u32 {
            for e in 0..2u32 {
                let i = 4 * j + 2 * h + e;
                let skip = format!("{lbl}{i}");
                o.l(&format!("add.u32 %r40, %r38, {};", 8 * j + e));
                o.l("setp.lt.u32 %pc, %r40, %r5;");
                o.l(&format!("and.pred %pc, %pc, %pr{h};"));
                o.l(&format!("@!%pc bra {skip};"));
                o.l("cvt.u64.u32 %rd16, %r40;");
                o.l(&format!("mad.lo.u64 %rd17, %rd16, %rd4, %rd{};", 12 + 2 * h));
                o.l("shl.b64 %rd17, %rd17, 2;");
                o.l("add.u64 %rd17, %rd2, %rd17;");
                o.l(&format!("mul.rn.f32 %f3, %f1, %d{i};"));
                o.l("@%hasbeta ld.global.f32 %f4, [%rd17];");
                o.l("@%hasbeta fma.rn.f32 %f3, %f2, %f4, %f3;");
                o.l("shl.b64 %rd18, %rd16, 2;");
                o.l("add.u64 %rd18, %rd5, %rd18;");
                o.l("@%hasbias ld.global.f32 %f5, [%rd18];");
                o.l("@%hasbias add.rn.f32 %f3, %f3, %f5;");
                o.l("st.global.f32 [%rd17], %f3;");
                o.l(&format!("@!%hasy bra {skip};"));
                o.l("call (%f6), nk_act_f, (%f3, %r36);");
                o.l(&format!("mad.lo.u64 %rd19, %rd16, %rd8, %rd{};", 13 + 2 * h));
                o.l("shl.b64 %rd19, %rd19, 2;");
                o.l("add.u64 %rd19, %rd6, %rd19;");
                o.l("st.global.f32 [%rd19], %f6;");
                o.label(&skip);
            }
        }
    }
}
