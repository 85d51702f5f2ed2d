//! Products whose operands are both contiguous along k — rows of A and
//! columns of B, as in `A·Bᵀ` of two row-major matrices (a linear layer's
//! forward pass with its weights stored output by input) — and few outputs:
//! every element of C is a dot product of two contiguous runs, so it is
//! computed with k in the vector lanes, `R × C` elements at a time, reading
//! both operands in place. The tile kernels would need B transposed into
//! panels first, which costs about as much as the arithmetic when n is
//! small, and fill few lanes of their column vectors. A small B with
//! contiguous rows instead (a row-major `A·B` with n = 10, an output layer)
//! is transposed once into scratch by the driver and comes here too: the
//! transpose is k·n elements, the tile kernels' lost lanes cost more.
//!
//! Each element's k steps are summed lane by lane (lane `l` holds the steps
//! `p ≡ l mod LANES`, a zero-filled partial vector at the end), then the
//! lanes in the ISA's fixed order: a summation order like any other, within
//! the usual `(k + 2)·u·Σ|a·b|` of the exact product, and the same on every
//! call, so a split over threads (by rows) gives the same bits.

use crate::simd::vector::{dispatch, Simd};

/// Most rows and columns of C per register tile: `ROWS_MAX × COLS_MAX`
/// accumulators plus one vector per row and per column must fit in the
/// register file (32 vectors on AVX-512, 16 on AVX2 and NEON).
const ROWS_MAX: usize = 4;
/// See [`ROWS_MAX`].
const COLS_MAX: usize = 4;

/// One product for [`dot_gemm`]: `C = alpha·A·B + beta·C`, `m × n × k`,
/// with A's rows and B's columns contiguous. Made only through
/// [`DotCall::new`], whose contract makes every address the kernel forms
/// valid.
#[derive(Clone, Copy)]
pub(crate) struct DotCall {
    m: usize,
    n: usize,
    k: usize,
    /// Element `(i, p)` of A at `a[i·rsa + p]`.
    a: *const f32,
    rsa: isize,
    /// Element `(p, j)` of B at `b[p + j·csb]`.
    b: *const f32,
    csb: isize,
    /// Element `(i, j)` of C at `c[i·rsc + j·csc]`.
    c: *mut f32,
    rsc: isize,
    csc: isize,
    alpha: f32,
    beta: f32,
}

impl DotCall {
    /// # Safety
    /// For `i < m`, `p < k`, `j < n`: `a + i·rsa + p` and `b + p + j·csb`
    /// readable, `c + i·rsc + j·csc` readable and writable, distinct `(i, j)`
    /// at distinct addresses, C overlapping neither A nor B, every offset
    /// within `isize`; the pointers valid for as long as the value is used.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn new(
        (m, n, k): (usize, usize, usize),
        (a, rsa): (*const f32, isize),
        (b, csb): (*const f32, isize),
        (c, rsc, csc): (*mut f32, isize, isize),
        alpha: f32,
        beta: f32,
    ) -> Self {
        DotCall {
            m,
            n,
            k,
            a,
            rsa,
            b,
            csb,
            c,
            rsc,
            csc,
            alpha,
            beta,
        }
    }

    /// Rows `r` of this product (`r` inside `0..m`), a product of the same
    /// contract.
    pub(crate) fn rows(self, r: std::ops::Range<usize>) -> Self {
        assert!(r.start <= r.end && r.end <= self.m);
        DotCall {
            m: r.len(),
            // SAFETY: row r.start ≤ m of A and C is inside their views (or one
            // past the end for an empty range, never dereferenced).
            a: unsafe { self.a.offset(r.start as isize * self.rsa) },
            // SAFETY: as above.
            c: unsafe { self.c.offset(r.start as isize * self.rsc) },
            ..self
        }
    }
}

// SAFETY: the addresses are into slices the caller of `gemm` borrows for the
// whole call; A and B are only read, and tasks write disjoint rows of C.
unsafe impl Send for DotCall {}
// SAFETY: as above.
unsafe impl Sync for DotCall {}

/// The `R × C` elements of C from row `i` and column `j`.
///
/// # Safety
/// `i + R ≤ d.m`, `j + C ≤ d.n`, and `d`'s contract.
#[inline(always)]
unsafe fn dot_tile<S: Simd, const R: usize, const C: usize>(s: S, d: &DotCall, i: usize, j: usize, tail: S::Tail) {
    let l = S::LANES;
    let mut acc = [[s.splat(0.0); C]; R];
    // SAFETY (whole body): rows i..i + R of A, columns j..j + C of B and those
    // elements of C are inside the views by the caller's contract; the loads
    // read steps p < k only (the last one masked to the k % LANES remaining).
    unsafe {
        let a: [*const f32; R] = std::array::from_fn(|r| d.a.offset((i + r) as isize * d.rsa));
        let b: [*const f32; C] = std::array::from_fn(|c| d.b.offset((j + c) as isize * d.csb));
        let full = d.k / l * l;
        let mut p = 0;
        while p < full {
            let av: [S::V; R] = std::array::from_fn(|r| s.load(a[r].add(p)));
            let bv: [S::V; C] = std::array::from_fn(|c| s.load(b[c].add(p)));
            for r in 0..R {
                for c in 0..C {
                    acc[r][c] = s.fma(av[r], bv[c], acc[r][c]);
                }
            }
            p += l;
        }
        if full < d.k {
            let av: [S::V; R] = std::array::from_fn(|r| s.load_masked(a[r].add(full), tail));
            let bv: [S::V; C] = std::array::from_fn(|c| s.load_masked(b[c].add(full), tail));
            for r in 0..R {
                for c in 0..C {
                    acc[r][c] = s.fma(av[r], bv[c], acc[r][c]);
                }
            }
        }
        // The tile's sums four accumulators at a time (`reduce_sum4` gives
        // each the bits of `reduce_sum`), zeros padding the last group;
        // element `e` of the group is accumulator `(e / C, e % C)`.
        for q in (0..R * C).step_by(4) {
            let v: [S::V; 4] = std::array::from_fn(|t| match q + t {
                e if e < R * C => acc[e / C][e % C],
                _ => s.splat(0.0),
            });
            for (t, x) in s.reduce_sum4(v).into_iter().enumerate().take(R * C - q) {
                let (r, c) = ((q + t) / C, (q + t) % C);
                let p = d.c.offset((i + r) as isize * d.rsc + (j + c) as isize * d.csc);
                let v = d.alpha * x;
                // beta = 0 never reads C (it may hold NaN).
                *p = if d.beta == 0.0 { v } else { v + d.beta * *p };
            }
        }
    }
}

/// Splits `len` into the fewest tiles of at most `most`, their widths
/// differing by at most one: `(tiles, base, extra)`, tile `t` being
/// `base + (t < extra)` wide (10 columns by 3 as 3, 3, 2, 2 rather than
/// 3, 3, 3, 1: a 1-wide tile keeps too few accumulators to cover the FMA
/// latency); no tiles for `len = 0`. `most ≥ 1`.
#[inline(always)]
fn even_split(len: usize, most: usize) -> (usize, usize, usize) {
    match len.div_ceil(most) {
        0 => (0, 0, 0),
        tiles => (tiles, len / tiles, len % tiles),
    }
}

/// Tiles of one height `R` across all columns, at most `cols` wide.
///
/// # Safety
/// `i + R ≤ d.m`, `cols ≤ COLS_MAX`, and `d`'s contract.
#[inline(always)]
unsafe fn dot_rows<S: Simd, const R: usize>(s: S, d: &DotCall, i: usize, cols: usize, tail: S::Tail) {
    let (tiles, base, extra) = even_split(d.n, cols);
    let mut j = 0;
    for t in 0..tiles {
        let w = base + usize::from(t < extra);
        // SAFETY (each call): j + w ≤ n (the widths sum to n), i + R ≤ m by
        // the caller.
        unsafe {
            match w {
                4 => dot_tile::<S, R, 4>(s, d, i, j, tail),
                3 => dot_tile::<S, R, 3>(s, d, i, j, tail),
                2 => dot_tile::<S, R, 2>(s, d, i, j, tail),
                _ => dot_tile::<S, R, 1>(s, d, i, j, tail),
            }
        }
        j += w;
    }
}

/// Register tile `(rows, columns)` of an ISA: 4 × 4 with 32 vector
/// registers (AVX-512: 16 accumulators and 8 operand vectors); 4 × 3 on
/// AVX2's 16 (12 accumulators, the 3 columns of B, and one register for
/// the row of A in use: 12 FMAs for 7 loads a step, against 9 for 6 with
/// 3 × 3); 3 × 3 elsewhere.
pub(crate) fn tile_for(lanes: usize) -> (usize, usize) {
    match lanes {
        16.. => (ROWS_MAX, COLS_MAX),
        8 => (ROWS_MAX, 3),
        _ => (3, 3),
    }
}

#[inline(always)]
fn dot_kernel<S: Simd>(s: S, d: &DotCall) {
    if d.m == 0 || d.n == 0 || d.k == 0 {
        return;
    }
    let (rows, cols) = tile_for(S::LANES);
    let tail = s.tail(match d.k % S::LANES {
        0 => S::LANES,
        r => r,
    });
    let (tiles, base, extra) = even_split(d.m, rows);
    let mut i = 0;
    for t in 0..tiles {
        let h = base + usize::from(t < extra);
        // SAFETY (each call): i + h ≤ m (the heights sum to m), cols ≤
        // COLS_MAX; d's contract holds by construction (`DotCall::new`).
        unsafe {
            match h {
                4 => dot_rows::<S, 4>(s, d, i, cols, tail),
                3 => dot_rows::<S, 3>(s, d, i, cols, tail),
                2 => dot_rows::<S, 2>(s, d, i, cols, tail),
                _ => dot_rows::<S, 1>(s, d, i, cols, tail),
            }
        }
        i += h;
    }
}
dispatch!(pub(crate) fn dot_gemm(d: &DotCall) => dot_kernel);

/// Estimated cycles of one core for an `m × n × k` product on this path,
/// on the scale of the driver's cost model: per tile, each step of `LANES`
/// k is `R·C` FMAs over two ports but at least the 4-cycle latency of an
/// accumulator and `(R + C)` loads over two ports; then a reduction of
/// about `2·log₂ LANES` operations per element and a fixed cost per tile;
/// one cycle per element of C written.
pub(crate) fn cycles(lanes: usize, m: usize, n: usize, k: usize) -> f64 {
    let (rows, cols) = tile_for(lanes);
    // Tiles of two sizes in each direction, as `even_split` makes them.
    let split = |len: usize, most: usize| {
        let (tiles, base, extra) = even_split(len, most);
        [(extra as f64, base + 1), ((tiles - extra) as f64, base)]
    };
    let steps = k.div_ceil(lanes) as f64;
    let reduce = 2.0 * (lanes as f64).log2();
    let mut total = 0.0;
    for (nr, r) in split(m, rows) {
        for (nc, c) in split(n, cols) {
            let per_step = ((r * c) as f64 / 2.0).max(4.0).max((r + c) as f64 / 2.0);
            total += nr * nc * (steps * per_step + (r * c) as f64 * reduce + 30.0);
        }
    }
    total + m as f64 * n as f64
}
