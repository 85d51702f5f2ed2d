//! The register-tiled microkernel, written once over [`Vector`] and stamped
//! out per ISA and per tile shape.
//!
//! Tile: `M` rows of C (1..=MR, a compile-time constant, so edge tiles run
//! the same unrolled code with fewer rows) by `NV` vectors of columns
//! (1..=NV_MAX); the last vector is masked when the tile is narrower, so
//! edge tiles never leave the kernel path. Per step of k, the kernel loads
//! `NV` vectors of B (row `p`, contiguous columns) and broadcasts `M`
//! elements of A (any row and column strides: packed panels or the caller's
//! memory), and issues `M·NV` FMAs into accumulators that stay in registers.
//!
//! | ISA | MR × NR (lanes × NV) | accumulators |
//! |---|---|---|
//! | AVX-512F | 14 × 32 (16 × 2) | 28 of 32 zmm |
//! | AVX2+FMA | 6 × 16 (8 × 2)   | 12 of 16 ymm |
//! | NEON     | 8 × 12 (4 × 3)   | 24 of 32 q   |
//! | scalar   | 4 × 8 (4 × 2)    | arrays       |
//!
//! C is written once per tile: `alpha·acc + beta·C`, and C is not read at
//! all when `beta == 0`. Rows of C with unit column stride use (masked)
//! vector loads and stores; any other layout goes element by element.
//! Measured (AVX-512 on a Zen 5 class core, one thread, FMA peak ≈ 265
//! GFLOP/s): 240 GFLOP/s at 256² (91%), 185–221 at 512²–2048², 229–231 on
//! the batch-32 products (32,784,500) and (32,500,784); the README has the
//! full table.

use super::vector::Vector;

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

/// The tile body. Inlined into a per-ISA function compiled with that ISA's
/// target features, so every `V::` call becomes one instruction.
///
/// # Safety
/// `t` must satisfy the contract of [`Tile`] for `m = M` and the CPU must
/// run `V`'s instructions (guaranteed by the `#[target_feature]` wrapper
/// being called only after dispatch checked the ISA).
#[inline(always)]
unsafe fn tile_body<V: Vector, const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
    let last = t.n - (NV - 1) * V::LANES;
    // SAFETY: 1 <= last <= LANES by the contract on `n`.
    let mask = unsafe { V::mask(last) };
    let masked = last != V::LANES;
    if t.csc == 1 && t.k >= 64 {
        // Start fetching the C tile now, so its lines are in L1 when the
        // tile is stored after the k loop.
        for i in 0..M {
            let row = t.c.wrapping_offset(i as isize * t.rsc);
            // SAFETY: prefetches never fault.
            unsafe {
                V::prefetch(row);
                V::prefetch(row.wrapping_add(t.n - 1));
            }
        }
    }
    // SAFETY: the `Tile` contract of the caller, passed on unchanged.
    let acc = unsafe {
        if masked {
            k_loop::<V, M, NV, true, PACKED_A, MR>(t, mask)
        } else {
            k_loop::<V, M, NV, false, PACKED_A, MR>(t, mask)
        }
    };
    // SAFETY: C addresses are valid for i < M, j < n by the contract.
    unsafe { store_tile::<V, M, NV>(t, &acc, mask, masked, last) };
}

#[inline(always)]
unsafe fn k_loop<
    V: Vector,
    const M: usize,
    const NV: usize,
    const MASKED: bool,
    const PACKED_A: bool,
    const MR: usize,
>(
    t: &Tile,
    mask: V::Mask,
) -> [[V::V; NV]; M] {
    // SAFETY (whole body): every A read is at (i, p) with i < M = m, p < k,
    // every B read at (p, j) with j < n (the last vector masked to the
    // first `last` lanes when narrower); valid by the `Tile` contract.
    unsafe {
        let mut acc = [[V::zero(); NV]; M];
        let (mut a, mut b) = (t.a, t.b);
        // A packed panel has compile-time strides (1, MR), so the M
        // broadcasts use immediate offsets instead of a chain of adds.
        let (rsa, csa) = if PACKED_A { (1, MR as isize) } else { (t.rsa, t.csa) };
        // In-place A: row i is reached from one of two moving bases (rows
        // 0..7 and 7..14) plus a loop-invariant byte offset that x86 folds
        // into the address (0, R, 2R, 3R, 4R, 5R, 6R from R, 3R and 5R), so
        // the rows cost no chain of dependent adds per step of k.
        // Wrapping: only the offsets of rows below M are used, and those are
        // inside A; the others may be out of range for a huge row stride.
        let rb = rsa.wrapping_mul(4);
        let (rb3, rb5) = (rb.wrapping_mul(3), rb.wrapping_mul(5));
        let row_off = |i: usize| -> isize {
            match i % 7 {
                0 => 0,
                1 => rb,
                2 => rb.wrapping_mul(2),
                3 => rb3,
                4 => rb.wrapping_mul(4),
                5 => rb5,
                _ => rb3.wrapping_mul(2),
            }
        };
        let mut a7 = a.wrapping_offset(rsa.wrapping_mul(7));
        for _ in 0..t.k {
            let mut bv = [V::zero(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = if MASKED && v == NV - 1 {
                    V::load_masked(b.add(v * V::LANES), mask)
                } else {
                    V::load(b.add(v * V::LANES))
                };
            }
            // Opaque copies stop the compiler from rewriting the row
            // addresses back into a chain of adds (loop strength reduction).
            let (a_row, a7_row) = if PACKED_A { (a, a7) } else { (opaque(a), opaque(a7)) };
            for (i, row) in acc.iter_mut().enumerate() {
                let av = if PACKED_A {
                    V::splat(*a.offset(i as isize * rsa))
                } else {
                    let base = if i < 7 { a_row } else { a7_row };
                    V::splat(*base.byte_offset(row_off(i)))
                };
                for (x, bx) in row.iter_mut().zip(bv.iter()) {
                    *x = V::fmadd(av, *bx, *x);
                }
            }
            // Wrapping: after the last step these point one step past the
            // operands (never dereferenced), which `offset` would make UB.
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

#[inline(always)]
unsafe fn store_tile<V: Vector, const M: usize, const NV: usize>(
    t: &Tile,
    acc: &[[V::V; NV]; M],
    mask: V::Mask,
    masked: bool,
    last: usize,
) {
    // SAFETY (whole body): writes and reads of C are at (i, j) with i < M,
    // j < n (vector stores of the last vector masked to `last` lanes), valid
    // by the `Tile` contract; `tmp` holds one vector (LANES <= 16).
    unsafe {
        let alpha = V::splat(t.alpha);
        let read_c = t.beta != 0.0;
        let beta = V::splat(t.beta);
        if t.csc == 1 {
            for (i, row) in acc.iter().enumerate() {
                let crow = t.c.offset(i as isize * t.rsc);
                for (v, x) in row.iter().enumerate() {
                    let p = crow.add(v * V::LANES);
                    let r = V::mul(*x, alpha);
                    if masked && v == NV - 1 {
                        let r = if read_c {
                            V::fmadd(V::load_masked(p, mask), beta, r)
                        } else {
                            r
                        };
                        V::store_masked(p, r, mask);
                    } else {
                        let r = if read_c { V::fmadd(V::load(p), beta, r) } else { r };
                        V::store(p, r);
                    }
                }
            }
        } else {
            let mut tmp = [0.0f32; 16];
            for (i, row) in acc.iter().enumerate() {
                let crow = t.c.offset(i as isize * t.rsc);
                for (v, x) in row.iter().enumerate() {
                    V::store(tmp.as_mut_ptr(), V::mul(*x, alpha));
                    let lanes = if v == NV - 1 { last } else { V::LANES };
                    for (l, r) in tmp.iter().enumerate().take(lanes) {
                        let p = crow.offset((v * V::LANES + l) as isize * t.csc);
                        *p = if read_c { *r + t.beta * *p } else { *r };
                    }
                }
            }
        }
    }
}

/// Portable kernels: 4 × 8 tiles.
pub(crate) mod scalar {
    use super::*;
    use crate::ops::gemm::vector::Scalar;

    /// # Safety
    /// The [`Tile`] contract.
    unsafe fn tile<const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
        // SAFETY: the caller's `Tile` contract; Scalar needs no CPU features.
        unsafe { tile_body::<Scalar, M, NV, PACKED_A, MR>(t) }
    }

    static TILES: [[[TileFn; 2]; 4]; 2] = tile_table!(tile, 4; [1 2 3 4]; [1 2]);

    pub(crate) static KERNELS: KernelSet = KernelSet {
        mr: 4,
        lanes: 4,
        nv_max: 2,
        select: |p, m, nv| TILES[p][m][nv],
    };
}

/// AVX2 + FMA kernels: 6 × 16 tiles.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use crate::ops::gemm::vector::Avx2;

    /// # Safety
    /// The [`Tile`] contract, on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
        // SAFETY: the caller's `Tile` contract; the features are enabled here
        // and present (dispatch selects this set only when they are).
        unsafe { tile_body::<Avx2, M, NV, PACKED_A, MR>(t) }
    }

    static TILES: [[[TileFn; 2]; 6]; 2] = tile_table!(tile, 6; [1 2 3 4 5 6]; [1 2]);

    pub(crate) static KERNELS: KernelSet = KernelSet {
        mr: 6,
        lanes: 8,
        nv_max: 2,
        select: |p, m, nv| TILES[p][m][nv],
    };
}

/// AVX-512F kernels: 14 × 32 tiles.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use crate::ops::gemm::vector::Avx512;

    /// # Safety
    /// The [`Tile`] contract, on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tile<const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
        // SAFETY: the caller's `Tile` contract; the features are enabled here
        // and present (dispatch selects this set only when they are).
        unsafe { tile_body::<Avx512, M, NV, PACKED_A, MR>(t) }
    }

    static TILES: [[[TileFn; 2]; 14]; 2] = tile_table!(tile, 14; [1 2 3 4 5 6 7 8 9 10 11 12 13 14]; [1 2]);

    pub(crate) static KERNELS: KernelSet = KernelSet {
        mr: 14,
        lanes: 16,
        nv_max: 2,
        select: |p, m, nv| TILES[p][m][nv],
    };
}

/// NEON kernels: 8 × 12 tiles.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::*;
    use crate::ops::gemm::vector::Neon;

    /// # Safety
    /// The [`Tile`] contract, on a CPU with NEON.
    #[target_feature(enable = "neon")]
    unsafe fn tile<const M: usize, const NV: usize, const PACKED_A: bool, const MR: usize>(t: &Tile) {
        // SAFETY: the caller's `Tile` contract; NEON is enabled here and
        // present (dispatch selects this set only when it is).
        unsafe { tile_body::<Neon, M, NV, PACKED_A, MR>(t) }
    }

    static TILES: [[[TileFn; 3]; 8]; 2] = tile_table!(tile, 8; [1 2 3 4 5 6 7 8]; [1 2 3]);

    pub(crate) static KERNELS: KernelSet = KernelSet {
        mr: 8,
        lanes: 4,
        nv_max: 3,
        select: |p, m, nv| TILES[p][m][nv],
    };
}
