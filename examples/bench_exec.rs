//! Executor timings on one 256 -> 256, 56x56, 3x3 layer (padding 1, bias), f32, batch 1,
//! single thread: dense and the DAC pair at r = 1, 2, 4; then a batch of 100 small maps (4x4
//! and 2x2, 128 channels) as deep in the paper example's network. Prints one JSON object of
//! medians in milliseconds. Used by `bench/compare.py`.
//!
//! `cargo run --release --example bench_exec -- [--reps N]`

use dac::exec::{fast, Tensor4};
use dac::{decompose_with, svd::GramSvd, Conv2dWeights, Options, Padding};
use std::time::Instant;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(21usize)
        .max(1);
    let layer = Conv2dWeights::builder(values(256 * 256 * 9, 1), [256, 256, 3, 3])
        .padding(Padding::uniform(1))
        .bias(values(256, 2))
        .build()
        .expect("layer");
    let x = Tensor4::new(values(256 * 56 * 56, 3), [1, 256, 56, 56]).expect("input");
    let mut scratch = fast::Scratch::new();
    let seq = fast::Parallelism::Sequential;
    let mut out = vec![format!(
        "\"dense_ms\": {:.4}",
        median_ms(reps, || {
            std::hint::black_box(fast::conv2d(&x, &layer, seq, &mut scratch).expect("conv"));
        })
    )];
    for r in [1, 2, 4] {
        let d = decompose_with(&layer, &Options::new(r), &GramSvd::default()).expect("decompose");
        let t = median_ms(reps, || {
            std::hint::black_box(fast::pair(&x, &d.depthwise, &d.pointwise, seq, &mut scratch).expect("pair"));
        });
        out.push(format!("\"pair_r{r}_ms\": {t:.4}"));
    }
    // Deep layers of a small CIFAR-style network, 100 images per call (the paper example's
    // batches): 128 -> 128 channels on 4x4 and 2x2 maps, dense and the pair at r = 3.
    for hw in [4, 2] {
        let small = Conv2dWeights::builder(values(128 * 128 * 9, 4), [128, 128, 3, 3])
            .padding(Padding::uniform(1))
            .bias(values(128, 5))
            .build()
            .expect("layer");
        let xb = Tensor4::new(values(100 * 128 * hw * hw, 6), [100, 128, hw, hw]).expect("input");
        let t = median_ms(reps, || {
            std::hint::black_box(fast::conv2d(&xb, &small, seq, &mut scratch).expect("conv"));
        });
        out.push(format!("\"batch100_128x128_{hw}x{hw}_dense_ms\": {t:.4}"));
        let d = decompose_with(&small, &Options::new(3), &GramSvd::default()).expect("decompose");
        let t = median_ms(reps, || {
            std::hint::black_box(fast::pair(&xb, &d.depthwise, &d.pointwise, seq, &mut scratch).expect("pair"));
        });
        out.push(format!("\"batch100_128x128_{hw}x{hw}_pair_r3_ms\": {t:.4}"));
    }
    println!("{{{}}}", out.join(", "));
}
