//! The CUDA operations against the reference, through the public API, on
//! canonical layouts (row-major, or stored transposed), with the validation
//! errors the CPU side gives. `tests/ptx_kernels.rs` takes every kernel
//! through the non-canonical layouts and paths.
//!
//! They run on a CUDA GPU when one is usable and on the PTX executor otherwise
//! (see `tests/common/device.rs`): `cargo test --release --features cuda` runs
//! every test here on any machine, and `REQUIRE_GPU=1` makes a missing GPU a
//! failure, so they never pass on the executor where a GPU was meant. Shapes
//! are smaller on the executor (an interpreter) and include larger ones on a
//! GPU. Outputs are poisoned with NaN before each kernel runs; results are
//! held to the bounds derived in `tests/common/tol.rs`.
#![cfg(feature = "cuda")]

mod common;

use common::*;
use nnkern::cuda::{self, Device, DeviceBuffer, DeviceMatMut, DeviceMatRef, DeviceTargets};
use nnkern::{bf16, f16, reference, Activation, AdamConfig, Error, MatMut, MatRef, SgdConfig, Targets};
use proptest::prelude::{proptest, ProptestConfig, TestCaseError};

/// The fixed GEMM cases, plus on a GPU larger ones: many tiles, many K steps,
/// ragged edges everywhere (too slow for the interpreter).
fn sized_gemm_cases() -> Vec<GemmCase> {
    let mut v = gemm_cases();
    if !on_executor() {
        for (m, n, k, ta, tb) in [(1024, 768, 515, false, true), (257, 2048, 1030, true, false)] {
            v.push(GemmCase {
                m,
                n,
                k,
                ta,
                tb,
                alpha: 0.5,
                beta: -1.0,
            });
        }
    }
    v
}

/// The bias and softmax shapes; the executor leaves out the largest.
fn sized_row_col_cases() -> Vec<(usize, usize)> {
    row_col_cases()
        .into_iter()
        .filter(|&(r, c)| !on_executor() || r * c <= 12_000)
        .collect()
}

fn nan_buf(dev: &Device, n: usize) -> DeviceBuffer<f32> {
    dev.filled(n, f32::NAN).unwrap()
}

/// A fixed case in its canonical layout: A (or Aᵀ when `ta`) and B (or Bᵀ)
/// stored densely, C row-major.
fn canonical(case: &GemmCase, y: Option<Activation>, bias: bool) -> GemmSpec {
    let (m, n, k) = (case.m, case.n, case.k);
    GemmSpec {
        m,
        n,
        k,
        a: Lay::new(m, k, case.ta, 0, 0),
        b: Lay::new(k, n, case.tb, 0, 0),
        c: Lay::new(m, n, false, 0, 0),
        y: y.map(|act| (Lay::new(m, n, false, 0, 0), act)),
        bias,
        alpha: case.alpha,
        beta: case.beta,
        rough: false,
    }
}

#[test]
fn activations_forward_and_backward() {
    let dev = &device();
    for (s, &n) in [1usize, 255, 256, 257, 10_000].iter().enumerate() {
        let x = act_inputs(n, 11 + s as u64);
        let dy: Vec<f32> = KRng::new(5 + s as u64).vec(n, -3.0, 3.0);
        let (dx_, ddy) = (dev.upload(&x).unwrap(), dev.upload(&dy).unwrap());
        for act in Activation::ALL {
            let want: Vec<f64> = x.iter().map(|&v| act_exact(act, v)).collect();
            let bound = |i: usize| act_forward_bound(act, x[i]);
            let mut y = nan_buf(dev, n);
            cuda::activation_forward(dev, act, &dx_, &mut y).unwrap();
            check_bound(
                &format!("{act} forward n={n}"),
                &dev.download(&y).unwrap(),
                &want,
                bound,
            )
            .unwrap();
            let mut inplace = dev.upload(&x).unwrap();
            cuda::activation_forward_inplace(dev, act, &mut inplace).unwrap();
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
            let mut dx = nan_buf(dev, n);
            cuda::activation_backward(dev, act, &dx_, &ddy, &mut dx).unwrap();
            check_bound(
                &format!("{act} backward n={n}"),
                &dev.download(&dx).unwrap(),
                &want,
                bound,
            )
            .unwrap();
            let mut g = dev.upload(&dy).unwrap();
            cuda::activation_backward_inplace(dev, act, &dx_, &mut g).unwrap();
            check_bound(
                &format!("{act} backward in place"),
                &dev.download(&g).unwrap(),
                &want,
                bound,
            )
            .unwrap();
        }
    }
    // Same validation as the CPU side.
    let x = dev.upload(&[1.0f32; 3]).unwrap();
    let mut y = dev.zeros::<f32>(2).unwrap();
    assert!(matches!(
        cuda::activation_forward(dev, Activation::Relu, &x, &mut y),
        Err(Error::ShapeMismatch { arg: "y", .. })
    ));
}

#[test]
fn bias_add_activation_and_bias_grad() {
    let dev = &device();
    for (s, (rows, cols)) in sized_row_col_cases().into_iter().enumerate() {
        let mut r = KRng::new(100 + s as u64);
        let x = r.vec(rows * cols, -4.0, 4.0);
        let bias = r.vec(cols, -1.0, 1.0);
        let db = dev.upload(&bias).unwrap();
        for act in Activation::ALL {
            // x stored column-major to exercise the strides.
            let mut xd = dev.upload(&x).unwrap();
            let mut yd = nan_buf(dev, rows * cols);
            cuda::bias_add_activation(
                dev,
                act,
                DeviceMatMut::col_major(&mut xd, rows, cols).unwrap(),
                &db,
                DeviceMatMut::new(&mut yd, rows, cols).unwrap(),
            )
            .unwrap();
            let (mut xw, mut yw) = (x.clone(), vec![0.0f32; rows * cols]);
            reference::bias_add_activation(
                act,
                MatMut::col_major(&mut xw, rows, cols).unwrap(),
                &bias,
                MatMut::new(&mut yw, rows, cols).unwrap(),
            )
            .unwrap();
            // x + bias rounds once on both sides: equal.
            assert_eq!(dev.download(&xd).unwrap(), xw, "bias_add x");
            // y = f(x + bias), x + bias at column-major position (i, j).
            let xa = |i: usize| xw[(i % cols) * rows + i / cols];
            let want: Vec<f64> = (0..rows * cols).map(|i| act_exact(act, xa(i))).collect();
            check_bound(
                &format!("bias_add_activation {act} y"),
                &dev.download(&yd).unwrap(),
                &want,
                |i| act_forward_bound(act, xa(i)),
            )
            .unwrap();
        }
        let mut xd = dev.upload(&x).unwrap();
        cuda::bias_add(dev, DeviceMatMut::new(&mut xd, rows, cols).unwrap(), &db).unwrap();
        let mut xw = x.clone();
        reference::bias_add(MatMut::new(&mut xw, rows, cols).unwrap(), &bias).unwrap();
        assert_eq!(dev.download(&xd).unwrap(), xw, "bias_add");

        // Column sums: ceil(r/8) − 1 + 7 roundings of partial sums ≤ Σ|dy|, and the
        // reference's rounding (see tests/ptx_kernels.rs).
        let dyd = dev.upload(&x).unwrap();
        for transposed in [false, true] {
            let (r_, c_) = if transposed { (cols, rows) } else { (rows, cols) };
            let view = DeviceMatRef::new(&dyd, rows, cols).unwrap();
            let view = if transposed { view.t() } else { view };
            let hview = MatRef::new(&x, rows, cols).unwrap();
            let hview = if transposed { hview.t() } else { hview };
            let mut g = nan_buf(dev, c_);
            cuda::bias_grad(dev, view, &mut g).unwrap();
            let mut want = vec![0.0f32; c_];
            reference::bias_grad(hview, &mut want).unwrap();
            let abs: Vec<f64> = (0..c_)
                .map(|j| (0..r_).map(|i| hview[(i, j)].abs() as f64).sum())
                .collect();
            let steps = r_.div_ceil(8) as f64 + 6.0;
            check_bound(
                "bias_grad",
                &dev.download(&g).unwrap(),
                &want.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                |j| steps * EPS * abs[j] + EPS * want[j].abs() as f64,
            )
            .unwrap();
        }
    }
    let mut x = dev.zeros::<f32>(6).unwrap();
    let b = dev.zeros::<f32>(2).unwrap();
    assert!(matches!(
        cuda::bias_add(dev, DeviceMatMut::new(&mut x, 2, 3).unwrap(), &b),
        Err(Error::ShapeMismatch { arg: "bias", .. })
    ));
}

#[test]
fn sgemm_fixed_cases() {
    let dev = &device();
    for (i, case) in sized_gemm_cases().iter().enumerate() {
        gemm_check(dev, Kind::F32, &canonical(case, None, false), i as u64).unwrap();
    }
}

#[test]
fn tensor_core_gemm_fixed_cases() {
    let dev = &device();
    for (i, case) in sized_gemm_cases().iter().enumerate() {
        gemm_check(dev, Kind::Bf16, &canonical(case, None, false), i as u64).unwrap();
        gemm_check(dev, Kind::F16, &canonical(case, None, false), i as u64).unwrap();
    }
}

#[test]
fn tf32_gemm_fixed_cases() {
    let dev = &device();
    for (i, case) in sized_gemm_cases().iter().enumerate() {
        // Inputs not representable in tf32, so the rounding (≤ 2⁻¹¹ per input) shows.
        let spec = GemmSpec {
            rough: true,
            ..canonical(case, None, false)
        };
        gemm_check(dev, Kind::Tf32, &spec, 70 + i as u64).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24, 8)))]

    /// Random shapes up to a few tiles each way (fewer and smaller on the executor).
    #[test]
    fn gemm_random_shapes(m in 1..=sized(300, 160), n in 1..=sized(300, 160), k in 0..=sized(200, 48),
                          ta: bool, tb: bool, beta_zero: bool, seed: u64) {
        let dev = &device();
        let case = GemmCase { m, n, k, ta, tb, alpha: 0.75, beta: if beta_zero { 0.0 } else { 1.5 } };
        for kind in [Kind::F32, Kind::Bf16, Kind::F16] {
            gemm_check(dev, kind, &canonical(&case, None, false), seed).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn softmax_xent_random_shapes(rows in 1..=sized(100, 40), cols in 1..=sized(300, 100), soft: bool, seed: u64) {
        let dev = &device();
        let l = Lay::new(rows, cols, false, 0, 0);
        xent_check(dev, rows, cols, soft, l, l, l, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn fused_gemm_bias_activation() {
    let dev = &device();
    for (i, case) in sized_gemm_cases()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.k > 0 && c.alpha != 0.0)
    {
        for act in [Activation::Relu, Activation::GeluTanh] {
            for kind in [Kind::F32, Kind::Bf16] {
                gemm_check(dev, kind, &canonical(case, Some(act), true), 50 + i as u64).unwrap();
            }
        }
    }
}

#[test]
fn softmax_xent_fixed_cases_and_errors() {
    let dev = &device();
    for (i, (rows, cols)) in sized_row_col_cases().into_iter().enumerate() {
        for soft in [false, true] {
            let l = Lay::new(rows, cols, false, 0, 0);
            // softmax's x read through a transposed (column-major) view
            let xt = Lay::new(rows, cols, true, 0, 0);
            xent_check(dev, rows, cols, soft, xt, l, l, i as u64).unwrap();
        }
    }
    let x = dev.upload(&[0.0f32; 6]).unwrap();
    let bad = dev.upload(&[0u32, 3]).unwrap();
    let mut d = dev.zeros::<f32>(6).unwrap();
    let r = cuda::softmax_xent(
        dev,
        DeviceMatRef::new(&x, 2, 3).unwrap(),
        DeviceTargets::Labels(&bad),
        DeviceMatMut::new(&mut d, 2, 3).unwrap(),
    );
    assert!(
        matches!(
            r,
            Err(Error::LabelOutOfRange {
                index: 1,
                label: 3,
                classes: 3,
                ..
            })
        ),
        "{r:?}"
    );
    // Large logits stay finite.
    let big = dev.upload(&[1e4f32, -1e4, 0.0]).unwrap();
    let l = dev.upload(&[1u32]).unwrap();
    let mut d = nan_buf(dev, 3);
    let loss = cuda::softmax_xent(
        dev,
        DeviceMatRef::new(&big, 1, 3).unwrap(),
        DeviceTargets::Labels(&l),
        DeviceMatMut::new(&mut d, 1, 3).unwrap(),
    )
    .unwrap();
    assert_eq!(loss, 2e4);
    assert_eq!(dev.download(&d).unwrap(), [1.0, -1.0, 0.0]);
}

#[test]
fn adam_sgd_and_clipping_over_many_tensors() {
    let dev = &device();
    let sizes = [1usize, 100, 8192, 8193, sized(200_000, 20_000)];
    let mut r = KRng::new(7);
    let cfgs = [
        AdamConfig::default(),
        AdamConfig::adamw(),
        AdamConfig::keras(),
        AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::default()
        },
    ];
    for cfg in cfgs {
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
        let mut dbufs: Vec<[DeviceBuffer<f32>; 4]> = host
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
            let before: Vec<[Vec<f32>; 3]> = dbufs
                .iter()
                .map(|d| {
                    [
                        dev.download(&d[0]).unwrap(),
                        dev.download(&d[2]).unwrap(),
                        dev.download(&d[3]).unwrap(),
                    ]
                })
                .collect();
            let mut params: Vec<cuda::AdamParam<'_>> = dbufs
                .iter_mut()
                .map(|[w, g, m, v]| cuda::AdamParam { w, grad: &*g, m, v })
                .collect();
            cuda::adam_step_many(dev, &cfg, step, &mut params).unwrap();
            // Each step against the exact step from the state before it (tol.rs: a few
            // roundings of w, m, v and of the update).
            for ((d, s), t) in dbufs.iter().zip(&before).zip(&host) {
                let e: Vec<AdamElem> = (0..t[1].len())
                    .map(|i| adam_elem(&cfg, step, s[0][i], t[1][i], s[1][i], s[2][i]))
                    .collect();
                let w: Vec<f64> = e.iter().map(|x| x.w).collect();
                let m: Vec<f64> = e.iter().map(|x| x.m).collect();
                let v: Vec<f64> = e.iter().map(|x| x.v).collect();
                check_bound("adam w", &dev.download(&d[0]).unwrap(), &w, |i| e[i].w_err).unwrap();
                check_bound("adam m", &dev.download(&d[2]).unwrap(), &m, |i| e[i].m_err).unwrap();
                check_bound("adam v", &dev.download(&d[3]).unwrap(), &v, |i| e[i].v_err).unwrap();
            }
        }
    }
    // SGD
    let cfg = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.01,
    };
    let (w0, g, b0) = (r.vec(5000, -1.0, 1.0), r.vec(5000, -1.0, 1.0), r.vec(5000, -1.0, 1.0));
    let (mut dw, dg, mut dbuf) = (
        dev.upload(&w0).unwrap(),
        dev.upload(&g).unwrap(),
        dev.upload(&b0).unwrap(),
    );
    cuda::sgd_step(dev, &cfg, &mut dw, &dg, &mut dbuf).unwrap();
    let e: Vec<(f64, f64, f64, f64)> = (0..w0.len()).map(|i| sgd_elem(&cfg, w0[i], g[i], b0[i])).collect();
    let (ew, eb): (Vec<f64>, Vec<f64>) = e.iter().map(|x| (x.0, x.1)).unzip();
    check_bound("sgd w", &dev.download(&dw).unwrap(), &ew, |i| e[i].2).unwrap();
    check_bound("sgd buf", &dev.download(&dbuf).unwrap(), &eb, |i| e[i].3).unwrap();
    // Global norm (f64 sums, rounded once to f32) and clipping (x·max/norm in f64,
    // rounded once).
    let gs: Vec<Vec<f32>> = sizes.iter().map(|&n| r.vec(n, -1.0, 1.0)).collect();
    let mut dgs: Vec<DeviceBuffer<f32>> = gs.iter().map(|g| dev.upload(g).unwrap()).collect();
    let exact = gs.iter().flatten().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    let norm = cuda::global_norm(dev, &dgs.iter().collect::<Vec<_>>()).unwrap();
    assert!((norm as f64 - exact).abs() <= 1.01 * EPS * exact, "{norm} vs {exact}");
    let mut drefs: Vec<&mut DeviceBuffer<f32>> = dgs.iter_mut().collect();
    let n2 = cuda::clip_global_norm(dev, &mut drefs, 1.5).unwrap();
    assert!((n2 as f64 - exact).abs() <= 1.01 * EPS * exact);
    for (d, h) in dgs.iter().zip(&gs) {
        let want: Vec<f64> = h.iter().map(|&v| v as f64 * 1.5 / exact).collect();
        check_bound("clipped", &dev.download(d).unwrap(), &want, |i| {
            1.01 * EPS * want[i].abs()
        })
        .unwrap();
    }
    assert!(cuda::clip_global_norm(dev, &mut [], 0.0).is_err());
    let bad = AdamConfig {
        beta2: 1.0,
        ..AdamConfig::default()
    };
    let (mut w, g, mut m, mut v) = (
        dev.zeros(2).unwrap(),
        dev.zeros(2).unwrap(),
        dev.zeros(2).unwrap(),
        dev.zeros(2).unwrap(),
    );
    assert!(matches!(
        cuda::adam_step(dev, &bad, 1, &mut w, &g, &mut m, &mut v),
        Err(Error::InvalidValue { arg: "beta2", .. })
    ));
}

#[test]
fn gemm_validation_matches_the_cpu() {
    let dev = &device();
    let a = dev.zeros::<f32>(6).unwrap();
    let mut c = dev.zeros::<f32>(4).unwrap();
    let r = cuda::gemm(
        dev,
        1.0,
        DeviceMatRef::new(&a, 2, 3).unwrap(),
        DeviceMatRef::new(&a, 2, 3).unwrap(),
        0.0,
        DeviceMatMut::new(&mut c, 2, 2).unwrap(),
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { arg: "b", .. })));
    let r = cuda::gemm(
        dev,
        1.0,
        DeviceMatRef::new(&a, 2, 3).unwrap(),
        DeviceMatRef::new(&a, 3, 2).unwrap(),
        0.0,
        DeviceMatMut::new(&mut c, 1, 4).unwrap(),
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { arg: "c", .. })));
    // Views past the end of their buffer, or aliasing outputs, are refused at construction.
    assert!(matches!(
        DeviceMatRef::from_strides(&a, 1, 2, 3, 3, 1),
        Err(Error::BufferTooShort { .. })
    ));
    assert!(matches!(
        DeviceMatMut::from_strides(&mut c, 0, 2, 2, 1, 1),
        Err(Error::Aliasing { .. })
    ));
}

/// Views that start inside a buffer (misaligned for 128-bit and cp.async loads)
/// and have padded rows: the host must fall back (scalar loads, packing).
#[test]
fn gemm_on_offset_and_padded_views() {
    let dev = &device();
    let (m, n, k, pad, off) = (67usize, 45usize, 29usize, 3usize, 1usize);
    for kind in [Kind::F32, Kind::Bf16] {
        let spec = GemmSpec {
            m,
            n,
            k,
            a: Lay::new(m, k, false, pad, off),
            b: Lay::new(k, n, false, pad, off),
            c: Lay::new(m, n, false, 0, 0),
            y: None,
            bias: false,
            alpha: 1.0,
            beta: 0.0,
            rough: false,
        };
        gemm_check(dev, kind, &spec, 99).unwrap();
    }
}

#[test]
fn softmax_xent_accumulates_on_the_device() {
    let dev = &device();
    let (rows, cols) = (37usize, 11usize);
    let mut acc = cuda::XentAccumulator::new(dev).unwrap();
    let (mut want, mut bound) = (0.0f64, 0.0f64);
    for s in 0..3u64 {
        let mut r = KRng::new(300 + s);
        let x = r.vec(rows * cols, -5.0, 5.0);
        let labels: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
        let l = reference::softmax_xent_loss(MatRef::new(&x, rows, cols).unwrap(), Targets::Labels(&labels)).unwrap();
        want += l as f64;
        // Per row: lse's error and one rounding (tol.rs); the mean's 1/rows and the
        // reference's rounding: 2 EPS.
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
        let mut d = nan_buf(dev, rows * cols);
        cuda::softmax_xent_accumulate(
            dev,
            DeviceMatRef::new(&dx, rows, cols).unwrap(),
            DeviceTargets::Labels(&dl),
            DeviceMatMut::new(&mut d, rows, cols).unwrap(),
            &mut acc,
        )
        .unwrap();
    }
    let got = acc.read(dev).unwrap();
    assert!((got - want).abs() <= bound, "{got} vs {want} (bound {bound:e})");
    acc.reset(dev).unwrap();
    assert_eq!(acc.read(dev).unwrap(), 0.0);
    // A bad label is reported by read(), with its row and value.
    let x = dev.upload(&[0.0f32; 6]).unwrap();
    let bad = dev.upload(&[7u32, 1]).unwrap();
    let mut d = dev.zeros::<f32>(6).unwrap();
    cuda::softmax_xent_accumulate(
        dev,
        DeviceMatRef::new(&x, 2, 3).unwrap(),
        DeviceTargets::Labels(&bad),
        DeviceMatMut::new(&mut d, 2, 3).unwrap(),
        &mut acc,
    )
    .unwrap();
    assert!(matches!(
        acc.read(dev),
        Err(Error::LabelOutOfRange {
            index: 0,
            label: 7,
            classes: 3,
            ..
        })
    ));
}

/// The bf16 type is the library's own (re-exported), so a buffer of it is a
/// device buffer of 16-bit values.
#[test]
fn bf16_buffers_round_trip() {
    let dev = &device();
    let v: Vec<bf16> = (0..300).map(|i| bf16::from_f32(i as f32 - 150.0)).collect();
    let b = dev.upload(&v).unwrap();
    assert_eq!(b.len(), 300);
    assert_eq!(dev.download(&b).unwrap(), v);
}

/// The same inputs on the GPU and on the executor. Kernels made only of
/// correctly rounded operations in a fixed order (the SGEMM's fma chain and
/// epilogue, bias add and ReLU, the bias gradient's fixed summation order,
/// Adam, SGD) must agree bit for bit; a difference is a kernel whose result
/// depends on scheduling, or an executor that models an instruction wrongly.
#[test]
#[ignore = "needs a CUDA GPU: compares it with the PTX executor"]
fn gpu_and_executor_agree_bit_for_bit() {
    let Some(gpu) = gpu_device() else {
        return eprintln!("skipped: no CUDA GPU");
    };
    let exe = executor();
    let mut r = KRng::new(77);
    // SGEMM with the fused epilogue, in a vector-load and a scalar-load layout.
    for (m, n, k, off) in [(130usize, 200usize, 96usize, 0usize), (67, 45, 29, 1)] {
        let a = r.vec(off + m * k, -1.0, 1.0);
        let b = r.vec(off + k * n, -1.0, 1.0);
        let c = r.vec(m * n, -1.0, 1.0);
        let bias = r.vec(n, -1.0, 1.0);
        let run = |dev: &Device| -> (Vec<f32>, Vec<f32>) {
            let (da, db, dbias) = (
                dev.upload(&a).unwrap(),
                dev.upload(&b).unwrap(),
                dev.upload(&bias).unwrap(),
            );
            let mut dc = dev.upload(&c).unwrap();
            let mut dy = nan_buf(dev, m * n);
            cuda::gemm_bias_activation(
                dev,
                1.5,
                DeviceMatRef::from_strides(&da, off, m, k, k, 1).unwrap(),
                DeviceMatRef::from_strides(&db, off, k, n, n, 1).unwrap(),
                -0.5,
                DeviceMatMut::new(&mut dc, m, n).unwrap(),
                Some(&dbias),
                Activation::Relu,
                Some(DeviceMatMut::new(&mut dy, m, n).unwrap()),
            )
            .unwrap();
            (dev.download(&dc).unwrap(), dev.download(&dy).unwrap())
        };
        let (g, e) = (run(gpu), run(&exe));
        assert!(
            g.0.iter().zip(&e.0).all(|(x, y)| x.to_bits() == y.to_bits()),
            "sgemm C {m}x{n}x{k}"
        );
        assert!(
            g.1.iter().zip(&e.1).all(|(x, y)| x.to_bits() == y.to_bits()),
            "sgemm Y {m}x{n}x{k}"
        );
    }
    // Bias gradient and Adam over several chunks.
    let (rows, cols) = (300usize, 70usize);
    let dy = r.vec(rows * cols, -1.0, 1.0);
    let host: [Vec<f32>; 4] = [
        r.vec(20_000, -1.0, 1.0),
        r.vec(20_000, -0.1, 0.1),
        r.vec(20_000, -0.01, 0.01),
        r.vec(20_000, 0.0, 1e-3),
    ];
    let run = |dev: &Device| -> Vec<Vec<f32>> {
        let ddy = dev.upload(&dy).unwrap();
        let mut g = nan_buf(dev, cols);
        cuda::bias_grad(dev, DeviceMatRef::new(&ddy, rows, cols).unwrap(), &mut g).unwrap();
        let [mut w, gr, mut m, mut v] = host.clone().map(|h| dev.upload(&h).unwrap());
        for step in 1..=3 {
            cuda::adam_step(dev, &AdamConfig::adamw(), step, &mut w, &gr, &mut m, &mut v).unwrap();
        }
        let mut b = dev.zeros::<f32>(20_000).unwrap();
        cuda::sgd_step(
            dev,
            &SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.01,
            },
            &mut w,
            &gr,
            &mut b,
        )
        .unwrap();
        [&g, &w, &m, &v, &b].iter().map(|d| dev.download(d).unwrap()).collect()
    };
    let (g, e) = (run(gpu), run(&exe));
    for (what, (x, y)) in ["bias_grad", "adam+sgd w", "adam m", "adam v", "sgd buf"]
        .iter()
        .zip(g.iter().zip(&e))
    {
        assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()), "{what}");
    }
}

// ---------------------------------------------------------------- the sm_90a GEMM

/// A problem in the layout the sm_90a kernel reads in place (A row-major, B
/// column-major, rows a multiple of 8 elements apart), C row-major.
fn tma_spec(m: usize, n: usize, k: usize, act: Option<Activation>) -> GemmSpec {
    let ld = k.next_multiple_of(8);
    GemmSpec {
        m,
        n,
        k,
        a: Lay::new(m, k, false, ld - k, 0),
        b: Lay::new(k, n, true, ld - k, 0),
        c: Lay::new(m, n, false, 0, 0),
        y: act.map(|a| (Lay::new(m, n, false, 0, 0), a)),
        bias: act.is_some(),
        alpha: 0.5,
        beta: -1.0,
        rough: false,
    }
}

/// The sm_90a GEMM against the reference: on an sm_90 GPU at GPU sizes (many
/// tiles per block of the persistent grid, long K), else on the executor's sm_90
/// model at small ones. The launch records show it ran.
#[test]
fn sm90_gemm_against_the_reference() {
    let dev = device();
    let hopper;
    let (d, shapes): (&Device, &[(usize, usize, usize)]) = if dev.compute_capability().unwrap() == (9, 0) {
        (&dev, &[(1024, 768, 520), (257, 2048, 1032), (4000, 300, 64)])
    } else {
        eprintln!("no sm_90 GPU: the sm_90a kernel runs on the executor's sm_90 model");
        hopper = Device::executor_sm90();
        (&hopper, &[(129, 257, 72), (20, 600, 16)])
    };
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for kind in [Kind::Bf16, Kind::F16] {
            let act = [None, Some(Activation::GeluErf)][i % 2];
            d.record_launches(true);
            let l = gemm_check(d, kind, &tma_spec(m, n, k, act), 700 + i as u64).unwrap();
            let want = if kind == Kind::Bf16 {
                cuda::SM90_KERNELS[0]
            } else {
                cuda::SM90_KERNELS[1]
            };
            assert_eq!(l.iter().map(|r| r.kernel).collect::<Vec<_>>(), [want]);
        }
    }
}

/// The sm_90a GEMM on an sm_90 GPU and on the executor's sm_90 model, same inputs
/// (bf16 and f16, ragged edges, several k tiles, the fused bias + ReLU epilogue):
/// C and Y must agree bit for bit. The executor sums each k16 step's exact products
/// in f64 and rounds once; a difference says the tensor cores round otherwise, and
/// the message counts the elements that differ and by how many ulps at most.
#[test]
#[ignore = "needs an sm_90 GPU: compares it with the PTX executor"]
fn sm90_gpu_and_executor_agree_bit_for_bit() {
    let Some(gpu) = gpu_device() else {
        return eprintln!("skipped: no CUDA GPU");
    };
    if gpu.compute_capability().unwrap() != (9, 0) {
        return eprintln!("skipped: the GPU is not sm_90");
    }
    let exe = Device::executor_sm90();
    let mut r = KRng::new(91);
    let (m, n, k) = (200usize, 300usize, 136usize);
    let a = r.vec(m * k, -1.0, 1.0);
    let bt = r.vec(n * k, -1.0, 1.0);
    let c = r.vec(m * n, -1.0, 1.0);
    let bias = r.vec(n, -1.0, 1.0);
    #[allow(clippy::too_many_arguments)]
    fn run<T: cuda::GpuGemmInput>(
        dev: &Device,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        bt: &[T],
        c: &[f32],
        bias: &[f32],
    ) -> (Vec<f32>, Vec<f32>, &'static str) {
        let (da, db, dbias) = (
            dev.upload(a).unwrap(),
            dev.upload(bt).unwrap(),
            dev.upload(bias).unwrap(),
        );
        let mut dc = dev.upload(c).unwrap();
        let mut dy = dev.filled(m * n, f32::NAN).unwrap();
        dev.record_launches(true);
        cuda::gemm_bias_activation(
            dev,
            1.5,
            DeviceMatRef::new(&da, m, k).unwrap(),
            DeviceMatRef::new(&db, n, k).unwrap().t(),
            -0.5,
            DeviceMatMut::new(&mut dc, m, n).unwrap(),
            Some(&dbias),
            Activation::Relu,
            Some(DeviceMatMut::new(&mut dy, m, n).unwrap()),
        )
        .unwrap();
        let kernel = dev.take_launches()[0].kernel;
        (dev.download(&dc).unwrap(), dev.download(&dy).unwrap(), kernel)
    }
    let differ = |x: &[f32], y: &[f32]| -> (usize, u32) {
        let ulps = |p: f32, q: f32| (p.to_bits() as i32).wrapping_sub(q.to_bits() as i32).unsigned_abs();
        let d: Vec<u32> = x.iter().zip(y).map(|(&p, &q)| ulps(p, q)).filter(|&u| u != 0).collect();
        (d.len(), d.iter().copied().max().unwrap_or(0))
    };
    let mut report = Vec::new();
    for half in [false, true] {
        let (g, e) = if half {
            let conv = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
            let (a, bt) = (conv(&a), conv(&bt));
            (
                run(gpu, m, n, k, &a, &bt, &c, &bias),
                run(&exe, m, n, k, &a, &bt, &c, &bias),
            )
        } else {
            let conv = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
            let (a, bt) = (conv(&a), conv(&bt));
            (
                run(gpu, m, n, k, &a, &bt, &c, &bias),
                run(&exe, m, n, k, &a, &bt, &c, &bias),
            )
        };
        assert_eq!(g.2, e.2, "both ran the same kernel");
        assert!(g.2.starts_with("nk_gemm_sm90_"), "{}", g.2);
        for (what, x, y) in [("C", &g.0, &e.0), ("Y", &g.1, &e.1)] {
            let (count, max) = differ(x, y);
            eprintln!(
                "{} {what}: {count} of {} elements differ, at most {max} ulps",
                g.2,
                m * n
            );
            if count > 0 {
                report.push(format!("{} {what}: {count} elements differ (max {max} ulps)", g.2));
            }
        }
    }
    assert!(report.is_empty(), "GPU and executor differ: {report:?}");
}

/// The trainer's batch gather: rows picked by index (repeats included), every
/// byte value, bit-for-bit the host's correctly rounded division, into a view
/// with an offset and padded rows whose padding stays untouched; with the grid
/// cut to one block per dimension on the executor so both grid-stride loops
/// run; bad rows and short buffers are errors.
#[test]
fn batch_gather_divides_as_the_host_does() {
    let features = 300;
    let images: Vec<u8> = (0..3 * features).map(|i| ((i * 7 + i / 256) % 256) as u8).collect();
    let rows = [2u32, 0, 2, 1, 0];
    let (offset, rs) = (3, features + 5);
    for limit in [false, true] {
        let dev = executor();
        if limit {
            dev.limit_grid_for_tests(1);
        }
        let img = dev.upload(&images).unwrap();
        let mut idx = dev.zeros::<u32>(8).unwrap();
        let len = offset + rs * rows.len();
        let mut dst = nan_buf(&dev, len);
        let view = DeviceMatMut::from_strides(&mut dst, offset, rows.len(), features, rs, 1).unwrap();
        cuda::gather_scaled(&dev, &img, features, &rows, &mut idx, 255.0, view).unwrap();
        let got = dev.download(&dst).unwrap();
        for (e, g) in got.iter().enumerate() {
            let inside = e >= offset && (e - offset) % rs < features && (e - offset) / rs < rows.len();
            if !inside {
                assert!(g.is_nan(), "element {e} outside the view was written");
                continue;
            }
            let (i, j) = ((e - offset) / rs, (e - offset) % rs);
            let want = f32::from(images[rows[i] as usize * features + j]) / 255.0;
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "row {i} column {j} (grid limited: {limit})"
            );
        }
    }
    let dev = &device();
    let img = dev.upload(&images).unwrap();
    let mut idx = dev.zeros::<u32>(2).unwrap();
    let mut dst = dev.zeros::<f32>(2 * features).unwrap();
    let r = cuda::gather_scaled(
        dev,
        &img,
        features,
        &[0, 3],
        &mut idx,
        255.0,
        DeviceMatMut::new(&mut dst, 2, features).unwrap(),
    );
    assert!(matches!(r, Err(Error::InvalidArgument { arg: "rows", .. })), "{r:?}");
    let r = cuda::gather_scaled(
        dev,
        &img,
        features,
        &[0],
        &mut idx,
        255.0,
        DeviceMatMut::new(&mut dst, 2, features).unwrap(),
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let mut short = dev.zeros::<u32>(1).unwrap();
    let r = cuda::gather_scaled(
        dev,
        &img,
        features,
        &[0, 1],
        &mut short,
        255.0,
        DeviceMatMut::new(&mut dst, 2, features).unwrap(),
    );
    assert!(matches!(r, Err(Error::BufferTooShort { .. })), "{r:?}");
    assert!(dev.download(&dst).unwrap().iter().all(|&v| v == 0.0));
}

/// Correct counts on the device equal the host's `count_correct`: ties (the
/// first maximum wins), NaN (the first NaN wins), more rows than one block,
/// a transposed view; the accumulating form adds; bad shapes are errors.
#[test]
fn count_correct_counts_as_the_host_does() {
    let dev = &device();
    let (rows, cols) = (300, 7);
    let mut r = KRng::new(77);
    // Few distinct values, so most rows hold ties.
    let mut x: Vec<f32> = (0..rows * cols).map(|_| r.below(4) as f32).collect();
    for i in (0..rows).step_by(9) {
        x[i * cols + r.below(cols)] = f32::NAN;
    }
    for i in (0..rows).step_by(13) {
        x[i * cols + r.below(cols)] = f32::NAN;
    }
    // Even rows get their (first) argmax as the label, every third row the last
    // index holding the row's maximum (right only without a tie), the rest a
    // random class: a wrong tie or NaN rule changes the count.
    let mut first = vec![0u32; rows];
    nnkern::argmax_rows(MatRef::new(&x, rows, cols).unwrap(), &mut first).unwrap();
    let labels: Vec<u32> = (0..rows)
        .map(|i| {
            let row = &x[i * cols..(i + 1) * cols];
            if i % 2 == 0 {
                first[i]
            } else if i % 3 == 0 && !row[first[i] as usize].is_nan() {
                (0..cols).rev().find(|&j| row[j] == row[first[i] as usize]).unwrap() as u32
            } else {
                r.below(cols) as u32
            }
        })
        .collect();
    let want = nnkern::count_correct(MatRef::new(&x, rows, cols).unwrap(), &labels).unwrap();
    assert!(want > rows / 2 && want < rows * 3 / 4, "{want}: a weak test");
    let xd = dev.upload(&x).unwrap();
    let ld = dev.upload(&labels).unwrap();
    let view = DeviceMatRef::new(&xd, rows, cols).unwrap();
    assert_eq!(cuda::count_correct(dev, view, &ld).unwrap(), want);
    // The same logits stored transposed, read through a transposed view.
    let mut xt = vec![0.0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            xt[j * rows + i] = x[i * cols + j];
        }
    }
    let xtd = dev.upload(&xt).unwrap();
    let tview = DeviceMatRef::new(&xtd, cols, rows).unwrap().t();
    let mut count = dev.upload(&[5u32]).unwrap();
    cuda::count_correct_accumulate(dev, tview, &ld, &mut count).unwrap();
    cuda::count_correct_accumulate(dev, view, &ld, &mut count).unwrap();
    assert_eq!(dev.download(&count).unwrap(), [5 + 2 * want as u32]);
    // The first 10 rows against the first 10 labels of the longer buffer.
    let head = nnkern::count_correct(MatRef::new(&x[..10 * cols], 10, cols).unwrap(), &labels[..10]).unwrap();
    let mut count = dev.zeros::<u32>(1).unwrap();
    cuda::count_correct_accumulate(dev, DeviceMatRef::new(&xd, 10, cols).unwrap(), &ld, &mut count).unwrap();
    assert_eq!(dev.download(&count).unwrap(), [head as u32]);
    let short = dev.upload(&labels[..rows - 1]).unwrap();
    assert!(matches!(
        cuda::count_correct(dev, view, &short),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        cuda::count_correct_accumulate(dev, view, &short, &mut count),
        Err(Error::ShapeMismatch { .. })
    ));
    let empty = dev.zeros::<f32>(0).unwrap();
    let no_cols = DeviceMatRef::new(&empty, 3, 0).unwrap();
    assert!(matches!(
        cuda::count_correct(dev, no_cols, &dev.zeros::<u32>(3).unwrap()),
        Err(Error::InvalidArgument { .. })
    ));
}

/// The trainer's variants on parts of larger buffers give bit-for-bit what the
/// whole-buffer operations give and leave the rest of the buffer alone: bias
/// (+ activation) with the bias inside a parameter buffer, the bias gradient
/// into a range of a gradient buffer, the activation backward over ranges,
/// softmax-xent against the first rows of a longer label buffer, clipping with
/// a supplied accumulator (reused); ranges outside the buffer are errors.
#[test]
fn range_variants_match_the_whole_buffer_operations() {
    let dev = &device();
    let (rows, cols) = (37, 10);
    let mut r = KRng::new(5);
    let x = r.vec(rows * cols, -3.0, 3.0);
    let bias = r.vec(cols, -1.0, 1.0);
    let mut params = r.vec(50, -1.0, 1.0);
    params[20..30].copy_from_slice(&bias);
    let pd = dev.upload(&params).unwrap();
    let bd = dev.upload(&bias).unwrap();
    for act in [Activation::Relu, Activation::Tanh] {
        let (mut x1, mut x2) = (dev.upload(&x).unwrap(), dev.upload(&x).unwrap());
        let (mut y1, mut y2) = (nan_buf(dev, rows * cols), nan_buf(dev, rows * cols));
        cuda::bias_add_activation(
            dev,
            act,
            DeviceMatMut::new(&mut x1, rows, cols).unwrap(),
            &bd,
            DeviceMatMut::new(&mut y1, rows, cols).unwrap(),
        )
        .unwrap();
        cuda::bias_add_activation_at(
            dev,
            act,
            DeviceMatMut::new(&mut x2, rows, cols).unwrap(),
            &pd,
            20..30,
            Some(DeviceMatMut::new(&mut y2, rows, cols).unwrap()),
        )
        .unwrap();
        assert_eq!(bits(&dev.download(&x1).unwrap()), bits(&dev.download(&x2).unwrap()));
        assert_eq!(bits(&dev.download(&y1).unwrap()), bits(&dev.download(&y2).unwrap()));
        // Bias only (no activation output).
        let mut x3 = dev.upload(&x).unwrap();
        cuda::bias_add_activation_at(
            dev,
            act,
            DeviceMatMut::new(&mut x3, rows, cols).unwrap(),
            &pd,
            20..30,
            None,
        )
        .unwrap();
        assert_eq!(bits(&dev.download(&x1).unwrap()), bits(&dev.download(&x3).unwrap()));
        // Backward over the first 200 elements of both buffers.
        let g = r.vec(rows * cols, -1.0, 1.0);
        let (mut g1, mut g2) = (dev.upload(&g[..200]).unwrap(), dev.upload(&g).unwrap());
        let xs = dev.upload(&x[..200]).unwrap();
        cuda::activation_backward_inplace(dev, act, &xs, &mut g1).unwrap();
        let xd = dev.upload(&x).unwrap();
        cuda::activation_backward_inplace_at(dev, act, &xd, 0..200, &mut g2, 0..200).unwrap();
        let g2h = dev.download(&g2).unwrap();
        assert_eq!(bits(&dev.download(&g1).unwrap()), bits(&g2h[..200]));
        assert_eq!(bits(&g2h[200..]), bits(&g[200..]), "past the range");
    }
    // Bias gradient into elements 20..30 of a 50-element buffer.
    let dy = dev.upload(&x).unwrap();
    let view = DeviceMatRef::new(&dy, rows, cols).unwrap();
    let mut whole = nan_buf(dev, cols);
    cuda::bias_grad(dev, view, &mut whole).unwrap();
    let mut grads = dev.upload(&params).unwrap();
    cuda::bias_grad_at(dev, view, &mut grads, 20..30).unwrap();
    let gh = dev.download(&grads).unwrap();
    assert_eq!(bits(&gh[20..30]), bits(&dev.download(&whole).unwrap()));
    assert_eq!(bits(&gh[..20]), bits(&params[..20]));
    assert_eq!(bits(&gh[30..]), bits(&params[30..]));
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 30..20;
    for bad in [45..55, backwards] {
        let mut y = nan_buf(dev, rows * cols);
        let mut x4 = dev.upload(&x).unwrap();
        assert!(cuda::bias_grad_at(dev, view, &mut grads, bad.clone()).is_err());
        assert!(cuda::bias_add_activation_at(
            dev,
            Activation::Relu,
            DeviceMatMut::new(&mut x4, rows, cols).unwrap(),
            &pd,
            bad.clone(),
            Some(DeviceMatMut::new(&mut y, rows, cols).unwrap()),
        )
        .is_err());
        assert!(cuda::activation_backward_inplace_at(dev, Activation::Relu, &pd, bad.clone(), &mut y, 0..10).is_err());
    }
    assert!(matches!(
        cuda::bias_grad_at(dev, view, &mut grads, 20..29),
        Err(Error::ShapeMismatch { .. })
    ));
    // Softmax-xent against the first rows of a longer label buffer.
    let labels: Vec<u32> = (0..rows + 5).map(|_| r.below(cols) as u32).collect();
    let logits = dev.upload(&x).unwrap();
    let lv = DeviceMatRef::new(&logits, rows, cols).unwrap();
    let exact = dev.upload(&labels[..rows]).unwrap();
    let long = dev.upload(&labels).unwrap();
    let mut d1 = nan_buf(dev, rows * cols);
    let loss = cuda::softmax_xent(
        dev,
        lv,
        DeviceTargets::Labels(&exact),
        DeviceMatMut::new(&mut d1, rows, cols).unwrap(),
    )
    .unwrap();
    let mut d2 = nan_buf(dev, rows * cols);
    let mut acc = cuda::XentAccumulator::new(dev).unwrap();
    cuda::softmax_xent_labels_accumulate(
        dev,
        lv,
        &long,
        Some(DeviceMatMut::new(&mut d2, rows, cols).unwrap()),
        &mut acc,
    )
    .unwrap();
    assert_eq!((acc.read(dev).unwrap() as f32).to_bits(), loss.to_bits());
    assert_eq!(bits(&dev.download(&d1).unwrap()), bits(&dev.download(&d2).unwrap()));
    acc.reset(dev).unwrap();
    cuda::softmax_xent_labels_accumulate(dev, lv, &long, None, &mut acc).unwrap();
    assert_eq!((acc.read(dev).unwrap() as f32).to_bits(), loss.to_bits());
    let short = dev.upload(&labels[..rows - 1]).unwrap();
    assert!(cuda::softmax_xent_labels_accumulate(dev, lv, &short, None, &mut acc).is_err());
    // Clipping with a supplied accumulator, twice (it is zeroed each time).
    let g = r.vec(20_000, -1.0, 1.0);
    let (mut a, mut b) = (dev.upload(&g).unwrap(), dev.upload(&g).unwrap());
    let mut ws = dev.filled(2, f32::NAN).unwrap();
    for _ in 0..2 {
        let na = cuda::clip_global_norm(dev, &mut [&mut a], 3.0).unwrap();
        let nb = cuda::clip_global_norm_with(dev, &mut [&mut b], 3.0, &mut ws).unwrap();
        assert_eq!(na.to_bits(), nb.to_bits());
        assert_eq!(bits(&dev.download(&a).unwrap()), bits(&dev.download(&b).unwrap()));
    }
    let mut tiny = dev.zeros::<f32>(1).unwrap();
    assert!(matches!(
        cuda::clip_global_norm_with(dev, &mut [&mut b], 3.0, &mut tiny),
        Err(Error::BufferTooShort { .. })
    ));
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
