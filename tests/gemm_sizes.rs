//! Sizes at the edge of what a view can describe: shapes whose element count
//! cannot be counted are errors at the boundary; valid shapes with enormous
//! work and almost no memory (zero strides) run without faulting, with
//! packing scratch bounded by the blocking, not by `m`, `n` or `k`.

use nnkern::testing::{plan_gemm, PlanSummary};
use nnkern::{bf16, f16, Error, GemmInput, MatMut, MatRef};

/// The environment variable under which this test binary, run again by a
/// test below, performs one enormous call instead of the tests.
const CHILD: &str = "NNKERN_GEMM_SIZES_CHILD";

fn enormous_rust_call() {
    let one = [bf16::ONE];
    let a = MatRef::from_strides(&one, 1, 1 << 61, 0, 0).unwrap();
    let b = MatRef::from_strides(&one, 1 << 61, 1, 0, 0).unwrap();
    let mut c = [0.0f32];
    nnkern::gemm(1.0, a, b, 0.0, MatMut::new(&mut c, 1, 1).unwrap()).unwrap();
}

/// Entry point of the child process (does nothing in a normal test run).
#[test]
fn child_entry() {
    if std::env::var(CHILD).as_deref() == Ok("rust") {
        enormous_rust_call();
    }
}

#[test]
fn the_enormous_bf16_call_runs_without_faulting() {
    nnkern::testing::runs_for_three_seconds("child_entry", CHILD, "rust");
}

#[test]
fn uncountable_shapes_are_overflow_errors() {
    let one = [1.0f32];
    for (rows, cols) in [
        (64usize, 1usize << 58),
        (1 << 58, 64),
        (usize::MAX, 2),
        (1 << 32, 1 << 31),
    ] {
        assert!(
            matches!(
                MatRef::from_strides(&one, rows, cols, 0, 0),
                Err(Error::Overflow { .. })
            ),
            "{rows} x {cols}"
        );
    }
}

/// Every ISA and thread count: planning huge products neither overflows nor
/// asks for scratch beyond the blocking's bound.
fn plans_are_bounded<T: GemmInput>(one: T) {
    let data = [one];
    let huge = 1usize << 61;
    let shapes: [(usize, usize, usize); 6] = [
        (1, huge, 1),
        (1, 1, huge),
        (1 << 30, 1 << 30, 1 << 30),
        (3, 1 << 59, 7),
        (isize::MAX as usize, 1, 1),
        (1, 1 << 20, 1 << 40),
    ];
    for isa in nnkern::testing::test_isas() {
        for threads in [1, 2, 4, 1 << 20] {
            for (m, k, n) in shapes {
                for (ta, tb) in [(false, false), (true, true)] {
                    let a = if ta {
                        MatRef::from_strides(&data, k, m, 0, 0).unwrap().t()
                    } else {
                        MatRef::from_strides(&data, m, k, 0, 0).unwrap()
                    };
                    let b = if tb {
                        MatRef::from_strides(&data, n, k, 0, 0).unwrap().t()
                    } else {
                        MatRef::from_strides(&data, k, n, 0, 0).unwrap()
                    };
                    let p = plan_gemm(isa, threads, &a, &b, (m, n, n, 1)).unwrap().unwrap();
                    let (sa, sb) = p.scratch;
                    let (ba, bb) = p.scratch_bound;
                    assert!(sa <= ba && sb <= bb, "{isa} {threads} ({m},{k},{n}): {p:?}");
                    assert!(ba + bb < 1 << 28, "bound itself too large: {p:?}");
                    assert!(p.tasks >= 1 && p.tasks <= threads.max(1) * 4, "{p:?}");
                }
            }
        }
    }
}

#[test]
fn plans_of_enormous_products_are_bounded() {
    plans_are_bounded(1.0f32);
    plans_are_bounded(bf16::ONE);
    plans_are_bounded(f16::ONE);
}

/// A long-k zero-stride product that can finish: 2²⁶ steps of 1·1 sum to
/// 2²⁶ exactly (partial sums stay on multiples of the block length).
#[test]
fn long_zero_stride_products_compute_the_exact_sum() {
    let k = 1usize << 26;
    let one = [bf16::ONE];
    for isa in nnkern::testing::test_isas() {
        let mut c = [f32::NAN];
        nnkern::with_isa(isa, || {
            nnkern::gemm(
                1.0,
                MatRef::from_strides(&one, 1, k, 0, 0).unwrap(),
                MatRef::from_strides(&one, k, 1, 0, 0).unwrap(),
                0.0,
                MatMut::new(&mut c, 1, 1).unwrap(),
            )
            .unwrap()
        })
        .unwrap();
        assert_eq!(c[0], k as f32, "{isa}");
    }
}

/// A row split shares one packed B when B is far beyond a core's L2 (every
/// task copying it again would read it from the last-level cache), and not
/// when it is small (32 × 500 floats: each task packs it from cache) or on
/// one thread.
#[test]
fn row_splits_share_a_large_packed_b() {
    let big = vec![0.0f32; 1024 * 1024];
    let square = MatRef::new(&big, 1024, 1024).unwrap();
    let (x, dh) = (vec![0.0f32; 32 * 784], vec![0.0f32; 32 * 500]);
    let xt = MatRef::new(&x, 32, 784).unwrap().t();
    let dh = MatRef::new(&dh, 32, 500).unwrap();
    for isa in nnkern::testing::test_isas() {
        let p = plan_gemm(isa, 2, &square, &square, (1024, 1024, 1024, 1))
            .unwrap()
            .unwrap();
        assert!(
            p.shared_b && p.pack_b && p.tasks > 1,
            "{isa} 1024^2 on 2 threads: {p:?}"
        );
        let p = plan_gemm(isa, 1, &square, &square, (1024, 1024, 1024, 1))
            .unwrap()
            .unwrap();
        assert!(!p.shared_b && p.tasks == 1, "{isa} 1024^2 on 1 thread: {p:?}");
        let p = plan_gemm(isa, 2, &xt, &dh, (784, 500, 500, 1)).unwrap().unwrap();
        assert!(!p.shared_b, "{isa} (784,32,500) A=T on 2 threads: {p:?}");
    }
}

/// A transposed B with short k ((32,10,500) with B a view of a 500 × 10
/// matrix, the output layer's backward) is packed through the register
/// transposes rather than the product swapped into Cᵀ = Bᵀ·Aᵀ, whose C
/// would be written an element at a time (40% slower with AVX2 on a Zen 5
/// core), on every vector ISA (the scalar kernels store C element by element
/// in either orientation).
#[test]
fn a_short_transposed_b_is_packed_not_c_scattered() {
    let (a, w) = (vec![0.0f32; 32 * 10], vec![0.0f32; 500 * 10]);
    let a = MatRef::new(&a, 32, 10).unwrap();
    let bt = MatRef::new(&w, 500, 10).unwrap().t();
    for isa in nnkern::testing::test_isas() {
        if isa == nnkern::Isa::Scalar {
            continue;
        }
        let p = plan_gemm(isa, 1, &a, &bt, (32, 500, 500, 1)).unwrap().unwrap();
        assert!(!p.swap && p.pack_b, "{isa} (32,10,500) B=T: {p:?}");
    }
}

/// The k steps of a product are cut into the fewest blocks of at most KC,
/// all of one length, a multiple of 8, but for the last, which is shorter
/// only by what that rounding added (784 = 392 + 392 wherever KC is at
/// least 392, not KC + a short remainder that pays a C tile's update for a
/// few steps).
#[test]
fn k_is_cut_into_even_blocks() {
    let data = [0.0f32];
    for isa in nnkern::testing::test_isas() {
        let big_kc = nnkern::testing::tiling(isa)[2];
        for k in [
            1,
            7,
            8,
            9,
            100,
            big_kc - 1,
            big_kc,
            big_kc + 1,
            784,
            2 * big_kc + 3,
            5000,
            1 << 20,
        ] {
            let a = MatRef::from_strides(&data, 64, k, 0, 0).unwrap();
            let b = MatRef::from_strides(&data, k, 64, 0, 0).unwrap();
            let p = plan_gemm(isa, 1, &a, &b, (64, 64, 64, 1)).unwrap().unwrap();
            let blocks = k.div_ceil(p.kc);
            assert!(p.kc <= big_kc && p.kc % 8 == 0, "{isa} k {k}: {p:?}");
            assert_eq!(blocks, k.div_ceil(big_kc), "{isa} k {k}: not the fewest blocks: {p:?}");
            let last = k - (blocks - 1) * p.kc;
            assert!(last + 8 * blocks > p.kc, "{isa} k {k}: last block {last} of {}", p.kc);
            if k == 784 && big_kc >= 392 {
                assert_eq!(p.kc, 392, "{isa}");
            }
        }
    }
}

/// The one-thread plan of an `(m, k, n)` product of row-major matrices over
/// `data` (B a transposed view of an n × k array when `b_t`), C row-major.
fn plan_row_major(data: &[f32], isa: nnkern::Isa, (m, k, n): (usize, usize, usize), b_t: bool) -> PlanSummary {
    let a = MatRef::new(&data[..m * k], m, k).unwrap();
    let b = if b_t {
        MatRef::new(&data[..k * n], n, k).unwrap().t()
    } else {
        MatRef::new(&data[..k * n], k, n).unwrap()
    };
    plan_gemm(isa, 1, &a, &b, (m, n, n, 1)).unwrap().unwrap()
}

/// The dot-product path is planned for a linear layer's output product in
/// PyTorch's layout, `x·Wᵀ` with few outputs (both operands read in place
/// along k), and in Keras's, `x·W` (B's rows contiguous: B transposed once
/// into scratch, within the scratch bound), and not where it would lose: k
/// shorter than a vector, operands beyond half of L2, or B contiguous in
/// neither direction.
#[test]
fn dot_products_where_they_win() {
    let data = vec![0.0f32; 2048 * 2048];
    let plan = |isa, shape, b_t| plan_row_major(&data, isa, shape, b_t);
    for isa in nnkern::testing::test_isas() {
        if isa == nnkern::Isa::Scalar {
            continue;
        }
        let p = plan(isa, (32, 500, 10), true);
        assert!(p.dot && !p.pack_a && !p.pack_b && p.scratch == (0, 0), "{isa}: {p:?}");
        let p = plan(isa, (32, 500, 10), false);
        assert!(p.dot && !p.pack_a && p.pack_b, "{isa}: {p:?}");
        assert!(
            p.scratch.0 == 0 && p.scratch.1 >= 500 * 10 && p.scratch.1 <= p.scratch_bound.1,
            "{isa}: {p:?}"
        );
        for (shape, b_t) in [
            ((32, 10, 500), true),
            ((1024, 1024, 1024), true),
            ((1024, 1024, 1024), false),
        ] {
            let p = plan(isa, shape, b_t);
            assert!(!p.dot, "{isa} {shape:?} B=T {b_t}: {p:?}");
        }
        let a = MatRef::new(&data[..32 * 500], 32, 500).unwrap();
        let b = MatRef::from_strides(&data, 500, 10, 20, 2).unwrap();
        let p = plan_gemm(isa, 1, &a, &b, (32, 10, 10, 1)).unwrap().unwrap();
        assert!(!p.dot, "{isa}, B strided both ways: {p:?}");
    }
}

/// Row tiles run outermost in a block exactly where its B fits in a quarter
/// of L2: the batch-32 weight gradient (k = 32) does, deep products keep
/// the column panels outermost (their B panel in L1).
#[test]
fn row_tiles_outermost_where_the_b_block_fits_in_l2() {
    let data = vec![0.0f32; 2048 * 2048];
    let plan = |isa, shape| plan_row_major(&data, isa, shape, false);
    for isa in nnkern::testing::test_isas() {
        let p = plan(isa, (784, 32, 500));
        assert!(p.rows_outer && !p.swap && !p.dot, "{isa}: {p:?}");
        for shape in [(1024, 1024, 1024), (2048, 2048, 2048)] {
            let p = plan(isa, shape);
            assert!(!p.rows_outer, "{isa} {shape:?}: {p:?}");
        }
    }
}

/// A row-major B that fits in half of L1 whole is read in place (every row
/// tile reads it from L1 as it would read packed panels); one of all of L1
/// is packed. The sizes follow the detected L1: 64 columns, k rows to make
/// B exactly half of L1, then twice that.
#[test]
fn b_that_fits_in_l1_is_read_in_place() {
    let n = 64;
    let k = nnkern::cpu::cache_sizes().l1d / 2 / (4 * n);
    let data = vec![0.0f32; 64 * 2 * k];
    let plan = |isa, shape| plan_row_major(&data, isa, shape, false);
    for isa in nnkern::testing::test_isas() {
        if isa == nnkern::Isa::Scalar {
            continue;
        }
        let p = plan(isa, (64, k, n));
        assert!(
            !p.swap && !p.dot && !p.pack_b && p.scratch.1 == 0,
            "{isa} k = {k}: {p:?}"
        );
        let p = plan(isa, (64, 2 * k, n));
        assert!(!p.swap && !p.dot && p.pack_b, "{isa} k = {}: {p:?}", 2 * k);
    }
}
