//! The executor on one 256 -> 256, 56x56, 3x3 layer (padding 1), f32: dense vs the DAC pair
//! at r = 1, 2, 4, fast path (single thread and the rayon pool) and, for scale, nothing else:
//! the reference loop nest is too slow to bench here.
//!
//! `cargo bench --bench exec`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dac::exec::{fast, Tensor4};
use dac::{decompose_with, svd::GramSvd, Conv2dWeights, Options, Padding};
use std::hint::black_box;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let layer = Conv2dWeights::builder(values(256 * 256 * 9, 1), [256, 256, 3, 3])
        .padding(Padding::uniform(1))
        .bias(values(256, 2))
        .build()
        .expect("layer");
    let x = Tensor4::new(values(256 * 56 * 56, 3), [1, 256, 56, 56]).expect("input");
    let mut scratch = fast::Scratch::new();
    let mut g = c.benchmark_group("conv_256x256_56x56");
    g.sample_size(10);
    for (label, par) in [("1thread", fast::Parallelism::Sequential), ("rayon", fast::Parallelism::Rayon)] {
        g.bench_function(BenchmarkId::new("dense", label), |b| {
            b.iter(|| black_box(fast::conv2d(&x, &layer, par, &mut scratch).expect("conv")))
        });
        for r in [1, 2, 4] {
            let d = decompose_with(&layer, &Options::new(r), &GramSvd::default()).expect("decompose");
            g.bench_function(BenchmarkId::new(format!("pair_r{r}"), label), |b| {
                b.iter(|| black_box(fast::pair(&x, &d.depthwise, &d.pointwise, par, &mut scratch).expect("pair")))
            });
        }
    }
    g.finish();
    // Batch throughput, as in evaluating a small network on many images.
    let small = Conv2dWeights::builder(values(32 * 16 * 9, 4), [32, 16, 3, 3])
        .padding(Padding::uniform(1))
        .build()
        .expect("layer");
    let xb = Tensor4::new(values(256 * 16 * 28 * 28, 5), [256, 16, 28, 28]).expect("input");
    let mut g = c.benchmark_group("conv_16x32_28x28_batch256");
    g.sample_size(10);
    for (label, par) in [("1thread", fast::Parallelism::Sequential), ("rayon", fast::Parallelism::Rayon)] {
        g.bench_function(label, |b| b.iter(|| black_box(fast::conv2d(&xb, &small, par, &mut scratch).expect("conv"))));
    }
    g.finish();
    // Deep layers on small maps, 100 images: one GEMM across the batch.
    for hw in [4usize, 2] {
        let deep = Conv2dWeights::builder(values(128 * 128 * 9, 6), [128, 128, 3, 3])
            .padding(Padding::uniform(1))
            .build()
            .expect("layer");
        let xs = Tensor4::new(values(100 * 128 * hw * hw, 7), [100, 128, hw, hw]).expect("input");
        let d = decompose_with(&deep, &Options::new(3), &GramSvd::default()).expect("decompose");
        let mut g = c.benchmark_group(format!("conv_128x128_{hw}x{hw}_batch100"));
        g.sample_size(10);
        let seq = fast::Parallelism::Sequential;
        g.bench_function("dense_1thread", |b| {
            b.iter(|| black_box(fast::conv2d(&xs, &deep, seq, &mut scratch).expect("conv")))
        });
        g.bench_function("pair_r3_1thread", |b| {
            b.iter(|| black_box(fast::pair(&xs, &d.depthwise, &d.pointwise, seq, &mut scratch).expect("pair")))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
