//! ONNX rewriting: wire-level preservation, naming, shared weights, and equivalence in tract.
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::{ConvertOptions, Layout, SizeSource, SkipReason};
use dac::io::onnx::{rewrite_file, rewrite_model};
use dac::Rank;

const MODEL_UNKNOWN: &[u8] = b"model-field-999";
const GRAPH_UNKNOWN: &[u8] = b"graph-field-999";
const NODE_UNKNOWN: &[u8] = b"node-field-999";

fn unknown(payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(&mut b, 999, payload);
    b
}

#[allow(clippy::too_many_arguments)]
fn conv(g: &mut Graph, name: &str, x: &str, y: &str, dims: [usize; 4], bias: bool, attrs: Vec<Vec<u8>>, seed: u64) {
    let w = format!("{name}.weight");
    g.inits.push(tensor(&w, &dims, &values(seed, dims.iter().product())));
    let mut inputs = vec![x.to_string(), w];
    if bias {
        let b = format!("{name}.bias");
        g.inits.push(tensor(&b, &[dims[0]], &values(seed + 1000, dims[0])));
        inputs.push(b);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut doc = Vec::new();
    bytes_field(&mut doc, 6, format!("doc of {name}").as_bytes());
    if name == "conv0" {
        doc.extend(unknown(NODE_UNKNOWN));
    }
    g.nodes.push(node("Conv", name, &inputs, &[y], &attrs, &doc));
}

/// Five convolutions: padded + bias, grouped + strided + asymmetric pads, dilated with
/// auto_pad and kernel_shape, 1x1, 5x3. Input `[N, 3, 12, 12]`, output `y`.
fn net(with_unknown: bool) -> Vec<u8> {
    let g = net_graph(with_unknown);
    model(&g, 13, &if with_unknown { unknown(MODEL_UNKNOWN) } else { Vec::new() })
}

pub(crate) fn net_graph(with_unknown: bool) -> Graph {
    let mut g = Graph::default();
    conv(&mut g, "conv0", "input", "c0", [16, 3, 3, 3], true, vec![attr_ints("pads", &[1, 1, 1, 1])], 1);
    g.nodes.push(node("Relu", "relu0", &["c0"], &["r0"], &[], &[]));
    conv(
        &mut g,
        "conv1",
        "r0",
        "c1",
        [16, 4, 3, 3],
        false,
        vec![attr_int("group", 4), attr_ints("strides", &[2, 2]), attr_ints("pads", &[0, 1, 1, 0])],
        2,
    );
    conv(
        &mut g,
        "conv2",
        "c1",
        "c2",
        [12, 16, 3, 3],
        true,
        vec![attr_ints("dilations", &[2, 2]), attr_str("auto_pad", "SAME_UPPER"), attr_ints("kernel_shape", &[3, 3])],
        3,
    );
    g.nodes.push(node("Relu", "relu2", &["c2"], &["r2"], &[], &[]));
    conv(&mut g, "conv3", "r2", "c3", [8, 12, 1, 1], true, vec![], 4);
    conv(&mut g, "conv4", "c3", "y", [10, 8, 5, 3], true, vec![attr_ints("pads", &[2, 1, 2, 1])], 5);
    g.inputs.push(value_info("input", &[None, Some(3), Some(12), Some(12)]));
    g.outputs.push(value_info("y", &[None, Some(10), Some(6), Some(6)]));
    g.value_info.push(value_info("c1", &[None, Some(16), Some(6), Some(6)]));
    if with_unknown {
        g.extra = unknown(GRAPH_UNKNOWN);
    }
    g
}

pub(crate) const SHAPE: [usize; 4] = [2, 3, 12, 12];

fn full_rank() -> ConvertOptions {
    ConvertOptions::new(Rank::Energy(1.0)).allow_slower(true)
}

#[test]
fn selection_matching_nothing_returns_the_input_bytes() {
    let m = net(true);
    // A pattern matching no convolution is an error, as for checkpoints.
    let err = rewrite_model(&m, &full_rank().include("no-such-layer")).unwrap_err();
    assert!(matches!(err, dac::Error::NoMatch { option: "include", .. }), "{err}");
    // Only the 1x1 layer selected: nothing to convert.
    let (out, report) = rewrite_model(&m, &full_rank().include("conv3")).unwrap();
    assert_eq!(out, m, "byte-identical");
    assert!(report.converted.is_empty());
    assert!(report.skipped.iter().any(|s| s.name == "conv3" && s.reason == SkipReason::PointwiseKernel));
    assert!(report.skipped.iter().any(|s| s.name == "conv0" && s.reason == SkipReason::NotIncluded));
    // Every conv excluded: the same.
    let (out, _) = rewrite_model(&m, &full_rank().exclude("*")).unwrap();
    assert_eq!(out, m);
}

#[test]
fn full_rank_matches_the_original_in_tract_in_both_layouts() {
    let m = net(false);
    let x = values(42, SHAPE.iter().product());
    let reference = run_tract(&m, &SHAPE, &x);
    for layout in Layout::ALL {
        let (out, report) = rewrite_model(&m, &full_rank().layout(layout)).unwrap();
        let names: Vec<&str> = report.converted.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["conv0", "conv1", "conv2", "conv4"], "{layout:?}");
        for c in &report.converted {
            assert_eq!(c.rank, c.max_rank, "{}", c.name);
            assert!(c.relative_error < 1e-5, "{}: {}", c.name, c.relative_error);
        }
        let got = run_tract(&out, &SHAPE, &x);
        let d = relative_diff(&reference, &got);
        assert!(d < 1e-4, "{layout:?}: relative difference {d}");
    }
}

#[test]
fn low_rank_runs_and_approximates() {
    let m = net(false);
    let x = values(7, SHAPE.iter().product());
    let reference = run_tract(&m, &SHAPE, &x);
    let (fused, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2))).unwrap();
    assert!(report.converted.iter().all(|c| c.rank == 2));
    let (split, _) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2)).layout(Layout::Multiplier1)).unwrap();
    let a = run_tract(&fused, &SHAPE, &x);
    let b = run_tract(&split, &SHAPE, &x);
    assert!(relative_diff(&a, &b) < 1e-5, "the two layouts compute the same function");
    assert!(relative_diff(&reference, &a) > 1e-3, "rank 2 is an approximation");
    assert!(report.reduction().unwrap() > 1.0);
}

/// What a graph field stands for in the structural comparison: itself (its exact bytes), or
/// its part of a converted layer (the layer's nodes, the layer's initializers).
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Same(&'a [u8]),
    Nodes(String),
    Inits(String),
}

/// The graph's fields as tokens, consecutive parts of one layer collapsed; `part` says which
/// fields belong to a converted layer.
fn tokens<'a>(graph: &[Field<'a>], part: impl Fn(&Field<'a>) -> Option<Token<'a>>) -> Vec<Token<'a>> {
    let mut out: Vec<Token<'a>> = Vec::new();
    for f in graph {
        let t = part(f).unwrap_or(Token::Same(f.raw));
        if matches!(t, Token::Same(_)) || out.last() != Some(&t) {
            out.push(t);
        }
    }
    out
}

#[test]
fn nothing_else_is_lost_structurally() {
    let m = net(true);
    let (out, report) = rewrite_model(&m, &full_rank()).unwrap();
    let layers: Vec<&str> = report.converted.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(layers, ["conv0", "conv1", "conv2", "conv4"]);
    // Every model field but the graph byte-identical, in order.
    let outside =
        |b: &[u8]| fields(b).into_iter().filter(|f| f.number != 7).map(|f| f.raw.to_vec()).collect::<Vec<_>>();
    assert_eq!(outside(&out), outside(&m));
    // The graph's fields in order, each converted node and weight swapped in place.
    let (before, after) = (graph_fields(&m), graph_fields(&out));
    let old_inits: Vec<String> = before.iter().filter(|f| f.number == 5).map(|f| string_field(f.bytes, 8)).collect();
    let stem_of = |init: &str| layers.iter().find(|l| init.starts_with(&format!("{l}."))).map(|l| l.to_string());
    let want = tokens(&before, |f| match f.number {
        1 => Some(Token::Nodes(string_field(f.bytes, 3)))
            .filter(|t| matches!(t, Token::Nodes(n) if layers.contains(&n.as_str()))),
        5 => report
            .removed
            .contains(&string_field(f.bytes, 8))
            .then(|| Token::Inits(stem_of(&string_field(f.bytes, 8)).unwrap())),
        _ => None,
    });
    let got = tokens(&after, |f| match f.number {
        1 => {
            let name = string_field(f.bytes, 3);
            report.converted.iter().find(|c| c.written.contains(&name)).map(|c| Token::Nodes(c.name.clone()))
        }
        5 => {
            let name = string_field(f.bytes, 8);
            (!old_inits.contains(&name))
                .then(|| Token::Inits(stem_of(&name).expect("a new initializer names its layer")))
        }
        _ => None,
    });
    assert_eq!(got, want);
    // The original node's doc string and unknown field are on the node producing its output,
    // once.
    let carriers: Vec<String> = after
        .iter()
        .filter(|f| f.number == 1 && fields(f.bytes).iter().any(|x| x.number == 999 && x.bytes == NODE_UNKNOWN))
        .map(|f| string_field(f.bytes, 2))
        .collect();
    assert_eq!(carriers, ["c0"]);
    let docs = after.iter().filter(|f| f.number == 1 && contains(f.bytes, b"doc of conv0")).count();
    assert_eq!(docs, 1);
    let x = values(3, SHAPE.iter().product());
    assert!(relative_diff(&run_tract(&m, &SHAPE, &x), &run_tract(&out, &SHAPE, &x)) < 1e-4);
}

#[test]
fn new_names_never_collide_with_existing_ones() {
    // A model that already uses every name the rewrite would pick first.
    let mut g = Graph::default();
    conv(&mut g, "conv", "input", "y0", [8, 2, 3, 3], true, vec![attr_ints("pads", &[1, 1, 1, 1])], 9);
    g.inits.push(tensor("conv.depthwise.weight", &[1], &[2.0]));
    g.inits.push(tensor("conv.pointwise.weight", &[1], &[3.0]));
    g.nodes.push(node("Mul", "conv/depthwise", &["y0", "conv.depthwise.weight"], &["y0/dac_depthwise"], &[], &[]));
    g.nodes.push(node("Add", "conv/pointwise", &["y0/dac_depthwise", "conv.pointwise.weight"], &["y"], &[], &[]));
    g.inputs.push(value_info("input", &[None, Some(2), Some(6), Some(6)]));
    g.outputs.push(value_info("y", &[None, Some(8), Some(6), Some(6)]));
    let m = model(&g, 13, &[]);
    let shape = [1, 2, 6, 6];
    let x = values(1, 12 * 6);
    let reference = run_tract(&m, &shape, &x);
    for layout in Layout::ALL {
        let (out, report) = rewrite_model(&m, &full_rank().layout(layout)).unwrap();
        assert_eq!(report.converted.len(), 1);
        assert!(report.converted[0].written.iter().all(|n| n != "conv/depthwise" && n != "conv/pointwise"));
        assert!(contains(&out, b"conv.depthwise.weight_1") || contains(&out, b"conv.depthwise.0.weight"));
        assert!(relative_diff(&reference, &run_tract(&out, &shape, &x)) < 1e-4, "{layout:?}");
    }
}

#[test]
fn a_weight_shared_by_two_convs_is_kept_until_both_are_converted() {
    let mut g = Graph::default();
    g.inits.push(tensor("shared.weight", &[6, 6, 3, 3], &values(5, 6 * 6 * 9)));
    let pads = || vec![attr_ints("pads", &[1, 1, 1, 1])];
    g.nodes.push(node("Conv", "a", &["input", "shared.weight"], &["ya"], &pads(), &[]));
    g.nodes.push(node("Conv", "b", &["ya", "shared.weight"], &["y"], &pads(), &[]));
    g.inputs.push(value_info("input", &[None, Some(6), Some(5), Some(5)]));
    g.outputs.push(value_info("y", &[None, Some(6), Some(5), Some(5)]));
    let m = model(&g, 13, &[]);
    let shape = [1, 6, 5, 5];
    let x = values(2, 150);
    let reference = run_tract(&m, &shape, &x);

    let (one, report) = rewrite_model(&m, &full_rank().include("a")).unwrap();
    assert_eq!(report.converted.len(), 1);
    assert!(report.removed.is_empty());
    assert!(contains(&one, b"shared.weight"));
    assert!(relative_diff(&reference, &run_tract(&one, &shape, &x)) < 1e-4);

    let (both, report) = rewrite_model(&m, &full_rank()).unwrap();
    assert_eq!(report.converted.len(), 2);
    assert_eq!(report.removed, ["shared.weight"]);
    // One decomposition, shared by both pairs.
    assert!(!contains(&both, b"shared.depthwise.weight_1"));
    assert!(report.converted.iter().all(|c| c.relative_error < 1e-5));
    assert!(relative_diff(&reference, &run_tract(&both, &shape, &x)) < 1e-4);
}

#[test]
fn planned_rewrite_meets_the_target() {
    let m = net(false);
    // MACs only: on 12x12 maps most factors are modeled slower than dense.
    let (out, report) = rewrite_model(&m, &ConvertOptions::macs(1.5).allow_slower(true)).unwrap();
    let plan = report.plan.clone().unwrap();
    assert!(plan.met, "{plan:?}");
    assert!(plan.reduction() >= 1.5);
    assert_eq!(report.input_size, Some((12, 12)));
    assert!((report.reduction().unwrap() - plan.reduction()).abs() < 1e-9);
    assert!(report.converted.iter().all(|c| c.size == SizeSource::Inferred));
    let x = values(4, SHAPE.iter().product());
    assert_eq!(run_tract(&out, &SHAPE, &x).len(), 2 * 10 * 36);
}

#[test]
fn writes_atomically_and_never_over_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    let output = dir.path().join("out.onnx");
    std::fs::write(&input, net(false)).unwrap();
    let err = rewrite_file(&input, &input, &full_rank().force(true)).unwrap_err();
    assert!(matches!(err, dac::Error::OutputIsInput { .. }), "{err}");
    rewrite_file(&input, &output, &full_rank()).unwrap();
    let err = rewrite_file(&input, &output, &full_rank()).unwrap_err();
    assert!(matches!(err, dac::Error::OutputExists { .. }), "{err}");
    rewrite_file(&input, &output, &full_rank().force(true)).unwrap();
    assert_eq!(std::fs::read(&input).unwrap(), net(false));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
}

#[test]
fn a_fixed_rank_above_a_layers_maximum_leaves_that_layer_alone() {
    // A depthwise 3x3 convolution (group = C, one output per group: maximum rank 1) followed by
    // a dense one. Rank 2 is impossible for the first and fine for the second.
    let mut g = Graph::default();
    conv(
        &mut g,
        "dw",
        "input",
        "d",
        [3, 1, 3, 3],
        true,
        vec![attr_int("group", 3), attr_ints("pads", &[1, 1, 1, 1])],
        11,
    );
    conv(&mut g, "dense", "d", "y", [16, 3, 3, 3], true, vec![attr_ints("pads", &[1, 1, 1, 1])], 12);
    g.inputs.push(value_info("input", &[None, Some(3), Some(12), Some(12)]));
    g.outputs.push(value_info("y", &[None, Some(16), Some(12), Some(12)]));
    let m = model(&g, 13, &[]);
    let (out, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2))).unwrap();
    let names: Vec<&str> = report.converted.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["dense"]);
    let dw = report.skipped.iter().find(|s| s.name == "dw").expect("dw listed as skipped");
    assert_eq!(dw.reason, SkipReason::RankAboveMaximum { rank: 2, max: 1 });
    assert!(dw.reason.to_string().contains("maximum rank 1"), "{}", dw.reason);
    // The rewritten model still runs and approximates the original.
    let x = values(5, 2 * 3 * 12 * 12);
    let (a, b) = (run_tract(&m, &[2, 3, 12, 12], &x), run_tract(&out, &[2, 3, 12, 12], &x));
    assert_eq!(a.len(), b.len());
    assert!(relative_diff(&a, &b) < 0.9);
}

#[test]
fn every_scheme_at_full_rank_matches_the_original_in_tract() {
    use dac::convert::SchemeChoice;
    use dac::scheme::SchemeKind;
    let m = net(false);
    let x = values(43, SHAPE.iter().product());
    let reference = run_tract(&m, &SHAPE, &x);
    for kind in [SchemeKind::Spatial, SchemeKind::Channel, SchemeKind::Decoupled] {
        let (out, report) = rewrite_model(&m, &full_rank().scheme(SchemeChoice::Only(kind))).unwrap();
        let names: Vec<&str> = report.converted.iter().map(|c| c.name.as_str()).collect();
        // Channel SVD also converts the 1x1 `conv3` (the others cannot reduce a 1x1 kernel).
        let want: &[&str] = match kind {
            SchemeKind::Channel => &["conv0", "conv1", "conv2", "conv3", "conv4"],
            _ => &["conv0", "conv1", "conv2", "conv4"],
        };
        assert_eq!(names, want, "{kind}");
        for c in &report.converted {
            assert_eq!(c.scheme, kind);
            assert!(c.relative_error < 1e-5, "{kind} {}: {}", c.name, c.relative_error);
        }
        let d = relative_diff(&reference, &run_tract(&out, &SHAPE, &x));
        assert!(d < 1e-4, "{kind}: relative difference {d}");
    }
}

#[test]
fn auto_plans_every_scheme_and_meets_the_target() {
    use dac::convert::SchemeChoice;
    let m = net(false);
    let x = values(44, SHAPE.iter().product());
    let reference = run_tract(&m, &SHAPE, &x);
    for target in [1.3, 2.0] {
        let options = ConvertOptions::macs(target).scheme(SchemeChoice::Auto).allow_slower(true);
        let (out, report) = rewrite_model(&m, &options).unwrap();
        let plan = report.plan.clone().unwrap();
        assert!(plan.met && plan.reduction() >= target, "{plan:?}");
        for (c, l) in report.converted.iter().zip(plan.layers.iter().filter(|l| l.rank.is_some())) {
            assert_eq!((Some(c.scheme), Some(c.rank)), (l.scheme, l.rank), "{}", c.name);
            assert_eq!(c.after, Some(l.after), "{}", c.name);
        }
        let got = run_tract(&out, &SHAPE, &x);
        assert_eq!(got.len(), reference.len());
        assert!(relative_diff(&reference, &got) < 1.0, "target {target}");
    }
    // A scheme chosen per layer needs the planner.
    let err = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2)).scheme(SchemeChoice::Auto)).unwrap_err();
    assert!(matches!(err, dac::Error::SchemeNeedsPlanner { .. }), "{err}");
}

/// A 1x1 convolution of rank 6 (its weight a product of 96x6 and 6x64 matrices made here).
/// Planned (`ConvertOptions::speedup`, every scheme, the reference table) to a target rank 6 reaches (modeled 1.25x;
/// the rank-6 pair is about 1.5x), channel SVD converts it at a rank that keeps it exactly and
/// the rewrite equals the original in tract; with DAC-only plans or a fixed rank (DAC's) it
/// stays dense as a 1x1 kernel.
#[test]
fn planned_runs_factor_a_1x1_convolution_by_channel_svd() {
    use dac::convert::SchemeChoice;
    use dac::scheme::SchemeKind;
    let (n, c, r, hw) = (96, 64, 6, 16);
    let (a, b) = (values(3, n * r), values(4, r * c));
    let w: Vec<f32> = (0..n * c).map(|i| (0..r).map(|j| a[i / c * r + j] * b[j * c + i % c]).sum()).collect();
    let mut g = Graph::default();
    g.inits.push(tensor("pw.weight", &[n, c, 1, 1], &w));
    g.nodes.push(node("Conv", "pw", &["input", "pw.weight"], &["y"], &[], &[]));
    g.inputs.push(value_info("input", &[Some(1), Some(c), Some(hw), Some(hw)]));
    g.outputs.push(value_info("y", &[Some(1), Some(n), Some(hw), Some(hw)]));
    let m = model(&g, 13, &[]);
    let (out, report) =
        rewrite_model(&m, &ConvertOptions::speedup(1.25).time_model(dac::time::TimeModel::onnxruntime_x86_64()))
            .unwrap();
    assert!(report.plan.as_ref().unwrap().met);
    let [l] = &report.converted[..] else { panic!("{:?}", report.converted) };
    assert_eq!((l.name.as_str(), l.scheme), ("pw", SchemeKind::Channel));
    assert!(l.rank >= r && l.relative_error < 1e-5, "rank {}: {}", l.rank, l.relative_error);
    let x = values(5, c * hw * hw);
    let d = relative_diff(&run_tract(&m, &[1, c, hw, hw], &x), &run_tract(&out, &[1, c, hw, hw], &x));
    assert!(d < 1e-4, "relative difference {d}");
    let dac_only = ConvertOptions::speedup(1.25).scheme(SchemeChoice::Only(SchemeKind::Dac));
    for options in [dac_only, ConvertOptions::new(Rank::Fixed(4))] {
        let (_, report) = rewrite_model(&m, &options).unwrap();
        assert!(report.converted.is_empty());
        assert_eq!(report.skipped[0].reason, SkipReason::PointwiseKernel);
    }
}

/// The operators outside the time model are listed with their node counts, in graph order;
/// reshaping operators (no arithmetic) and activations onnxruntime fuses into the convolution
/// before them are not.
#[test]
fn operators_outside_the_time_model_are_listed() {
    let mut g = Graph::default();
    conv(&mut g, "c", "input", "a", [8, 3, 3, 3], true, vec![attr_ints("pads", &[1, 1, 1, 1])], 21);
    g.nodes.push(node("Relu", "r", &["a"], &["b"], &[], &[]));
    g.nodes.push(node("Sigmoid", "s", &["b"], &["s_out"], &[], &[]));
    g.nodes.push(node("Mul", "m", &["b", "s_out"], &["m_out"], &[], &[]));
    g.nodes.push(node("Relu", "r2", &["m_out"], &["r2_out"], &[], &[]));
    g.nodes.push(node("Tanh", "t", &["r2_out"], &["t_out"], &[], &[]));
    g.nodes.push(node("Relu", "r3", &["t_out"], &["r3_out"], &[], &[]));
    g.nodes.push(node("Flatten", "f", &["r3_out"], &["y"], &[], &[]));
    g.inputs.push(value_info("input", &[Some(1), Some(3), Some(8), Some(8)]));
    g.outputs.push(value_info("y", &[Some(1), Some(512)]));
    let m = model(&g, 13, &[]);
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2))).unwrap();
    // `r` is fused into `c`, `s` and `m` are a Swish (timed); `r2`, `t`, `r3` follow no kernel
    // that takes them.
    let want = [("Relu", 2), ("Tanh", 1)].map(|(o, n)| (o.to_string(), n));
    assert_eq!(report.unmodeled, want);
    let json = report.to_json();
    assert_eq!(json["unmodeled"][0]["op"], "Relu");
    assert_eq!(json["unmodeled"][0]["nodes"], 2);
}

/// The nodes around the convolutions that onnxruntime runs as kernels of their own are timed
/// at their sizes, as the table says; those it fuses (here a `Pad` before a pooling) cost
/// nothing.
#[test]
fn swish_scales_and_pools_are_timed_at_their_sizes() {
    use dac::time::{ElementOp, TimeModel, TimedNode};
    let mut g = Graph::default();
    conv(&mut g, "c", "input", "a", [24, 3, 3, 3], true, vec![attr_ints("pads", &[1, 1, 1, 1])], 22);
    g.nodes.push(node("Sigmoid", "s", &["a"], &["s_out"], &[], &[]));
    g.nodes.push(node("Mul", "swish", &["s_out", "a"], &["b"], &[], &[]));
    g.nodes.push(node("GlobalAveragePool", "gap", &["b"], &["g"], &[], &[]));
    g.nodes.push(node("HardSigmoid", "gate", &["g"], &["h"], &[], &[]));
    g.nodes.push(node("Mul", "scale", &["b", "h"], &["e"], &[], &[]));
    // A Pad only a pooling reads is fused into it.
    g.inits.push(int_tensor("pads", &[8], &[0, 0, 1, 1, 0, 0, 1, 1]));
    g.nodes.push(node("Pad", "pad", &["e", "pads"], &["e_pad"], &[], &[]));
    let pool = [attr_ints("kernel_shape", &[3, 3]), attr_ints("strides", &[2, 2])];
    g.nodes.push(node("MaxPool", "pool", &["e_pad"], &["p"], &pool, &[]));
    g.nodes.push(node("Flatten", "f", &["p"], &["y"], &[], &[]));
    g.inputs.push(value_info("input", &[Some(1), Some(3), Some(16), Some(16)]));
    g.outputs.push(value_info("y", &[Some(1), Some(24 * 64)]));
    let m = model(&g, 13, &[]);
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2))).unwrap();
    // The HardSigmoid reads a pooled vector, not a convolution: it stays outside the model.
    assert_eq!(report.unmodeled, vec![("HardSigmoid".to_string(), 1)]);
    let t = TimeModel::for_this_cpu();
    let node = |op, input, output, taps| TimedNode::Elements { op, channels: 24, input, output, taps };
    let map = 24 * 16 * 16;
    let want = [
        node(ElementOp::Swish, map, map, 1),
        node(ElementOp::GlobalPool, map, 24, 1),
        node(ElementOp::Scale, map, map, 1),
        node(ElementOp::Pool, 24 * 18 * 18, 24 * 64, 9),
        // The Swish runs blocked; the pooling of 24 channels and the scaling `Mul` read plain.
        node(ElementOp::ReorderOutput, map, map, 1),
    ];
    assert!(ElementOp::ALL.iter().all(|&op| t.models(op)), "the shipped table times every element operator");
    assert!(want.iter().all(|n| t.node(n) > std::time::Duration::ZERO));
    assert_eq!(report.linear_time, Some(t.nodes(&want)));
}

/// onnxruntime's layout reorders, counted by hand from its NCHWc rules: a blocked convolution
/// on a plain input gets a `ReorderInput`, a blocked tensor read by a plain node (`Neg`, a
/// broadcasting `Mul`) or by the graph output a `ReorderOutput`; they belong to the convolution
/// next to them (through a fused `Relu`), the others are fixed time. A `MaxPool` of 32
/// channels runs blocked; a convolution of 8 input channels reads its input as it is.
#[test]
fn layout_reorders_belong_to_the_convolution_beside_them() {
    use dac::time::{ElementOp, TimeModel, TimedNode};
    let mut g = Graph::default();
    let pad = || vec![attr_ints("pads", &[1, 1, 1, 1])];
    conv(&mut g, "a", "input", "a_out", [32, 32, 3, 3], true, pad(), 31);
    g.nodes.push(node("Relu", "relu", &["a_out"], &["r"], &[], &[]));
    let pool = [attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])];
    g.nodes.push(node("MaxPool", "pool", &["r"], &["p"], &pool, &[]));
    g.nodes.push(node("Neg", "neg", &["p"], &["n"], &[], &[]));
    conv(&mut g, "b", "n", "b_out", [8, 32, 3, 3], true, pad(), 32);
    conv(&mut g, "c", "b_out", "c_out", [32, 8, 3, 3], true, pad(), 33);
    g.inits.push(tensor("s", &[1, 32, 1, 1], &values(34, 32)));
    g.nodes.push(node("Mul", "scale", &["c_out", "s"], &["y"], &[], &[]));
    g.inputs.push(value_info("input", &[Some(1), Some(32), Some(16), Some(16)]));
    g.outputs.push(value_info("y", &[Some(1), Some(32), Some(8), Some(8)]));
    let m = model(&g, 13, &[]);
    let options = ConvertOptions::new(Rank::Fixed(1)).exclude("*");
    let (_, report) = rewrite_model(&m, &options).unwrap();
    let t = TimeModel::for_this_cpu();
    assert!(t.models(ElementOp::ReorderInput) && t.models(ElementOp::ReorderOutput));
    let reorder = |op, channels: usize, hw: u64| {
        let e = channels as u64 * hw * hw;
        t.node(&TimedNode::Elements { op, channels, input: e, output: e, taps: 1 })
    };
    let dense = |name: &str| report.skipped.iter().find(|s| s.name == name).unwrap().time.unwrap();
    let alone = |dims: [usize; 4], hw: usize| {
        let geometry = dac::Geometry { padding: dac::Padding::symmetric(1, 1), ..dac::Geometry::default() };
        t.node(&TimedNode::Conv(dac::time::ConvNode::new("x", dims, &geometry, (hw, hw)).unwrap()))
    };
    use ElementOp::{ReorderInput as In, ReorderOutput as Out};
    // a: its plain input in; a 32-channel MaxPool reads its (Relu-fused) output blocked; the
    // Relu's pass over that output counts with it.
    let relu = TimedNode::Elements {
        op: ElementOp::Activation(dac::time::Activation::Relu),
        channels: 32,
        input: 32 * 256,
        output: 32 * 256,
        taps: 1,
    };
    assert_eq!(dense("a"), alone([32, 32, 3, 3], 16) + reorder(In, 32, 16) + t.node(&relu));
    // The pool's output, read by Neg: fixed. b (32 -> 8): its input from Neg reordered in. c
    // reads b's 8 channels plain (fewer than a block), the reorder inside its table entry.
    assert_eq!(dense("b"), alone([8, 32, 3, 3], 8) + reorder(In, 32, 8));
    // c's output, read by a broadcasting Mul, is reordered out.
    assert_eq!(dense("c"), alone([32, 8, 3, 3], 8) + reorder(Out, 32, 8));
    // Fixed: the pool itself, its output's reorder and the Mul (a per-channel scale).
    let scale = TimedNode::Elements { op: ElementOp::Scale, channels: 32, input: 32 * 64, output: 32 * 64, taps: 1 };
    let pooled = TimedNode::Elements { op: ElementOp::Pool, channels: 32, input: 32 * 256, output: 32 * 64, taps: 4 };
    assert_eq!(report.linear_time, Some(t.node(&pooled) + reorder(Out, 32, 8) + t.node(&scale)));
    assert_eq!(report.unmodeled, vec![("Neg".to_string(), 1)]);
}

/// What onnxruntime runs inside another kernel is not a node of its own: `x·hardsigmoid(x)` on a
/// convolution's output is that convolution's pass over its output, counted with the layer; a
/// `Relu` after a `Gemm` is a pass in the fixed time; a `ReduceMean` over the spatial axes is
/// global pooling.
#[test]
fn fused_activations_count_with_their_producer_and_a_spatial_mean_is_global_pooling() {
    use dac::time::{Activation, ElementOp, TimeModel, TimedNode};
    let mut g = Graph::default();
    conv(&mut g, "c", "input", "a", [16, 3, 3, 3], true, vec![attr_ints("pads", &[1, 1, 1, 1])], 23);
    g.nodes.push(node("HardSigmoid", "hs", &["a"], &["h"], &[], &[]));
    g.nodes.push(node("Mul", "hswish", &["a", "h"], &["b"], &[], &[]));
    let mean = [attr_ints("axes", &[-1, -2]), attr_int("keepdims", 0)];
    g.nodes.push(node("ReduceMean", "mean", &["b"], &["m"], &mean, &[]));
    g.inits.push(tensor("fc.weight", &[10, 16], &values(24, 160)));
    g.nodes.push(node("Gemm", "fc", &["m", "fc.weight"], &["f"], &[attr_int("transB", 1)], &[]));
    g.nodes.push(node("Relu", "r", &["f"], &["y"], &[], &[]));
    g.inputs.push(value_info("input", &[Some(1), Some(3), Some(8), Some(8)]));
    g.outputs.push(value_info("y", &[Some(1), Some(10)]));
    let m = model(&g, 13, &[]);
    let (_, report) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2))).unwrap();
    assert!(report.unmodeled.is_empty(), "{:?}", report.unmodeled);
    let t = TimeModel::for_this_cpu();
    let pool = TimedNode::Elements { op: ElementOp::GlobalPool, channels: 16, input: 16 * 64, output: 16, taps: 1 };
    let gemm = TimedNode::MatMul { m: 1, k: 16, n: 10 };
    let act = |a, channels: usize, output: u64| TimedNode::Elements {
        op: ElementOp::Activation(a),
        channels,
        input: output,
        output,
        taps: 1,
    };
    let relu = act(Activation::Relu, 10, 10);
    assert_eq!(report.linear_time, Some(t.nodes(&[pool, gemm, relu])));
    // The layer's time, dense, is its convolution's, its hard swish's, and the reorder of its
    // blocked output for the ReduceMean, which reads plain.
    let options = ConvertOptions::new(Rank::Fixed(2)).exclude("*");
    let (_, dense) = rewrite_model(&model(&g, 13, &[]), &options).unwrap();
    let geometry = dac::Geometry { padding: dac::Padding::symmetric(1, 1), ..dac::Geometry::default() };
    let conv = TimedNode::Conv(dac::time::ConvNode::new("c", [16, 3, 3, 3], &geometry, (8, 8)).unwrap());
    let swish = act(Activation::HardSwish, 16, 16 * 64);
    assert!(t.node(&swish) > std::time::Duration::ZERO);
    let out =
        TimedNode::Elements { op: ElementOp::ReorderOutput, channels: 16, input: 16 * 64, output: 16 * 64, taps: 1 };
    assert_eq!(dense.skipped[0].time, Some(t.nodes(&[conv, swish, out])));
    // From opset 18 the axes are an input.
    let i = g.nodes.iter().position(|n| contains(n, b"ReduceMean")).unwrap();
    g.inits.push(int_tensor("axes", &[2], &[2, 3]));
    g.nodes[i] = node("ReduceMean", "mean", &["b", "axes"], &["m"], &[attr_int("keepdims", 0)], &[]);
    let (_, report) = rewrite_model(&model(&g, 18, &[]), &ConvertOptions::new(Rank::Fixed(2))).unwrap();
    assert!(report.unmodeled.is_empty(), "{:?}", report.unmodeled);
    assert_eq!(report.linear_time, Some(t.nodes(&[pool, gemm, relu])));
}

/// An activation fused into a convolution runs whatever the layer becomes: a `Clip` after a
/// factored layer adds its pass to the layer's time before and after alike, and what a `Relu`
/// adds instead differs by the two table entries, on both sides.
#[test]
fn a_fused_activation_counts_alike_before_and_after_factoring() {
    use dac::time::{Activation, ElementOp, TimeModel, TimedNode};
    let graph = |act: &str| {
        let mut g = Graph::default();
        let pad = || vec![attr_ints("pads", &[1, 1, 1, 1])];
        conv(&mut g, "a", "input", "a_out", [32, 32, 3, 3], true, pad(), 41);
        let mut inputs = vec!["a_out"];
        if act == "Clip" {
            g.inits.push(tensor("lo", &[], &[0.0]));
            g.inits.push(tensor("hi", &[], &[6.0]));
            inputs.extend(["lo", "hi"]);
        }
        g.nodes.push(node(act, "act", &inputs, &["r"], &[], &[]));
        conv(&mut g, "b", "r", "y", [32, 32, 3, 3], true, pad(), 42);
        g.inputs.push(value_info("input", &[Some(1), Some(32), Some(16), Some(16)]));
        g.outputs.push(value_info("y", &[Some(1), Some(32), Some(16), Some(16)]));
        model(&g, 13, &[])
    };
    let options = ConvertOptions::new(Rank::Fixed(2)).include("a");
    let layer = |act: &str| {
        let (_, report) = rewrite_model(&graph(act), &options).unwrap();
        let a = report.converted.iter().find(|c| c.name == "a").unwrap().clone();
        (a.time_before.unwrap(), a.time_after.unwrap())
    };
    let ((clip_before, clip_after), (relu_before, relu_after)) = (layer("Clip"), layer("Relu"));
    let t = TimeModel::for_this_cpu();
    let pass = |a| {
        let e = 32 * 16 * 16;
        t.node(&TimedNode::Elements { op: ElementOp::Activation(a), channels: 32, input: e, output: e, taps: 1 })
    };
    let (clip, relu) = (pass(Activation::Clip), pass(Activation::Relu));
    assert!(clip > relu, "a Clip's pass ({clip:?}) costs more than a Relu's ({relu:?})");
    assert_eq!(clip_before - relu_before, clip - relu);
    assert_eq!(clip_after - relu_after, clip - relu);
}

/// The names of a model's graph inputs and initializers.
fn inputs_and_initializers(model: &[u8]) -> (Vec<String>, Vec<String>) {
    let g = graph_fields(model);
    let names = |n: u32, name_field: u32| -> Vec<String> {
        g.iter().filter(|f| f.number == n).map(|f| string_field(f.bytes, name_field)).collect()
    };
    (names(11, 1), names(5, 8))
}

/// Old exporters list every initializer as a graph input, which ONNX lets a caller replace at
/// run time: by default those layers stay dense (and the file is unchanged); with
/// `freeze_input_weights` they are converted, equal the original at full rank in tract, and the
/// replaced weights leave the inputs. At IR version 3, which requires every initializer to be
/// an input, the new factors are listed too; at IR 8 they are not.
#[test]
fn weights_listed_as_graph_inputs_convert_only_when_frozen() {
    let x = values(9, SHAPE.iter().product());
    for ir in [3, 8] {
        let mut g = net_graph(false);
        g.list_initializers_as_inputs();
        let m = model_ir(&g, 13, ir, &[]);
        let (out, report) = rewrite_model(&m, &full_rank()).unwrap();
        assert_eq!(out, m, "IR {ir}: nothing converted by default");
        assert!(report.converted.is_empty());
        assert!(report.skipped.iter().any(|s| s.name == "conv0" && s.reason == SkipReason::WeightIsGraphInput));
        let (out, report) = rewrite_model(&m, &full_rank().freeze_input_weights(true)).unwrap();
        let names: Vec<&str> = report.converted.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["conv0", "conv1", "conv2", "conv4"], "IR {ir}");
        let (inputs, inits) = inputs_and_initializers(&out);
        for c in &report.converted {
            assert!(!inputs.contains(&c.weight) && !inits.contains(&c.weight), "IR {ir}: {} is gone", c.weight);
        }
        // Biases and the 1x1 layer's weight stay inputs; new factors are inputs only at IR 3.
        assert!(inputs.iter().any(|i| i == "conv0.bias") && inputs.iter().any(|i| i == "conv3.weight"));
        let new: Vec<&String> = inits.iter().filter(|n| !n.ends_with(".bias") && *n != "conv3.weight").collect();
        assert!(!new.is_empty());
        assert_eq!(new.iter().all(|n| inputs.contains(n)), ir == 3, "IR {ir}: {inputs:?}");
        assert!(new.iter().all(|n| !inputs.contains(n)) || ir == 3, "IR {ir}: {inputs:?}");
        let d = relative_diff(&run_tract(&m, &SHAPE, &x), &run_tract(&out, &SHAPE, &x));
        assert!(d < 1e-4, "IR {ir}: {d}");
    }
}

/// Exporters that emit weights as `Constant` nodes instead of initializers: those layers
/// convert like any other, equal the original at full rank in tract, and a `Constant` whose
/// output nothing else reads leaves the graph; one another node still reads stays.
#[test]
fn weights_from_constant_nodes_convert_and_their_nodes_go_when_unused() {
    let mut g = net_graph(false);
    // conv0's weight and bias, and conv4's weight, become Constant nodes (in the same order).
    let mut constants = Vec::new();
    for name in ["conv0.weight", "conv0.bias", "conv4.weight"] {
        let at = g.inits.iter().position(|t| string_field(t, 8) == name).expect("initializer");
        let t = g.inits.remove(at);
        constants.push(node("Constant", &format!("const {name}"), &[], &[name], &[attr_tensor("value", &t)], &[]));
    }
    g.nodes.splice(0..0, constants);
    // conv4's weight is also a graph output: it must stay.
    g.outputs.push(value_info("conv4.weight", &[Some(10), Some(8), Some(5), Some(3)]));
    let m = model(&g, 13, &[]);
    let x = values(11, SHAPE.iter().product());
    let reference = run_tract(&m, &SHAPE, &x);
    let (out, report) = rewrite_model(&m, &full_rank()).unwrap();
    let names: Vec<&str> = report.converted.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["conv0", "conv1", "conv2", "conv4"]);
    assert!(report.converted.iter().all(|c| c.relative_error < 1e-5));
    assert!(relative_diff(&reference, &run_tract(&out, &SHAPE, &x)[..reference.len()]) < 1e-4);
    let constants: Vec<String> = graph_fields(&out)
        .iter()
        .filter(|f| f.number == 1 && string_field(f.bytes, 4) == "Constant")
        .map(|f| string_field(f.bytes, 3))
        .collect();
    // conv0's bias is read by its factors, conv4's weight is an output: both stay.
    assert_eq!(constants, ["const conv0.bias", "const conv4.weight"]);
    assert!(report.removed.contains(&"conv0.weight".to_string()), "{:?}", report.removed);
}
