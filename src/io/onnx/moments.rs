//! Input moments of an ONNX model's planned convolutions, measured on synthetic images run
//! through the dense model in a [`Forward`] runtime: [`synthetic_moments`].

use super::discover::{self, Discovered};
use super::graph::{Graph, Patch};
use super::{in_file, proto, read_model};
use crate::convert::{self, ConvertOptions, Site};
use crate::error::{Error, Result};
use crate::moments::{InputMoments, PatchSum, Synthetic};
use crate::runtime::Forward;
use crate::weights::Conv2dWeights;
use std::collections::BTreeMap;
use std::path::Path;

/// How [`synthetic_moments`] samples: synthetic images, input patches per layer, images per
/// run of the model (a model with a fixed batch runs that many at a time), and the largest
/// patch length a layer may have (its moments are `D²` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MomentSampling {
    /// Synthetic images run through the model (default 256).
    pub images: usize,
    /// Input patches drawn per layer, spread over the images (default 8192).
    pub patches: usize,
    /// Images per run when the model's batch is not fixed (default 16).
    pub batch: usize,
    /// The largest `C·kh·kw` of a planned layer, per channel group (default 8192: 512 MiB of
    /// moments for an ungrouped layer).
    pub max_dim: usize,
}

impl Default for MomentSampling {
    fn default() -> Self {
        Self { images: 256, patches: 8192, batch: 16, max_dim: 8192 }
    }
}

/// One planned layer: its name, its geometry, where its input comes from (`None`: the model's
/// input), and its patch sum.
struct Tap {
    layer: Conv2dWeights<f32>,
    output: Option<usize>,
    sum: PatchSum,
}

/// The input moments of every layer `options` plans in the ONNX model at `input` (never
/// modified), keyed by layer name as [`ConvertOptions::input_moments`] takes them: the model
/// runs in `runtime` on `sampling.images` images of `synth`, and each layer's moments are those
/// of `sampling.patches` of its input patches drawn from what the model computes. The model
/// must have one float32 image input `[N, C, H, W]` (a dynamic `H x W` from
/// [`ConvertOptions::input_size`]).
///
/// # Errors
/// [`Error::InvalidParameter`] when `options` plans no layer (no `--speedup`/`--macs`
/// target), a sampling count is 0, or a layer's `C·kh·kw` is above `sampling.max_dim`;
/// [`Error::Onnx`] for a model without one 4-D image input of known size; the errors of
/// [`rewrite_file`](super::rewrite_file) reading the model and of the runtime.
pub fn synthetic_moments(
    input: impl AsRef<Path>,
    options: &ConvertOptions,
    mut synth: Synthetic,
    sampling: MomentSampling,
    runtime: &mut dyn Forward,
) -> Result<BTreeMap<String, InputMoments>> {
    let input = input.as_ref();
    check_sampling(sampling, options)?;
    let (bytes, ext) = read_model(input)?;
    let g = Graph::parse(&bytes, input, &ext)?;
    let (image, [batch, c, h, w]) = image_input(&g, options, sampling, input)?;
    let (mut taps, outputs) = taps(&g, options, input, &image, sampling).map_err(|e| in_file(input, e))?;
    let model = g.encode(&with_outputs(&g, &outputs), bytes.len());
    let mut loaded = runtime.load(&model)?;
    let mut done = 0;
    while done < sampling.images {
        let n = batch.min(sampling.images - done);
        let images = synth.images([n, c, h, w])?;
        let values = loaded.run(&image, &images, &outputs)?;
        // Patches spread over the images: this run's share of every layer's count.
        let count = sampling.patches * (done + n) / sampling.images - sampling.patches * done / sampling.images;
        for t in &mut taps {
            let x = t.output.map_or(&images, |k| &values[k]);
            synth.sample_patches(&t.layer, x, count, &mut t.sum).map_err(|e| in_file(input, e))?;
        }
        done += n;
    }
    taps.iter().map(|t| Ok((t.layer.name().to_string(), t.sum.moments(t.layer.name())?))).collect()
}

fn check_sampling(sampling: MomentSampling, options: &ConvertOptions) -> Result<()> {
    let invalid = |what, value: usize, expected| Error::InvalidParameter {
        context: "synthetic input moments".into(),
        what,
        value: value as f64,
        expected,
    };
    if !options.ranks.is_target() {
        return Err(invalid("planned layers", 0, "a --speedup or --macs target: the moments score its planner"));
    }
    for (what, v) in [("images", sampling.images), ("patches", sampling.patches), ("batch", sampling.batch)] {
        if v == 0 {
            return Err(invalid(what, v, "at least 1"));
        }
    }
    Ok(())
}

/// The model's one image input and the shape each run feeds it (its batch if fixed, else
/// `sampling.batch`).
fn image_input(
    g: &Graph<'_>,
    options: &ConvertOptions,
    sampling: MomentSampling,
    file: &Path,
) -> Result<(String, [usize; 4])> {
    let fed: Vec<_> = g.inputs.iter().filter(|(name, _)| !g.inits.contains_key(name.as_str())).collect();
    let err = |reason: String| super::onnx_error(file, "graph inputs", reason);
    let [(name, shape)] = fed.as_slice() else {
        return Err(err(format!("{} inputs; synthetic moments need a model with one image input", fed.len())));
    };
    let dims = shape.as_deref().unwrap_or(&[]);
    let fixed = |d: Option<i64>| d.and_then(|d| usize::try_from(d).ok()).filter(|&d| d > 0);
    let [n, c, h, w] = dims else {
        return Err(err(format!("input `{name}` has shape {dims:?}; synthetic images need [N, C, H, W]")));
    };
    let Some(c) = fixed(*c) else {
        return Err(err(format!("input `{name}` has no fixed channel count (shape {dims:?})")));
    };
    let (h, w) = match (fixed(*h), fixed(*w), options.input_size) {
        (Some(h), Some(w), _) => (h, w),
        (_, _, Some(hw)) => hw,
        _ => return Err(err(format!("input `{name}` has a dynamic size (shape {dims:?}); give --input HxW"))),
    };
    Ok((name.clone(), [fixed(*n).unwrap_or(sampling.batch), c, h, w]))
}

/// The layers `options` plans, and the tensors the runtime must return (each a planned layer's
/// input that is not the model's input).
fn taps(
    g: &Graph<'_>,
    options: &ConvertOptions,
    file: &Path,
    image: &str,
    sampling: MomentSampling,
) -> Result<(Vec<Tap>, Vec<String>)> {
    let (shapes, _) = g.shapes(options.input_size);
    let Discovered { convs, found, .. } = discover::find(g, &shapes, options, file)?;
    let sites = convert::select(found, &options.selection, None, file, false, true)?;
    let (mut taps, mut outputs) = (Vec::new(), Vec::<String>::new());
    for (site, conv) in sites.iter().zip(&convs).filter(|(s, _)| convert::planned(s, options)) {
        let layer = layer(g, site, conv.weight, file)?;
        let s = layer.shape();
        // A grouped layer's moments are its groups' diagonal blocks.
        let dim = s.in_per_group() * s.kh * s.kw;
        if dim > sampling.max_dim {
            return Err(Error::InvalidParameter {
                context: format!("synthetic input moments of `{}`", site.name()),
                what: "patch length per group C/g·kh·kw",
                value: dim as f64,
                expected:
                    "at most the sampling's max_dim (its moments are D² numbers); leave the layer out (--exclude)",
            });
        }
        let tensor = g.nodes[conv.node].1.inputs[0];
        let output = (tensor != image).then(|| match outputs.iter().position(|o| o == tensor) {
            Some(k) => k,
            None => {
                outputs.push(tensor.to_string());
                outputs.len() - 1
            }
        });
        taps.push(Tap { output, sum: PatchSum::grouped(s.groups, dim), layer });
    }
    Ok((taps, outputs))
}

/// The layer of `site` in f32 (its geometry is what sampling reads).
fn layer(g: &Graph<'_>, site: &Site, weight: &str, file: &Path) -> Result<Conv2dWeights<f32>> {
    let (_, t) = &g.inits[weight];
    let values = t.values().map_err(|e| super::onnx_error(file, e.location, e.reason))?;
    super::rewrite::build(site, &values)
}

/// A patch listing `outputs` as graph outputs too, those that are not already (float32, shape
/// left to the runtime).
fn with_outputs(g: &Graph<'_>, outputs: &[String]) -> Patch {
    let new = outputs.iter().filter(|name| !g.outputs.contains(name.as_str()));
    let outputs = new.map(|name| proto::encode_output(name, proto::DT_FLOAT)).collect();
    Patch { outputs, ..Patch::default() }
}
