//! The reference network (models/fmnist_vgg.onnx, exported by the training script): rewritten at
//! the paper example's planner settings, run in tract, it predicts exactly what `dac`'s own
//! executor predicts for the same plan, image for image. Skipped when the model is absent.
#![cfg(feature = "onnx")]

#[path = "../examples/paper/net.rs"]
mod net;

use dac::io::onnx::{rewrite_model, RewriteOptions};
use dac::plan::{PlanLayer, PlanOptions, Target};
use dac::svd::NalgebraSvd;
use dac::{Factorization, Options};
use tract_onnx::prelude::*;

/// Images checked (kept small: this runs in the default test suite).
const IMAGES: usize = 200;

fn tract_predictions(model: &[u8], images: &[f32], n: usize) -> Vec<u8> {
    let m = tract_onnx::onnx()
        .model_for_read(&mut &model[..])
        .unwrap()
        .with_input_fact(0, f32::fact([n, 1, 32, 32]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let x = Tensor::from_shape(&[n, 1, 32, 32], images).unwrap();
    let out = m.run(tvec!(x.into_tvalue())).unwrap();
    let logits = out[0].to_plain_array_view::<f32>().unwrap();
    let logits: Vec<f32> = logits.iter().copied().collect();
    logits.chunks(10).map(|row| (0..10).fold(0, |best, k| if row[k] > row[best] { k } else { best }) as u8).collect()
}

#[test]
fn planned_rewrite_of_the_reference_network_matches_the_example_image_for_image() {
    let root = net::repo_root();
    let onnx_path = root.join("models/fmnist_vgg.onnx");
    if !onnx_path.exists() {
        eprintln!("skipped: {} not found", onnx_path.display());
        return;
    }
    let original = std::fs::read(&onnx_path).unwrap();
    let net = net::Net::load(&root.join("models/fmnist_vgg")).unwrap();
    let data = net::Dataset::load_test(&root.join("data/fashion-mnist")).unwrap().first(IMAGES);
    let x = dac::exec::Tensor4::new(data.images.clone(), [IMAGES, 1, 32, 32]).unwrap();

    // The dense network: tract on the original ONNX agrees with the Rust forward pass.
    let dense = net::argmax(&net.run_from(x.clone(), 0, &[]).unwrap());
    assert_eq!(tract_predictions(&original, &data.images, IMAGES), dense);

    // The example's planner: spectra from NalgebraSvd, Sensitivity proxy, linear layers fixed.
    let svd = NalgebraSvd::default();
    let facts: Vec<_> = net.convs.iter().map(|l| Factorization::compute(l, &svd).unwrap()).collect();
    let spectra: Vec<_> = facts.iter().map(|f| f.spectrum()).collect();
    let layers: Vec<_> = net
        .convs
        .iter()
        .zip(&spectra)
        .zip(&net.conv_inputs)
        .map(|((l, s), &hw)| PlanLayer::from_conv(l, s, hw).unwrap())
        .collect();
    for target in [1.5, 2.0, 3.0] {
        let options = PlanOptions::default().fixed(net.fixed_cost());
        let plan = dac::plan(&layers, &Target::MacReduction(target), &options).unwrap();
        let (rewritten, report) = rewrite_model(&original, &RewriteOptions::planned(target)).unwrap();
        let p = report.plan.unwrap();
        assert!((p.reduction - plan.reduction()).abs() < 1e-12, "{target}: {} vs {}", p.reduction, plan.reduction());
        // Same ranks, layer by layer.
        for (l, lp) in net.convs.iter().zip(&plan.layers) {
            let weight = format!("{}.weight", l.name());
            let got = report.converted.iter().find(|c| c.weight == weight).map(|c| c.rank);
            assert_eq!(got, lp.rank, "{target}: {}", l.name());
        }
        let pairs: Vec<Option<net::Pair>> = facts
            .iter()
            .zip(&plan.layers)
            .map(|(f, lp)| {
                lp.rank.map(|r| {
                    let d = f.truncate(&Options::new(r)).unwrap();
                    net::Pair { depthwise: d.depthwise, pointwise: d.pointwise }
                })
            })
            .collect();
        let refs: Vec<Option<&net::Pair>> = pairs.iter().map(Option::as_ref).collect();
        let expected = net::argmax(&net.run_from(x.clone(), 0, &refs).unwrap());
        let got = tract_predictions(&rewritten, &data.images, IMAGES);
        let differ: Vec<usize> = (0..IMAGES).filter(|&i| got[i] != expected[i]).collect();
        assert!(differ.is_empty(), "{target}x: images {differ:?} differ");
        let correct = got.iter().zip(&data.labels).filter(|(a, b)| a == b).count();
        eprintln!(
            "{target}x: planned {:.3}x, {correct}/{IMAGES} correct (dense {})",
            p.reduction,
            dense.iter().zip(&data.labels).filter(|(a, b)| a == b).count()
        );
    }
}
