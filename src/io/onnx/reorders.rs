//! Where onnxruntime keeps tensors in its blocked (NCHWc) layout, and the reorders it inserts
//! between blocked and plain nodes, as its NCHWc transformer decides (onnxruntime 1.32, CPU;
//! `nchwc_transformer.cc`, checked against the optimised graphs of the zoo's networks).
//!
//! Walking the nodes in order, a tensor is blocked when it is written by
//! - a convolution, a `Concat` or a `Split` (below: a convolution of at least a block of input
//!   channels has a plain input reordered in);
//! - a `MaxPool`/`AveragePool` of channels a multiple of the block (its input reordered in if
//!   plain), a `GlobalAveragePool`/`GlobalMaxPool` of such channels on a blocked input;
//! - an `Add`, `Sum` or `Mul` whose inputs are all blocked and of one shape;
//! - `Relu`, `Sigmoid`, `Tanh`, `BatchNormalization` or an activation fused into the
//!   convolution before it ([`elements`](super::elements)), on a blocked input.
//!
//! Every other reader needs the plain tensor: one `ReorderOutput` per blocked tensor read plain
//! (a graph output included); a `Transpose` to NHWC of a blocked tensor becomes such a reorder.
//!
//! Two simplifications keep the count what the time table measured and the same for a layer
//! whatever it becomes. The table's convolutions of plain classes (`*_nchw`, grouped, a channel
//! multiplier) and of fewer input channels than a block, and its `Concat`s, were measured
//! between blocked convolutions with the reorders they cause: here a convolution of at least a
//! block of input channels has a plain input reordered in whatever its class (a factorisation
//! keeps the input channels, so the first factor costs what the layer did), one of fewer reads
//! it as it is (as onnxruntime does), `Concat` and `Split` read anything, and all of them write
//! a blocked output (reordered out when a plain node reads it, whatever the class of the
//! convolution that wrote it, so that a layer's last factor costs what the layer did).
//!
//! A reorder next to a convolution belongs to it (a `ReorderInput` to the convolution it feeds,
//! a `ReorderOutput` to the one whose output, or fused activation's output, it copies): it runs
//! whatever the layer becomes, and profiles count it with the layer. The others are fixed time.

use super::elements::{self, Timing, Wiring};
use super::graph::{dims4, groups, Graph};
use super::proto::Node;
use crate::time::{ElementOp, TimedNode};
use std::collections::{HashMap, HashSet};

/// A reorder, at its size (or why its size is unknown), and the node it belongs to: a `Conv`'s
/// index, `None` for the fixed time.
pub(crate) struct Reorder {
    pub owner: Option<usize>,
    /// onnxruntime's name for it: `"ReorderInput"` or `"ReorderOutput"`.
    pub op_type: &'static str,
    pub node: std::result::Result<TimedNode, String>,
}

/// The walk's state: blocked tensors (with the node that wrote them) and the plain tensors
/// already reordered in.
struct Walk<'w, 'g, 'a> {
    wiring: &'w Wiring<'g, 'a>,
    graph: &'w Graph<'a>,
    block: usize,
    blocked: HashMap<&'a str, usize>,
    reordered_in: HashSet<&'a str>,
    reorders: Vec<Reorder>,
}

/// The reorders onnxruntime inserts in `graph` for channel blocks of `block`.
pub(crate) fn reorders(wiring: &Wiring<'_, '_>, graph: &Graph<'_>, block: usize) -> Vec<Reorder> {
    let mut walk =
        Walk { wiring, graph, block, blocked: HashMap::new(), reordered_in: HashSet::new(), reorders: Vec::new() };
    for (k, (_, node)) in graph.nodes.iter().enumerate() {
        walk.node(k, node);
    }
    walk.finish()
}

impl<'a> Walk<'_, '_, 'a> {
    /// Decides `node`'s layout; its plain readings of blocked tensors are collected at the end.
    fn node(&mut self, k: usize, node: &Node<'a>) {
        let Some(&y) = node.outputs.first() else { return };
        let blocked = match node.op_type {
            _ if !node.domain.is_empty() && node.domain != "ai.onnx" => false,
            "Conv" => self.conv(k, node),
            "MaxPool" | "AveragePool" => self.pool(node, true),
            "GlobalAveragePool" | "GlobalMaxPool" => self.pool(node, false),
            "Add" | "Sum" | "Mul" => self.same_shapes(node),
            "Concat" | "Split" => {
                node.outputs.iter().filter(|o| !o.is_empty()).for_each(|&o| _ = self.blocked.insert(o, k));
                return;
            }
            "Relu" | "Sigmoid" | "Tanh" | "BatchNormalization" => self.is_blocked(node.inputs.first()),
            _ => {
                matches!(elements::timing(self.wiring, node), Some(Timing::Fused(_)))
                    && self.is_blocked(node.inputs.first())
            }
        };
        if blocked {
            self.blocked.insert(y, k);
        }
    }

    fn is_blocked(&self, tensor: Option<&&'a str>) -> bool {
        tensor.is_some_and(|t| self.blocked.contains_key(t))
    }

    /// A `Conv` of at least a block of input channels has a plain input reordered in (see the
    /// module); its output counts as blocked.
    fn conv(&mut self, k: usize, node: &Node<'a>) -> bool {
        let (Some(&x), Some(w)) = (node.inputs.first(), node.inputs.get(1)) else { return false };
        let Some(dims) = self.graph.inits.get(w).and_then(|(_, t)| dims4(t)) else { return false };
        if dims[1] * groups(node) >= self.block {
            self.reorder_in(x, Some(k));
        }
        true
    }

    /// A pooling over channels a multiple of the block: always blocked (`reorder` its plain
    /// input in) or only on a blocked input.
    fn pool(&mut self, node: &Node<'a>, reorder: bool) -> bool {
        let Some(&x) = node.inputs.first() else { return false };
        if node.outputs.len() > 1 || !self.wiring.channels(x).is_multiple_of(self.block) {
            return false;
        }
        if reorder {
            self.reorder_in(x, None);
        }
        reorder || self.blocked.contains_key(x)
    }

    fn same_shapes(&self, node: &Node<'a>) -> bool {
        let shape = |t: &str| self.wiring.shape(t);
        let first = node.inputs.first().and_then(|&t| shape(t));
        node.inputs.iter().all(|t| self.blocked.contains_key(t) && first.is_some() && shape(t) == first)
    }

    /// A `ReorderInput` of plain `x` (once per tensor), owned by `owner`.
    fn reorder_in(&mut self, x: &'a str, owner: Option<usize>) {
        if !self.blocked.contains_key(x) && self.reordered_in.insert(x) {
            let node = self.sized(ElementOp::ReorderInput, x);
            self.reorders.push(Reorder { owner, op_type: "ReorderInput", node });
        }
    }

    fn sized(&self, op: ElementOp, t: &str) -> std::result::Result<TimedNode, String> {
        let channels = self.wiring.channels(t);
        self.wiring.elements(t).map(|e| TimedNode::Elements { op, channels, input: e, output: e, taps: 1 })
    }

    /// Adds one `ReorderOutput` per blocked tensor that a plain node or the graph output reads.
    fn finish(mut self) -> Vec<Reorder> {
        let mut out: Vec<(&'a str, usize)> = self.blocked.iter().map(|(&t, &k)| (t, k)).collect();
        out.sort_by_key(|&(_, k)| k);
        for (t, k) in out {
            let plain = self.wiring.readers(t).any(|r| !self.reads_blocked(r)) || self.graph.outputs.contains(t);
            if plain {
                let owner = self.conv_behind(k);
                let node = self.sized(ElementOp::ReorderOutput, t);
                self.reorders.push(Reorder { owner, op_type: "ReorderOutput", node });
            }
        }
        self.reorders
    }

    /// Whether reader `r` takes a blocked input as it is: a convolution, `Concat` or `Split`
    /// (see the module), or a node that runs blocked.
    fn reads_blocked(&self, r: &Node<'a>) -> bool {
        r.is("Conv")
            || r.is("Concat")
            || r.is("Split")
            || r.outputs.first().is_some_and(|y| self.blocked.contains_key(y))
    }

    /// The `Conv` behind node `k`: itself, or the convolution that activations fused into it
    /// (`Relu`, `x·hardsigmoid(x)`, ...) read, through at most three of them.
    fn conv_behind(&self, k: usize) -> Option<usize> {
        self.conv_within(k, 3)
    }

    fn conv_within(&self, k: usize, depth: usize) -> Option<usize> {
        let node = &self.graph.nodes[k].1;
        if node.is("Conv") {
            return Some(k);
        }
        if depth == 0 || !matches!(elements::timing(self.wiring, node), Some(Timing::Fused(_))) {
            return None;
        }
        let writers = node.inputs.iter().filter_map(|x| self.wiring.writer_index(x));
        writers.filter_map(|w| self.conv_within(w, depth - 1)).next()
    }
}
