//! The register-tiled microkernel, written once over the crate's SIMD
//! trait ([`Simd`], the one the element-wise kernels use) and stamped out
//! per ISA and per tile shape, plus `asm!` k loops for the full tiles of
//! the two x86 ISAs.
//!
//! Tile: `M` rows of C (1..=MR, a compile-time constant, so edge tiles run
//! the same unrolled code with fewer rows) by `NV` vectors of columns
//! (1..=NV_MAX); the last vector is masked when the tile is narrower, so
//! edge tiles never leave the kernel path. Per step of k, the kernel loads
//! `NV` vectors of B (row `p`, contiguous columns) and broadcasts `M`
//! elements of A (any row and column strides: packed panels or the caller's
//! memory), and issues `M·NV` FMAs into accumulators that stay in registers.
//! k is unrolled by 4 (in place with more than 7 rows it is not: see
//! `k_loop`); a packed A panel is prefetched ~10 steps ahead; C's rows are
//! prefetched before a loop of 64 steps or more.
//!
//! | ISA | MR × NR (lanes × NV) | accumulators |
//! |---|---|---|
//! | AVX-512F | 14 × 32 (16 × 2) | 28 of 32 zmm |
//! | AVX2+FMA | 6 × 16 (8 × 2)   | 12 of 16 ymm |
//! | NEON     | 8 × 12 (4 × 3)   | 24 of 32 q   |
//! | scalar   | 4 × 8 (1 × 8)    | 32 f32       |
//!
//! The inner loops (read with `objdump -d` on the release build). AVX2, a
//! full 6 × 16 tile with a packed A panel (`avx2::k_loop_asm`; `a` = A
//! panel, `b` = B row, `rsb` its stride in bytes), per step of k, four
//! steps per iteration:
//!
//! ```text
//! prefetcht0   [a+0x100]                      ; (and [a+0x140] in step 2)
//! vmovups      ymm0, [b]         ; vmovups ymm1, [b+0x20]   ; next rows: b+rsb, b+2rsb, b+3rsb
//! vbroadcastss ymm2, [a]         ; vbroadcastss ymm3, [a+0x4]
//! vfmadd231ps  ymm4, ymm2, ymm0  ; ymm5 += ymm2·ymm1 ; ymm6 += ymm3·ymm0 ; ymm7 += ymm3·ymm1
//! ... rows 2–3 into ymm8–11, rows 4–5 into ymm12–15 (a+0x8 .. a+0x14)
//! add a, 0x60 ; lea b, [b+4·rsb] ; dec ; jnz   (once per four steps)
//! ```
//!
//! 2 loads of B, 6 broadcasts from memory, 12 FMAs per step, no spills.
//! The intrinsics loop compiles to the same instructions with one
//! broadcast register and the step's B address from a pointer add; it is
//! kept as the portable/reference path (edge tiles, A in place, other
//! ISAs), but its register allocation is the compiler's: an equivalent
//! source change (where the prefetches sat in the group) once made it spill
//! two accumulators to the stack and run at 68% of peak instead of 91%,
//! which the `asm!` loop cannot. AVX-512, a full 14 × 32 tile
//! (`avx512::k_loop_asm`): the same shape with zmm0–1 for B, zmm2/zmm3
//! alternating broadcasts, zmm4–31 the 28 accumulators, one prefetch of A
//! 576 bytes ahead per step: 2 loads, 14 broadcasts, 28 FMAs per step. Both
//! give the intrinsics loop's bits exactly (same FMAs, same order).
//! Measured alone (full tiles on L1-resident panels, `cargo bench --bench
//! gemm_impls`, an Intel Sapphire/Emerald-Rapids class core shared with
//! other work): AVX2 87–91% of the measured ymm FMA peak at k = 256–512,
//! AVX-512 95–96% of the zmm peak at k = 256.
//!
//! C is written once per tile: `alpha·acc + beta·C`, and C is not read at
//! all when `beta == 0`. Rows of C with unit column stride use vector loads
//! and stores, the last vector of an edge tile masked (on AVX2 its store is
//! split into plain stores of 4, 2 and 1 floats: `vmaskmovps` stores are
//! slow there); any other layout goes element by element.

use crate::simd::vector::Simd;
use std::cell::Cell;

/// One call of the microkernel. Element `(i, p)` of A is at
/// `a[i·rsa + p·csa]`, element `(p, j)` of B at `b[p·rsb + j]`, element
/// `(i, j)` of C at `c[i·rsc + j·csc]`.
///
/// The caller guarantees that for `i < m`, `p < k`, `j < n` those addresses
/// are valid, and that `m` and `n` match the kernel's `M` and `NV`
/// (`(NV-1)·LANES < n <= NV·LANES`).
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    pub k: usize,
    pub a: *const f32,
    pub rsa: isize,
    pub csa: isize,
    pub b: *const f32,
    pub rsb: isize,
    pub c: *mut f32,
    pub rsc: isize,
    pub csc: isize,
    pub n: usize,
    pub alpha: f32,
    pub beta: f32,
}

/// A microkernel for one tile shape.
pub(crate) type TileFn = unsafe fn(&Tile);

/// Builds the table `[[[TileFn; NV_MAX]; MR]; 2]` (index 0: A read in place,
/// 1: A packed) from an ISA's generic tile wrapper.
macro_rules! tile_table {
    ($f:ident, $mr:literal; [$($m:literal)+]; $nvs:tt) => {
        [
            [$(tile_table!(@row $f, $mr, false, $m, $nvs)),+],
            [$(tile_table!(@row $f, $mr, true, $m, $nvs)),+],
        ]
    };
    (@row $f:ident, $mr:literal, $packed:literal, $m:literal, [$($nv:literal)+]) => {
        [$($f::<$m, $nv, $packed, $mr> as TileFn),+]
    };
}

/// The microkernels of one ISA, their tile geometry and derived blocking.
#[derive(Clone, Copy)]
pub(crate) struct KernelSet {
    /// Most rows per tile.
    pub mr: usize,
    /// f32 lanes per vector.
    pub lanes: usize,
    /// Most vectors per tile row.
    pub nv_max: usize,
    /// `select(packed_a, m - 1, nv - 1)`: the kernel of that tile shape.
    pub select: fn(usize, usize, usize) -> TileFn,
}

impl KernelSet {
    /// Most columns per tile.
    pub fn nr(&self) -> usize {
        self.lanes * self.nv_max
    }

    /// The kernel for an `m × n` tile (`1 <= m <= mr`, `1 <= n <= nr`),
    /// for A packed (strides `(1, mr)`) or read in place (any strides).
    pub fn tile(&self, m: usize, n: usize, packed_a: bool) -> TileFn {
        debug_assert!((1..=self.mr).contains(&m) && (1..=self.nr()).contains(&n));
        let nv = n.div_ceil(self.lanes);
        (self.select)(usize::from(packed_a), m - 1, nv - 1)
    }
}

/// The implementations of a full tile's k loop (the `asm!` loops of the x86
/// kernels and the intrinsics loop every ISA has).
// Only the test hooks pick `Asm` explicitly (it is the default).
#[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelImpl {
    /// The hand-written `asm!` loop where the ISA has one (AVX2 6 × 16,
    /// AVX-512 14 × 32, packed A, full width), else the intrinsics loop.
    Asm,
    /// The loop written over the crate's SIMD trait (the portable/reference form).
    Intrinsics,
}

thread_local! {
    static FORCED_IMPL: Cell<Option<KernelImpl>> = const { Cell::new(None) };
}

/// Forces the full-tile implementation for tiles computed on this thread
/// (`None`: the default, [`KernelImpl::Asm`]). Helper threads of a split
/// product keep the default; both implementations give the same bits.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn force_impl(v: Option<KernelImpl>) {
    FORCED_IMPL.with(|f| f.set(v));
}

/// Whether a full tile on this thread takes the `asm!` loop.
#[cfg(target_arch = "x86_64")]
#[inline]
fn asm_enabled() -> bool {
    FORCED_IMPL.with(|f| f.get()) != Some(KernelImpl::Intrinsics)
}

/// Runs `calls` full register tiles of `ks` (packed A panel, B rows of
/// NR floats, both aligned, k steps) into one C tile kept in L1, with the
/// implementation `imp` forced: the microkernel alone, for benchmarks.
///
/// # Safety
/// `ks` must be the kernel set of an ISA this CPU runs.
#[cfg(any(test, feature = "testing"))]
pub(crate) unsafe fn run_full_tiles(ks: &KernelSet, imp: KernelImpl, k: usize, calls: usize) {
    let (mr, nr) = (ks.mr, ks.nr());
    let mut a = super::pack::Scratch::new();
    let mut b = super::pack::Scratch::new();
    let (Some(pa), Some(pb)) = (a.get(mr * k.max(1)), b.get(nr * k.max(1))) else {
        return; // no memory for the benchmark's panels
    };
    for i in 0..mr * k {
        // SAFETY: inside the mr·k floats just obtained.
        unsafe { *pa.add(i) = (i % 7) as f32 * 0.125 - 0.375 };
    }
    for i in 0..nr * k {
        // SAFETY: inside the nr·k floats just obtained.
        unsafe { *pb.add(i) = (i % 5) as f32 * 0.25 - 0.5 };
    }
    let mut c = vec![0.0f32; mr * nr];
    let tile = Tile {
        k,
        a: pa,
        rsa: 1,
        csa: mr as isize,
        b: pb,
        rsb: nr as isize,
        c: c.as_mut_ptr(),
        rsc: nr as isize,
        csc: 1,
        n: nr,
        alpha: 1.0,
        beta: 1.0,
    };
    let f = ks.tile(mr, nr, true);
    force_impl(Some(imp));
    for _ in 0..calls {
        // SAFETY: a full tile over the buffers above (A: mr × k packed, B:
        // k rows of nr, C: mr × nr); `ks` runs on this CPU (the caller's
        // contract).
        unsafe { f(std::hint::black_box(&tile)) };
    }
    force_impl(None);
    std::hint::black_box(&c);
}

/// The kernel set of `isa` (the portable one for ISAs of another
/// architecture), as the driver's table maps them.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn kernel_set(isa: crate::simd::Isa) -> &'static KernelSet {
    use crate::simd::Isa;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &avx512::KERNELS,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::KERNELS,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &neon::KERNELS,
        _ => &scalar::KERNELS,
    }
}

/// The tile body. Inlined into a per-ISA function compiled with that ISA's
/// target features, so every `S` method becomes one instruction.
///
/// # Safety
/// `t` must satisfy the contract of [`Tile`] for `m = M`; `s` proves the CPU
/// runs `S`'s instructions and the caller is compiled with them.
#[inline(always)]
unsafe fn tile_body<S: Simd, const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(s: S, t: &Tile) {
    let last = t.n - (NV - 1) * S::LANES;
    // 1 <= last <= LANES by the contract on `n`.
    let mask = s.tail(last);
    let masked = last != S::LANES;
    prefetch_c::<S, M>(s, t);
    // SAFETY: the `Tile` contract of the caller, passed on unchanged.
    let acc = unsafe {
        if masked {
            k_loop::<S, M, NV, true, PACKED_A, MR>(s, t, mask)
        } else {
            k_loop::<S, M, NV, false, PACKED_A, MR>(s, t, mask)
        }
    };
    // SAFETY: C addresses are valid for i < M, j < n by the contract.
    unsafe { store_tile::<S, M, NV>(s, t, &acc, mask, masked) };
}

/// Starts fetching the C tile (first and last element of each row), so its
/// lines are in L1 when the tile is stored after a long k loop.
#[inline(always)]
fn prefetch_c<S: Simd, const M: usize>(s: S, t: &Tile) {
    if t.csc == 1 && t.k >= 64 {
        for i in 0..M {
            let row = t.c.wrapping_offset(i as isize * t.rsc);
            s.prefetch(row);
            s.prefetch(row.wrapping_add(t.n - 1));
        }
    }
}

/// Bytes a packed A panel of `mr` rows is prefetched ahead of the k step
/// being computed: about ten steps, in whole cache lines (256 for the
/// 6-row AVX2 panel, 576 for the 14-row AVX-512 one); L2 latency is
/// ~15 cycles, ten steps are 60 (AVX2) to 140 (AVX-512) cycles.
const fn a_prefetch_distance(mr: usize) -> usize {
    (mr * 4 * 10).div_ceil(64) * 64
}

/// Loop-invariant addressing of A for one tile: packed panels use the
/// compile-time strides `(1, MR)`; in place, row `i` is reached from one of
/// two moving bases (rows 0..7 and 7..14) plus a loop-invariant byte offset
/// that x86 folds into the address (0, R, 2R, 3R, 4R, 5R, 6R from R, 3R and
/// 5R), so the rows cost no chain of dependent adds per step of k.
#[derive(Clone, Copy)]
struct ARows {
    rb: isize,
    rb3: isize,
    rb5: isize,
}

impl ARows {
    #[inline(always)]
    fn new(rsa: isize) -> Self {
        // Wrapping: only the offsets of rows below M are used, and those are
        // inside A; the others may be out of range for a huge row stride.
        let rb = rsa.wrapping_mul(4);
        ARows {
            rb,
            rb3: rb.wrapping_mul(3),
            rb5: rb.wrapping_mul(5),
        }
    }
    #[inline(always)]
    fn offset(self, i: usize) -> isize {
        match i % 7 {
            0 => 0,
            1 => self.rb,
            2 => self.rb.wrapping_mul(2),
            3 => self.rb3,
            4 => self.rb.wrapping_mul(4),
            5 => self.rb5,
            _ => self.rb3.wrapping_mul(2),
        }
    }
}

/// One step of k: NV loads of B row `p` (at `b`), M broadcasts of A column
/// `p`, M·NV FMAs. Packed A: the column is at `a + q·MR`, `q` the step's
/// index inside an unrolled group (a constant once unrolled, so no add per
/// step); in place: rows at `a` / `a7` plus [`ARows`] offsets.
///
/// # Safety
/// The addresses named must be readable (the `Tile` contract).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn step<S: Simd, const M: usize, const NV: usize, const MASKED: bool, const PACKED_A: bool, const MR: usize>(
    s: S,
    acc: &mut [[S::V; NV]; M],
    a: *const f32,
    a7: *const f32,
    rows: ARows,
    q: usize,
    b: *const f32,
    mask: S::Tail,
) {
    // SAFETY: the caller's contract; the last B vector is masked to the
    // tile's width when narrower.
    unsafe {
        let mut bv = [s.splat(0.0); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = if MASKED && v == NV - 1 {
                s.load_masked(b.add(v * S::LANES), mask)
            } else {
                s.load(b.add(v * S::LANES))
            };
        }
        // Opaque copies stop the compiler from rewriting the row addresses
        // back into a chain of adds (loop strength reduction).
        let (a_row, a7_row) = if PACKED_A { (a, a7) } else { (opaque(a), opaque(a7)) };
        for (i, row) in acc.iter_mut().enumerate() {
            let av = if PACKED_A {
                s.broadcast(a.add(q * MR + i))
            } else {
                let base = if i < 7 { a_row } else { a7_row };
                s.broadcast(base.byte_offset(rows.offset(i)))
            };
            for (x, bx) in row.iter_mut().zip(bv.iter()) {
                *x = s.madd(av, *bx, *x);
            }
        }
    }
}

/// The k loop of one tile, unrolled by 4.
///
/// # Safety
/// The `Tile` contract for `m = M`.
#[inline(always)]
unsafe fn k_loop<
    S: Simd,
    const M: usize,
    const NV: usize,
    const MASKED: bool,
    const PACKED_A: bool,
    const MR: usize,
>(
    s: S,
    t: &Tile,
    mask: S::Tail,
) -> [[S::V; NV]; M] {
    // SAFETY (whole body): every A read is at (i, p) with i < M = m, p < k,
    // every B read at (p, j) with j < n; valid by the `Tile` contract.
    // Prefetches never fault.
    unsafe {
        let mut acc = [[s.splat(0.0); NV]; M];
        let (mut a, mut b) = (t.a, t.b);
        let (rsa, csa) = if PACKED_A { (1, MR as isize) } else { (t.rsa, t.csa) };
        let rows = ARows::new(rsa);
        let mut a7 = a.wrapping_offset(rsa.wrapping_mul(7));
        // The pointers advance with wrapping arithmetic: after the last step
        // they point one step past the operands (never dereferenced), which
        // `offset`/`add` would make undefined behaviour.
        // k unrolled by 4; not in place with more than 7 rows, where the
        // second row base leaves too few registers and the compiler, free to
        // interleave the unrolled steps, spills accumulators (AVX-512: 28
        // accumulators, 2 B vectors, 1 broadcast of 32 registers).
        const UNROLL: usize = 4;
        let unroll = if PACKED_A || M < 7 { UNROLL } else { 1 };
        if PACKED_A {
            // A packed panel streams from L2: at the top of each group,
            // prefetch the lines it will need ~10 steps on, one per 64 bytes
            // the group consumes (2 for AVX2's 96 bytes, 4 for AVX-512's 224).
            let pf_lines = (UNROLL * MR * 4).div_ceil(64);
            let pf_dist = a_prefetch_distance(MR);
            for _ in 0..t.k / UNROLL {
                for l in 0..pf_lines {
                    s.prefetch(a.byte_add(pf_dist + 64 * l));
                }
                for q in 0..UNROLL {
                    step::<S, M, NV, MASKED, PACKED_A, MR>(s, &mut acc, a, a7, rows, q, b, mask);
                    b = b.wrapping_offset(t.rsb);
                }
                a = a.wrapping_add(UNROLL * MR);
            }
        } else {
            for _ in 0..t.k / unroll {
                for _ in 0..unroll {
                    step::<S, M, NV, MASKED, PACKED_A, MR>(s, &mut acc, a, a7, rows, 0, b, mask);
                    a = a.wrapping_offset(csa);
                    a7 = a7.wrapping_offset(csa);
                    b = b.wrapping_offset(t.rsb);
                }
            }
        }
        for _ in 0..t.k % unroll {
            step::<S, M, NV, MASKED, PACKED_A, MR>(s, &mut acc, a, a7, rows, 0, b, mask);
            a = a.wrapping_offset(csa);
            a7 = a7.wrapping_offset(csa);
            b = b.wrapping_offset(t.rsb);
        }
        acc
    }
}

/// `p`, hidden from the optimiser's analysis of how it was computed.
#[inline(always)]
fn opaque(p: *const f32) -> *const f32 {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[allow(clippy::pointers_in_nomem_asm_block)] // the asm never dereferences it
    {
        let mut p = p;
        // SAFETY: an empty instruction sequence; it only launders the value.
        unsafe { std::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack, preserves_flags)) };
        p
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        std::hint::black_box(p)
    }
}

/// Floats of the largest register tile of any kernel set (14 × 32).
const TILE_FLOATS_MAX: usize = 448;

/// Writes `alpha·acc + beta·C` (C not read when `beta = 0`) to the tile's C.
/// With a unit column stride the rows are vector stores straight from the
/// registers; otherwise the tile goes through a stack buffer to
/// [`store_strided`], a separate function, so that the contiguous path
/// keeps the accumulators in registers (inlined together, the compiler
/// saved all of them to the stack before either path: on a Zen 4 core that
/// cost a (32,10,500) product a fifth of its speed). Where `alpha = 1` the
/// product `acc·alpha` is `acc` itself (exact: the accumulators are FMA
/// results, quiet NaNs included), so it is skipped.
///
/// # Safety
/// C addresses are valid for i < M, j < `t.n` by the `Tile` contract;
/// `mask` selects the lanes of the last vector inside C where `masked`.
#[inline(always)]
unsafe fn store_tile<S: Simd, const M: usize, const NV: usize>(
    s: S,
    t: &Tile,
    acc: &[[S::V; NV]; M],
    mask: S::Tail,
    masked: bool,
) {
    const { assert!(M * NV * S::LANES <= TILE_FLOATS_MAX) };
    let alpha = s.splat(t.alpha);
    let unit = t.alpha == 1.0;
    let scale = |x: S::V| if unit { x } else { s.mul(x, alpha) };
    // SAFETY (whole body): writes and reads of C are at (i, j) with i < M,
    // j < n (vector stores of the last vector masked to the tile's width),
    // valid by the `Tile` contract; `vals` holds M·NV vectors (checked above).
    unsafe {
        if t.csc == 1 {
            let read_c = t.beta != 0.0;
            let beta = s.splat(t.beta);
            for (i, row) in acc.iter().enumerate() {
                let crow = t.c.offset(i as isize * t.rsc);
                for (v, x) in row.iter().enumerate() {
                    let p = crow.add(v * S::LANES);
                    let r = scale(*x);
                    if masked && v == NV - 1 {
                        let r = if read_c {
                            s.madd(s.load_masked(p, mask), beta, r)
                        } else {
                            r
                        };
                        s.store_masked(p, r, mask);
                    } else {
                        let r = if read_c { s.madd(s.load(p), beta, r) } else { r };
                        s.store(p, r);
                    }
                }
            }
        } else {
            // Not zeroed: every float `store_strided` reads is written here.
            let mut vals = std::mem::MaybeUninit::<[f32; TILE_FLOATS_MAX]>::uninit();
            let base = vals.as_mut_ptr().cast::<f32>();
            for (i, row) in acc.iter().enumerate() {
                for (v, x) in row.iter().enumerate() {
                    let r = scale(*x);
                    s.store(base.add((i * NV + v) * S::LANES), r);
                }
            }
            store_strided::<S, M, NV>(t, base);
        }
    }
}

/// `C(i, j) = vals[i·NV·LANES + j]` (plus `beta·C(i, j)` where `beta ≠ 0`)
/// for `i < M`, `j < t.n`, one element at a time along C's strides; where
/// C is transposed (`rsc = 1`) and not read, column by column, each the M
/// contiguous floats of one row of C. Generic over the tile (no vector
/// types cross into it), so its loops unroll as they did inlined.
///
/// # Safety
/// C addresses are valid for i < M, j < `t.n` by the `Tile` contract, and
/// `(NV − 1)·LANES < t.n ≤ NV·LANES`, `M·NV·LANES ≤ TILE_FLOATS_MAX`.
#[inline(never)]
unsafe fn store_strided<S: Simd, const M: usize, const NV: usize>(t: &Tile, vals: *const f32) {
    let read_c = t.beta != 0.0;
    if t.rsc == 1 && !read_c {
        // C transposed (the Cᵀ orientation): each column of the tile is M
        // contiguous floats of C.
        for j in 0..t.n {
            // SAFETY: column j < t.n of the tile is inside C, its M rows
            // contiguous (rsc = 1); vals[i·NV·LANES + j] was written for
            // i < M (the caller's contract).
            unsafe {
                let col = t.c.offset(j as isize * t.csc);
                for i in 0..M {
                    *col.add(i) = *vals.add(i * NV * S::LANES + j);
                }
            }
        }
        return;
    }
    let last = t.n - (NV - 1) * S::LANES;
    for i in 0..M {
        let crow = t.c.wrapping_offset(i as isize * t.rsc);
        for v in 0..NV {
            let lanes = if v == NV - 1 { last } else { S::LANES };
            let at = (i * NV + v) * S::LANES;
            for l in 0..lanes {
                // SAFETY: (i, j) with i < M, j = v·LANES + l < t.n is
                // inside C, and `vals[at + l]` was written (the caller's
                // contract).
                unsafe {
                    let r = *vals.add(at + l);
                    let p = crow.offset((v * S::LANES + l) as isize * t.csc);
                    *p = if read_c { r + t.beta * *p } else { r };
                }
            }
        }
    }
}

/// Portable kernels: 4 × 8 tiles (8 one-lane "vectors" per row).
pub(crate) mod scalar {
    use super::*;
    use crate::simd::scalar::Scalar;

    /// # Safety
    /// The [`Tile`] contract.
    unsafe fn tile<const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
        // SAFETY: the caller's `Tile` contract; Scalar needs no CPU features.
        unsafe { tile_body::<Scalar, M, NV, PACKED_A, MR>(Scalar, t) }
    }

    static TILES: [[[TileFn; 8]; 4]; 2] = tile_table!(tile, 4; [1 2 3 4]; [1 2 3 4 5 6 7 8]);

    pub(crate) static KERNELS: KernelSet = KernelSet {
        mr: 4,
        lanes: 1,
        nv_max: 8,
        select: |p, m, nv| TILES[p][m][nv],
    };
}

/// AVX2 + FMA kernels: 6 × 16 tiles.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use crate::simd::avx2::Avx2;
    use std::arch::x86_64::__m256;

    /// # Safety
    /// The [`Tile`] contract, on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
        // SAFETY: dispatch selects this set only on a CPU with AVX2 and FMA
        // (`Isa::is_supported`), so the token's claim holds.
        let s = unsafe { Avx2::new_unchecked() };
        if M == 6 && NV == 2 && PACKED_A && t.n == 16 && asm_enabled() {
            // SAFETY: a full 6 × 16 tile with a packed A panel, as `tile_asm`
            // requires; the features are enabled here.
            unsafe { tile_asm(s, t) }
        } else {
            // SAFETY: the caller's `Tile` contract; the features are enabled here.
            unsafe { tile_body::<Avx2, M, NV, PACKED_A, MR>(s, t) }
        }
    }

    static TILES: [[[TileFn; 2]; 6]; 2] = tile_table!(tile, 6; [1 2 3 4 5 6]; [1 2]);

    pub(crate) static KERNELS: KernelSet = KernelSet {
        mr: 6,
        lanes: 8,
        nv_max: 2,
        select: |p, m, nv| TILES[p][m][nv],
    };

    /// A full tile through [`k_loop_asm`]; C as in every other tile.
    ///
    /// # Safety
    /// The [`Tile`] contract for a 6 × 16 tile whose A is a packed panel
    /// (element `(i, p)` at `a[6p + i]`).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_asm(s: Avx2, t: &Tile) {
        prefetch_c::<Avx2, 6>(s, t);
        // SAFETY: the caller's contract: k steps of the panel and k rows of
        // 16 floats of B (row stride `rsb`) are readable.
        let acc = unsafe { k_loop_asm(t.a, t.b, t.rsb * 4, t.k) };
        // SAFETY: C of a full tile, by the contract.
        unsafe { store_tile::<Avx2, 6, 2>(s, t, &acc, s.tail(8), false) };
    }

    /// One step of k in [`k_loop_asm`]: rows `2r`, `2r+1` of A broadcast
    /// into ymm2, ymm3, times B (ymm0, ymm1) into that row pair's four
    /// accumulators. `$q` is the step inside the unrolled group.
    #[rustfmt::skip]
    macro_rules! rows2 {
        ($q:literal, $r0:literal, $r1:literal, $c0:literal, $c1:literal, $c2:literal, $c3:literal) => {
            concat!(
                "vbroadcastss ymm2, dword ptr [{a} + 4*(6*", $q, "+", $r0, ")]\n",
                "vbroadcastss ymm3, dword ptr [{a} + 4*(6*", $q, "+", $r1, ")]\n",
                "vfmadd231ps ymm", $c0, ", ymm2, ymm0\n",
                "vfmadd231ps ymm", $c1, ", ymm2, ymm1\n",
                "vfmadd231ps ymm", $c2, ", ymm3, ymm0\n",
                "vfmadd231ps ymm", $c3, ", ymm3, ymm1\n",
            )
        };
    }

    /// Step `$q` with B row at `[{b}$row]`: 2 loads of B, 6 broadcasts of A
    /// from memory, 12 FMAs.
    #[rustfmt::skip]
    macro_rules! step6x16 {
        ($q:literal, $row:literal) => {
            concat!(
                "vmovups ymm0, ymmword ptr [{b}", $row, "]\n",
                "vmovups ymm1, ymmword ptr [{b}", $row, " + 32]\n",
                rows2!($q, 0, 1, 4, 5, 6, 7),
                rows2!($q, 2, 3, 8, 9, 10, 11),
                rows2!($q, 4, 5, 12, 13, 14, 15),
            )
        };
    }

    /// The k loop of a full 6 × 16 tile with a packed A panel, as BLIS's
    /// Haswell kernel does it: B in ymm0–1, A broadcasts in ymm2–3, the
    /// accumulators in ymm4–15 (row i in ymm(4+2i), ymm(5+2i)); k unrolled
    /// by 4 (2 loads of B, 6 broadcasts, 12 FMAs per step), A prefetched 256
    /// and 320 bytes ahead (two lines per group, which consumes 96 bytes),
    /// then the k mod 4 steps one at a time. Each accumulator receives the
    /// same FMAs in the same order as the intrinsics loop, so the two give
    /// identical bits.
    ///
    /// # Safety
    /// `a .. a + 6k` and, for `p < k`, `b + p·rsb_bytes/4 .. + 16` readable;
    /// the CPU runs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn k_loop_asm(a: *const f32, b: *const f32, rsb_bytes: isize, k: usize) -> [[__m256; 2]; 6] {
        let (c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51): (
            __m256,
            __m256,
            __m256,
            __m256,
            __m256,
            __m256,
            __m256,
            __m256,
            __m256,
            __m256,
            __m256,
            __m256,
        );
        // SAFETY: the loop reads exactly the 6k floats of A and the k rows
        // of 16 floats of B the caller guarantees (loads past them are
        // prefetches, which never fault); it writes no memory and no stack
        // (`readonly, nostack`); every register it touches is an operand:
        // ymm0–3 are declared clobbered, ymm4–15 are the outputs, the four
        // general registers are `inout` (their final values discarded), and
        // the flags are not preserved (not `preserves_flags`).
        unsafe {
            std::arch::asm!(
                "vxorps ymm4, ymm4, ymm4",
                "vxorps ymm5, ymm5, ymm5",
                "vxorps ymm6, ymm6, ymm6",
                "vxorps ymm7, ymm7, ymm7",
                "vxorps ymm8, ymm8, ymm8",
                "vxorps ymm9, ymm9, ymm9",
                "vxorps ymm10, ymm10, ymm10",
                "vxorps ymm11, ymm11, ymm11",
                "vxorps ymm12, ymm12, ymm12",
                "vxorps ymm13, ymm13, ymm13",
                "vxorps ymm14, ymm14, ymm14",
                "vxorps ymm15, ymm15, ymm15",
                "test {k4}, {k4}",
                "jz 3f",
                ".p2align 5",
                "2:",
                "prefetcht0 byte ptr [{a} + 256]",
                step6x16!(0, ""),
                step6x16!(1, " + {rsb}"),
                "prefetcht0 byte ptr [{a} + 320]",
                step6x16!(2, " + 2*{rsb}"),
                step6x16!(3, " + {rsb3}"),
                "add {a}, 96",
                "lea {b}, [{b} + 4*{rsb}]",
                "dec {k4}",
                "jnz 2b",
                "3:",
                "test {kr}, {kr}",
                "jz 5f",
                "4:",
                step6x16!(0, ""),
                "add {a}, 24",
                "add {b}, {rsb}",
                "dec {kr}",
                "jnz 4b",
                "5:",
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                k4 = inout(reg) k / 4 => _,
                kr = inout(reg) k % 4 => _,
                rsb = in(reg) rsb_bytes,
                rsb3 = in(reg) 3 * rsb_bytes,
                out("ymm0") _,
                out("ymm1") _,
                out("ymm2") _,
                out("ymm3") _,
                out("ymm4") c00,
                out("ymm5") c01,
                out("ymm6") c10,
                out("ymm7") c11,
                out("ymm8") c20,
                out("ymm9") c21,
                out("ymm10") c30,
                out("ymm11") c31,
                out("ymm12") c40,
                out("ymm13") c41,
                out("ymm14") c50,
                out("ymm15") c51,
                options(nostack, readonly),
            );
        }
        [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]]
    }
}

/// AVX-512F kernels: 14 × 32 tiles.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use crate::simd::avx512::Avx512;
    use std::arch::x86_64::__m512;

    /// # Safety
    /// The [`Tile`] contract, on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    unsafe fn tile<const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
        // SAFETY: dispatch selects this set only on a CPU with AVX-512
        // F/BW/DQ/VL, AVX2 and FMA (`Isa::is_supported`).
        let s = unsafe { Avx512::new_unchecked() };
        if M == 14 && NV == 2 && PACKED_A && t.n == 32 && asm_enabled() {
            // SAFETY: a full 14 × 32 tile with a packed A panel, as
            // `tile_asm` requires; the features are enabled here.
            unsafe { tile_asm(s, t) }
        } else {
            // SAFETY: the caller's `Tile` contract; the features are enabled here.
            unsafe { tile_body::<Avx512, M, NV, PACKED_A, MR>(s, t) }
        }
    }

    static TILES: [[[TileFn; 2]; 14]; 2] = tile_table!(tile, 14; [1 2 3 4 5 6 7 8 9 10 11 12 13 14]; [1 2]);

    pub(crate) static KERNELS: KernelSet = KernelSet {
        mr: 14,
        lanes: 16,
        nv_max: 2,
        select: |p, m, nv| TILES[p][m][nv],
    };

    /// A full tile through [`k_loop_asm`]; C as in every other tile.
    ///
    /// # Safety
    /// The [`Tile`] contract for a 14 × 32 tile whose A is a packed panel
    /// (element `(i, p)` at `a[14p + i]`).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    unsafe fn tile_asm(s: Avx512, t: &Tile) {
        prefetch_c::<Avx512, 14>(s, t);
        // SAFETY: the caller's contract: k steps of the panel and k rows of
        // 32 floats of B (row stride `rsb`) are readable.
        let acc = unsafe { k_loop_asm(t.a, t.b, t.rsb * 4, t.k) };
        // SAFETY: C of a full tile, by the contract.
        unsafe { store_tile::<Avx512, 14, 2>(s, t, &acc, s.tail(16), false) };
    }

    /// Row `$r` of step `$q`: broadcast A into zmm`$ar`, two FMAs into the
    /// row's accumulators.
    #[rustfmt::skip]
    macro_rules! row {
        ($q:literal, $r:literal, $ar:literal, $c0:literal, $c1:literal) => {
            concat!(
                "vbroadcastss zmm", $ar, ", dword ptr [{a} + 4*(14*", $q, "+", $r, ")]\n",
                "vfmadd231ps zmm", $c0, ", zmm", $ar, ", zmm0\n",
                "vfmadd231ps zmm", $c1, ", zmm", $ar, ", zmm1\n",
            )
        };
    }

    /// Step `$q` with B row at `[{b}$row]`: 2 loads of B, 14 broadcasts of
    /// A from memory (alternating zmm2/zmm3), 28 FMAs; one prefetch of the
    /// A panel 576 bytes ahead (a group of 4 steps consumes 224 bytes).
    #[rustfmt::skip]
    macro_rules! step14x32 {
        ($q:literal, $row:literal) => {
            concat!(
                "prefetcht0 byte ptr [{a} + 576 + 64*", $q, "]\n",
                "vmovups zmm0, zmmword ptr [{b}", $row, "]\n",
                "vmovups zmm1, zmmword ptr [{b}", $row, " + 64]\n",
                row!($q, 0, 2, 4, 5),
                row!($q, 1, 3, 6, 7),
                row!($q, 2, 2, 8, 9),
                row!($q, 3, 3, 10, 11),
                row!($q, 4, 2, 12, 13),
                row!($q, 5, 3, 14, 15),
                row!($q, 6, 2, 16, 17),
                row!($q, 7, 3, 18, 19),
                row!($q, 8, 2, 20, 21),
                row!($q, 9, 3, 22, 23),
                row!($q, 10, 2, 24, 25),
                row!($q, 11, 3, 26, 27),
                row!($q, 12, 2, 28, 29),
                row!($q, 13, 3, 30, 31),
            )
        };
    }

    /// The k loop of a full 14 × 32 tile with a packed A panel: B in
    /// zmm0–1, A broadcasts in zmm2–3, the 28 accumulators in zmm4–31 (row
    /// i in zmm(4+2i), zmm(5+2i)); k unrolled by 4, then the k mod 4 steps
    /// one at a time. Same FMAs in the same order as the intrinsics loop,
    /// so the same bits.
    ///
    /// # Safety
    /// `a .. a + 14k` and, for `p < k`, `b + p·rsb_bytes/4 .. + 32`
    /// readable; the CPU runs AVX-512F.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    #[allow(clippy::type_complexity)] // the 28 named asm outputs
    unsafe fn k_loop_asm(a: *const f32, b: *const f32, rsb_bytes: isize, k: usize) -> [[__m512; 2]; 14] {
        // Named outputs for the 28 accumulators: row i is (ci, di).
        let (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13): (
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
        );
        let (d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13): (
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
            __m512,
        );
        // SAFETY: the loop reads exactly the 14k floats of A and the k rows
        // of 32 floats of B the caller guarantees (loads past them are
        // prefetches, which never fault); it writes no memory and no stack
        // (`readonly, nostack`); every register it touches is an operand:
        // zmm0–3 are declared clobbered, zmm4–31 are the outputs, the four
        // general registers are `inout` (their final values discarded), and
        // the flags are not preserved (not `preserves_flags`).
        unsafe {
            std::arch::asm!(
                "vpxord zmm4, zmm4, zmm4",
                "vpxord zmm5, zmm5, zmm5",
                "vpxord zmm6, zmm6, zmm6",
                "vpxord zmm7, zmm7, zmm7",
                "vpxord zmm8, zmm8, zmm8",
                "vpxord zmm9, zmm9, zmm9",
                "vpxord zmm10, zmm10, zmm10",
                "vpxord zmm11, zmm11, zmm11",
                "vpxord zmm12, zmm12, zmm12",
                "vpxord zmm13, zmm13, zmm13",
                "vpxord zmm14, zmm14, zmm14",
                "vpxord zmm15, zmm15, zmm15",
                "vpxord zmm16, zmm16, zmm16",
                "vpxord zmm17, zmm17, zmm17",
                "vpxord zmm18, zmm18, zmm18",
                "vpxord zmm19, zmm19, zmm19",
                "vpxord zmm20, zmm20, zmm20",
                "vpxord zmm21, zmm21, zmm21",
                "vpxord zmm22, zmm22, zmm22",
                "vpxord zmm23, zmm23, zmm23",
                "vpxord zmm24, zmm24, zmm24",
                "vpxord zmm25, zmm25, zmm25",
                "vpxord zmm26, zmm26, zmm26",
                "vpxord zmm27, zmm27, zmm27",
                "vpxord zmm28, zmm28, zmm28",
                "vpxord zmm29, zmm29, zmm29",
                "vpxord zmm30, zmm30, zmm30",
                "vpxord zmm31, zmm31, zmm31",
                "test {k4}, {k4}",
                "jz 3f",
                ".p2align 5",
                "2:",
                step14x32!(0, ""),
                step14x32!(1, " + {rsb}"),
                step14x32!(2, " + 2*{rsb}"),
                step14x32!(3, " + {rsb3}"),
                "add {a}, 224",
                "lea {b}, [{b} + 4*{rsb}]",
                "dec {k4}",
                "jnz 2b",
                "3:",
                "test {kr}, {kr}",
                "jz 5f",
                "4:",
                step14x32!(0, ""),
                "add {a}, 56",
                "add {b}, {rsb}",
                "dec {kr}",
                "jnz 4b",
                "5:",
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                k4 = inout(reg) k / 4 => _,
                kr = inout(reg) k % 4 => _,
                rsb = in(reg) rsb_bytes,
                rsb3 = in(reg) 3 * rsb_bytes,
                out("zmm0") _,
                out("zmm1") _,
                out("zmm2") _,
                out("zmm3") _,
                out("zmm4") c0,
                out("zmm5") d0,
                out("zmm6") c1,
                out("zmm7") d1,
                out("zmm8") c2,
                out("zmm9") d2,
                out("zmm10") c3,
                out("zmm11") d3,
                out("zmm12") c4,
                out("zmm13") d4,
                out("zmm14") c5,
                out("zmm15") d5,
                out("zmm16") c6,
                out("zmm17") d6,
                out("zmm18") c7,
                out("zmm19") d7,
                out("zmm20") c8,
                out("zmm21") d8,
                out("zmm22") c9,
                out("zmm23") d9,
                out("zmm24") c10,
                out("zmm25") d10,
                out("zmm26") c11,
                out("zmm27") d11,
                out("zmm28") c12,
                out("zmm29") d12,
                out("zmm30") c13,
                out("zmm31") d13,
                options(nostack, readonly),
            );
        }
        [
            [c0, d0],
            [c1, d1],
            [c2, d2],
            [c3, d3],
            [c4, d4],
            [c5, d5],
            [c6, d6],
            [c7, d7],
            [c8, d8],
            [c9, d9],
            [c10, d10],
            [c11, d11],
            [c12, d12],
            [c13, d13],
        ]
    }
}

/// NEON kernels: 8 × 12 tiles.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::*;
    use crate::simd::neon::Neon;

    /// # Safety
    /// The [`Tile`] contract, on a CPU with NEON.
    #[target_feature(enable = "neon")]
    unsafe fn tile<const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
        // SAFETY: dispatch selects this set only on a CPU with NEON.
        let s = unsafe { Neon::new_unchecked() };
        // SAFETY: the caller's `Tile` contract; NEON is enabled here.
        unsafe { tile_body::<Neon, M, NV, PACKED_A, MR>(s, t) }
    }

    static TILES: [[[TileFn; 3]; 8]; 2] = tile_table!(tile, 8; [1 2 3 4 5 6 7 8]; [1 2 3]);

    pub(crate) static KERNELS: KernelSet = KernelSet {
        mr: 8,
        lanes: 4,
        nv_max: 3,
        select: |p, m, nv| TILES[p][m][nv],
    };
}

#[cfg(test)]
mod tests {
    //! Every tile kernel of every ISA this CPU runs, called directly (not
    //! through the driver's choices), for every height 1..=MR and width
    //! 1..=NR, A packed and in place, B and C with padded strides, against
    //! an f64 reference; and the `asm!` full tiles against the intrinsics
    //! ones bit for bit. Tolerance as in `tests/gemm.rs`: γ_{k+2}·S with
    //! S = |alpha|·Σ|a·b| + |beta·c|.
    use super::*;
    use crate::simd::Isa;
    use proptest::prelude::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// One tile problem with explicit memory layouts.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        packed_a: bool,
        /// In-place A: row-major (true) or column-major, with padding.
        a_rows: bool,
        pad: usize,
        /// B row stride beyond n.
        b_pad: usize,
        /// C column stride (1: rows contiguous).
        csc: usize,
        alpha: f32,
        beta: f32,
        seed: u64,
    }

    const SENTINEL: f32 = -12345.0;

    /// Runs the kernel `ks` selects (with `imp` forced) and returns C's
    /// buffer, after checking it against the reference and the padding
    /// against the sentinel.
    fn run(ks: &KernelSet, c: Case, imp: KernelImpl) -> Result<Vec<f32>, TestCaseError> {
        let (mr, nr) = (ks.mr, ks.nr());
        let Case { m, n, k, .. } = c;
        let av = values(m * k, c.seed);
        let bv = values(k * n, c.seed ^ 1);
        // A: packed panel (stride MR, rows past m left NaN: never read into
        // C) or the caller's layout.
        let (a_buf, rsa, csa) = if c.packed_a {
            let mut p = vec![f32::NAN; mr * k.max(1)];
            for i in 0..m {
                for q in 0..k {
                    p[q * mr + i] = av[i * k + q];
                }
            }
            (p, 1, mr)
        } else if c.a_rows {
            let ld = k + c.pad;
            let mut p = vec![f32::NAN; m * ld];
            for i in 0..m {
                for q in 0..k {
                    p[i * ld + q] = av[i * k + q];
                }
            }
            (p, ld, 1)
        } else {
            let ld = m + c.pad;
            let mut p = vec![f32::NAN; k.max(1) * ld];
            for i in 0..m {
                for q in 0..k {
                    p[q * ld + i] = av[i * k + q];
                }
            }
            (p, 1, ld)
        };
        let rsb = n + c.b_pad;
        let mut b_buf = vec![f32::NAN; k.max(1) * rsb];
        for q in 0..k {
            b_buf[q * rsb..q * rsb + n].copy_from_slice(&bv[q * n..(q + 1) * n]);
        }
        let (rsc, csc) = if c.csc == 1 { (n + 3, 1) } else { (1, m + 2) };
        // Slack past the last element (sentinels) catches a full-vector
        // store where a masked one belongs.
        let len = (m - 1) * rsc + (n - 1) * csc + 1 + 32;
        let mut c_buf = vec![SENTINEL; len];
        let c0 = values(m * n, c.seed ^ 2);
        for i in 0..m {
            for j in 0..n {
                c_buf[i * rsc + j * csc] = if c.beta == 0.0 { f32::NAN } else { c0[i * n + j] };
            }
        }
        let tile = Tile {
            k,
            a: a_buf.as_ptr(),
            rsa: rsa as isize,
            csa: csa as isize,
            b: b_buf.as_ptr(),
            rsb: rsb as isize,
            c: c_buf.as_mut_ptr(),
            rsc: rsc as isize,
            csc: csc as isize,
            n,
            alpha: c.alpha,
            beta: c.beta,
        };
        assert!(m <= mr && n <= nr);
        force_impl(Some(imp));
        // SAFETY: every address the tile names lies in the buffers above
        // (A: m rows × k steps, B: k rows × n columns, C: m × n at its
        // strides); the kernel set belongs to an ISA this CPU runs.
        unsafe { ks.tile(m, n, c.packed_a)(&tile) };
        force_impl(None);
        let gamma = (k as f64 + 2.0) * f64::from(f32::EPSILON) / 2.0 * 1.01;
        let mut in_tile = vec![false; len];
        for i in 0..m {
            for j in 0..n {
                let at = i * rsc + j * csc;
                in_tile[at] = true;
                let (mut dot, mut scale) = (0.0f64, 0.0f64);
                for q in 0..k {
                    let p = f64::from(av[i * k + q]) * f64::from(bv[q * n + j]);
                    dot += p;
                    scale += p.abs();
                }
                let cij = if c.beta == 0.0 { 0.0 } else { f64::from(c0[i * n + j]) };
                let want = f64::from(c.alpha) * dot + f64::from(c.beta) * cij;
                let tol = gamma * (f64::from(c.alpha).abs() * scale + (f64::from(c.beta) * cij).abs()) + 1e-30;
                let got = f64::from(c_buf[at]);
                prop_assert!(
                    (got - want).abs() <= tol,
                    "C[{i},{j}] = {got}, want {want} ± {tol:e} ({c:?}, {imp:?})"
                );
            }
        }
        for (at, v) in c_buf.iter().enumerate() {
            if !in_tile[at] {
                prop_assert_eq!(v.to_bits(), SENTINEL.to_bits(), "C padding [{}] written ({:?})", at, c);
            }
        }
        Ok(c_buf)
    }

    fn case(mr: usize, nr: usize) -> impl Strategy<Value = Case> {
        (
            (1..=mr, 1..=nr, prop_oneof![0..14usize, 60..70usize, 250..260usize]),
            (
                any::<bool>(),
                any::<bool>(),
                0..3usize,
                prop_oneof![Just(0usize), 0..20usize],
            ),
            (prop_oneof![3 => Just(1usize), 1 => Just(2usize)], any::<u64>()),
            (
                prop_oneof![Just(1.0f32), Just(-0.5f32), -2.0f32..2.0],
                prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0],
            ),
        )
            .prop_map(
                |((m, n, k), (packed_a, a_rows, pad, b_pad), (csc, seed), (alpha, beta))| Case {
                    m,
                    n,
                    k,
                    packed_a,
                    a_rows,
                    pad,
                    b_pad,
                    csc,
                    alpha,
                    beta,
                    seed,
                },
            )
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Random tiles of every ISA, both implementations (heights and
        /// widths drawn for the largest tile, folded into each ISA's).
        #[test]
        fn every_tile_matches_reference(c in case(14, 32)) {
            for isa in Isa::supported() {
                let ks = kernel_set(isa);
                // A third of the cases are full tiles (the `asm!` loops).
                let (m, n) = if c.seed % 3 == 0 {
                    (ks.mr, ks.nr())
                } else {
                    ((c.m - 1) % ks.mr + 1, (c.n - 1) % ks.nr() + 1)
                };
                let c = Case { m, n, ..c };
                for imp in [KernelImpl::Asm, KernelImpl::Intrinsics] {
                    run(ks, c, imp).map_err(|e| TestCaseError::fail(format!("{isa}: {e}")))?;
                }
            }
        }
    }

    /// Every height and width of every ISA once, at k values around the
    /// unrolled group (0..9) and past the C prefetch threshold (64+).
    #[test]
    fn every_tile_shape() {
        for isa in Isa::supported() {
            let ks = kernel_set(isa);
            for m in 1..=ks.mr {
                for n in 1..=ks.nr() {
                    for (k, packed_a, a_rows, csc) in [
                        (0, true, true, 1),
                        (5, true, false, 2),
                        (9, false, true, 1),
                        (67, false, false, 1),
                        (66, true, true, 1),
                    ] {
                        let c = Case {
                            m,
                            n,
                            k,
                            packed_a,
                            a_rows,
                            pad: 1,
                            b_pad: 3,
                            csc,
                            alpha: 0.75,
                            beta: if k % 2 == 0 { 0.0 } else { -0.5 },
                            seed: (m * 1000 + n * 10 + k) as u64,
                        };
                        for imp in [KernelImpl::Asm, KernelImpl::Intrinsics] {
                            if let Err(e) = run(ks, c, imp) {
                                panic!("{isa}: {e}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// The `asm!` full tiles give the intrinsics loop's bits exactly (same
    /// FMAs in the same order), for every k remainder and B stride.
    #[test]
    fn asm_full_tiles_match_intrinsics_bits() {
        for isa in Isa::supported() {
            let ks = kernel_set(isa);
            for k in [1, 2, 3, 4, 5, 7, 8, 64, 65, 66, 67, 255, 256] {
                for (b_pad, beta) in [(0, 0.0), (5, 1.0), (16, -0.25)] {
                    let c = Case {
                        m: ks.mr,
                        n: ks.nr(),
                        k,
                        packed_a: true,
                        a_rows: true,
                        pad: 0,
                        b_pad,
                        csc: 1,
                        alpha: 1.5,
                        beta,
                        seed: k as u64 * 31 + b_pad as u64,
                    };
                    let asm = run(ks, c, KernelImpl::Asm).unwrap();
                    let intr = run(ks, c, KernelImpl::Intrinsics).unwrap();
                    assert!(
                        asm.iter().zip(&intr).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa} k={k} b_pad={b_pad}: asm and intrinsics differ"
                    );
                }
            }
        }
    }
}
