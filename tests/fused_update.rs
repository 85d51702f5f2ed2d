//! The optimizer fused into the weight-gradient product (`gemm_adam_step`,
//! `gemm_sgd_step`) against the unfused path (`gemm` into a gradient
//! buffer, then `adam_step` / `sgd_step`): bit for bit, on every ISA this
//! CPU runs, on one thread and split over 2 and 3 (split forced), over random
//! shapes (strips of one row up to many strips, `k` beyond one KC block),
//! transposed and strided operands and special values (NaN payloads aside). The unfused path is
//! itself checked against the reference elsewhere (`tests/gemm.rs`,
//! `tests/elementwise.rs`).

use nnkern::testing::{force_min_per_task, last_task_count, test_isas};
use nnkern::{
    adam_step, gemm, gemm_adam_step, gemm_sgd_step, sgd_step, with_isa, with_threads, AdamConfig, AdamState, Error,
    MatMut, MatRef, SgdConfig, SgdState,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    ProptestConfig::with_cases(cases)
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        20 => -2.0f32..2.0,
        1 => prop::sample::select(vec![0.0f32, -0.0, 1e-30, -3e-39, 1e20, f32::NAN, f32::INFINITY]),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    /// A given as its transpose (k × m storage), as the layer input is.
    a_t: bool,
    /// Extra elements per row of A's and B's storage.
    pad: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    w: Vec<f32>,
    m1: Vec<f32>,
    v1: Vec<f32>,
    step: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![1usize..40, 100usize..300],
        prop_oneof![0usize..8, 8usize..70, Just(600usize)],
        prop_oneof![1usize..40, Just(500usize)],
        any::<bool>(),
        0usize..3,
        1u64..2000,
    )
        .prop_flat_map(|(m, k, n, a_t, pad, step)| {
            let a_len = if a_t { k * (m + pad) } else { m * (k + pad) };
            (
                prop::collection::vec(value(), a_len),
                prop::collection::vec(value(), k * (n + pad)),
                prop::collection::vec(value(), m * n),
                prop::collection::vec(value(), m * n),
                prop::collection::vec(0.0f32..4.0, m * n),
            )
                .prop_map(move |(a, b, w, m1, v1)| Case {
                    m,
                    k,
                    n,
                    a_t,
                    pad,
                    a,
                    b,
                    w,
                    m1,
                    v1,
                    step,
                })
        })
}

impl Case {
    fn a(&self) -> MatRef<'_, f32> {
        if self.a_t {
            MatRef::from_strides(&self.a, self.m, self.k, 1, self.m + self.pad).unwrap()
        } else {
            MatRef::from_strides(&self.a, self.m, self.k, self.k + self.pad, 1).unwrap()
        }
    }
    fn b(&self) -> MatRef<'_, f32> {
        MatRef::from_strides(&self.b, self.k, self.n, self.n + self.pad, 1).unwrap()
    }
    fn gradient(&self) -> Vec<f32> {
        let mut g = vec![f32::NAN; self.m * self.n];
        gemm(
            1.0,
            self.a(),
            self.b(),
            0.0,
            MatMut::new(&mut g, self.m, self.n).unwrap(),
        )
        .unwrap();
        g
    }
}

/// The bits of each value, every NaN as one: which operand's payload a NaN
/// result carries is not specified by IEEE 754 and follows the operand
/// order, which the GEMM's orientation may swap (`fma(a, b, c)` with NaNs
/// in both `a` and `b`).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { f32::NAN.to_bits() } else { x.to_bits() })
        .collect()
}

/// Runs `f` on every ISA, on 1 thread and (split forced) on 2 and 3; each
/// result must equal `want` of the same ISA bit for bit.
fn on_every_path(c: &Case, want: impl Fn() -> Vec<u32>, f: impl Fn() -> Vec<u32>) -> Result<(), TestCaseError> {
    for isa in test_isas() {
        let expected = with_threads(1, || with_isa(isa, &want).unwrap()).unwrap();
        for threads in [1, 2, 3] {
            force_min_per_task((threads > 1).then_some(1));
            let got = with_threads(threads, || with_isa(isa, &f).unwrap()).unwrap();
            let tasks = last_task_count();
            force_min_per_task(None);
            if threads > 1 && c.m > 1 {
                prop_assert!(tasks > 1, "[{}, {} threads] did not split", isa, threads);
            }
            prop_assert!(
                got == expected,
                "[{}, {} threads] m {} k {} n {}: differs from gemm + update",
                isa,
                threads,
                c.m,
                c.k,
                c.n
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fused_adam_is_gemm_then_adam(c in case(), which in 0usize..3) {
        let cfg = [AdamConfig::default(), AdamConfig::adamw(), AdamConfig::keras()][which];
        let unfused = || {
            let g = c.gradient();
            let (mut w, mut m, mut v) = (c.w.clone(), c.m1.clone(), c.v1.clone());
            adam_step(&cfg, &mut AdamState::from_moments(&mut m[..], &mut v[..]), c.step, &mut w, &g).unwrap();
            [bits(&w), bits(&m), bits(&v)].concat()
        };
        let fused = || {
            let (mut w, mut m, mut v) = (c.w.clone(), c.m1.clone(), c.v1.clone());
            gemm_adam_step(&cfg, &mut AdamState::from_moments(&mut m[..], &mut v[..]), c.step, &mut w, c.a(), c.b())
                .unwrap();
            [bits(&w), bits(&m), bits(&v)].concat()
        };
        on_every_path(&c, unfused, fused)?;
    }

    #[test]
    fn fused_sgd_is_gemm_then_sgd(c in case(), momentum in prop::sample::select(vec![0.0f32, 0.9]), wd in prop::sample::select(vec![0.0f32, 1e-4])) {
        let cfg = SgdConfig { lr: 0.01, momentum, weight_decay: wd };
        let unfused = || {
            let g = c.gradient();
            let (mut w, mut b) = (c.w.clone(), c.m1.clone());
            sgd_step(&cfg, &mut SgdState::from_buffer(&mut b[..]), &mut w, &g).unwrap();
            [bits(&w), bits(&b)].concat()
        };
        let fused = || {
            let (mut w, mut b) = (c.w.clone(), c.m1.clone());
            gemm_sgd_step(&cfg, &mut SgdState::from_buffer(&mut b[..]), &mut w, c.a(), c.b()).unwrap();
            [bits(&w), bits(&b)].concat()
        };
        on_every_path(&c, unfused, fused)?;
    }
}

#[test]
fn bad_shapes_and_states_are_errors_and_leave_everything_alone() {
    let a = vec![1.0f32; 6];
    let b = vec![1.0f32; 12];
    let av = MatRef::new(&a, 2, 3).unwrap();
    let bv = MatRef::new(&b, 3, 4).unwrap();
    let cfg = AdamConfig::default();
    let mut w = vec![0.5f32; 8];
    let mut st = AdamState::new(8);
    // Inner sizes differ.
    let b2 = MatRef::new(&b, 4, 3).unwrap();
    assert!(matches!(
        gemm_adam_step(&cfg, &mut st, 1, &mut w, av, b2),
        Err(Error::ShapeMismatch { .. })
    ));
    // w is not m × n.
    let mut w7 = vec![0.5f32; 7];
    assert!(gemm_adam_step(&cfg, &mut AdamState::new(7), 1, &mut w7, av, bv).is_err());
    // Moments of another length; step 0; a bad configuration.
    assert!(gemm_adam_step(&cfg, &mut AdamState::new(9), 1, &mut w, av, bv).is_err());
    assert!(gemm_adam_step(&cfg, &mut st, 0, &mut w, av, bv).is_err());
    let bad = AdamConfig { beta1: 1.5, ..cfg };
    assert!(gemm_adam_step(&bad, &mut st, 1, &mut w, av, bv).is_err());
    let sgd = SgdConfig::default();
    assert!(gemm_sgd_step(&sgd, &mut SgdState::new(3), &mut w, av, bv).is_err());
    assert!(gemm_sgd_step(&sgd, &mut SgdState::new(8), &mut w7, av, bv).is_err());
    assert!(w.iter().all(|&x| x == 0.5) && w7.iter().all(|&x| x == 0.5));
    assert!(st.m().iter().chain(st.v()).all(|&x| x == 0.0));
    // Zero sizes: m = 0 or n = 0 is nothing to do; k = 0 is a zero gradient.
    let empty: [f32; 0] = [];
    let mut none: [f32; 0] = [];
    gemm_adam_step(
        &cfg,
        &mut AdamState::new(0),
        1,
        &mut none,
        MatRef::new(&empty, 0, 3).unwrap(),
        bv,
    )
    .unwrap();
    let mut w2 = vec![1.0f32; 8];
    let mut s2 = AdamState::new(8);
    gemm_adam_step(
        &cfg,
        &mut s2,
        1,
        &mut w2,
        MatRef::new(&empty, 2, 0).unwrap(),
        MatRef::new(&empty, 0, 4).unwrap(),
    )
    .unwrap();
    let mut w3 = vec![1.0f32; 8];
    let mut s3 = AdamState::new(8);
    adam_step(&cfg, &mut s3, 1, &mut w3, &[0.0; 8]).unwrap();
    assert_eq!(bits(&w2), bits(&w3));
}
