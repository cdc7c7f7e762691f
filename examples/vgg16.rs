//! Decomposes the 13 convolutions of a VGG16-shaped stack (seeded random weights, 224x224
//! input) at one rank and prints the report table.
//!
//! ```text
//! cargo run --release --example vgg16 [-- RANK]
//! ```
//! Random weights have a flat spectrum, so errors here are far higher than on trained weights:
//! the table shows the mechanics (ranks, costs, timings), not achievable accuracy.

use dac::{decompose_with, svd::NalgebraSvd, Conv2dWeights, Options, Padding};
use std::time::Instant;

/// `(in, out, input size)` of VGG16's convolutions at a 224x224 input.
const VGG16: [(usize, usize, usize); 13] = [
    (3, 64, 224),
    (64, 64, 224),
    (64, 128, 112),
    (128, 128, 112),
    (128, 256, 56),
    (256, 256, 56),
    (256, 256, 56),
    (256, 512, 28),
    (512, 512, 28),
    (512, 512, 28),
    (512, 512, 14),
    (512, 512, 14),
    (512, 512, 14),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rank: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(3);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        // xorshift64*: seeded, reproducible weights in [-0.05, 0.05).
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    println!("VGG16 convolutions, seeded random weights, rank {rank}, input 224x224, f32\n");
    println!(
        "{:<10} {:>16} {:>5} {:>9} {:>10} {:>12} {:>12} {:>8} {:>8}",
        "layer", "shape", "rank", "energy", "rel.error", "MACs before", "MACs after", "reduct.", "ms"
    );
    let (mut before, mut after) = (0u64, 0u64);
    let total = Instant::now();
    for (i, &(c, n, hw)) in VGG16.iter().enumerate() {
        let weight: Vec<f32> = (0..n * c * 9).map(|_| next()).collect();
        let layer = Conv2dWeights::builder(weight, [n, c, 3, 3])
            .name(format!("conv{}", i + 1))
            .bias(vec![0.0; n])
            .padding(Padding::uniform(1))
            .build()?;
        let r = rank.min(layer.shape().max_rank());
        let start = Instant::now();
        let d = decompose_with(&layer, &Options::new(r).input_size(hw, hw), &NalgebraSvd::default())?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let rep = &d.report;
        before += rep.before.macs;
        after += rep.after.macs;
        println!(
            "{:<10} {:>16} {:>5} {:>9.4} {:>10.4} {:>12} {:>12} {:>7.2}x {:>8.1}",
            rep.layer,
            format!("{n}x{c}x3x3"),
            r,
            rep.retained_energy,
            rep.relative_error,
            rep.before.macs,
            rep.after.macs,
            rep.before.macs as f64 / rep.after.macs as f64,
            ms
        );
    }
    println!(
        "\ntotal: {before} -> {after} MACs ({:.2}x fewer) in {:.0} ms (decomposition + report)",
        before as f64 / after as f64,
        total.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
