//! Element-wise kernels beside a plain copy of the same bytes (the bandwidth
//! ceiling) and beside the scalar `f64` reference, in one run.
//!
//! Throughput is bytes read + written per call. Sizes: the trainer's
//! (32×500 hidden activations, 32×10 logits, 784×500 first-layer weights),
//! an L2-resident tensor (64 Ki elements), and a DRAM-sized one (≥ 512 MiB
//! touched per call). One thread unless the group says otherwise.
//!
//! `cargo bench --bench elementwise` (all), or a filter such as
//! `cargo bench --bench elementwise -- adam`; `-- threads` compares 1 and 2
//! threads on large sizes (meaningful only with `PAR_MIN_PER_TASK` in
//! `src/ops/activation/kernels.rs` lowered: the kernels do not split by default). The README table is the medians of one run
//! (`target/criterion/<group>/<who>/<size>/new/estimates.json`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nnkern::*;
use std::time::Duration;

/// (label, elements, is the reference measured here)
fn sizes(bytes_per_elem: usize) -> Vec<(&'static str, usize, bool)> {
    vec![
        ("32x10", 320, true),
        ("32x500", 16_000, true),
        ("L2-64Ki", 65_536, true),
        ("784x500", 392_000, true),
        ("DRAM", (512 << 20) / bytes_per_elem, false),
    ]
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2000) as f32 / 250.0 - 4.0)
        .collect()
}

/// A copy moving `bytes` in total (half read, half written): the ceiling the
/// kernels are measured against, so it must be a good copy. Both buffers are
/// written before timing (no first-touch page faults), and the destination
/// lies half a page from the source modulo 4 KiB: where it lies just past the
/// source modulo 4 KiB (which two allocations can get by chance), `rep movsb`,
/// which `copy_from_slice` uses for these sizes, runs well below its speed on
/// some cores (seen on an AMD EPYC Zen 4 at 16 bytes), and a ratio against such
/// a copy would flatter every kernel.
fn copy_bench(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, label: &str, bytes: usize) {
    let n = (bytes / 8).max(1);
    let src = data(n, 1);
    let mut buf = vec![1.0f32; n + 1024];
    let want = (src.as_ptr() as usize + 2048) % 4096;
    let off = (want + 4096 - buf.as_ptr() as usize % 4096) % 4096 / 4;
    let dst = &mut buf[off..off + n];
    dst.copy_from_slice(&src);
    g.bench_function(BenchmarkId::new("copy", label), |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut *dst);
        })
    });
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    g
}

fn activations(c: &mut Criterion) {
    set_num_threads(1).unwrap();
    for act in [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::GeluTanh,
        Activation::GeluErf,
    ] {
        let mut g = configure(c, &format!("{act}_forward"));
        for (label, n, with_ref) in sizes(8) {
            let x = data(n, 7);
            let mut y = vec![0.0f32; n];
            g.throughput(Throughput::Bytes(8 * n as u64));
            copy_bench(&mut g, label, 8 * n);
            g.bench_function(BenchmarkId::new("nnkern", label), |b| {
                b.iter(|| {
                    activation_forward(
                        act,
                        MatRef::row_vector(black_box(&x)).unwrap(),
                        MatMut::row_vector(&mut y).unwrap(),
                    )
                    .unwrap()
                })
            });
            if with_ref {
                g.bench_function(BenchmarkId::new("reference", label), |b| {
                    b.iter(|| {
                        reference::activation_forward(
                            act,
                            MatRef::row_vector(black_box(&x)).unwrap(),
                            MatMut::row_vector(&mut y).unwrap(),
                        )
                        .unwrap()
                    })
                });
            }
        }
        g.finish();
    }
    for act in [Activation::Relu, Activation::GeluTanh] {
        let mut g = configure(c, &format!("{act}_backward"));
        for (label, n, with_ref) in sizes(12) {
            let x = data(n, 7);
            let dy = data(n, 9);
            let mut dx = vec![0.0f32; n];
            g.throughput(Throughput::Bytes(12 * n as u64));
            copy_bench(&mut g, label, 12 * n);
            g.bench_function(BenchmarkId::new("nnkern", label), |b| {
                b.iter(|| {
                    activation_backward(
                        act,
                        MatRef::row_vector(black_box(&x)).unwrap(),
                        MatRef::row_vector(black_box(&dy)).unwrap(),
                        MatMut::row_vector(&mut dx).unwrap(),
                    )
                    .unwrap()
                })
            });
            if with_ref {
                g.bench_function(BenchmarkId::new("reference", label), |b| {
                    b.iter(|| {
                        reference::activation_backward(
                            act,
                            MatRef::row_vector(black_box(&x)).unwrap(),
                            MatRef::row_vector(black_box(&dy)).unwrap(),
                            MatMut::row_vector(&mut dx).unwrap(),
                        )
                        .unwrap()
                    })
                });
            }
        }
        g.finish();
    }
}

/// Shape of an `n`-element tensor as rows × cols for the row-wise kernels.
fn shape(label: &str, n: usize) -> (usize, usize) {
    match label {
        "32x10" => (32, 10),
        "32x500" => (32, 500),
        "784x500" => (784, 500),
        _ => (n / 500, 500),
    }
}

fn bias(c: &mut Criterion) {
    set_num_threads(1).unwrap();
    let mut g = configure(c, "bias_add");
    for (label, n, with_ref) in sizes(8) {
        let (r, k) = shape(label, n);
        let mut x = data(r * k, 3);
        let b = data(k, 5);
        g.throughput(Throughput::Bytes(8 * (r * k) as u64));
        copy_bench(&mut g, label, 8 * r * k);
        g.bench_function(BenchmarkId::new("nnkern", label), |bn| {
            bn.iter(|| bias_add(MatMut::new(&mut x, r, k).unwrap(), black_box(&b)).unwrap())
        });
        if with_ref {
            g.bench_function(BenchmarkId::new("reference", label), |bn| {
                bn.iter(|| reference::bias_add(MatMut::new(&mut x, r, k).unwrap(), black_box(&b)).unwrap())
            });
        }
    }
    g.finish();
    // x += b (read, write) then y = relu(x) (write): 12 bytes per element.
    let mut g = configure(c, "bias_add_relu");
    for (label, n, with_ref) in sizes(12) {
        let (r, k) = shape(label, n);
        let mut x = data(r * k, 3);
        let mut y = vec![0.0f32; r * k];
        let b = data(k, 5);
        g.throughput(Throughput::Bytes(12 * (r * k) as u64));
        copy_bench(&mut g, label, 12 * r * k);
        g.bench_function(BenchmarkId::new("nnkern", label), |bn| {
            bn.iter(|| {
                bias_add_activation(
                    Activation::Relu,
                    MatMut::new(&mut x, r, k).unwrap(),
                    black_box(&b),
                    MatMut::new(&mut y, r, k).unwrap(),
                )
                .unwrap()
            })
        });
        if with_ref {
            g.bench_function(BenchmarkId::new("reference", label), |bn| {
                bn.iter(|| {
                    reference::bias_add_activation(
                        Activation::Relu,
                        MatMut::new(&mut x, r, k).unwrap(),
                        black_box(&b),
                        MatMut::new(&mut y, r, k).unwrap(),
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
    // grad ·= relu'(x) in place and column sums: reads x and grad, writes grad: 12 bytes.
    let mut g = configure(c, "relu_backward_bias_grad");
    for (label, n, with_ref) in sizes(12) {
        let (r, k) = shape(label, n);
        let x = data(r * k, 3);
        let mut gr = data(r * k, 4);
        let mut db = vec![0.0f32; k];
        g.throughput(Throughput::Bytes(12 * (r * k) as u64));
        copy_bench(&mut g, label, 12 * r * k);
        g.bench_function(BenchmarkId::new("nnkern", label), |bn| {
            bn.iter(|| {
                activation_backward_bias_grad(
                    Activation::Relu,
                    MatRef::new(&x, r, k).unwrap(),
                    MatMut::new(&mut gr, r, k).unwrap(),
                    &mut db,
                )
                .unwrap()
            })
        });
        if with_ref {
            g.bench_function(BenchmarkId::new("reference", label), |bn| {
                bn.iter(|| {
                    reference::activation_backward_bias_grad(
                        Activation::Relu,
                        MatRef::new(&x, r, k).unwrap(),
                        MatMut::new(&mut gr, r, k).unwrap(),
                        &mut db,
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn xent(c: &mut Criterion) {
    set_num_threads(1).unwrap();
    // Reads the logits, writes dlogits: 8 bytes per element.
    let mut g = configure(c, "softmax_xent");
    for (label, n, with_ref) in sizes(8) {
        let (r, k) = shape(label, n);
        let x: Vec<f32> = data(r * k, 11).iter().map(|v| v * 3.0).collect();
        let labels: Vec<u32> = (0..r as u32).map(|i| (i * 7) % k as u32).collect();
        let mut d = vec![0.0f32; r * k];
        g.throughput(Throughput::Bytes(8 * (r * k) as u64));
        copy_bench(&mut g, label, 8 * r * k);
        g.bench_function(BenchmarkId::new("nnkern", label), |bn| {
            bn.iter(|| {
                softmax_xent(
                    MatRef::new(&x, r, k).unwrap(),
                    Targets::Labels(&labels),
                    MatMut::new(&mut d, r, k).unwrap(),
                )
                .unwrap()
            })
        });
        if with_ref {
            g.bench_function(BenchmarkId::new("reference", label), |bn| {
                bn.iter(|| {
                    reference::softmax_xent(
                        MatRef::new(&x, r, k).unwrap(),
                        Targets::Labels(&labels),
                        MatMut::new(&mut d, r, k).unwrap(),
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn optim(c: &mut Criterion) {
    set_num_threads(1).unwrap();
    // Reads w, g, m, v, writes w, m, v: 28 bytes per parameter.
    let cfg = AdamConfig::keras();
    for (name, subnormal) in [("adam", false), ("adam_subnormal_moments", true)] {
        let mut g = configure(c, name);
        for (label, n, with_ref) in sizes(28) {
            if subnormal && !(label == "784x500" || label == "L2-64Ki") {
                continue;
            }
            let mut w = data(n, 1);
            // Dead units: zero gradient, moments deep in the subnormal range, decaying further.
            let gr = if subnormal {
                vec![0.0f32; n]
            } else {
                data(n, 2).iter().map(|v| v * 1e-3).collect()
            };
            let m0: Vec<f32> = if subnormal {
                vec![1e-39f32; n]
            } else {
                data(n, 3).iter().map(|v| v * 1e-4).collect()
            };
            let v0: Vec<f32> = if subnormal {
                vec![1e-40f32; n]
            } else {
                data(n, 4).iter().map(|v| v.abs() * 1e-7).collect()
            };
            let (mut m, mut v) = (m0.clone(), v0.clone());
            g.throughput(Throughput::Bytes(28 * n as u64));
            copy_bench(&mut g, label, 28 * n);
            // Moments are reset every call so the subnormal ones never decay to zero.
            g.bench_function(BenchmarkId::new("nnkern", label), |bn| {
                bn.iter(|| {
                    if subnormal {
                        m.copy_from_slice(&m0);
                        v.copy_from_slice(&v0);
                    }
                    adam_step(
                        &cfg,
                        &mut AdamState::from_moments(&mut m[..], &mut v[..]),
                        10,
                        &mut w,
                        black_box(&gr),
                    )
                    .unwrap()
                })
            });
            if subnormal {
                // The same moment resets with normal moments, so the pair compares like with like.
                let (mn, vn) = (vec![1e-4f32; n], vec![1e-7f32; n]);
                g.bench_function(BenchmarkId::new("nnkern_normal_moments", label), |bn| {
                    bn.iter(|| {
                        m.copy_from_slice(&mn);
                        v.copy_from_slice(&vn);
                        adam_step(
                            &cfg,
                            &mut AdamState::from_moments(&mut m[..], &mut v[..]),
                            10,
                            &mut w,
                            black_box(&gr),
                        )
                        .unwrap()
                    })
                });
            }
            if with_ref && !subnormal {
                g.bench_function(BenchmarkId::new("reference", label), |bn| {
                    bn.iter(|| {
                        reference::adam_step(
                            &cfg,
                            &mut AdamState::from_moments(&mut m[..], &mut v[..]),
                            10,
                            &mut w,
                            black_box(&gr),
                        )
                        .unwrap()
                    })
                });
            }
        }
        g.finish();
    }
}

/// 1 vs 2 threads on large tensors (where the kernels split).
fn threads(c: &mut Criterion) {
    for (name, bytes) in [("threads_relu", 8usize), ("threads_adam", 28)] {
        let mut g = configure(c, name);
        for n in [1usize << 20, 1 << 22, 1 << 24] {
            g.throughput(Throughput::Bytes((bytes * n) as u64));
            let x = data(n, 1);
            let mut y = vec![0.0f32; n];
            let (gr, mut m, mut v) = (data(n, 2), vec![0.0f32; n], vec![0.0f32; n]);
            for t in [1usize, 2] {
                g.bench_function(BenchmarkId::new(format!("{t}T"), n), |bn| {
                    set_num_threads(t).unwrap();
                    if bytes == 8 {
                        bn.iter(|| {
                            activation_forward(
                                Activation::Relu,
                                MatRef::row_vector(black_box(&x)).unwrap(),
                                MatMut::row_vector(&mut y).unwrap(),
                            )
                            .unwrap()
                        })
                    } else {
                        bn.iter(|| {
                            adam_step(
                                &AdamConfig::default(),
                                &mut AdamState::from_moments(&mut m[..], &mut v[..]),
                                3,
                                &mut y,
                                black_box(&gr),
                            )
                            .unwrap()
                        })
                    }
                });
            }
        }
        g.finish();
    }
    set_num_threads(1).unwrap();
}

criterion_group!(benches, activations, bias, xent, optim, threads);
criterion_main!(benches);
