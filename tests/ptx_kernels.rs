//! Every PTX kernel in `kernels/` and every path through it, reached through
//! the public CUDA operations (`nnkern::cuda`), so the host code that picks
//! grids, strides, parameter order, packing and layout flags is what is
//! tested; nothing here rebuilds a launch by hand.
//!
//! Inputs and outputs sit in non-canonical layouts: padded strides, offsets
//! that misalign the bases (so the scalar-load fallbacks and the packing run),
//! column-major and padded C and Y, many tiles and many K steps. Input padding
//! holds NaN (a read of it poisons the result) and output padding a sentinel
//! that must survive. Each result is compared with the exact value within the
//! bound derived from the kernel's arithmetic (`tests/common/tol.rs`); the
//! launch records show which path ran.
//!
//! Runs on the PTX executor (its bounds, uninitialised-shared-memory and race
//! checks see every launch), or on a GPU under `REQUIRE_GPU=1`.
#![cfg(feature = "cuda")]

mod common;

use common::*;
use nnkern::cuda::{self, Device, DeviceBuffer, DeviceMatMut, DeviceMatRef, DeviceTargets, KernelArg};
use nnkern::{
    bf16, f16, reference, Activation, AdamConfig, AdamEpsilon, MatMut, MatRef, SgdConfig, Targets, WeightDecay,
};
use proptest::prelude::{proptest, ProptestConfig, TestCaseError};

/// Every kernel entry of `kernels/*.ptx`; the coverage test checks that this
/// file launches each one.
const ALL_ENTRIES: [&str; 23] = [
    "nk_act_fwd",
    "nk_gather_scaled",
    "nk_gather_batch",
    "nk_advance",
    "nk_opt_prep",
    "nk_count_correct",
    "nk_act_bwd",
    "nk_bias_act",
    "nk_bias_grad",
    "nk_adam",
    "nk_sgd",
    "nk_sumsq",
    "nk_clip_scale",
    "nk_softmax_xent",
    "nk_softmax",
    "nk_sgemm",
    "nk_gemm_bf16",
    "nk_gemm_f16",
    "nk_gemm_tf32",
    "nk_pack16",
    "nk_pack32",
    "nk_gemm_sm90_bf16",
    "nk_gemm_sm90_f16",
];

// ---------------------------------------------------------------- activations

/// Activation inputs: the special values, a dense sweep over the range where
/// the kernels switch formulas, and magnitudes from 1e-30 to 1e20.
fn activation_inputs() -> Vec<f32> {
    let mut v = act_inputs(700, 3);
    v.extend((-1200..=1200).map(|i| i as f32 / 100.0));
    for e in -30..=20 {
        for m in [1.0f32, 2.5, 7.0] {
            let x = m * 10f32.powi(e);
            v.extend([x, -x]);
        }
    }
    v.extend([
        0.549_999_9,
        0.55,
        -0.55,
        0.550_000_1,
        87.0,
        -87.0,
        88.7,
        -88.7,
        89.0,
        -89.0,
    ]);
    v
}

#[test]
fn activations_within_their_derived_bounds() {
    let dev = device();
    let x = activation_inputs();
    let n = x.len();
    let mut r = KRng::new(4);
    let mut dy = r.vec(n, -3.0, 3.0);
    for (i, s) in [0.0f32, -0.0, 1e-30, 1e30, f32::NAN].iter().enumerate() {
        dy[(i * 101) % n] = *s;
    }
    let dx_ = dev.upload(&x).unwrap();
    let ddy = dev.upload(&dy).unwrap();
    // A grid of 3 blocks: the grid-stride loops run many rounds.
    dev.limit_grid_for_tests(3);
    for act in Activation::ALL {
        let want: Vec<f64> = x.iter().map(|&v| act_exact(act, v)).collect();
        let bound = |i: usize| act_forward_bound(act, x[i]);
        let mut y = dev.filled(n, f32::NAN).unwrap();
        cuda::activation_forward(&dev, act, &dx_, &mut y).unwrap();
        let fwd = ratio(check_bound(
            &format!("{act} forward"),
            &dev.download(&y).unwrap(),
            &want,
            bound,
        ));
        let mut inplace = dev.upload(&x).unwrap();
        cuda::activation_forward_inplace(&dev, act, &mut inplace).unwrap();
        check_bound(
            &format!("{act} forward in place"),
            &dev.download(&inplace).unwrap(),
            &want,
            bound,
        )
        .unwrap();

        let want: Vec<f64> = x
            .iter()
            .zip(&dy)
            .map(|(&v, &d)| act_backward_exact(act, v, d))
            .collect();
        let bound = |i: usize| act_backward_bound(act, x[i], dy[i]);
        let mut dx = dev.filled(n, f32::NAN).unwrap();
        cuda::activation_backward(&dev, act, &dx_, &ddy, &mut dx).unwrap();
        let bwd = ratio(check_bound(
            &format!("{act} backward"),
            &dev.download(&dx).unwrap(),
            &want,
            bound,
        ));
        let mut g = dev.upload(&dy).unwrap();
        cuda::activation_backward_inplace(&dev, act, &dx_, &mut g).unwrap();
        check_bound(
            &format!("{act} backward in place"),
            &dev.download(&g).unwrap(),
            &want,
            bound,
        )
        .unwrap();
        eprintln!("{act}: largest error / bound: forward {fwd:.3}, backward {bwd:.3}");
    }
}

/// The erf formula the kernels use (A&S 7.1.26) meets the header's claim:
/// |erf error| ≤ 1.5e-7, so |Φ error| ≤ 0.75e-7, over the whole line.
#[test]
fn gelu_erf_formula_meets_its_documented_bound() {
    let worst = cdf_model_error((-40_000..=40_000).map(|i| i as f64 / 2000.0));
    assert!(worst <= 0.75e-7, "{worst}");
    eprintln!("A&S 7.1.26: largest |Φ error| {worst:e}");
}

// ---------------------------------------------------------------- bias

#[test]
fn bias_add_activation_and_bias_grad_on_strided_views() {
    let dev = device();
    let shapes = [(1usize, 1usize), (7, 33), (40, 129), (300, 3), (9, 300)];
    for (s, &(rows, cols)) in shapes.iter().enumerate() {
        let mut r = KRng::new(20 + s as u64);
        let x = r.vec(rows * cols, -4.0, 4.0);
        let bias = r.vec(cols, -1.0, 1.0);
        let db = dev.upload(&bias).unwrap();
        // x: padded rows with an offset, or column-major padded; y: column strides.
        let layouts = [
            (Lay::new(rows, cols, false, 3, 5), Lay::new(rows, cols, true, 2, 1)),
            (Lay::new(rows, cols, true, 1, 0), Lay::new(rows, cols, false, 0, 3)),
        ];
        for (xl, yl) in layouts {
            for (act, cap) in [
                (Activation::Identity, 1),
                (Activation::Relu, 2),
                (Activation::GeluErf, 65535),
                (Activation::GeluTanh, 3),
            ] {
                dev.limit_grid_for_tests(cap);
                let xbuf = scatter(&x, rows, cols, xl, f32::NAN);
                let mut xd = dev.upload(&xbuf).unwrap();
                let mut yd = dev.filled(yl.len(rows, cols), SENTINEL).unwrap();
                cuda::bias_add_activation(
                    &dev,
                    act,
                    DeviceMatMut::from_strides(&mut xd, xl.offset, rows, cols, xl.rs, xl.cs).unwrap(),
                    &db,
                    DeviceMatMut::from_strides(&mut yd, yl.offset, rows, cols, yl.rs, yl.cs).unwrap(),
                )
                .unwrap();
                // x + bias rounds once, as the reference does: exactly equal.
                let mut xw = x.clone();
                reference::bias_add(MatMut::new(&mut xw, rows, cols).unwrap(), &bias).unwrap();
                let xk = dev.download(&xd).unwrap();
                assert_eq!(gather(&xk, rows, cols, xl), xw, "bias_add x {rows}x{cols} {xl:?}");
                // x's padding (NaN) is neither read into y nor written.
                for (i, v) in xk.iter().enumerate() {
                    assert!(v.is_nan() || xbuf[i].is_finite(), "x padding {i} written");
                }
                let yk = dev.download(&yd).unwrap();
                outside_untouched("y", &yk, rows, cols, yl, SENTINEL);
                let want: Vec<f64> = xw.iter().map(|&v| act_exact(act, v)).collect();
                check_bound(
                    &format!("bias_add_activation {act} y {yl:?}"),
                    &gather(&yk, rows, cols, yl),
                    &want,
                    |i| act_forward_bound(act, xw[i]),
                )
                .unwrap();
            }
        }
        dev.limit_grid_for_tests(usize::MAX);
        // bias_grad: dy padded with an offset, and transposed (column-major) padded.
        for dl in [Lay::new(rows, cols, false, 2, 3), Lay::new(rows, cols, true, 1, 1)] {
            let dyb = scatter(&x, rows, cols, dl, f32::NAN);
            let dyd = dev.upload(&dyb).unwrap();
            let mut g = dev.filled(cols, f32::NAN).unwrap();
            cuda::bias_grad(
                &dev,
                DeviceMatRef::from_strides(&dyd, dl.offset, rows, cols, dl.rs, dl.cs).unwrap(),
                &mut g,
            )
            .unwrap();
            let mut want = vec![0.0f32; cols];
            reference::bias_grad(MatRef::new(&x, rows, cols).unwrap(), &mut want).unwrap();
            // One thread sums rows tid.y, tid.y + 8, … (ceil(rows/8) − 1 roundings), then
            // thread row 0 adds the 8 partials (7): each rounding ≤ EPS·Σ|dy|; the
            // reference's rounding EPS·|want|.
            let abs: Vec<f64> = (0..cols)
                .map(|j| (0..rows).map(|i| x[i * cols + j].abs() as f64).sum())
                .collect();
            let steps = rows.div_ceil(8) as f64 + 6.0;
            check_bound(
                &format!("bias_grad {dl:?}"),
                &dev.download(&g).unwrap(),
                &want.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                |j| steps * EPS * abs[j] + EPS * want[j].abs() as f64,
            )
            .unwrap();
        }
    }
}

// ---------------------------------------------------------------- GEMM

/// Fixed layouts on a shape with several 128×128 tiles and several K steps of
/// every kernel (sgemm: 12 steps of 8; bf16/f16: 3 of 32, the pipeline's depth;
/// tf32: 6 of 16), each with the path the host must pick for it.
#[test]
fn gemm_paths_over_layouts() {
    let dev = device();
    let (m, n, k) = (200usize, 152usize, 96usize);
    // (A, B, C, Y, expected (A vector, B vector) for sgemm, expected (A packed, B packed) for the tensor cores)
    let cases = [
        // row-major, aligned: sgemm vector loads for both; the tensor cores read A
        // directly and pack B (k is not its contiguous index).
        (
            Lay::new(m, k, false, 0, 0),
            Lay::new(k, n, false, 0, 0),
            Lay::new(m, n, false, 0, 0),
            None,
            (true, true),
            (false, true),
        ),
        // column-major operands, C and Y column-major.
        (
            Lay::new(m, k, true, 0, 0),
            Lay::new(k, n, true, 0, 0),
            Lay::new(m, n, true, 0, 0),
            Some((Lay::new(m, n, true, 0, 0), Activation::GeluTanh)),
            (true, true),
            (true, false),
        ),
        // misaligned bases and odd strides: scalar loads, both packed.
        (
            Lay::new(m, k, false, 3, 1),
            Lay::new(k, n, true, 5, 3),
            Lay::new(m, n, false, 2, 7),
            Some((Lay::new(m, n, true, 1, 5), Activation::Sigmoid)),
            (false, false),
            (true, true),
        ),
        // padded but aligned (offset 8 elements = 16 bytes for 16-bit, 32 for f32):
        // vector loads, and the tensor cores read both in place.
        (
            Lay::new(m, k, false, 8, 8),
            Lay::new(k, n, true, 8, 8),
            Lay::new(m, n, true, 3, 1),
            Some((Lay::new(m, n, false, 0, 3), Activation::GeluErf)),
            (true, true),
            (false, false),
        ),
    ];
    for (ci, &(a, b, c, y, vec, packed)) in cases.iter().enumerate() {
        for kind in [Kind::F32, Kind::Bf16, Kind::F16, Kind::Tf32] {
            let s = GemmSpec {
                m,
                n,
                k,
                a,
                b,
                c,
                y,
                bias: y.is_some(),
                alpha: 1.25,
                beta: if ci % 2 == 0 { 0.0 } else { -0.75 },
                rough: false,
            };
            dev.record_launches(true);
            let l = gemm_check(&dev, kind, &s, 10 + ci as u64).unwrap();
            let names: Vec<&str> = l.iter().map(|r| r.kernel).collect();
            // On an sm_90 GPU the 16-bit layouts the tensor cores read in place go
            // to the Hopper kernel (its dispatch is tested on the executor below).
            if is_sm90(&dev) && sm90_kernel_of(kind).is_some() && packed == (false, false) {
                assert_eq!(names, [sm90_kernel_of(kind).unwrap()], "case {ci}");
                continue;
            }
            assert_eq!(names.last(), Some(&kernel_of(kind)), "{names:?}");
            if kind == Kind::F32 {
                assert_eq!(names, ["nk_sgemm"]);
                assert_eq!(sgemm_vec_flags(&l), vec, "case {ci}");
            } else {
                let packer = if kind == Kind::Tf32 { "nk_pack32" } else { "nk_pack16" };
                let packs = names.iter().filter(|&&x| x == packer).count();
                assert_eq!(
                    packs,
                    usize::from(packed.0) + usize::from(packed.1),
                    "case {ci} {kind:?}: {names:?}"
                );
                assert_eq!(names.len(), packs + 1, "{names:?}");
            }
        }
    }
    // tf32 on values it must round, a ragged K for every kernel, and a
    // K = 0 / alpha = 0 pair that must not read A or B.
    for (i, (m, n, k, alpha, beta, rough)) in [
        (130usize, 129usize, 100usize, 1.0f32, 0.5f32, true),
        (129, 257, 33, 0.5, 0.0, false),
        (70, 90, 0, 1.0, 0.5, false),
        (70, 90, 20, 0.0, 2.0, false),
    ]
    .into_iter()
    .enumerate()
    {
        for kind in [Kind::F32, Kind::Bf16, Kind::F16, Kind::Tf32] {
            let s = GemmSpec {
                m,
                n,
                k,
                a: Lay::new(m, k, i % 2 == 1, 1, 2),
                b: Lay::new(k, n, i % 2 == 0, 0, 1),
                c: Lay::new(m, n, i % 2 == 1, 2, 0),
                y: Some((Lay::new(m, n, i % 2 == 0, 0, 1), Activation::Tanh)),
                bias: true,
                alpha,
                beta,
                rough: rough && kind == Kind::Tf32,
            };
            gemm_check(&dev, kind, &s, 40 + i as u64).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(32, 6)))]

    /// Random shapes (up to two tiles each way, up to five K steps), layouts,
    /// paddings, offsets, scalars, epilogues, for every GEMM kernel.
    #[test]
    fn gemm_random_layouts(m in 1usize..=sized(300, 150), n in 1usize..=sized(300, 150), k in 0usize..=sized(200, 70),
                           lays in proptest::array::uniform4((proptest::bool::ANY, 0usize..4, 0usize..5)),
                           act in 0usize..6, beta_zero: bool, bias: bool, seed: u64) {
        let dev = device();
        let [la, lb, lc, ly] = lays;
        let s = GemmSpec {
            m, n, k,
            a: Lay::new(m, k, la.0, la.1, la.2),
            b: Lay::new(k, n, lb.0, lb.1, lb.2),
            c: Lay::new(m, n, lc.0, lc.1, lc.2),
            y: Some((Lay::new(m, n, ly.0, ly.1, ly.2), Activation::ALL[act])),
            bias,
            alpha: 0.75,
            beta: if beta_zero { 0.0 } else { -1.25 },
            rough: seed % 2 == 0,
        };
        for kind in [Kind::F32, Kind::Bf16, Kind::F16, Kind::Tf32] {
            let spec = GemmSpec { rough: s.rough && kind == Kind::Tf32, ..s };
            gemm_check(&dev, kind, &spec, seed).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn softmax_xent_random_layouts(rows in 1usize..=sized(100, 30), cols in 1usize..=sized(300, 90), soft: bool,
                                   lays in proptest::array::uniform3((proptest::bool::ANY, 0usize..3, 0usize..4)),
                                   seed: u64) {
        let dev = device();
        let [lx, lt, ld] = lays;
        xent_check(&dev, rows, cols, soft, Lay::new(rows, cols, lx.0, lx.1, lx.2), Lay::new(rows, cols, lt.0, lt.1, lt.2),
                   Lay::new(rows, cols, ld.0, ld.1, ld.2), seed).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------- softmax / cross-entropy

#[test]
fn softmax_and_xent_on_strided_views() {
    let dev = device();
    for (i, &(rows, cols)) in [(1usize, 1usize), (9, 33), (17, 64), (40, 129), (3, 300), (100, 3)]
        .iter()
        .enumerate()
    {
        for soft in [false, true] {
            let (xl, tl, dl) = match i % 3 {
                0 => (
                    Lay::new(rows, cols, false, 3, 1),
                    Lay::new(rows, cols, true, 1, 2),
                    Lay::new(rows, cols, true, 2, 3),
                ),
                1 => (
                    Lay::new(rows, cols, true, 0, 5),
                    Lay::new(rows, cols, false, 2, 0),
                    Lay::new(rows, cols, false, 1, 1),
                ),
                _ => (
                    Lay::new(rows, cols, false, 0, 0),
                    Lay::new(rows, cols, false, 0, 0),
                    Lay::new(rows, cols, true, 0, 0),
                ),
            };
            xent_check(&dev, rows, cols, soft, xl, tl, dl, 100 + i as u64).unwrap();
        }
    }
    // The accumulator over several batches, and a bad label found by the kernel.
    let mut acc = cuda::XentAccumulator::new(&dev).unwrap();
    let (rows, cols) = (37usize, 11usize);
    let mut want = 0.0f64;
    let mut bound = 0.0f64;
    for s in 0..3u64 {
        let mut r = KRng::new(300 + s);
        let x = r.vec(rows * cols, -5.0, 5.0);
        let labels: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
        let l = reference::softmax_xent_loss(MatRef::new(&x, rows, cols).unwrap(), Targets::Labels(&labels)).unwrap();
        want += l as f64;
        let per_row: f64 = x
            .chunks(cols)
            .zip(&labels)
            .map(|(row, &lab)| {
                let rl = row_lse(row);
                rl.err + EPS * (rl.lse - row[lab as usize] as f64).abs()
            })
            .sum();
        bound += per_row / rows as f64 + 2.0 * EPS * l.abs() as f64;
        let (dx, dl) = (dev.upload(&x).unwrap(), dev.upload(&labels).unwrap());
        let mut d = dev.filled(rows * cols, f32::NAN).unwrap();
        cuda::softmax_xent_accumulate(
            &dev,
            DeviceMatRef::new(&dx, rows, cols).unwrap(),
            DeviceTargets::Labels(&dl),
            DeviceMatMut::new(&mut d, rows, cols).unwrap(),
            &mut acc,
        )
        .unwrap();
    }
    let got = acc.read(&dev).unwrap();
    assert!((got - want).abs() <= bound, "{got} vs {want} (bound {bound:e})");
    let x = dev.upload(&[0.0f32; 6]).unwrap();
    let bad = dev.upload(&[0u32, 3]).unwrap();
    let mut d = dev.zeros::<f32>(6).unwrap();
    let r = cuda::softmax_xent(
        &dev,
        DeviceMatRef::new(&x, 2, 3).unwrap(),
        DeviceTargets::Labels(&bad),
        DeviceMatMut::new(&mut d, 2, 3).unwrap(),
    );
    assert!(
        matches!(
            r,
            Err(nnkern::Error::LabelOutOfRange {
                index: 1,
                label: 3,
                classes: 3,
                ..
            })
        ),
        "{r:?}"
    );
}

// ---------------------------------------------------------------- optimizers

/// Tensors across the 8192-element chunk boundary (and empty ones), stepped
/// one step at a time and compared with the exact step from the same state.
#[test]
fn optimizers_over_chunked_tensors() {
    let dev = device();
    let sizes = [0usize, 1, 300, 8191, 8192, 8193, 16385];
    let mut r = KRng::new(9);
    let cfgs = [
        AdamConfig::default(),
        AdamConfig::adamw(),
        AdamConfig::keras(),
        AdamConfig {
            weight_decay: 0.1,
            decay: WeightDecay::L2,
            epsilon: AdamEpsilon::PyTorch,
            ..AdamConfig::default()
        },
    ];
    for cfg in cfgs {
        let mut worst = [0.0f64; 3];
        let host: Vec<[Vec<f32>; 4]> = sizes
            .iter()
            .map(|&n| {
                [
                    r.vec(n, -1.0, 1.0),
                    r.vec(n, -0.1, 0.1),
                    r.vec(n, -0.01, 0.01),
                    r.vec(n, 0.0, 1e-3),
                ]
            })
            .collect();
        let mut bufs: Vec<[DeviceBuffer<f32>; 4]> = host
            .iter()
            .map(|t| {
                [
                    dev.upload(&t[0]).unwrap(),
                    dev.upload(&t[1]).unwrap(),
                    dev.upload(&t[2]).unwrap(),
                    dev.upload(&t[3]).unwrap(),
                ]
            })
            .collect();
        for step in 1..=3u64 {
            let before: Vec<[Vec<f32>; 3]> = bufs
                .iter()
                .map(|b| {
                    [
                        dev.download(&b[0]).unwrap(),
                        dev.download(&b[2]).unwrap(),
                        dev.download(&b[3]).unwrap(),
                    ]
                })
                .collect();
            let mut params: Vec<cuda::AdamParam<'_>> = bufs
                .iter_mut()
                .map(|[w, g, m, v]| cuda::AdamParam { w, grad: &*g, m, v })
                .collect();
            cuda::adam_step_many(&dev, &cfg, step, &mut params).unwrap();
            for ((b, s), t) in bufs.iter().zip(&before).zip(&host) {
                let e: Vec<AdamElem> = (0..t[1].len())
                    .map(|i| adam_elem(&cfg, step, s[0][i], t[1][i], s[1][i], s[2][i]))
                    .collect();
                for (q, (what, got, want, bound)) in [
                    (
                        "w",
                        &b[0],
                        e.iter().map(|x| x.w).collect::<Vec<_>>(),
                        e.iter().map(|x| x.w_err).collect::<Vec<_>>(),
                    ),
                    (
                        "m",
                        &b[2],
                        e.iter().map(|x| x.m).collect(),
                        e.iter().map(|x| x.m_err).collect(),
                    ),
                    (
                        "v",
                        &b[3],
                        e.iter().map(|x| x.v).collect(),
                        e.iter().map(|x| x.v_err).collect(),
                    ),
                ]
                .into_iter()
                .enumerate()
                {
                    let name = format!("adam {what} step {step} {cfg:?}");
                    worst[q] = worst[q].max(ratio(check_bound(&name, &dev.download(got).unwrap(), &want, |i| {
                        bound[i]
                    })));
                }
            }
        }
        eprintln!(
            "adam {cfg:?}: largest error / bound: w {:.3}, m {:.3}, v {:.3}",
            worst[0], worst[1], worst[2]
        );
    }
    // SGD with momentum and weight decay over two chunks.
    let cfg = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.01,
    };
    let (w0, g, b0) = (r.vec(9000, -1.0, 1.0), r.vec(9000, -1.0, 1.0), r.vec(9000, -1.0, 1.0));
    let (mut dw, dg, mut db) = (
        dev.upload(&w0).unwrap(),
        dev.upload(&g).unwrap(),
        dev.upload(&b0).unwrap(),
    );
    cuda::sgd_step(&dev, &cfg, &mut dw, &dg, &mut db).unwrap();
    let e: Vec<(f64, f64, f64, f64)> = (0..w0.len()).map(|i| sgd_elem(&cfg, w0[i], g[i], b0[i])).collect();
    check_bound(
        "sgd w",
        &dev.download(&dw).unwrap(),
        &e.iter().map(|x| x.0).collect::<Vec<_>>(),
        |i| e[i].2,
    )
    .unwrap();
    check_bound(
        "sgd buf",
        &dev.download(&db).unwrap(),
        &e.iter().map(|x| x.1).collect::<Vec<_>>(),
        |i| e[i].3,
    )
    .unwrap();
    // Global norm (f64 sums, one rounding to f32), then clipping that scales (by
    // max/norm in f64, one rounding per element) and clipping that does not.
    let gs: Vec<Vec<f32>> = sizes.iter().map(|&n| r.vec(n, -1.0, 1.0)).collect();
    let mut dgs: Vec<DeviceBuffer<f32>> = gs.iter().map(|x| dev.upload(x).unwrap()).collect();
    let exact = gs.iter().flatten().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    let norm = cuda::global_norm(&dev, &dgs.iter().collect::<Vec<_>>()).unwrap();
    assert!((norm as f64 - exact).abs() <= 1.01 * EPS * exact, "{norm} vs {exact}");
    for max_norm in [1.5f32, 1e9] {
        let before: Vec<Vec<f32>> = dgs.iter().map(|d| dev.download(d).unwrap()).collect();
        let norm_now = before
            .iter()
            .flatten()
            .map(|&v| v as f64 * v as f64)
            .sum::<f64>()
            .sqrt();
        let n2 = cuda::clip_global_norm(&dev, &mut dgs.iter_mut().collect::<Vec<_>>(), max_norm).unwrap();
        assert!((n2 as f64 - norm_now).abs() <= 1.01 * EPS * norm_now);
        let scale = if norm_now > max_norm as f64 {
            max_norm as f64 / norm_now
        } else {
            1.0
        };
        for (d, h) in dgs.iter().zip(&before) {
            let want: Vec<f64> = h.iter().map(|&v| v as f64 * scale).collect();
            check_bound("clipped", &dev.download(d).unwrap(), &want, |i| {
                1.01 * EPS * want[i].abs()
            })
            .unwrap();
        }
    }
    // A NaN gradient makes the norm NaN, and clipping spreads it (never hides it).
    let mut nan = dev.upload(&[1.0f32, f32::NAN, 2.0]).unwrap();
    assert!(cuda::clip_global_norm(&dev, &mut [&mut nan], 1.0).unwrap().is_nan());
    assert!(dev.download(&nan).unwrap().iter().all(|v| v.is_nan()));
}

// ---------------------------------------------------------------- coverage and resources

/// Each kernel entry of the embedded PTX is in `ALL_ENTRIES`, and a small run of
/// every operation launches all of them; on the executor, the temporaries
/// (packed copies, norm accumulators) are freed when the operations return.
#[test]
fn every_kernel_is_launched_and_temporaries_are_freed() {
    let mut declared: Vec<&str> = cuda::KERNELS
        .iter()
        .flat_map(|(_, src)| src.lines().filter_map(|l| l.strip_prefix(".visible .entry ")))
        .map(|l| l.split('(').next().unwrap())
        .collect();
    declared.sort_unstable();
    let mut listed = ALL_ENTRIES.to_vec();
    listed.sort_unstable();
    assert_eq!(declared, listed);

    let dev = device();
    let x = dev
        .upload(&(0..96).map(|i| i as f32 / 50.0 - 1.0).collect::<Vec<_>>())
        .unwrap();
    let x16 = dev.upload(&[bf16::ONE; 96]).unwrap();
    let xh = dev.upload(&[f16::ONE; 96]).unwrap();
    let labels = dev.upload(&[0u32, 1, 2, 0, 1, 2, 0, 1]).unwrap();
    let (mut y, mut g, mut m, mut v) = (
        dev.zeros::<f32>(96).unwrap(),
        dev.zeros::<f32>(96).unwrap(),
        dev.zeros::<f32>(96).unwrap(),
        dev.zeros::<f32>(96).unwrap(),
    );
    let mut c = dev.zeros::<f32>(144).unwrap();
    let mut w = dev.upload(&[0.5f32; 96]).unwrap();
    let bias = dev.zeros::<f32>(12).unwrap();
    let mut gb = dev.zeros::<f32>(12).unwrap();
    let images = dev.upload(&[7u8; 96]).unwrap();
    let mut rows = dev.zeros::<u32>(8).unwrap();
    let baseline = dev.executor_bytes_in_use();
    dev.record_launches(true);
    cuda::activation_forward(&dev, Activation::Tanh, &x, &mut y).unwrap();
    cuda::activation_backward(&dev, Activation::Tanh, &x, &x, &mut y).unwrap();
    cuda::bias_add(&dev, DeviceMatMut::new(&mut y, 8, 12).unwrap(), &bias).unwrap();
    cuda::bias_grad(&dev, DeviceMatRef::new(&x, 8, 12).unwrap(), &mut gb).unwrap();
    let xv = DeviceMatRef::new(&x, 8, 12).unwrap();
    cuda::gemm(&dev, 1.0, xv.t(), xv, 0.0, DeviceMatMut::new(&mut c, 12, 12).unwrap()).unwrap();
    cuda::gemm_tf32(&dev, 1.0, xv.t(), xv, 0.0, DeviceMatMut::new(&mut c, 12, 12).unwrap()).unwrap();
    let b16 = DeviceMatRef::new(&x16, 8, 12).unwrap();
    cuda::gemm(&dev, 1.0, b16.t(), b16, 0.0, DeviceMatMut::new(&mut c, 12, 12).unwrap()).unwrap();
    let h16 = DeviceMatRef::new(&xh, 8, 12).unwrap();
    cuda::gemm(&dev, 1.0, h16.t(), h16, 0.0, DeviceMatMut::new(&mut c, 12, 12).unwrap()).unwrap();
    cuda::softmax(&dev, xv, DeviceMatMut::new(&mut y, 8, 12).unwrap()).unwrap();
    cuda::softmax_xent(
        &dev,
        xv,
        DeviceTargets::Labels(&labels),
        DeviceMatMut::new(&mut y, 8, 12).unwrap(),
    )
    .unwrap();
    cuda::adam_step(&dev, &AdamConfig::default(), 1, &mut w, &x, &mut m, &mut v).unwrap();
    cuda::sgd_step(&dev, &SgdConfig::default(), &mut w, &x, &mut m).unwrap();
    cuda::clip_global_norm(&dev, &mut [&mut g], 0.5).unwrap();
    let dst = DeviceMatMut::new(&mut y, 8, 12).unwrap();
    cuda::gather_scaled(&dev, &images, 12, &[1, 0, 2, 3, 4, 5, 6, 7], &mut rows, 255.0, dst).unwrap();
    // Every row rises to its last column: no label 0, 1 or 2 is its argmax.
    assert_eq!(cuda::count_correct(&dev, xv, &labels).unwrap(), 0);
    let order = dev.upload(&[3u32, 1, 0, 2, 7, 6, 5, 4]).unwrap();
    let mut cursor = cuda::BatchCursor::new(&dev).unwrap();
    let mut batch_labels = dev.zeros::<u32>(8).unwrap();
    let dst = DeviceMatMut::new(&mut y, 8, 12).unwrap();
    cuda::gather_batch(
        &dev,
        &images,
        12,
        &order,
        &mut cursor,
        &labels,
        &mut batch_labels,
        255.0,
        dst,
    )
    .unwrap();
    let mut state = cuda::StepState::new(&dev).unwrap();
    cuda::adam_step_with_state(
        &dev,
        &AdamConfig::default(),
        &mut state,
        None,
        &mut w,
        &x,
        &mut m,
        &mut v,
    )
    .unwrap();
    let mut ran: Vec<&str> = dev.take_launches().iter().map(|r| r.kernel).collect();
    // The sm_90a kernels, on this device when it is an sm_90 GPU, else on the
    // executor's sm_90 model: 12x12x8 with A row-major and B column-major (rows of
    // 8 elements, 16 bytes, as the bulk tensor copies need).
    let hopper = Device::executor_sm90();
    let h = if is_sm90(&dev) { &*dev } else { &hopper };
    h.record_launches(true);
    let y16 = h.upload(&[bf16::ONE; 96]).unwrap();
    let yh = h.upload(&[f16::ONE; 96]).unwrap();
    let mut hc = h.zeros::<f32>(144).unwrap();
    let a16 = DeviceMatRef::new(&y16, 12, 8).unwrap();
    cuda::gemm(h, 1.0, a16, a16.t(), 0.0, DeviceMatMut::new(&mut hc, 12, 12).unwrap()).unwrap();
    assert_eq!(h.download(&hc).unwrap(), [8.0; 144]);
    let ah = DeviceMatRef::new(&yh, 12, 8).unwrap();
    cuda::gemm(h, 1.0, ah, ah.t(), 0.0, DeviceMatMut::new(&mut hc, 12, 12).unwrap()).unwrap();
    ran.extend(h.take_launches().iter().map(|r| r.kernel));
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(ran, listed, "kernels launched");
    drop((order, cursor, batch_labels, state));
    // The chunk tables stay cached on the device (by design); everything else is freed.
    let tables = 3 * 4 * 12;
    if let (Some(before), Some(after)) = (baseline, dev.executor_bytes_in_use()) {
        assert!(
            after <= before + tables,
            "{after} bytes in use, {before} before the operations"
        );
    }
}

// ---------------------------------------------------------------- device-resident batches and steps

/// `n` bytes from a xorshift stream.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// The batches of an epoch come from the order at the device's cursor, which
/// the gather moves on itself: consecutive batches (a ragged last one
/// included) are the host's gather of `order[at]` bit for bit with their
/// labels, without a host-to-device copy; a cursor moved by the host copies
/// once; positions past the order give NaN rows and out-of-range labels.
#[test]
fn gather_batch_walks_the_order_from_the_device_cursor() {
    let dev = device();
    let (count, features, batch) = (11usize, 37usize, 4usize);
    let img = bytes(count * features, 5);
    let labels: Vec<u32> = (0..count as u32).map(|i| i * 7 % 10).collect();
    let order: Vec<u32> = vec![4, 9, 0, 10, 2, 7, 1, 8, 3, 6, 5];
    let (images, labels_dev, order_dev) = (
        dev.upload(&img).unwrap(),
        dev.upload(&labels).unwrap(),
        dev.upload(&order).unwrap(),
    );
    let mut cursor = cuda::BatchCursor::new(&dev).unwrap();
    let mut x = dev.filled(batch * features, 0.5f32).unwrap();
    let mut lab = dev.filled(batch, 99u32).unwrap();
    let host = |rows: &[u32]| -> (Vec<f32>, Vec<u32>) {
        let x = rows
            .iter()
            .flat_map(|&r| img[r as usize * features..(r as usize + 1) * features].iter())
            .map(|&b| f32::from(b) / 255.0)
            .collect();
        (x, rows.iter().map(|&r| labels[r as usize]).collect())
    };
    let mut check = |cursor: &mut cuda::BatchCursor, at: std::ops::Range<usize>| {
        let n = at.len();
        let d = DeviceMatMut::new(&mut x, n, features).unwrap();
        cuda::gather_batch(
            &dev,
            &images,
            features,
            &order_dev,
            cursor,
            &labels_dev,
            &mut lab,
            255.0,
            d,
        )
        .unwrap();
        let (want_x, want_l) = host(&order[at.clone()]);
        let got_x = dev.download(&x).unwrap();
        let got_l = dev.download(&lab).unwrap();
        for (i, (g, w)) in got_x[..n * features].iter().zip(&want_x).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "batch {at:?}, element {i}");
        }
        assert_eq!(got_l[..n], want_l[..], "labels of batch {at:?}");
    };
    let copies = dev.host_to_device_copies();
    let mut start = 0;
    while start < count {
        let end = (start + batch).min(count);
        check(&mut cursor, start..end);
        start = end;
    }
    assert_eq!(dev.host_to_device_copies(), copies, "consecutive batches copy nothing");
    assert_eq!(cursor.read(&dev).unwrap(), count);
    assert_eq!(cursor.position(), Some(count));
    // The host moves the cursor: one copy, then the batch from there.
    assert!(cursor.set(&dev, 3).unwrap());
    assert!(!cursor.set(&dev, 3).unwrap());
    assert_eq!(dev.host_to_device_copies(), copies + 1);
    check(&mut cursor, 3..7);
    // Past the end of the order: NaN rows and the label u32::MAX.
    cursor.set(&dev, count - 2).unwrap();
    let d = DeviceMatMut::new(&mut x, batch, features).unwrap();
    cuda::gather_batch(
        &dev,
        &images,
        features,
        &order_dev,
        &mut cursor,
        &labels_dev,
        &mut lab,
        255.0,
        d,
    )
    .unwrap();
    let got_x = dev.download(&x).unwrap();
    let got_l = dev.download(&lab).unwrap();
    assert_eq!(got_l[..2], [labels[6], labels[5]]);
    assert_eq!(got_l[2..], [u32::MAX, u32::MAX]);
    assert!(got_x[2 * features..].iter().all(|v| v.is_nan()));
    // Shape errors are errors.
    let d = DeviceMatMut::new(&mut x, batch, features - 1).unwrap();
    assert!(cuda::gather_batch(
        &dev,
        &images,
        features,
        &order_dev,
        &mut cursor,
        &labels_dev,
        &mut lab,
        255.0,
        d
    )
    .is_err());
    let mut short = dev.zeros::<u32>(batch - 1).unwrap();
    let d = DeviceMatMut::new(&mut x, batch, features).unwrap();
    assert!(cuda::gather_batch(
        &dev,
        &images,
        features,
        &order_dev,
        &mut cursor,
        &labels_dev,
        &mut short,
        255.0,
        d
    )
    .is_err());
}

/// Adam with its step count on the device gives bitwise the parameters and
/// moments of the host-counted step (the device's bias corrections are the
/// host's), with the same launch arguments at every step; a non-finite loss or
/// a bad label in the guard skips the update and keeps the step count; SGD
/// likewise.
#[test]
fn optimizer_steps_with_device_state_match_the_host_steps() {
    let dev = device();
    let n = 300;
    let w0: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
    let g: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0).collect();
    let grad = dev.upload(&g).unwrap();
    let keras = AdamConfig::keras();
    let torch = AdamConfig {
        weight_decay: 0.01,
        decay: WeightDecay::Decoupled,
        ..AdamConfig::default()
    };
    for cfg in [keras, torch] {
        let (mut wa, mut ma, mut va) = (dev.upload(&w0).unwrap(), dev.zeros(n).unwrap(), dev.zeros(n).unwrap());
        let (mut wb, mut mb, mut vb) = (dev.upload(&w0).unwrap(), dev.zeros(n).unwrap(), dev.zeros(n).unwrap());
        let mut state = cuda::StepState::new(&dev).unwrap();
        let mut args = Vec::new();
        for step in 1..=6u64 {
            cuda::adam_step(&dev, &cfg, step, &mut wa, &grad, &mut ma, &mut va).unwrap();
            dev.record_launches(true);
            cuda::adam_step_with_state(&dev, &cfg, &mut state, None, &mut wb, &grad, &mut mb, &mut vb).unwrap();
            args.push(dev.take_launches());
            dev.record_launches(false);
            for (a, b) in [(&wa, &wb), (&ma, &mb), (&va, &vb)] {
                let (a, b) = (dev.download(a).unwrap(), dev.download(b).unwrap());
                let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{cfg:?} step {step}");
            }
            assert_eq!(state.read(&dev).unwrap(), (step, false));
        }
        assert!(
            args.iter().all(|a| *a == args[0]),
            "the launches change from step to step"
        );
        assert_eq!(
            args[0].iter().map(|r| r.kernel).collect::<Vec<_>>(),
            ["nk_opt_prep", "nk_adam"]
        );
        // A resumed count: step 1000 from the host, then one on the device.
        state.set_steps(&dev, 999).unwrap();
        cuda::adam_step(&dev, &cfg, 1000, &mut wa, &grad, &mut ma, &mut va).unwrap();
        cuda::adam_step_with_state(&dev, &cfg, &mut state, None, &mut wb, &grad, &mut mb, &mut vb).unwrap();
        assert_eq!(dev.download(&wa).unwrap(), dev.download(&wb).unwrap());
        assert_eq!(state.read(&dev).unwrap(), (1000, false));
        // A guard whose loss is NaN (a NaN logit) skips the update.
        let logits = dev.upload(&[0.0f32, f32::NAN, 1.0, 2.0]).unwrap();
        let labels = dev.upload(&[0u32, 1]).unwrap();
        let mut acc = cuda::XentAccumulator::new(&dev).unwrap();
        let lv = DeviceMatRef::new(&logits, 2, 2).unwrap();
        cuda::softmax_xent_labels_accumulate(&dev, lv, &labels, None, &mut acc).unwrap();
        let before = dev.download(&wb).unwrap();
        cuda::adam_step_with_state(&dev, &cfg, &mut state, Some(&acc), &mut wb, &grad, &mut mb, &mut vb).unwrap();
        assert_eq!(state.read(&dev).unwrap(), (1000, true));
        assert_eq!(dev.download(&wb).unwrap(), before);
        // A finite loss with a bad label skips too; a good batch steps.
        let good = dev.upload(&[0.0f32, 1.0, 1.0, 2.0]).unwrap();
        let gv = DeviceMatRef::new(&good, 2, 2).unwrap();
        let bad = dev.upload(&[0u32, 2]).unwrap();
        acc.reset(&dev).unwrap();
        cuda::softmax_xent_labels_accumulate(&dev, gv, &bad, None, &mut acc).unwrap();
        cuda::adam_step_with_state(&dev, &cfg, &mut state, Some(&acc), &mut wb, &grad, &mut mb, &mut vb).unwrap();
        assert_eq!(state.read(&dev).unwrap(), (1000, true));
        acc.reset(&dev).unwrap();
        cuda::softmax_xent_labels_accumulate(&dev, gv, &labels, None, &mut acc).unwrap();
        cuda::adam_step_with_state(&dev, &cfg, &mut state, Some(&acc), &mut wb, &grad, &mut mb, &mut vb).unwrap();
        assert_eq!(state.read(&dev).unwrap(), (1001, false));
        assert_ne!(dev.download(&wb).unwrap(), before);
        // SGD: skipped on the NaN guard, else the host-step's result bitwise.
        let sgd = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
        };
        let (mut sa, mut ba) = (dev.upload(&w0).unwrap(), dev.zeros(n).unwrap());
        let (mut sb, mut bb) = (dev.upload(&w0).unwrap(), dev.zeros(n).unwrap());
        cuda::sgd_step(&dev, &sgd, &mut sa, &grad, &mut ba).unwrap();
        cuda::sgd_step_with_state(&dev, &sgd, &mut state, Some(&acc), &mut sb, &grad, &mut bb).unwrap();
        assert_eq!(dev.download(&sa).unwrap(), dev.download(&sb).unwrap());
        acc.reset(&dev).unwrap();
        cuda::softmax_xent_labels_accumulate(&dev, lv, &labels, None, &mut acc).unwrap();
        cuda::sgd_step_with_state(&dev, &sgd, &mut state, Some(&acc), &mut sb, &grad, &mut bb).unwrap();
        assert_eq!(dev.download(&sa).unwrap(), dev.download(&sb).unwrap());
        assert_eq!(state.read(&dev).unwrap(), (1001, true));
    }
}

// ---------------------------------------------------------------- sm_90 dispatch

fn is_sm90(dev: &Device) -> bool {
    dev.compute_capability().unwrap() == (9, 0)
}

/// The sm_90a kernel of a 16-bit input kind.
fn sm90_kernel_of(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Bf16 => Some(cuda::SM90_KERNELS[0]),
        Kind::F16 => Some(cuda::SM90_KERNELS[1]),
        Kind::F32 | Kind::Tf32 => None,
    }
}

/// A case in the layout the sm_90a kernel reads in place: A row-major and B
/// column-major (Bᵀ row-major), both with rows padded to a multiple of 8 elements
/// (plus `pad8` more groups of 8), bases 16-byte aligned; C (and Y) as given.
fn tma_case(m: usize, n: usize, k: usize, pad8: usize, c: Lay, y: Option<(Lay, Activation)>) -> GemmSpec {
    let ld = k.next_multiple_of(8) + 8 * pad8;
    GemmSpec {
        m,
        n,
        k,
        a: Lay::new(m, k, false, ld - k, 8 * pad8),
        b: Lay::new(k, n, true, ld - k, 0),
        c,
        y,
        bias: y.is_some(),
        alpha: 1.0,
        beta: 0.0,
        rough: false,
    }
}

/// Checks one launch record of the sm_90a kernel: the launch contract of
/// kernels/gemm_sm90.ptx (384 threads, 197632 bytes of dynamic shared memory,
/// the two tensor maps first, then C, M, N, K).
fn check_sm90_launch(r: &cuda::LaunchRecord, m: usize, n: usize, k: usize, blocks: u32) {
    assert_eq!(r.block, (384, 1, 1));
    assert_eq!(r.shared_bytes, 197_632);
    assert_eq!(r.grid, (blocks, 1, 1));
    assert!(matches!(r.args[0], KernelArg::TensorMap(_)) && matches!(r.args[1], KernelArg::TensorMap(_)));
    assert_eq!(
        r.args[3..6],
        [
            KernelArg::U32(m as u32),
            KernelArg::U32(n as u32),
            KernelArg::U32(k as u32)
        ]
    );
}

/// On an sm_90 device the bf16 / f16 GEMM runs the sm_90a kernel (wgmma fed by
/// bulk tensor copies through the host's tensor maps); on sm_80 the mma.sync
/// kernel, on the same inputs. Both against the reference, at shapes with ragged
/// edge tiles in M, N and K, K long enough for the 4-stage ring to wrap, persistent
/// blocks taking several tiles, alpha/beta, C and Y in either order, both epilogues.
#[test]
fn sm90_gemm_dispatch_against_the_reference() {
    let (sm90, sm80) = (Device::executor_sm90(), Device::executor());
    let row = |r, c| Lay::new(r, c, false, 0, 0);
    let col = |r, c| Lay::new(r, c, true, 1, 0);
    let cases = [
        // ragged everywhere: 2x2 tiles, K = 65 (two k tiles, the second one element)
        (
            GemmSpec {
                alpha: 1.5,
                beta: -0.75,
                ..tma_case(129, 257, 65, 0, row(129, 257), None)
            },
            132,
        ),
        // K = 300: 5 k tiles through the 4 stages; 2 blocks for 2 tiles; the fused
        // epilogue (bias + GELU) into a column-major Y, C column-major
        (
            GemmSpec {
                beta: 0.5,
                ..tma_case(
                    130,
                    200,
                    300,
                    1,
                    col(130, 200),
                    Some((col(130, 200), Activation::GeluTanh)),
                )
            },
            132,
        ),
        // one block taking all three tiles in turn (the grid limited to 1), ReLU
        (
            tma_case(300, 40, 24, 0, row(300, 40), Some((row(300, 40), Activation::Relu))),
            1,
        ),
        // a single element
        (tma_case(1, 1, 1, 0, row(1, 1), None), 132),
    ];
    for (i, (s, sms)) in cases.iter().enumerate() {
        let kind = if i % 2 == 0 { Kind::Bf16 } else { Kind::F16 };
        let tiles = (s.m.div_ceil(128) * s.n.div_ceil(256)) as u32;
        sm90.limit_grid_for_tests(*sms);
        sm90.record_launches(true);
        let l = gemm_check(&sm90, kind, s, 500 + i as u64).unwrap();
        assert_eq!(l.len(), 1, "case {i}: {l:?}");
        assert_eq!(l[0].kernel, sm90_kernel_of(kind).unwrap(), "case {i}");
        check_sm90_launch(&l[0], s.m, s.n, s.k, tiles.min(*sms as u32));
        sm80.record_launches(true);
        let l = gemm_check(&sm80, kind, s, 500 + i as u64).unwrap();
        let names: Vec<&str> = l.iter().map(|r| r.kernel).collect();
        assert_eq!(names, [kernel_of(kind)], "case {i}");
    }
}

/// Layouts the bulk tensor copies cannot read in place (K not contiguous in A or
/// in Bᵀ, a base not 16-byte aligned, rows not a multiple of 8 elements apart),
/// and problems with nothing to multiply (K = 0, alpha = 0), fall back on sm_90
/// to the mma.sync kernel (which packs what it cannot read), still against the
/// reference.
#[test]
fn sm90_gemm_falls_back_where_the_copies_cannot_read() {
    let sm90 = Device::executor_sm90();
    let (m, n, k) = (70usize, 90usize, 40usize);
    let base = tma_case(m, n, k, 0, Lay::new(m, n, false, 0, 0), None);
    let cases = [
        // A column-major
        (
            GemmSpec {
                a: Lay::new(m, k, true, 0, 0),
                ..base
            },
            true,
        ),
        // A with K every other element (rows 96 elements apart, aligned: only the
        // K stride keeps the copies from reading it)
        (
            GemmSpec {
                a: Lay {
                    offset: 0,
                    rs: 96,
                    cs: 2,
                },
                ..base
            },
            true,
        ),
        // B row-major (K not contiguous in Bᵀ)
        (
            GemmSpec {
                b: Lay::new(k, n, false, 0, 0),
                ..base
            },
            true,
        ),
        // A starting 2 bytes into its buffer
        (
            GemmSpec {
                a: Lay::new(m, k, false, 0, 1),
                ..base
            },
            true,
        ),
        // Bᵀ rows 44 elements (88 bytes) apart
        (
            GemmSpec {
                b: Lay::new(k, n, true, 4, 0),
                ..base
            },
            true,
        ),
        // K = 0 and alpha = 0 read neither operand: the epilogue alone
        (
            GemmSpec {
                k: 0,
                a: Lay::new(m, 0, false, 8, 0),
                b: Lay::new(0, n, true, 8, 0),
                beta: 0.5,
                bias: true,
                y: Some((Lay::new(m, n, false, 0, 0), Activation::Sigmoid)),
                ..base
            },
            false,
        ),
        (
            GemmSpec {
                alpha: 0.0,
                beta: 2.0,
                ..base
            },
            false,
        ),
    ];
    for (i, (s, packs)) in cases.iter().enumerate() {
        for kind in [Kind::Bf16, Kind::F16] {
            sm90.record_launches(true);
            let l = gemm_check(&sm90, kind, s, 600 + i as u64).unwrap();
            let names: Vec<&str> = l.iter().map(|r| r.kernel).collect();
            assert_eq!(names.last(), Some(&kernel_of(kind)), "case {i}: {names:?}");
            assert_eq!(names.contains(&"nk_pack16"), *packs, "case {i}: {names:?}");
        }
    }
    // The same problem in the readable layout does take the sm_90a kernel.
    sm90.record_launches(true);
    let l = gemm_check(&sm90, Kind::Bf16, &base, 600).unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].kernel, cuda::SM90_KERNELS[0]);
    // ... unless switched off (the benchmarks time the mma.sync kernel this way).
    sm90.allow_sm90_kernels(false);
    let l = gemm_check(&sm90, Kind::Bf16, &base, 600).unwrap();
    assert_eq!(l.iter().map(|r| r.kernel).collect::<Vec<_>>(), ["nk_gemm_bf16"]);
}

/// Each operand layout is encoded into a tensor map once per device: a second
/// GEMM on the same buffers reuses both maps, another operand adds one.
#[test]
fn sm90_tensor_maps_are_built_once_per_layout() {
    let dev = Device::executor_sm90();
    let (m, n, k) = (20usize, 30usize, 16usize);
    let a = dev.upload(&vec![bf16::ONE; m * k]).unwrap();
    let bt = dev.upload(&vec![bf16::ONE; n * k]).unwrap();
    let bt2 = dev.upload(&vec![bf16::ONE; n * k]).unwrap();
    let mut c = dev.zeros::<f32>(m * n).unwrap();
    dev.record_launches(true);
    let run = |b: &DeviceBuffer<bf16>, c: &mut DeviceBuffer<f32>| {
        let av = DeviceMatRef::new(&a, m, k).unwrap();
        let bv = DeviceMatRef::new(b, n, k).unwrap().t();
        cuda::gemm(&dev, 1.0, av, bv, 0.0, DeviceMatMut::new(c, m, n).unwrap()).unwrap();
    };
    run(&bt, &mut c);
    assert_eq!(dev.tensor_maps_encoded(), 2);
    run(&bt, &mut c);
    assert_eq!(dev.tensor_maps_encoded(), 2);
    run(&bt2, &mut c);
    assert_eq!(dev.tensor_maps_encoded(), 3);
    let l = dev.take_launches();
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|r| r.kernel == cuda::SM90_KERNELS[0]));
    // The same maps were passed both times; the third launch has another B map.
    assert_eq!(l[0].args[..2], l[1].args[..2]);
    assert_eq!(l[0].args[0], l[2].args[0]);
    assert_ne!(l[0].args[1], l[2].args[1]);
    assert_eq!(dev.download(&c).unwrap(), vec![16.0; m * n]);
}
