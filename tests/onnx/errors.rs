//! Bad ONNX input: a clear error naming the node or tensor, and nothing written.
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::ConvertOptions;
use dac::io::onnx::rewrite_file;
use dac::Rank;

/// One conv `bad_conv` with weight `w` [8, 4/group, 3, 3]; `attrs` and `weight` are overridable.
fn one_conv(attrs: Vec<Vec<u8>>, weight: Vec<u8>, bias: Option<Vec<u8>>) -> Vec<u8> {
    let mut g = Graph::default();
    g.inits.push(weight);
    let mut inputs = vec!["input", "w"];
    if let Some(b) = bias {
        g.inits.push(b);
        inputs.push("b");
    }
    g.nodes.push(node("Conv", "bad_conv", &inputs, &["y"], &attrs, &[]));
    g.inputs.push(value_info("input", &[Some(1), Some(4), Some(8), Some(8)]));
    g.outputs.push(value_info("y", &[Some(1), Some(8), Some(6), Some(6)]));
    model(&g, 13, &[])
}

fn weight() -> Vec<u8> {
    tensor("w", &[8, 4, 3, 3], &values(1, 8 * 4 * 9))
}

/// Writes `bytes`, rewrites, and returns the error message; checks nothing was written.
fn fails(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    let output = dir.path().join("out.onnx");
    std::fs::write(&input, bytes).unwrap();
    let err = rewrite_file(&input, &output, &ConvertOptions::new(Rank::Fixed(2))).unwrap_err();
    assert!(!output.exists(), "nothing written");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    assert_eq!(std::fs::read(&input).unwrap(), bytes, "input untouched");
    let msg = err.to_string();
    assert!(msg.contains("in.onnx"), "names the file: {msg}");
    msg
}

#[test]
fn the_valid_model_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    std::fs::write(&input, one_conv(vec![], weight(), None)).unwrap();
    let report = rewrite_file(&input, dir.path().join("out.onnx"), &ConvertOptions::new(Rank::Fixed(2))).unwrap();
    assert_eq!(report.converted.len(), 1);
}

#[test]
fn not_onnx() {
    let msg = fails(b"this is a text file, not an ONNX model\n");
    assert!(msg.contains("not an ONNX model"), "{msg}");
    let msg = fails(b"");
    assert!(msg.contains("no graph"), "{msg}");
    // Valid protobuf, but not a model.
    let mut b = Vec::new();
    uint_field(&mut b, 1, 7);
    assert!(fails(&b).contains("no graph"));
}

#[test]
fn truncated() {
    let m = one_conv(vec![], weight(), None);
    for cut in [m.len() - 1, m.len() / 2, 3] {
        let msg = fails(&m[..cut]);
        assert!(msg.contains("invalid protobuf") || msg.contains("no graph"), "cut {cut}: {msg}");
    }
}

#[test]
fn external_data() {
    let mut w = Vec::new();
    for d in [8u64, 4, 3, 3] {
        uint_field(&mut w, 1, d);
    }
    uint_field(&mut w, 2, 1);
    bytes_field(&mut w, 8, b"w");
    let mut entry = Vec::new();
    bytes_field(&mut entry, 1, b"location");
    bytes_field(&mut entry, 2, b"weights.bin");
    bytes_field(&mut w, 13, &entry);
    uint_field(&mut w, 14, 1);
    let msg = fails(&one_conv(vec![], w, None));
    assert!(msg.contains("initializer `w`") && msg.contains("external"), "{msg}");
}

#[test]
fn weight_inconsistent_with_attributes() {
    let msg = fails(&one_conv(vec![attr_ints("kernel_shape", &[5, 5])], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("kernel_shape [5, 5]"), "{msg}");
    let msg = fails(&one_conv(vec![attr_int("group", 3)], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("group = 3"), "{msg}");
    let msg = fails(&one_conv(vec![], weight(), Some(tensor("b", &[7], &[0.0; 7]))));
    assert!(msg.contains("node `bad_conv`") && msg.contains("bias `b`"), "{msg}");
    let msg = fails(&one_conv(vec![attr_ints("strides", &[1, 0])], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("strides"), "{msg}");
    let msg = fails(&one_conv(vec![attr_ints("pads", &[1, 1])], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("pads"), "{msg}");
    // The data disagrees with the dims.
    let msg = fails(&one_conv(vec![], tensor("w", &[8, 4, 3, 3], &[0.5; 10]), None));
    assert!(msg.contains("initializer `w`") && msg.contains("288"), "{msg}");
    // Non-finite weights.
    let mut v = values(1, 288);
    v[17] = f32::NAN;
    let msg = fails(&one_conv(vec![], tensor("w", &[8, 4, 3, 3], &v), None));
    assert!(msg.contains("bad_conv"), "{msg}");
    // group = 0, negative pads, negative weight dims.
    let msg = fails(&one_conv(vec![attr_int("group", 0)], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("group value 0"), "{msg}");
    let msg = fails(&one_conv(vec![attr_ints("pads", &[1, -1, 1, 1])], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("pads value -1"), "{msg}");
    let mut w = Vec::new();
    for d in [8i64, -4, 3, 3] {
        uint_field(&mut w, 1, d as u64);
    }
    uint_field(&mut w, 2, 1);
    bytes_field(&mut w, 8, b"w");
    let msg = fails(&one_conv(vec![], w, None));
    assert!(msg.contains("bad_conv") && msg.contains("-4"), "{msg}");
}

#[test]
fn attributes_of_the_wrong_type_are_named() {
    let msg = fails(&one_conv(vec![attr_str("group", "2")], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("`group` is not an INT"), "{msg}");
    let msg = fails(&one_conv(vec![attr_int("auto_pad", 1)], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("`auto_pad` is not a STRING"), "{msg}");
    let msg = fails(&one_conv(vec![attr_int("strides", 2)], weight(), None));
    assert!(msg.contains("node `bad_conv`") && msg.contains("strides"), "{msg}");
    let msg = fails(&one_conv(vec![attr_str("ceil_mode", "yes")], weight(), None));
    assert!(msg.contains("`ceil_mode` is not an INT"), "{msg}");
}
