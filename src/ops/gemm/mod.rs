//! General matrix multiply: `C = alpha·A·B + beta·C`.
//!
//! `A` (m×k), `B` (k×n) and `C` (m×n) are views with any strides, so
//! `op(A) = Aᵀ` is simply `a.t()`. Inputs may be `f32`, `bf16` or `f16`
//! (converted exactly to `f32`); accumulation and output are `f32`.
//!
//! BLAS conventions: `beta = 0` never reads `C` (it may hold NaN), and
//! `alpha = 0` or `k = 0` never reads `A` or `B`; `C` is then scaled by `beta`.

mod dot;
mod driver;
pub(crate) use driver::split_tasks;
mod kernel;
mod pack;
pub mod reference;

use crate::error::{Error, Result};
use crate::matrix::{MatMut, MatRef};
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// An element type GEMM accepts as input: `f32`, `bf16` or `f16`.
pub trait GemmInput: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Name used in messages and benchmarks.
    const NAME: &'static str;
    /// Exact conversion to `f32`.
    fn to_f32(self) -> f32;
    /// Whether `Self` is `f32` (kernels may then read the caller's memory
    /// without packing it).
    #[doc(hidden)]
    const IS_F32: bool = false;
    /// Converts a run of elements (`src.len() == dst.len()`), with the
    /// fastest conversion this CPU has.
    #[doc(hidden)]
    fn convert_slice(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
}

impl GemmInput for f32 {
    const NAME: &'static str = "f32";
    const IS_F32: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn convert_slice(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}
impl GemmInput for bf16 {
    const NAME: &'static str = "bf16";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline]
    fn convert_slice(src: &[bf16], dst: &mut [f32]) {
        // A shift per element, which the compiler vectorises.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
}
impl GemmInput for f16 {
    const NAME: &'static str = "f16";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline]
    fn convert_slice(src: &[f16], dst: &mut [f32]) {
        // `half` uses the F16C conversion instructions when the CPU has them.
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
}

/// The register tile and cache blocking the GEMM uses on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of C per register tile.
    pub mr: usize,
    /// Columns of C per register tile.
    pub nr: usize,
    /// Most steps of k per packed block (a B micro-panel of KC × NR is at
    /// most twice L1, up to 512). A product cuts its k into the fewest blocks
    /// of at most KC, all of one length (784 = 392 + 392).
    pub kc: usize,
    /// Rows of A per packed block of KC steps (MC × KC in half of L2); a
    /// product whose blocks are shorter packs proportionally more rows.
    pub mc: usize,
    /// Columns of B per packed block (KC × NC in the last-level cache).
    pub nc: usize,
}

/// The blocking the GEMM uses with the ISA calls from this thread use
/// ([`crate::active_isa`]), derived from this CPU's detected cache sizes
/// (never from a product's sizes).
///
/// ```
/// let b = nnkern::ops::gemm::blocking();
/// assert!(b.mr >= 1 && b.nr >= 1 && b.kc >= 1 && b.mc >= b.mr && b.nc >= b.nr);
/// ```
pub fn blocking() -> Blocking {
    blocking_for(crate::active_isa())
}

/// As [`blocking`], for the kernels of `isa` (whether or not this CPU runs
/// them; ISAs of another architecture report the portable kernels').
pub fn blocking_for(isa: crate::Isa) -> Blocking {
    let [mr, nr, kc, mc, nc] = driver::tiling(isa);
    Blocking { mr, nr, kc, mc, nc }
}

/// Sizes the calling thread's GEMM scratch once for every ISA (see
/// `driver::prepare_thread_scratch`).
pub(crate) fn prepare_thread_scratch() {
    driver::prepare_thread_scratch()
}

/// Checks the shapes of a GEMM and the scalars; returns `(m, n, k)`.
pub(crate) fn check_gemm<T>(
    alpha: f32,
    a: &MatRef<'_, T>,
    b: &MatRef<'_, T>,
    beta: f32,
    c: &MatMut<'_, f32>,
) -> Result<(usize, usize, usize)> {
    let (m, k) = a.shape();
    let (kb, n) = b.shape();
    if kb != k {
        return Err(Error::shape("b", (kb, n), (k, n)));
    }
    if c.shape() != (m, n) {
        return Err(Error::shape("c", c.shape(), (m, n)));
    }
    // NaN/Inf scalars are allowed: they propagate as IEEE arithmetic does.
    let _ = (alpha, beta);
    Ok((m, n, k))
}

/// Test hooks of the GEMM (tile sizes, forced plans and kernels, planning
/// without running), re-exported from `nnkern::testing`; they exist only
/// with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub(crate) mod hooks {
    use super::GemmInput;
    use crate::error::{Error, Result};
    use crate::matrix::MatRef;

    /// The GEMM's tile and block sizes for `isa` on this CPU:
    /// `[MR, NR, KC, MC, NC]` (tests use them to cross every boundary).
    pub fn tiling(isa: crate::Isa) -> [usize; 5] {
        super::driver::tiling(isa)
    }

    /// What the driver plans for a call, for tests and fuzzing: the plan is a
    /// pure function of the sizes and strides, so sizes far too large to run can
    /// be checked for arithmetic that wraps and scratch that grows with them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PlanSummary {
        /// `C = Bᵀ·Aᵀ` orientation.
        pub swap: bool,
        /// A packed.
        pub pack_a: bool,
        /// B packed.
        pub pack_b: bool,
        /// Tasks the call splits into.
        pub tasks: usize,
        /// The tasks split the rows and share one packed B.
        pub shared_b: bool,
        /// Every element a dot product along k, A read in place, and B too
        /// unless `pack_b` (then B, rows contiguous, is first transposed
        /// into scratch).
        pub dot: bool,
        /// Each block's row tiles outermost, its column panels inside.
        pub rows_outer: bool,
        /// k steps per block of this call (the last block may be shorter).
        pub kc: usize,
        /// Floats of packing scratch one task uses for A and for B.
        pub scratch: (usize, usize),
        /// The most scratch any call of this ISA may use, for A and for B.
        pub scratch_bound: (usize, usize),
    }

    /// Plans the call `gemm` would make for these views (validated like
    /// [`crate::gemm`]), without touching any element.
    pub fn plan_gemm<T: GemmInput>(
        isa: crate::Isa,
        threads: usize,
        a: &MatRef<'_, T>,
        b: &MatRef<'_, T>,
        c: (usize, usize, usize, usize),
    ) -> Result<Option<PlanSummary>> {
        let (m, k) = a.shape();
        let (kb, n) = b.shape();
        if kb != k {
            return Err(Error::shape("b", (kb, n), (k, n)));
        }
        if (c.0, c.1) != (m, n) {
            return Err(Error::shape("c", (c.0, c.1), (m, n)));
        }
        if !isa.is_supported() {
            return Err(Error::Unsupported {
                arg: "isa",
                what: format!("{isa} is not supported by this CPU"),
            });
        }
        let Some(cp) = super::plan_views(isa, threads.max(1), a, b, (c.2, c.3)) else {
            return Ok(None);
        };
        Ok(Some(PlanSummary {
            swap: cp.plan.swap,
            pack_a: cp.plan.pack_a,
            pack_b: cp.plan.pack_b,
            tasks: cp.tasks,
            shared_b: cp.shared_b,
            dot: cp.plan.dot,
            rows_outer: cp.plan.rows_outer,
            scratch: cp.scratch,
            kc: cp.block.kc,
            scratch_bound: super::driver::scratch_bound(isa),
        }))
    }

    /// Forces the orientation and packing `(swap, pack_a, pack_b)` of GEMMs
    /// called from this thread (`None` restores the automatic choice), so tests
    /// reach every path. Reading an operand in place is only honoured where the
    /// kernel can.
    pub fn force_plan(plan: Option<(bool, bool, bool)>) {
        super::driver::force_plan(plan)
    }

    /// Forces the dot-product path (`Some(true)`: wherever it applies, f32
    /// with A's rows contiguous and B's columns, or B's rows with B small
    /// enough to transpose into scratch; `Some(false)`: never) for
    /// GEMMs called from this thread; `None` restores the automatic choice.
    pub fn force_dot(dot: Option<bool>) {
        super::driver::force_dot(dot)
    }

    /// Forces the order of the tiles within a block (`Some(true)`: row
    /// tiles outermost; `Some(false)`: column panels outermost) for GEMMs
    /// called from this thread; `None` restores the automatic choice.
    pub fn force_rows_outer(rows: Option<bool>) {
        super::driver::force_rows_outer(rows)
    }

    /// With `Some(most)`, GEMMs called from this thread that split by rows
    /// with B packed share one packed B whatever its size, at most `most` KC
    /// blocks of it per phase (`None` restores the automatic choice), so
    /// tests reach the shared path, and several phases, at small sizes.
    pub fn force_shared_b(most: Option<usize>) {
        super::driver::force_shared_b(most)
    }

    pub use super::kernel::KernelImpl;

    /// Forces the implementation of full tiles (`asm!` or intrinsics) for
    /// GEMMs whose tiles run on this thread (`None` restores the default), so
    /// tests and benchmarks compare them. Both give the same bits.
    pub fn force_kernel_impl(v: Option<KernelImpl>) {
        super::kernel::force_impl(v)
    }

    /// Runs `calls` full register tiles of `isa`'s kernels with `k` steps on
    /// L1-resident packed panels, C accumulated in place (the microkernel
    /// alone, for benchmarks: 2·MR·NR·k FLOP per call). An error if this CPU
    /// cannot run `isa`.
    pub fn run_microkernel(isa: crate::Isa, imp: KernelImpl, k: usize, calls: usize) -> Result<()> {
        if !isa.is_supported() {
            return Err(Error::invalid("isa", format!("{isa} is not supported by this CPU")));
        }
        // SAFETY: `isa` was just checked to run on this CPU.
        unsafe { super::kernel::run_full_tiles(super::kernel::kernel_set(isa), imp, k, calls) };
        Ok(())
    }
}

/// `C = alpha·A·B + beta·C` with the fastest kernel for this CPU.
///
/// ```
/// use nnkern::{gemm, MatRef, MatMut};
/// let a = [1.0f32, 2.0, 3.0, 4.0];             // 2×2
/// let b = [5.0f32, 6.0, 7.0, 8.0];             // 2×2
/// let mut c = [0.0f32; 4];
/// gemm(1.0, MatRef::new(&a, 2, 2)?, MatRef::new(&b, 2, 2)?.t(), 0.0, MatMut::new(&mut c, 2, 2)?)?;
/// assert_eq!(c, [17.0, 23.0, 39.0, 53.0]);     // A·Bᵀ
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn gemm<T: GemmInput>(alpha: f32, a: MatRef<'_, T>, b: MatRef<'_, T>, beta: f32, c: MatMut<'_, f32>) -> Result<()> {
    gemm_with_threads(crate::num_threads(), alpha, a, b, beta, c)
}

/// As [`gemm`], using at most `threads` threads for this call (instead of
/// [`crate::num_threads`]). Small products use one thread whatever `threads`
/// says; the result is bit-for-bit the same for every thread count.
///
/// ```
/// use nnkern::{gemm_with_threads, MatRef, MatMut};
/// let a = [1.0f32, 2.0, 3.0, 4.0];
/// let mut c = [0.0f32; 4];
/// gemm_with_threads(1, 1.0, MatRef::new(&a, 2, 2)?, MatRef::new(&a, 2, 2)?, 0.0, MatMut::new(&mut c, 2, 2)?)?;
/// assert_eq!(c, [7.0, 10.0, 15.0, 22.0]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn gemm_with_threads<T: GemmInput>(
    threads: usize,
    alpha: f32,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: f32,
    c: MatMut<'_, f32>,
) -> Result<()> {
    gemm_on(crate::active_isa(), threads, alpha, a, b, beta, c)
}

/// The plan `gemm` makes for `a·b` with C's strides `c` (`None` for an
/// empty product, which plans nothing): the views' strides, and C's as
/// `MatMut` stores them (0 for a unit extent), which the plan reads.
fn plan_views<T: GemmInput>(
    isa: crate::Isa,
    threads: usize,
    a: &MatRef<'_, T>,
    b: &MatRef<'_, T>,
    c: (usize, usize),
) -> Option<driver::CallPlan> {
    let ((m, k), n) = (a.shape(), b.cols());
    if m == 0 || n == 0 || k == 0 {
        return None;
    }
    let s = |(r, c): (usize, usize)| (r as isize, c as isize);
    let c = s(crate::matrix::normalise(m, n, c.0, c.1));
    Some(driver::plan_call(
        isa,
        threads,
        None,
        (m, n, k),
        T::IS_F32,
        s(a.strides()),
        s(b.strides()),
        c,
    ))
}

/// Whether `gemm` plans the f32 product `a·b` (C row-major) on the
/// dot-product path; `false` for an empty product.
pub(crate) fn plans_dot(isa: crate::Isa, a: &MatRef<'_, f32>, b: &MatRef<'_, f32>) -> bool {
    isa.is_supported() && plan_views(isa, 1, a, b, (b.cols(), 1)).is_some_and(|cp| cp.plan.dot)
}

/// [`gemm_with_threads`] on a given ISA (one this CPU runs: `active_isa` of
/// some thread), for kernels whose tasks run on workers, which do not see
/// the caller's [`with_isa`](crate::with_isa).
pub(crate) fn gemm_on<T: GemmInput>(
    isa: crate::Isa,
    threads: usize,
    alpha: f32,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: f32,
    c: MatMut<'_, f32>,
) -> Result<()> {
    gemm_on_path(isa, threads, None, alpha, a, b, beta, c)
}

/// [`gemm_on`] with the dot-product path decided by the caller (`dot`:
/// `Some(true)` wherever it applies, `Some(false)` never, `None` by the
/// estimate), for a sub-product that must sum as the whole product it is
/// part of (see [`plans_dot`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_on_path<T: GemmInput>(
    isa: crate::Isa,
    threads: usize,
    dot: Option<bool>,
    alpha: f32,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: f32,
    mut c: MatMut<'_, f32>,
) -> Result<()> {
    let (m, n, k) = check_gemm(alpha, &a, &b, beta, &c)?;
    if threads == 0 {
        return Err(Error::invalid("threads", "at least 1 thread expected, got 0"));
    }
    if !isa.is_supported() {
        return Err(Error::invalid("isa", format!("{isa} is not supported by this CPU")));
    }
    // SAFETY: the views were validated at construction (every (i, j) inside
    // the shape lies in its slice, strides at most isize::MAX) and check_gemm
    // matched their shapes, so every address the driver forms is inside the
    // three slices; C's strides are disjoint (MatMut invariant), so tiles
    // written by different threads never share an element, and C cannot
    // alias A or B (a &mut slice).
    unsafe {
        driver::gemm(
            isa,
            threads,
            dot,
            (m, n, k),
            alpha,
            driver::View::new(&a),
            driver::View::new(&b),
            beta,
            driver::ViewMut::new(&mut c),
        )
    }
}
