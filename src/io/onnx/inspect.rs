//! What `dac inspect` reads from an ONNX model: every `Conv` the converters would consider, at
//! the geometry its node declares and the input size shape inference (or a declaration) gives,
//! and every other convolution node with why it cannot be converted.

use super::discover::{self, Discovered};
use super::external::External;
use super::graph::Graph;
use super::infer::Shapes;
use super::{onnx_error, proto};
use crate::convert::{self, ConvertOptions, Site};
use crate::error::Result;
use crate::io::inspect::OtherConv;
use crate::scalar::Real;
use crate::weights::Conv2dWeights;
use std::path::Path;

/// One convolution of the model: its site, its weight values and the weight's data type name.
pub(crate) struct Found {
    pub site: Site,
    pub values: Vec<f64>,
    pub dtype: &'static str,
}

impl Found {
    /// The layer in `T`, as the rewrite builds it.
    pub fn layer<T: Real>(&self) -> Result<Conv2dWeights<T>> {
        super::rewrite::build(&self.site, &self.values)
    }
}

/// The convolutions of a model.
pub(crate) struct Listing {
    /// Those the converters would consider, in graph order.
    pub found: Vec<Found>,
    /// The other convolution nodes, in graph order.
    pub others: Vec<OtherConv>,
    /// The nodes with subgraphs, which are not read.
    pub subgraph_nodes: Vec<String>,
}

/// The convolution operators besides `Conv` (none of them is converted).
const OTHER_CONVS: [&str; 4] = ["ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv"];

/// Every `Conv` of the model in `bytes` (named `file` in errors) the converters would consider,
/// in graph order, and the other convolution nodes. A layer whose size is unknown is counted
/// per output position, as a checkpoint's is.
///
/// # Errors
/// As [`rewrite_model`](super::rewrite_model) for reading the graph and its weights.
pub(crate) fn convolutions(bytes: &[u8], options: &ConvertOptions, file: &Path) -> Result<Listing> {
    let ext = External::load(bytes, file)?;
    let g = Graph::parse(bytes, file, &ext)?;
    let (shapes, _) = g.shapes(options.input_size);
    let Discovered { convs, found, blocked, subgraph_nodes, .. } = discover::find(&g, &shapes, options, file)?;
    let sites = convert::select(found, &options.selection, None, file, true, false)?;
    let found = sites
        .into_iter()
        .zip(&convs)
        .map(|(site, conv)| {
            let (_, t) = &g.inits[conv.weight];
            let values = t.values().map_err(|e| onnx_error(file, e.location, e.reason))?;
            Ok(Found { site, values, dtype: proto::data_type_name(conv.data_type) })
        })
        .collect::<Result<_>>()?;
    let others = others(&g, &shapes, &blocked);
    Ok(Listing { found, others, subgraph_nodes })
}

/// The blocked `Conv`s and the nodes of [`OTHER_CONVS`], with their MACs when known.
fn others(g: &Graph<'_>, shapes: &Shapes, blocked: &[(usize, convert::SkippedLayer)]) -> Vec<OtherConv> {
    let mut out = Vec::new();
    for (k, (_, node)) in g.nodes.iter().enumerate() {
        let reason = match blocked.iter().find(|(b, _)| *b == k) {
            Some((_, s)) => s.reason.to_string(),
            None if OTHER_CONVS.contains(&node.op_type) => format!("a {} node: dac converts Conv nodes", node.op_type),
            None => continue,
        };
        let macs = discover::node_cost(g, node, shapes).map(|(c, _)| c.macs);
        let name = if node.name.is_empty() { format!("#{k}") } else { node.name.to_string() };
        out.push(OtherConv { name, op: node.op_type.to_string(), reason, macs });
    }
    out
}
