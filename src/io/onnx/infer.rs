//! Shape inference over an ONNX graph: the full shape of every tensor the operators of real
//! exports produce, and the values of the small integer tensors that shape arithmetic computes
//! (`Shape` → `Gather` → `Concat` → `Reshape`, pads computed for `Pad`, ...).
//!
//! The walk starts from the initializers and the model inputs; a symbolic first dimension (the
//! batch) counts as 1. Counts are per image ([`Shapes::batch`] divides the rest). Each operator is one small function of
//! [`ops`](super::ops); where an operator is unknown or its result depends on data, the walk
//! records why, and every tensor computed from it carries that reason instead of a shape: the
//! tool never guesses a size.

use super::graph::Graph;
use super::ops;
use super::proto::{Node, Tensor};
use std::collections::HashMap;

/// Tensors with more elements than this keep their shape only, not their values.
pub(crate) const MAX_DATA: usize = 4096;

/// The constant contents of a small tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    Int(Vec<i64>),
    Float(Vec<f64>),
}

impl Data {
    pub(crate) fn len(&self) -> usize {
        match self {
            Data::Int(v) => v.len(),
            Data::Float(v) => v.len(),
        }
    }
    /// The values as integers (floats only when every one is integral).
    pub(crate) fn ints(&self) -> Option<Vec<i64>> {
        match self {
            Data::Int(v) => Some(v.clone()),
            Data::Float(v) => v.iter().map(|&x| (x.fract() == 0.0 && x.abs() < 9e15).then_some(x as i64)).collect(),
        }
    }
    /// The values as floats.
    pub(crate) fn floats(&self) -> Vec<f64> {
        match self {
            Data::Int(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Float(v) => v.clone(),
        }
    }
    /// The values at `indices`.
    pub(crate) fn pick(&self, indices: &[usize]) -> Data {
        match self {
            Data::Int(v) => Data::Int(indices.iter().map(|&i| v[i]).collect()),
            Data::Float(v) => Data::Float(indices.iter().map(|&i| v[i]).collect()),
        }
    }
}

/// What inference knows of a tensor: its shape, and its values when small and constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fact {
    pub shape: Vec<usize>,
    pub data: Option<Data>,
}

impl Fact {
    /// A tensor of this shape, values unknown.
    pub(crate) fn shaped(shape: Vec<usize>) -> Self {
        Fact { shape, data: None }
    }
    /// A tensor of this shape and, when known, these values (dropped when large or when they
    /// do not fill the shape).
    pub(crate) fn with_data(shape: Vec<usize>, data: Option<Data>) -> Self {
        let data = data.filter(|d| d.len() <= MAX_DATA && Some(d.len()) == numel(&shape));
        Fact { shape, data }
    }
    /// A 1-D integer tensor.
    pub(crate) fn ints(v: Vec<i64>) -> Self {
        Fact::with_data(vec![v.len()], Some(Data::Int(v)))
    }
    /// The element count, `None` on overflow.
    pub(crate) fn numel(&self) -> Option<usize> {
        numel(&self.shape)
    }
    /// `(height, width)` of a 4-D tensor.
    pub(crate) fn hw(&self) -> Option<(usize, usize)> {
        (self.shape.len() == 4).then(|| (self.shape[2], self.shape[3]))
    }
    /// A fact about an initializer: its shape, and its values when small.
    pub(crate) fn of_tensor(t: &Tensor<'_>) -> Option<Self> {
        let shape: Vec<usize> = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
        let small = numel(&shape).is_some_and(|n| n <= MAX_DATA);
        let data = if small { tensor_data(t) } else { None };
        Some(Fact::with_data(shape, data))
    }
}

/// A tensor's values, when it is an integer or float tensor the decoder reads.
pub(crate) fn tensor_data(t: &Tensor<'_>) -> Option<Data> {
    match t.ints() {
        Ok(Some(v)) => Some(Data::Int(v)),
        Ok(None) => t.values().ok().map(Data::Float),
        Err(_) => None,
    }
}

/// The product of `shape`, `None` on overflow.
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The result of inference: facts by tensor name, and why the other tensors are unknown.
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    pub facts: HashMap<String, Fact>,
    /// Tensor → the node (or graph input) where inference stopped, and why.
    pub unknown: HashMap<String, String>,
    /// The batch of the first 4-D model input (1 when symbolic).
    pub batch: usize,
}

impl Shapes {
    /// A 4-D tensor's `(height, width)`.
    pub(crate) fn hw(&self, tensor: &str) -> Option<(usize, usize)> {
        self.facts.get(tensor).and_then(Fact::hw)
    }
    /// Records what is known of `tensor`.
    fn set(&mut self, tensor: &str, fact: Result<Fact, String>) {
        match fact {
            Ok(f) => {
                self.unknown.remove(tensor);
                self.facts.insert(tensor.to_string(), f);
            }
            Err(why) => {
                self.facts.remove(tensor);
                self.unknown.insert(tensor.to_string(), why);
            }
        }
    }
    /// Why `tensor` has no known shape.
    pub(crate) fn why(&self, tensor: &str) -> String {
        self.unknown.get(tensor).cloned().unwrap_or_else(|| format!("tensor `{tensor}` is produced by no node"))
    }
}

/// Why a node's outputs are unknown.
#[derive(Debug)]
pub(crate) enum Stop {
    /// An input the rule needs is unknown (its own reason carries over).
    Missing(String),
    /// The rule cannot compute the outputs.
    Reason(String),
}

/// A node with its inputs' facts, as an operator's rule sees it.
pub(crate) struct Ctx<'n, 'a> {
    pub node: &'n Node<'a>,
    pub opset: i64,
    facts: &'n HashMap<String, Fact>,
}

impl Ctx<'_, '_> {
    /// Input `i`: its fact, or [`Stop::Missing`] (absent inputs are a malformed node).
    pub(crate) fn input(&self, i: usize) -> Result<&Fact, Stop> {
        match self.node.inputs.get(i).filter(|n| !n.is_empty()) {
            None => Err(Stop::Reason(format!("input {i} is missing"))),
            Some(n) => self.facts.get(*n).ok_or_else(|| Stop::Missing(n.to_string())),
        }
    }
    /// Optional input `i`: `None` when absent or empty-named.
    pub(crate) fn optional(&self, i: usize) -> Result<Option<&Fact>, Stop> {
        match self.node.inputs.get(i).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(n) => self.facts.get(*n).map(Some).ok_or_else(|| Stop::Missing(n.to_string())),
        }
    }
    /// Optional input `i` as integer values, when present.
    pub(crate) fn ints_input(&self, i: usize) -> Result<Option<Vec<i64>>, Stop> {
        let Some(f) = self.optional(i)? else { return Ok(None) };
        f.data.as_ref().and_then(Data::ints).map(Some).ok_or_else(|| self.not_constant(i))
    }
    /// Optional input `i` as float values, when present.
    pub(crate) fn floats_input(&self, i: usize) -> Result<Option<Vec<f64>>, Stop> {
        let Some(f) = self.optional(i)? else { return Ok(None) };
        f.data.as_ref().map(|d| Some(d.floats())).ok_or_else(|| self.not_constant(i))
    }
    fn not_constant(&self, i: usize) -> Stop {
        let name = self.node.inputs.get(i).copied().unwrap_or("");
        Stop::Reason(format!("input `{name}` is not a constant shape inference can compute"))
    }
    /// Integer attribute `name`, or `default`.
    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.node.attr(name).and_then(|a| a.i).unwrap_or(default)
    }
    /// Integer-list attribute `name`, when present.
    pub(crate) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.node.attr(name).map(|a| a.ints.clone())
    }
}

/// A normalised axis of a rank-`rank` tensor.
pub(crate) fn axis(a: i64, rank: usize) -> Result<usize, Stop> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(Stop::Reason(format!("axis {a} is out of range for a rank-{rank} tensor")))
    }
}

/// Multidirectional (numpy) broadcasting.
pub(crate) fn broadcast(shapes: &[&[usize]]) -> Result<Vec<usize>, Stop> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(Stop::Reason(format!("shapes {shapes:?} do not broadcast")));
            }
        }
    }
    Ok(out)
}

/// Infers the graph's shapes; `input_size` replaces the spatial dims of 4-D model inputs.
pub(crate) fn infer(g: &Graph<'_>, input_size: Option<(usize, usize)>) -> Shapes {
    let mut s = Shapes { batch: 1, ..Shapes::default() };
    for (name, (_, t)) in &g.inits {
        let fact = Fact::of_tensor(t).ok_or_else(|| format!("initializer `{name}` has invalid dims {:?}", t.dims));
        s.set(name, fact);
    }
    for (name, shape) in g.inputs.iter().filter(|(n, _)| !g.inits.contains_key(n.as_str())) {
        s.set(name, model_input(name, shape.as_deref(), input_size));
    }
    let model_inputs = g.inputs.iter().filter(|(n, _)| !g.inits.contains_key(n.as_str()));
    let first_image = model_inputs.filter_map(|(n, _)| s.facts.get(n)).find(|f| f.shape.len() == 4);
    s.batch = first_image.map_or(1, |f| f.shape[0].max(1));
    let opset = g.opset.unwrap_or(ops::DEFAULT_OPSET);
    for (k, (_, node)) in g.nodes.iter().enumerate() {
        let outcome = match ops::rule(node) {
            None => Err(Stop::Reason("an operator dac's shape inference does not know".to_string())),
            Some(rule) => rule(&Ctx { node, opset, facts: &s.facts }),
        };
        record(&mut s, node, k, outcome);
    }
    s
}

fn op_name(node: &Node<'_>) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.to_string()
    } else {
        format!("{}:{}", node.domain, node.op_type)
    }
}

/// Stores a node's outputs, or why they are unknown.
fn record(s: &mut Shapes, node: &Node<'_>, k: usize, outcome: Result<Vec<Fact>, Stop>) {
    let outputs = node.outputs.iter().filter(|o| !o.is_empty());
    match outcome {
        Ok(facts) => {
            let why = format!("{}: operator {} gives no such output", node.label(k), op_name(node));
            for (i, o) in outputs.enumerate() {
                s.set(o, facts.get(i).cloned().ok_or_else(|| why.clone()));
            }
        }
        Err(stop) => {
            let why = match stop {
                Stop::Missing(t) => s.why(&t),
                Stop::Reason(r) => format!("shape inference stopped at {} ({}): {r}", node.label(k), op_name(node)),
            };
            for o in outputs {
                s.set(o, Err(why.clone()));
            }
        }
    }
}

/// A model input's fact: static dims, a symbolic first (batch) dim counted as 1, and
/// `input_size` for the spatial dims of a 4-D input.
fn model_input(name: &str, shape: Option<&[Option<i64>]>, input_size: Option<(usize, usize)>) -> Result<Fact, String> {
    let Some(shape) = shape else {
        return Err(format!("model input `{name}` declares no shape"));
    };
    let mut dims = Vec::with_capacity(shape.len());
    for (i, d) in shape.iter().enumerate() {
        let given = match (i, input_size, shape.len()) {
            (0, _, _) => Some(d.and_then(|v| usize::try_from(v).ok()).unwrap_or(1)),
            (2, Some((h, _)), 4) => Some(h),
            (3, Some((_, w)), 4) => Some(w),
            _ => d.and_then(|v| usize::try_from(v).ok()),
        };
        match given {
            Some(v) => dims.push(v),
            None => return Err(format!("model input `{name}` has a symbolic or missing dimension {i}")),
        }
    }
    Ok(Fact::shaped(dims))
}
