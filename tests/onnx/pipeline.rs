//! The ONNX rewrite follows the one pipeline's rules: declared groups must agree with the graph,
//! a planned layer needs an input size (inferred, declared with `layer_input`, or the network's),
//! and the summary's JSON carries the keys both converters printed before.
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::{ConvertOptions, SizeSource};
use dac::io::onnx::rewrite_model;
use dac::{Error, Rank};

/// `input` → Conv `a` (3x3, pad 1) → an operator size inference does not know → Conv `b`.
fn opaque_net() -> Vec<u8> {
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[8, 3, 3, 3], &values(1, 8 * 3 * 9)));
    g.inits.push(tensor("b.weight", &[8, 8, 3, 3], &values(2, 8 * 8 * 9)));
    g.nodes.push(node("Conv", "a", &["input", "a.weight"], &["ya"], &[attr_ints("pads", &[1, 1, 1, 1])], &[]));
    g.nodes.push(node("Mystery", "m", &["ya"], &["ym"], &[], &[]));
    g.nodes.push(node("Conv", "b", &["ym", "b.weight"], &["y"], &[attr_ints("pads", &[1, 1, 1, 1])], &[]));
    g.inputs.push(value_info("input", &[None, Some(3), Some(16), Some(16)]));
    g.outputs.push(value_info("y", &[None, Some(8), Some(16), Some(16)]));
    model(&g, 13, &[])
}

#[test]
fn a_planned_layer_without_a_size_is_named_and_a_declared_size_is_used() {
    let m = opaque_net();
    let err = rewrite_model(&m, &ConvertOptions::macs(1.5)).unwrap_err();
    assert!(matches!(&err, Error::UnknownInputSize { layer, .. } if layer == "b"), "{err}");
    assert!(err.to_string().contains("input size"), "{err}");
    let (_, report) = rewrite_model(&m, &ConvertOptions::macs(1.5).layer_input("b", 16, 16)).unwrap();
    let sizes: Vec<(String, SizeSource)> = report
        .converted
        .iter()
        .map(|c| (c.name.clone(), c.size))
        .chain(report.skipped.iter().map(|s| (s.name.clone(), s.size)))
        .collect();
    assert!(sizes.contains(&("a".to_string(), SizeSource::Inferred)), "{sizes:?}");
    assert!(sizes.contains(&("b".to_string(), SizeSource::Declared)), "{sizes:?}");
    // Every convolution counted: the totals are known.
    assert!(report.reduction().is_some());
}

#[test]
fn declared_groups_must_agree_with_the_graph() {
    let m = opaque_net();
    let options = ConvertOptions::new(Rank::Fixed(2));
    assert!(rewrite_model(&m, &options.clone().groups("a", 1)).is_ok());
    let err = rewrite_model(&m, &options.groups("a", 2)).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { what: "groups", .. }), "{err}");
}

#[test]
fn output_dtype_is_refused_for_a_graph() {
    let options = ConvertOptions::new(Rank::Fixed(2)).output_dtype(dac::convert::FloatDtype::F16);
    let err = rewrite_model(&opaque_net(), &options).unwrap_err();
    assert!(err.to_string().contains("output_dtype"), "{err}");
}

/// One JSON document for both formats, with every key either converter printed before.
#[test]
fn the_json_carries_the_keys_of_both_former_reports() {
    let (_, report) = rewrite_model(&opaque_net(), &ConvertOptions::new(Rank::Fixed(2)).input_size(16, 16)).unwrap();
    let j = report.to_json();
    for key in [
        "input_size",
        "layout",
        "fit",
        "svd",
        "converted",
        "skipped",
        "removed_initializers",
        "fixed",
        "linear_macs",
        "copied_tensors",
        "macs_before",
        "macs_after",
        "reduction",
        "total",
        "plan",
    ] {
        assert!(j.get(key).is_some(), "{key} missing: {j}");
    }
    let c = &j["converted"][0];
    for key in [
        "name",
        "node",
        "weight",
        "shape",
        "dims",
        "groups",
        "rank",
        "max_rank",
        "retained_energy",
        "relative_error",
        "input_size",
        "size_inferred",
        "default_input",
        "before",
        "after",
        "macs_before",
        "macs_after",
        "nodes",
    ] {
        assert!(c.get(key).is_some(), "converted.{key} missing: {c}");
    }
    assert_eq!(c["scheme"], "dac");
}
