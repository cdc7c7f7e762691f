//! `inspect_model` on ONNX graphs: every convolution is listed (those the converters cannot
//! touch with why), the totals count them all or are unknown, and nodes with subgraphs are
//! named.
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::{ConvertOptions, SizeSource, SkipReason};
use dac::io::onnx::rewrite_model;
use dac::io::{inspect_model, InspectOptions};
use dac::Rank;
use std::path::PathBuf;

fn write(dir: &tempfile::TempDir, name: &str, model: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, model).unwrap();
    path
}

/// `x [1, 3, 8, 8]` → Conv `a` (8 ch, 3x3, pad 1, initializer weight) → `ya` → `rest` → `y`.
fn graph(rest: Vec<Vec<u8>>, inits: Vec<Vec<u8>>) -> Graph {
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[8, 3, 3, 3], &values(1, 216)));
    g.inits.extend(inits);
    g.nodes.push(node("Conv", "a", &["x", "a.weight"], &["ya"], &[attr_ints("pads", &[1, 1, 1, 1])], &[]));
    g.nodes.extend(rest);
    g.inputs.push(value_info("x", &[Some(1), Some(3), Some(8), Some(8)]));
    g.outputs.push(value_info("y", &[None, None, None, None]));
    g
}

#[test]
fn convolutions_the_converters_cannot_touch_are_listed_and_counted() {
    let pads = || attr_ints("pads", &[1, 1, 1, 1]);
    let rest = vec![
        // A quantized weight (DequantizeLinear of INT8).
        node("DequantizeLinear", "dq", &["bq", "s", "zp"], &["b.weight"], &[], &[]),
        node("Conv", "b", &["ya", "b.weight"], &["yb"], &[pads()], &[]),
        // A weight computed at run time.
        node("Neg", "neg", &["c0"], &["c.weight"], &[], &[]),
        node("Conv", "c", &["yb", "c.weight"], &["yc"], &[pads()], &[]),
        // Another convolution operator.
        node("ConvTranspose", "t", &["yc", "t.weight"], &["y"], &[], &[]),
    ];
    let inits = vec![
        typed_tensor("bq", &[8, 8, 3, 3], 3, &[1.0; 576], true),
        tensor("s", &[], &[0.5]),
        typed_tensor("zp", &[], 3, &[0.0], true),
        tensor("c0", &[4, 8, 3, 3], &values(2, 288)),
        tensor("t.weight", &[4, 2, 1, 1], &values(3, 8)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let m = model(&graph(rest, inits), 13, &[]);
    let found = inspect_model(write(&dir, "m.onnx", &m), &InspectOptions::new()).unwrap();
    let names: Vec<&str> = found.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["a"]);
    let others: Vec<(&str, &str, u64)> =
        found.others.iter().map(|o| (o.name.as_str(), o.op.as_str(), *o.macs.as_ref().unwrap())).collect();
    // At 8x8: b 8·72, c 4·72, the transposed 1x1 convolution 4·2 MACs per position.
    assert_eq!(others, [("b", "Conv", 8 * 72 * 64), ("c", "Conv", 4 * 72 * 64), ("t", "ConvTranspose", 8 * 64)]);
    assert!(found.others[0].reason.contains("quantized"), "{}", found.others[0].reason);
    assert!(found.others[1].reason.contains("not an initializer"), "{}", found.others[1].reason);
    assert_eq!(found.total_macs(), Some((8 * 27 + 8 * 72 + 4 * 72 + 8) * 64));
    // The rewrite counts the same MACs and says why b is left dense.
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(1))).unwrap();
    assert_eq!(report.macs_before(), found.total_macs());
    let b = report.skipped.iter().find(|s| s.name == "b").expect("b is skipped");
    assert_eq!(b.reason, SkipReason::QuantizedWeight);
}

#[test]
fn a_total_with_a_layer_of_unknown_size_is_unknown() {
    let rest =
        vec![node("Mystery", "m", &["ya"], &["z"], &[], &[]), node("Conv", "b", &["z", "b.weight"], &["y"], &[], &[])];
    let dir = tempfile::tempdir().unwrap();
    let m = model(&graph(rest, vec![tensor("b.weight", &[4, 8, 3, 3], &values(2, 288))]), 13, &[]);
    let path = write(&dir, "m.onnx", &m);
    let found = inspect_model(&path, &InspectOptions::new()).unwrap();
    let sizes: Vec<SizeSource> = found.layers.iter().map(|l| l.size).collect();
    assert_eq!(sizes, [SizeSource::Inferred, SizeSource::Unknown]);
    assert_eq!(found.total_macs(), None);
    // Declaring b's input makes it known: 4·72 MACs at 6x6 outputs.
    let found = inspect_model(&path, &InspectOptions::new().layer_input("b", 8, 8)).unwrap();
    assert_eq!(found.total_macs(), Some(8 * 27 * 64 + 4 * 72 * 36));
}

/// An AttributeProto holding a graph (`g`, type GRAPH).
fn attr_graph(name: &str, graph: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(&mut b, 1, name.as_bytes());
    bytes_field(&mut b, 6, graph);
    uint_field(&mut b, 20, 5);
    b
}

#[test]
fn nodes_with_subgraphs_are_named_as_not_read() {
    let mut then = Graph::default();
    then.nodes.push(node("Conv", "inner", &["ya", "a.weight"], &["t"], &[], &[]));
    then.outputs.push(value_info("t", &[None, None, None, None]));
    let mut other = Graph::default();
    other.nodes.push(node("Identity", "", &["ya"], &["e"], &[], &[]));
    other.outputs.push(value_info("e", &[None, None, None, None]));
    let branches = [attr_graph("then_branch", &then.encode()), attr_graph("else_branch", &other.encode())];
    let rest = vec![node("If", "choose", &["cond"], &["y"], &branches, &[])];
    let g = graph(rest, vec![typed_tensor("cond", &[], 9, &[1.0], true)]);
    let m = model(&g, 13, &[]);
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(1))).unwrap();
    assert_eq!(report.subgraph_nodes, ["If node `choose`"]);
    assert_eq!(report.to_json()["subgraph_nodes"][0], "If node `choose`");
    let dir = tempfile::tempdir().unwrap();
    let found = inspect_model(write(&dir, "m.onnx", &m), &InspectOptions::new()).unwrap();
    assert_eq!(found.subgraph_nodes, ["If node `choose`"]);
}

#[test]
fn a_graph_conv_cannot_be_declared_transposed() {
    let m = model(&graph(vec![node("Relu", "r", &["ya"], &["y"], &[], &[])], vec![]), 13, &[]);
    let e = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(1)).transposed("a")).unwrap_err();
    assert!(matches!(&e, dac::Error::InvalidParameter { what: "transposed", .. }), "{e}");
}
