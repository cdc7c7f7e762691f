//! A decoded ONNX model: the fields the rewrite reads, with every original byte kept for
//! re-encoding ([`Patch`]).

use super::external::{self, External};
use super::infer::{self, Shapes};
use super::onnx_error;
use super::proto::{self, Node, Problem, Tensor};
use super::wire::{self, Field};
use crate::error::Result;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The model and its graph, decoded at the wire level.
pub(crate) struct Graph<'a> {
    pub model: Vec<Field<'a>>,
    pub graph_bytes: &'a [u8],
    pub fields: Vec<Field<'a>>,
    pub opset: Option<i64>,
    /// Nodes in graph order, with their field index in the graph.
    pub nodes: Vec<(usize, Node<'a>)>,
    /// Initializers by name, with their field index. A `Constant` node's `value` tensor counts
    /// as one, named by the node's output, with the node's field index: removing that field
    /// removes the node.
    pub inits: HashMap<&'a str, (usize, Tensor<'a>)>,
    /// The fields of initializers whose data was read from an external file (written inline).
    pub external_fields: HashMap<usize, &'a [u8]>,
    /// Graph inputs with their shapes, when given.
    pub inputs: Vec<(String, Option<Vec<Option<i64>>>)>,
    /// Each graph input's field index.
    pub input_fields: HashMap<String, usize>,
    /// The model's IR version (ModelProto field 1; 0 when absent).
    pub ir_version: u64,
    pub outputs: HashSet<String>,
    /// Every name in use (subgraphs included).
    pub names: HashSet<String>,
    /// Every tensor each node uses (subgraph references included).
    pub node_uses: Vec<HashSet<String>>,
}

impl<'a> Graph<'a> {
    /// Decodes `bytes`, external data from `ext`; `file` names the model in errors.
    pub(crate) fn parse(bytes: &'a [u8], file: &Path, ext: &'a External) -> Result<Self> {
        let p = |e: Problem| onnx_error(file, e.location, e.reason);
        let model = wire::parse(bytes).map_err(|e| onnx_error(file, "model", format!("not an ONNX model: {e}")))?;
        let graphs: Vec<&Field<'_>> = model.iter().filter(|f| f.number == proto::MODEL_GRAPH).collect();
        let graph_field = match graphs.as_slice() {
            [] => return Err(onnx_error(file, "model", "not an ONNX model: it has no graph (ModelProto field 7)")),
            [g] => *g,
            _ => return Err(onnx_error(file, "model", format!("{} graphs; a model has one", graphs.len()))),
        };
        let graph_bytes = graph_field
            .bytes()
            .ok_or_else(|| onnx_error(file, "model", "not an ONNX model: field 7 (graph) is not a message"))?;
        let opset = proto::default_opset(&model).map_err(p)?;
        let ir_version =
            model.iter().find(|f| f.number == proto::MODEL_IR_VERSION).and_then(|f| f.varint()).unwrap_or(0);
        let fields = wire::parse(graph_bytes).map_err(|e| onnx_error(file, "graph", e.to_string()))?;
        let mut g = Graph {
            model,
            graph_bytes,
            fields: Vec::new(),
            opset,
            nodes: Vec::new(),
            inits: HashMap::new(),
            external_fields: HashMap::new(),
            inputs: Vec::new(),
            input_fields: HashMap::new(),
            ir_version,
            outputs: HashSet::new(),
            names: HashSet::new(),
            node_uses: Vec::new(),
        };
        g.read_fields(&fields, file, ext)?;
        g.read_constants().map_err(p)?;
        g.fields = fields;
        proto::collect_names(graph_bytes, &mut g.names, 0).map_err(p)?;
        for (_, n) in &g.nodes {
            let mut u: HashSet<String> = n.inputs.iter().map(|s| s.to_string()).collect();
            proto::subgraph_inputs(n, &mut u, 0).map_err(p)?;
            g.node_uses.push(u);
        }
        Ok(g)
    }

    /// Nodes, initializers, inputs and outputs of the graph's fields.
    fn read_fields(&mut self, fields: &[Field<'a>], file: &Path, ext: &'a External) -> Result<()> {
        let p = |e: Problem| onnx_error(file, e.location, e.reason);
        for (i, f) in fields.iter().enumerate() {
            let bytes_of = |what: &str| {
                f.bytes()
                    .ok_or_else(|| onnx_error(file, "graph", format!("{what} (field {}) is not a message", f.number)))
            };
            match f.number {
                proto::GRAPH_NODE => self.nodes.push((i, Node::parse(bytes_of("node")?, self.nodes.len()).map_err(p)?)),
                proto::GRAPH_INITIALIZER => {
                    let mut t = Tensor::parse(bytes_of("initializer")?, self.inits.len()).map_err(p)?;
                    if let Some(r) = t.external_ref().map_err(p)? {
                        let loc = format!("initializer `{}`", t.name);
                        let data = ext.slice(&r, &loc).map_err(p)?;
                        t.raw_data = Some(data);
                        t.typed_data.clear();
                        t.external = false;
                        self.external_fields.insert(i, data);
                    }
                    self.inits.insert(t.name, (i, t));
                }
                proto::GRAPH_INPUT => {
                    let input = proto::value_info(bytes_of("input")?, "input").map_err(p)?;
                    self.input_fields.insert(input.0.clone(), i);
                    self.inputs.push(input);
                }
                proto::GRAPH_OUTPUT => {
                    self.outputs.insert(proto::value_info(bytes_of("output")?, "output").map_err(p)?.0);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Adds every top-level `Constant` node whose `value` is an inline tensor to
    /// [`inits`](Self::inits), under the node's output name (a name an initializer already has
    /// is left to the initializer; an external tensor is left alone).
    fn read_constants(&mut self) -> std::result::Result<(), Problem> {
        for (field, node) in &self.nodes {
            let (Some(t), [out]) = (node.attr("value").and_then(|a| a.t), node.outputs.as_slice()) else { continue };
            if !node.is("Constant") || self.inits.contains_key(out) {
                continue;
            }
            let mut tensor = Tensor::parse(t, self.inits.len())?;
            if !tensor.external {
                tensor.name = out;
                self.inits.insert(out, (*field, tensor));
            }
        }
        Ok(())
    }

    /// Every tensor's shape, inferred from the model inputs (`input_size` replacing their
    /// spatial dims), and the model's input size.
    pub(crate) fn shapes(&self, input_size: Option<(usize, usize)>) -> (Shapes, Option<(usize, usize)>) {
        let shapes = infer::infer(self, input_size);
        let model = self.inputs.iter().filter(|(n, _)| !self.inits.contains_key(n.as_str()));
        let model_size = model.filter_map(|(n, _)| shapes.hw(n)).next();
        (shapes, model_size.or(input_size))
    }
}

/// A `Conv`'s or `ConvTranspose`'s `group` attribute (1 when absent or not positive).
pub(crate) fn groups(node: &Node<'_>) -> usize {
    node.attr("group").and_then(|a| a.i).unwrap_or(1).max(1) as usize
}

/// A 4-D tensor's dims as sizes.
pub(crate) fn dims4(t: &Tensor<'_>) -> Option<[usize; 4]> {
    if t.dims.len() != 4 {
        return None;
    }
    let mut d = [0usize; 4];
    for (o, &v) in d.iter_mut().zip(&t.dims) {
        *o = usize::try_from(v).ok()?;
    }
    Some(d)
}

/// What replaces what in the graph, kept apart from decoding and encoding: nodes by the graph
/// field they replace, new initializers by the field they follow, fields removed.
#[derive(Debug, Default)]
pub(crate) struct Patch {
    pub nodes: HashMap<usize, Vec<Vec<u8>>>,
    pub initializers: HashMap<usize, Vec<Vec<u8>>>,
    pub removed: HashSet<usize>,
    /// List every new initializer as a graph input too (IR version 3 and below require it).
    pub new_as_inputs: bool,
    /// ValueInfoProtos appended to the graph's outputs.
    pub outputs: Vec<Vec<u8>>,
}

impl Graph<'_> {
    /// The model with `patch` applied; every field it does not touch is copied byte for byte.
    pub(crate) fn encode(&self, patch: &Patch, size_hint: usize) -> Vec<u8> {
        let mut graph = Vec::with_capacity(self.graph_bytes.len());
        let mut listed = Vec::new();
        for (i, f) in self.fields.iter().enumerate() {
            if let Some(nodes) = patch.nodes.get(&i) {
                for n in nodes {
                    wire::put_bytes(&mut graph, proto::GRAPH_NODE, n);
                }
            } else if !patch.removed.contains(&i) {
                match self.external_fields.get(&i) {
                    Some(data) => {
                        let inline = external::inline(f.bytes().unwrap_or(&[]), data);
                        wire::put_bytes(&mut graph, proto::GRAPH_INITIALIZER, &inline);
                    }
                    None => graph.extend_from_slice(f.raw),
                }
            }
            for t in patch.initializers.get(&i).into_iter().flatten() {
                wire::put_bytes(&mut graph, proto::GRAPH_INITIALIZER, t);
                // New tensors are encoded by this crate: they parse.
                if let Some(t) = patch.new_as_inputs.then(|| Tensor::parse(t, 0).ok()).flatten() {
                    listed.push(proto::encode_value_info(t.name, t.data_type, &t.dims));
                }
            }
        }
        for v in &listed {
            wire::put_bytes(&mut graph, proto::GRAPH_INPUT, v);
        }
        for v in &patch.outputs {
            wire::put_bytes(&mut graph, proto::GRAPH_OUTPUT, v);
        }
        let mut out = Vec::with_capacity(size_hint + graph.len().saturating_sub(self.graph_bytes.len()));
        for f in &self.model {
            if f.number == proto::MODEL_GRAPH {
                wire::put_bytes(&mut out, proto::MODEL_GRAPH, &graph);
            } else {
                out.extend_from_slice(f.raw);
            }
        }
        out
    }
}
