//! Shape inference through the operators of real exports: each case puts a chain of operators
//! between two convolutions and checks the size the second one is counted at (worked out by
//! hand from the ONNX specification), then the totals; an operator inference cannot follow makes
//! the totals unknown and names where it stopped.
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::{ConvertOptions, SizeSource, Summary};
use dac::io::onnx::rewrite_model;
use dac::{Error, Rank};

/// `x [N, 3, 16, 16]` → Conv `a` (8 channels, 3x3, pad 1) → `ya` → `chain` (ending in `z`) →
/// Conv `b` (`c_in` → 4 channels, `k`x`k`) → `y`.
fn net(chain: Vec<Vec<u8>>, inits: Vec<Vec<u8>>, c_in: usize, k: usize, opset: u64) -> Vec<u8> {
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[8, 3, 3, 3], &values(1, 8 * 27)));
    g.inits.push(tensor("b.weight", &[4, c_in, k, k], &values(2, 4 * c_in * k * k)));
    g.inits.extend(inits);
    g.nodes.push(node("Conv", "a", &["x", "a.weight"], &["ya"], &[attr_ints("pads", &[1, 1, 1, 1])], &[]));
    g.nodes.extend(chain);
    g.nodes.push(node("Conv", "b", &["z", "b.weight"], &["y"], &[], &[]));
    g.inputs.push(value_info("x", &[None, Some(3), Some(16), Some(16)]));
    g.outputs.push(value_info("y", &[None, Some(4), None, None]));
    model(&g, opset, &[])
}

fn n(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Vec<u8>]) -> Vec<u8> {
    node(op, "", inputs, outputs, attrs, &[])
}

/// The input size layer `b` is counted at, and where it came from.
fn size_of_b(report: &Summary) -> (Option<(usize, usize)>, SizeSource) {
    let c = report.converted.iter().find(|l| l.name == "b").map(|l| (l.input_size, l.size));
    c.or_else(|| report.skipped.iter().find(|l| l.name == "b").map(|l| (l.input_size, l.size))).expect("layer b")
}

/// Rewrites at rank 1 and checks `b`'s size and that the totals count both convolutions and
/// the `extra` MACs of the chain.
fn check_with(model: &[u8], hw: (usize, usize), c_in: usize, k: usize, extra: u64) {
    let (_, report) = rewrite_model(model, &ConvertOptions::new(Rank::Fixed(1))).expect("rewrites");
    assert_eq!(size_of_b(&report), (Some(hw), SizeSource::Inferred));
    assert!(report.uncounted.is_empty(), "{:?}", report.uncounted);
    let out = ((hw.0 - k + 1) * (hw.1 - k + 1)) as u64;
    let dense = 8 * 27 * 256 + 4 * (c_in * k * k) as u64 * out + extra;
    assert_eq!(report.macs_before(), Some(dense));
}

fn check(model: &[u8], hw: (usize, usize), c_in: usize, k: usize) {
    check_with(model, hw, c_in, k, 0)
}

#[test]
fn pools_pads_and_windows() {
    let pool = |op: &str, attrs: Vec<Vec<u8>>| n(op, &["ya"], &["z"], &attrs);
    let k3s2 = || vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("strides", &[2, 2])];
    let cases: Vec<(Vec<u8>, (usize, usize))> = vec![
        (pool("MaxPool", [k3s2(), vec![attr_ints("pads", &[1, 1, 1, 1])]].concat()), (8, 8)),
        (pool("MaxPool", k3s2()), (7, 7)),
        (pool("MaxPool", [k3s2(), vec![attr_int("ceil_mode", 1)]].concat()), (8, 8)),
        (pool("AveragePool", vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])]), (8, 8)),
        (pool("MaxPool", [k3s2(), vec![attr_str("auto_pad", "SAME_UPPER")]].concat()), (8, 8)),
        (pool("LpPool", vec![attr_ints("kernel_shape", &[5, 3]), attr_ints("dilations", &[1, 2])]), (12, 12)),
    ];
    for (chain, hw) in cases {
        check(&net(vec![chain], vec![], 8, 3, 13), hw, 8, 3);
    }
    // ceil_mode drops a last window that would start in the padding: 16 → 5, then k2 s2 pad 1
    // gives ceil(5 / 2) + 1 = 4 windows, the last starting in the padding: 3.
    let shrink = n("MaxPool", &["ya"], &["p"], &[attr_ints("kernel_shape", &[12, 12]), attr_ints("strides", &[1, 1])]);
    let ceil = n(
        "MaxPool",
        &["p"],
        &["z"],
        &[
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("ceil_mode", 1),
        ],
    );
    check(&net(vec![shrink, ceil], vec![], 8, 3, 13), (3, 3), 8, 3);
}

#[test]
fn pads_given_and_computed() {
    let given = n("Pad", &["ya", "pads"], &["z"], &[]);
    check(&net(vec![given], vec![ints("pads", &[0, 0, 1, 2, 0, 0, 3, 4])], 8, 3, 13), (20, 22), 8, 3);
    let attr = n("Pad", &["ya"], &["z"], &[attr_ints("pads", &[0, 0, 1, 2, 0, 0, 3, 4])]);
    check(&net(vec![attr], vec![], 8, 3, 9), (20, 22), 8, 3);
    // pads = [0, 0, h/8, h/8, 0, 0, h/8, h/8] from Shape → Gather → Div → Concat (h = 16).
    let chain = vec![
        n("Shape", &["ya"], &["s"], &[]),
        n("Gather", &["s", "two"], &["h"], &[attr_int("axis", 0)]),
        n("Div", &["h", "eight"], &["q"], &[]),
        n("Concat", &["zeros", "q", "q", "zeros", "q", "q"], &["pads"], &[attr_int("axis", 0)]),
        n("Pad", &["ya", "pads"], &["z"], &[]),
    ];
    let inits = vec![ints("two", &[2]), ints("eight", &[8]), ints("zeros", &[0, 0])];
    check(&net(chain, inits, 8, 3, 13), (20, 20), 8, 3);
    // The same pads sliced out of a longer constant, through Slice, Cast and a Constant node.
    let chain = vec![
        n("Constant", &[], &["long"], &[attr_tensor("value", &int_tensor("", &[10], &[9, 0, 0, 2, 2, 0, 0, 2, 2, 9]))]),
        n("Slice", &["long", "one", "nine"], &["sl"], &[]),
        n("Cast", &["sl"], &["pads"], &[attr_int("to", 7)]),
        n("Pad", &["ya", "pads"], &["z"], &[]),
    ];
    check(&net(chain, vec![ints("one", &[1]), ints("nine", &[9])], 8, 3, 13), (20, 20), 8, 3);
}

/// PyTorch's export of `F.pad(x, (0, 2, 1, 0))` (opset 11 and later, torch 1.13): the pads,
/// given last axis first, are reordered on a 2-D view: `[0, 2, 1, 0, 0, 0, 0, 0]` → rows of
/// (begin, end) per axis → rows reversed (a negative step) → transposed → flattened:
/// `[0, 0, 1, 0, 0, 0, 0, 2]`, so 16x16 becomes 17x18.
#[test]
fn torch_pad_export_reorders_its_pads_through_2d_views() {
    let chain = vec![
        n("Constant", &[], &["user"], &[attr_tensor("value", &int_tensor("", &[4], &[0, 2, 1, 0]))]),
        n("ConstantOfShape", &["four"], &["zeros"], &[attr_tensor("value", &int_tensor("", &[1], &[0]))]),
        n("Concat", &["user", "zeros"], &["cat"], &[attr_int("axis", 0)]),
        n("Reshape", &["cat", "pairs"], &["rows"], &[]),
        n("Slice", &["rows", "minus1", "most_negative", "axis0", "minus1"], &["reversed"], &[]),
        n("Transpose", &["reversed"], &["columns"], &[attr_ints("perm", &[1, 0])]),
        n("Reshape", &["columns", "flat"], &["pads64"], &[]),
        n("Cast", &["pads64"], &["pads"], &[attr_int("to", 7)]),
        n("Pad", &["ya", "pads"], &["z"], &[attr_str("mode", "constant")]),
    ];
    let inits = vec![
        ints("four", &[4]),
        ints("pairs", &[-1, 2]),
        ints("minus1", &[-1]),
        ints("most_negative", &[-i64::MAX]),
        ints("axis0", &[0]),
        ints("flat", &[-1]),
    ];
    check(&net(chain, inits, 8, 3, 13), (17, 18), 8, 3);
    // Rows of a 2-D constant gathered in reverse order, then flattened: pads (0, 0, 1, 2) at
    // the beginnings and (0, 0, 3, 4) at the ends.
    let chain = vec![
        n("Gather", &["table", "swap"], &["picked"], &[attr_int("axis", 0)]),
        n("Reshape", &["picked", "flat"], &["pads"], &[]),
        n("Pad", &["ya", "pads"], &["z"], &[]),
    ];
    let inits =
        vec![int_tensor("table", &[2, 4], &[0, 0, 3, 4, 0, 0, 1, 2]), ints("swap", &[1, 0]), ints("flat", &[-1])];
    check(&net(chain, inits, 8, 3, 13), (20, 22), 8, 3);
}

#[test]
fn channels_concat_split_slice_and_shuffle() {
    let concat = n("Concat", &["ya", "ya"], &["z"], &[attr_int("axis", 1)]);
    check(&net(vec![concat], vec![], 16, 3, 13), (16, 16), 16, 3);
    let split = n("Split", &["ya", "halves"], &["z", "other"], &[attr_int("axis", 1)]);
    check(&net(vec![split], vec![ints("halves", &[3, 5])], 3, 3, 13), (16, 16), 3, 3);
    let split_attr = n("Split", &["ya"], &["other", "z"], &[attr_int("axis", 1)]);
    check(&net(vec![split_attr], vec![], 4, 3, 11), (16, 16), 4, 3);
    // Rows 0, 2, ..., 14 (step 2 to the end) and columns 2..14.
    let slice = n("Slice", &["ya", "starts", "ends", "axes", "steps"], &["z"], &[]);
    let inits =
        vec![ints("starts", &[0, 2]), ints("ends", &[i64::MAX, -2]), ints("axes", &[2, -1]), ints("steps", &[2, 1])];
    check(&net(vec![slice], inits, 8, 3, 13), (8, 12), 8, 3);
    // ShuffleNet's channel shuffle: [1, 2, 4, 16, 16] → transpose → [1, -1, 16, 16] (0 copies).
    let chain = vec![
        n("Reshape", &["ya", "split_shape"], &["r"], &[]),
        n("Transpose", &["r"], &["t"], &[attr_ints("perm", &[0, 2, 1, 3, 4])]),
        n("Reshape", &["t", "back"], &["z"], &[]),
    ];
    let inits = vec![ints("split_shape", &[1, 2, 4, 16, 16]), ints("back", &[0, -1, 16, 16])];
    check(&net(chain, inits, 8, 3, 13), (16, 16), 8, 3);
    // Flatten then back, and Unsqueeze/Squeeze in their input (13) and attribute (11) forms.
    let chain = vec![n("Flatten", &["ya"], &["f"], &[attr_int("axis", 2)]), n("Reshape", &["f", "back"], &["z"], &[])];
    check(&net(chain, vec![ints("back", &[1, 8, 8, 32])], 8, 3, 13), (8, 32), 8, 3);
    let chain = vec![n("Unsqueeze", &["ya", "zero"], &["u"], &[]), n("Squeeze", &["u", "zero"], &["z"], &[])];
    check(&net(chain, vec![ints("zero", &[0])], 8, 3, 13), (16, 16), 8, 3);
    let chain = vec![
        n("Unsqueeze", &["ya"], &["u"], &[attr_ints("axes", &[-1])]),
        n("Squeeze", &["u"], &["z"], &[attr_ints("axes", &[4])]),
    ];
    check(&net(chain, vec![], 8, 3, 11), (16, 16), 8, 3);
    let d2s = n("DepthToSpace", &["ya"], &["z"], &[attr_int("blocksize", 2)]);
    check(&net(vec![d2s], vec![], 2, 3, 13), (32, 32), 2, 3);
}

#[test]
fn resizing() {
    let scales = tensor("scales", &[4], &[1.0, 1.0, 2.0, 1.5]);
    let resize = n("Resize", &["ya", "", "scales"], &["z"], &[]);
    check(&net(vec![resize], vec![scales.clone()], 8, 3, 13), (32, 24), 8, 3);
    let sized = n("Resize", &["ya", "", "", "sizes"], &["z"], &[]);
    check(&net(vec![sized], vec![ints("sizes", &[1, 8, 20, 24])], 8, 3, 13), (20, 24), 8, 3);
    // Opset 18: sizes for the spatial axes only.
    let axes = n("Resize", &["ya", "", "", "hw"], &["z"], &[attr_ints("axes", &[2, 3])]);
    check(&net(vec![axes], vec![ints("hw", &[12, 20])], 8, 3, 18), (12, 20), 8, 3);
    let upsample = n("Upsample", &["ya", "scales"], &["z"], &[]);
    check(&net(vec![upsample], vec![scales], 8, 3, 9), (32, 24), 8, 3);
    let transpose = n("ConvTranspose", &["ya", "t.weight"], &["z"], &[attr_ints("strides", &[2, 2])]);
    let m = net(vec![transpose], vec![tensor("t.weight", &[8, 5, 2, 2], &values(3, 160))], 5, 3, 13);
    // Every input pixel of every input channel meets 5 output channels through 2x2 taps.
    check_with(&m, (32, 32), 5, 3, 16 * 16 * 8 * 5 * 4);
    // Global pooling, then Expand back to 5x5 (broadcasting).
    let chain = vec![n("GlobalAveragePool", &["ya"], &["g"], &[]), n("Expand", &["g", "to"], &["z"], &[])];
    check(&net(chain, vec![ints("to", &[1, 1, 5, 5])], 8, 3, 13), (5, 5), 8, 3);
}

#[test]
fn squeeze_excitation_and_elementwise_chains() {
    // x * HardSigmoid(Conv(Relu(Conv(ReduceMean(x))))), then x * Sigmoid(...) and HardSwish.
    let chain = vec![
        n("ReduceMean", &["ya"], &["m"], &[attr_ints("axes", &[2, 3]), attr_int("keepdims", 1)]),
        n("Conv", &["m", "se1.weight"], &["s1"], &[]),
        n("Relu", &["s1"], &["s2"], &[]),
        n("Conv", &["s2", "se2.weight"], &["s3"], &[]),
        n("HardSigmoid", &["s3"], &["s4"], &[attr_float("alpha", 0.2)]),
        n("Mul", &["ya", "s4"], &["e"], &[]),
        n("Sigmoid", &["e"], &["sg"], &[]),
        n("Mul", &["e", "sg"], &["e2"], &[]),
        n("HardSwish", &["e2"], &["e3"], &[]),
        n("Clip", &["e3"], &["e4"], &[]),
        n("Pow", &["e4", "two"], &["e5"], &[]),
        n("Sqrt", &["e5"], &["e6"], &[]),
        n("Erf", &["e6"], &["e7"], &[]),
        n("Softmax", &["e7"], &["e8"], &[attr_int("axis", 1)]),
        n("Dropout", &["e8"], &["e9"], &[]),
        n("Identity", &["e9"], &["e10"], &[]),
        n("Sub", &["e10", "ya"], &["e11"], &[]),
        n("BatchNormalization", &["e11", "s", "b", "mu", "var"], &["z"], &[]),
    ];
    let c = |name: &str| tensor(name, &[8], &[1.0; 8]);
    let inits = vec![
        tensor("se1.weight", &[2, 8, 1, 1], &values(4, 16)),
        tensor("se2.weight", &[8, 2, 1, 1], &values(5, 16)),
        tensor("two", &[], &[2.0]),
        c("s"),
        c("b"),
        c("mu"),
        c("var"),
    ];
    let m = net(chain, inits, 8, 3, 13);
    // The squeeze-excitation 1x1 convolutions run on 1x1 maps: 2·8 MACs each.
    check_with(&m, (16, 16), 8, 3, 2 * 16);
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(1))).unwrap();
    let se: Vec<u64> =
        report.skipped.iter().filter(|l| l.name.starts_with("se")).map(|l| l.cost.unwrap().macs).collect();
    assert_eq!(se, [16, 16]);
}

#[test]
fn channels_last_blocks_count_their_matmuls() {
    // ConvNeXt: NCHW → NHWC → LayerNorm → MatMul [8, 32] → MatMul [32, 8] → NCHW.
    let chain = vec![
        n("Transpose", &["ya"], &["t"], &[attr_ints("perm", &[0, 2, 3, 1])]),
        n("LayerNormalization", &["t", "g", "beta"], &["ln"], &[attr_int("axis", -1)]),
        n("MatMul", &["ln", "w1"], &["h"], &[]),
        n("MatMul", &["h", "w2"], &["o"], &[]),
        n("Transpose", &["o"], &["z"], &[attr_ints("perm", &[0, 3, 1, 2])]),
    ];
    let inits = vec![
        tensor("g", &[8], &[1.0; 8]),
        tensor("beta", &[8], &[0.0; 8]),
        tensor("w1", &[8, 32], &values(6, 256)),
        tensor("w2", &[32, 8], &values(7, 256)),
    ];
    check_with(&net(chain, inits, 8, 3, 17), (16, 16), 8, 3, 2 * 16 * 16 * 8 * 32);
}

#[test]
fn a_static_batch_is_counted_per_image() {
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[8, 3, 3, 3], &values(1, 216)));
    g.inits.push(tensor("fc", &[8, 5], &values(2, 40)));
    g.nodes.push(node("Conv", "a", &["x", "a.weight"], &["ya"], &[], &[]));
    g.nodes.push(node("GlobalAveragePool", "", &["ya"], &["p"], &[], &[]));
    g.nodes.push(node("Flatten", "", &["p"], &["f"], &[], &[]));
    g.nodes.push(node("Gemm", "fc", &["f", "fc"], &["y"], &[], &[]));
    g.inputs.push(value_info("x", &[Some(4), Some(3), Some(10), Some(10)]));
    g.outputs.push(value_info("y", &[Some(4), Some(5)]));
    let (_, report) = rewrite_model(&model(&g, 13, &[]), &ConvertOptions::new(Rank::Fixed(1))).unwrap();
    assert_eq!(report.linear.macs, 40);
    assert_eq!(report.macs_before(), Some(8 * 27 * 64 + 40));
}

#[test]
fn where_inference_stops_the_totals_are_unknown_and_say_why() {
    let m = net(vec![n("Mystery", &["ya"], &["z"], &[])], vec![], 8, 3, 13);
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(1))).unwrap();
    assert_eq!(size_of_b(&report), (None, SizeSource::Unknown));
    assert_eq!(report.macs_before(), None);
    let reason = &report.uncounted.iter().find(|u| u.name == "b").expect("b is uncounted").reason;
    assert!(reason.contains("Mystery"), "{reason}");
    // The model's input size does not stand in for a layer after the stop.
    let err = rewrite_model(&m, &ConvertOptions::macs(1.5).input_size(16, 16)).unwrap_err();
    assert!(matches!(&err, Error::UnknownInputSize { layer, reason } if layer == "b" && reason.contains("Mystery")));
    // A pad computed from data (NonZero) stops inference too.
    let chain = vec![n("NonZero", &["ya"], &["nz"], &[]), n("Pad", &["ya", "nz"], &["z"], &[])];
    let (_, report) = rewrite_model(&net(chain, vec![], 8, 3, 13), &ConvertOptions::new(Rank::Fixed(1))).unwrap();
    assert_eq!(report.macs_before(), None);
    // Declaring b's size makes the totals known again.
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(1)).layer_input("b", 16, 16)).unwrap();
    assert_eq!(size_of_b(&report), (Some((16, 16)), SizeSource::Declared));
    assert!(report.macs_before().is_some());
}

#[test]
fn a_symbolic_input_size_needs_the_input_flag() {
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[8, 3, 3, 3], &values(1, 216)));
    g.nodes.push(node("Conv", "a", &["x", "a.weight"], &["y"], &[attr_int("group", 1)], &[]));
    g.inputs.push(value_info("x", &[None, Some(3), None, None]));
    g.outputs.push(value_info("y", &[None, Some(8), None, None]));
    let m = model(&g, 13, &[]);
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(1))).unwrap();
    assert!(report.uncounted[0].reason.contains("symbolic or missing dimension 2"), "{:?}", report.uncounted);
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(1)).input_size(12, 12)).unwrap();
    assert_eq!(report.macs_before(), Some(8 * 27 * 100));
}

/// A node of onnxruntime's `com.microsoft` domain.
fn ms(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut domain = Vec::new();
    bytes_field(&mut domain, 7, b"com.microsoft");
    node(op, "", inputs, outputs, attrs, &domain)
}

/// An INT8 tensor.
fn int8(name: &str, dims: &[usize], data: &[f64]) -> Vec<u8> {
    typed_tensor(name, dims, 3, data, true)
}

#[test]
fn quantized_operators_are_followed_and_their_macs_counted() {
    // onnxruntime's quantizer: QDQ pairs, QOperator convolutions, dynamic quantization, and its
    // contrib elementwise ops between the two float convolutions.
    let pads = || attr_ints("pads", &[1, 1, 1, 1]);
    let chain = vec![
        n("QuantizeLinear", &["ya", "s", "zp"], &["q"], &[]),
        n("QLinearConv", &["q", "s", "zp", "qw", "s", "zp", "s", "zp"], &["qc"], &[pads()]),
        n("ConvInteger", &["qc", "qw1"], &["ci"], &[]),
        n("Cast", &["ci"], &["cf"], &[attr_int("to", 1)]),
        n("DynamicQuantizeLinear", &["cf"], &["dq", "dqs", "dqz"], &[]),
        ms("QLinearAdd", &["dq", "dqs", "dqz", "dq", "dqs", "dqz", "s", "zp"], &["qa"], &[]),
        n("DequantizeLinear", &["qa", "s", "zp"], &["d"], &[]),
        ms("FusedConv", &["d", "fw"], &["z"], &[pads(), attr_str("activation", "Relu")]),
    ];
    let inits = vec![
        tensor("s", &[], &[0.1]),
        int8("zp", &[], &[0.0]),
        int8("qw", &[8, 8, 3, 3], &[1.0; 576]),
        int8("qw1", &[8, 8, 1, 1], &[1.0; 64]),
        tensor("fw", &[8, 8, 3, 3], &values(3, 576)),
    ];
    // QLinearConv 8·72 and ConvInteger 8·8 MACs per position, FusedConv 8·72, at 16x16.
    let extra = (8 * 72 + 8 * 8 + 8 * 72) * 256;
    check_with(&net(chain, inits, 8, 3, 13), (16, 16), 8, 3, extra);
}

#[test]
fn quantized_matrix_products_count_as_linear_layers() {
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[8, 3, 3, 3], &values(1, 216)));
    g.inits.extend([tensor("s", &[], &[0.1]), int8("zp", &[], &[0.0]), int8("fc", &[8, 5], &[1.0; 40])]);
    g.inits.push(int8("fc2", &[5, 3], &[1.0; 15]));
    g.nodes.push(node("Conv", "a", &["x", "a.weight"], &["ya"], &[], &[]));
    g.nodes.push(n("GlobalAveragePool", &["ya"], &["p"], &[]));
    g.nodes.push(n("Flatten", &["p"], &["f"], &[]));
    g.nodes.push(n("QuantizeLinear", &["f", "s", "zp"], &["fq"], &[]));
    g.nodes.push(ms("QGemm", &["fq", "s", "zp", "fc", "s", "zp"], &["h"], &[]));
    g.nodes.push(n("QLinearMatMul", &["h", "s", "zp", "fc2", "s", "zp", "s", "zp"], &["h2"], &[]));
    g.nodes.push(n("MatMulInteger", &["h2", "fc3"], &["y"], &[]));
    g.inits.push(int8("fc3", &[3, 2], &[1.0; 6]));
    g.inputs.push(value_info("x", &[Some(1), Some(3), Some(10), Some(10)]));
    g.outputs.push(value_info("y", &[Some(1), Some(2)]));
    let (_, report) = rewrite_model(&model(&g, 13, &[]), &ConvertOptions::new(Rank::Fixed(1))).unwrap();
    assert_eq!(report.linear.macs, 40 + 15 + 6);
    assert_eq!(report.macs_before(), Some(8 * 27 * 64 + 61));
    // Integer kernels are outside the float time table: listed, not timed.
    let ops: Vec<&str> = report.unmodeled.iter().map(|(op, _)| op.as_str()).collect();
    for op in ["QGemm", "QLinearMatMul", "MatMulInteger"] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
}

#[test]
fn elementwise_scatter_gather_elements_top_k_and_grid_sample() {
    let chain = vec![
        n("Tan", &["ya"], &["t1"], &[]),
        n("Trilu", &["t1"], &["t2"], &[]),
        n("MeanVarianceNormalization", &["t2"], &["t3"], &[]),
        n("ScatterElements", &["t3", "si", "su"], &["t4"], &[]),
        n("GatherElements", &["t4", "gi"], &["g"], &[attr_int("axis", 2)]),
        n("TopK", &["g", "k"], &["z", "zi"], &[attr_int("axis", -1)]),
    ];
    let inits = vec![
        int_tensor("si", &[1, 1, 1, 1], &[0]),
        tensor("su", &[1, 1, 1, 1], &[0.0]),
        int_tensor("gi", &[1, 8, 12, 12], &[0; 1152]),
        ints("k", &[10]),
    ];
    // GatherElements takes its indices' 12x12, TopK keeps 10 along the last axis.
    check(&net(chain, inits, 8, 3, 13), (12, 10), 8, 3);
    let chain = vec![n("GridSample", &["ya", "grid"], &["z"], &[])];
    check(&net(chain, vec![tensor("grid", &[1, 7, 9, 2], &[0.0; 126])], 8, 3, 16), (7, 9), 8, 3);
}
