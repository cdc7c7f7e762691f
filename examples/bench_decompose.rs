//! Timings of decomposing the 13 VGG16 convolutions, printed as one JSON object.
//!
//! `cargo run --release --example bench_decompose -- [--reps N] [--threads T] [--rank R]`
//!
//! Used by `bench/compare.py`; every figure is the median of `reps` runs, in milliseconds:
//! - `memcpy_existing_ms`: copying every weight into buffers that already exist;
//! - `memcpy_fresh_ms`: copying into freshly allocated buffers;
//! - `factor_layer_ms`: [`GramSvd::factor_layer`] on every layer (singular values and `V`);
//! - `decompose_gram_ms` / `decompose_nalgebra_ms`: `Factorization::compute` + `truncate` at the
//!   rank (the whole library call: both factors written, error measured);
//! - the same at full rank.
//!
//! Weights are seeded uniform values in `[-1, 1)`, f32, OIHW.

use dac::svd::{GramSvd, NalgebraSvd, SvdBackend};
use dac::{Conv2dWeights, Factorization, Options};
use std::time::Instant;

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
        .enumerate()
        .map(|(i, &(c, n))| {
            let w: Vec<f32> = (0..n * c * 9)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect();
            Conv2dWeights::builder(w, [n, c, 3, 3]).name(format!("conv{i}")).build().expect("valid layer")
        })
        .collect()
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn decompose_all<B: SvdBackend<f32>>(layers: &[Conv2dWeights<f32>], rank: Option<usize>, backend: &B) {
    for layer in layers {
        let r = rank.unwrap_or(layer.shape().max_rank()).min(layer.shape().max_rank());
        let f = Factorization::compute(layer, backend).expect("factorisation");
        std::hint::black_box(f.truncate(&Options::new(r)).expect("truncate"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let reps = arg("--reps", 11).max(1);
    let threads = arg("--threads", 0);
    let rank = arg("--rank", 3);
    let with_nalgebra = !args.iter().any(|a| a == "--no-nalgebra");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let layers = layers();
    let weights: usize = layers.iter().map(|l| l.weight().len()).sum();
    let mut out: Vec<(String, f64)> = vec![
        ("weights".into(), weights as f64),
        ("threads".into(), pool.current_num_threads() as f64),
        ("rank".into(), rank as f64),
    ];
    pool.install(|| {
        let mut dst: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; l.weight().len()]).collect();
        out.push((
            "memcpy_existing_ms".into(),
            median_ms(reps, || {
                for (d, l) in dst.iter_mut().zip(&layers) {
                    d.copy_from_slice(l.weight());
                }
                std::hint::black_box(&dst);
            }),
        ));
        out.push((
            "memcpy_fresh_ms".into(),
            median_ms(reps, || {
                let copies: Vec<Vec<f32>> = layers.iter().map(|l| l.weight().to_vec()).collect();
                std::hint::black_box(copies);
            }),
        ));
        out.push((
            "factor_layer_ms".into(),
            median_ms(reps, || {
                for l in &layers {
                    let shape = l.shape();
                    let k = shape.max_rank();
                    let mut s = vec![0.0f32; shape.in_channels * k];
                    let mut vt = vec![0.0f32; shape.in_channels * k * shape.taps()];
                    GramSvd::default().factor_layer(l, &mut s, &mut vt).expect("factor");
                    std::hint::black_box((s, vt));
                }
            }),
        ));
        out.push((
            "decompose_gram_ms".into(),
            median_ms(reps, || decompose_all(&layers, Some(rank), &GramSvd::default())),
        ));
        out.push((
            "decompose_gram_full_ms".into(),
            median_ms(reps, || decompose_all(&layers, None, &GramSvd::default())),
        ));
        if with_nalgebra {
            let r = reps.min(5);
            out.push((
                "decompose_nalgebra_ms".into(),
                median_ms(r, || decompose_all(&layers, Some(rank), &NalgebraSvd::default())),
            ));
        }
    });
    let body: Vec<String> = out.iter().map(|(k, v)| format!("\"{k}\": {v:.4}")).collect();
    println!("{{{}}}", body.join(", "));
}
