//! GPU benchmarks: our PTX GEMMs beside cuBLAS in the same run, TFLOP/s from CUDA
//! events, and one MLP training step (784→500 ReLU→10, batch 32, Adam) on the device.
//!
//! The bf16 GEMM runs what the dispatch picks (on an sm_90 GPU the sm_90a kernel,
//! `nk_gemm_sm90_bf16`; the benchmark name says which kernel ran) and the mma.sync
//! kernel beside it; before criterion starts, a table of the large squares
//! (4096³, 8192³) prints TFLOP/s of each and its percentage of cuBLAS, from CUDA
//! events around 20 runs after 5 warm-up runs (lines starting `bf16 gemm`).
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

fn bf16_values(dev: &Device, n: usize, s: u32) -> DeviceBuffer<bf16> {
    let v: Vec<bf16> = (0..n)
        .map(|i| {
            bf16::from_f32(
                (((i as u32).wrapping_mul(2654435761).wrapping_add(s) >> 8) as f32 / (1u32 << 24) as f32) - 0.5,
            )
        })
        .collect();
    dev.upload(&v).unwrap()
}

/// Row-major C (m×n, f32) = A (m×k, bf16, row-major) · B, B stored as Bᵀ (n×k,
/// row-major), by cuBLAS (gemm_ex, f32 compute).
fn cublas_bf16(blas_h: &CudaBlas, m: usize, n: usize, k: usize, pa: u64, pbt: u64, pc: u64) {
    let (alpha, beta) = (1.0f32, 0.0f32);
    // Column-major Cᵀ (n×m) = (Bᵀ stored n×k row-major = k×n col-major)ᵀ · Aᵀ.
    // SAFETY: the pointers are live device buffers of the sizes given (the callers
    // allocate m·k, n·k and m·n elements); types and leading dimensions match them;
    // the handle runs on the device's stream.
    unsafe {
        blas::gemm_ex(
            *blas_h.handle(),
            blas_sys::cublasOperation_t::CUBLAS_OP_T,
            blas_sys::cublasOperation_t::CUBLAS_OP_N,
            n as i32,
            m as i32,
            k as i32,
            (&alpha as *const f32).cast(),
            pbt as *const _,
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
}

/// Our bf16 GEMM (A row-major, B stored as Bᵀ) with the sm_90a kernels allowed or
/// not.
#[allow(clippy::too_many_arguments)]
fn ours_bf16(
    dev: &Device,
    sm90: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &DeviceBuffer<bf16>,
    bt: &DeviceBuffer<bf16>,
    c: &mut DeviceBuffer<f32>,
) {
    dev.allow_sm90_kernels(sm90);
    let av = DeviceMatRef::new(a, m, k).unwrap();
    let bv = DeviceMatRef::new(bt, n, k).unwrap().t();
    cuda::gemm(dev, 1.0, av, bv, 0.0, DeviceMatMut::new(c, m, n).unwrap()).unwrap();
    dev.allow_sm90_kernels(true);
}

/// The kernel our bf16 GEMM runs with the sm_90a kernels allowed or not.
fn kernel_ran(dev: &Device, sm90: bool, m: usize, n: usize, k: usize, bufs: &mut Bf16Bufs) -> &'static str {
    dev.record_launches(true);
    ours_bf16(dev, sm90, m, n, k, &bufs.0, &bufs.1, &mut bufs.2);
    let l = dev.take_launches();
    dev.record_launches(false);
    l.last().map_or("none", |r| r.kernel)
}

type Bf16Bufs = (DeviceBuffer<bf16>, DeviceBuffer<bf16>, DeviceBuffer<f32>);

/// TFLOP/s of 20 runs (after 5 to warm up) timed with CUDA events.
fn tflops(dev: &Device, m: usize, n: usize, k: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let t = time_gpu(dev, 20, f);
    2.0 * (m * n * k) as f64 * 20.0 / t.as_secs_f64() / 1e12
}

/// The large bf16 squares: the dispatched kernel (sm_90a on an sm_90 GPU), the
/// mma.sync kernel and cuBLAS in one run, as TFLOP/s and % of cuBLAS.
fn bf16_square_table(dev: &Device, blas_h: &CudaBlas) {
    let gpu = dev.name().unwrap_or_default();
    for &(m, n, k, label) in SHAPES.iter().filter(|s| s.0 == s.1 && s.1 == s.2) {
        let mut bufs: Bf16Bufs = (
            bf16_values(dev, m * k, 3),
            bf16_values(dev, n * k, 4),
            dev.zeros::<f32>(m * n).unwrap(),
        );
        let (pa, pb, pc) = (bufs.0.device_ptr(), bufs.1.device_ptr(), bufs.2.device_ptr());
        let blas = tflops(dev, m, n, k, || cublas_bf16(blas_h, m, n, k, pa, pb, pc));
        let mut seen = Vec::new();
        for sm90 in [true, false] {
            let kernel = kernel_ran(dev, sm90, m, n, k, &mut bufs);
            if seen.contains(&kernel) {
                continue;
            }
            seen.push(kernel);
            let (a, bt, c) = (&bufs.0, &bufs.1, &mut bufs.2);
            let ours = tflops(dev, m, n, k, || ours_bf16(dev, sm90, m, n, k, a, bt, c));
            eprintln!(
                "bf16 gemm {label} on {gpu}: {kernel} {ours:.1} TFLOP/s = {:.1}% of cuBLAS {blas:.1} TFLOP/s",
                100.0 * ours / blas
            );
        }
    }
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
        // A row-major (m×k) and B stored as n×k (the layout the kernels read directly).
        let mut bufs: Bf16Bufs = (
            bf16_values(dev, m * k, 3),
            bf16_values(dev, n * k, 4),
            dev.zeros::<f32>(m * n).unwrap(),
        );
        let mut seen = Vec::new();
        for sm90 in [true, false] {
            // Off sm_90 both runs are the mma.sync kernel: time it once.
            let kernel = kernel_ran(dev, sm90, m, n, k, &mut bufs);
            if seen.contains(&kernel) {
                continue;
            }
            seen.push(kernel);
            let (a, bt, cb) = (&bufs.0, &bufs.1, &mut bufs.2);
            g.bench_function(BenchmarkId::new(format!("nnkern {kernel}"), label), |bch| {
                bch.iter_custom(|iters| time_gpu(dev, iters, || ours_bf16(dev, sm90, m, n, k, a, bt, cb)))
            });
        }
        let (pa, pb, pc) = (bufs.0.device_ptr(), bufs.1.device_ptr(), bufs.2.device_ptr());
        g.bench_function(BenchmarkId::new("cublas", label), |bch| {
            bch.iter_custom(|iters| time_gpu(dev, iters, || cublas_bf16(blas_h, m, n, k, pa, pb, pc)))
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
    bf16_square_table(&dev, &blas_h);
    let mut c = Criterion::default().configure_from_args();
    gemm_benches(&mut c, &dev, &blas_h);
    elementwise_benches(&mut c, &dev);
    train_step_bench(&mut c, &dev);
    c.final_summary();
}
