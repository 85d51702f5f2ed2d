//! The sm_90 instructions: wgmma with its descriptors, swizzles, scales and
//! asynchronous completion, mbarrier phases and transaction counts, bulk tensor
//! copies against the tensor-map model, setmaxnreg, elect.sync — and the planted
//! bugs each must catch (missing wait_group, missing fences, wrong expect-tx,
//! unswizzled data under a swizzled descriptor, reads before the mbarrier wait,
//! a stage overwritten while a wgmma may still read it, deadlocks).

use nnkern_ptx_exec::{bf16, launch, Error, Fault, FaultReport, Memory, Module, Param, Swizzle, TensorMap};

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";

fn module(src: &str) -> Module {
    let src = format!("{HEADER}{src}");
    Module::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn fault<T: std::fmt::Debug>(r: Result<T, Error>) -> FaultReport {
    match r {
        Err(Error::Fault(f)) => *f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// Small exact values: products and sums of 16 of them are exact in f32.
fn val(i: usize, salt: usize) -> f32 {
    ((i * 7 + salt * 3) % 9) as f32 - 4.0
}

// ---------------------------------------------------------------- wgmma from shared (ordinary stores)

/// One warpgroup: copies `pa` (sa bytes) to shared 0 and `pb` (sb bytes) to shared 8192 with
/// 16-byte stores, FENCE, bar.sync, then D (64×8 f32, row-major into pd) = wgmma(descA, descB).
/// PRE runs before the wgmma, MID between the commit and the wait, the accumulators start
/// at 1.0 and SCALED is the scale-d operand.
const WG_SMEM: &str = r#"
.extern .shared .align 1024 .b8 smem[];
.visible .entry wg(.param .u64 pa, .param .u64 pb, .param .u64 pd, .param .u64 da, .param .u64 db,
                   .param .u32 sa, .param .u32 sb)
{
    .reg .pred %p, %sd;
    .reg .b32 %t, %i, %n, %w, %l, %row, %col, %o, %s<4>;
    .reg .b64 %a, %b, %d, %x, %dsa, %dsb;
    .reg .f32 %acc<4>;
    ld.param.u64 %a, [pa];
    ld.param.u64 %b, [pb];
    ld.param.u64 %d, [pd];
    ld.param.u64 %dsa, [da];
    ld.param.u64 %dsb, [db];
    mov.u32 %t, %tid.x;
    ld.param.u32 %n, [sa];
    shl.b32 %i, %t, 4;
LA: setp.ge.u32 %p, %i, %n;
    @%p bra DA;
    cvt.u64.u32 %x, %i;
    add.u64 %x, %x, %a;
    ld.global.v4.b32 {%s0, %s1, %s2, %s3}, [%x];
    st.shared.v4.b32 [%i], {%s0, %s1, %s2, %s3};
    add.u32 %i, %i, 2048;
    bra LA;
DA: ld.param.u32 %n, [sb];
    shl.b32 %i, %t, 4;
LB: setp.ge.u32 %p, %i, %n;
    @%p bra DB;
    cvt.u64.u32 %x, %i;
    add.u64 %x, %x, %b;
    ld.global.v4.b32 {%s0, %s1, %s2, %s3}, [%x];
    add.u32 %o, %i, 8192;
    st.shared.v4.b32 [%o], {%s0, %s1, %s2, %s3};
    add.u32 %i, %i, 2048;
    bra LB;
DB: FENCE
    bar.sync 0;
    mov.f32 %acc0, 0f3F800000;
    mov.f32 %acc1, 0f3F800000;
    mov.f32 %acc2, 0f3F800000;
    mov.f32 %acc3, 0f3F800000;
    setp.ne.u32 %sd, %t, 1000;
    PRE
    wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%acc0, %acc1, %acc2, %acc3}, %dsa, %dsb, SCALED, SCALES, TRANS;
    wgmma.commit_group.sync.aligned;
    MID
    wgmma.wait_group.sync.aligned 0;
    shr.u32 %w, %t, 5;
    and.b32 %l, %t, 31;
    shl.b32 %row, %w, 4;
    shr.u32 %o, %l, 2;
    add.u32 %row, %row, %o;
    and.b32 %col, %l, 3;
    shl.b32 %col, %col, 1;
    mad.lo.u32 %o, %row, 8, %col;
    mul.wide.u32 %x, %o, 4;
    add.u64 %x, %x, %d;
    st.global.f32 [%x], %acc0;
    st.global.f32 [%x+4], %acc1;
    st.global.f32 [%x+256], %acc2;
    st.global.f32 [%x+260], %acc3;
}
"#;

fn wg_src(fence: &str, pre: &str, mid: &str, scaled: &str, scales: &str) -> String {
    WG_SMEM
        .replace("FENCE", fence)
        .replace("PRE", pre)
        .replace("MID", mid)
        .replace("SCALED", scaled)
        .replace("SCALES", scales)
        .replace("TRANS", "0, 0")
}

const GOOD_FENCE: &str = "fence.proxy.async.shared::cta;";

/// The swizzle as the PTX ISA's tables draw it: in each 128-byte row of the (aligned)
/// pattern, 16-byte chunk c of row r moves to c XOR (r mod span/16).
fn isa_swizzle(sw: Swizzle, addr: u32) -> u32 {
    let period = (sw.span() / 16).max(1);
    let (row, chunk) = (addr / 128, (addr % 128) / 16);
    row * 128 + (chunk ^ (row % period)) * 16 + addr % 16
}

fn desc(addr: u32, lbo: u32, sbo: u32, swizzle: u64) -> u64 {
    ((addr as u64 & 0x3ffff) >> 4) | ((lbo as u64 >> 4) << 16) | ((sbo as u64 >> 4) << 32) | (swizzle << 62)
}

/// Lays out A (64×16) and B (16×8, given as Bᵀ 8×16) K-major in `layout` (none: LBO 128,
/// SBO 256 core matrices; 128B: 128-byte rows, 8-row groups 1024 apart, XOR-swizzled).
/// Returns the two byte images and the descriptors for A at 0 and B at 8192.
fn operands(swizzle: Swizzle, store_swizzled: bool) -> (Vec<u8>, Vec<u8>, u64, u64, Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = (0..64 * 16).map(|i| val(i, 1)).collect();
    let bt: Vec<f32> = (0..8 * 16).map(|i| val(i, 2)).collect();
    let place = |rows: usize, m: &[f32], base: u32| -> Vec<u8> {
        let size = match swizzle {
            Swizzle::None => rows * 32,
            _ => rows * 128,
        };
        let mut img = vec![0u8; size];
        for r in 0..rows {
            for k in 0..16 {
                let lin = match swizzle {
                    Swizzle::None => (r / 8) * 256 + (k / 8) * 128 + (r % 8) * 16 + (k % 8) * 2,
                    _ => (r / 8) * 1024 + (r % 8) * 128 + k * 2,
                } as u32;
                let at = if store_swizzled {
                    isa_swizzle(swizzle, base + lin) - base
                } else {
                    lin
                };
                img[at as usize..at as usize + 2].copy_from_slice(&bf16::from_f32(m[r * 16 + k]).to_le_bytes());
            }
        }
        img
    };
    let ia = place(64, &a, 0);
    let ib = place(8, &bt, 8192);
    let (da, db) = match swizzle {
        Swizzle::None => (desc(0, 128, 256, 0), desc(8192, 128, 256, 0)),
        _ => (desc(0, 16, 1024, 1), desc(8192, 16, 1024, 1)),
    };
    (ia, ib, da, db, a, bt)
}

fn want(a: &[f32], bt: &[f32], sign: f32, plus: f32) -> Vec<f32> {
    let mut d = vec![0f32; 64 * 8];
    for r in 0..64 {
        for c in 0..8 {
            d[r * 8 + c] = sign * (0..16).map(|k| a[r * 16 + k] * bt[c * 16 + k]).sum::<f32>() + plus;
        }
    }
    d
}

/// D, A, Bᵀ.
type WgOut = (Vec<f32>, Vec<f32>, Vec<f32>);

fn run_wg(src: &str, swizzle: Swizzle, store_swizzled: bool) -> Result<WgOut, Error> {
    let m = module(src);
    let (ia, ib, da, db, a, bt) = operands(swizzle, store_swizzled);
    let mut mem = Memory::new();
    let (pa, pb, pd) = (mem.alloc_bytes(&ia), mem.alloc_bytes(&ib), mem.alloc(64 * 8 * 4));
    launch(
        &mut mem,
        m.kernel("wg")?,
        (1, 1, 1),
        (128, 1, 1),
        16384,
        &[
            Param::Ptr(pa),
            Param::Ptr(pb),
            Param::Ptr(pd),
            Param::U64(da),
            Param::U64(db),
            Param::U32(ia.len() as u32),
            Param::U32(ib.len() as u32),
        ],
    )?;
    Ok((mem.read_f32(pd)?, a, bt))
}

#[test]
fn wgmma_descriptors_no_swizzle_and_128b_swizzle() {
    for sw in [Swizzle::None, Swizzle::B128] {
        let src = wg_src(GOOD_FENCE, "wgmma.fence.sync.aligned;", "", "%sd", "1, 1");
        let (d, a, bt) = run_wg(&src, sw, true).unwrap();
        assert_eq!(d, want(&a, &bt, 1.0, 1.0), "{sw:?}: D = A·B + D");
        // scale-d false: D = A·B
        let src = wg_src(GOOD_FENCE, "wgmma.fence.sync.aligned;", "", "0", "1, 1");
        let (d, a, bt) = run_wg(&src, sw, true).unwrap();
        assert_eq!(d, want(&a, &bt, 1.0, 0.0), "{sw:?}: scale-d 0");
    }
}

#[test]
fn wgmma_negated_scales() {
    let (ia, _, _, _, a, bt) = operands(Swizzle::B128, true);
    let _ = ia;
    for (scales, sign) in [("-1, 1", -1.0), ("1, -1", -1.0), ("-1, -1", 1.0)] {
        let src = wg_src(GOOD_FENCE, "wgmma.fence.sync.aligned;", "", "%sd", scales);
        let (d, _, _) = run_wg(&src, Swizzle::B128, true).unwrap();
        assert_eq!(d, want(&a, &bt, sign, 1.0), "scales {scales}");
        // a negated scale is not the plain product: a test of the product catches it
        if sign < 0.0 {
            assert_ne!(d, want(&a, &bt, 1.0, 1.0));
        }
    }
}

#[test]
fn unswizzled_data_under_a_swizzled_descriptor_gives_a_wrong_result() {
    let src = wg_src(GOOD_FENCE, "wgmma.fence.sync.aligned;", "", "%sd", "1, 1");
    let (d, a, bt) = run_wg(&src, Swizzle::B128, false).unwrap();
    assert_ne!(d, want(&a, &bt, 1.0, 1.0));
}

#[test]
fn planted_async_bugs_in_wgmma_are_faults() {
    // the accumulators read before wgmma.wait_group
    let src = wg_src(
        GOOD_FENCE,
        "wgmma.fence.sync.aligned;",
        "mov.b32 %o, %acc1;",
        "%sd",
        "1, 1",
    );
    let f = fault(run_wg(&src, Swizzle::B128, true));
    assert!(
        matches!(f.fault, Fault::AsyncOrder(ref m) if m.contains("%acc1") && m.contains("wait_group")),
        "{f}"
    );
    // written before the wait too
    let src = wg_src(
        GOOD_FENCE,
        "wgmma.fence.sync.aligned;",
        "mov.f32 %acc0, 0f00000000;",
        "%sd",
        "1, 1",
    );
    assert!(fault(run_wg(&src, Swizzle::B128, true))
        .to_string()
        .contains("in flight"));
    // no wgmma.fence before the first wgmma
    let src = wg_src(GOOD_FENCE, "", "", "%sd", "1, 1");
    let f = fault(run_wg(&src, Swizzle::B128, true));
    assert!(f.to_string().contains("missing wgmma.fence"), "{f}");
    // accumulators written after the fence
    let src = wg_src(
        GOOD_FENCE,
        "wgmma.fence.sync.aligned; mov.f32 %acc2, 0f00000000;",
        "",
        "%sd",
        "1, 1",
    );
    assert!(fault(run_wg(&src, Swizzle::B128, true))
        .to_string()
        .contains("missing wgmma.fence"));
    // ordinary stores feed the async proxy without fence.proxy.async
    let src = wg_src("", "wgmma.fence.sync.aligned;", "", "%sd", "1, 1");
    let f = fault(run_wg(&src, Swizzle::B128, true));
    assert!(f.to_string().contains("fence.proxy.async"), "{f}");
    // and without a barrier after the stores
    let src = wg_src(GOOD_FENCE, "wgmma.fence.sync.aligned;", "", "%sd", "1, 1").replace("bar.sync 0;", "");
    let f = fault(run_wg(&src, Swizzle::B128, true));
    assert!(
        f.to_string().contains("no barrier") || f.to_string().contains("no thread of this block has written"),
        "{f}"
    );
    // warps of the warpgroup disagree on the descriptor
    let src = wg_src(
        GOOD_FENCE,
        "wgmma.fence.sync.aligned; setp.gt.u32 %p, %t, 63; @%p add.u64 %dsb, %dsb, 2;",
        "",
        "%sd",
        "1, 1",
    );
    let f = fault(run_wg(&src, Swizzle::B128, true));
    assert!(f.to_string().contains("issue different wgmma"), "{f}");
}

/// The canonical layouts of the PTX ISA (its CuTe expressions, 16-bit elements, T = 8),
/// as byte offsets before the swizzle: element (`mn`, `k`) of an operand.
fn canonical(mn_major: bool, sw: Swizzle, lbo: u32, sbo: u32, mn: u32, k: u32) -> u32 {
    let w = sw.span() / 16; // 16-byte chunks per swizzled row
    let (lbo, sbo) = (lbo / 2, sbo / 2); // in elements
    let e = match (mn_major, sw) {
        // ((8,m),(T,2k)):((1T,SBO),(1,LBO))
        (false, Swizzle::None) => (mn % 8) * 8 + (mn / 8) * sbo + (k % 8) + (k / 8) * lbo,
        // ((8,m),(T,2k)):((wT,SBO),(1,T))
        (false, _) => (mn % 8) * 8 * w + (mn / 8) * sbo + k,
        // ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
        (true, Swizzle::None) => (mn % 8) + (mn / 8) * sbo + (k % 8) * 8 + (k / 8) * lbo,
        // ((T,w,m),(8,k)):((1,T,LBO),(wT,SBO))
        (true, _) => (mn % 8) + ((mn / 8) % w) * 8 + (mn / (8 * w)) * lbo + (k % 8) * 8 * w + (k / 8) * sbo,
    };
    2 * e
}

/// (LBO, SBO) for an operand of `rows` (M or N) × 16 (K) in each layout.
fn strides(mn_major: bool, sw: Swizzle, rows: u32) -> (u32, u32) {
    let span = sw.span();
    match (mn_major, sw) {
        (false, Swizzle::None) => (128, 256),
        (false, _) => (16, 8 * span),
        (true, Swizzle::None) => (rows.div_ceil(8) * 128, 128),
        // atoms of 8 K-rows × span bytes: along M/N LBO apart, the next 8 k SBO apart
        (true, _) => (8 * span, rows.div_ceil(span / 2) * 8 * span),
    }
}

#[test]
fn wgmma_every_layout_and_swizzle_with_transposes() {
    let a: Vec<f32> = (0..64 * 16).map(|i| val(i, 3)).collect(); // A[m][k]
    let bt: Vec<f32> = (0..8 * 16).map(|i| val(i, 4)).collect(); // B[k][n] as Bt[n][k]
    let want = want(&a, &bt, 1.0, 1.0);
    for sw in [Swizzle::None, Swizzle::B32, Swizzle::B64, Swizzle::B128] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let image = |m: &[f32], rows: u32, mn_major: bool, base: u32| -> (Vec<u8>, u64) {
                let (lbo, sbo) = strides(mn_major, sw, rows);
                let mut img = vec![0u8; 8192];
                for r in 0..rows {
                    for k in 0..16 {
                        let at = isa_swizzle(sw, base + canonical(mn_major, sw, lbo, sbo, r, k)) - base;
                        let v = bf16::from_f32(m[(r * 16 + k) as usize]);
                        img[at as usize..at as usize + 2].copy_from_slice(&v.to_le_bytes());
                    }
                }
                let code = match sw {
                    Swizzle::None => 0,
                    Swizzle::B128 => 1,
                    Swizzle::B64 => 2,
                    Swizzle::B32 => 3,
                };
                (img, desc(base, lbo, sbo, code))
            };
            let (ia, da) = image(&a, 64, ta, 0);
            let (ib, db) = image(&bt, 8, tb, 8192);
            let src = WG_SMEM
                .replace("FENCE", GOOD_FENCE)
                .replace("PRE", "wgmma.fence.sync.aligned;")
                .replace("MID", "")
                .replace("SCALED", "%sd")
                .replace("SCALES", "1, 1")
                .replace("TRANS", &format!("{}, {}", ta as u32, tb as u32));
            let m = module(&src);
            let mut mem = Memory::new();
            let (pa, pb, pd) = (mem.alloc_bytes(&ia), mem.alloc_bytes(&ib), mem.alloc(64 * 8 * 4));
            launch(
                &mut mem,
                m.kernel("wg").unwrap(),
                (1, 1, 1),
                (128, 1, 1),
                16384,
                &[
                    Param::Ptr(pa),
                    Param::Ptr(pb),
                    Param::Ptr(pd),
                    Param::U64(da),
                    Param::U64(db),
                    Param::U32(8192),
                    Param::U32(8192),
                ],
            )
            .unwrap();
            assert_eq!(mem.read_f32(pd).unwrap(), want, "{sw:?}, trans-a {ta}, trans-b {tb}");
        }
    }
}

/// A from registers: thread (warp w, lane l) holds the m16n8k16-style fragment of rows
/// 16w + l/4 (+8), columns 2(l%4) (+1, +8, +9).
const WG_AREG: &str = r#"
.extern .shared .align 1024 .b8 smem[];
.visible .entry wga(.param .u64 pa, .param .u64 pb, .param .u64 pd, .param .u64 db)
{
    .reg .pred %p;
    .reg .b32 %t, %i, %w, %l, %row, %col, %o, %ra<4>, %s<4>;
    .reg .b64 %a, %b, %d, %x, %dsb;
    .reg .f32 %acc<4>;
    ld.param.u64 %a, [pa];
    ld.param.u64 %b, [pb];
    ld.param.u64 %d, [pd];
    ld.param.u64 %dsb, [db];
    mov.u32 %t, %tid.x;
    mul.wide.u32 %x, %t, 16;
    add.u64 %x, %x, %a;
    ld.global.v4.b32 {%ra0, %ra1, %ra2, %ra3}, [%x];
    setp.lt.u32 %p, %t, 16;
    shl.b32 %i, %t, 4;
    cvt.u64.u32 %x, %i;
    add.u64 %x, %x, %b;
    @%p ld.global.v4.b32 {%s0, %s1, %s2, %s3}, [%x];
    @%p st.shared.v4.b32 [%i], {%s0, %s1, %s2, %s3};
    fence.proxy.async.shared::cta;
    bar.sync 0;
    wgmma.fence.sync.aligned;
    wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%acc0, %acc1, %acc2, %acc3}, {%ra0, %ra1, %ra2, %ra3}, %dsb, 0, 1, 1, 0;
    wgmma.commit_group.sync.aligned;
    MID
    wgmma.wait_group.sync.aligned 0;
    shr.u32 %w, %t, 5;
    and.b32 %l, %t, 31;
    shl.b32 %row, %w, 4;
    shr.u32 %o, %l, 2;
    add.u32 %row, %row, %o;
    and.b32 %col, %l, 3;
    shl.b32 %col, %col, 1;
    mad.lo.u32 %o, %row, 8, %col;
    mul.wide.u32 %x, %o, 4;
    add.u64 %x, %x, %d;
    st.global.f32 [%x], %acc0;
    st.global.f32 [%x+4], %acc1;
    st.global.f32 [%x+256], %acc2;
    st.global.f32 [%x+260], %acc3;
}
"#;

#[test]
fn wgmma_a_from_registers() {
    let a: Vec<f32> = (0..64 * 16).map(|i| val(i, 8)).collect();
    let bt: Vec<f32> = (0..8 * 16).map(|i| val(i, 9)).collect();
    let mut frags = Vec::new();
    for t in 0..128 {
        let (w, l) = (t / 32, t % 32);
        let (g, q) = (l / 4, l % 4);
        for (dr, dc) in [(0, 0), (8, 0), (0, 8), (8, 8)] {
            for e in 0..2 {
                let (r, c) = (16 * w + g + dr, 2 * q + dc + e);
                frags.extend_from_slice(&bf16::from_f32(a[r * 16 + c]).to_le_bytes());
            }
        }
    }
    // B K-major, no swizzle: core matrices (k/8) 128 bytes apart
    let mut ib = vec![0u8; 256];
    for n in 0..8 {
        for k in 0..16 {
            let at = (k / 8) * 128 + n * 16 + (k % 8) * 2;
            ib[at..at + 2].copy_from_slice(&bf16::from_f32(bt[n * 16 + k]).to_le_bytes());
        }
    }
    let run = |mid: &str| -> Result<Vec<f32>, Error> {
        let m = module(&WG_AREG.replace("MID", mid));
        let mut mem = Memory::new();
        let (pa, pb, pd) = (mem.alloc_bytes(&frags), mem.alloc_bytes(&ib), mem.alloc(64 * 8 * 4));
        launch(
            &mut mem,
            m.kernel("wga")?,
            (1, 1, 1),
            (128, 1, 1),
            1024,
            &[
                Param::Ptr(pa),
                Param::Ptr(pb),
                Param::Ptr(pd),
                Param::U64(desc(0, 128, 256, 0)),
            ],
        )?;
        mem.read_f32(pd)
    };
    assert_eq!(run("").unwrap(), want(&a, &bt, 1.0, 0.0));
    // the A registers are in flight until the wait too
    let f = fault(run("mov.b32 %ra2, 0;"));
    assert!(f.to_string().contains("A-fragment"), "{f}");
}

#[test]
fn wgmma_in_flight_at_exit_and_over_arrivals_are_faults() {
    let src = wg_src(GOOD_FENCE, "wgmma.fence.sync.aligned;", "ret;", "%sd", "1, 1");
    let f = fault(run_wg(&src, Swizzle::B128, true));
    assert!(f.to_string().contains("exits with wgmma groups still in flight"), "{f}");
    // an arrival count beyond what the phase still expects
    let src = r#"
.visible .entry k()
{
    .shared .align 8 .b64 bar;
    .reg .pred %p;
    .reg .b32 %t, %b;
    mov.u32 %t, %tid.x;
    mov.u32 %b, bar;
    setp.eq.u32 %p, %t, 0;
    @%p mbarrier.init.shared::cta.b64 [%b], 2;
    bar.sync 0;
    @%p mbarrier.arrive.shared::cta.b64 _, [%b], 3;
}
"#;
    let m = module(src);
    let mut mem = Memory::new();
    let f = fault(launch(&mut mem, m.kernel("k").unwrap(), (1, 1, 1), (32, 1, 1), 0, &[]));
    assert!(f.to_string().contains("more often than its 2 expected arrivals"), "{f}");
}

#[test]
fn unmodelled_sm90_forms_are_parse_errors() {
    let err = |body: &str| match Module::parse(&format!(
        "{HEADER}.visible .entry k()
{{
.reg .b32 %r<4>;
.reg .b64 %rd<4>;
.reg .f32 %f<8>;
{body}
ret;
}}
"
    )) {
        Err(Error::Parse { msg, .. }) => msg,
        other => panic!("expected a parse error, got {other:?}"),
    };
    assert!(err("setmaxnreg.inc.sync.aligned.u32 20;").contains("multiple of 8"));
    assert!(err("setmaxnreg.inc.sync.aligned.u32 %r1;").contains("immediate"));
    assert!(
        err("wgmma.mma_async.sync.aligned.m64n8k32.s32.u8.u8 {%r0, %r1, %r2, %r3}, %rd0, %rd1, 1;").contains("k16")
    );
    assert!(
        err("wgmma.mma_async.sync.aligned.m64n8k16.f16.f16.f16 {%r0, %r1}, %rd0, %rd1, 1, 1, 1, 0, 0;")
            .contains("f32 accumulators")
    );
    assert!(err(
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%f0, %f1, %f2, %f3}, %rd0, %rd1, 1, 2, 1, 0, 0;"
    )
    .contains("imm-scale"));
    assert!(err("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%r0], [%rd0, {%r1, %r2}], [%r3], %r1;")
        .contains("not modelled"));
    assert!(
        err("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r0], [%rd0], 16, [%r3];")
            .contains("not modelled")
    );
    assert!(err("mbarrier.arrive.shared::cluster.b64 _, [%r0];").contains("cluster"));
    let k = format!(
        "{HEADER}.visible .entry k(.param .align 64 .b8 tm[128])\n{{\n.reg .b32 %r<4>;\n\
         cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r0], [tm, {{%r1}}], [%r2];\nret;\n}}\n"
    );
    match Module::parse(&k) {
        Err(Error::Parse { msg, .. }) => assert!(msg.contains("cvta.param"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- mbarrier + bulk tensor copy

/// One warpgroup; thread 0 initialises an mbarrier (count 1), everybody syncs, thread 0
/// arrives with expect-tx TX and copies the box at (c0, c1) of tmap into shared 0; all wait
/// (WAIT), then thread t stores shared word t..(NW step 128) to out.
const TMA: &str = r#"
.extern .shared .align 1024 .b8 smem[];
.visible .entry tma(.param .align 64 .b8 tmap[128], .param .u64 pout, .param .u32 c0, .param .u32 c1,
                    .param .u32 tx, .param .u32 nw)
{
    .shared .align 8 .b64 bar;
    .reg .pred %p, %done;
    .reg .b32 %t, %i, %x, %y, %tx, %v, %n, %b;
    .reg .b64 %out, %a, %tm, %st;
    mov.u32 %t, %tid.x;
    mov.u32 %b, bar;
    setp.eq.u32 %p, %t, 0;
    @%p mbarrier.init.shared::cta.b64 [%b], 1;
    INITFENCE
    bar.sync 0;
    ld.param.u32 %x, [c0];
    ld.param.u32 %y, [c1];
    ld.param.u32 %tx, [tx];
    cvta.param.u64 %tm, tmap;
    @%p mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], %tx;
    @%p cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [smem], [%tm, {%x, %y}], [%b];
WAIT:
    WAITINST
    ld.param.u64 %out, [pout];
    ld.param.u32 %n, [nw];
    mov.u32 %i, %t;
L:  setp.ge.u32 %p, %i, %n;
    @%p bra END;
    shl.b32 %x, %i, 2;
    mov.u32 %v, smem;
    add.u32 %x, %x, %v;
    ld.shared.u32 %v, [%x];
    mul.wide.u32 %a, %i, 4;
    add.u64 %a, %a, %out;
    st.global.u32 [%a], %v;
    add.u32 %i, %i, 128;
    bra L;
END:
    ret;
}
"#;

const WAIT_OK: &str = "mbarrier.try_wait.parity.shared::cta.b64 %done, [%b], 0;\n    @!%done bra WAIT;";

fn tma_src(wait: &str) -> String {
    TMA.replace("WAITINST", wait).replace("INITFENCE", "")
}

/// A 40×50 u16 matrix (values = index), box 8 rows × 64 columns (128 bytes) at (c0, c1).
fn run_tma(src: &str, sw: Swizzle, c: (i32, i32), tx: u32) -> Result<(Vec<u16>, Vec<u16>), Error> {
    let (rows, cols, ld) = (40usize, 50usize, 56usize);
    let g: Vec<u16> = (0..rows * ld).map(|i| i as u16).collect();
    let mut mem = Memory::new();
    let gb = mem.alloc_bytes(&g.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>());
    let map = TensorMap::matrix(gb.addr, 2, rows as u32, cols as u32, ld as u64 * 2, 8, 64, sw);
    let nbytes = 8 * 128;
    let out = mem.alloc(nbytes);
    let m = module(src);
    launch(
        &mut mem,
        m.kernel("tma")?,
        (1, 1, 1),
        (128, 1, 1),
        nbytes as u32,
        &[
            map.param()?,
            Param::Ptr(out),
            Param::U32(c.0 as u32),
            Param::U32(c.1 as u32),
            Param::U32(tx),
            Param::U32(nbytes as u32 / 4),
        ],
    )?;
    let got: Vec<u16> = mem
        .read_bytes(out)?
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    // expected: box element (r, e) at swizzle(r*128 + 2e) (shared offset 0 is 1024-aligned)
    let mut want = vec![0u16; 8 * 64];
    for r in 0..8i32 {
        for e in 0..64i32 {
            let (y, x) = (c.1 + r, c.0 + e);
            let v = if y >= 0 && (y as usize) < rows && x >= 0 && (x as usize) < cols {
                g[y as usize * ld + x as usize]
            } else {
                0
            };
            let at = isa_swizzle(sw, (r * 128 + 2 * e) as u32) as usize / 2;
            want[at] = v;
        }
    }
    Ok((got, want))
}

#[test]
fn bulk_tensor_copy_box_swizzle_and_zero_fill() {
    for sw in [Swizzle::None, Swizzle::B128] {
        for c in [(0, 0), (-3, 35), (10, -5), (-70, 0), (0, 40)] {
            let (got, want) = run_tma(&tma_src(WAIT_OK), sw, c, 1024).unwrap();
            assert_eq!(got, want, "{sw:?} at {c:?}");
        }
    }
    // only warp 0 waits; a bar.sync passes what it observed on to the others
    let warp0 = "setp.ge.u32 %p, %t, 32;\n    @%p bra SYNC;\n    mbarrier.try_wait.parity.shared::cta.b64 %done, [%b], 0;\n    \
                 @!%done bra WAIT;\nSYNC:\n    bar.sync 0;";
    let (got, want) = run_tma(&tma_src(warp0), Swizzle::B128, (5, 3), 1024).unwrap();
    assert_eq!(got, want);
    // without the bar.sync the other warps have not observed the phase
    let f = fault(run_tma(
        &tma_src(&warp0.replace("bar.sync 0;", "")),
        Swizzle::B128,
        (5, 3),
        1024,
    ));
    assert!(f.to_string().contains("without having observed"), "{f}");
    // the generic-address form of the barrier and a test_wait spin also work
    let spin = "cvta.shared.u64 %st, bar;\n    mbarrier.test_wait.parity.b64 %done, [%st], 0;\n    @!%done bra WAIT;";
    let (got, want) = run_tma(&tma_src(spin), Swizzle::B128, (1, 2), 1024).unwrap();
    assert_eq!(got, want);
}

#[test]
fn bulk_tensor_copy_in_three_dimensions() {
    // a 3-D u16 tensor 20 × 6 × 4 (innermost first) with padded strides; box 8 × 3 × 2 at
    // (c0, c1, c2), partly outside; rows of the box (16 bytes) land one after another
    let src = r#"
.extern .shared .align 1024 .b8 smem[];
.visible .entry t3(.param .align 64 .b8 tmap[128], .param .u64 pout, .param .u32 c0, .param .u32 c1, .param .u32 c2)
{
    .shared .align 8 .b64 bar;
    .reg .pred %p, %done;
    .reg .b32 %t, %x, %y, %z, %b, %v, %sm;
    .reg .b64 %out, %a, %tm;
    mov.u32 %t, %tid.x;
    mov.u32 %b, bar;
    mov.u32 %sm, smem;
    cvta.param.u64 %tm, tmap;
    setp.eq.u32 %p, %t, 0;
    @%p mbarrier.init.shared::cta.b64 [%b], 1;
    bar.sync 0;
    ld.param.u32 %x, [c0];
    ld.param.u32 %y, [c1];
    ld.param.u32 %z, [c2];
    @%p mbarrier.arrive.expect_tx.shared::cta.b64 _, [%b], 96;
    @%p cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%sm], [%tm, {%x, %y, %z}], [%b];
W:  mbarrier.try_wait.parity.shared::cta.b64 %done, [%b], 0;
    @!%done bra W;
    setp.ge.u32 %p, %t, 24;
    @%p bra END;
    shl.b32 %x, %t, 2;
    add.u32 %x, %x, %sm;
    ld.shared.u32 %v, [%x];
    ld.param.u64 %out, [pout];
    mul.wide.u32 %a, %t, 4;
    add.u64 %a, %a, %out;
    st.global.u32 [%a], %v;
END:
    ret;
}
"#;
    let (d0, d1, d2) = (20usize, 6usize, 4usize);
    let (s1, s2) = (24usize, 24 * 8usize); // element strides of dims 1, 2 (padded)
    let g: Vec<u16> = (0..s2 * d2).map(|i| i as u16 + 1).collect();
    let m = module(src);
    for c in [(0i32, 0i32, 0i32), (15, 4, 3), (-4, -1, 1)] {
        let mut mem = Memory::new();
        let gb = mem.alloc_bytes(&g.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>());
        let map = TensorMap {
            global_address: gb.addr,
            element_bytes: 2,
            dims: vec![d0 as u32, d1 as u32, d2 as u32],
            strides: vec![s1 as u64 * 2, s2 as u64 * 2],
            box_dims: vec![8, 3, 2],
            element_strides: vec![1, 1, 1],
            swizzle: Swizzle::None,
            oob_nan: false,
        };
        let out = mem.alloc(96);
        launch(
            &mut mem,
            m.kernel("t3").unwrap(),
            (1, 1, 1),
            (32, 1, 1),
            1024,
            &[
                map.param().unwrap(),
                Param::Ptr(out),
                Param::U32(c.0 as u32),
                Param::U32(c.1 as u32),
                Param::U32(c.2 as u32),
            ],
        )
        .unwrap();
        let got: Vec<u16> = mem
            .read_bytes(out)
            .unwrap()
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut want = Vec::new();
        for z in 0..2 {
            for y in 0..3 {
                for x in 0..8 {
                    let (gx, gy, gz) = (c.0 + x, c.1 + y, c.2 + z);
                    let inside =
                        (0..d0 as i32).contains(&gx) && (0..d1 as i32).contains(&gy) && (0..d2 as i32).contains(&gz);
                    want.push(if inside {
                        g[gz as usize * s2 + gy as usize * s1 + gx as usize]
                    } else {
                        0
                    });
                }
            }
        }
        assert_eq!(got, want, "at {c:?}");
    }
}

#[test]
fn wrong_expect_tx_counts_deadlock() {
    // too few or too many bytes expected: the tx-count never returns to zero
    for tx in [1024 - 16, 1024 + 16, 16] {
        let f = fault(run_tma(&tma_src(WAIT_OK), Swizzle::B128, (0, 0), tx));
        match &f.fault {
            Fault::Deadlock(m) => assert!(m.contains("tx-count"), "{m}"),
            other => panic!("tx {tx}: {other:?}"),
        }
    }
    // none expected: the arrival completes the phase before the copy lands, and the
    // waiters then read bytes of the next phase
    let f = fault(run_tma(&tma_src(WAIT_OK), Swizzle::B128, (0, 0), 0));
    assert!(f.to_string().contains("without having observed"), "{f}");
}

#[test]
fn reading_a_copy_before_waiting_on_its_mbarrier_is_a_fault() {
    // no wait at all: thread 1 reads what the copy wrote without having observed the phase
    let f = fault(run_tma(&tma_src(""), Swizzle::B128, (0, 0), 1024));
    assert!(
        matches!(f.fault, Fault::AsyncOrder(ref m) if m.contains("without having observed")),
        "{f}"
    );
    // waiting on the wrong parity: here phase 0 is complete when the threads get there,
    // so parity 1 is the next phase, which never completes
    let wrong = "mbarrier.try_wait.parity.shared::cta.b64 %done, [%b], 1;\n    @!%done bra WAIT;";
    let f = fault(run_tma(&tma_src(wrong), Swizzle::B128, (0, 0), 1024));
    assert!(
        matches!(f.fault, Fault::Deadlock(ref m) if m.contains("phase 1 incomplete")),
        "{f}"
    );
}

#[test]
fn mbarrier_misuse_is_reported() {
    // no barrier between thread 0's init and the other threads' use
    let src = tma_src(WAIT_OK).replace("    bar.sync 0;\n", "");
    let f = fault(run_tma(&src, Swizzle::B128, (0, 0), 1024));
    assert!(f.to_string().contains("initialised with no barrier"), "{f}");
    // an ordinary load of the barrier's bytes
    let src = tma_src(&format!("{WAIT_OK}\n    ld.shared.u32 %v, [%b];"));
    let f = fault(run_tma(&src, Swizzle::B128, (0, 0), 1024));
    assert!(f.to_string().contains("part of an mbarrier"), "{f}");
    // a tensor map that is not one
    let m = module(&tma_src(WAIT_OK));
    let mut mem = Memory::new();
    let out = mem.alloc(4096);
    let r = launch(
        &mut mem,
        m.kernel("tma").unwrap(),
        (1, 1, 1),
        (128, 1, 1),
        1024,
        &[
            Param::Bytes(vec![0; 128]),
            Param::Ptr(out),
            Param::U32(0),
            Param::U32(0),
            Param::U32(1024),
            Param::U32(256),
        ],
    );
    assert!(fault(r).to_string().contains("executor tensor map"));
}

#[test]
fn mbarrier_phases_arrivals_and_deadlock() {
    // two rounds on one barrier of count 2: warp 0 and warp 1 arrive; everyone waits on
    // parity 0 then 1; the state form (arrive's returned phase) works too
    let src = r#"
.visible .entry k(.param .u64 pout, .param .u32 arrivals)
{
    .shared .align 8 .b64 bar;
    .reg .pred %p, %done, %w0;
    .reg .b32 %t, %b, %n, %l;
    .reg .b64 %st, %a;
    mov.u32 %t, %tid.x;
    mov.u32 %b, bar;
    and.b32 %l, %t, 31;
    setp.eq.u32 %p, %t, 0;
    @%p mbarrier.init.shared::cta.b64 [%b], 2;
    bar.sync 0;
    ld.param.u32 %n, [arrivals];
    setp.lt.u32 %w0, %t, %n;
    setp.eq.u32 %p, %l, 0;
    and.pred %p, %p, %w0;
    @%p mbarrier.arrive.shared::cta.b64 %st, [%b];
W0: mbarrier.try_wait.parity.shared::cta.b64 %done, [%b], 0;
    @!%done bra W0;
    @!%p bra SKIP;
    mbarrier.arrive.release.cta.shared::cta.b64 %st, [%b];
W1: mbarrier.try_wait.shared::cta.b64 %done, [%b], %st;
    @!%done bra W1;
SKIP:
    ld.param.u64 %a, [pout];
    mul.wide.u32 %st, %t, 4;
    add.u64 %a, %a, %st;
    st.global.u32 [%a], %t;
}
"#;
    let m = module(src);
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 64);
    launch(
        &mut mem,
        m.kernel("k").unwrap(),
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(out), Param::U32(64)],
    )
    .unwrap();
    assert_eq!(mem.read_u32(out).unwrap(), (0..64).collect::<Vec<u32>>());
    // only warp 0 arrives: phase 0 never completes
    let r = launch(
        &mut mem,
        m.kernel("k").unwrap(),
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(out), Param::U32(32)],
    );
    let f = fault(r);
    match &f.fault {
        Fault::Deadlock(msg) => assert!(msg.contains("1 of 2 arrivals pending"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- copy + wgmma pipeline

/// A (64×64 bf16, row-major) and Bᵀ (8×64) by bulk copies with 128-byte swizzle into shared
/// 0 and 8192, one mbarrier, then four k16 wgmmas with the descriptor start advanced 32
/// bytes each; AFTER runs right after the commit (before the wait).
const PIPE: &str = r#"
.extern .shared .align 1024 .b8 smem[];
.visible .entry pipe(.param .align 64 .b8 ta[128], .param .align 64 .b8 tb[128], .param .u64 pd)
.maxnreg 128
{
    .shared .align 8 .b64 bar;
    .reg .pred %p, %done, %leader;
    .reg .b32 %t, %b, %z, %w, %l, %row, %col, %o, %sa, %sb;
    .reg .b64 %a, %tma, %tmb, %st, %x, %da, %db;
    .reg .f32 %acc<4>;
    mov.u32 %t, %tid.x;
    mov.u32 %b, bar;
    setp.eq.u32 %p, %t, 0;
    @%p mbarrier.init.shared::cta.b64 [%b], 1;
    bar.sync 0;
    SETMAXNREG
    elect.sync %z|%leader, 0xffffffff;
    setp.lt.u32 %p, %t, 32;
    and.pred %p, %p, %leader;
    mov.u32 %z, 0;
    cvta.param.u64 %tma, ta;
    cvta.param.u64 %tmb, tb;
    mov.u32 %sa, smem;
    add.u32 %sb, %sa, 8192;
    @%p mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], TXBYTES;
    @%p cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%sa], [%tma, {%z, %z}], [%b];
    @%p cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%sb], [%tmb, {%z, %z}], [%b];
W:  mbarrier.try_wait.parity.shared::cta.b64 %done, [%b], 0;
    @!%done bra W;
    // descriptors: 128B swizzle, SBO 1024 (64 << 32), LBO 1 (unused)
    cvt.u64.u32 %da, %sa;
    shr.u64 %da, %da, 4;
    or.b64 %da, %da, 0x4000004000010000;
    cvt.u64.u32 %db, %sb;
    shr.u64 %db, %db, 4;
    or.b64 %db, %db, 0x4000004000010000;
    wgmma.fence.sync.aligned;
    wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%acc0, %acc1, %acc2, %acc3}, %da, %db, 0, 1, 1, 0, 0;
    add.u64 %da, %da, 2;
    add.u64 %db, %db, 2;
    wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%acc0, %acc1, %acc2, %acc3}, %da, %db, 1, 1, 1, 0, 0;
    add.u64 %da, %da, 2;
    add.u64 %db, %db, 2;
    wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%acc0, %acc1, %acc2, %acc3}, %da, %db, 1, 1, 1, 0, 0;
    add.u64 %da, %da, 2;
    add.u64 %db, %db, 2;
    wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%acc0, %acc1, %acc2, %acc3}, %da, %db, 1, 1, 1, 0, 0;
    wgmma.commit_group.sync.aligned;
    AFTER
    wgmma.wait_group.sync.aligned 0;
    shr.u32 %w, %t, 5;
    and.b32 %w, %w, 3;
    and.b32 %l, %t, 31;
    shl.b32 %row, %w, 4;
    shr.u32 %o, %l, 2;
    add.u32 %row, %row, %o;
    and.b32 %col, %l, 3;
    shl.b32 %col, %col, 1;
    mad.lo.u32 %o, %row, 8, %col;
    mul.wide.u32 %x, %o, 4;
    ld.param.u64 %a, [pd];
    add.u64 %x, %x, %a;
    st.global.f32 [%x], %acc0;
    st.global.f32 [%x+4], %acc1;
    st.global.f32 [%x+256], %acc2;
    st.global.f32 [%x+260], %acc3;
}
"#;

fn pipe_src(after: &str, setmaxnreg: &str, tx: u32) -> String {
    PIPE.replace("AFTER", after)
        .replace("SETMAXNREG", setmaxnreg)
        .replace("TXBYTES", &tx.to_string())
}

fn run_pipe(src: &str, sw_a: Swizzle, threads: u32) -> Result<(Vec<f32>, Vec<f32>), Error> {
    let a: Vec<f32> = (0..64 * 64).map(|i| val(i, 5) / 4.0).collect();
    let bt: Vec<f32> = (0..8 * 64).map(|i| val(i, 6) / 4.0).collect();
    let mut mem = Memory::new();
    let enc = |v: &[f32]| {
        v.iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let (ga, gb) = (mem.alloc_bytes(&enc(&a)), mem.alloc_bytes(&enc(&bt)));
    let ma = TensorMap::matrix(ga.addr, 2, 64, 64, 128, 64, 64, sw_a);
    let mb = TensorMap::matrix(gb.addr, 2, 8, 64, 128, 8, 64, Swizzle::B128);
    let pd = mem.alloc(64 * 8 * 4);
    let m = module(src);
    launch(
        &mut mem,
        m.kernel("pipe")?,
        (1, 1, 1),
        (threads, 1, 1),
        16384,
        &[ma.param()?, mb.param()?, Param::Ptr(pd)],
    )?;
    let mut want = vec![0f32; 64 * 8];
    for r in 0..64 {
        for c in 0..8 {
            want[r * 8 + c] = (0..64).map(|k| a[r * 64 + k] * bt[c * 64 + k]).sum();
        }
    }
    Ok((mem.read_f32(pd)?, want))
}

const TX: u32 = 64 * 128 + 8 * 128;

#[test]
fn bulk_copies_feed_wgmma_through_an_mbarrier() {
    let (got, want) = run_pipe(&pipe_src("", "", TX), Swizzle::B128, 128).unwrap();
    assert_eq!(got, want);
    // the copy of A unswizzled while the descriptor says 128B: wrong result
    let (got, want) = run_pipe(&pipe_src("", "", TX), Swizzle::None, 128).unwrap();
    assert_ne!(got, want);
}

#[test]
fn overwriting_a_stage_a_wgmma_may_still_read_is_a_fault() {
    let again = "@%p mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], 8192;\n    \
                 @%p cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%sa], [%tma, {%z, %z}], [%b];";
    let f = fault(run_pipe(&pipe_src(again, "", TX), Swizzle::B128, 128));
    assert!(f.to_string().contains("may still be reading"), "{f}");
    // after wgmma.wait_group 0 the same copy is fine (the copying thread retired the group itself)
    let src = pipe_src("", "", TX).replace(
        "    shr.u32 %w, %t, 5;",
        &format!("    {}\n    shr.u32 %w, %t, 5;", again),
    );
    run_pipe(&src, Swizzle::B128, 128).unwrap();
    // ... but not with a second warpgroup reading the same stage: its retirement never
    // reached the copying thread
    let f = fault(run_pipe(&src, Swizzle::B128, 256));
    assert!(
        f.to_string().contains("warpgroup 1") && f.to_string().contains("may still be reading"),
        "{f}"
    );
}

#[test]
fn setmaxnreg_moves_registers_between_warpgroups() {
    // two warpgroups: the second gives registers up, the first takes them
    let moves = "setp.lt.u32 %p, %t, 128;\n    @%p bra INC;\n    setmaxnreg.dec.sync.aligned.u32 40;\n    bra DONE;\n\
                 INC:\n    setmaxnreg.inc.sync.aligned.u32 216;\nDONE:";
    let (got, want) = run_pipe(&pipe_src("", moves, TX), Swizzle::B128, 256).unwrap_or_else(|e| panic!("{e}"));
    // both warpgroups compute the same tile and store it to the same place
    assert_eq!(got, want);
    // taking more than was given: the first warpgroup waits for registers forever
    let greedy = moves.replace("216", "224");
    let f = fault(run_pipe(&pipe_src("", &greedy, TX), Swizzle::B128, 256));
    assert!(
        matches!(f.fault, Fault::Deadlock(ref m) if m.contains("224 registers")),
        "{f}"
    );
    // .inc below the current count
    let wrong = moves.replace("216", "120");
    let f = fault(run_pipe(&pipe_src("", &wrong, TX), Swizzle::B128, 256));
    assert!(f.to_string().contains("setmaxnreg.inc 120 with 128"), "{f}");
    // no .maxnreg at entry
    let src = pipe_src("", moves, TX).replace(".maxnreg 128\n", "");
    let f = fault(run_pipe(&src, Swizzle::B128, 256));
    assert!(f.to_string().contains(".maxnreg"), "{f}");
}

#[test]
fn elect_sync_picks_the_lowest_member() {
    let src = r#"
.visible .entry k(.param .u64 pout)
{
    .reg .pred %p;
    .reg .b32 %t, %d, %v;
    .reg .b64 %a, %o;
    mov.u32 %t, %tid.x;
    setp.ge.u32 %p, %t, 5;
    @!%p bra END;
    elect.sync %d|%p, 0xffffffe0;
    selp.u32 %v, 1000, 0, %p;
    add.u32 %v, %v, %d;
    ld.param.u64 %a, [pout];
    mul.wide.u32 %o, %t, 4;
    add.u64 %a, %a, %o;
    st.global.u32 [%a], %v;
END:
    ret;
}
"#;
    let m = module(src);
    let mut mem = Memory::new();
    let out = mem.alloc_u32(&[7; 32]);
    launch(
        &mut mem,
        m.kernel("k").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(out)],
    )
    .unwrap();
    let got = mem.read_u32(out).unwrap();
    assert_eq!(&got[..5], &[7; 5]);
    assert_eq!(got[5], 1005);
    assert!(got[6..].iter().all(|&v| v == 5), "{got:?}");
    // a member mask naming lanes that do not take part
    let bad = src.replace("0xffffffe0", "0xffffffff");
    let m = module(&bad);
    let r = launch(
        &mut mem,
        m.kernel("k").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(out)],
    );
    assert!(matches!(fault(r).fault, Fault::Diverged(_)));
}

#[test]
fn tensor_map_encoding_is_checked() {
    let ok = TensorMap::matrix(0x1000, 2, 10, 64, 128, 8, 64, Swizzle::B128);
    assert!(ok.encode().is_ok());
    let mut m = ok.clone();
    m.strides[0] = 120;
    assert!(m.encode().unwrap_err().contains("multiple of 16"));
    let mut m = ok.clone();
    m.box_dims[1] = 257;
    assert!(m.encode().is_err());
    let mut m = ok.clone();
    m.box_dims[0] = 32;
    assert!(m.encode().unwrap_err().contains("swizzle"));
    let mut m = ok;
    m.global_address = 0x1008;
    assert!(m.encode().is_err());
}
