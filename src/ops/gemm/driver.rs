//! The BLIS-style blocked driver: orientation, packing decisions, cache
//! blocking and the split over threads.
//!
//! Loops, outermost first: `jc` over NC columns of C, `pc` over KC steps of
//! k (B block packed once here, when packed), `ic` over MC rows (A block
//! packed here, when packed), then `jr` over NR-column panels and `ir` over
//! row tiles, each a microkernel call. KC is chosen so one packed B panel
//! (KC × NR) stays in L1 while the row tiles stream past it, MC so the A
//! block stays in L2, NC so the B block stays in the last-level cache.
//!
//! Packing is a choice, not a rule: an operand is read in place when that
//! is cheaper — B when its rows are contiguous and it is reused by only a
//! few row tiles, A (any strides: the kernel broadcasts single elements)
//! when it fits in L2 or is used by few column panels. Before that the
//! driver may swap the roles of A and B (computing `Cᵀ = Bᵀ·Aᵀ`), picking
//! the orientation with the smaller estimated cost. This is what makes the
//! batch-32 training shapes fast: their large operand is usually read once,
//! straight from the caller's memory.

use super::kernel::{KernelSet, Tile};
use super::pack::{pack_panel, Scratch};
use super::GemmInput;
use crate::cpu::cache_sizes;
use crate::parallel::{run_tasks, task_count_max, task_range};
use crate::simd::Isa;
use std::cell::RefCell;

/// A read-only operand: element `(i, j)` at `ptr[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> View<T> {
    pub(crate) fn new(ptr: *const T, (rs, cs): (usize, usize)) -> Self {
        // Strides of a validated view reach only inside one slice, whose
        // length in elements fits in isize.
        View {
            ptr,
            rs: rs as isize,
            cs: cs as isize,
        }
    }
    fn t(self) -> Self {
        View {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// # Safety
    /// `(i, j)` must lie inside the view.
    unsafe fn at(self, i: usize, j: usize) -> *const T {
        // SAFETY: the caller's contract.
        unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

/// The output: element `(i, j)` at `ptr[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct ViewMut {
    ptr: *mut f32,
    rs: isize,
    cs: isize,
}

impl ViewMut {
    pub(crate) fn new(ptr: *mut f32, (rs, cs): (usize, usize)) -> Self {
        ViewMut {
            ptr,
            rs: rs as isize,
            cs: cs as isize,
        }
    }
    fn t(self) -> Self {
        ViewMut {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// # Safety
    /// `(i, j)` must lie inside the view.
    unsafe fn at(self, i: usize, j: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

// SAFETY: the views are plain addresses into slices that outlive the call
// (`gemm` borrows them); A and B are only read, and threads write disjoint
// tiles of C.
unsafe impl<T: Sync> Send for View<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for View<T> {}
// SAFETY: as above.
unsafe impl Send for ViewMut {}
// SAFETY: as above.
unsafe impl Sync for ViewMut {}

fn kernels(isa: Isa) -> &'static KernelSet {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &super::kernel::avx512::KERNELS,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &super::kernel::avx2::KERNELS,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &super::kernel::neon::KERNELS,
        _ => &super::kernel::scalar::KERNELS,
    }
}

/// Cache blocking of one kernel set.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    kc: usize,
    mc: usize,
    nc: usize,
}

fn blocking(ks: &KernelSet, k: usize) -> Blocking {
    let caches = cache_sizes();
    let nr = ks.nr();
    // One B micro-panel (KC × NR floats) in two thirds of L1, leaving room
    // for the A micro-panel streaming through (KC = 256 with a 48 KiB L1;
    // measured 0–5% faster than half of L1 on squares ≥ 512).
    let kc = (caches.l1d * 2 / 3 / (nr * 4)).clamp(64, 512) / 8 * 8;
    // The A block (MC × KC) in half of L2.
    let mc = ((caches.l2 / 2 / (kc * 4)) / ks.mr).max(1) * ks.mr;
    // The packed B (all of k × NC) in a quarter of the (shared) last level.
    let nc = ((caches.l3 / 4 / (k.max(1) * 4)) / nr).clamp(1, 256) * nr;
    Blocking { kc, mc, nc }
}

/// Work below which a second thread costs more (waking it, splitting the
/// packing) than it saves: ~12 µs of one core at full speed.
const MIN_FLOPS_PER_THREAD: usize = 32_000_000;

/// A split call makes up to this many tasks per thread, each of at least
/// `MIN_FLOPS_PER_THREAD / 2`: a helper that only gets a slice of a busy
/// core then holds up the caller for one small task, not for half the
/// product (the caller claims the rest; see `parallel::run_tasks`).
const TASKS_PER_THREAD: usize = 4;

/// `C = alpha·A·B + beta·C` for an `m × n × k` product.
///
/// # Safety
/// Every `(i, p)` with `i < m, p < k` must be readable through `a`, every
/// `(p, j)` with `p < k, j < n` through `b`, every `(i, j)` of `c` readable
/// and writable, distinct `(i, j)` of `c` distinct addresses, C overlapping
/// neither A nor B; `isa` must be supported by this CPU.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: GemmInput>(
    isa: Isa,
    threads: usize,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: View<T>,
    b: View<T>,
    beta: f32,
    c: ViewMut,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        // SAFETY: the caller's contract on C.
        unsafe { scale_c(m, n, beta, c) };
        return;
    }
    let ks = kernels(isa);
    let plan = Plan::choose::<T>(ks, m, n, k, &a, &b, &c);
    let (m, n, a, b, c) = if plan.swap {
        (n, m, b.t(), a.t(), c.t())
    } else {
        (m, n, a, b, c)
    };
    let flops = 2 * m * n * k;
    let nr = ks.nr();
    let (col_tiles, row_tiles) = (n.div_ceil(nr), m.div_ceil(ks.mr));
    let split_cols = col_tiles >= row_tiles;
    let units = if split_cols { col_tiles } else { row_tiles };
    // Each task packs its own copy of the operand that is not split; more
    // tasks than threads only while that duplicated packing stays under
    // ~5% of the arithmetic (about 64 FLOP per cycle).
    let per_elem = |contiguous: bool| if contiguous { 0.25 } else { 1.0 };
    let duplicated = match (split_cols, plan.pack_a, plan.pack_b) {
        (true, true, _) => (m * k) as f64 * per_elem(a.rs == 1),
        (false, _, true) => (k * n) as f64 * per_elem(b.cs == 1),
        _ => 0.0,
    };
    let by_packing = if duplicated > 0.0 {
        (flops as f64 / 64.0 * 0.05 / duplicated) as usize
    } else {
        usize::MAX
    };
    let tasks = if threads <= 1 || flops < 2 * MIN_FLOPS_PER_THREAD {
        1
    } else {
        let most = (threads * TASKS_PER_THREAD).min(by_packing).max(threads);
        task_count_max(flops, MIN_FLOPS_PER_THREAD / 2, most)
    }
    .min(units);
    let block = blocking(ks, k);
    run_tasks(tasks, |t| {
        let (mm, nn, aa, bb, cc) = if split_cols {
            let r = task_range(n, tasks, t, nr);
            // SAFETY: r lies inside 0..n, so these points are inside the views
            // (or one past the end for an empty range, never dereferenced).
            unsafe { (m, r.len(), a, b.offset_cols(r.start), c.offset_cols(r.start)) }
        } else {
            let r = task_range(m, tasks, t, ks.mr);
            // SAFETY: as above, for rows.
            unsafe { (r.len(), n, a.offset_rows(r.start), b, c.offset_rows(r.start)) }
        };
        if mm == 0 || nn == 0 {
            return;
        }
        // SAFETY: a sub-problem of the caller's, on disjoint rows/columns of C.
        unsafe { gemm_block::<T>(ks, block, plan, (mm, nn, k), alpha, aa, bb, beta, cc) };
    });
}

impl<T> View<T> {
    /// # Safety
    /// Column `j` must be inside the view or one past it (then unused).
    unsafe fn offset_cols(self, j: usize) -> Self {
        View {
            ptr: self.ptr.wrapping_offset(j as isize * self.cs),
            ..self
        }
    }
    /// # Safety
    /// Row `i` must be inside the view or one past it (then unused).
    unsafe fn offset_rows(self, i: usize) -> Self {
        View {
            ptr: self.ptr.wrapping_offset(i as isize * self.rs),
            ..self
        }
    }
}

impl ViewMut {
    unsafe fn offset_cols(self, j: usize) -> Self {
        ViewMut {
            ptr: self.ptr.wrapping_offset(j as isize * self.cs),
            ..self
        }
    }
    unsafe fn offset_rows(self, i: usize) -> Self {
        ViewMut {
            ptr: self.ptr.wrapping_offset(i as isize * self.rs),
            ..self
        }
    }
}

/// `C = beta·C` (zeros when `beta == 0`, without reading C).
///
/// # Safety
/// Every `(i, j)` of `c` readable and writable.
unsafe fn scale_c(m: usize, n: usize, beta: f32, c: ViewMut) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: (i, j) is inside the view.
            unsafe {
                let p = c.at(i, j);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
    }
}

/// Orientation and packing decisions for one call.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Plan {
    /// Compute `Cᵀ = Bᵀ·Aᵀ` instead.
    swap: bool,
    pack_a: bool,
    pack_b: bool,
}

thread_local! {
    static FORCED_PLAN: std::cell::Cell<Option<(bool, bool, bool)>> = const { std::cell::Cell::new(None) };
}

/// Forces `(swap, pack_a, pack_b)` for GEMMs called from this thread, so tests
/// reach every path; a forced "read in place" is ignored where it is not
/// possible (non-f32 input, or B rows not contiguous).
pub(crate) fn force_plan(plan: Option<(bool, bool, bool)>) {
    FORCED_PLAN.with(|f| f.set(plan));
}

/// Tile and block sizes of one ISA's kernels on this CPU, for a product
/// with `k` steps (NC depends on k).
pub(crate) fn tiling(isa: Isa, k: usize) -> [usize; 5] {
    let ks = kernels(isa);
    let bl = blocking(ks, k);
    [ks.mr, ks.nr(), bl.kc, bl.mc, bl.nc]
}

impl Plan {
    fn choose<T: GemmInput>(
        ks: &KernelSet,
        m: usize,
        n: usize,
        k: usize,
        a: &View<T>,
        b: &View<T>,
        c: &ViewMut,
    ) -> Plan {
        if let Some((swap, pack_a, pack_b)) = FORCED_PLAN.with(|f| f.get()) {
            let b_cs = if swap { a.rs } else { b.cs };
            let b_cols = if swap { m } else { n };
            return Plan {
                swap,
                pack_a: pack_a || !T::IS_F32,
                pack_b: pack_b || !T::IS_F32 || !(b_cs == 1 || b_cols == 1),
            };
        }
        let keep = Self::estimate::<T>(ks, m, n, k, a, b, c);
        let swap = Self::estimate::<T>(ks, n, m, k, &b.t(), &a.t(), &c.t());
        if swap.1 < keep.1 {
            Plan { swap: true, ..swap.0 }
        } else {
            keep.0
        }
    }

    /// The packing decision for one orientation and its estimated cost in
    /// cycles of one core (arithmetic, packing and stores).
    fn estimate<T: GemmInput>(
        ks: &KernelSet,
        m: usize,
        n: usize,
        k: usize,
        a: &View<T>,
        b: &View<T>,
        c: &ViewMut,
    ) -> (Plan, f64) {
        let l2_floats = cache_sizes().l2 / 4;
        let nr = ks.nr();
        let row_tiles = m.div_ceil(ks.mr);
        let col_tiles = n.div_ceil(nr);
        // B is read in place only when its rows are contiguous (vector
        // loads) and few row tiles reuse it; A (broadcast loads, any stride)
        // when it is small or used by few column panels.
        let pack_b = !T::IS_F32 || !(b.cs == 1 || n == 1) || row_tiles > 4;
        // Rows of A read in place conflict in L1 when their stride is a
        // multiple of a large power of two (many rows map to one cache set);
        // with unit column stride and a stride that spreads the rows over
        // eight or more sets, reading in place is as fast as a packed panel
        // and saves the packing.
        let spread_rows = a.cs == 1 && gcd((a.rs as usize).wrapping_mul(4), 4096) <= 512;
        let pack_a = !T::IS_F32 || (col_tiles > 2 && m * k > l2_floats / 2 && !spread_rows);
        let per_elem = |contiguous: bool| if contiguous { 0.25 } else { 1.0 };
        let mut cost = 0.0;
        if pack_b {
            cost += (k * n) as f64 * per_elem(b.cs == 1);
        }
        if pack_a {
            cost += (m * k) as f64 * per_elem(a.rs == 1);
        }
        // A C with non-unit column stride is written element by element:
        // cheap while C stays in cache, a cache line per element beyond.
        let scattered = if m * n <= l2_floats / 4 { 0.5 } else { 4.0 };
        cost += (m * n) as f64 * if c.cs == 1 { 2.0 / ks.lanes as f64 } else { scattered };
        // Cycles per k step of one tile: M·NV FMAs and M broadcasts (which
        // cost about half an FMA slot each on current x86 cores) over two
        // ports, but at least the 4-cycle FMA latency each accumulator chain
        // waits on; plus a fixed cost per kernel call (setup, C tile).
        let tile_cycles = |h: usize, w: usize| {
            let nv = w.div_ceil(ks.lanes);
            ((h * nv) as f64 + h as f64 / 2.0).max(8.0) / 2.0
        };
        const CALL_CYCLES: f64 = 30.0;
        let full_cols = n / nr;
        let rem_cols = n % nr;
        let mut per_k = 0.0;
        for t in 0..row_tiles {
            let h = tile_rows(m, ks.mr, t).1;
            per_k += full_cols as f64 * tile_cycles(h, nr);
            if rem_cols > 0 {
                per_k += tile_cycles(h, rem_cols);
            }
        }
        let calls = (row_tiles * col_tiles * k.div_ceil(blocking(ks, k).kc)) as f64;
        cost += calls * CALL_CYCLES;
        cost += per_k * k as f64;
        (
            Plan {
                swap: false,
                pack_a,
                pack_b,
            },
            cost,
        )
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Start and height of row tile `t` when `m` rows are cut into
/// `ceil(m / mr)` tiles of near-equal height (so a 32-row product runs
/// 11 + 11 + 10 rather than 14 + 14 + 4).
fn tile_rows(m: usize, mr: usize, t: usize) -> (usize, usize) {
    let tiles = m.div_ceil(mr);
    let base = m / tiles;
    let extra = m % tiles;
    (t * base + t.min(extra), base + usize::from(t < extra))
}

thread_local! {
    static PACK_A: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
    static PACK_B: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// One thread's share: the blocked loops over an `m × n × k` product.
///
/// # Safety
/// As [`gemm`], for this sub-problem.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block<T: GemmInput>(
    ks: &KernelSet,
    bl: Blocking,
    plan: Plan,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: View<T>,
    b: View<T>,
    beta: f32,
    c: ViewMut,
) {
    let (mr, nr) = (ks.mr, ks.nr());
    let kc_max = bl.kc.min(k);
    let mc_max = bl.mc.min(m.div_ceil(mr) * mr);
    let nc_max = bl.nc.min(n.div_ceil(nr) * nr);
    PACK_A.with_borrow_mut(|abuf| {
        PACK_B.with_borrow_mut(|bbuf| {
            let abuf = if plan.pack_a {
                abuf.get(mc_max.div_ceil(mr) * mr * kc_max)
            } else {
                std::ptr::null_mut()
            };
            let bbuf = if plan.pack_b {
                bbuf.get(nc_max * k)
            } else {
                std::ptr::null_mut()
            };
            for jc in (0..n).step_by(bl.nc) {
                let ncb = bl.nc.min(n - jc);
                // The whole k extent of this column block of B is packed
                // once, block after block of KC rows, so that the row blocks
                // of C can then stay in cache while all of k runs over them
                // (C is revisited k/KC times, from L2/L3 instead of memory).
                let nc_pad = ncb.div_ceil(nr) * nr;
                if plan.pack_b {
                    for pc in (0..k).step_by(bl.kc) {
                        let kcb = bl.kc.min(k - pc);
                        for q in 0..ncb.div_ceil(nr) {
                            let w = nr.min(ncb - q * nr);
                            // SAFETY: rows pc..pc+kcb and columns jc+q·nr.. +w
                            // are inside B; block pc starts at pc·nc_pad and
                            // its panel q ends at pc·nc_pad + (q+1)·nr·kcb,
                            // within the k·nc_max floats of the buffer.
                            unsafe {
                                pack_panel(
                                    b.at(pc, jc + q * nr),
                                    b.rs,
                                    b.cs,
                                    w,
                                    kcb,
                                    bbuf.add(pc * nc_pad + q * nr * kcb),
                                    nr,
                                );
                            }
                        }
                    }
                }
                for ic in (0..m).step_by(bl.mc) {
                    let mcb = bl.mc.min(m - ic);
                    let tiles = mcb.div_ceil(mr);
                    for pc in (0..k).step_by(bl.kc) {
                        let kcb = bl.kc.min(k - pc);
                        let beta_eff = if pc == 0 { beta } else { 1.0 };
                        if plan.pack_a {
                            for t in 0..tiles {
                                let (start, h) = tile_rows(mcb, mr, t);
                                // SAFETY: rows ic+start.. +h and k steps
                                // pc.. +kcb are inside A; panel t ends at
                                // (t+1)·mr·kcb, within the buffer.
                                unsafe {
                                    pack_panel(a.at(ic + start, pc), a.cs, a.rs, h, kcb, abuf.add(t * mr * kcb), mr);
                                }
                            }
                        }
                        for q in 0..ncb.div_ceil(nr) {
                            let j = jc + q * nr;
                            let w = nr.min(ncb - q * nr);
                            let (bp, rsb) = if plan.pack_b {
                                // SAFETY: inside the buffer (see packing above).
                                (
                                    unsafe { bbuf.add(pc * nc_pad + q * nr * kcb) }.cast_const(),
                                    nr as isize,
                                )
                            } else {
                                // SAFETY: (pc, j) is inside B; T is f32 whenever
                                // B is read in place (Plan never skips packing
                                // otherwise) and its columns are contiguous.
                                (unsafe { b.at(pc, j) }.cast::<f32>(), b.rs)
                            };
                            for t in 0..tiles {
                                let (start, h) = tile_rows(mcb, mr, t);
                                let (ap, rsa, csa) = if plan.pack_a {
                                    // SAFETY: inside the buffer.
                                    (unsafe { abuf.add(t * mr * kcb) }.cast_const(), 1, mr as isize)
                                } else {
                                    // SAFETY: (ic+start, pc) is inside A, which
                                    // is f32 when read in place.
                                    (unsafe { a.at(ic + start, pc) }.cast::<f32>(), a.rs, a.cs)
                                };
                                let tile = Tile {
                                    k: kcb,
                                    a: ap,
                                    rsa,
                                    csa,
                                    b: bp,
                                    rsb,
                                    // SAFETY: (ic+start, j) is inside C.
                                    c: unsafe { c.at(ic + start, j) },
                                    rsc: c.rs,
                                    csc: c.cs,
                                    n: w,
                                    alpha,
                                    beta: beta_eff,
                                };
                                // SAFETY: the tile is h × w with h <= mr,
                                // w <= nr, all its A, B and C addresses
                                // inside the operands or the packed buffers;
                                // `ks` was chosen for an ISA this CPU runs.
                                unsafe { ks.tile(h, w, plan.pack_a)(&tile) };
                            }
                        }
                    }
                }
            }
        })
    });
}
