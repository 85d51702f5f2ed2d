//! The fast GEMM against the reference, on every ISA this CPU runs, every
//! orientation/packing path, random shapes, strides, transposes and scalars.
//!
//! Tolerance: each element of C is a sum of k products plus the beta term.
//! With f32 accumulation (FMA or separate multiply-add, in any blocked
//! order) the error is at most γ_{k+2}·S, where
//! S = |alpha|·Σ_p |a_ip·b_pj| + |beta·c_ij| (`reference::gemm_error_scale`)
//! and γ_j = j·u/(1 − j·u) ≈ j·2⁻²⁴: k roundings in the sum, one for alpha,
//! one for adding beta·C. bf16/f16 inputs convert exactly to f32, so the
//! same bound holds against the reference fed the same half inputs. The
//! reference itself rounds once from f64 (≤ u·|C|, within γ·S). A tiny
//! absolute term covers results that underflow.

use nnkern::testing::{force_dot, force_plan, force_rows_outer, force_shared_b, tiling};
use nnkern::testing::{force_min_per_task, last_task_count};
use nnkern::{bf16, f16, gemm_with_threads, reference, with_isa, GemmInput, MatMut, MatRef};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// A stored matrix: buffer plus view geometry.
#[derive(Debug, Clone)]
struct Stored<T> {
    data: Vec<T>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// Layout of a stored `rows × cols` matrix: row-major, column-major or
/// general, with padding.
#[derive(Debug, Clone, Copy)]
enum Layout {
    RowMajor { pad: usize },
    ColMajor { pad: usize },
    General { step: usize, pad: usize },
}

impl Layout {
    fn strides(self, rows: usize, cols: usize) -> (usize, usize) {
        // Strides stay >= 1: `MatMut` rejects a zero stride even on an empty
        // view.
        match self {
            Layout::RowMajor { pad } => ((cols + pad).max(1), 1),
            Layout::ColMajor { pad } => (1, (rows + pad).max(1)),
            Layout::General { step, pad } => ((cols * step + pad).max(1), step),
        }
    }
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        3 => (0..3usize).prop_map(|pad| Layout::RowMajor { pad }),
        2 => (0..3usize).prop_map(|pad| Layout::ColMajor { pad }),
        1 => (2..4usize, 0..3usize).prop_map(|(step, pad)| Layout::General { step, pad }),
    ]
}

/// Deterministic pseudo-random values in [-1, 1), never all zero.
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

fn stored<T: GemmInput>(rows: usize, cols: usize, layout: Layout, seed: u64, from: impl Fn(f32) -> T) -> Stored<T> {
    let (rs, cs) = layout.strides(rows, cols);
    let len = nnkern::matrix::required_len(rows, cols, rs, cs).unwrap();
    Stored {
        data: values(len, seed).into_iter().map(from).collect(),
        rows,
        cols,
        rs,
        cs,
    }
}

impl<T> Stored<T> {
    fn view(&self) -> MatRef<'_, T> {
        MatRef::from_strides(&self.data, self.rows, self.cols, self.rs, self.cs).unwrap()
    }
}

/// One GEMM problem: `C (m×n) = alpha·op(A)·op(B) + beta·C`.
#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
    la: Layout,
    lb: Layout,
    lc: Layout,
    alpha: f32,
    beta: f32,
    seed: u64,
}

/// Sizes around the tile and block edges of every ISA, plus primes and random.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![
            0usize, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 23, 28, 29, 31, 32, 33, 47
        ]),
        1..70usize,
    ]
}

fn scalar() -> impl Strategy<Value = f32> {
    prop_oneof![prop::sample::select(vec![0.0f32, 1.0, -1.0, 0.5]), -2.0f32..2.0,]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (dim(), dim(), dim()),
        (any::<bool>(), any::<bool>()),
        (layout(), layout(), layout()),
        (scalar(), scalar(), any::<u64>()),
    )
        .prop_map(|((m, n, k), (a_t, b_t), (la, lb, lc), (alpha, beta, seed))| Case {
            m,
            n,
            k,
            a_t,
            b_t,
            la,
            lb,
            lc,
            alpha,
            beta,
            seed,
        })
}

/// Runs `case` with input type `T` on the current thread's ISA and plan,
/// with `threads` threads, and compares with the reference. Returns C.
fn check<T: GemmInput>(case: &Case, threads: usize, from: impl Fn(f32) -> T + Copy) -> Result<Vec<f32>, TestCaseError> {
    let Case { m, n, k, .. } = *case;
    // A is stored as k×m when transposed, so op(A) = stored.t() is m×k.
    let a = if case.a_t {
        stored(k, m, case.la, case.seed, from)
    } else {
        stored(m, k, case.la, case.seed, from)
    };
    let b = if case.b_t {
        stored(n, k, case.lb, case.seed ^ 1, from)
    } else {
        stored(k, n, case.lb, case.seed ^ 1, from)
    };
    let av = if case.a_t { a.view().t() } else { a.view() };
    let bv = if case.b_t { b.view().t() } else { b.view() };
    let (rsc, csc) = case.lc.strides(m, n);
    let len = nnkern::matrix::required_len(m, n, rsc, csc).unwrap();
    // C is NaN when beta = 0 (it must not be read); padding is a sentinel that
    // must survive.
    const SENTINEL: f32 = -12345.0;
    let mut c0 = vec![SENTINEL; len];
    let init = values(m * n, case.seed ^ 2);
    for i in 0..m {
        for j in 0..n {
            c0[i * rsc + j * csc] = if case.beta == 0.0 { f32::NAN } else { init[i * n + j] };
        }
    }
    let mut want = c0.clone();
    reference::gemm(
        case.alpha,
        av,
        bv,
        case.beta,
        MatMut::from_strides(&mut want, m, n, rsc, csc).unwrap(),
    )
    .unwrap();
    let scale = reference::gemm_error_scale(
        case.alpha,
        av,
        bv,
        case.beta,
        MatRef::from_strides(&c0, m, n, rsc, csc).unwrap(),
    );
    let mut got = c0.clone();
    gemm_with_threads(
        threads,
        case.alpha,
        av,
        bv,
        case.beta,
        MatMut::from_strides(&mut got, m, n, rsc, csc).unwrap(),
    )
    .unwrap();
    let gamma = (k as f64 + 2.0) * f64::from(f32::EPSILON) / 2.0 * 1.01;
    let mut in_view = vec![false; len];
    for i in 0..m {
        for j in 0..n {
            let at = i * rsc + j * csc;
            in_view[at] = true;
            let (g, w) = (got[at] as f64, want[at] as f64);
            let tol = gamma * scale[i * n + j] + 1e-30;
            prop_assert!(
                (g - w).abs() <= tol,
                "C[{i},{j}] = {g}, reference {w}, tolerance {tol:e} ({case:?})"
            );
        }
    }
    for (at, v) in got.iter().enumerate() {
        if !in_view[at] {
            prop_assert_eq!(v.to_bits(), SENTINEL.to_bits(), "padding C[{}] was written", at);
        }
    }
    Ok(got)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48)
}

/// Every supported ISA × every forced plan (and the automatic one), the
/// forced plans each with both orders of the tiles within a block.
fn for_every_path(mut f: impl FnMut() -> Result<(), TestCaseError>) -> Result<(), TestCaseError> {
    let plans = [
        None,
        Some((false, true, true)),
        Some((true, true, true)),
        Some((false, false, false)),
        Some((true, false, false)),
        Some((false, true, false)),
        Some((true, false, true)),
    ];
    for isa in nnkern::testing::test_isas() {
        for plan in plans {
            let orders: &[Option<bool>] = if plan.is_some() {
                &[Some(false), Some(true)]
            } else {
                &[None]
            };
            for &rows_outer in orders {
                force_plan(plan);
                force_rows_outer(rows_outer);
                let r = with_isa(isa, &mut f).unwrap();
                force_rows_outer(None);
                force_plan(None);
                r.map_err(|e| TestCaseError::fail(format!("{isa}, plan {plan:?}, rows outer {rows_outer:?}: {e}")))?;
            }
        }
        // The dot-product path wherever it applies (A's rows and B's columns contiguous).
        force_dot(Some(true));
        let r = with_isa(isa, &mut f).unwrap();
        force_dot(None);
        r.map_err(|e| TestCaseError::fail(format!("{isa}, dot products forced: {e}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn f32_matches_reference_on_every_path(case in case()) {
        for_every_path(|| check(&case, 1, |x| x).map(drop))?;
    }

    #[test]
    fn bf16_and_f16_match_reference(case in case()) {
        for isa in nnkern::testing::test_isas() {
            with_isa(isa, || -> Result<(), TestCaseError> {
                check(&case, 1, bf16::from_f32)?;
                check(&case, 1, f16::from_f32)?;
                Ok(())
            }).unwrap()?;
        }
    }

    #[test]
    fn threads_give_identical_bits(case in case()) {
        // Large enough for two tiles in either direction, so a split exists.
        let case = Case { m: case.m * 2 + 20, n: case.n * 2 + 20, k: case.k * 2 + 60, ..case };
        for isa in nnkern::testing::test_isas() {
            with_isa(isa, || check_threaded(&case, &format!("{isa}"))).unwrap()?;
            // The other order of the tiles than these small blocks take by default.
            force_rows_outer(Some(false));
            let r = with_isa(isa, || check_threaded(&case, &format!("{isa}, column panels outermost"))).unwrap();
            force_rows_outer(None);
            r?;
            // Split by rows on the dot-product path, where it applies.
            force_dot(Some(true));
            let r = with_isa(isa, || check_threaded(&case, &format!("{isa}, dot products forced"))).unwrap();
            force_dot(None);
            r?;
        }
    }
}

/// Runs `case` on 1, 2 and 4 threads with the split threshold lowered so the
/// threaded path really runs (more than one task, checked), and on 4 and 2
/// threads once more with a shared packed B forced on row splits (the second
/// time one KC block of B per phase, so a product goes through several
/// phases), each against the reference, and requires every result to be
/// bit-for-bit equal to one thread's.
fn check_threaded(case: &Case, what: &str) -> Result<(), TestCaseError> {
    let one = check(case, 1, |x| x)?;
    for (threads, b_blocks) in [(2, None), (4, None), (4, Some(usize::MAX)), (2, Some(1))] {
        force_min_per_task(Some(1));
        force_shared_b(b_blocks);
        let many = check(case, threads, |x| x);
        let tasks = last_task_count();
        force_shared_b(None);
        force_min_per_task(None);
        let many = many?;
        prop_assert!(
            tasks > 1,
            "{what}: the split did not happen ({tasks} task) for {threads} threads ({case:?})"
        );
        prop_assert!(
            one.iter().zip(&many).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{what}: {threads} threads (shared B forced: {b_blocks:?} blocks per phase) differ from 1 ({case:?})"
        );
    }
    Ok(())
}

fn fixed(m: usize, n: usize, k: usize, a_t: bool, b_t: bool) -> Case {
    Case {
        m,
        n,
        k,
        a_t,
        b_t,
        la: Layout::RowMajor { pad: 0 },
        lb: Layout::RowMajor { pad: 0 },
        lc: Layout::RowMajor { pad: 1 },
        alpha: 0.75,
        beta: -0.5,
        seed: (m * 1000 + n * 10 + k) as u64,
    }
}

/// Sizes that cross each blocking boundary (KC, MC, NC) of every ISA, which
/// random small sizes do not reach, on 1, 2 and 4 threads (split forced).
#[test]
fn crossing_block_boundaries() {
    for isa in nnkern::testing::test_isas() {
        let [mr, nr, kc, mc, nc] = tiling(isa);
        let shapes = [
            (mr + 1, nr + 1, kc + 1),
            (2 * mr - 1, 2 * nr - 1, 2 * kc + 3),
            (mc + 1, nr, 5),
            (mc + mr + 3, 3, kc + 1),
            (3, nc + 1, 4),
            (2, nc + nr + 1, kc - 1),
            (2, nc + 1, 2 * kc + 1),
        ];
        for (m, n, k) in shapes {
            for (a_t, b_t) in [(false, false), (true, true), (false, true)] {
                for plan in [None, Some((false, true, true)), Some((true, true, true))] {
                    let case = fixed(m, n, k, a_t, b_t);
                    force_plan(plan);
                    let what = format!("{isa} {plan:?} ({m},{n},{k}) a_t={a_t} b_t={b_t}");
                    let r = with_isa(isa, || check_threaded(&case, &what)).unwrap();
                    force_plan(None);
                    if let Err(e) = r {
                        panic!("{e}");
                    }
                }
            }
        }
    }
}

/// The batch-32 shapes of training, with the transposed views backprop passes.
#[test]
fn training_shapes() {
    let shapes = [
        (32, 500, 784, false, true),
        (32, 500, 784, false, false),
        (32, 784, 500, false, false),
        (32, 784, 500, false, true),
        (784, 500, 32, true, false),
        (32, 10, 500, false, false),
        (32, 10, 500, false, true),
        (500, 10, 32, true, false),
        (32, 500, 10, false, false),
        (32, 500, 10, false, true),
    ];
    for isa in nnkern::testing::test_isas() {
        for (m, n, k, a_t, b_t) in shapes {
            for threads in [1, 2] {
                let case = fixed(m, n, k, a_t, b_t);
                if let Err(e) = with_isa(isa, || check(&case, threads, |x| x)).unwrap() {
                    panic!("{isa} ({m},{n},{k}) a_t={a_t} b_t={b_t} threads={threads}: {e}");
                }
            }
        }
    }
}

#[test]
fn nan_and_inf_propagate() {
    for isa in nnkern::testing::test_isas() {
        with_isa(isa, || {
            let (m, n, k) = (20, 40, 30);
            let mut a = values(m * k, 1);
            let b = values(k * n, 2);
            a[3 * k + 7] = f32::NAN;
            a[5 * k + 2] = f32::INFINITY;
            let mut c = vec![f32::NAN; m * n];
            gemm_with_threads(
                1,
                1.0,
                MatRef::new(&a, m, k).unwrap(),
                MatRef::new(&b, k, n).unwrap(),
                0.0,
                MatMut::new(&mut c, m, n).unwrap(),
            )
            .unwrap();
            for i in 0..m {
                for j in 0..n {
                    let v = c[i * n + j];
                    match i {
                        3 => assert!(v.is_nan()),
                        // inf times a nonzero value of either sign.
                        5 => assert!(v.is_infinite() || v.is_nan()),
                        _ => assert!(v.is_finite(), "{isa} C[{i},{j}] = {v}"),
                    }
                }
            }
        })
        .unwrap();
    }
}

#[test]
fn zero_threads_is_an_error_and_zero_sizes_are_fine() {
    let a = [1.0f32; 4];
    let mut c = [0.0f32; 4];
    let r = gemm_with_threads(
        0,
        1.0,
        MatRef::new(&a, 2, 2).unwrap(),
        MatRef::new(&a, 2, 2).unwrap(),
        0.0,
        MatMut::new(&mut c, 2, 2).unwrap(),
    );
    assert!(matches!(r, Err(nnkern::Error::InvalidArgument { arg: "threads", .. })));
    let empty: [f32; 0] = [];
    let mut none: [f32; 0] = [];
    nnkern::gemm(
        1.0,
        MatRef::new(&empty, 0, 5).unwrap(),
        MatRef::new(&a, 5, 0).unwrap(),
        1.0,
        MatMut::new(&mut none, 0, 0).unwrap(),
    )
    .unwrap();
}
