//! GPU benchmarks: our PTX GEMMs beside cuBLAS in the same run, TFLOP/s from CUDA
//! events, and one MLP training step (784→500 ReLU→10, batch 32, Adam) on the device.
//!
//! `cargo bench --features cublas --bench cuda`; without a GPU it prints why and exits.
//! Criterion's "elem/s" throughput is FLOP/s (2·m·n·k elements per GEMM).

use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{sys, CudaEvent};
use nnkern::cuda::{self, Device, DeviceBuffer, DeviceMatMut, DeviceMatRef, DeviceTargets};
use nnkern::{bf16, Activation, AdamConfig};
use std::time::Duration;

/// (m, n, k, label): the large squares and the trainer's shapes.
const SHAPES: [(usize, usize, usize, &str); 5] = [
    (4096, 4096, 4096, "4096^3"),
    (8192, 8192, 8192, "8192^3"),
    (32, 500, 784, "mlp fwd (32,500,784)"),
    (784, 500, 32, "mlp dW (784,500,32)"),
    (32, 784, 500, "mlp dX (32,784,500)"),
];

fn events(dev: &Device) -> (CudaEvent, CudaEvent) {
    let e = || {
        dev.context()
            .expect("a driver device")
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap()
    };
    (e(), e())
}

/// Times `iters` runs of `f` on the device's stream with CUDA events.
fn time_gpu(dev: &Device, iters: u64, mut f: impl FnMut()) -> Duration {
    let (start, end) = events(dev);
    start.record(dev.stream().expect("a driver device")).unwrap();
    for _ in 0..iters {
        f();
    }
    end.record(dev.stream().expect("a driver device")).unwrap();
    let ms = start.elapsed_ms(&end).unwrap();
    Duration::from_secs_f64(ms as f64 / 1e3)
}

fn fill(dev: &Device, n: usize, seed: u32) -> DeviceBuffer<f32> {
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32) - 0.5)
        .collect();
    dev.upload(&v).unwrap()
}

fn gemm_benches(c: &mut Criterion, dev: &Device, blas_h: &CudaBlas) {
    let mut g = c.benchmark_group("sgemm");
    for &(m, n, k, label) in &SHAPES {
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let (a, b) = (fill(dev, m * k, 1), fill(dev, k * n, 2));
        let mut cbuf = dev.zeros::<f32>(m * n).unwrap();
        g.bench_function(BenchmarkId::new("nnkern", label), |bch| {
            bch.iter_custom(|iters| {
                time_gpu(dev, iters, || {
                    let av = DeviceMatRef::new(&a, m, k).unwrap();
                    let bv = DeviceMatRef::new(&b, k, n).unwrap();
                    cuda::gemm(dev, 1.0, av, bv, 0.0, DeviceMatMut::new(&mut cbuf, m, n).unwrap()).unwrap();
                })
            })
        });
        g.bench_function(BenchmarkId::new("nnkern-tf32", label), |bch| {
            bch.iter_custom(|iters| {
                time_gpu(dev, iters, || {
                    let av = DeviceMatRef::new(&a, m, k).unwrap();
                    let bv = DeviceMatRef::new(&b, k, n).unwrap();
                    cuda::gemm_tf32(dev, 1.0, av, bv, 0.0, DeviceMatMut::new(&mut cbuf, m, n).unwrap()).unwrap();
                })
            })
        });
        let (pa, pb) = (a.device_ptr(), b.device_ptr());
        let pc = cbuf.device_ptr();
        g.bench_function(BenchmarkId::new("cublas", label), |bch| {
            bch.iter_custom(|iters| {
                time_gpu(dev, iters, || {
                    let (alpha, beta) = (1.0f32, 0.0f32);
                    // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ.
                    // SAFETY: the pointers are live device buffers of the sizes given; the
                    // handle runs on the device's stream.
                    unsafe {
                        blas::sgemm(
                            *blas_h.handle(),
                            blas_sys::cublasOperation_t::CUBLAS_OP_N,
                            blas_sys::cublasOperation_t::CUBLAS_OP_N,
                            n as i32,
                            m as i32,
                            k as i32,
                            &alpha,
                            pb as *const f32,
                            n as i32,
                            pa as *const f32,
                            k as i32,
                            &beta,
                            pc as *mut f32,
                            n as i32,
                        )
                        .unwrap()
                    }
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("bf16_gemm");
    for &(m, n, k, label) in &SHAPES {
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let to16 = |n: usize, s: u32| {
            let v: Vec<bf16> = (0..n)
                .map(|i| {
                    bf16::from_f32(
                        (((i as u32).wrapping_mul(2654435761).wrapping_add(s) >> 8) as f32 / (1u32 << 24) as f32) - 0.5,
                    )
                })
                .collect();
            dev.upload(&v).unwrap()
        };
        // A row-major (m×k) and B stored as n×k (the layout the kernel reads directly).
        let (a, bt) = (to16(m * k, 3), to16(n * k, 4));
        let mut cbuf = dev.zeros::<f32>(m * n).unwrap();
        g.bench_function(BenchmarkId::new("nnkern", label), |bch| {
            bch.iter_custom(|iters| {
                time_gpu(dev, iters, || {
                    let av = DeviceMatRef::new(&a, m, k).unwrap();
                    let bv = DeviceMatRef::new(&bt, n, k).unwrap().t();
                    cuda::gemm(dev, 1.0, av, bv, 0.0, DeviceMatMut::new(&mut cbuf, m, n).unwrap()).unwrap();
                })
            })
        });
        let (pa, pb) = (a.device_ptr(), bt.device_ptr());
        let pc = cbuf.device_ptr();
        g.bench_function(BenchmarkId::new("cublas", label), |bch| {
            bch.iter_custom(|iters| {
                time_gpu(dev, iters, || {
                    let (alpha, beta) = (1.0f32, 0.0f32);
                    // Column-major Cᵀ (n×m) = (Bᵀ stored n×k row-major = k×n col-major)ᵀ · Aᵀ.
                    // SAFETY: as above; types and leading dimensions match the buffers.
                    unsafe {
                        blas::gemm_ex(
                            *blas_h.handle(),
                            blas_sys::cublasOperation_t::CUBLAS_OP_T,
                            blas_sys::cublasOperation_t::CUBLAS_OP_N,
                            n as i32,
                            m as i32,
                            k as i32,
                            (&alpha as *const f32).cast(),
                            pb as *const _,
                            blas_sys::cudaDataType::CUDA_R_16BF,
                            k as i32,
                            pa as *const _,
                            blas_sys::cudaDataType::CUDA_R_16BF,
                            k as i32,
                            (&beta as *const f32).cast(),
                            pc as *mut _,
                            blas_sys::cudaDataType::CUDA_R_32F,
                            n as i32,
                            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                        )
                        .unwrap()
                    }
                })
            })
        });
    }
    g.finish();
}

/// One training step of the trainer's MLP, all on the device: two fused forward
/// GEMMs, softmax-xent forward+backward, three backward GEMMs, bias gradients,
/// ReLU backward, and one Adam launch over the four tensors. The loss is
/// accumulated on the device, so nothing in the step waits for the GPU. Timed
/// with CUDA events around the steps: the GPU timeline including any gaps where
/// it waits for the host to launch.
fn train_step_bench(c: &mut Criterion, dev: &Device) {
    let (batch, inp, hid, out) = (32usize, 784usize, 500usize, 10usize);
    let x = fill(dev, batch * inp, 5);
    let labels = dev
        .upload(&(0..batch as u32).map(|i| i % out as u32).collect::<Vec<_>>())
        .unwrap();
    let (mut w1, mut b1, mut w2, mut b2) = (
        fill(dev, hid * inp, 6),
        fill(dev, hid, 7),
        fill(dev, out * hid, 8),
        fill(dev, out, 9),
    );
    let z = |n| dev.zeros::<f32>(n).unwrap();
    let (mut m_w1, mut v_w1, mut m_b1, mut v_b1) = (z(hid * inp), z(hid * inp), z(hid), z(hid));
    let (mut m_w2, mut v_w2, mut m_b2, mut v_b2) = (z(out * hid), z(out * hid), z(out), z(out));
    let (mut h_pre, mut h, mut logits, mut dlogits, mut dh) = (
        z(batch * hid),
        z(batch * hid),
        z(batch * out),
        z(batch * out),
        z(batch * hid),
    );
    let (mut gw1, mut gb1, mut gw2, mut gb2) = (z(hid * inp), z(hid), z(out * hid), z(out));
    let cfg = AdamConfig::keras();
    let mut step = 0u64;
    let mut loss_acc = cuda::XentAccumulator::new(dev).unwrap();
    c.bench_function("train_step mlp 784-500-10 batch 32", |bch| {
        bch.iter_custom(|iters| {
            time_gpu(dev, iters, || {
                step += 1;
                // forward: h_pre = x·W1ᵀ + b1, h = relu(h_pre); logits = h·W2ᵀ + b2
                let xv = DeviceMatRef::new(&x, batch, inp).unwrap();
                cuda::gemm_bias_activation(
                    dev,
                    1.0,
                    xv,
                    DeviceMatRef::new(&w1, hid, inp).unwrap().t(),
                    0.0,
                    DeviceMatMut::new(&mut h_pre, batch, hid).unwrap(),
                    Some(&b1),
                    Activation::Relu,
                    Some(DeviceMatMut::new(&mut h, batch, hid).unwrap()),
                )
                .unwrap();
                cuda::gemm_bias_activation(
                    dev,
                    1.0,
                    DeviceMatRef::new(&h, batch, hid).unwrap(),
                    DeviceMatRef::new(&w2, out, hid).unwrap().t(),
                    0.0,
                    DeviceMatMut::new(&mut logits, batch, out).unwrap(),
                    Some(&b2),
                    Activation::Identity,
                    None,
                )
                .unwrap();
                // The loss stays on the device: no host wait inside the step.
                cuda::softmax_xent_accumulate(
                    dev,
                    DeviceMatRef::new(&logits, batch, out).unwrap(),
                    DeviceTargets::Labels(&labels),
                    DeviceMatMut::new(&mut dlogits, batch, out).unwrap(),
                    &mut loss_acc,
                )
                .unwrap();
                // backward
                let dl = DeviceMatRef::new(&dlogits, batch, out).unwrap();
                cuda::gemm(
                    dev,
                    1.0,
                    dl.t(),
                    DeviceMatRef::new(&h, batch, hid).unwrap(),
                    0.0,
                    DeviceMatMut::new(&mut gw2, out, hid).unwrap(),
                )
                .unwrap();
                cuda::bias_grad(dev, dl, &mut gb2).unwrap();
                cuda::gemm(
                    dev,
                    1.0,
                    dl,
                    DeviceMatRef::new(&w2, out, hid).unwrap(),
                    0.0,
                    DeviceMatMut::new(&mut dh, batch, hid).unwrap(),
                )
                .unwrap();
                cuda::activation_backward_inplace(dev, Activation::Relu, &h_pre, &mut dh).unwrap();
                let dhv = DeviceMatRef::new(&dh, batch, hid).unwrap();
                cuda::gemm(
                    dev,
                    1.0,
                    dhv.t(),
                    DeviceMatRef::new(&x, batch, inp).unwrap(),
                    0.0,
                    DeviceMatMut::new(&mut gw1, hid, inp).unwrap(),
                )
                .unwrap();
                cuda::bias_grad(dev, dhv, &mut gb1).unwrap();
                let mut params = [
                    cuda::AdamParam {
                        w: &mut w1,
                        grad: &gw1,
                        m: &mut m_w1,
                        v: &mut v_w1,
                    },
                    cuda::AdamParam {
                        w: &mut b1,
                        grad: &gb1,
                        m: &mut m_b1,
                        v: &mut v_b1,
                    },
                    cuda::AdamParam {
                        w: &mut w2,
                        grad: &gw2,
                        m: &mut m_w2,
                        v: &mut v_w2,
                    },
                    cuda::AdamParam {
                        w: &mut b2,
                        grad: &gb2,
                        m: &mut m_b2,
                        v: &mut v_b2,
                    },
                ];
                cuda::adam_step_many(dev, &cfg, step, &mut params).unwrap();
            })
        })
    });
    dev.synchronize().unwrap();
    eprintln!(
        "mean loss over the benchmarked steps: {}",
        loss_acc.read(dev).unwrap() / step as f64
    );
}

/// Memory-bound kernels: bytes moved per second (criterion's "B/s").
fn elementwise_benches(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("elementwise");
    let n = 1usize << 26;
    let x = fill(dev, n, 10);
    let mut y = dev.zeros::<f32>(n).unwrap();
    g.throughput(Throughput::Bytes((8 * n) as u64));
    g.bench_function("gelu forward 64M", |bch| {
        bch.iter_custom(|iters| {
            time_gpu(dev, iters, || {
                cuda::activation_forward(dev, Activation::GeluTanh, &x, &mut y).unwrap()
            })
        })
    });
    // Adam reads w, g, m, v and writes w, m, v: 28 bytes per parameter.
    let (mut w, gr, mut m, mut v) = (
        fill(dev, n, 11),
        fill(dev, n, 12),
        dev.zeros::<f32>(n).unwrap(),
        dev.zeros::<f32>(n).unwrap(),
    );
    g.throughput(Throughput::Bytes((28 * n) as u64));
    let cfg = AdamConfig::adamw();
    let mut step = 0;
    g.bench_function("adamw 64M params", |bch| {
        bch.iter_custom(|iters| {
            time_gpu(dev, iters, || {
                step += 1;
                cuda::adam_step(dev, &cfg, step, &mut w, &gr, &mut m, &mut v).unwrap()
            })
        })
    });
    let (rows, cols) = (65536usize, 1000usize);
    let logits = fill(dev, rows * cols, 13);
    let labels = dev
        .upload(&(0..rows as u32).map(|i| i % cols as u32).collect::<Vec<_>>())
        .unwrap();
    let mut d = dev.zeros::<f32>(rows * cols).unwrap();
    g.throughput(Throughput::Bytes((8 * rows * cols) as u64));
    g.bench_function("softmax_xent 65536x1000", |bch| {
        bch.iter_custom(|iters| {
            time_gpu(dev, iters, || {
                cuda::softmax_xent(
                    dev,
                    DeviceMatRef::new(&logits, rows, cols).unwrap(),
                    DeviceTargets::Labels(&labels),
                    DeviceMatMut::new(&mut d, rows, cols).unwrap(),
                )
                .unwrap();
            })
        })
    });
    g.finish();
}

fn main() {
    let dev = match Device::new(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cuda benchmarks skipped: {e}");
            return;
        }
    };
    let blas_h = match std::panic::catch_unwind(|| CudaBlas::new(dev.stream().expect("a driver device").clone())) {
        Ok(Ok(b)) => b,
        other => {
            eprintln!(
                "cuBLAS unavailable ({:?}); cuda benchmarks skipped",
                other.map(|r| r.err()).ok().flatten()
            );
            return;
        }
    };
    eprintln!(
        "device: {} (driver {})",
        dev.name().unwrap_or_default(),
        dev.driver_version()
    );
    let mut c = Criterion::default().configure_from_args();
    gemm_benches(&mut c, &dev, &blas_h);
    elementwise_benches(&mut c, &dev);
    train_step_bench(&mut c, &dev);
    c.final_summary();
}
