//! Decomposing the 13 VGG16 convolutions (3x3, f32, seeded weights) at r = 3 and full rank,
//! with the Gram + Jacobi backend (streaming `factor_layer`, the whole `decompose_with`, and
//! `Factorization::compute` + `truncate_into` reusable buffers) and the nalgebra reference
//! backend, against copying the same bytes.
//!
//! `cargo bench --bench decompose`; `RAYON_NUM_THREADS=1 cargo bench --bench decompose` for
//! single-thread figures.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dac::svd::{GramSvd, NalgebraSvd, SvdBackend};
use dac::{decompose_with, Conv2dWeights, Factorization, Options};
use std::hint::black_box;

const VGG16: [(usize, usize); 13] = [
    (3, 64),
    (64, 64),
    (64, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
];

fn layers() -> Vec<Conv2dWeights<f32>> {
    let mut state = 0x5EED_u64;
    VGG16
        .iter()
        .map(|&(c, n)| {
            let w = (0..n * c * 9)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect();
            Conv2dWeights::new(w, [n, c, 3, 3]).expect("valid layer")
        })
        .collect()
}

fn decompose_all<B: SvdBackend<f32>>(layers: &[Conv2dWeights<f32>], rank: Option<usize>, backend: &B) {
    for l in layers {
        let r = rank.unwrap_or(l.shape().max_rank()).min(l.shape().max_rank());
        black_box(decompose_with(l, &Options::new(r), backend).expect("decompose"));
    }
}

fn bench(c: &mut Criterion) {
    let layers = layers();
    let mut g = c.benchmark_group("vgg16_convs");
    g.sample_size(10);
    let mut dst: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; l.weight().len()]).collect();
    g.bench_function("memcpy_existing", |b| {
        b.iter(|| {
            for (d, l) in dst.iter_mut().zip(&layers) {
                d.copy_from_slice(l.weight());
            }
            black_box(&dst);
        })
    });
    g.bench_function("gram_factor_layer", |b| {
        b.iter(|| {
            for l in &layers {
                let s = l.shape();
                let mut sv = vec![0.0f32; s.in_channels * s.max_rank()];
                let mut vt = vec![0.0f32; s.in_channels * s.max_rank() * s.taps()];
                GramSvd::default().factor_layer(l, &mut sv, &mut vt).expect("factor");
                black_box((sv, vt));
            }
        })
    });
    for (label, rank) in [("r3", Some(3)), ("full", None)] {
        g.bench_with_input(BenchmarkId::new("decompose_gram", label), &rank, |b, &r| {
            b.iter(|| decompose_all(&layers, r, &GramSvd::default()))
        });
        // One reusable pair buffer per layer (`PairBuffers`, named by inference).
        let mut buffers: Vec<_> = layers.iter().map(|_| Default::default()).collect();
        g.bench_with_input(BenchmarkId::new("decompose_gram_into", label), &rank, |b, &r| {
            b.iter(|| {
                for (l, buf) in layers.iter().zip(buffers.iter_mut()) {
                    let max = l.shape().max_rank();
                    let f = Factorization::compute(l, &GramSvd::default()).expect("factorisation");
                    black_box(f.truncate_into(&Options::new(r.unwrap_or(max).min(max)), buf).expect("truncate"));
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("decompose_nalgebra", label), &rank, |b, &r| {
            b.iter(|| decompose_all(&layers, r, &NalgebraSvd::default()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
