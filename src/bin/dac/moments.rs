//! `dac onnx --synthetic-moments`: the planner's input moments measured in onnxruntime on
//! synthetic images, and `--save-moments`.

use clap::Args;
use dac::io;
use dac::moments::{InputMoments, Prior, Synthetic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct MomentArgs {
    /// Score --speedup and --macs candidates by input moments measured here without data, as
    /// --input-moments does with a file: the dense model runs in onnxruntime on 256 smooth
    /// random images (--prior, --normalize) and 8192 input patches of each planned layer give
    /// its second moments. Needs onnxruntime's shared library (--ort-library or ORT_DYLIB_PATH).
    #[arg(long, requires = "target", conflicts_with = "input_moments")]
    pub synthetic_moments: bool,
    /// The synthetic images of --synthetic-moments: lag-1 correlation of neighbouring pixels,
    /// pixel mean and standard deviation (every channel alike).
    #[arg(long, value_name = "RHO,MEAN,STD", default_value = "0.95,0.5,0.25", value_parser = parse_prior, requires = "synthetic_moments")]
    prior: Prior,
    /// The model's own input preprocessing, applied to the synthetic images: (pixel − MEAN) /
    /// STD, one value or one per channel (torchvision's: 0.485,0.456,0.406/0.229,0.224,0.225).
    #[arg(long, value_name = "MEAN[,..]/STD[,..]", value_parser = parse_normalize, requires = "synthetic_moments")]
    normalize: Option<(Vec<f64>, Vec<f64>)>,
    /// Also write the moments --synthetic-moments measured to FILE (safetensors, as
    /// --input-moments reads them; replaced only with --force).
    #[arg(long, value_name = "FILE", requires = "synthetic_moments")]
    save_moments: Option<PathBuf>,
}

impl MomentArgs {
    /// Refuses a --save-moments file that is the model or the output, or exists without
    /// `force`: checked before any work, as the file is written after the model.
    pub fn check_save(&self, model: &Path, output: &Path, force: bool) -> dac::Result<()> {
        let Some(path) = &self.save_moments else { return Ok(()) };
        for other in [model, output] {
            if same_target(path, other) {
                return Err(dac::Error::OutputIsInput { input: other.to_path_buf(), output: path.clone() });
            }
        }
        if path.exists() && !force {
            return Err(dac::Error::OutputExists { path: path.clone() });
        }
        Ok(())
    }

    /// Every layer `o` plans in `model`, its input moments measured in `runtime`; a line on
    /// stderr unless `quiet`.
    pub fn measure(
        &self,
        model: &Path,
        o: &dac::convert::ConvertOptions,
        runtime: &mut dac::runtime::OnnxRuntime,
        quiet: bool,
    ) -> dac::Result<BTreeMap<String, InputMoments>> {
        let start = Instant::now();
        let mut synth = Synthetic::new(self.prior, 0);
        if let Some((mean, std)) = &self.normalize {
            synth = synth.normalize(mean.clone(), std.clone())?;
        }
        let sampling = io::onnx::MomentSampling::default();
        let moments = io::onnx::synthetic_moments(model, o, synth, sampling, runtime)?;
        if !quiet {
            let (rho, mean, std) = self.prior.values();
            eprintln!(
                "input moments of {} layers from {} synthetic images (rho {rho}, mean {mean}, std {std}), {} patches each, {:.1} s",
                moments.len(),
                sampling.images,
                sampling.patches,
                start.elapsed().as_secs_f64()
            );
        }
        Ok(moments)
    }

    /// Whether --save-moments was given.
    pub fn saves(&self) -> bool {
        self.save_moments.is_some()
    }

    /// Writes `moments` to --save-moments, if given, once the model is at `output`; on failure
    /// removes it, so that a failed run leaves neither file behind.
    pub fn save(&self, moments: &BTreeMap<String, InputMoments>, output: &Path, force: bool) -> dac::Result<()> {
        let Some(path) = &self.save_moments else { return Ok(()) };
        io::write_input_moments(path, moments, force).inspect_err(|_| {
            let _ = std::fs::remove_file(output);
        })
    }
}

/// `--prior RHO,MEAN,STD`.
fn parse_prior(s: &str) -> Result<Prior, String> {
    let v: Vec<f64> =
        s.split(',').map(|x| x.trim().parse::<f64>().map_err(|e| format!("`{x}`: {e}"))).collect::<Result<_, _>>()?;
    let [rho, mean, std] = v[..] else {
        return Err(format!("`{s}`: three numbers RHO,MEAN,STD"));
    };
    Prior::new(rho, mean, std).map_err(|e| e.to_string())
}

/// `--normalize MEAN[,..]/STD[,..]`.
fn parse_normalize(s: &str) -> Result<(Vec<f64>, Vec<f64>), String> {
    let list = |part: &str| -> Result<Vec<f64>, String> {
        part.split(',').map(|x| x.trim().parse::<f64>().map_err(|e| format!("`{x}`: {e}"))).collect()
    };
    match s.split_once('/') {
        Some((mean, std)) => Ok((list(mean)?, list(std)?)),
        None => Err(format!("`{s}`: MEAN[,..]/STD[,..]")),
    }
}

/// Whether two paths name the same file (the same path, or the same name in the same
/// directory once links in the directories are resolved).
fn same_target(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?))
    };
    a == b || resolve(a).is_some_and(|x| Some(x) == resolve(b))
}
