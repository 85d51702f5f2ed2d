//! The threaded paths, really taken: with the split threshold lowered (a
//! test hook), every kernel that can split over threads runs on 1, 2 and 4
//! threads, the split is checked to have happened (more than one task), and
//! the results are compared bit for bit with one thread and with the
//! reference. GEMM splits over rows or columns of C without changing any
//! element's summation order, and the streams split over disjoint ranges, so
//! every thread count gives the same bits.

use nnkern::testing::{force_min_per_task, last_task_count};
use nnkern::{
    activation_backward, activation_forward, activation_forward_inplace, adam_step, gemm, gemm_with_threads, reference,
    sgd_step, with_isa, with_threads, Activation, AdamConfig, AdamState, MatMut, MatRef, SgdConfig, SgdState,
};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `f` on every ISA with 1, 2 and 4 threads; for more than one thread
/// the split threshold is `min` units per task and the call must split.
/// Returns nothing; panics naming the kernel, ISA and thread count.
fn across_threads(name: &str, min: usize, f: impl Fn() -> Vec<u32>) {
    for isa in nnkern::testing::test_isas() {
        let one = with_threads(1, || with_isa(isa, &f).unwrap()).unwrap();
        for threads in [2, 4] {
            force_min_per_task(Some(min));
            let many = with_threads(threads, || with_isa(isa, &f).unwrap()).unwrap();
            let tasks = last_task_count();
            force_min_per_task(None);
            assert!(tasks > 1, "{name} [{isa}, {threads} threads]: did not split");
            assert!(
                one == many,
                "{name} [{isa}, {threads} threads]: differs from one thread"
            );
        }
    }
}

#[test]
fn gemm_splits_give_the_bits_of_one_thread_and_match_the_reference() {
    // Rows split (tall) and columns split (wide), transposed views, k across
    // several KC blocks.
    for (m, n, k, ta) in [(301, 37, 700, false), (29, 411, 517, true), (64, 64, 1030, false)] {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let c0 = data(m * n, 3);
        let av = if ta {
            MatRef::new(&a, k, m).unwrap().t()
        } else {
            MatRef::new(&a, m, k).unwrap()
        };
        let bv = MatRef::new(&b, k, n).unwrap();
        let mut want = c0.clone();
        reference::gemm(0.75, av, bv, 0.5, MatMut::new(&mut want, m, n).unwrap()).unwrap();
        let scale = reference::gemm_error_scale(0.75, av, bv, 0.5, MatRef::new(&c0, m, n).unwrap());
        let gamma = (k as f64 + 2.0) * f64::from(f32::EPSILON) / 2.0 * 1.01;
        across_threads(&format!("gemm ({m},{n},{k}) ta={ta}"), 1, || {
            let mut c = c0.clone();
            nnkern::gemm(0.75, av, bv, 0.5, MatMut::new(&mut c, m, n).unwrap()).unwrap();
            for (i, (g, w)) in c.iter().zip(&want).enumerate() {
                let tol = gamma * scale[i] + 1e-30;
                assert!(
                    (f64::from(*g) - f64::from(*w)).abs() <= tol,
                    "C[{i}] = {g}, reference {w} (tolerance {tol:e})"
                );
            }
            bits(&c)
        });
    }
}

#[test]
fn activation_splits_give_the_bits_of_one_thread() {
    let n = 50_021;
    let x = data(n, 4);
    let dy = data(n, 5);
    for act in Activation::ALL {
        across_threads(&format!("{act} forward"), 1000, || {
            let mut y = vec![f32::NAN; n];
            activation_forward(
                act,
                MatRef::row_vector(&x).unwrap(),
                MatMut::row_vector(&mut y).unwrap(),
            )
            .unwrap();
            bits(&y)
        });
        across_threads(&format!("{act} forward in place"), 1000, || {
            let mut y = x.clone();
            activation_forward_inplace(act, MatMut::row_vector(&mut y).unwrap()).unwrap();
            bits(&y)
        });
        across_threads(&format!("{act} backward"), 1000, || {
            let mut dx = vec![f32::NAN; n];
            activation_backward(
                act,
                MatRef::row_vector(&x).unwrap(),
                MatRef::row_vector(&dy).unwrap(),
                MatMut::row_vector(&mut dx).unwrap(),
            )
            .unwrap();
            bits(&dx)
        });
    }
    // ReLU is exact, so the split result is the reference's, bit for bit.
    let mut want = vec![0.0; n];
    reference::activation_forward(
        Activation::Relu,
        MatRef::row_vector(&x).unwrap(),
        MatMut::row_vector(&mut want).unwrap(),
    )
    .unwrap();
    across_threads("relu vs reference", 1000, || {
        let mut y = vec![f32::NAN; n];
        activation_forward(
            Activation::Relu,
            MatRef::row_vector(&x).unwrap(),
            MatMut::row_vector(&mut y).unwrap(),
        )
        .unwrap();
        assert_eq!(bits(&y), bits(&want));
        bits(&y)
    });
}

#[test]
fn optimizer_splits_give_the_bits_of_one_thread() {
    let n = 40_003;
    let w0 = data(n, 9);
    let g = data(n, 10);
    let m0 = data(n, 11);
    let v0: Vec<f32> = data(n, 12).iter().map(|v| v.abs()).collect();
    for cfg in [AdamConfig::default(), AdamConfig::adamw(), AdamConfig::keras()] {
        across_threads("adam_step", 1000, || {
            let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
            adam_step(
                &cfg,
                &mut AdamState::from_moments(&mut m[..], &mut v[..]),
                3,
                &mut w,
                &g,
            )
            .unwrap();
            w.extend(m);
            w.extend(v);
            bits(&w)
        });
    }
    across_threads("sgd_step", 1000, || {
        let (mut w, mut b) = (w0.clone(), m0.clone());
        sgd_step(
            &SgdConfig::default(),
            &mut SgdState::from_buffer(&mut b[..]),
            &mut w,
            &g,
        )
        .unwrap();
        w.extend(b);
        bits(&w)
    });
}

/// Per-call thread control: `with_threads` bounds only the calling thread
/// and only inside `f`, nests, is restored after a panic and leaves the
/// process-wide bound alone; `gemm_with_threads` bounds one call.
#[test]
fn per_call_thread_bounds_leave_the_process_setting_alone() {
    let outside = nnkern::num_threads();
    assert!(with_threads(0, || ()).is_err());
    let (bound, nested, other_thread) = with_threads(3, || {
        let nested = with_threads(1, nnkern::num_threads).unwrap();
        let other = std::thread::spawn(nnkern::num_threads).join().unwrap();
        (nnkern::num_threads(), nested, other)
    })
    .unwrap();
    assert_eq!((bound, nested), (3, 1));
    assert_eq!(other_thread, outside, "another thread keeps the process-wide bound");
    assert_eq!(nnkern::num_threads(), outside);
    let panicked = std::panic::catch_unwind(|| with_threads(2, || panic!("a kernel caller panics")));
    assert!(panicked.is_err());
    assert_eq!(nnkern::num_threads(), outside, "restored after a panic");

    let (m, n, k) = (64, 64, 256);
    let (a, b) = (data(m * k, 1), data(k * n, 2));
    let av = MatRef::new(&a, m, k).unwrap();
    let bv = MatRef::new(&b, k, n).unwrap();
    let mut c = [vec![0.0f32; m * n], vec![0.0f32; m * n], vec![0.0f32; m * n]];
    force_min_per_task(Some(1));
    with_threads(1, || {
        gemm(1.0, av, bv, 0.0, MatMut::new(&mut c[0], m, n).unwrap()).unwrap()
    })
    .unwrap();
    let under_bound = last_task_count();
    gemm_with_threads(2, 1.0, av, bv, 0.0, MatMut::new(&mut c[1], m, n).unwrap()).unwrap();
    let two = last_task_count();
    gemm_with_threads(1, 1.0, av, bv, 0.0, MatMut::new(&mut c[2], m, n).unwrap()).unwrap();
    let one = last_task_count();
    force_min_per_task(None);
    assert_eq!((under_bound, one), (1, 1), "a bound of one thread splits nothing");
    assert!(two > 1, "two threads allowed and a threshold of 1: the call splits");
    assert!(c.iter().all(|ci| bits(ci) == bits(&c[0])));
    assert!(gemm_with_threads(0, 1.0, av, bv, 0.0, MatMut::new(&mut c[0], m, n).unwrap()).is_err());
}

/// Inside a parallel region the batch-sized work of a training step splits
/// over two threads at the region's own thresholds (no test hook), outside
/// it the same calls stay on one thread, and both give the bits of one
/// thread. Regions nest and close when their closure returns.
#[test]
fn a_parallel_region_splits_batch_sized_work_with_the_bits_of_one_thread() {
    // Batch-32 products of 6.3 MFLOP (below the split threshold outside a
    // region, above it inside): forward (32 × 256 · 256 × 384) and weight
    // gradient (256 × 32 · 32 × 384), and an Adam step over those weights.
    let (m, k, n) = (32, 256, 384);
    let x = data(m * k, 1);
    let w = data(k * n, 2);
    let dz = data(m * n, 3);
    let g = data(k * n, 4);
    let m0 = data(k * n, 5);
    let v0: Vec<f32> = data(k * n, 6).iter().map(|v| v.abs()).collect();
    let step = || {
        let mut out = Vec::new();
        let mut tasks = Vec::new();
        let mut z = vec![f32::NAN; m * n];
        gemm(
            1.0,
            MatRef::new(&x, m, k).unwrap(),
            MatRef::new(&w, k, n).unwrap(),
            0.0,
            MatMut::new(&mut z, m, n).unwrap(),
        )
        .unwrap();
        tasks.push(last_task_count());
        let mut dw = vec![f32::NAN; k * n];
        gemm(
            1.0,
            MatRef::new(&x, m, k).unwrap().t(),
            MatRef::new(&dz, m, n).unwrap(),
            0.0,
            MatMut::new(&mut dw, k, n).unwrap(),
        )
        .unwrap();
        tasks.push(last_task_count());
        let (mut wt, mut mt, mut vt) = (w.clone(), m0.clone(), v0.clone());
        adam_step(
            &AdamConfig::default(),
            &mut AdamState::from_moments(&mut mt[..], &mut vt[..]),
            3,
            &mut wt,
            &g,
        )
        .unwrap();
        tasks.push(last_task_count());
        for v in [z, dw, wt, mt, vt] {
            out.extend(bits(&v));
        }
        (out, tasks)
    };
    for isa in nnkern::testing::test_isas() {
        let (one, _) = with_threads(1, || with_isa(isa, step).unwrap()).unwrap();
        let (outside, cold) = with_threads(2, || with_isa(isa, step).unwrap()).unwrap();
        assert_eq!(
            cold,
            [1, 1, 1],
            "[{isa}] outside a region, batch-sized calls stay on one thread"
        );
        let (inside, awake) = with_threads(2, || {
            nnkern::parallel_region(|| nnkern::parallel_region(|| with_isa(isa, step).unwrap()))
        })
        .unwrap();
        assert!(
            awake.iter().all(|&t| t > 1),
            "[{isa}] inside a region every call splits: {awake:?}"
        );
        assert!(one == outside && one == inside, "[{isa}] a region changed the results");
        // Closed again: the calls stay on one thread.
        let (_, after) = with_threads(2, || with_isa(isa, step).unwrap()).unwrap();
        assert_eq!(after, [1, 1, 1], "[{isa}] the region did not close");
    }
}
