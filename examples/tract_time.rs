//! Median wall-clock time of ONNX models in tract, interleaved (for `bench/zoo_time.py`).
//!
//! ```text
//! cargo run --release --features onnx --example tract_time -- 1,3,224,224 SECONDS A.onnx B.onnx ...
//! ```
//!
//! Loads every model with its input fixed to the given shape, optimises it, runs each once to
//! warm up, then runs them in turn (A, B, ..., A, B, ...) for about SECONDS in total and prints
//! one JSON line: `{"ms": [median per model], "runs": n}`. Single-threaded (tract's default).

#[cfg(feature = "onnx")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::time::{Duration, Instant};
    use tract_onnx::prelude::*;

    let mut args = std::env::args().skip(1);
    let usage = "usage: tract_time N,C,H,W SECONDS MODEL.onnx...";
    let shape: Vec<usize> = args.next().ok_or(usage)?.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let budget = Duration::from_secs_f64(args.next().ok_or(usage)?.parse()?);
    let paths: Vec<String> = args.collect();
    if paths.is_empty() {
        return Err(usage.into());
    }
    let mut models = Vec::new();
    for p in &paths {
        let m = tract_onnx::onnx()
            .model_for_path(p)?
            .with_input_fact(0, f32::fact(shape.clone()).into())?
            .into_optimized()?
            .into_runnable()?;
        models.push(m);
    }
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
    let input = Tensor::from_shape(&shape, &x)?.into_tvalue();
    for m in &models {
        m.run(tvec!(input.clone()))?;
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); models.len()];
    let start = Instant::now();
    while start.elapsed() < budget || times[0].len() < 3 {
        for (m, t) in models.iter().zip(&mut times) {
            let s = Instant::now();
            m.run(tvec!(input.clone()))?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let ms: Vec<f64> = times.iter_mut().map(median).collect();
    println!("{{\"ms\": {ms:?}, \"runs\": {}}}", times[0].len());
    Ok(())
}

#[cfg(not(feature = "onnx"))]
fn main() {
    eprintln!("build with --features onnx");
}
