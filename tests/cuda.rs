//! The CUDA operations against the reference, through the public API.
//!
//! They run on a CUDA GPU when one is usable and on the PTX executor otherwise
//! (see `tests/common/device.rs`): `cargo test --release --features cuda` runs
//! every test here on any machine, and `REQUIRE_GPU=1` makes a missing GPU a
//! failure, so they never pass on the executor where a GPU was meant. Shapes
//! are smaller on the executor (an interpreter) and include larger ones on a
//! GPU. Outputs are poisoned with NaN before each kernel runs.
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

#[test]
fn activations_forward_and_backward() {
    let dev = &device();
    for (s, &n) in [1usize, 255, 256, 257, 10_000].iter().enumerate() {
        let x = act_inputs(n, 11 + s as u64);
        let dy: Vec<f32> = KRng::new(5 + s as u64).vec(n, -3.0, 3.0);
        let (dx_, ddy) = (dev.upload(&x).unwrap(), dev.upload(&dy).unwrap());
        for act in Activation::ALL {
            let mut y = nan_buf(dev, n);
            cuda::activation_forward(dev, act, &dx_, &mut y).unwrap();
            let want = act_forward_expected(act, &x);
            check_close(
                &format!("{act} forward n={n}"),
                &dev.download(&y).unwrap(),
                &want,
                |i| act_tol(want[i]),
            )
            .unwrap();
            let mut inplace = dev.upload(&x).unwrap();
            cuda::activation_forward_inplace(dev, act, &mut inplace).unwrap();
            check_close(
                &format!("{act} forward in place"),
                &dev.download(&inplace).unwrap(),
                &want,
                |i| act_tol(want[i]),
            )
            .unwrap();

            let mut dx = nan_buf(dev, n);
            cuda::activation_backward(dev, act, &dx_, &ddy, &mut dx).unwrap();
            let want = act_backward_expected(act, &x, &dy);
            check_close(
                &format!("{act} backward n={n}"),
                &dev.download(&dx).unwrap(),
                &want,
                |i| act_backward_tol(act, x[i], dy[i]),
            )
            .unwrap();
            let mut g = dev.upload(&dy).unwrap();
            cuda::activation_backward_inplace(dev, act, &dx_, &mut g).unwrap();
            check_close(
                &format!("{act} backward in place"),
                &dev.download(&g).unwrap(),
                &want,
                |i| act_backward_tol(act, x[i], dy[i]),
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
            check_close("bias_add x", &dev.download(&xd).unwrap(), &xw, |_| 0.0).unwrap();
            check_close(
                &format!("bias_add_activation {act} y"),
                &dev.download(&yd).unwrap(),
                &yw,
                |i| act_tol(yw[i]),
            )
            .unwrap();
        }
        let mut xd = dev.upload(&x).unwrap();
        cuda::bias_add(dev, DeviceMatMut::new(&mut xd, rows, cols).unwrap(), &db).unwrap();
        let mut xw = x.clone();
        reference::bias_add(MatMut::new(&mut xw, rows, cols).unwrap(), &bias).unwrap();
        check_close("bias_add", &dev.download(&xd).unwrap(), &xw, |_| 0.0).unwrap();

        // f32 sum over rows: error <= rows * 2^-24 * sum |dy| per column.
        let dyd = dev.upload(&x).unwrap();
        for transposed in [false, true] {
            let (r_, c_) = if transposed { (cols, rows) } else { (rows, cols) };
            let view = if transposed {
                DeviceMatRef::new(&dyd, rows, cols).unwrap().t()
            } else {
                DeviceMatRef::new(&dyd, rows, cols).unwrap()
            };
            let hview = if transposed {
                MatRef::new(&x, rows, cols).unwrap().t()
            } else {
                MatRef::new(&x, rows, cols).unwrap()
            };
            let mut g = nan_buf(dev, c_);
            cuda::bias_grad(dev, view, &mut g).unwrap();
            let mut want = vec![0.0f32; c_];
            reference::bias_grad(hview, &mut want).unwrap();
            let abs: Vec<f64> = (0..c_)
                .map(|j| (0..r_).map(|i| hview[(i, j)].abs() as f64).sum())
                .collect();
            check_close("bias_grad", &dev.download(&g).unwrap(), &want, |j| {
                (r_ as f64 + 1.0) * 6e-8 * abs[j] + 1e-30
            })
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

/// Runs one GEMM case on the device for input type `T`, checks it.
fn run_gemm<T: cuda::GpuGemmInput>(
    dev: &Device,
    case: &GemmCase,
    seed: u64,
    conv: fn(f32) -> T,
    rel: f64,
) -> Result<(), String> {
    let d = gemm_data(case, seed, true);
    let mut d_in = d;
    if case.alpha == 0.0 {
        d_in.a.iter_mut().for_each(|x| *x = f32::NAN);
        d_in.b.iter_mut().for_each(|x| *x = f32::NAN);
    }
    let (want, scale) = {
        let clean = gemm_data(case, seed, true);
        gemm_expected(
            case,
            &GemmData {
                a: clean.a,
                b: clean.b,
                c: d_in.c.clone(),
                bias: clean.bias,
            },
        )
    };
    let a: Vec<T> = d_in.a.iter().map(|&x| conv(x)).collect();
    let b: Vec<T> = d_in.b.iter().map(|&x| conv(x)).collect();
    let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
    let mut dc = dev.upload(&d_in.c).unwrap();
    let (m, n, k) = (case.m, case.n, case.k);
    let av = if case.ta {
        DeviceMatRef::new(&da, k, m).unwrap().t()
    } else {
        DeviceMatRef::new(&da, m, k).unwrap()
    };
    let bv = if case.tb {
        DeviceMatRef::new(&db, n, k).unwrap().t()
    } else {
        DeviceMatRef::new(&db, k, n).unwrap()
    };
    cuda::gemm(
        dev,
        case.alpha,
        av,
        bv,
        case.beta,
        DeviceMatMut::new(&mut dc, m, n).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    let got = dev.download(&dc).unwrap();
    // error <= (k + 2) * u * scale, u = 2^-24 for f32 fma chains; `rel` widens it
    // for the tensor cores' accumulation.
    check_close(
        &format!("{} gemm {case:?}", std::any::type_name::<T>()),
        &got,
        &want,
        |i| (k as f64 + 2.0) * rel * scale[i] + 1e-30,
    )
}

#[test]
fn sgemm_fixed_cases() {
    let dev = &device();
    for (i, case) in sized_gemm_cases().iter().enumerate() {
        run_gemm(dev, case, i as u64, |x| x, 6e-8).unwrap();
    }
}

#[test]
fn tensor_core_gemm_fixed_cases() {
    let dev = &device();
    for (i, case) in sized_gemm_cases().iter().enumerate() {
        run_gemm(dev, case, i as u64, bf16::from_f32, 2.5e-7).unwrap();
        run_gemm(dev, case, i as u64, f16::from_f32, 2.5e-7).unwrap();
    }
}

#[test]
fn tf32_gemm_fixed_cases() {
    let dev = &device();
    for (i, case) in sized_gemm_cases().iter().enumerate() {
        // Inputs not representable in tf32, so the rounding (<= 2^-11 per input) shows.
        let d = gemm_data(case, 70 + i as u64, false);
        let (want, scale) = gemm_expected(case, &d);
        let (da, db) = (dev.upload(&d.a).unwrap(), dev.upload(&d.b).unwrap());
        let mut dc = dev.upload(&d.c).unwrap();
        let (m, n, k) = (case.m, case.n, case.k);
        let av = if case.ta {
            DeviceMatRef::new(&da, k, m).unwrap().t()
        } else {
            DeviceMatRef::new(&da, m, k).unwrap()
        };
        let bv = if case.tb {
            DeviceMatRef::new(&db, n, k).unwrap().t()
        } else {
            DeviceMatRef::new(&db, k, n).unwrap()
        };
        cuda::gemm_tf32(
            dev,
            case.alpha,
            av,
            bv,
            case.beta,
            DeviceMatMut::new(&mut dc, m, n).unwrap(),
        )
        .unwrap();
        let tol = |i: usize| ((k as f64 + 2.0) * 2.5e-7 + 2f64.powi(-10)) * scale[i] + 1e-30;
        check_close(&format!("tf32 gemm {case:?}"), &dev.download(&dc).unwrap(), &want, tol).unwrap();
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
        run_gemm(dev, &case, seed, |x| x, 6e-8).map_err(TestCaseError::fail)?;
        run_gemm(dev, &case, seed, bf16::from_f32, 2.5e-7).map_err(TestCaseError::fail)?;
        run_gemm(dev, &case, seed, f16::from_f32, 2.5e-7).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn softmax_xent_random_shapes(rows in 1..=sized(100, 40), cols in 1..=sized(300, 100), soft: bool, seed: u64) {
        let dev = &device();
        check_xent(dev, rows, cols, soft, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn fused_gemm_bias_activation() {
    let dev = &device();
    for (i, case) in gemm_cases()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.k > 0 && c.alpha != 0.0)
    {
        for act in [Activation::Relu, Activation::GeluTanh] {
            let d = gemm_data(case, 50 + i as u64, true);
            let (m, n, k) = (case.m, case.n, case.k);
            let (mut c, scale) = gemm_expected(case, &d);
            let mut y = vec![0.0f32; m * n];
            reference::bias_add_activation(
                act,
                MatMut::new(&mut c, m, n).unwrap(),
                &d.bias,
                MatMut::new(&mut y, m, n).unwrap(),
            )
            .unwrap();
            let tol = |i: usize| (k as f64 + 3.0) * 2.5e-7 * (scale[i] + d.bias[i % n].abs() as f64) + 1e-30;
            // f32 (CUDA cores) and bf16 (tensor cores)
            let (da, db) = (dev.upload(&d.a).unwrap(), dev.upload(&d.b).unwrap());
            let a16: Vec<bf16> = d.a.iter().map(|&x| bf16::from_f32(x)).collect();
            let b16: Vec<bf16> = d.b.iter().map(|&x| bf16::from_f32(x)).collect();
            let (da16, db16) = (dev.upload(&a16).unwrap(), dev.upload(&b16).unwrap());
            let dbias = dev.upload(&d.bias).unwrap();
            for tc in [false, true] {
                let mut dc = dev.upload(&d.c).unwrap();
                let mut dy = nan_buf(dev, m * n);
                let cm = DeviceMatMut::new(&mut dc, m, n).unwrap();
                let ym = Some(DeviceMatMut::new(&mut dy, m, n).unwrap());
                if tc {
                    let av = if case.ta {
                        DeviceMatRef::new(&da16, k, m).unwrap().t()
                    } else {
                        DeviceMatRef::new(&da16, m, k).unwrap()
                    };
                    let bv = if case.tb {
                        DeviceMatRef::new(&db16, n, k).unwrap().t()
                    } else {
                        DeviceMatRef::new(&db16, k, n).unwrap()
                    };
                    cuda::gemm_bias_activation(dev, case.alpha, av, bv, case.beta, cm, Some(&dbias), act, ym).unwrap();
                } else {
                    let av = if case.ta {
                        DeviceMatRef::new(&da, k, m).unwrap().t()
                    } else {
                        DeviceMatRef::new(&da, m, k).unwrap()
                    };
                    let bv = if case.tb {
                        DeviceMatRef::new(&db, n, k).unwrap().t()
                    } else {
                        DeviceMatRef::new(&db, k, n).unwrap()
                    };
                    cuda::gemm_bias_activation(dev, case.alpha, av, bv, case.beta, cm, Some(&dbias), act, ym).unwrap();
                }
                check_close(
                    &format!("fused C tc={tc} {case:?}"),
                    &dev.download(&dc).unwrap(),
                    &c,
                    tol,
                )
                .unwrap();
                // f' is at most ~1.13 for these activations: the C error carries over.
                check_close(
                    &format!("fused Y {act} tc={tc}"),
                    &dev.download(&dy).unwrap(),
                    &y,
                    |i| 1.2 * tol(i) + act_tol(y[i]),
                )
                .unwrap();
            }
        }
    }
}

fn check_xent(dev: &Device, rows: usize, cols: usize, soft: bool, seed: u64) -> Result<(), String> {
    let mut r = KRng::new(seed);
    let x = r.vec(rows * cols, -10.0, 10.0);
    let labels: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
    let mut t = r.vec(rows * cols, 0.0, 1.0);
    for row in t.chunks_mut(cols) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    let xv = MatRef::new(&x, rows, cols).unwrap();
    let tv = MatRef::new(&t, rows, cols).unwrap();
    let targets = if soft {
        Targets::Soft(tv)
    } else {
        Targets::Labels(&labels)
    };
    let mut want_d = vec![0.0f32; rows * cols];
    let want = reference::softmax_xent(xv, targets, MatMut::new(&mut want_d, rows, cols).unwrap()).unwrap();
    let (dx, dl, dt) = (
        dev.upload(&x).unwrap(),
        dev.upload(&labels).unwrap(),
        dev.upload(&t).unwrap(),
    );
    let dtargets = if soft {
        DeviceTargets::Soft(DeviceMatRef::new(&dt, rows, cols).unwrap())
    } else {
        DeviceTargets::Labels(&dl)
    };
    let mut dd = nan_buf(dev, rows * cols);
    let loss = cuda::softmax_xent(
        dev,
        DeviceMatRef::new(&dx, rows, cols).unwrap(),
        dtargets,
        DeviceMatMut::new(&mut dd, rows, cols).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    // loss: lse to ~1e-6 absolute for logits in [-10, 10]; gradient: p - t to 5e-6, over batch.
    if (loss as f64 - want as f64).abs() > 2e-5 * (1.0 + want.abs() as f64) {
        return Err(format!("loss {loss} vs {want} ({rows}x{cols} soft={soft})"));
    }
    check_close("dlogits", &dev.download(&dd).unwrap(), &want_d, |_| 5e-6 / rows as f64)?;
    let l2 = cuda::softmax_xent_loss(dev, DeviceMatRef::new(&dx, rows, cols).unwrap(), dtargets)
        .map_err(|e| e.to_string())?;
    if (l2 - loss).abs() > 1e-6 * (1.0 + loss.abs()) {
        return Err(format!("loss-only {l2} vs fused {loss}"));
    }
    // softmax / log_softmax, x read through a transposed view.
    let xt: Vec<f32> = (0..cols)
        .flat_map(|j| (0..rows).map(move |i| (i, j)))
        .map(|(i, j)| x[i * cols + j])
        .collect();
    let dxt = dev.upload(&xt).unwrap();
    for log in [false, true] {
        let mut want_y = vec![0.0f32; rows * cols];
        let mut dy = nan_buf(dev, rows * cols);
        let view = DeviceMatRef::new(&dxt, cols, rows).unwrap().t();
        if log {
            reference::log_softmax(xv, MatMut::new(&mut want_y, rows, cols).unwrap()).unwrap();
            cuda::log_softmax(dev, view, DeviceMatMut::new(&mut dy, rows, cols).unwrap()).unwrap();
        } else {
            reference::softmax(xv, MatMut::new(&mut want_y, rows, cols).unwrap()).unwrap();
            cuda::softmax(dev, view, DeviceMatMut::new(&mut dy, rows, cols).unwrap()).unwrap();
        }
        check_close(
            &format!("softmax log={log}"),
            &dev.download(&dy).unwrap(),
            &want_y,
            |i| 4e-6 * (1.0 + want_y[i].abs() as f64),
        )?;
    }
    Ok(())
}

#[test]
fn softmax_xent_fixed_cases_and_errors() {
    let dev = &device();
    for (i, (rows, cols)) in sized_row_col_cases().into_iter().enumerate() {
        for soft in [false, true] {
            check_xent(dev, rows, cols, soft, i as u64).unwrap();
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
    let sizes = [1usize, 100, 8192, 8193, 20_000];
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
            let mut params: Vec<cuda::AdamParam<'_>> = dbufs
                .iter_mut()
                .map(|[w, g, m, v]| cuda::AdamParam { w, grad: &*g, m, v })
                .collect();
            cuda::adam_step_many(dev, &cfg, step, &mut params).unwrap();
        }
        for (t, d) in host.iter().zip(&dbufs) {
            let (mut w, mut m, mut v) = (t[0].clone(), t[2].clone(), t[3].clone());
            for step in 1..=3u64 {
                reference::adam_step(&cfg, step, &mut w, &t[1], &mut m, &mut v).unwrap();
            }
            // f32 arithmetic: a few ulp of each value plus 1e-5 of the step size per step.
            check_close("adam w", &dev.download(&d[0]).unwrap(), &w, |i| {
                5e-7 * w[i].abs() as f64 + 3e-5 * cfg.lr as f64
            })
            .unwrap();
            check_close("adam m", &dev.download(&d[2]).unwrap(), &m, |i| {
                5e-7 * (m[i].abs() + t[1][i].abs()) as f64
            })
            .unwrap();
            check_close("adam v", &dev.download(&d[3]).unwrap(), &v, |i| {
                1e-6 * (v[i] + t[1][i] * t[1][i]) as f64
            })
            .unwrap();
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
    let (mut w, mut b) = (w0.clone(), b0.clone());
    reference::sgd_step(&cfg, &mut w, &g, &mut b).unwrap();
    check_close("sgd w", &dev.download(&dw).unwrap(), &w, |i| {
        1e-6 * (1.0 + w[i].abs() as f64)
    })
    .unwrap();
    check_close("sgd buf", &dev.download(&dbuf).unwrap(), &b, |i| {
        1e-6 * (1.0 + b[i].abs() as f64)
    })
    .unwrap();
    // Global norm and clipping.
    let gs: Vec<Vec<f32>> = sizes.iter().map(|&n| r.vec(n, -1.0, 1.0)).collect();
    let mut dgs: Vec<DeviceBuffer<f32>> = gs.iter().map(|g| dev.upload(g).unwrap()).collect();
    let refs: Vec<&[f32]> = gs.iter().map(|g| g.as_slice()).collect();
    let want_norm = reference::global_norm(&refs);
    let norm = cuda::global_norm(dev, &dgs.iter().collect::<Vec<_>>()).unwrap();
    assert!((norm - want_norm).abs() <= 1e-6 * want_norm, "{norm} vs {want_norm}");
    let mut host = gs.clone();
    let mut hrefs: Vec<&mut [f32]> = host.iter_mut().map(|g| g.as_mut_slice()).collect();
    reference::clip_global_norm(&mut hrefs, 1.5).unwrap();
    let mut drefs: Vec<&mut DeviceBuffer<f32>> = dgs.iter_mut().collect();
    let n2 = cuda::clip_global_norm(dev, &mut drefs, 1.5).unwrap();
    assert!((n2 - want_norm).abs() <= 1e-6 * want_norm);
    for (d, h) in dgs.iter().zip(&host) {
        check_close("clipped", &dev.download(d).unwrap(), h, |i| {
            1e-6 * h[i].abs() as f64 + 1e-30
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
}

/// Views that start inside a buffer (misaligned for 128-bit and cp.async loads)
/// and have padded rows: the host must fall back (scalar loads, packing).
#[test]
fn gemm_on_offset_and_padded_views() {
    let dev = &device();
    let (m, n, k, pad, off) = (67usize, 45usize, 29usize, 3usize, 1usize);
    let mut r = KRng::new(99);
    let to_bf = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| bf16::from_f32(x).to_f32()).collect() };
    let a = to_bf(r.vec(off + m * (k + pad), -1.0, 1.0));
    let b = to_bf(r.vec(off + k * (n + pad), -1.0, 1.0));
    let av = MatRef::from_strides(&a[off..], m, k, k + pad, 1).unwrap();
    let bv = MatRef::from_strides(&b[off..], k, n, n + pad, 1).unwrap();
    let mut want = vec![0.0f32; m * n];
    reference::gemm(1.0, av, bv, 0.0, MatMut::new(&mut want, m, n).unwrap()).unwrap();
    let scale = reference::gemm_error_scale(1.0, av, bv, 0.0, MatRef::new(&want, m, n).unwrap());
    let tol = |i: usize| (k as f64 + 2.0) * 2.5e-7 * scale[i] + 1e-30;
    let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
    let mut dc = nan_buf(dev, m * n);
    cuda::gemm(
        dev,
        1.0,
        DeviceMatRef::from_strides(&da, off, m, k, k + pad, 1).unwrap(),
        DeviceMatRef::from_strides(&db, off, k, n, n + pad, 1).unwrap(),
        0.0,
        DeviceMatMut::new(&mut dc, m, n).unwrap(),
    )
    .unwrap();
    check_close("f32 offset views", &dev.download(&dc).unwrap(), &want, tol).unwrap();
    let a16: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
    let b16: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
    let (da, db) = (dev.upload(&a16).unwrap(), dev.upload(&b16).unwrap());
    let mut dc = nan_buf(dev, m * n);
    cuda::gemm(
        dev,
        1.0,
        DeviceMatRef::from_strides(&da, off, m, k, k + pad, 1).unwrap(),
        DeviceMatRef::from_strides(&db, off, k, n, n + pad, 1).unwrap(),
        0.0,
        DeviceMatMut::new(&mut dc, m, n).unwrap(),
    )
    .unwrap();
    check_close("bf16 offset views", &dev.download(&dc).unwrap(), &want, tol).unwrap();
}

#[test]
fn softmax_xent_accumulates_on_the_device() {
    let dev = &device();
    let (rows, cols) = (37usize, 11usize);
    let mut acc = cuda::XentAccumulator::new(dev).unwrap();
    let mut want = 0.0f64;
    for s in 0..3u64 {
        let mut r = KRng::new(300 + s);
        let x = r.vec(rows * cols, -5.0, 5.0);
        let labels: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
        want += reference::softmax_xent_loss(MatRef::new(&x, rows, cols).unwrap(), Targets::Labels(&labels)).unwrap()
            as f64;
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
    assert!((got - want).abs() <= 3e-5 * (1.0 + want.abs()), "{got} vs {want}");
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
