//! The time model: tables read or refused, layouts' nodes consistent with the cost module, and
//! the planner on modeled time (targets met in modeled time, the break-even guard in time, the
//! layout chosen by the model). No test measures time.

use super::{conv_with_spectrum, plan_layer};
use dac::convert::Layout;
use dac::plan::{PlanOptions, Target};
use dac::scheme::SchemeKind;
use dac::time::{self, ConvClass, ConvNode, TimeModel, TimedNode};
use dac::{ConvShape, Error, Fit, Geometry, Padding, Spectrum};
use proptest::prelude::*;
use std::time::Duration;

/// A table whose conv entries are `coef` per class (`[a, macs, in, out]` ns), Concat and Add
/// `[a, out]`.
fn table(conv: &[(&str, [f64; 4])], concat: [f64; 2], add: [f64; 2]) -> String {
    let f = r#"["one","macs","in_elems","out_elems"]"#;
    let mut entries: Vec<String> = conv
        .iter()
        .map(|(c, k)| format!(r#"{{"op":"conv","class":"{c}","aligned":null,"features":{f},"coef":{k:?}}}"#))
        .collect();
    entries.push(format!(r#"{{"op":"concat","features":["one","out_elems"],"coef":{concat:?}}}"#));
    entries.push(format!(r#"{{"op":"add","features":["one","out_elems"],"coef":{add:?}}}"#));
    format!(r#"{{"runtime":"test","block":8,"tables":[{{"threads":1,"entries":[{}]}}]}}"#, entries.join(","))
}

/// Every class at `dense` except depthwise ones at `depthwise` and `multiplier`.
fn classes(dense: [f64; 4], depthwise: [f64; 4], multiplier: [f64; 4]) -> Vec<(&'static str, [f64; 4])> {
    let mut v: Vec<(&str, [f64; 4])> = ConvClass::ALL.iter().map(|c| (c.name(), dense)).collect();
    for (name, k) in &mut v {
        if name.starts_with("depthwise") {
            *k = if *name == "depthwise_multiplier" { multiplier } else { depthwise };
        }
    }
    v
}

/// Every class at `dense` except depthwise ones at `depthwise`.
fn model(dense: [f64; 4], depthwise: [f64; 4], concat: [f64; 2], add: [f64; 2]) -> TimeModel {
    TimeModel::from_json("test", &table(&classes(dense, depthwise, depthwise), concat, add), 1).unwrap()
}

#[test]
fn the_shipped_tables_read() {
    for threads in [1, 2, 8] {
        let m = TimeModel::shipped(threads).unwrap();
        assert!(m.threads() <= threads && m.threads() >= 1);
        assert!(m.runtime().contains("onnxruntime"), "{}", m.runtime());
    }
    assert_eq!(TimeModel::onnxruntime_x86_64().threads(), 1);
    assert!(matches!(TimeModel::shipped(0), Err(Error::TimeTable { .. })));
    // The report names the table's CPU and instruction set; a table that names neither is
    // described without them.
    let m = TimeModel::onnxruntime_x86_64();
    assert_eq!(m.isa(), Some("avx512"));
    assert!(m.describe().ends_with(" (AMD EPYC, avx512, family 25), 1 thread"), "{}", m.describe());
    let m = TimeModel::shipped(1).unwrap();
    assert!(m.describe().contains("avx512") && m.describe().ends_with("), 1 thread"), "{}", m.describe());
    let d = [0.0, 1.0, 0.0, 0.0];
    let plain = TimeModel::from_json("t", &table(&classes(d, d, d), [0.0, 1.0], [0.0, 1.0]), 1).unwrap();
    assert_eq!((plain.isa(), plain.describe().as_str()), (None, "test, 1 thread"));
}

#[test]
fn a_bad_table_is_an_error_naming_what_is_wrong() {
    let d = [0.0, 1.0, 0.0, 0.0];
    let good = table(&classes(d, d, d), [0.0, 1.0], [0.0, 1.0]);
    assert!(TimeModel::from_json("t", &good, 1).is_ok());
    let cases = [
        ("not json", "not JSON".to_string()),
        ("no class", good.replace(r#""class":"grouped""#, r#""class":"dense""#)),
        ("unknown feature name", good.replacen(r#""in_elems""#, r#""bytes""#, 1)),
        ("unknown class", good.replace(r#""class":"grouped""#, r#""class":"winograd""#)),
        ("unknown feature", good.replacen(r#""macs""#, r#""flops""#, 1)),
        ("negative", good.replacen("[0.0, 1.0, 0.0, 0.0]", "[0.0, -1.0, 0.0, 0.0]", 1)),
        ("length", good.replacen("[0.0, 1.0, 0.0, 0.0]", "[0.0, 1.0, 0.0]", 1)),
        ("no concat", good.replace(r#""op":"concat""#, r#""op":"add""#)),
        ("threads", good.replace(r#""threads":1"#, r#""threads":4"#)),
        ("block", good.replace(r#""block":8"#, r#""block":0"#)),
    ];
    for (what, text) in cases {
        match TimeModel::from_json("t.json", &text, 1) {
            Err(Error::TimeTable { table, reason }) => assert!(table == "t.json" && !reason.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn classes_follow_onnxruntimes_kernel_choice() {
    use ConvClass::*;
    let cases = [
        ([64, 32, 3, 3], 1, Dense),
        ([64, 32, 1, 1], 1, Pointwise),
        ([64, 36, 3, 3], 1, Dense), // padded to 48 inputs in the blocked layout
        ([64, 3, 7, 7], 1, DenseSmallInput),
        ([64, 8, 1, 1], 1, PointwiseSmallInput),
        ([64, 35, 3, 3], 1, DenseNchw),
        ([64, 35, 1, 1], 1, PointwiseNchw),
        ([32, 1, 3, 3], 32, Depthwise),
        ([12, 1, 3, 3], 12, Depthwise),
        ([3, 1, 7, 7], 3, DepthwiseNchw),
        ([64, 1, 3, 3], 32, DepthwiseMultiplier),
        ([64, 16, 3, 3], 4, Dense), // groups of whole blocks run blocked
        ([56, 16, 3, 3], 4, Grouped),
        ([64, 4, 3, 3], 8, Grouped),
        ([64, 4, 1, 1], 64, GroupedPointwise),
        ([1, 1, 3, 3], 1, DenseSmallInput),
    ];
    for (dims, groups, want) in cases {
        assert_eq!(ConvClass::of(dims, groups, 16), want, "{dims:?} groups {groups}");
    }
}

/// A layer shape and geometry for the layout properties.
fn layer() -> impl Strategy<Value = (ConvShape, Geometry, (usize, usize))> {
    (1usize..=3, 1usize..=6, 1usize..=6, 1usize..=4, 1usize..=4, 1usize..=2, 1usize..=2, 5usize..=12).prop_map(
        |(groups, ng, cg, kh, kw, stride, dilation, size)| {
            let shape = ConvShape { out_channels: ng * groups, in_channels: cg * groups, kh, kw, groups };
            let geometry = Geometry {
                stride: (stride, 1),
                dilation: (1, dilation),
                padding: Padding { top: kh / 2, bottom: 0, left: 1, right: kw / 2 },
                groups,
            };
            (shape, geometry, (size, size + 1))
        },
    )
}

proptest! {
    /// The nodes of every layout hold exactly the MACs the cost module counts for the scheme:
    /// the time model and the MAC count describe the same factors.
    #[test]
    fn layout_nodes_hold_the_schemes_macs((shape, geometry, input) in layer(), rank in 1usize..=4) {
        for scheme in SchemeKind::ALL {
            let rank = rank.min(scheme.max_rank(&shape));
            let want = scheme.cost("l", &shape, &geometry, false, rank, Some(input)).unwrap().macs;
            let layouts = if time::layouts_of(scheme).is_empty() { &[Layout::Multiplier1][..] } else { time::layouts_of(scheme) };
            for &layout in layouts {
                let nodes = time::layout_nodes("l", scheme, layout, &shape, &geometry, rank, input).unwrap();
                let macs: f64 = nodes.iter().map(|n| match n { TimedNode::Conv(c) => c.macs(), _ => 0.0 }).sum();
                prop_assert_eq!(time::nodes_cost("l", &nodes, 0).unwrap().macs, macs as u64);
                // Network Decoupling's sum layout folds its summing 1x1 (N·T MACs per output
                // position) into the depthwise weights.
                let out = geometry.output_size("l", (shape.kh, shape.kw), input).unwrap();
                let folded = match (scheme, layout) {
                    (SchemeKind::Decoupled, Layout::Sum) => (shape.out_channels * rank * out.0 * out.1) as u64,
                    _ => 0,
                };
                prop_assert_eq!(macs as u64, want - folded, "{:?} {:?}", scheme, layout);
                let (convs, adds, concats) = counts(&nodes);
                match (scheme, layout) {
                    (SchemeKind::Dac, Layout::Sum) | (SchemeKind::Decoupled, Layout::Sum) => {
                        prop_assert_eq!((convs, adds, concats), (2 * rank, rank - 1, 0));
                    }
                    (SchemeKind::Dac, Layout::Multiplier1) => {
                        let pieces = shape.groups * rank;
                        let concat = usize::from(pieces > 1) + usize::from(shape.groups > 1);
                        prop_assert_eq!((convs, adds, concats), (pieces + 1, 0, concat));
                    }
                    _ => prop_assert_eq!((adds, concats), (0, 0)),
                }
            }
        }
    }
}

fn counts(nodes: &[TimedNode]) -> (usize, usize, usize) {
    let convs = nodes.iter().filter(|n| matches!(n, TimedNode::Conv(_))).count();
    let adds = nodes.iter().filter(|n| matches!(n, TimedNode::Add { .. })).count();
    (convs, adds, nodes.len() - convs - adds)
}

#[test]
fn a_nodes_time_is_its_tables_line() {
    let m = model([1000.0, 0.01, 0.5, 0.25], [2000.0, 0.5, 1.0, 1.0], [300.0, 0.125], [100.0, 0.0625]);
    let node =
        ConvNode::new("l", [16, 8, 3, 3], &Geometry { padding: Padding::uniform(1), ..Geometry::default() }, (10, 10));
    let node = node.unwrap();
    // 1000 + 0.01·(16·8·9·100) + 0.5·(8·100) + 0.25·(16·100) ns.
    let want = 1000.0 + 0.01 * 115_200.0 + 400.0 + 400.0;
    assert_eq!(m.conv(&node), Duration::from_nanos(want as u64));
    assert_eq!(m.node(&TimedNode::Concat { elements: 800, channels: 8 }), Duration::from_nanos(400));
    assert_eq!(m.node(&TimedNode::Add { elements: 1600, channels: 16 }), Duration::from_nanos(200));
}

/// A stack of DAC-factored layers with flat spectra, for the planner.
fn stack() -> Vec<dac::plan::PlanLayer> {
    let mut layers = Vec::new();
    for (i, &(n, c, size)) in [(32usize, 16usize, 16usize), (32, 32, 16), (64, 32, 8), (64, 64, 8)].iter().enumerate() {
        let shape = ConvShape { out_channels: n, in_channels: c, kh: 3, kw: 3, groups: 1 };
        let values: Vec<f64> = (0..c).flat_map(|_| (0..9).map(|j| 9.0 - j as f64)).collect();
        let spectrum = Spectrum::new("l", shape, values).unwrap();
        let geometry = Geometry { padding: Padding::uniform(1), ..Geometry::default() };
        let conv = conv_with_spectrum(&format!("conv{i}"), &spectrum, geometry, true);
        layers.push(plan_layer(&conv, Fit::frobenius(), (size, size)).unwrap());
    }
    layers
}

#[test]
fn a_time_target_is_met_in_modeled_time_and_guards_in_time() {
    let layers = stack();
    // Depthwise convolutions cost 40x dense ones per MAC: some DAC ranks that save MACs are
    // modeled slower than the dense layer, some faster.
    let m = model([500.0, 0.0125, 0.0, 0.0], [500.0, 0.5, 0.0, 0.0], [200.0, 0.05], [100.0, 0.02]);
    let options = PlanOptions::default().time_model(m.clone());
    let by_macs = dac::plan(&layers, &Target::MacReduction(1.5), &options).unwrap();
    assert!(by_macs.met);
    let slower = by_macs.layers.iter().filter(|l| l.rank.is_some() && l.time_after >= l.time_before).count();
    assert!(slower > 0, "a MAC plan keeps layers modeled slower than dense (else this test proves nothing)");
    for target in [1.1, 1.3] {
        let p = dac::plan(&layers, &Target::TimeReduction(target), &options).unwrap();
        let sum: Duration = p.layers.iter().map(|l| l.time_after).sum();
        assert_eq!(sum, p.time_after, "the plan's time is its layers'");
        if p.met {
            assert!(p.speedup() >= target, "{target}: {}", p.speedup());
        } else {
            assert!(p.max_speedup < target);
        }
        for l in p.layers.iter().filter(|l| l.rank.is_some()) {
            let bound = l.time_before.as_secs_f64() * (1.0 - dac::plan::MIN_TIME_GAIN);
            assert!(l.time_after.as_secs_f64() <= bound + 1e-9, "{}: factored but not 10 % faster", l.name);
        }
    }
    let e = dac::plan(&layers, &Target::TimeReduction(1.0), &options).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { .. }));
}

/// With `time_guard`, a MAC target keeps dense every layer whose factors are not modeled 10 %
/// faster (what the converter does unless `allow_slower`), and still meets the target with the
/// other layers where it can.
#[test]
fn a_time_guard_keeps_slower_layers_dense_under_a_mac_target() {
    let layers = stack();
    let m = model([500.0, 0.0125, 0.0, 0.0], [500.0, 0.5, 0.0, 0.0], [200.0, 0.05], [100.0, 0.02]);
    let options = PlanOptions::default().time_model(m);
    let target = Target::MacReduction(1.2);
    let free = dac::plan(&layers, &target, &options).unwrap();
    let slow = |p: &dac::plan::Plan| {
        let bound = |l: &dac::plan::LayerPlan| l.time_before.as_secs_f64() * (1.0 - dac::plan::MIN_TIME_GAIN);
        p.layers.iter().filter(|l| l.rank.is_some() && l.time_after.as_secs_f64() > bound(l) + 1e-9).count()
    };
    assert!(slow(&free) > 0, "without the guard some factored layer is not 10 % faster (else this proves nothing)");
    let guarded = dac::plan(&layers, &target, &options.clone().time_guard(true)).unwrap();
    assert_eq!(slow(&guarded), 0, "{:?}", guarded.layers);
    assert!(guarded.met && guarded.reduction() >= 1.2, "{}", guarded.reduction());
    assert!(guarded.time_after < free.time_after, "the guarded plan is modeled faster");
    // A time target guards with or without the option.
    let t = Target::TimeReduction(1.1);
    assert_eq!(dac::plan(&layers, &t, &options).unwrap(), dac::plan(&layers, &t, &options.time_guard(true)).unwrap());
}

#[test]
fn the_layout_is_the_models_fastest() {
    let layers = stack();
    let dense = [0.0, 0.0125, 0.0, 0.0];
    // A free Concat and a slower multiplier-r depthwise: multiplier1; an expensive Concat and
    // Add and a multiplier-r depthwise as fast as multiplier 1: fused; an expensive Concat and
    // multiplier, a free Add: sum.
    let with = |multiplier: [f64; 4], concat: [f64; 2], add: [f64; 2]| {
        let conv = classes(dense, [0.0, 0.02, 0.0, 0.0], multiplier);
        TimeModel::from_json("t", &table(&conv, concat, add), 1).unwrap()
    };
    let cases = [
        (with([0.0, 0.04, 0.0, 0.0], [0.0, 0.0], [0.0, 10.0]), Layout::Multiplier1),
        (with([0.0, 0.02, 0.0, 0.0], [0.0, 10.0], [0.0, 10.0]), Layout::Fused),
        (with([0.0, 1.0, 0.0, 0.0], [0.0, 10.0], [0.0, 0.0]), Layout::Sum),
    ];
    // (At rank 1 the layouts are the same nodes and the first, multiplier1, is kept.)
    let layouts = |p: &dac::plan::Plan| -> Vec<Option<Layout>> {
        let v: Vec<_> = p.layers.iter().filter(|l| l.rank.is_some_and(|r| r > 1)).map(|l| l.layout).collect();
        assert!(!v.is_empty(), "no layer factored above rank 1: this test proves nothing");
        v
    };
    for (m, want) in cases {
        let p = dac::plan(&layers, &Target::MacReduction(1.3), &PlanOptions::default().time_model(m)).unwrap();
        assert!(layouts(&p).iter().all(|&l| l == Some(want)), "{want:?}: {:?}", layouts(&p));
    }
    let m = with([0.0, 1.0, 0.0, 0.0], [0.0, 10.0], [0.0, 0.0]);
    // A forced layout is used whatever the model says.
    let forced = PlanOptions::default().time_model(m).layout(Layout::Fused);
    let p = dac::plan(&layers, &Target::MacReduction(1.3), &forced).unwrap();
    assert!(p.layers.iter().filter(|l| l.rank.is_some()).all(|l| l.layout == Some(Layout::Fused)));
}

#[test]
fn products_use_their_entries_or_else_time_as_1x1_convolutions() {
    let dense = [100.0, 0.5, 0.0, 0.0];
    let base = table(&classes(dense, dense, dense), [0.0, 0.0], [0.0, 0.0]);
    let without = TimeModel::from_json("t", &base, 1).unwrap();
    let linear = TimedNode::MatMul { m: 1, k: 64, n: 10 };
    // As a 1x1 convolution of 64 channels to 10 at one position: 100 + 0.5·640 ns.
    assert_eq!(without.node(&linear), Duration::from_nanos(420));
    let gemv = r#"{"op":"gemv","features":["one","weights","weights_over_cache"],"coef":[50.0,0.25,1.0]},"#;
    let with =
        TimeModel::from_json("t", &base.replacen(r#"{"op":"concat""#, &format!("{gemv}{{\"op\":\"concat\""), 1), 1);
    let with = with.unwrap();
    assert_eq!(with.node(&linear), Duration::from_nanos(50 + 160));
    // Weights beyond the cache cost their extra coefficient.
    let big = TimedNode::MatMul { m: 1, k: 4096, n: 2048 };
    let over = (4096 * 2048 - (1u64 << 22)) as f64;
    assert_eq!(with.node(&big), Duration::from_nanos((50.0 + 0.25 * 8_388_608.0 + over) as u64));
    // A product of several rows has no `matmul` entry here: a 1x1 convolution on 3 positions.
    assert_eq!(with.node(&TimedNode::MatMul { m: 3, k: 64, n: 10 }), Duration::from_nanos(100 + 960));
}

#[test]
fn layout_choices_follow_the_forced_layout_where_the_scheme_has_it() {
    use time::layout_choices;
    assert_eq!(layout_choices(SchemeKind::Dac, None), vec![Layout::Multiplier1, Layout::Sum, Layout::Fused]);
    assert_eq!(layout_choices(SchemeKind::Dac, Some(Layout::Fused)), vec![Layout::Fused]);
    assert_eq!(layout_choices(SchemeKind::Decoupled, None), vec![Layout::Multiplier1, Layout::Sum]);
    // Network Decoupling has no fused layout: its default, not an error.
    assert_eq!(layout_choices(SchemeKind::Decoupled, Some(Layout::Fused)), vec![Layout::Multiplier1]);
    for kind in [SchemeKind::Spatial, SchemeKind::Channel] {
        assert!(layout_choices(kind, None).is_empty() && layout_choices(kind, Some(Layout::Sum)).is_empty());
    }
}

#[test]
fn element_operators_use_their_entry_of_the_alignment_or_stay_outside_the_model() {
    use time::ElementOp;
    let d = [0.0, 1.0, 0.0, 0.0];
    let base = table(&classes(d, d, d), [0.0, 0.0], [0.0, 0.0]);
    let without = TimeModel::from_json("t", &base, 1).unwrap();
    let swish = |channels| TimedNode::Elements { op: ElementOp::Swish, channels, input: 1000, output: 1000, taps: 1 };
    assert!(ElementOp::ALL.iter().all(|&op| !without.models(op)));
    assert_eq!(without.node(&swish(16)), Duration::ZERO);
    let entries = concat!(
        r#"{"op":"swish","aligned":true,"features":["one","in_elems"],"coef":[100.0,0.5]},"#,
        r#"{"op":"swish","aligned":false,"features":["one","in_elems"],"coef":[100.0,1.5]},"#,
        r#"{"op":"pool","aligned":null,"features":["one","out_elems","macs"],"coef":[10.0,1.0,0.25]},"#
    );
    let with =
        TimeModel::from_json("t", &base.replacen(r#"{"op":"concat""#, &format!("{entries}{{\"op\":\"concat\""), 1), 1);
    let with = with.unwrap();
    assert!(with.models(ElementOp::Swish) && with.models(ElementOp::Pool) && !with.models(ElementOp::Scale));
    // The table's block is 8: 16 channels are aligned, 12 are not.
    assert_eq!(with.node(&swish(16)), Duration::from_nanos(600));
    assert_eq!(with.node(&swish(12)), Duration::from_nanos(1600));
    // A pool's `macs` are its output elements times the window's taps.
    let pool = TimedNode::Elements { op: ElementOp::Pool, channels: 8, input: 400, output: 100, taps: 9 };
    assert_eq!(with.node(&pool), Duration::from_nanos(10 + 100 + 225));
    let bad =
        base.replacen(r#"{"op":"concat""#, r#"{"op":"softmax","features":["one"],"coef":[1.0]},{"op":"concat""#, 1);
    assert!(matches!(TimeModel::from_json("t", &bad, 1), Err(Error::TimeTable { .. })));
}

#[test]
fn tensors_beyond_the_cache_cost_the_term_of_their_entry() {
    let d = [0.0, 1.0, 0.0, 0.0];
    let base = table(&classes(d, d, d), [0.0, 0.0], [0.0, 0.0]);
    let term = r#"{"op":"conv","class":"depthwise","aligned":null,"features":["one","tensor_elems_over_cache"],"coef":[0.0,2.0]},"#;
    let cat = r#"{"op":"concat","features":["one","out_elems","tensor_elems_over_cache"],"coef":[0.0,1.0,3.0]},"#;
    let with = base.replacen(r#"{"op":"conv""#, &format!("{term}{cat}{{\"op\":\"conv\""), 1);
    let with = TimeModel::from_json("t", &with, 1).unwrap();
    let cached = dac::time::CACHED_TENSOR as u64;
    let depthwise = |c: usize, hw: usize| {
        TimedNode::Conv(ConvNode { dims: [c, 1, 3, 3], groups: c, stride: (1, 1), input: (hw, hw), output: (hw, hw) })
    };
    // 64 channels at 128x128 hold exactly the cached elements: no term.
    assert_eq!(64 * 128 * 128, cached);
    assert_eq!(with.node(&depthwise(64, 128)), Duration::ZERO);
    // At 256x256 input and output each hold 3x that beyond it: 2 ns per element of both.
    assert_eq!(with.node(&depthwise(64, 256)), Duration::from_nanos(2 * 2 * 3 * cached));
    // A Concat counts its output twice (it reads as many elements as it writes).
    let copy = |elements| TimedNode::Concat { elements, channels: 16 };
    assert_eq!(with.node(&copy(cached)), Duration::from_nanos(cached));
    assert_eq!(with.node(&copy(2 * cached)), Duration::from_nanos(2 * cached + 3 * 2 * cached));
    // A class whose entry lacks the feature is untouched by it.
    let dense = TimedNode::Conv(ConvNode {
        dims: [64, 64, 1, 1],
        groups: 1,
        stride: (1, 1),
        input: (256, 256),
        output: (256, 256),
    });
    assert_eq!(with.node(&dense), Duration::from_nanos(64 * 64 * 256 * 256));
}

#[test]
fn channel_rows_are_blocks_of_channels_times_output_rows() {
    let d = [0.0, 1.0, 0.0, 0.0];
    let base = table(&classes(d, d, d), [0.0, 0.0], [0.0, 0.0]);
    let term =
        r#"{"op":"conv","class":"depthwise","aligned":null,"features":["one","channel_rows"],"coef":[10.0,3.0]},"#;
    let with = base.replacen(r#"{"op":"conv""#, &format!("{term}{{\"op\":\"conv\""), 1);
    let with = TimeModel::from_json("t", &with, 1).unwrap();
    let depthwise = |c: usize, k: usize, stride: usize, hw: usize, out: (usize, usize)| {
        TimedNode::Conv(ConvNode {
            dims: [c, 1, k, k],
            groups: c,
            stride: (stride, stride),
            input: (hw, hw),
            output: out,
        })
    };
    // 960 channels (a multiple of the test table's block, 8) on a 7x7 output: 960 x 7 channel
    // rows at 3 ns each, plus 10 ns.
    assert_eq!(with.node(&depthwise(960, 3, 1, 7, (7, 7))), Duration::from_nanos(10 + 3 * 960 * 7));
    // 20 channels round up to 24 (3 blocks of 8); a stride-2 5x5 with 28 output rows and 14
    // columns: rows count, columns do not.
    assert_eq!(with.node(&depthwise(20, 5, 2, 56, (28, 14))), Duration::from_nanos(10 + 3 * 24 * 28));
    // The same elements as few channels on a large map: far fewer rows.
    assert_eq!(with.node(&depthwise(16, 3, 1, 105, (105, 105))), Duration::from_nanos(10 + 3 * 16 * 105));
}

#[test]
fn grouped_convolutions_of_whole_blocks_use_their_entry_where_the_table_has_one() {
    let d = [100.0, 1.0, 0.0, 0.0];
    let base = table(&classes(d, d, d), [0.0, 0.0], [0.0, 0.0]);
    let entry =
        r#"{"op":"conv_grouped_blocks","aligned":null,"features":["one","macs","group_taps"],"coef":[50.0,0.5,7.0]},"#;
    let with = base.replacen(r#"{"op":"concat""#, &format!("{entry}{{\"op\":\"concat\""), 1);
    let (without, with) = (TimeModel::from_json("t", &base, 1).unwrap(), TimeModel::from_json("t", &with, 1).unwrap());
    let conv = |dims: [usize; 4], groups: usize, stride: usize, map: usize, out: (usize, usize)| {
        TimedNode::Conv(ConvNode { dims, groups, stride: (stride, stride), input: (map, map), output: out })
    };
    // RegNet-like: 400 channels in 25 groups of 16 (the test table's block is 8), 3x3 at 7x7:
    // 25 groups x 9 taps x 7 output rows.
    let regnet = conv([400, 16, 3, 3], 25, 1, 7, (7, 7));
    let macs = 400 * 16 * 9 * 49;
    assert_eq!(without.node(&regnet), Duration::from_nanos(100 + macs));
    assert_eq!(with.node(&regnet), Duration::from_nanos(50 + macs / 2 + 7 * 25 * 9 * 7));
    // A 1x1 (one tap) of 4 groups of 8, stride 2 to 5 output rows (of 9 columns): rows of every
    // group, not columns.
    let pointwise = conv([32, 8, 1, 1], 4, 2, 10, (5, 9));
    assert_eq!(with.node(&pointwise), Duration::from_nanos(50 + 32 * 8 * 45 / 2 + 7 * 4 * 5));
    // One group, depthwise, or groups that are not whole blocks: their class's entry.
    for other in [
        conv([400, 400, 3, 3], 1, 1, 7, (7, 7)),
        conv([400, 1, 3, 3], 400, 1, 7, (7, 7)),
        conv([128, 4, 3, 3], 32, 1, 7, (7, 7)),
    ] {
        assert_eq!(with.node(&other), without.node(&other), "{other:?}");
    }
}

#[test]
fn blocked_1x1_convolutions_at_one_position_use_their_entry_where_the_table_has_one() {
    let d = [100.0, 1.0, 0.0, 0.0];
    let base = table(&classes(d, d, d), [0.0, 0.0], [0.0, 0.0]);
    let entry =
        r#"{"op":"conv_one_position","aligned":null,"features":["one","weights","out_elems"],"coef":[500.0,0.5,2.0]},"#;
    let with = base.replacen(r#"{"op":"concat""#, &format!("{entry}{{\"op\":\"concat\""), 1);
    let (without, with) = (TimeModel::from_json("t", &base, 1).unwrap(), TimeModel::from_json("t", &with, 1).unwrap());
    let conv = |dims: [usize; 4], groups: usize, map: usize, out: usize| {
        TimedNode::Conv(ConvNode { dims, groups, stride: (1, 1), input: (map, map), output: (out, out) })
    };
    // A squeeze-and-excitation block's 1x1 convolution, 96 -> 24 on its pooled vector.
    let squeeze = conv([24, 96, 1, 1], 1, 1, 1);
    assert_eq!(without.node(&squeeze), Duration::from_nanos(100 + 96 * 24));
    assert_eq!(with.node(&squeeze), Duration::from_nanos(500 + 96 * 24 / 2 + 2 * 24));
    // Not at one position, not 1x1, fewer input channels than the block (8 here), grouped,
    // depthwise: their class's entry.
    for other in [
        conv([24, 96, 1, 1], 1, 2, 2),
        conv([24, 96, 3, 3], 1, 1, 1),
        conv([24, 4, 1, 1], 1, 1, 1),
        conv([32, 8, 1, 1], 4, 1, 1),
        conv([96, 1, 1, 1], 96, 1, 1),
    ] {
        assert_eq!(with.node(&other), without.node(&other), "{other:?}");
    }
}
