//! Every initializer data type ONNX weights come in (FLOAT, FLOAT16, BFLOAT16, DOUBLE), in both
//! encodings (raw bytes and the typed fields), rewritten at full rank and run in tract; and
//! reduced ranks against `exec` on `decompose(layer, r)`.
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::{ConvertOptions, Layout};
use dac::exec::{reference, Tensor4};
use dac::io::onnx::rewrite_model;
use dac::{decompose, Conv2dWeights, Padding, Rank};
use tract_onnx::prelude::DatumType;

const X: [usize; 4] = [1, 4, 9, 9];

/// `x [1, 4, 9, 9]` → Conv (6 outputs, 3x3, pad 1, bias) → `y [1, 6, 9, 9]`, all of `data_type`.
fn model_of(data_type: u64, typed: bool) -> Vec<u8> {
    let mut g = Graph::default();
    let w: Vec<f64> = values(1, 6 * 4 * 9).iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = values(2, 6).iter().map(|&v| f64::from(v)).collect();
    g.inits.push(typed_tensor("w", &[6, 4, 3, 3], data_type, &w, typed));
    g.inits.push(typed_tensor("b", &[6], data_type, &b, typed));
    g.nodes.push(node("Conv", "conv", &["x", "w", "b"], &["y"], &[attr_ints("pads", &[1, 1, 1, 1])], &[]));
    g.inputs.push(typed_value_info("x", data_type, &X.map(Some)));
    g.outputs.push(typed_value_info("y", data_type, &[Some(1), Some(6), Some(9), Some(9)]));
    model(&g, 13, &[])
}

/// Runs `m` on `x`: in its own data type, or widened to f32 for BFLOAT16 (which tract lacks).
fn run(m: &[u8], data_type: u64, x: &[f32]) -> Vec<f32> {
    match data_type {
        DT_FLOAT16 => run_tract_as(m, &X, x, DatumType::F16),
        DT_DOUBLE => run_tract_as(m, &X, x, DatumType::F64),
        DT_BFLOAT16 => {
            let io = [("x", X.map(Some).to_vec()), ("y", vec![Some(1), Some(6), Some(9), Some(9)])];
            run_tract(&widen_bf16(m, &io), &X, x)
        }
        _ => run_tract(m, &X, x),
    }
}

#[test]
fn every_weight_dtype_in_both_encodings_converts_exactly_at_full_rank() {
    let x = values(3, X.iter().product());
    // (data type, its name in reports, tolerance: the factors are rounded to the data type).
    let types = [
        (DT_FLOAT, "float", 1e-6),
        (DT_DOUBLE, "double", 1e-6),
        (DT_FLOAT16, "float16", 5e-3),
        (DT_BFLOAT16, "bfloat16", 1e-2),
    ];
    for (dt, name, tolerance) in types {
        for typed in [false, true] {
            let m = model_of(dt, typed);
            let (out, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Energy(1.0)).allow_slower(true)).unwrap();
            assert_eq!(report.converted.len(), 1, "{name} typed={typed}");
            assert_eq!(report.converted[0].dtype, name);
            assert_eq!(report.converted[0].rank, 6, "min(N, kh·kw)");
            let (want, got) = (run(&m, dt, &x), run(&out, dt, &x));
            let diff = relative_diff(&want, &got);
            assert!(diff < tolerance, "{name} typed={typed}: {diff}");
            // The factors are written in the weight's own data type.
            let inits: Vec<u64> = graph_fields(&out)
                .iter()
                .filter(|f| f.number == 5)
                .map(|f| fields(f.bytes).iter().find(|t| t.number == 2).unwrap().value)
                .collect();
            assert!(inits.iter().all(|&t| t == dt), "{name}: {inits:?}");
        }
    }
}

/// A one-conv model of `layer` on an input of `dims` (float).
fn conv_model(layer: &Conv2dWeights<f32>, dims: [usize; 4]) -> Vec<u8> {
    let s = layer.shape();
    let g = layer.geometry();
    let p = g.padding;
    let mut graph = Graph::default();
    graph.inits.push(tensor("w", &[s.out_channels, s.in_per_group(), s.kh, s.kw], layer.weight()));
    graph.inits.push(tensor("b", &[s.out_channels], layer.bias().unwrap()));
    let attrs = vec![
        attr_int("group", s.groups as i64),
        attr_ints("strides", &[g.stride.0 as i64, g.stride.1 as i64]),
        attr_ints("dilations", &[g.dilation.0 as i64, g.dilation.1 as i64]),
        attr_ints("pads", &[p.top as i64, p.left as i64, p.bottom as i64, p.right as i64]),
    ];
    graph.nodes.push(node("Conv", "conv", &["x", "w", "b"], &["y"], &attrs, &[]));
    graph.inputs.push(value_info("x", &dims.map(Some)));
    graph.outputs.push(value_info("y", &[None, None, None, None]));
    model(&graph, 13, &[])
}

#[test]
fn reduced_ranks_equal_exec_on_decompose() {
    // (dims, groups, stride, dilation, padding): plain, grouped + strided + asymmetric, dilated 5x3.
    let layers = [
        ([8, 4, 3, 3], 1, (1, 1), (1, 1), Padding { top: 1, bottom: 1, left: 1, right: 1 }),
        ([12, 2, 3, 3], 3, (2, 1), (1, 1), Padding { top: 0, bottom: 1, left: 2, right: 0 }),
        ([6, 5, 5, 3], 1, (1, 2), (2, 1), Padding { top: 2, bottom: 0, left: 1, right: 1 }),
    ];
    for (i, (dims, groups, stride, dilation, padding)) in layers.into_iter().enumerate() {
        let layer = Conv2dWeights::builder(values(10 + i as u64, dims.iter().product()), dims)
            .bias(values(20 + i as u64, dims[0]))
            .groups(groups)
            .stride(stride.0, stride.1)
            .dilation(dilation.0, dilation.1)
            .padding(padding)
            .build()
            .unwrap();
        let xdims = [2, dims[1] * groups, 11, 10];
        let x = Tensor4::new(values(30 + i as u64, xdims.iter().product()), xdims).unwrap();
        let m = conv_model(&layer, xdims);
        for rank in 1..layer.shape().max_rank() {
            let (dw, pw) = decompose(&layer, rank).unwrap();
            let want = reference::pair(&x, &dw, &pw).unwrap();
            for layout in Layout::ALL {
                let (out, report) =
                    rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(rank)).allow_slower(true).layout(layout))
                        .unwrap();
                assert_eq!(report.converted[0].rank, rank);
                let got = run_tract(&out, &xdims, x.as_slice());
                let diff = relative_diff(want.as_slice(), &got);
                assert!(diff < 1e-5, "layer {i} rank {rank} {layout:?}: {diff}");
            }
        }
    }
}
