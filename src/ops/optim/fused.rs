//! The optimizer fused into the weight-gradient product: `G = A·B` is
//! computed a strip of rows at a time into a per-thread buffer that stays in
//! L2, and the update of the matching rows of `w` (and its moments) reads
//! the strip there, so the gradient never travels to memory and back. The
//! values are those of [`gemm`](crate::gemm) followed by
//! [`adam_step`](crate::adam_step) / [`sgd_step`](crate::sgd_step), bit for
//! bit: every element of `G` is the same sum in the same order (a strip is
//! a sub-product over whole rows, run on the path the whole product's plan
//! takes: dot products, whose sum order is the same for any rows, or the
//! tile kernels, which never split a `k` sum by rows), and the update is
//! element-wise.

use super::kernels::{adam_isa, sgd_isa, AdamScalars};
use super::{adam_scalars, check_adam, check_sgd, AdamConfig, AdamState, SgdConfig, SgdState};
use crate::error::{Error, Result};
use crate::ops::activation::kernels::SyncPtr;
use crate::ops::gemm::split_tasks;
use crate::parallel::{record_task_count, run_tasks, task_range};
use crate::{active_isa, MatMut, MatRef};
use std::cell::RefCell;
use std::sync::Mutex;

thread_local! {
    /// The gradient strip of this thread (grow-only).
    static STRIP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of the strip: rows of `n` filling about a quarter of L2, at least one row.
fn strip_rows(m: usize, n: usize) -> usize {
    let l2_floats = crate::cpu::cache_sizes().l2 / 4;
    (l2_floats / 4 / n.max(1)).clamp(1, m.max(1))
}

/// Reserves this thread's strip for any product whose rows fit the strip's
/// quarter of L2, so that later steps do not allocate (the pages are not
/// touched here).
pub(crate) fn prepare_thread_strip() {
    let floats = crate::cpu::cache_sizes().l2 / 16;
    let _ = STRIP.try_with(|s| {
        let mut s = s.borrow_mut();
        let len = s.len();
        let _ = s.try_reserve_exact(floats.saturating_sub(len));
    });
}

/// Runs `update(rows, g)` for consecutive strips of rows of `G = A·B`
/// (`g` row-major, `rows.len() × n`), split over threads by rows.
fn for_strips(
    isa: crate::Isa,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    update: &(dyn Fn(std::ops::Range<usize>, &[f32]) + Sync),
) -> Result<()> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if m == 0 || n == 0 {
        return Ok(());
    }
    let threads = crate::num_threads();
    // Split as the GEMM splits, counting the update's FLOPs too (about 16
    // per element).
    let flops = (2.0 * k as f64 + 16.0) * m as f64 * n as f64;
    let tasks = split_tasks(flops, threads, usize::MAX).min(m);
    let per = strip_rows(m, n);
    // The whole product's path, for every strip (a strip's own plan could
    // take the other one, which sums in another order).
    let dot = crate::ops::gemm::plans_dot(isa, &a, &b);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let task = |t: usize| {
        let rows = task_range(m, tasks, t, 1);
        let r = STRIP.with_borrow_mut(|strip| -> Result<()> {
            let need = per.min(rows.len()) * n;
            if strip.len() < need {
                strip
                    .try_reserve_exact(need - strip.len())
                    .map_err(|_| Error::OutOfMemory {
                        what: "fused update gradient strip",
                        bytes: need * 4,
                    })?;
                strip.resize(need, 0.0);
            }
            let mut i = rows.start;
            while i < rows.end {
                let h = per.min(rows.end - i);
                let g = &mut strip[..h * n];
                let strip = a.submatrix(i, 0, h, k)?;
                let g_view = MatMut::new(g, h, n)?;
                crate::ops::gemm::gemm_on_path(isa, 1, Some(dot), 1.0, strip, b, 0.0, g_view)?;
                update(i..i + h, g);
                i += h;
            }
            Ok(())
        });
        if let Err(e) = r {
            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
    };
    run_tasks(tasks, threads, task)?;
    record_task_count(tasks);
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Checks that `w` holds the `m × n` product of `a` (`m × k`) and `b` (`k × n`), row-major.
fn check_product(a: &MatRef<'_, f32>, b: &MatRef<'_, f32>, w: usize) -> Result<()> {
    if a.cols() != b.rows() {
        return Err(Error::shape("b", b.shape(), (a.cols(), b.cols())));
    }
    let want = a.rows().checked_mul(b.cols()).ok_or(Error::Overflow {
        arg: "w",
        what: "rows of a × columns of b",
    })?;
    if w != want {
        return Err(Error::invalid(
            "w",
            format!("{w} elements for the {} × {} product", a.rows(), b.cols()),
        ));
    }
    Ok(())
}

/// One Adam / AdamW step whose gradient is the product `a·b`: the same
/// values as [`gemm`](crate::gemm)`(1, a, b, 0, g)` followed by
/// [`adam_step`](crate::adam_step)`(cfg, state, step, w, g)`, bit for bit,
/// without the gradient ever being written out (`w` and the moments are
/// `m × n` row-major, `m = a.rows()`, `n = b.cols()`). This is the weight
/// update of a dense layer straight from its backward product
/// (`a` = the layer's input transposed, `b` = the output gradient).
///
/// ```
/// use nnkern::{gemm_adam_step, AdamConfig, AdamState, MatRef};
/// let x = [1.0f32, 2.0];           // a: 2 × 1 (an input, transposed)
/// let dy = [0.5f32, -1.0, 2.0];    // b: 1 × 3 (the output gradient)
/// let mut w = [0.0f32; 6];
/// let mut state = AdamState::new(6);
/// gemm_adam_step(&AdamConfig::default(), &mut state, 1, &mut w, MatRef::new(&x, 2, 1)?, MatRef::new(&dy, 1, 3)?)?;
/// // Adam's first step moves every weight by the learning rate against its gradient's sign.
/// assert!((w[0] + 1e-3).abs() < 1e-6 && (w[1] - 1e-3).abs() < 1e-6);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn gemm_adam_step<S: AsMut<[f32]>>(
    cfg: &AdamConfig,
    state: &mut AdamState<S>,
    step: u64,
    w: &mut [f32],
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
) -> Result<()> {
    check_product(&a, &b, w.len())?;
    let (m, v) = (state.m.as_mut(), state.v.as_mut());
    check_adam(cfg, step, w.len(), w.len(), m.len(), v.len())?;
    let c: AdamScalars = adam_scalars(cfg, step);
    let isa = active_isa();
    let n = b.cols();
    let (wp, mp, vp) = (
        SyncPtr(w.as_mut_ptr()),
        SyncPtr(m.as_mut_ptr()),
        SyncPtr(v.as_mut_ptr()),
    );
    for_strips(isa, a, b, &|rows, g| {
        let r = rows.start * n..rows.end * n;
        // SAFETY: the strips of distinct calls cover disjoint rows of the
        // `m × n` buffers (checked above to hold exactly `m·n` elements),
        // which outlive the tasks.
        let (w, m, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(wp.get().add(r.start), r.len()),
                std::slice::from_raw_parts_mut(mp.get().add(r.start), r.len()),
                std::slice::from_raw_parts_mut(vp.get().add(r.start), r.len()),
            )
        };
        adam_isa(isa, c, w, g, m, v);
    })
}

/// One SGD-with-momentum step whose gradient is the product `a·b`: the
/// same values as [`gemm`](crate::gemm) followed by
/// [`sgd_step`](crate::sgd_step), bit for bit, without the gradient being
/// written out (see [`gemm_adam_step`]).
///
/// ```
/// use nnkern::{gemm_sgd_step, MatRef, SgdConfig, SgdState};
/// let cfg = SgdConfig { lr: 0.5, momentum: 0.0, weight_decay: 0.0 };
/// let mut w = [1.0f32, 1.0];
/// gemm_sgd_step(&cfg, &mut SgdState::new(2), &mut w, MatRef::new(&[2.0], 1, 1)?, MatRef::new(&[1.0, -1.0], 1, 2)?)?;
/// assert_eq!(w, [0.0, 2.0]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn gemm_sgd_step<S: AsMut<[f32]>>(
    cfg: &SgdConfig,
    state: &mut SgdState<S>,
    w: &mut [f32],
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
) -> Result<()> {
    check_product(&a, &b, w.len())?;
    let buf = state.buf.as_mut();
    check_sgd(cfg, w.len(), w.len(), buf.len())?;
    let isa = active_isa();
    let n = b.cols();
    let (lr, mu, wd) = (cfg.lr, cfg.momentum, cfg.weight_decay);
    let (wp, bp) = (SyncPtr(w.as_mut_ptr()), SyncPtr(buf.as_mut_ptr()));
    for_strips(isa, a, b, &|rows, g| {
        let r = rows.start * n..rows.end * n;
        // SAFETY: as in `gemm_adam_step`: disjoint rows of buffers of `m·n` elements.
        let (w, buf) = unsafe {
            (
                std::slice::from_raw_parts_mut(wp.get().add(r.start), r.len()),
                std::slice::from_raw_parts_mut(bp.get().add(r.start), r.len()),
            )
        };
        sgd_isa(isa, lr, mu, wd, w, g, buf);
    })
}
