//! The reference network (models/fmnist_vgg.onnx, exported by the training script): rewritten at
//! the paper example's planner settings, run in tract, it predicts exactly what `dac`'s own
//! executor predicts for the same plan, image for image, so its accuracy is the one the example
//! reports for that setting. The default test uses the example's `--quick` set (the first 200
//! images of each class); the ignored one all 10,000 test images:
//!
//! ```text
//! cargo test --release --all-features --test model fmnist -- --include-ignored --nocapture
//! ```
//!
//! The full run takes about three minutes on 2 cores (tract on 10,000 images at each plan), so
//! it is the documented long run rather than part of `cargo test`. A missing model file fails.
#![cfg(feature = "onnx")]

use crate::support::net;
use dac::convert::ConvertOptions;
use dac::io::onnx::rewrite_model;
use dac::plan::{PlanOptions, Target, AUTO_DEPTH_WEIGHT};
use dac::svd::NalgebraSvd;
use dac::{Factorization, Options};
use tract_onnx::prelude::*;

/// Images per tract run (tract is given a fixed batch size; the last batch may be shorter).
const BATCH: usize = 500;

/// tract's predicted class for every image, in batches of [`BATCH`].
fn tract_predictions(model: &[u8], images: &[f32]) -> Vec<u8> {
    images.chunks(BATCH * 1024).flat_map(|chunk| tract_batch(model, chunk, chunk.len() / 1024)).collect()
}

fn tract_batch(model: &[u8], images: &[f32], n: usize) -> Vec<u8> {
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
fn planned_rewrite_matches_the_example_image_for_image_on_the_quick_set() {
    check(|d| d.stratified(200));
}

#[test]
#[ignore = "all 10,000 test images: run with --release --include-ignored"]
fn planned_rewrite_matches_the_example_image_for_image_on_all_test_images() {
    check(|d| d.clone());
}

fn check(pick: impl Fn(&net::Dataset) -> net::Dataset) {
    let root = net::repo_root();
    let onnx_path = root.join("models/fmnist_vgg.onnx");
    let original = std::fs::read(&onnx_path).unwrap_or_else(|e| panic!("{}: {e}", onnx_path.display()));
    let net = net::Net::load(&root.join("models/fmnist_vgg")).unwrap();
    let data = pick(&net::Dataset::load_test(&root.join("data/fashion-mnist")).unwrap());
    let images = data.len();
    let batches = net::batches(&data, 100).unwrap();
    let first = net.conv_ops[0];
    let run = |pairs: &[Option<&net::Pair>]| net::evaluate(&net, &batches, first, pairs, &data.labels).unwrap().1;
    let count = |p: &[u8]| p.iter().zip(&data.labels).filter(|(a, b)| a == b).count();

    // The dense network: tract on the original ONNX agrees with the Rust forward pass.
    let dense = run(&[]);
    assert_eq!(tract_predictions(&original, &data.images), dense);
    eprintln!("dense: {}/{images} correct", count(&dense));

    // The example's planner: spectra from NalgebraSvd, the default proxy (Spatial: the layers
    // carry their weights), linear layers fixed; the converter with `allow_slower` (MACs only).
    let svd = NalgebraSvd::default();
    let facts: Vec<_> = net.convs.iter().map(|l| Factorization::compute(l, &svd).unwrap()).collect();
    let layers = net.plan_layers(dac::Fit::frobenius()).unwrap();
    let dac_only = dac::convert::SchemeChoice::Only(dac::scheme::SchemeKind::Dac);
    for target in [1.5, 2.0, 3.0] {
        let options = PlanOptions::default().fixed(net.fixed_cost());
        let plan = dac::plan(&layers, &Target::MacReduction(target), &options).unwrap();
        let (rewritten, report) = rewrite_model(
            &original,
            &ConvertOptions::macs(target).svd(dac::convert::SvdMethod::Nalgebra).scheme(dac_only).allow_slower(true),
        )
        .unwrap();
        let p = report.plan.unwrap();
        assert!(
            (p.reduction() - plan.reduction()).abs() < 1e-12,
            "{target}: {} vs {}",
            p.reduction(),
            plan.reduction()
        );
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
        let expected = run(&refs);
        let got = tract_predictions(&rewritten, &data.images);
        let differ: Vec<usize> = (0..images).filter(|&i| got[i] != expected[i]).collect();
        assert!(differ.is_empty(), "{target}x: images {differ:?} differ");
        let correct = count(&got);
        eprintln!(
            "{target}x: planned {:.3}x, tract on the rewritten ONNX: {correct}/{images} correct ({:.2}%)",
            p.reduction(),
            100.0 * correct as f64 / images as f64
        );
    }

    // The default, every scheme (`--scheme auto`, fit correlated=AUTO_RHO): the rewrite plans as
    // `dac::plan` with its time guard on the same factorisations, and tract on the rewritten
    // graph predicts what the Rust forward pass with each chosen layer's chain of factors
    // predicts.
    let auto = dac::Fit::correlated(dac::Fit::AUTO_RHO).unwrap();
    let schemes: Vec<_> = dac::scheme::SchemeKind::ALL.iter().map(|&k| (k, auto)).collect();
    let layers = net.plan_layers_with(&schemes).unwrap();
    for target in [1.5, 3.0] {
        let options = PlanOptions::default().fixed(net.fixed_cost()).depth_weight(AUTO_DEPTH_WEIGHT).time_guard(true);
        let plan = dac::plan(&layers, &Target::MacReduction(target), &options).unwrap();
        let (rewritten, report) =
            rewrite_model(&original, &ConvertOptions::macs(target).svd(dac::convert::SvdMethod::Nalgebra)).unwrap();
        let p = report.plan.unwrap();
        assert_eq!(p.after.macs, plan.after.macs, "{target}x");
        let chains: Vec<Option<net::Chain>> = plan
            .layers
            .iter()
            .enumerate()
            .map(|(i, lp)| match (lp.scheme, lp.rank) {
                (Some(k), Some(r)) => Some(net.chain(i, k, auto, r).unwrap()),
                _ => None,
            })
            .collect();
        let refs: Vec<Option<&net::Chain>> = chains.iter().map(Option::as_ref).collect();
        let expected = net::evaluate(&net, &batches, first, &refs, &data.labels).unwrap().1;
        let got = tract_predictions(&rewritten, &data.images);
        let differ: Vec<usize> = (0..images).filter(|&i| got[i] != expected[i]).collect();
        assert!(differ.is_empty(), "{target}x auto: images {differ:?} differ");
        eprintln!("{target}x auto: tract on the rewritten ONNX: {}/{images} correct", count(&got));
    }
}
