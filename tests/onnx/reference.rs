//! The loop-nest reference (`exec::reference::conv2d`), the truth every scheme and file
//! conversion is tested against, checked against an independent implementation: tract's `Conv`,
//! over groups, batch, stride, dilation, asymmetric padding, non-square kernels and bias.
#![cfg(feature = "onnx")]

use crate::support::gen::cases;
use crate::support::onnx::*;
use dac::exec::reference;
use proptest::prelude::*;

/// A one-node model computing `layer` on an input of `dims`.
fn conv_model(layer: &dac::Conv2dWeights<f32>, dims: [usize; 4]) -> Vec<u8> {
    let s = layer.shape();
    let g = layer.geometry();
    let p = g.padding;
    let mut graph = Graph::default();
    graph.inits.push(tensor("w", &[s.out_channels, s.in_per_group(), s.kh, s.kw], layer.weight()));
    let mut inputs = vec!["x", "w"];
    if let Some(b) = layer.bias() {
        graph.inits.push(tensor("b", &[s.out_channels], b));
        inputs.push("b");
    }
    let attrs = vec![
        attr_int("group", s.groups as i64),
        attr_ints("strides", &[g.stride.0 as i64, g.stride.1 as i64]),
        attr_ints("dilations", &[g.dilation.0 as i64, g.dilation.1 as i64]),
        attr_ints("pads", &[p.top as i64, p.left as i64, p.bottom as i64, p.right as i64]),
    ];
    graph.nodes.push(node("Conv", "conv", &inputs, &["y"], &attrs, &[]));
    let d: Vec<Option<usize>> = dims.iter().map(|&v| Some(v)).collect();
    graph.inputs.push(value_info("x", &d));
    graph.outputs.push(value_info("y", &[None, None, None, None]));
    model(&graph, 13, &[])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_reference_convolution_equals_tracts(case in cases()) {
        let (layer, input) = case.build::<f32>();
        let want = reference::conv2d(&input, &layer).unwrap();
        let got = run_tract(&conv_model(&layer, input.dims()), &input.dims(), input.as_slice());
        prop_assert_eq!(got.len(), want.as_slice().len());
        let diff = relative_diff(want.as_slice(), &got);
        prop_assert!(diff < 1e-5, "{:?}: differs by {}", case, diff);
    }
}
