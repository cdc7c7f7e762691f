//! Timings of decomposing the 13 VGG16 convolutions, printed as one JSON object.
//!
//! `cargo run --release --example bench_decompose -- [--reps N] [--threads T] [--rank R]
//! [--no-nalgebra] [--only KEY]` (`--only` runs one measurement, for profiling a phase)
//!
//! Used by `bench/compare.py`; every figure is the median of `reps` runs, in milliseconds:
//! - `memcpy_existing_ms`: copying every weight into buffers that already exist;
//! - `memcpy_fresh_ms`: copying into freshly allocated buffers;
//! - `factor_layer_ms`: [`GramSvd::factor_layer`] on every layer (singular values and `V`);
//! - `decompose_gram_ms` / `decompose_nalgebra_ms`: `Factorization::compute` + `truncate` at the
//!   rank (the whole library call: both factors written, error from the spectrum);
//! - the same at full rank (`decompose_gram_full_ms`);
//! - `decompose_gram_into_ms` / `decompose_gram_full_into_ms`: `Factorization::compute` +
//!   `truncate_into` reusable per-layer buffers (warmed by the first run), at the rank and at
//!   full rank: the in-process figure to compare with `memcpy_existing_ms`;
//! - `truncate_into_ms` / `truncate_full_into_ms`: `truncate_into` alone on factorisations
//!   computed beforehand (the phase that writes both factors).
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

/// `--only KEY`: run just that measurement (for profiling one phase).
static ONLY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Pushes `(key, median ms of f)` unless `--only` names another key.
fn time(out: &mut Vec<(String, f64)>, key: &str, reps: usize, f: impl FnMut()) {
    if ONLY.get().and_then(Option::as_deref).is_none_or(|only| only == key) {
        out.push((key.to_string(), median_ms(reps, f)));
    }
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
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    ONLY.set(only).expect("set once");
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
        time(&mut out, "memcpy_existing_ms", reps, || {
            for (d, l) in dst.iter_mut().zip(&layers) {
                d.copy_from_slice(l.weight());
            }
            std::hint::black_box(&dst);
        });
        time(&mut out, "memcpy_fresh_ms", reps, || {
            let copies: Vec<Vec<f32>> = layers.iter().map(|l| l.weight().to_vec()).collect();
            std::hint::black_box(copies);
        });
        time(&mut out, "factor_layer_ms", reps, || {
            for l in &layers {
                let shape = l.shape();
                let k = shape.max_rank();
                let mut s = vec![0.0f32; shape.in_channels * k];
                let mut vt = vec![0.0f32; shape.in_channels * k * shape.taps()];
                GramSvd::default().factor_layer(l, &mut s, &mut vt).expect("factor");
                std::hint::black_box((s, vt));
            }
        });
        time(&mut out, "decompose_gram_ms", reps, || decompose_all(&layers, Some(rank), &GramSvd::default()));
        time(&mut out, "decompose_gram_full_ms", reps, || decompose_all(&layers, None, &GramSvd::default()));
        // One reusable pair buffer per layer (the type is named by inference: `PairBuffers`).
        let mut buffers: Vec<_> = layers.iter().map(|_| Default::default()).collect();
        for (key, r) in [("decompose_gram_into_ms", Some(rank)), ("decompose_gram_full_into_ms", None)] {
            time(&mut out, key, reps, || {
                for (layer, buf) in layers.iter().zip(buffers.iter_mut()) {
                    let max = layer.shape().max_rank();
                    let f = Factorization::compute(layer, &GramSvd::default()).expect("factorisation");
                    let options = Options::new(r.unwrap_or(max).min(max));
                    std::hint::black_box(f.truncate_into(&options, buf).expect("truncate_into"));
                }
            });
        }
        let factorizations: Vec<Factorization<'_, f32>> =
            layers.iter().map(|l| Factorization::compute(l, &GramSvd::default()).expect("factorisation")).collect();
        for (key, r) in [("truncate_into_ms", Some(rank)), ("truncate_full_into_ms", None)] {
            time(&mut out, key, reps, || {
                for (f, buf) in factorizations.iter().zip(buffers.iter_mut()) {
                    let max = f.layer().shape().max_rank();
                    let options = Options::new(r.unwrap_or(max).min(max));
                    std::hint::black_box(f.truncate_into(&options, buf).expect("truncate_into"));
                }
            });
        }
        if with_nalgebra {
            let r = reps.min(5);
            time(&mut out, "decompose_nalgebra_ms", r, || decompose_all(&layers, Some(rank), &NalgebraSvd::default()));
        }
    });
    let body: Vec<String> = out.iter().map(|(k, v)| format!("\"{k}\": {v:.4}")).collect();
    println!("{{{}}}", body.join(", "));
}
