//! The nodes around the convolutions (activations, scales, poolings) as onnxruntime runs them:
//! fused into a neighbour, or timed by the time model's [`ElementOp`] entries. One small
//! function per pattern, tried in order ([`PATTERNS`]).
//!
//! The fusions are onnxruntime's (1.32, CPU, every graph optimisation), seen in its profiles of
//! the zoo's networks: an activation right after a convolution, a residual `Add`, a
//! `BatchNormalization` (which its blocked layout runs as a convolution) or a `Gemm` runs inside
//! that kernel; so does `x·hardsigmoid(x)` on a convolution's output, and a `Pad` that only a
//! pooling reads (inception_v3's, densenet121's); `x·sigmoid(x)` becomes one `QuickGelu` node.

use super::graph::Graph;
use super::infer::{numel, Shapes};
use super::proto::Node;
use crate::time::{Activation, ElementOp, TimedNode};
use std::collections::HashMap;

/// What a node costs at run time.
pub(crate) enum Timing {
    /// No kernel of its own: onnxruntime runs it inside a neighbour's kernel, which for an
    /// activation costs a pass over that kernel's output (every fused activation but a
    /// `Sigmoid` gate, which joins its `Mul`; an `x·hardsigmoid(x)` has its pass at its
    /// `HardSigmoid`).
    Fused(Option<Pass>),
    /// A node of this operator, at its sizes (or why they are unknown).
    Timed(ElementOp, std::result::Result<TimedNode, String>),
}

/// An activation's pass over the output of the kernel it is fused into.
pub(crate) struct Pass {
    /// The node index of that kernel's node.
    pub(crate) producer: usize,
    /// The activation's operator.
    pub(crate) op: ElementOp,
    /// The pass at its size, or why the size is unknown.
    pub(crate) node: std::result::Result<TimedNode, String>,
}

/// Operators whose kernel takes the activation after them.
const ABSORBING: [&str; 4] = ["Conv", "Add", "BatchNormalization", "Gemm"];

/// Who writes and who reads each tensor.
pub(crate) struct Wiring<'g, 'a> {
    graph: &'g Graph<'a>,
    shapes: &'g Shapes,
    writer: HashMap<&'a str, usize>,
    readers: HashMap<&'a str, Vec<usize>>,
}

impl<'g, 'a> Wiring<'g, 'a> {
    pub(crate) fn new(graph: &'g Graph<'a>, shapes: &'g Shapes) -> Self {
        let (mut writer, mut readers) = (HashMap::new(), HashMap::<&str, Vec<usize>>::new());
        for (k, (_, node)) in graph.nodes.iter().enumerate() {
            node.outputs.iter().for_each(|&o| _ = writer.insert(o, k));
            node.inputs.iter().filter(|i| !i.is_empty()).for_each(|&i| readers.entry(i).or_default().push(k));
        }
        Wiring { graph, shapes, writer, readers }
    }

    fn node(&self, k: usize) -> &'g Node<'a> {
        &self.graph.nodes[k].1
    }

    /// The node writing `tensor`, if a node does.
    fn writer(&self, tensor: &str) -> Option<&'g Node<'a>> {
        self.writer.get(tensor).map(|&k| self.node(k))
    }

    /// The index of the node writing `tensor`, if a node does.
    pub(super) fn writer_index(&self, tensor: &str) -> Option<usize> {
        self.writer.get(tensor).copied()
    }

    /// The nodes reading `tensor`.
    pub(super) fn readers(&self, tensor: &str) -> impl Iterator<Item = &'g Node<'a>> + '_ {
        self.readers.get(tensor).into_iter().flatten().map(|&k| self.node(k))
    }

    /// `tensor` is read by one node only and is not a graph output.
    fn read_once(&self, tensor: &str) -> bool {
        self.readers.get(tensor).is_some_and(|r| r.len() == 1) && !self.graph.outputs.contains(tensor)
    }

    /// Elements per image of `node`'s first input and output, and `taps`, or why a shape is
    /// unknown.
    fn sizes(&self, node: &Node<'_>, taps: u64) -> std::result::Result<(u64, u64, u64), String> {
        let input = self.elements(node.inputs.first().copied().unwrap_or(""))?;
        Ok((input, self.elements(output(node))?, taps))
    }

    /// Elements of `tensor` per image, or why its shape is unknown.
    pub(super) fn elements(&self, tensor: &str) -> std::result::Result<u64, String> {
        let fact = self.shapes.facts.get(tensor).ok_or_else(|| self.shapes.why(tensor))?;
        let n = numel(&fact.shape).ok_or_else(|| format!("`{tensor}` has more elements than fit in memory"))?;
        Ok((n / self.shapes.batch.max(1)) as u64)
    }

    /// The values of `tensor` when known while converting and integral.
    fn ints(&self, tensor: &str) -> Option<Vec<i64>> {
        self.shapes.facts.get(tensor)?.data.as_ref()?.ints()
    }

    /// Channels (dimension 1) of `tensor`, 1 when unknown.
    pub(super) fn channels(&self, tensor: &str) -> usize {
        self.shape(tensor).and_then(|s| s.get(1).copied()).unwrap_or(1)
    }

    /// The shape of `tensor`, when known.
    pub(super) fn shape(&self, tensor: &str) -> Option<&'g [usize]> {
        self.shapes.facts.get(tensor).map(|f| f.shape.as_slice())
    }
}

/// A pattern: how a node runs, if the pattern is about it.
type Pattern = fn(&Wiring<'_, '_>, &Node<'_>) -> Option<Timing>;

/// The patterns, in the order they are tried.
const PATTERNS: [Pattern; 6] = [fused_activation, fused_pad, swish, scale, global_pool, pool];

/// How `node` runs, or `None` when no pattern knows its operator (outside the time model).
pub(crate) fn timing(w: &Wiring<'_, '_>, node: &Node<'_>) -> Option<Timing> {
    PATTERNS.iter().find_map(|p| p(w, node))
}

/// An activation that alone reads the output of a convolution, an `Add`, a
/// `BatchNormalization` or a `Gemm`.
fn fused_activation(w: &Wiring<'_, '_>, node: &Node<'_>) -> Option<Timing> {
    let x = *node.inputs.first()?;
    let absorbing = w.writer(x).is_some_and(|p| ABSORBING.iter().any(|op| p.is(op)));
    let activation = activation_of(node.op_type)?;
    (absorbing && w.read_once(x)).then(|| Timing::Fused(pass(w, node, activation)))
}

/// The pass of `activation` (node `node`) over the output of the node writing its input.
fn pass(w: &Wiring<'_, '_>, node: &Node<'_>, activation: Activation) -> Option<Pass> {
    let (producer, y, op) = (w.writer_index(node.inputs.first()?)?, output(node), ElementOp::Activation(activation));
    Some(Pass { producer, op, node: sized(op, w.channels(y), w.elements(y).map(|e| (e, e, 1))) })
}

/// The activation onnxruntime fuses into the kernel before it, of a single-node operator type
/// (an `x·hardsigmoid(x)` is [`Activation::HardSwish`] by its pattern of two nodes).
fn activation_of(op_type: &str) -> Option<Activation> {
    Some(match op_type {
        "Relu" => Activation::Relu,
        "Clip" => Activation::Clip,
        "LeakyRelu" => Activation::LeakyRelu,
        "HardSigmoid" => Activation::HardSigmoid,
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        _ => return None,
    })
}

/// A `Pad` that only a pooling reads (onnxruntime pads inside the pooling kernel).
fn fused_pad(w: &Wiring<'_, '_>, node: &Node<'_>) -> Option<Timing> {
    let y = *node.outputs.first()?;
    let pooled = w.readers(y).all(|r| r.is("AveragePool") || r.is("MaxPool"));
    (node.is("Pad") && w.read_once(y) && pooled).then_some(Timing::Fused(None))
}

/// `x·sigmoid(x)` (timed at its `Mul`) and `x·hardsigmoid(x)` on a convolution's output (fused).
fn swish(w: &Wiring<'_, '_>, node: &Node<'_>) -> Option<Timing> {
    let gate = |g: &Node<'_>| g.is("Sigmoid") || g.is("HardSigmoid");
    let (gate_node, x) = if gate(node) {
        let (x, y) = (*node.inputs.first()?, *node.outputs.first()?);
        w.readers(y).find(|m| m.is("Mul") && m.inputs.contains(&x))?;
        (node, x)
    } else if node.is("Mul") && node.inputs.len() == 2 {
        let (a, b) = (node.inputs[0], node.inputs[1]);
        let gated = |x: &str, y: &str| w.writer(y).filter(|g| gate(g) && g.inputs.first() == Some(&x));
        gated(a, b).map(|g| (g, a)).or_else(|| gated(b, a).map(|g| (g, b)))?
    } else {
        return None;
    };
    if gate_node.is("HardSigmoid") {
        // The pass at the HardSigmoid, none at the Mul.
        let at_gate = gate(node).then(|| pass(w, node, Activation::HardSwish)).flatten();
        return w.writer(x).is_some_and(|p| p.is("Conv")).then_some(Timing::Fused(at_gate));
    }
    if gate(node) {
        return Some(Timing::Fused(None)); // the Sigmoid: timed with its Mul
    }
    let y = output(node);
    Some(timed(ElementOp::Swish, w.channels(y), w.elements(y).map(|e| (e, e, 1))))
}

/// A `Mul` of a feature map by a per-channel `[1, C, 1, 1]` tensor.
fn scale(w: &Wiring<'_, '_>, node: &Node<'_>) -> Option<Timing> {
    if !node.is("Mul") || node.inputs.len() != 2 {
        return None;
    }
    let (a, b) = (w.shape(node.inputs[0])?, w.shape(node.inputs[1])?);
    let per_channel = |v: &[usize], map: &[usize]| {
        v.len() == 4 && map.len() == 4 && v[1] == map[1] && v[2..] == [1, 1] && map[2] * map[3] > 1
    };
    if !(per_channel(a, b) || per_channel(b, a)) {
        return None;
    }
    Some(timed(ElementOp::Scale, a[1], w.elements(output(node)).map(|e| (e, e, 1))))
}

/// Global pooling: `GlobalAveragePool`, `GlobalMaxPool`, or `ReduceMean`/`ReduceMax` over
/// exactly the spatial axes of a 4-D tensor.
fn global_pool(w: &Wiring<'_, '_>, node: &Node<'_>) -> Option<Timing> {
    let x = *node.inputs.first()?;
    let global = node.is("GlobalAveragePool") || node.is("GlobalMaxPool");
    let spatial = |axes: &[i64]| {
        let mut a: Vec<i64> = axes.iter().map(|&v| if v < 0 { v + 4 } else { v }).collect();
        a.sort_unstable();
        a == [2, 3]
    };
    // The axes: an attribute up to opset 17, a constant input from opset 18.
    let axes = node.attr("axes").map(|a| a.ints.clone()).or_else(|| w.ints(node.inputs.get(1)?));
    let reduce = (node.is("ReduceMean") || node.is("ReduceMax"))
        && w.shape(x).is_some_and(|s| s.len() == 4)
        && axes.is_some_and(|a| spatial(&a));
    if !(global || reduce) {
        return None;
    }
    Some(timed(ElementOp::GlobalPool, w.channels(x), w.sizes(node, 1)))
}

/// `MaxPool` or `AveragePool` over a 2-D window.
fn pool(w: &Wiring<'_, '_>, node: &Node<'_>) -> Option<Timing> {
    if !(node.is("MaxPool") || node.is("AveragePool")) {
        return None;
    }
    let kernel = node.attr("kernel_shape").map(|a| a.ints.as_slice()).filter(|k| k.len() == 2)?;
    let taps = kernel.iter().map(|&k| k.max(1) as u64).product();
    Some(timed(ElementOp::Pool, w.channels(node.inputs.first()?), w.sizes(node, taps)))
}

/// A node's first output (`""` when it has none).
fn output<'n>(node: &Node<'n>) -> &'n str {
    node.outputs.first().copied().unwrap_or("")
}

fn timed(op: ElementOp, channels: usize, sizes: std::result::Result<(u64, u64, u64), String>) -> Timing {
    Timing::Timed(op, sized(op, channels, sizes))
}

/// The node of `op` at its `(input, output, taps)` sizes, or why they are unknown.
fn sized(
    op: ElementOp,
    channels: usize,
    sizes: std::result::Result<(u64, u64, u64), String>,
) -> std::result::Result<TimedNode, String> {
    sizes.map(|(input, output, taps)| TimedNode::Elements { op, channels, input, output, taps })
}
