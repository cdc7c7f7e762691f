//! Where onnxruntime keeps tensors in its blocked (NCHWc) layout, and the reorders it inserts
//! between blocked and plain nodes, as its NCHWc transformer decides (onnxruntime 1.32, CPU;
//! `nchwc_transformer.cc`, checked against the optimised graphs of the zoo's networks).
//!
//! Walking the nodes in order, a tensor is blocked when it is written by
//! - a convolution of a blocked [`ConvClass`] (its input is reordered in unless it is blocked
//!   or the class reads plain input);
//! - a `MaxPool`/`AveragePool` of channels a multiple of the block (its input reordered in if
//!   plain), a `GlobalAveragePool`/`GlobalMaxPool` of such channels on a blocked input;
//! - an `Add`, `Sum` or `Mul` whose inputs are all blocked and of one shape, a channel `Concat`
//!   of blocked inputs whose channels are multiples of the block;
//! - `Relu`, `Sigmoid`, `Tanh`, `BatchNormalization` or an activation fused into the
//!   convolution before it ([`elements`](super::elements)), on a blocked input.
//!
//! Every other reader needs the plain tensor: one `ReorderOutput` per blocked tensor read plain
//! (a graph output included); a `Transpose` to NHWC of a blocked tensor becomes such a reorder.
//!
//! The time table's convolutions of plain classes (`*_nchw`, grouped, a channel multiplier) and
//! of fewer input channels than a block were measured between blocked convolutions, with the
//! reorders they cause: here they read any input as it is, and their output counts as blocked
//! but is never reordered out.
//! A reorder next to a convolution belongs to it (a `ReorderInput` to the convolution it feeds,
//! a `ReorderOutput` to the one whose output, or fused activation's output, it copies): it runs
//! whatever the layer becomes, and profiles count it with the layer. The others are fixed time.

use super::elements::{self, Timing, Wiring};
use super::graph::{dims4, Graph};
use super::proto::Node;
use crate::time::{ConvClass, ElementOp, TimedNode};
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
    /// Outputs of plain-class convolutions: blocked for their readers, never reordered out.
    free: HashSet<&'a str>,
    reordered_in: HashSet<&'a str>,
    reorders: Vec<Reorder>,
}

/// The reorders onnxruntime inserts in `graph` for channel blocks of `block`.
pub(crate) fn reorders(wiring: &Wiring<'_, '_>, graph: &Graph<'_>, block: usize) -> Vec<Reorder> {
    let mut walk = Walk {
        wiring,
        graph,
        block,
        blocked: HashMap::new(),
        free: HashSet::new(),
        reordered_in: HashSet::new(),
        reorders: Vec::new(),
    };
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
            "Concat" => self.concat(node),
            "Relu" | "Sigmoid" | "Tanh" | "BatchNormalization" => self.is_blocked(node.inputs.first()),
            _ => {
                matches!(elements::timing(self.wiring, node), Some(Timing::Fused))
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

    /// A `Conv`: a blocked class has its plain input reordered in unless it reads it plain; a
    /// plain class's output is free (see the module).
    fn conv(&mut self, k: usize, node: &Node<'a>) -> bool {
        let (Some(class), Some(&x), Some(&y)) = (self.class(node), node.inputs.first(), node.outputs.first()) else {
            return false;
        };
        if !class.reads_plain() {
            self.reorder_in(x, Some(k));
        } else if !class.blocked() {
            self.free.insert(y);
        }
        true
    }

    fn class(&self, node: &Node<'a>) -> Option<ConvClass> {
        let dims = dims4(&self.graph.inits.get(node.inputs.get(1)?)?.1)?;
        let groups = node.attr("group").and_then(|a| a.i).map_or(1, |g| g.max(1) as usize);
        Some(ConvClass::of(dims, groups, self.block))
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

    fn concat(&self, node: &Node<'a>) -> bool {
        let axis = node.attr("axis").and_then(|a| a.i);
        let aligned = |t: &str| self.wiring.channels(t).is_multiple_of(self.block);
        axis == Some(1) && node.inputs.iter().all(|t| self.blocked.contains_key(t) && aligned(t))
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
        for (t, k) in out.into_iter().filter(|(t, _)| !self.free.contains(t)) {
            let plain = self.wiring.readers(t).any(|r| !self.reads_blocked(r)) || self.graph.outputs.contains(t);
            if plain {
                let owner = self.conv_behind(k);
                let node = self.sized(ElementOp::ReorderOutput, t);
                self.reorders.push(Reorder { owner, op_type: "ReorderOutput", node });
            }
        }
        self.reorders
    }

    /// Whether reader `r` takes a blocked input as it is: a convolution (see the module), or a
    /// node that runs blocked.
    fn reads_blocked(&self, r: &Node<'a>) -> bool {
        r.is("Conv") || r.outputs.first().is_some_and(|y| self.blocked.contains_key(y))
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
        if depth == 0 || !matches!(elements::timing(self.wiring, node), Some(Timing::Fused)) {
            return None;
        }
        let writers = node.inputs.iter().filter_map(|x| self.wiring.writer_index(x));
        writers.filter_map(|w| self.conv_within(w, depth - 1)).next()
    }
}
