//! `dac::io::onnx::synthetic_moments`: every planned layer's input moments from synthetic
//! images run through the model. Checked against the same images and patch draws on inputs the
//! reference loop nest computes, with the model run in tract (and in onnxruntime where its
//! library is given: `.ci/run` sets ORT_DYLIB_PATH and DAC_REQUIRE_ORT=1).
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::ConvertOptions;
use dac::exec::{reference, Tensor4};
use dac::io::onnx::{synthetic_moments, MomentSampling};
use dac::moments::{InputMoments, PatchSum, Prior, Synthetic};
use dac::runtime::{Forward, Loaded};
use dac::{Conv2dWeights, Padding};
use std::collections::BTreeMap;
use std::path::Path;

/// `a`: 3 -> 8, 3x3, padding 1, bias; Relu; `b`: 8 -> 6, 3x3, stride 2, padding 1, 2 groups.
fn layers() -> [Conv2dWeights<f32>; 2] {
    let a = Conv2dWeights::builder(values(11, 8 * 27), [8, 3, 3, 3])
        .name("a")
        .padding(Padding::uniform(1))
        .bias(values(12, 8))
        .build()
        .unwrap();
    let b = Conv2dWeights::builder(values(13, 6 * 4 * 9), [6, 4, 3, 3])
        .name("b")
        .padding(Padding::uniform(1))
        .stride(2, 2)
        .groups(2)
        .build()
        .unwrap();
    [a, b]
}

/// The model of [`layers`] on a `[batch, 3, 12, 12]` input (`None`: a dynamic batch).
fn net(batch: Option<usize>) -> Vec<u8> {
    let [a, b] = layers();
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[8, 3, 3, 3], a.weight()));
    g.inits.push(tensor("a.bias", &[8], a.bias().unwrap()));
    g.inits.push(tensor("b.weight", &[6, 4, 3, 3], b.weight()));
    let pads = vec![attr_ints("pads", &[1, 1, 1, 1])];
    let strided = vec![attr_ints("pads", &[1, 1, 1, 1]), attr_ints("strides", &[2, 2]), attr_int("group", 2)];
    g.nodes.push(node("Conv", "a", &["image", "a.weight", "a.bias"], &["ya"], &pads, &[]));
    g.nodes.push(node("Relu", "relu", &["ya"], &["ra"], &[], &[]));
    g.nodes.push(node("Conv", "b", &["ra", "b.weight"], &["y"], &strided, &[]));
    g.inputs.push(value_info("image", &[batch, Some(3), Some(12), Some(12)]));
    g.outputs.push(value_info("y", &[batch, Some(6), Some(6), Some(6)]));
    model(&g, 13, &[])
}

/// The model runs in tract.
struct Tract;

struct TractModel(Vec<u8>);

impl Forward for Tract {
    fn load(&mut self, model: &[u8]) -> dac::Result<Box<dyn Loaded + '_>> {
        Ok(Box::new(TractModel(model.to_vec())))
    }
}

impl Loaded for TractModel {
    fn run(&mut self, input_name: &str, input: &Tensor4<f32>, outputs: &[String]) -> dac::Result<Vec<Tensor4<f32>>> {
        use tract_onnx::prelude::*;
        assert_eq!(input_name, "image");
        let m = tract_onnx::onnx()
            .model_for_read(&mut &self.0[..])
            .expect("tract reads the model")
            .with_input_fact(0, f32::fact(input.dims()).into())
            .expect("input fact")
            .into_optimized()
            .expect("tract optimises the model")
            .into_runnable()
            .expect("runnable");
        let x = tract_onnx::prelude::Tensor::from_shape(&input.dims(), input.as_slice()).expect("input tensor");
        let out = m.run(tvec!(x.into_tvalue())).expect("tract runs the model");
        let model = m.model();
        let named = |name: &str| {
            let k = model.output_outlets().unwrap().iter().position(|o| model.outlet_label(*o) == Some(name));
            let t = &out[k.unwrap_or_else(|| panic!("no output `{name}`"))];
            let dims: [usize; 4] = t.shape().try_into().unwrap();
            Tensor4::new(t.to_plain_array_view::<f32>().unwrap().iter().copied().collect(), dims).unwrap()
        };
        Ok(outputs.iter().map(|o| named(o)).collect())
    }
}

/// The moments the sampling must give: the same images and draws, the layers' inputs computed
/// by the reference loop nest (`b`'s input is Relu of `a`'s output).
fn expected(sampling: MomentSampling, batch: usize, prior: Prior, seed: u64) -> BTreeMap<String, InputMoments> {
    let [a, b] = layers();
    let mut synth = Synthetic::new(prior, seed);
    // `b` has 2 groups: its moments are the two diagonal blocks of 4·9.
    let mut sums = [PatchSum::new(27), PatchSum::grouped(2, 36)];
    let mut done = 0;
    while done < sampling.images {
        let n = batch.min(sampling.images - done);
        let x = synth.images([n, 3, 12, 12]).unwrap();
        let mut ra = reference::conv2d(&x, &a).unwrap();
        ra.as_mut_slice().iter_mut().for_each(|v| *v = v.max(0.0));
        let count = sampling.patches * (done + n) / sampling.images - sampling.patches * done / sampling.images;
        synth.sample_patches(&a, &x, count, &mut sums[0]).unwrap();
        synth.sample_patches(&b, &ra, count, &mut sums[1]).unwrap();
        done += n;
    }
    [("a", &sums[0]), ("b", &sums[1])].into_iter().map(|(k, s)| (k.to_string(), s.moments(k).unwrap())).collect()
}

fn assert_close(got: &BTreeMap<String, InputMoments>, want: &BTreeMap<String, InputMoments>) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.dim(), w.dim(), "{name}");
        let scale = w.values().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = g.values().iter().zip(w.values()).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-5 * scale, "{name}: moments differ by {diff} (largest entry {scale})");
    }
}

fn write(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join("net.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

const SAMPLING: MomentSampling = MomentSampling { images: 40, patches: 900, batch: 16, max_dim: 8192 };

#[test]
fn every_planned_layer_gets_the_moments_of_its_own_input() {
    let dir = tempfile::tempdir().unwrap();
    let prior = Prior::new(0.8, 0.4, 0.3).unwrap();
    let options = ConvertOptions::speedup(1.5);
    // A dynamic batch runs `batch` images at a time (16, 16, 8), a fixed one its own (5 runs of 8).
    for (batch, runs_of) in [(None, 16), (Some(8), 8)] {
        let path = write(dir.path(), &net(batch));
        let got = synthetic_moments(&path, &options, Synthetic::new(prior, 7), SAMPLING, &mut Tract).unwrap();
        assert_close(&got, &expected(SAMPLING, runs_of, prior, 7));
        assert_eq!((got["a"].dim(), got["a"].groups(), got["b"].dim(), got["b"].groups()), (27, 1, 72, 2));
        // Written and read back: `[27, 27]` and `[2, 36, 36]`, the same values.
        let file = dir.path().join("m.safetensors");
        dac::io::write_input_moments(&file, &got, true).unwrap();
        assert_eq!(dac::io::read_input_moments(&file).unwrap(), got);
    }
}

#[cfg(feature = "onnxruntime")]
#[test]
fn onnxruntime_gives_the_same_moments() {
    let Some(lib) = crate::support::ort_library("moments") else { return };
    let mut ort = dac::runtime::OnnxRuntime::load(Path::new(&lib), 1, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &net(None));
    let prior = Prior::default();
    let got =
        synthetic_moments(&path, &ConvertOptions::macs(1.5), Synthetic::new(prior, 0), SAMPLING, &mut ort).unwrap();
    assert_close(&got, &expected(SAMPLING, 16, prior, 0));
}

#[test]
fn only_the_planned_layers_are_sampled_and_bad_requests_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &net(None));
    let synth = || Synthetic::new(Prior::default(), 0);
    let before = std::fs::read(&path).unwrap();
    let got =
        synthetic_moments(&path, &ConvertOptions::speedup(1.5).exclude("b"), synth(), SAMPLING, &mut Tract).unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["a"]);
    // No target: nothing is planned, so nothing would use the moments.
    let err =
        synthetic_moments(&path, &ConvertOptions::new(dac::Rank::Fixed(2)), synth(), SAMPLING, &mut Tract).unwrap_err();
    assert!(err.to_string().contains("--speedup or --macs"), "{err}");
    let zero = MomentSampling { patches: 0, ..SAMPLING };
    let err = synthetic_moments(&path, &ConvertOptions::speedup(1.5), synth(), zero, &mut Tract).unwrap_err();
    assert!(err.to_string().contains("patches"), "{err}");
    // `b` has C/g·kh·kw = 4·9 = 36 per group.
    let small = MomentSampling { max_dim: 35, ..SAMPLING };
    let err = synthetic_moments(&path, &ConvertOptions::speedup(1.5), synth(), small, &mut Tract).unwrap_err();
    assert!(err.to_string().contains("`b`") && err.to_string().contains("36"), "{err}");
    // Normalisation with two values for three channels.
    let two = synth().normalize(vec![0.5, 0.5], vec![0.2, 0.2]).unwrap();
    let err = synthetic_moments(&path, &ConvertOptions::speedup(1.5), two, SAMPLING, &mut Tract).unwrap_err();
    assert!(err.to_string().contains("one per input channel"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the model is never modified");
}
