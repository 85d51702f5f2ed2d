//! The BLIS-style blocked driver: orientation, packing decisions, cache
//! blocking and the split over threads.
//!
//! Loops, outermost first: `jc` over NC columns of C, `pc` over KC steps of
//! k (B block packed once here, when packed), `ic` over MC rows (A block
//! packed here, when packed), then `jr` over NR-column panels and `ir` over
//! row tiles (the two swapped where the B block fits in a quarter of L2:
//! [`Plan::rows_outer`]), each a microkernel call. KC is chosen so one
//! packed B panel (KC × NR) stays in L1 while the row tiles stream past it,
//! MC so the A block stays in L2, NC so the B block stays in the
//! last-level cache.
//!
//! Packing is a choice, not a rule: an operand is read in place when that
//! is cheaper — B when its rows are contiguous and it is reused by only a
//! few row tiles, A (any strides: the kernel broadcasts single elements)
//! when it fits in L2 or is used by few column panels. Before that the
//! driver may swap the roles of A and B (computing `Cᵀ = Bᵀ·Aᵀ`), picking
//! the orientation with the smaller estimated cost. This is what makes the
//! batch-32 training shapes fast: their large operand is usually read once,
//! straight from the caller's memory. A product whose operands both run
//! along k in memory (`A·Bᵀ` of row-major matrices) and fit in half of L2
//! may instead be computed as dot products with k in the vector lanes
//! ([`dot`]), when that is estimated cheaper: with few outputs (a linear
//! layer's output product in PyTorch's weight layout) the tile kernels
//! would pack B's transpose and fill few lanes.
//!
//! Over threads, a product is split into tasks by rows or by columns of C.
//! Split by rows with a packed B beyond one core's L2, the tasks share one
//! packed B (BLIS's `jc`/`ic` split, [`gemm_shared_b`]): they pack each
//! phase of B together, then each multiplies its own rows, packing only its
//! own blocks of A. Otherwise each task packs its own copy of the operand it
//! does not split (few tasks while that costs little).

use super::dot::{self, DotCall};
use super::kernel::{KernelSet, Tile};
use super::pack::{pack_panel, Scratch};
use super::GemmInput;
use crate::cpu::cache_sizes;
use crate::parallel::{run_tasks, task_range};
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
    /// The addresses of a validated view: made only from a [`MatRef`], so
    /// every `(i, j)` inside its shape is inside its slice, and its strides
    /// (at most the slice length, or 0 for unit extents) fit in `isize`.
    pub(crate) fn new(m: &crate::MatRef<'_, T>) -> Self {
        let (rs, cs) = m.strides();
        View {
            ptr: m.as_ptr(),
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
    /// As [`View::new`], from a [`MatMut`](crate::MatMut) (distinct elements at distinct
    /// addresses), borrowed mutably for as long as the caller uses the view.
    pub(crate) fn new(m: &mut crate::MatMut<'_, f32>) -> Self {
        let (rs, cs) = m.strides();
        ViewMut {
            ptr: m.as_mut_ptr(),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocking {
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

/// Most k steps per packed block.
const KC_MAX: usize = 512;
/// Most MR-high row tiles per packed A block.
const MC_TILES_MAX: usize = 4096;
/// Most NR-wide column panels per packed B block.
const NC_PANELS_MAX: usize = 256;

/// The blocking of one kernel set on this CPU. It depends on the caches and
/// the tile only, never on the product's sizes, so the packing scratch is
/// bounded by it (see [`Blocking::scratch_floats`]).
fn blocking(ks: &KernelSet) -> Blocking {
    let caches = cache_sizes();
    let nr = ks.nr();
    // One B micro-panel (KC × NR floats) in up to twice L1. The panel then
    // no longer stays whole in L1, but the excess streams from L2 with room
    // to spare (a 14 × 32 AVX-512 step needs 128 bytes of B per 14 cycles
    // at two vector FMAs a cycle, per 28 at one), while each C tile is read
    // and written once per KC steps: at 2048² C lives in memory and its
    // update took a fifth of the microkernel's samples with KC = 256 (two
    // thirds of a 48 KiB L1). Interleaved in one process, KC = 512 against
    // 256 on a Zen 5 core (48 KiB L1): 1024² +6%, 2048² +7–12%,
    // (8000,784,500) +12%; against 336 (four thirds of L1, the earlier
    // rule) on a Zen 4 core (32 KiB L1, one zmm FMA a cycle): 512² +3.5%,
    // 1024² +3–4%, (8000,784,500) +5%, 256² level.
    let kc = (caches.l1d * 2 / (nr * 4)).clamp(64, KC_MAX) / 8 * 8;
    // The A block (MC × KC) in half of L2.
    let mc = ((caches.l2 / 2 / (kc * 4)) / ks.mr).clamp(1, MC_TILES_MAX) * ks.mr;
    // The packed B block (KC × NC) in a quarter of the (shared) last level.
    let nc = ((caches.l3 / 4 / (kc * 4)) / nr).clamp(1, NC_PANELS_MAX) * nr;
    Blocking { kc, mc, nc }
}

impl Blocking {
    /// This blocking for a product of depth `k`: its k steps cut into the
    /// fewest blocks of at most KC, all of one length (a multiple of 8, the
    /// last block shorter by what rounding added), so that no block is a
    /// short remainder that pays a C tile's update for a few steps (784 =
    /// 392 + 392 with KC = 512, not 512 + 272). Every task of a call uses
    /// the same blocks, so the k steps of each element of C are grouped the
    /// same way on any number of threads. `mr`: the rows of the register
    /// tile, of which MC is a whole number.
    pub(crate) fn for_depth(self, k: usize, mr: usize) -> Blocking {
        let blocks = k.div_ceil(self.kc).max(1);
        // ≤ KC: KC is a multiple of 8 and k / blocks ≤ KC.
        let kc = k.div_ceil(blocks).div_ceil(8).saturating_mul(8).min(self.kc);
        // The A block keeps the L2 share of the full one (MC × KC floats):
        // with fewer k steps it holds more rows, so B's panels are read
        // again for fewer blocks of A. Within MC × KC, the scratch bound.
        let mc = (self.mc * self.kc / kc / mr).clamp(1, MC_TILES_MAX) * mr;
        Blocking { kc, mc, ..self }
    }

    /// Floats of packing scratch one thread needs, at most, for A and for B:
    /// `MC × KC` and `KC × NC`. With `KC ≤ 512`, `MC ≤ 4096·MR` and
    /// `NC ≤ 256·NR` these are below 2³⁰ floats for any tile up to 32 × 64,
    /// whatever `m`, `n` and `k` are.
    pub(crate) fn scratch_floats(&self) -> (usize, usize) {
        (self.mc * self.kc, self.kc * self.nc)
    }
}

/// Work below which a product stays on one thread outside a parallel
/// region: 4 MFLOP, about 50 µs of one core. Waking a sleeping worker takes
/// tens of microseconds, but the caller never waits for a worker that has
/// not started (it claims the tasks left), so a split call is at worst about
/// one small task slower than one thread, and back-to-back calls find the
/// workers still spinning.
const MIN_FLOPS_PER_THREAD: usize = 4_000_000;

/// As [`MIN_FLOPS_PER_THREAD`] inside a
/// [`parallel_region`](crate::parallel_region), where the workers are
/// spinning: handing over a task then costs about a microsecond, so a
/// product of a few MFLOP (tens of microseconds) pays for a second thread.
const MIN_FLOPS_AWAKE: usize = 2_000_000;

/// A split call makes up to this many tasks per thread, each of at least
/// `MIN_FLOPS_PER_THREAD / 2`: a helper that only gets a slice of a busy
/// core then holds up the caller for one small task, not for half the
/// product (the caller claims the rest; see `parallel::run_tasks`).
const TASKS_PER_THREAD: usize = 4;

/// How many tasks a product of `flops` splits into over `threads`: one
/// below two tasks' worth of work (the per-task minimum outside or inside a
/// parallel region), else up to [`TASKS_PER_THREAD`] per thread of at least
/// half the minimum each, at most `most` (but at least one per thread), and
/// a whole number per thread. Also used by the fused optimizer updates.
pub(crate) fn split_tasks(flops: f64, threads: usize, most: usize) -> usize {
    let min_flops = crate::parallel::min_per_task(MIN_FLOPS_PER_THREAD, MIN_FLOPS_AWAKE);
    if threads <= 1 || flops < 2.0 * min_flops as f64 {
        return 1;
    }
    let most = threads.saturating_mul(TASKS_PER_THREAD).min(most).max(threads);
    let by_size = (flops / (min_flops as f64 / 2.0).max(1.0)) as usize;
    let t = by_size.clamp(1, most.min(crate::parallel::MAX_TASKS));
    // A whole number of tasks per thread (3 tasks on 2 threads leave one
    // thread a third of the product idle at the end).
    if t > threads {
        t / threads * threads
    } else {
        t
    }
}

/// Everything the driver decides for one call before it touches memory:
/// orientation, packing, blocking, the split over threads and the scratch
/// each task needs. A pure function of the sizes, strides, element type and
/// thread bound, so it can be examined (and fuzzed) for sizes far too large
/// to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CallPlan {
    pub plan: Plan,
    pub block: Blocking,
    /// `m`, `n` after the orientation (swapped when `plan.swap`).
    pub m: usize,
    pub n: usize,
    pub tasks: usize,
    pub split_cols: bool,
    /// The tasks split the rows and share one packed B: the caller's
    /// scratch holds `b_blocks` KC blocks of B at a time, packed by all the
    /// tasks together, and each task packs only its own rows of A.
    pub shared_b: bool,
    /// KC blocks of B packed per shared phase (when `shared_b`).
    pub b_blocks: usize,
    /// Floats of scratch one task packs into (A, B); 0 when not packed. With
    /// a shared B, the B figure is the caller's one shared buffer.
    pub scratch: (usize, usize),
}

/// Plans an `m × n × k` product (`m, n, k` as the caller gave them, with
/// `a`, `b`, `c` the caller's strides). Needs `m, n ≥ 1` and `k ≥ 1`.
/// `dot`: `None` lets the estimate choose the path; `Some(true)` takes the
/// dot-product path exactly where it applies, `Some(false)` never (so the
/// sub-products of a product planned as a whole, the fused optimizer's
/// strips of rows, take the path the whole product takes and give its bits).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_call(
    isa: Isa,
    threads: usize,
    dot: Option<bool>,
    (m, n, k): (usize, usize, usize),
    is_f32: bool,
    a: (isize, isize),
    b: (isize, isize),
    c: (isize, isize),
) -> CallPlan {
    let ks = kernels(isa);
    let block = blocking(ks).for_depth(k, ks.mr);
    let plan = Plan::choose(ks, block, dot, m, n, k, is_f32, a, b, c);
    let (m, n, a) = if plan.swap { (n, m, (b.1, b.0)) } else { (m, n, a) };
    // 2·m·n·k can exceed u64 for valid views (m·n and k are each below
    // 2⁶³): count in f64, which is exact enough for a threshold.
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    let nr = ks.nr();
    let row_height = if plan.dot { dot::tile_for(ks.lanes).0 } else { ks.mr };
    let (col_tiles, row_tiles) = (n.div_ceil(nr), m.div_ceil(row_height));
    // The dot-product path splits by rows only.
    let split_cols = !plan.dot && col_tiles >= row_tiles;
    let units = if split_cols { col_tiles } else { row_tiles };
    // Split by rows with a B larger than half of one core's L2, the tasks
    // share one packed B (`gemm_shared_b`): a copy per task would be read
    // from the last-level cache or memory by every task. A smaller B is
    // cheaper packed by each task from cache into its own L2 than shared
    // (one more hand-over per phase, and half of a shared panel sits in the
    // other core's cache). Otherwise each task packs its own copy of the
    // operand that is not split; more tasks than threads only while that
    // duplicated packing stays under ~5% of the arithmetic (about 64 FLOP
    // per cycle).
    let b_elems = k as f64 * n as f64;
    let forced = FORCED_SHARED_B.with(|f| f.get());
    // The dot-product path's transposed B is made once, by the caller,
    // before the split: never shared by phases, never duplicated.
    let share_b =
        !split_cols && plan.pack_b && !plan.dot && (forced.is_some() || b_elems > (cache_sizes().l2 / 8) as f64);
    let duplicated = match (split_cols, plan.pack_a, plan.pack_b && !share_b && !plan.dot) {
        (true, true, _) => m as f64 * k as f64 * pack_cycles(a.0, a.1, is_f32),
        (false, _, true) => b_elems * pack_cycles(b.1, b.0, is_f32),
        _ => 0.0,
    };
    let by_packing = if duplicated > 0.0 {
        // A float-to-integer `as` saturates, so any ratio is a valid count.
        (flops / 64.0 * 0.05 / duplicated) as usize
    } else {
        usize::MAX
    };
    let tasks = split_tasks(flops, threads, by_packing).min(units);
    let (mr, nr) = (ks.mr, ks.nr());
    let kc = block.kc.min(k);
    let scratch_a = if plan.pack_a {
        block.mc.min(m.div_ceil(mr) * mr) * kc
    } else {
        0
    };
    let shared_b = share_b && tasks > 1;
    let nc_max = block.nc.min(n.div_ceil(nr) * nr);
    // As many KC blocks of B per shared phase as fit in one B block's
    // scratch (KC × NC): a narrow B is packed whole, in one phase.
    let b_blocks = if shared_b {
        (block.nc / nc_max).clamp(1, k.div_ceil(block.kc))
    } else {
        1
    };
    let b_blocks = forced.map_or(b_blocks, |f| f.clamp(1, b_blocks));
    let scratch_b = match (plan.pack_b, plan.dot) {
        (false, _) => 0,
        // Within the B bound by `Plan::choose`'s condition.
        (true, true) => dot_b_floats(n, k),
        (true, false) => b_blocks * nc_max * kc,
    };
    // Row tiles outermost in a block where its B (at most KC × NC floats)
    // fits in a quarter of L2 beside the A block (half of L2): then each
    // row tile's A stays in L1 across the panels, read in place or packed,
    // and C is written a row tile at a time, whole lines in address order,
    // instead of a column of tiles down a strip of C. On a Zen 3 core at
    // k = 32 (a batch-32 weight gradient, (784,32,500), whose 1.5 MB C lives
    // beyond L2) this gained 9–25% on one thread and up to 45% on two,
    // timed against the previous order alternately in one process (and its
    // A=T view as much). Deep blocks keep panels outermost, the B panel in
    // L1 (BLIS's order).
    let rows_outer = match FORCED_ROWS_OUTER.with(|f| f.get()) {
        Some(order) => order,
        None => (kc as f64) * (nc_max as f64) * 4.0 <= (cache_sizes().l2 / 4) as f64,
    };
    let plan = Plan {
        rows_outer: rows_outer && !plan.dot,
        ..plan
    };
    CallPlan {
        plan,
        block,
        m,
        n,
        tasks,
        split_cols,
        shared_b,
        b_blocks,
        scratch: (scratch_a, scratch_b),
    }
}

/// `C = alpha·A·B + beta·C` for an `m × n × k` product.
///
/// # Safety
/// Every `(i, p)` with `i < m, p < k` must be readable through `a`, every
/// `(p, j)` with `p < k, j < n` through `b`, every `(i, j)` of `c` readable
/// and writable, distinct `(i, j)` of `c` distinct addresses, C overlapping
/// neither A nor B; `isa` must be supported by this CPU; the strides of the
/// three views at most `isize::MAX` (true of validated views). `dot` as
/// for [`plan_call`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: GemmInput>(
    isa: Isa,
    threads: usize,
    dot: Option<bool>,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: View<T>,
    b: View<T>,
    beta: f32,
    c: ViewMut,
) -> crate::Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 || alpha == 0.0 {
        // SAFETY: the caller's contract on C.
        unsafe { scale_c(m, n, beta, c) };
        return Ok(());
    }
    let ks = kernels(isa);
    let cp = plan_call(
        isa,
        threads,
        dot,
        (m, n, k),
        T::IS_F32,
        (a.rs, a.cs),
        (b.rs, b.cs),
        (c.rs, c.cs),
    );
    if cp.plan.dot {
        let run = |(b, csb): (*const f32, isize)| {
            // SAFETY: the caller's contract, with A's column stride 1 (the
            // plan's condition): each (i, p) of A at a + i·rs + p; each (p, j)
            // of B at b + p + j·csb, B's own view or its transpose in scratch
            // (which overlaps nothing the caller passed).
            let d = unsafe {
                DotCall::new(
                    (m, n, k),
                    (a.ptr as *const f32, a.rs),
                    (b, csb),
                    (c.ptr, c.rs, c.cs),
                    alpha,
                    beta,
                )
            };
            let (tasks, rows) = (cp.tasks, dot::tile_for(ks.lanes).0);
            run_tasks(tasks, threads, |t| {
                dot::dot_gemm(isa, &d.rows(task_range(m, tasks, t, rows)));
            })
        };
        if !cp.plan.pack_b {
            // The plan's condition: B's row stride is 1.
            return run((b.ptr as *const f32, b.cs));
        }
        // B's rows are contiguous (the plan's condition): transpose it into
        // this thread's B scratch, row j of the transpose holding column j.
        // The tasks only read it, and none of them packs (so none borrows
        // this thread's scratch while it is held here).
        let ld = dot_b_stride(k);
        return PACK_B.with_borrow_mut(|buf| {
            let Some(bt) = buf.get(cp.scratch.1) else {
                return Err(out_of_memory(cp.scratch.1 * 4));
            };
            // SAFETY: every (p, j) of B is readable (the caller's contract),
            // at b + p·rs + j with unit column stride; `bt` holds n·ld ≥ the
            // floats written, (j, p) at j·ld + p, and is this thread's own
            // scratch, overlapping no view.
            unsafe { pack_panel(b.ptr, b.cs, b.rs, k, n, bt, ld) };
            run((bt as *const f32, ld as isize))
        });
    }
    let (m, n, a, b, c) = if cp.plan.swap {
        (n, m, b.t(), a.t(), c.t())
    } else {
        (m, n, a, b, c)
    };
    if cp.shared_b {
        // SAFETY: the caller's contract, for the oriented problem.
        return unsafe { gemm_shared_b::<T>(ks, &cp, threads, k, (alpha, a, b, beta, c)) };
    }
    let (tasks, nr) = (cp.tasks, ks.nr());
    let no_memory = std::sync::atomic::AtomicBool::new(false);
    run_tasks(tasks, threads, |t| {
        let (mm, nn, aa, bb, cc) = if cp.split_cols {
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
        if !unsafe { gemm_block::<T>(ks, cp.block, cp.plan, (mm, nn, k), alpha, aa, bb, beta, cc) } {
            no_memory.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })?;
    if no_memory.into_inner() {
        let (sa, sb) = cp.scratch;
        return Err(out_of_memory((sa + sb) * 4));
    }
    Ok(())
}

impl<T> View<T> {
    /// # Safety
    /// Column `j` must be inside the view or one past it (then unused).
    unsafe fn offset_cols(self, j: usize) -> Self {
        View {
            ptr: self.ptr.wrapping_offset((j as isize).wrapping_mul(self.cs)),
            ..self
        }
    }
    /// # Safety
    /// Row `i` must be inside the view or one past it (then unused).
    unsafe fn offset_rows(self, i: usize) -> Self {
        View {
            ptr: self.ptr.wrapping_offset((i as isize).wrapping_mul(self.rs)),
            ..self
        }
    }
}

impl ViewMut {
    unsafe fn offset_cols(self, j: usize) -> Self {
        ViewMut {
            ptr: self.ptr.wrapping_offset((j as isize).wrapping_mul(self.cs)),
            ..self
        }
    }
    unsafe fn offset_rows(self, i: usize) -> Self {
        ViewMut {
            ptr: self.ptr.wrapping_offset((i as isize).wrapping_mul(self.rs)),
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
pub(crate) struct Plan {
    /// Compute `Cᵀ = Bᵀ·Aᵀ` instead.
    pub swap: bool,
    pub pack_a: bool,
    pub pack_b: bool,
    /// Every element a dot product along k ([`dot`]), A read in place, and
    /// B too unless `pack_b`: then B (rows contiguous) is first transposed
    /// into scratch, so that its columns are. `swap`, `pack_a` and
    /// `rows_outer` are then `false`.
    pub dot: bool,
    /// Within a block, row tiles outermost and the column panels inside
    /// (the whole B block read per row tile, from L2), instead of panels
    /// outermost (one B panel read from L1 per tile, the A block from L2);
    /// set by [`plan_call`] where the B block fits in a quarter of L2. Same
    /// tiles, same arithmetic: only the order in which they run.
    pub rows_outer: bool,
}

thread_local! {
    static FORCED_DOT: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    static FORCED_ROWS_OUTER: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// With `Some(true)`, the tile paths of GEMMs called from this thread run
/// each block's row tiles outermost, `Some(false)` its column panels
/// outermost, whatever the sizes; `None` restores the automatic choice.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn force_rows_outer(rows: Option<bool>) {
    FORCED_ROWS_OUTER.with(|f| f.set(rows));
}

/// With `Some(true)`, GEMMs called from this thread take the dot-product
/// path wherever it applies (f32, A's rows and B's columns contiguous),
/// whatever the cost; `Some(false)` never; `None` restores the automatic
/// choice.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn force_dot(dot: Option<bool>) {
    FORCED_DOT.with(|f| f.set(dot));
}

thread_local! {
    static FORCED_SHARED_B: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// With `Some(most)`, GEMMs called from this thread that split by rows with
/// B packed share one packed B whatever its size, packing at most `most` KC
/// blocks of it per phase; `None` restores the automatic choice. So tests
/// reach the shared path, and products of several phases, at sizes small
/// enough to run.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn force_shared_b(most: Option<usize>) {
    FORCED_SHARED_B.with(|f| f.set(most));
}

thread_local! {
    static FORCED_PLAN: std::cell::Cell<Option<(bool, bool, bool)>> = const { std::cell::Cell::new(None) };
}

/// Forces `(swap, pack_a, pack_b)` for GEMMs called from this thread, so tests
/// reach every path; a forced "read in place" is ignored where it is not
/// possible (non-f32 input, or B rows not contiguous).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn force_plan(plan: Option<(bool, bool, bool)>) {
    FORCED_PLAN.with(|f| f.set(plan));
}

/// The most packing scratch one task of `isa` may use, for A and for B,
/// whatever the product (see [`Blocking::scratch_floats`]).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn scratch_bound(isa: Isa) -> (usize, usize) {
    blocking(kernels(isa)).scratch_floats()
}

/// Tile and block sizes of one ISA's kernels on this CPU.
pub(crate) fn tiling(isa: Isa) -> [usize; 5] {
    let ks = kernels(isa);
    let bl = blocking(ks);
    [ks.mr, ks.nr(), bl.kc, bl.mc, bl.nc]
}

impl Plan {
    /// Strides are `(row, col)` of A (m × k), B (k × n) and C (m × n).
    #[allow(clippy::too_many_arguments)]
    fn choose(
        ks: &KernelSet,
        block: Blocking,
        dot_choice: Option<bool>,
        m: usize,
        n: usize,
        k: usize,
        is_f32: bool,
        a: (isize, isize),
        b: (isize, isize),
        c: (isize, isize),
    ) -> Plan {
        if let Some((swap, pack_a, pack_b)) = FORCED_PLAN.with(|f| f.get()) {
            let b_cs = if swap { a.0 } else { b.1 };
            let b_cols = if swap { m } else { n };
            return Plan {
                swap,
                pack_a: pack_a || !is_f32,
                pack_b: pack_b || !is_f32 || !(b_cs == 1 || b_cols == 1),
                dot: false,
                rows_outer: false,
            };
        }
        let t = |(r, c): (isize, isize)| (c, r);
        let keep = Self::estimate(ks, block, m, n, k, is_f32, a, b, c);
        let swap = Self::estimate(ks, block, n, m, k, is_f32, t(b), t(a), t(c));
        let (best, cost) = if swap.1 < keep.1 {
            (Plan { swap: true, ..swap.0 }, swap.1)
        } else {
            keep
        };
        // Dot products along k when A's rows run along k in memory and B's
        // columns do, or B's rows are contiguous and B is small enough to
        // be transposed once into scratch (`pack_b`): a narrow B (n = 10,
        // an output layer) fills 10 of 16 lanes in the tile kernels' column
        // vectors, all of them here. Only where both fit together in half of
        // L2, where the estimate (arithmetic only) holds: beyond that the
        // tile kernels' packed panels keep the reused data in L1 and this
        // path would not.
        let in_place = b.0 == 1;
        let transposed = b.1 == 1 && dot_b_floats(n, k) <= block.scratch_floats().1;
        let dot_applies = is_f32 && a.1 == 1 && (in_place || transposed);
        let fits = (m as f64 + n as f64) * k as f64 <= (cache_sizes().l2 / 8) as f64;
        let mut dot_cost = dot::cycles(ks.lanes, m, n, k);
        if !in_place {
            dot_cost += k as f64 * n as f64 * pack_cycles(b.0, b.1, is_f32);
        }
        let dot = match dot_choice.or_else(|| FORCED_DOT.with(|f| f.get())) {
            Some(forced) => forced && dot_applies,
            None => dot_applies && fits && dot_cost < cost,
        };
        if dot {
            Plan {
                swap: false,
                pack_a: false,
                pack_b: !in_place,
                dot: true,
                rows_outer: false,
            }
        } else {
            best
        }
    }

    /// The packing decision for one orientation and its estimated cost in
    /// cycles of one core (arithmetic, packing and stores). Counted in f64:
    /// products of three sizes can exceed any integer type's range.
    #[allow(clippy::too_many_arguments)]
    fn estimate(
        ks: &KernelSet,
        block: Blocking,
        m: usize,
        n: usize,
        k: usize,
        is_f32: bool,
        a: (isize, isize),
        b: (isize, isize),
        c: (isize, isize),
    ) -> (Plan, f64) {
        let caches = cache_sizes();
        let l2_floats = (caches.l2 / 4) as f64;
        let nr = ks.nr();
        let rows = RowTiles::new(m, ks.mr);
        let row_tiles = rows.tiles;
        let col_tiles = n.div_ceil(nr);
        let (mf, nf, kf) = (m as f64, n as f64, k as f64);
        // B is read in place only when its rows are contiguous (vector
        // loads) and few row tiles reuse it; A (broadcast loads, any stride)
        // when it is small or used by few column panels.
        // A B whose rows spread over eight or more L1 sets stays in L1 in
        // place however many row tiles reuse it, so packing it would only
        // add a copy, when it is short (k ≤ 32 rows per panel; measured:
        // (32,10,500) on AVX2, six row tiles, 16% faster in place) or fits
        // whole in half of L1, beside the row tile's A and C (measured on a
        // Zen 3 core, AVX2, 32 KiB L1, one thread, alternating with the
        // packed plan in one process: 64² (B 16 KiB) +9–20%, (48,64,64)
        // +11–12%; (64,128,64) with B = all of L1 −3% to +8% over three
        // runs, 128² (B twice L1) level: packed there).
        let b_in_l1 = spread(b.0) && (k <= 32 || kf * nf * 4.0 <= (caches.l1d / 2) as f64);
        let pack_b = !is_f32 || !(b.1 == 1 || n == 1) || (row_tiles > 4 && !b_in_l1);
        // Rows of A read in place conflict in L1 when their stride is a
        // multiple of a large power of two (many rows map to one cache set);
        // with unit column stride and a stride that spreads the rows over
        // eight or more sets, reading in place is as fast as a packed panel
        // and saves the packing.
        let spread_rows = a.1 == 1 && spread(a.0);
        let pack_a = !is_f32 || (col_tiles > 2 && mf * kf > l2_floats / 2.0 && !spread_rows);
        let mut cost = 0.0;
        if pack_b {
            cost += kf * nf * pack_cycles(b.1, b.0, is_f32);
        }
        if pack_a {
            cost += mf * kf * pack_cycles(a.0, a.1, is_f32);
        }
        // A C with non-unit column stride is written element by element:
        // cheap while C stays in cache, a cache line per element beyond.
        let scattered = if mf * nf <= l2_floats / 4.0 { 0.5 } else { 4.0 };
        cost += mf * nf * if c.1 == 1 { 2.0 / ks.lanes as f64 } else { scattered };
        // Cycles per k step of one tile: M·NV FMAs and M broadcasts (which
        // cost about half an FMA slot each on current x86 cores) over two
        // ports, but at least the 4-cycle FMA latency each accumulator chain
        // waits on; plus a fixed cost per kernel call (setup, C tile).
        let tile_cycles = |h: usize, w: usize| {
            let nv = w.div_ceil(ks.lanes);
            ((h * nv) as f64 + h as f64 / 2.0).max(8.0) / 2.0
        };
        const CALL_CYCLES: f64 = 30.0;
        let full_cols = (n / nr) as f64;
        let rem_cols = n % nr;
        // The row tiles come in at most two heights.
        let (base, extra) = (rows.base, rows.extra);
        let mut per_k = 0.0;
        for (count, h) in [(extra, base + 1), (row_tiles - extra, base)] {
            if count == 0 || h == 0 {
                continue;
            }
            let mut one = full_cols * tile_cycles(h, nr);
            if rem_cols > 0 {
                one += tile_cycles(h, rem_cols);
            }
            per_k += count as f64 * one;
        }
        let calls = row_tiles as f64 * col_tiles as f64 * k.div_ceil(block.kc) as f64;
        cost += calls * CALL_CYCLES;
        cost += per_k * kf;
        (
            Plan {
                swap: false,
                pack_a,
                pack_b,
                dot: false,
                rows_outer: false,
            },
            cost,
        )
    }
}

/// Cycles per element of packing a panel whose source steps by `inner`
/// along the panel's width (rows of A, columns of B) and by `outer` along k:
/// whole contiguous runs are a copy; f32 with contiguous k runs goes through
/// the 8 × 8 register transposes on x86 (about half a cycle per element: a
/// fifth of a (32,10,500) B=T call packing its 5,000 elements on a Zen 5
/// core); anything else moves element by element.
fn pack_cycles(inner: isize, outer: isize, is_f32: bool) -> f64 {
    if inner == 1 {
        0.25
    } else if outer == 1 && is_f32 && cfg!(target_arch = "x86_64") {
        0.5
    } else {
        1.0
    }
}

/// The error of a call whose packing scratch (`bytes` of it) could not be had.
fn out_of_memory(bytes: usize) -> crate::Error {
    crate::Error::OutOfMemory {
        what: "GEMM packing scratch",
        bytes,
    }
}

/// Row stride of B transposed for the dot-product path (`k` rounded up to
/// whole cache lines, one line more where that stride would send the rows to
/// few L1 sets), saturating for sizes that can never be planned this way.
fn dot_b_stride(k: usize) -> usize {
    let ld = k.div_ceil(16).saturating_mul(16);
    if spread(ld as isize) {
        ld
    } else {
        ld.saturating_add(16)
    }
}

/// Floats of scratch B transposed for the dot-product path takes.
fn dot_b_floats(n: usize, k: usize) -> usize {
    n.saturating_mul(dot_b_stride(k))
}

/// Whether rows `stride` floats apart spread over eight or more of the
/// 64-byte sets of a 4 KiB way (a stride that is a multiple of a large
/// power of two sends many rows to one set, where they evict each other).
fn spread(stride: isize) -> bool {
    gcd((stride as usize).wrapping_mul(4), 4096) <= 512
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The row tiles of a block of `m` rows: `ceil(m / mr)` tiles of
/// near-equal height (so a 32-row product runs 11 + 11 + 10 rather than
/// 14 + 14 + 4). Computed once per block, so the loop over the tiles does
/// no division.
#[derive(Clone, Copy, Debug)]
struct RowTiles {
    tiles: usize,
    base: usize,
    extra: usize,
}

impl RowTiles {
    /// Needs `mr ≥ 1`.
    fn new(m: usize, mr: usize) -> RowTiles {
        let tiles = m.div_ceil(mr);
        let base = m.checked_div(tiles).unwrap_or(0);
        let extra = m.checked_rem(tiles).unwrap_or(0);
        RowTiles { tiles, base, extra }
    }

    /// Start and height of tile `t`.
    #[inline]
    fn get(&self, t: usize) -> (usize, usize) {
        (
            t * self.base + t.min(self.extra),
            self.base + usize::from(t < self.extra),
        )
    }
}

thread_local! {
    static PACK_A: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
    static PACK_B: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Sizes this thread's packing scratch for the largest blocking of any ISA
/// this CPU runs, so that no later GEMM on it allocates. The pages are not
/// touched here (the memory comes zeroed from the system), so a thread that
/// only ever runs small products stays small in resident memory.
pub(crate) fn prepare_thread_scratch() {
    let (mut a, mut b) = (0, 0);
    for isa in Isa::ALL {
        if isa.is_supported() {
            let (sa, sb) = blocking(kernels(isa)).scratch_floats();
            a = a.max(sa);
            b = b.max(sb);
        }
    }
    let _ = PACK_A.try_with(|s| s.borrow_mut().reserve(a));
    let _ = PACK_B.try_with(|s| s.borrow_mut().reserve(b));
}

/// One thread's share: the blocked loops over an `m × n × k` product.
///
/// Loops, outermost first: `jc` over NC columns, `pc` over KC steps of k
/// (the KC × NC block of B packed here, when packed), then
/// [`multiply_block`] for the rows. The scratch is therefore at most one A
/// block and one B block, whatever `m`, `n` and `k` are.
///
/// Returns false, having written nothing, when its scratch cannot be had.
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
) -> bool {
    let nr = ks.nr();
    // The blocking bounds every block, so this product is below the bound
    // of `Blocking::scratch_floats` (no overflow).
    let kc_max = bl.kc.min(k);
    let nc_max = bl.nc.min(n.div_ceil(nr) * nr);
    PACK_B.with_borrow_mut(|bbuf| {
        let bbuf = match plan.pack_b {
            true => bbuf.get(nc_max * kc_max),
            false => Some(std::ptr::null_mut()),
        };
        let Some(bbuf) = bbuf else {
            return false;
        };
        with_a_scratch(ks, bl, plan, (m, k), |abuf| {
            for jc in (0..n).step_by(bl.nc) {
                let ncb = bl.nc.min(n - jc);
                for pc in (0..k).step_by(bl.kc) {
                    let kcb = bl.kc.min(k - pc);
                    if plan.pack_b {
                        // SAFETY: rows pc.. +kcb and columns jc.. +ncb are
                        // inside B; the panels end at ncb.div_ceil(nr)·nr·kcb
                        // ≤ nc_max·kc_max floats, the buffer's length.
                        unsafe { pack_b_panels(ks, b, (pc, kcb), (jc, ncb), 0..ncb.div_ceil(nr), bbuf) };
                    }
                    let beta_eff = if pc == 0 { beta } else { 1.0 };
                    // SAFETY: the caller's contract; the block of B is packed
                    // at `bbuf` when B is packed; `abuf` holds an MC × KC block.
                    unsafe {
                        let at = BlockAt {
                            cols: (jc, ncb),
                            steps: (pc, kcb),
                            bbuf,
                            abuf,
                        };
                        multiply_block::<T>(ks, bl, plan, m, at, (alpha, a, b, beta_eff, c))
                    };
                }
            }
        })
    })
}

/// A product split by rows over tasks that share one packed B (BLIS's
/// `jc`/`ic` split): for each NC block of columns and each phase of
/// `cp.b_blocks` KC blocks of k, the tasks first pack the phase's B panels
/// together into the caller's scratch, then each multiplies its own rows
/// (packing only its own blocks of A) against all of it. Every task of a
/// phase is done before the next phase repacks the buffer (`run_tasks`
/// returns when all its tasks are), so B is packed once, not once per task.
/// The k steps of each element of C run in the same order as on one thread:
/// the same bits.
///
/// # Safety
/// As [`gemm`], for the oriented `cp.m × cp.n × k` problem.
unsafe fn gemm_shared_b<T: GemmInput>(
    ks: &KernelSet,
    cp: &CallPlan,
    threads: usize,
    k: usize,
    (alpha, a, b, beta, c): (f32, View<T>, View<T>, f32, ViewMut),
) -> crate::Result<()> {
    let (m, n, bl, plan, tasks) = (cp.m, cp.n, cp.block, cp.plan, cp.tasks);
    let (mr, nr) = (ks.mr, ks.nr());
    let kc_max = bl.kc.min(k);
    let nc_max = bl.nc.min(n.div_ceil(nr) * nr);
    // One KC block of the phase: its panels, padded to NR columns.
    let block_floats = kc_max * nc_max;
    PACK_B.with_borrow_mut(|bs| {
        let Some(bbuf) = bs.get(cp.b_blocks * block_floats) else {
            return Err(out_of_memory((cp.scratch.0 + cp.scratch.1) * 4));
        };
        let bbuf = SharedBuf(bbuf);
        let no_memory = std::sync::atomic::AtomicBool::new(false);
        for jc in (0..n).step_by(bl.nc) {
            let ncb = bl.nc.min(n - jc);
            let panels = ncb.div_ceil(nr);
            let phase_k = bl.kc * cp.b_blocks;
            for p0 in (0..k).step_by(phase_k) {
                let blocks = phase_k.min(k - p0).div_ceil(bl.kc);
                let block = |i: usize| {
                    let pc = p0 + i * bl.kc;
                    (pc, bl.kc.min(k - pc))
                };
                let units = blocks * panels;
                let pack_tasks = tasks.min(units);
                run_tasks(pack_tasks, threads, |t| {
                    for u in task_range(units, pack_tasks, t, 1) {
                        let (i, q) = (u / panels, u % panels);
                        // SAFETY: block i's k steps and the columns jc.. +ncb
                        // are inside B; block i starts at i·block_floats of a
                        // buffer of blocks·block_floats floats and its panels
                        // end at panels·nr·kcb ≤ block_floats after that.
                        // Tasks pack disjoint panels, and nothing reads the
                        // buffer until every task of this phase is done.
                        unsafe { pack_b_panels(ks, b, block(i), (jc, ncb), q..q + 1, bbuf.at(i * block_floats)) };
                    }
                })?;
                run_tasks(tasks, threads, |t| {
                    let r = task_range(m, tasks, t, mr);
                    if r.is_empty() {
                        return;
                    }
                    // SAFETY: r lies inside 0..m, so these rows are inside
                    // the views.
                    let (aa, cc) = unsafe { (a.offset_rows(r.start), c.offset_rows(r.start)) };
                    let ok = with_a_scratch(ks, bl, plan, (r.len(), k), |abuf| {
                        for i in 0..blocks {
                            let (pc, kcb) = block(i);
                            let beta_eff = if pc == 0 { beta } else { 1.0 };
                            // SAFETY: the caller's contract, for rows r (C's
                            // rows disjoint between tasks); block i of B is
                            // packed (above) and only read here.
                            unsafe {
                                let bbuf = bbuf.at(i * block_floats);
                                let at = BlockAt {
                                    cols: (jc, ncb),
                                    steps: (pc, kcb),
                                    bbuf,
                                    abuf,
                                };
                                multiply_block::<T>(ks, bl, plan, r.len(), at, (alpha, aa, b, beta_eff, cc))
                            };
                        }
                    });
                    if !ok {
                        no_memory.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                })?;
                if no_memory.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(out_of_memory((cp.scratch.0 + cp.scratch.1) * 4));
                }
            }
        }
        Ok(())
    })
}

/// The caller's shared B buffer, handed to the tasks of one call.
#[derive(Clone, Copy)]
struct SharedBuf(*mut f32);

// SAFETY: the buffer outlives the call's tasks (the caller holds it until
// `run_tasks` returns), tasks write disjoint panels of it in the packing
// phase and only read it in the multiplying phase, and the phases are
// ordered by `run_tasks` (it returns only when every task is done, with
// Acquire/Release on the task counts).
unsafe impl Send for SharedBuf {}
// SAFETY: as above.
unsafe impl Sync for SharedBuf {}

impl SharedBuf {
    /// The address `floats` floats in; callers keep inside the buffer.
    fn at(self, floats: usize) -> *mut f32 {
        self.0.wrapping_add(floats)
    }
}

/// Runs `f` with this thread's A scratch (room for one MC × KC block of
/// this product; null when A is not packed). False, without calling `f`,
/// when the scratch cannot be had.
fn with_a_scratch(ks: &KernelSet, bl: Blocking, plan: Plan, (m, k): (usize, usize), f: impl FnOnce(*mut f32)) -> bool {
    let mc_max = bl.mc.min(m.div_ceil(ks.mr) * ks.mr);
    PACK_A.with_borrow_mut(|abuf| {
        let abuf = match plan.pack_a {
            true => abuf.get(mc_max * bl.kc.min(k)),
            false => Some(std::ptr::null_mut()),
        };
        match abuf {
            Some(abuf) => {
                f(abuf);
                true
            }
            None => false,
        }
    })
}

/// Packs the NR-column panels `panels` of B's block at k steps `pc.. +kcb`
/// and columns `jc.. +ncb` into `buf`, panel `q` at `q·NR·kcb`.
///
/// # Safety
/// The block must be inside B, and `buf` must hold `panels.end·NR·kcb`
/// floats.
unsafe fn pack_b_panels<T: GemmInput>(
    ks: &KernelSet,
    b: View<T>,
    (pc, kcb): (usize, usize),
    (jc, ncb): (usize, usize),
    panels: std::ops::Range<usize>,
    buf: *mut f32,
) {
    let nr = ks.nr();
    if b.cs == 1 {
        // Rows of B contiguous: walk each row of the block once, left to
        // right, dealing its runs out to the panels, so B is read as the
        // prefetchers expect. Panel by panel instead, each row is one
        // NR-float run per 4 KiB page or so (a column of a wide B), and
        // packing a 1024² B took 2.9% of the product on a Zen 4 core
        // against 1.3% this way.
        for p in 0..kcb {
            // SAFETY: row pc + p and columns jc.. +ncb are inside B (the
            // caller's contract); with a unit column stride they are the
            // contiguous run `row .. row + ncb`.
            let row = unsafe { std::slice::from_raw_parts(b.at(pc + p, jc), ncb) };
            for q in panels.clone() {
                let w = nr.min(ncb - q * nr);
                // SAFETY: panel q's step p is `w ≤ NR` floats at
                // q·NR·kcb + p·NR, inside `buf` (the caller's contract),
                // which does not overlap B.
                let d = unsafe { std::slice::from_raw_parts_mut(buf.add(q * nr * kcb + p * nr), w) };
                T::convert_slice(&row[q * nr..q * nr + w], d);
            }
        }
        return;
    }
    for q in panels {
        let w = nr.min(ncb - q * nr);
        // SAFETY: rows pc.. +kcb and columns jc+q·nr.. +w are inside B, and
        // panel q ends inside `buf` (the caller's contract).
        unsafe { pack_panel(b.at(pc, jc + q * nr), b.rs, b.cs, w, kcb, buf.add(q * nr * kcb), nr) };
    }
}

/// Where one `(jc, pc)` block is: its columns `jc.. +ncb` and k steps
/// `pc.. +kcb`, its packed B panels (when packed) and the A scratch.
#[derive(Clone, Copy)]
struct BlockAt {
    cols: (usize, usize),
    steps: (usize, usize),
    bbuf: *const f32,
    abuf: *mut f32,
}

/// The rows of one `(jc, pc)` block: `ic` over MC rows (the MC × KC block
/// of A packed into `abuf`, when packed), then NR-column panels and row
/// tiles (or row tiles and panels: `plan.rows_outer`), each a microkernel
/// call. B is read from `bbuf` when packed (panel
/// `q` at `q·NR·kcb`), else in place.
///
/// # Safety
/// As [`gemm`], for the `m` rows of this sub-problem and the block's
/// columns and k steps; when packed, `bbuf` holds the block's panels and
/// `abuf` an MC × KC block.
unsafe fn multiply_block<T: GemmInput>(
    ks: &KernelSet,
    bl: Blocking,
    plan: Plan,
    m: usize,
    at: BlockAt,
    (alpha, a, b, beta, c): (f32, View<T>, View<T>, f32, ViewMut),
) {
    let BlockAt {
        cols: (jc, ncb),
        steps: (pc, kcb),
        bbuf,
        abuf,
    } = at;
    let (mr, nr) = (ks.mr, ks.nr());
    for ic in (0..m).step_by(bl.mc) {
        let mcb = bl.mc.min(m - ic);
        let rows = RowTiles::new(mcb, mr);
        let tiles = rows.tiles;
        if plan.pack_a {
            for t in 0..tiles {
                let (start, h) = rows.get(t);
                // SAFETY: rows ic+start.. +h and k steps pc.. +kcb are inside
                // A; panel t ends at (t+1)·mr·kcb ≤ MC·KC floats.
                unsafe { pack_panel(a.at(ic + start, pc), a.cs, a.rs, h, kcb, abuf.add(t * mr * kcb), mr) };
            }
        }
        // The kernels of this block's tiles, chosen once: its row tiles come
        // in two heights (the first `extra` one row taller) and its column
        // panels are full but for the last.
        let heights = [rows.base, rows.base + usize::from(rows.extra > 0)];
        let kernels = |w: usize| heights.map(|h| ks.tile(h, w, plan.pack_a));
        let full = kernels(nr);
        let panels = ncb.div_ceil(nr);
        // ncb ≥ 1 (the callers step jc over 0..n), so panels ≥ 1.
        let last_w = ncb - (panels - 1) * nr;
        let last = (last_w, if last_w == nr { full } else { kernels(last_w) });
        // Tile (t, q): row tile `t` of this block by column panel `q`, in
        // the order the plan chose (one loop body, one predictable branch).
        let (outer, inner) = if plan.rows_outer {
            (tiles, panels)
        } else {
            (panels, tiles)
        };
        for o in 0..outer {
            for i in 0..inner {
                let (t, q) = if plan.rows_outer { (o, i) } else { (i, o) };
                let j = jc + q * nr;
                let (w, fns) = if q + 1 == panels { last } else { (nr, full) };
                let (bp, rsb) = if plan.pack_b {
                    // SAFETY: inside the packed block (the caller's contract).
                    (unsafe { bbuf.add(q * nr * kcb) }, nr as isize)
                } else {
                    // SAFETY: (pc, j) is inside B; T is f32 whenever B is read in
                    // place (Plan never skips packing otherwise) and its columns
                    // are contiguous.
                    (unsafe { b.at(pc, j) }.cast::<f32>(), b.rs)
                };
                let (start, h) = rows.get(t);
                let (ap, rsa, csa) = if plan.pack_a {
                    // SAFETY: inside the buffer.
                    (unsafe { abuf.add(t * mr * kcb) }.cast_const(), 1, mr as isize)
                } else {
                    // SAFETY: (ic+start, pc) is inside A, which is f32 when
                    // read in place.
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
                    beta,
                };
                let f = fns[usize::from(t < rows.extra)];
                debug_assert!(h == heights[usize::from(t < rows.extra)]);
                // SAFETY: `f` is the kernel of an h × w tile (h <= mr,
                // w <= nr), all its A, B and C addresses inside the operands
                // or the packed buffers; `ks` was chosen for an ISA this CPU
                // runs.
                unsafe { f(&tile) };
            }
        }
    }
}
