//! Wall-clock speed of the reference network in tract: the original ONNX model against `dac onnx`
//! rewrites at 1.5x, 2x and 3x planned MAC reduction: every scheme (`--scheme auto`, the
//! default) and DAC only in both layouts, batch 1 and 32.
//!
//! ```text
//! cargo run --release --features onnx --example onnx_speed            # models/fmnist_vgg.onnx
//! cargo run --release --features onnx --example onnx_speed -- models/fmnist_alt.onnx
//! ```
//!
//! The rewritten models are written to `target/onnx_speed/<stem>-<target>x-<variant>.onnx`
//! (`auto`, `dac-fused`, `dac-multiplier1`), where
//! `bench/onnx_speed.py` times them in onnxruntime. One thread; median of repeated runs.

#[cfg(feature = "onnx")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use dac::convert::{ConvertOptions, Layout, SchemeChoice};
    use dac::io::onnx::rewrite_model;
    use dac::scheme::SchemeKind;
    use std::time::{Duration, Instant};
    use tract_onnx::prelude::*;

    let path = std::env::args().nth(1).unwrap_or_else(|| "models/fmnist_vgg.onnx".to_string());
    let path = std::path::PathBuf::from(path);
    let stem = path.file_stem().ok_or("no file name")?.to_string_lossy().into_owned();
    let original = std::fs::read(&path)?;
    let out_dir = std::path::Path::new("target/onnx_speed");
    std::fs::create_dir_all(out_dir)?;

    let time = |bytes: &[u8], batch: usize| -> TractResult<f64> {
        let m = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])?
            .with_input_fact(0, f32::fact([batch, 1, 32, 32]).into())?
            .into_optimized()?
            .into_runnable()?;
        let x: Vec<f32> = (0..batch * 1024).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
        let input = Tensor::from_shape(&[batch, 1, 32, 32], &x)?.into_tvalue();
        let budget = Duration::from_millis(if batch == 1 { 1500 } else { 3000 });
        let mut times = Vec::new();
        let start = Instant::now();
        m.run(tvec!(input.clone()))?; // warm-up
        while (start.elapsed() < budget || times.len() < 10) && times.len() < 2000 {
            let t = Instant::now();
            m.run(tvec!(input.clone()))?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    };

    let mut variants: Vec<(String, f64, Vec<u8>)> = vec![("original".to_string(), 1.0, original.clone())];
    for target in [1.5, 2.0, 3.0] {
        let dac = ConvertOptions::macs(target).scheme(SchemeChoice::Only(SchemeKind::Dac));
        let options = [
            ("auto".to_string(), ConvertOptions::macs(target)),
            ("dac-fused".to_string(), dac.clone().layout(Layout::Fused)),
            ("dac-multiplier1".to_string(), dac.layout(Layout::Multiplier1)),
        ];
        for (variant, options) in options {
            let (bytes, report) = rewrite_model(&original, &options)?;
            let name = format!("{stem}-{target}x-{variant}");
            std::fs::write(out_dir.join(format!("{name}.onnx")), &bytes)?;
            variants.push((name, report.reduction().unwrap_or(f64::NAN), bytes));
        }
    }
    std::fs::write(out_dir.join(format!("{stem}-original.onnx")), &original)?;

    println!("tract-onnx 0.23 on {stem}, 1 thread, median wall-clock per run");
    println!("| model | MAC reduction | batch 1 (ms) | speed-up | batch 32 (ms) | speed-up |");
    println!("|---|---|---|---|---|---|");
    let mut base = (0.0, 0.0);
    for (name, reduction, bytes) in &variants {
        let (t1, t32) = (time(bytes, 1)?, time(bytes, 32)?);
        if name == "original" {
            base = (t1, t32);
        }
        println!(
            "| {name} | {reduction:.2}x | {:.3} | {:.2}x | {:.2} | {:.2}x |",
            t1 * 1e3,
            base.0 / t1,
            t32 * 1e3,
            base.1 / t32
        );
    }
    Ok(())
}

#[cfg(not(feature = "onnx"))]
fn main() {
    eprintln!("build with --features onnx");
}
