//! nnkern's full-tile implementations (`asm!` and intrinsics) on each ISA,
//! timed alternately, repeat by repeat, in one process: what
//! `scripts/gemm_peers.py` cannot separate (it sees one build's default).
//!
//! ```sh
//! cargo bench --bench gemm_impls                       # every ISA × both implementations
//! BENCH_ISAS=avx2 BENCH_REPEATS=21 cargo bench --bench gemm_impls
//! ```
//! One thread; the clock is the calling thread's CPU time (Linux), so other
//! processes on a shared machine do not inflate the figures. Prints GFLOP/s
//! medians and the asm ÷ intrinsics ratio per ISA: first of the microkernel
//! alone (full tiles on L1-resident packed panels, as a share of the
//! measured FMA peak), then of whole products.

use nnkern::ops::gemm::blocking_for;
use nnkern::testing::{force_kernel_impl, run_microkernel, KernelImpl};
use nnkern::{gemm_with_threads, with_isa, Isa, MatMut, MatRef};
use std::hint::black_box;
use std::time::Duration;

/// (name, M, K, N, A transposed view, B transposed view).
const SHAPES: &[(&str, usize, usize, usize, bool, bool)] = &[
    ("256^2", 256, 256, 256, false, false),
    ("512^2", 512, 512, 512, false, false),
    ("1024^2", 1024, 1024, 1024, false, false),
    ("2048^2", 2048, 2048, 2048, false, false),
    ("(32,784,500)", 32, 784, 500, false, false),
    ("(32,500,784) B=T", 32, 500, 784, false, true),
    ("(784,32,500) A=T", 784, 32, 500, true, false),
    ("(8000,784,500)", 8000, 784, 500, false, false),
];

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU time of the calling thread (Linux `CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { clock_gettime(3, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Medians, in GFLOP/s, of `repeats` alternating samples of `f(variant)`,
/// which returns seconds per FLOP-counted unit given `flops`.
fn alternate<V: Copy>(variants: &[V], repeats: usize, flops: f64, mut run: impl FnMut(V) -> f64) -> Vec<f64> {
    let mut times = vec![Vec::new(); variants.len()];
    for &v in variants {
        run(v);
    }
    for r in 0..repeats {
        // Rotate the order so no variant always runs first.
        for i in 0..variants.len() {
            let j = (i + r) % variants.len();
            times[j].push(run(variants[j]));
        }
    }
    times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            flops / t[t.len() / 2] / 1e9
        })
        .collect()
}

/// The full register tile alone, k = 64, 256 and the ISA's KC.
fn microkernels(variants: &[(Isa, KernelImpl)], repeats: usize) {
    println!("microkernel alone (full tiles, L1-resident panels), GFLOP/s and % of the FMA peak:");
    println!();
    println!("| ISA | tile | k | asm | intrinsics | asm ÷ intrinsics | FMA peak |");
    println!("|---|---|---|---|---|---|---|");
    for pair in variants.chunks(2) {
        let isa = pair[0].0;
        let b = blocking_for(isa);
        let peak = nnkern::cpu::fma_peak_of(isa).unwrap();
        for k in [64, 256, b.kc] {
            let flops = 2.0 * (b.mr * b.nr * k) as f64;
            let calls = ((0.02 * 100e9 / flops) as usize).max(1);
            let g = alternate(pair, repeats, flops, |(isa, imp)| {
                let t0 = thread_cpu();
                run_microkernel(isa, imp, k, calls).unwrap();
                (thread_cpu() - t0).as_secs_f64() / calls as f64
            });
            println!(
                "| {isa} | {}×{} | {k} | {:.1} ({:.0}%) | {:.1} ({:.0}%) | {:.3} | {peak:.1} |",
                b.mr,
                b.nr,
                g[0],
                100.0 * g[0] / peak,
                g[1],
                100.0 * g[1] / peak,
                g[0] / g[1]
            );
        }
    }
    println!();
}

fn main() {
    let isas: Vec<Isa> = match std::env::var("BENCH_ISAS") {
        Ok(list) if !list.is_empty() => list.split(',').map(|s| s.parse().expect("BENCH_ISAS")).collect(),
        _ => Isa::supported().into_iter().filter(|i| *i != Isa::Scalar).collect(),
    };
    let isas: Vec<Isa> = isas.into_iter().filter(|i| i.is_supported()).collect();
    let repeats = env_usize("BENCH_REPEATS", 11).max(1);
    let variants: Vec<(Isa, KernelImpl)> = isas
        .iter()
        .flat_map(|&i| [(i, KernelImpl::Asm), (i, KernelImpl::Intrinsics)])
        .collect();
    microkernels(&variants, repeats);
    let mut head = format!("| {:<18} |", "shape (M,K,N)");
    for (isa, imp) in &variants {
        head.push_str(&format!(" {isa} {imp:?} |"));
    }
    for isa in &isas {
        head.push_str(&format!(" {isa} asm÷intr |"));
    }
    println!("{head}");
    println!("{}", head.replace(|c: char| c != '|', "-"));
    for &(name, m, k, n, a_t, b_t) in SHAPES {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let mut out = vec![0.0f32; m * n];
        let av = if a_t {
            MatRef::new(&a, k, m).unwrap().t()
        } else {
            MatRef::new(&a, m, k).unwrap()
        };
        let bv = if b_t {
            MatRef::new(&b, n, k).unwrap().t()
        } else {
            MatRef::new(&b, k, n).unwrap()
        };
        let flops = 2.0 * (m * n * k) as f64;
        let mut run = |(isa, imp): (Isa, KernelImpl), reps: usize| -> f64 {
            force_kernel_impl(Some(imp));
            let t0 = thread_cpu();
            with_isa(isa, || {
                for _ in 0..reps {
                    gemm_with_threads(
                        1,
                        1.0,
                        black_box(av),
                        black_box(bv),
                        0.0,
                        MatMut::new(&mut out, m, n).unwrap(),
                    )
                    .unwrap();
                }
            })
            .unwrap();
            let dt = (thread_cpu() - t0).as_secs_f64() / reps as f64;
            force_kernel_impl(None);
            dt
        };
        // Calls per sample: about 20 ms of CPU at 100 GFLOP/s.
        let reps = ((0.02 * 100e9 / flops) as usize).max(1);
        let gflops = alternate(&variants, repeats, flops, |v| run(v, reps));
        let mut line = format!("| {name:<18} |");
        for g in &gflops {
            line.push_str(&format!(" {g:.1} |"));
        }
        for i in 0..isas.len() {
            line.push_str(&format!(" {:.3} |", gflops[2 * i] / gflops[2 * i + 1]));
        }
        println!("{line}");
    }
}
