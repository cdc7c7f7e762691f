//! The convolutions of an ONNX graph, as the conversion pipeline sees them.

use super::elements::{self, Timing, Wiring};
use super::graph::{dims4, groups, Graph};
use super::infer::{numel, Shapes, Stop};
use super::onnx_error;
use super::ops::{gemm_dims, is_contrib, matmul_shape};
use super::proto::{Node, Problem};
use super::reorders;
use super::shapes::Window;
use crate::convert::Fixed;
use crate::convert::{self, ConvertOptions, Found, SizeSource, SkipReason, SkippedLayer, Uncounted};
use crate::cost::Cost;
use crate::error::Result;
use crate::time::{ConvNode, ElementOp, TimedNode};
use std::path::Path;

/// A 2-D `Conv` with a constant 4-D weight: where it is and how to read it.
pub(crate) struct Conv<'a> {
    /// Index into the graph's nodes.
    pub node: usize,
    pub weight: &'a str,
    pub data_type: i64,
}

/// What the graph holds for the pipeline.
pub(crate) struct Discovered<'a> {
    /// Convolutions with a constant 4-D weight, in graph order, and what the pipeline sees of each.
    pub convs: Vec<Conv<'a>>,
    pub found: Vec<Found>,
    /// `Conv`s the rewrite cannot touch whatever the options, with their node index.
    pub blocked: Vec<(usize, SkippedLayer)>,
    /// The cost and modeled time of every node with MACs that is not in `found`: `Gemm`,
    /// `MatMul`, `ConvTranspose` and the blocked `Conv`s, at their inferred shapes.
    pub fixed: Fixed,
    /// Those of them whose shapes are unknown.
    pub uncounted: Vec<Uncounted>,
    /// The other operators that compute, with their node counts ([`Summary::unmodeled`]).
    ///
    /// [`Summary::unmodeled`]: crate::convert::Summary::unmodeled
    pub unmodeled: Vec<(String, usize)>,
    /// The nodes with subgraphs, which are not read ([`Summary::subgraph_nodes`]).
    ///
    /// [`Summary::subgraph_nodes`]: crate::convert::Summary::subgraph_nodes
    pub subgraph_nodes: Vec<String>,
}

/// A weight's name without a trailing `.weight`.
pub(crate) fn stem(weight: &str) -> &str {
    weight.strip_suffix(".weight").unwrap_or(weight)
}

/// Finds every `Conv`, validating what the rewrite relies on, and counts the other nodes with
/// MACs.
pub(crate) fn find<'a>(
    g: &Graph<'a>,
    shapes: &Shapes,
    options: &ConvertOptions,
    file: &Path,
) -> Result<Discovered<'a>> {
    let mut d = Discovered {
        convs: Vec::new(),
        found: Vec::new(),
        blocked: Vec::new(),
        fixed: Fixed::default(),
        uncounted: Vec::new(),
        unmodeled: Vec::new(),
        subgraph_nodes: Vec::new(),
    };
    let wiring = Wiring::new(g, shapes);
    for (k, (_, node)) in g.nodes.iter().enumerate() {
        if node.attrs.iter().any(|a| !a.graphs.is_empty()) {
            d.subgraph_nodes.push(format!("{} {}", node.op_type, node.label(k)));
        }
        if node.is("Conv") {
            match conv(g, k, node, shapes, options, file)? {
                Ok((c, f)) => {
                    d.convs.push(c);
                    d.found.push(f);
                    continue;
                }
                Err(s) => d.blocked.push((k, s)),
            }
        } else if let Some(copy) = copy_node(node, shapes) {
            match copy {
                Ok(t) => d.fixed.time += options.time.node(&t),
                Err(reason) => d.uncounted.push(Uncounted { name: node.label(k), reason }),
            }
            continue;
        } else if !has_macs(node) {
            around(&mut d, &wiring, k, node, shapes, options);
            continue;
        }
        match node_cost(g, node, shapes) {
            Ok((c, t)) => {
                d.fixed.cost = d.fixed.cost + c;
                // Integer kernels are outside the float time table.
                if quantized(node) {
                    tally(&mut d.unmodeled, node.op_type);
                } else {
                    d.fixed.time += options.time.node(&t);
                }
            }
            Err(reason) => d.uncounted.push(Uncounted { name: node.label(k), reason }),
        }
    }
    add_reorders(&mut d, g, &wiring, options);
    Ok(d)
}

/// Adds the layout reorders onnxruntime inserts ([`reorders`](super::reorders)) to the context of
/// the convolution each belongs to, or to the fixed time; one of unknown size is listed as not
/// modeled. Nothing without the time table's reorder entries.
fn add_reorders(d: &mut Discovered<'_>, g: &Graph<'_>, wiring: &Wiring<'_, '_>, options: &ConvertOptions) {
    if !(options.time.models(ElementOp::ReorderInput) && options.time.models(ElementOp::ReorderOutput)) {
        return;
    }
    for r in reorders::reorders(wiring, g, options.time.block()) {
        let Ok(node) = r.node else {
            tally(&mut d.unmodeled, r.op_type);
            continue;
        };
        match r.owner {
            Some(k) => beside(d, k, node, options),
            None => d.fixed.time += options.time.node(&node),
        }
    }
}

/// Adds the time of a node around the convolutions ([`elements`](super::elements)) to the fixed
/// time (an activation fused into a convolution: to that convolution's context), or the node
/// to the unmodeled or uncounted ones.
fn around(
    d: &mut Discovered<'_>,
    wiring: &Wiring<'_, '_>,
    k: usize,
    node: &Node<'_>,
    shapes: &Shapes,
    options: &ConvertOptions,
) {
    match elements::timing(wiring, node) {
        Some(Timing::Fused(Some(pass))) if options.time.models(pass.op) => match pass.node {
            Ok(t) => beside(d, pass.producer, t, options),
            Err(reason) => d.uncounted.push(Uncounted { name: node.label(k), reason }),
        },
        Some(Timing::Fused(_)) => {}
        Some(Timing::Timed(op, sized)) if options.time.models(op) => match sized {
            Ok(t) => d.fixed.time += options.time.node(&t),
            Err(reason) => d.uncounted.push(Uncounted { name: node.label(k), reason }),
        },
        _ if computes(node, shapes) => tally(&mut d.unmodeled, node.op_type),
        _ => {}
    }
}

/// Adds `node`, which runs beside node `producer` whatever that becomes (a reorder next to it,
/// an activation fused into it), to the context of the convolution `producer` is, or else to
/// the fixed time.
fn beside(d: &mut Discovered<'_>, producer: usize, node: TimedNode, options: &ConvertOptions) {
    match d.convs.iter().position(|c| c.node == producer) {
        Some(i) => d.found[i].context.push(node),
        None => d.fixed.time += options.time.node(&node),
    }
}

/// The integer (quantized) operators with MACs: counted, not timed.
const QUANTIZED: [&str; 4] = ["ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul"];

fn quantized(node: &Node<'_>) -> bool {
    QUANTIZED.iter().any(|op| node.is(op)) || is_contrib(node, "QGemm")
}

/// Whether a node other than a `Conv` has MACs [`node_cost`] counts.
fn has_macs(node: &Node<'_>) -> bool {
    let float = ["Gemm", "MatMul", "ConvTranspose"].iter().any(|op| node.is(op));
    float || quantized(node) || is_contrib(node, "FusedConv") || is_contrib(node, "FusedGemm")
}

/// Operators that only rename, reshape or drop values (a runtime does no arithmetic for them).
const NO_ARITHMETIC: [&str; 9] =
    ["Constant", "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Size"];

/// Whether a node outside the time model computes at run time: not a renaming or reshaping
/// operator, and its output not known while converting (shape arithmetic a runtime folds away).
fn computes(node: &Node<'_>, shapes: &Shapes) -> bool {
    let out = node.outputs.first().copied().unwrap_or("");
    !NO_ARITHMETIC.contains(&node.op_type) && shapes.facts.get(out).is_none_or(|f| f.data.is_none())
}

/// Counts one more node of `op` (first-seen order).
fn tally(counts: &mut Vec<(String, usize)>, op: &str) {
    match counts.iter_mut().find(|(o, _)| o == op) {
        Some((_, n)) => *n += 1,
        None => counts.push((op.to_string(), 1)),
    }
}

/// The modeled node of an `Add`, `Sum`, `Concat` or `Split` (the nodes the layouts add, and
/// the same nodes elsewhere in the graph: a model counts all of them alike), `None` for other
/// operators; why not when its size is unknown.
fn copy_node(node: &Node<'_>, shapes: &Shapes) -> Option<std::result::Result<TimedNode, String>> {
    let (split, add) = (node.is("Split"), node.is("Add") || node.is("Sum"));
    if !(split || add || node.is("Concat")) {
        return None;
    }
    let tensor = if split { node.inputs.first() } else { node.outputs.first() }.copied().unwrap_or("");
    if shapes.facts.get(tensor).is_some_and(|f| f.data.is_some()) {
        return None; // values known while converting: shape arithmetic a runtime folds away
    }
    let per_image = |f: &super::infer::Fact| numel(&f.shape).map(|n| (n / shapes.batch.max(1)) as u64);
    let elements = match shapes.facts.get(tensor).and_then(per_image) {
        Some(e) => e,
        None => return Some(Err(shapes.why(tensor))),
    };
    // The pieces' channels (dim 1): a Concat's inputs, a Split's outputs, an Add's output.
    let pieces = if split || add { &node.outputs } else { &node.inputs };
    let channel = |t: &&str| shapes.facts.get(*t).map_or(1, |f| f.shape.get(1).copied().unwrap_or(1));
    let channels = pieces.iter().filter(|t| !t.is_empty()).map(channel).fold(0, gcd).max(1);
    Some(Ok(if add { TimedNode::Add { elements, channels } } else { TimedNode::Concat { elements, channels } }))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// MACs per image and constant parameters of a `Conv`, `ConvTranspose`, `Gemm` or `MatMul` (or
/// a [`QUANTIZED`] one) at its inferred shapes, and the node the time model sees; why not when
/// they are unknown.
pub(crate) fn node_cost(
    g: &Graph<'_>,
    node: &Node<'_>,
    shapes: &Shapes,
) -> std::result::Result<(Cost, TimedNode), String> {
    let fact = |i: usize| {
        let name = node.inputs.get(i).copied().unwrap_or("");
        shapes.facts.get(name).map(|f| f.shape.as_slice()).ok_or_else(|| shapes.why(name))
    };
    let out = node.outputs.first().copied().unwrap_or("");
    let reason = |s: Stop| match s {
        Stop::Missing(t) => shapes.why(&t),
        Stop::Reason(r) => r,
    };
    // QLinearConv and QLinearMatMul give each operand its scale and zero point.
    let b_index = if ["QLinearConv", "QLinearMatMul", "QGemm"].contains(&node.op_type) { 3 } else { 1 };
    let (a, b) = (fact(0)?, fact(b_index)?);
    let prod = |s: &[usize]| numel(s).map(|n| n as u64).unwrap_or(u64::MAX);
    let batch = shapes.batch.max(1);
    let (macs, timed) = match node.op_type {
        "Conv" | "ConvInteger" | "QLinearConv" | "FusedConv" => {
            let y = shapes.facts.get(out).map(|f| f.shape.as_slice()).ok_or_else(|| shapes.why(out))?;
            let macs = prod(y.get(1..).unwrap_or(&[])).saturating_mul(prod(b.get(1..).unwrap_or(&[])));
            (macs, conv_node(node, a, b, y, false))
        }
        "ConvTranspose" => {
            let macs = prod(a.get(1..).unwrap_or(&[])).saturating_mul(prod(b.get(1..).unwrap_or(&[])));
            (macs, conv_node(node, a, b, a, true))
        }
        "Gemm" | "FusedGemm" | "QGemm" => {
            let (m, k, n) = gemm_dims(node, a, b).map_err(reason)?;
            (prod(&[m, k, n]) / batch as u64, matrix_node(m / batch, k, n))
        }
        _ => {
            let (y, k) = matmul_shape(a, b).map_err(reason)?;
            let n = y.last().copied().unwrap_or(1);
            let m = numel(&y).unwrap_or(usize::MAX) / n.max(1) / batch;
            (prod(&y).saturating_mul(k as u64) / batch as u64, matrix_node(m, k, n))
        }
    };
    let constant = |i: usize| node.inputs.get(i).and_then(|n| g.inits.get(n)).and_then(|(_, t)| t.numel());
    let params = (1..node.inputs.len()).filter_map(constant).map(|n| n as u64).sum();
    Ok((Cost { macs, params }, timed))
}

/// A `[m, k] x [k, n]` product for one image.
fn matrix_node(m: usize, k: usize, n: usize) -> TimedNode {
    TimedNode::MatMul { m: m.max(1), k, n }
}

/// A blocked `Conv` (or a `ConvTranspose`, modeled as the convolution of the same MACs on its
/// input) from its input `x`, weight `w` and output `y` shapes.
fn conv_node(node: &Node<'_>, x: &[usize], w: &[usize], y: &[usize], transposed: bool) -> TimedNode {
    let hw = |s: &[usize]| (s.get(2).copied().unwrap_or(1), s.iter().skip(3).product::<usize>().max(1));
    let dim = |i: usize| w.get(i).copied().unwrap_or(1);
    let group = groups(node);
    let kernel = w.iter().skip(2).product::<usize>().max(1);
    let dims = if transposed { [dim(1) * group, dim(0) / group, kernel, 1] } else { [dim(0), dim(1), kernel, 1] };
    let strides = node.attr("strides").map_or(&[][..], |a| a.ints.as_slice());
    let step = |i: usize| if transposed { 1 } else { strides.get(i).map_or(1, |&s| s.max(1) as usize) };
    TimedNode::Conv(ConvNode { dims, groups: group, stride: (step(0), step(1)), input: hw(x), output: hw(y) })
}

/// A `Conv` node: a convolution for the pipeline, or the reason it cannot be rewritten.
fn conv<'a>(
    g: &Graph<'a>,
    k: usize,
    node: &Node<'a>,
    shapes: &Shapes,
    options: &ConvertOptions,
    file: &Path,
) -> Result<std::result::Result<(Conv<'a>, Found), SkippedLayer>> {
    let label = node.label(k);
    let weight = node.inputs.get(1).copied().unwrap_or("");
    if node.inputs.first().is_none_or(|x| x.is_empty()) || weight.is_empty() || node.outputs.len() != 1 {
        let reason = format!(
            "a Conv needs inputs X and W and one output; it has {} inputs, {} outputs",
            node.inputs.len(),
            node.outputs.len()
        );
        return Err(onnx_error(file, label, reason));
    }
    let name = if node.name.is_empty() { stem(weight).to_string() } else { node.name.to_string() };
    let blocked = |reason| SkippedLayer {
        name: name.clone(),
        weight: weight.to_string(),
        dims: None,
        groups: 1,
        reason,
        input_size: None,
        size: SizeSource::Unknown,
        cost: None,
        time: None,
    };
    let Some((_, wt)) = g.inits.get(weight) else {
        let dequantized = g.nodes.iter().any(|(_, n)| n.is("DequantizeLinear") && n.outputs.contains(&weight));
        let reason = if dequantized { SkipReason::QuantizedWeight } else { SkipReason::WeightNotInitializer };
        return Ok(Err(blocked(reason)));
    };
    if !options.freeze_input_weights && g.input_fields.contains_key(weight) {
        return Ok(Err(blocked(SkipReason::WeightIsGraphInput)));
    }
    if wt.dims.len() != 4 {
        return Ok(Err(blocked(SkipReason::NotTwoD { dims: wt.dims.len() })));
    }
    let p = |e: Problem| onnx_error(file, e.location, e.reason);
    let dims = dims4(wt)
        .filter(|d| d.iter().all(|&x| x > 0))
        .ok_or_else(|| onnx_error(file, &label, format!("weight `{weight}` has invalid dims {:?}", wt.dims)))?;
    let window = Window::parse(node, &label).map_err(p)?;
    check_conv(g, node, &label, weight, dims, &window, file)?;
    let keys = vec![name.clone(), weight.to_string(), stem(weight).to_string(), node.name.to_string()];
    let inferred = shapes.hw(node.inputs[0]);
    let declared = convert::Selection::last_match(&options.selection().inputs, &keys).copied();
    let size = inferred.or(declared);
    if let Some(hw) = size {
        if window.output((dims[2], dims[3]), hw).is_none() {
            let (kh, kw) = (dims[2], dims[3]);
            let reason = format!("input {}x{} is smaller than the kernel {kh}x{kw} (dilated, padded)", hw.0, hw.1);
            return Err(onnx_error(file, &label, reason));
        }
    }
    let found = Found {
        name,
        keys,
        weight: weight.to_string(),
        dims,
        geometry: window.geometry((dims[2], dims[3]), size),
        groups_known: true,
        bias_len: node.inputs.get(2).is_some_and(|b| !b.is_empty()).then_some(dims[0]),
        inferred_size: inferred,
        unknown_size: inferred.is_none().then(|| shapes.why(node.inputs[0])),
        blocked: None,
        context: Vec::new(),
    };
    Ok(Ok((Conv { node: k, weight, data_type: wt.data_type }, found)))
}

/// Groups, `kernel_shape` and bias agree with the weight.
fn check_conv(
    g: &Graph<'_>,
    node: &Node<'_>,
    label: &str,
    weight: &str,
    dims: [usize; 4],
    window: &Window,
    file: &Path,
) -> Result<()> {
    let group = window.group;
    if !dims[0].is_multiple_of(group) {
        let reason = format!("weight `{weight}` has {} output channels, not divisible by group = {group}", dims[0]);
        return Err(onnx_error(file, label, reason));
    }
    if let Some(ks) = window.kernel_shape.filter(|&ks| ks != (dims[2], dims[3])) {
        let reason = format!("kernel_shape {:?} disagrees with weight `{weight}` dims {dims:?}", [ks.0, ks.1]);
        return Err(onnx_error(file, label, reason));
    }
    let bias = node.inputs.get(2).copied().filter(|b| !b.is_empty());
    if let Some((b, (_, bt))) = bias.and_then(|b| g.inits.get(b).map(|t| (b, t))) {
        if bt.dims.len() != 1 || bt.dims[0] != dims[0] as i64 {
            let reason = format!("bias `{b}` has dims {:?}; weight `{weight}` needs [{}]", bt.dims, dims[0]);
            return Err(onnx_error(file, label, reason));
        }
        bt.values().map_err(|e| onnx_error(file, e.location, e.reason))?;
    }
    Ok(())
}
