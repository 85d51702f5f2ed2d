//! GEMM throughput: nnkern beside `matrixmultiply` and `gemm` (with its
//! AVX-512 `x86-v4` kernels), in one criterion group per shape, on the
//! shapes of the project's anchors: squares 64–2048, the batch-32 MLP's
//! forward and backward products with the transposed views backprop
//! passes, and the full-batch product. Throughput is in elements/s where
//! one element is one FLOP (2·M·N·K per product), so `Gelem/s` = GFLOP/s.
//!
//! Threads: `BENCH_THREADS` (default 1). `matrixmultiply` reads its thread
//! count once per process, so 1 and 2 threads are separate runs:
//! ```sh
//! BENCH_THREADS=1 cargo bench --bench gemm
//! BENCH_THREADS=2 cargo bench --bench gemm
//! ```
//! `BENCH_FILTER_HALF=0` skips the bf16/f16 group.
//!
//! Our kernels: `BENCH_ISA=avx2` (or `avx512`, `scalar`, `neon`) runs ours
//! with that ISA forced (the peers keep their own dispatch), so the AVX2 and
//! AVX-512 kernels are both measured on an AVX-512 machine;
//! `BENCH_IMPLS=asm,intrinsics` times both implementations of the full
//! tiles side by side (ids `nnkern-asm`, `nnkern-intrinsics`; default: the
//! default implementation only, id `nnkern`); `BENCH_PEERS=0` skips the
//! peers. The forced implementation applies to tiles on the calling thread.
//!
//! Clock: with one thread, the calling thread's CPU time (every library runs
//! on the calling thread then), so other processes on a shared machine do
//! not inflate the figures; `BENCH_CLOCK=wall` switches to wall time, which
//! is always used with more threads.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use nnkern::testing::{force_kernel_impl, KernelImpl};
use nnkern::{bf16, f16, gemm_with_threads, with_isa, GemmInput, Isa, MatMut, MatRef};
use std::hint::black_box;
use std::time::Duration;

/// (name, M, K, N, A transposed view, B transposed view), as in the anchors.
const SHAPES: &[(&str, usize, usize, usize, bool, bool)] = &[
    ("64^2", 64, 64, 64, false, false),
    ("128^2", 128, 128, 128, false, false),
    ("256^2", 256, 256, 256, false, false),
    ("512^2", 512, 512, 512, false, false),
    ("1024^2", 1024, 1024, 1024, false, false),
    ("2048^2", 2048, 2048, 2048, false, false),
    ("(32,784,500)", 32, 784, 500, false, false),
    ("(32,784,500) B=T", 32, 784, 500, false, true),
    ("(32,500,10)", 32, 500, 10, false, false),
    ("(32,500,10) B=T", 32, 500, 10, false, true),
    ("(784,32,500)", 784, 32, 500, false, false),
    ("(784,32,500) A=T", 784, 32, 500, true, false),
    ("(500,32,10) A=T", 500, 32, 10, true, false),
    ("(32,10,500)", 32, 10, 500, false, false),
    ("(32,10,500) B=T", 32, 10, 500, false, true),
    ("(32,500,784)", 32, 500, 784, false, false),
    ("(32,500,784) B=T", 32, 500, 784, false, true),
    ("(8000,784,500)", 8000, 784, 500, false, false),
];

fn threads() -> usize {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// The ISA ours runs with (`BENCH_ISA`, else the detected one).
fn isa() -> Isa {
    match std::env::var("BENCH_ISA") {
        Ok(name) if !name.is_empty() => {
            let isa: Isa = name.parse().unwrap_or_else(|e| panic!("BENCH_ISA: {e}"));
            assert!(isa.is_supported(), "BENCH_ISA={isa} is not supported by this CPU");
            isa
        }
        _ => Isa::detected(),
    }
}

/// Our implementations to time: `(id, forced implementation)`.
fn impls() -> Vec<(&'static str, Option<KernelImpl>)> {
    match std::env::var("BENCH_IMPLS") {
        Ok(list) if !list.is_empty() => list
            .split(',')
            .map(|s| match s.trim() {
                "asm" => ("nnkern-asm", Some(KernelImpl::Asm)),
                "intrinsics" => ("nnkern-intrinsics", Some(KernelImpl::Intrinsics)),
                other => panic!("BENCH_IMPLS: unknown implementation {other:?} (asm, intrinsics)"),
            })
            .collect(),
        _ => vec![("nnkern", None)],
    }
}

fn peers() -> bool {
    !std::env::var("BENCH_PEERS").is_ok_and(|v| v == "0")
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect()
}

/// Operand geometry: element (i, j) at `rs·i + cs·j` of a row-major store.
fn strides(rows: usize, cols: usize, transposed: bool) -> (usize, usize) {
    if transposed {
        (1, rows)
    } else {
        (cols, 1)
    }
}

fn bench_f32<M: Measurement>(c: &mut Criterion<M>) {
    let t = threads();
    for &(name, m, k, n, a_t, b_t) in SHAPES {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let mut out = vec![0.0f32; m * n];
        let (ars, acs) = strides(m, k, a_t);
        let (brs, bcs) = strides(k, n, b_t);
        let mut g = c.benchmark_group(format!("gemm {name}"));
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let big = m * n * k >= 256 * 256 * 256;
        g.sample_size(if big { 10 } else { 30 });
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(if big { 2 } else { 1 }));
        let av = MatRef::from_strides(&a, m, k, ars, acs).unwrap();
        let bv = MatRef::from_strides(&b, k, n, brs, bcs).unwrap();
        for (id, imp) in impls() {
            g.bench_function(BenchmarkId::new(id, format!("{t}T {}", isa())), |bench| {
                force_kernel_impl(imp);
                with_isa(isa(), || {
                    bench.iter(|| {
                        gemm_with_threads(
                            t,
                            1.0,
                            black_box(av),
                            black_box(bv),
                            0.0,
                            MatMut::new(&mut out, m, n).unwrap(),
                        )
                        .unwrap()
                    })
                })
                .unwrap();
                force_kernel_impl(None);
            });
        }
        if !peers() {
            g.finish();
            continue;
        }
        g.bench_function(BenchmarkId::new("matrixmultiply", format!("{t}T")), |bench| {
            bench.iter(|| {
                // SAFETY: the pointers and strides describe the buffers above.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        black_box(a.as_ptr()),
                        ars as isize,
                        acs as isize,
                        b.as_ptr(),
                        brs as isize,
                        bcs as isize,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
        let par = if t == 1 {
            gemm_peer::Parallelism::None
        } else {
            gemm_peer::Parallelism::Rayon(t)
        };
        g.bench_function(BenchmarkId::new("gemm-x86-v4", format!("{t}T")), |bench| {
            bench.iter(|| {
                // SAFETY: the pointers and strides describe the buffers above
                // (this crate names column stride first, and computes
                // dst = alpha·dst + beta·lhs·rhs).
                unsafe {
                    gemm_peer::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        black_box(a.as_ptr()),
                        acs as isize,
                        ars as isize,
                        b.as_ptr(),
                        bcs as isize,
                        brs as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            })
        });
        g.finish();
    }
}

fn bench_half_one<T: GemmInput, M: Measurement>(c: &mut Criterion<M>, from: fn(f32) -> T) {
    let t = threads();
    for s in [512usize, 1024] {
        let a32 = data(s * s, 1);
        let b32 = data(s * s, 2);
        let a: Vec<T> = a32.iter().map(|&x| from(x)).collect();
        let b: Vec<T> = b32.iter().map(|&x| from(x)).collect();
        let mut out = vec![0.0f32; s * s];
        let mut g = c.benchmark_group(format!("gemm {} {s}^2", T::NAME));
        g.throughput(Throughput::Elements((2 * s * s * s) as u64));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(2));
        g.bench_function(BenchmarkId::new("nnkern", format!("{t}T {}", isa())), |bench| {
            with_isa(isa(), || {
                bench.iter(|| {
                    gemm_with_threads(
                        t,
                        1.0,
                        MatRef::new(black_box(&a), s, s).unwrap(),
                        MatRef::new(&b, s, s).unwrap(),
                        0.0,
                        MatMut::new(&mut out, s, s).unwrap(),
                    )
                    .unwrap()
                })
            })
            .unwrap();
        });
        g.finish();
    }
}

fn bench_half<M: Measurement>(c: &mut Criterion<M>) {
    if std::env::var("BENCH_FILTER_HALF").is_ok_and(|v| v == "0") {
        return;
    }
    bench_half_one(c, bf16::from_f32);
    bench_half_one(c, f16::from_f32);
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU time consumed by the calling thread (Linux `CLOCK_THREAD_CPUTIME_ID`).
struct ThreadCpuTime;

impl ThreadCpuTime {
    fn now() -> Duration {
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        Duration::new(ts.sec as u64, ts.nsec as u32)
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        Self::now()
    }
    fn end(&self, start: Duration) -> Duration {
        Self::now() - start
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as for wall time.
        WallTime.formatter()
    }
}

fn all<M: Measurement>(mut c: Criterion<M>) {
    bench_f32(&mut c);
    bench_half(&mut c);
    c.final_summary();
}

fn main() {
    // matrixmultiply reads this once, at its first call.
    std::env::set_var("MATMUL_NUM_THREADS", threads().to_string());
    let wall = threads() > 1 || !cfg!(target_os = "linux") || std::env::var("BENCH_CLOCK").is_ok_and(|v| v == "wall");
    if wall {
        all(Criterion::default().configure_from_args());
    } else {
        all(Criterion::default()
            .with_measurement(ThreadCpuTime)
            .configure_from_args());
    }
}
