//! One training step of the default model (784 → 500 ReLU → 10, Adam) at
//! batch 32 and 256: batch gather, forward, fused softmax-cross-entropy,
//! backward, and the Adam update over all 397,510 parameters.
//!
//! `cpu-1t` and `cpu-2t` run the library's dispatched kernels on one and two
//! threads (`nnkern::with_threads`), inside a `nnkern::parallel_region` as the
//! trainer's epochs are, `cpu-reference` the naive reference, side
//! by side in one run. Throughput is in training FLOP
//! (6 · batch · parameters: forward 2, backward 4).
//!
//! `cargo bench --bench train_step`; the reference is slow, so its group
//! takes few samples.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nnkern::{Activation, AdamConfig};
use nnkern_train::{Backend, Cpu, Dataset, Mlp, Optimizer, TrainConfig};
use std::time::Duration;

fn step_bench(c: &mut Criterion) {
    let data = Dataset::bundled().unwrap();
    let dims = TrainConfig::default().dims(data.train.features, data.classes);
    let params = {
        use rand::SeedableRng;
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(0);
        nnkern_train::mlp::glorot_uniform(&dims, &mut rng).unwrap()
    };
    let n_params = params.len() as u64;
    let mut g = c.benchmark_group("train_step");
    g.warm_up_time(Duration::from_millis(500));
    for batch in [32usize, 256] {
        g.throughput(Throughput::Elements(6 * batch as u64 * n_params));
        for (name, threads, mut be) in [
            ("cpu-1t", 1, Cpu::new()),
            ("cpu-2t", 2, Cpu::new()),
            ("cpu-reference", 1, Cpu::reference()),
        ] {
            if name == "cpu-reference" {
                g.sample_size(10).measurement_time(Duration::from_secs(3));
            } else {
                g.sample_size(50).measurement_time(Duration::from_secs(3));
            }
            let mut model = Mlp::new(
                &mut be,
                &dims,
                Activation::Relu,
                Optimizer::Adam(AdamConfig::keras()),
                &params,
                batch,
                batch,
            )
            .unwrap();
            let rows: Vec<u32> = (0..batch as u32).map(|i| i * 7 % 8000).collect();
            let labels: Vec<u32> = rows.iter().map(|&r| data.train.labels[r as usize]).collect();
            let images = be.upload_bytes(data.train.images.clone()).unwrap();
            g.bench_function(BenchmarkId::new(name, batch), |b| {
                // As the trainer runs an epoch: inside a parallel region.
                nnkern::with_threads(threads, || {
                    nnkern::parallel_region(|| {
                        b.iter(|| {
                            model.load_batch(&mut be, &images, &rows, &labels).unwrap();
                            model.train_step(&mut be, batch, None).unwrap()
                        })
                    })
                })
                .unwrap()
            });
        }
    }
    g.finish();
}

criterion_group!(benches, step_bench);
criterion_main!(benches);
