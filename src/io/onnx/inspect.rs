//! What `dac inspect` reads from an ONNX model: every `Conv` the converters would consider, at
//! the geometry its node declares and the input size shape inference (or a declaration) gives.

use super::discover::{self, Discovered};
use super::external::External;
use super::graph::Graph;
use super::{onnx_error, proto};
use crate::convert::{self, ConvertOptions, Site};
use crate::error::Result;
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

/// Every `Conv` of the model in `bytes` (named `file` in errors) the converters would consider,
/// in graph order. A layer whose size is unknown is counted per output position, as a
/// checkpoint's is.
///
/// # Errors
/// As [`rewrite_model`](super::rewrite_model) for reading the graph and its weights.
pub(crate) fn convolutions(bytes: &[u8], options: &ConvertOptions, file: &Path) -> Result<Vec<Found>> {
    let ext = External::load(bytes, file)?;
    let g = Graph::parse(bytes, file, &ext)?;
    let (shapes, _) = g.shapes(options.input_size);
    let Discovered { convs, found, .. } = discover::find(&g, &shapes, options, file)?;
    let sites = convert::select(found, &options.selection, None, file, true, false)?;
    sites
        .into_iter()
        .zip(&convs)
        .map(|(site, conv)| {
            let (_, t) = &g.inits[conv.weight];
            let values = t.values().map_err(|e| onnx_error(file, e.location, e.reason))?;
            Ok(Found { site, values, dtype: proto::data_type_name(conv.data_type) })
        })
        .collect()
}
