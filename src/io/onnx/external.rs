//! Initializers whose data lives in files beside the model (ONNX "external data": a
//! `TensorProto` with `data_location = EXTERNAL` and `external_data` entries `location`,
//! `offset`, `length`).
//!
//! The files are read once, before the graph is decoded, so that a tensor's data is a slice of
//! them as it is of the model's bytes otherwise. A location is resolved against the model's
//! directory and must stay inside it (relative, no `..`), as onnxruntime requires. The rewrite
//! writes every such tensor back inline ([`inline`]): the output is one self-contained file.
//! Subgraphs (`If`, `Loop` bodies) are copied as they are, external references included.

use super::onnx_error;
use super::proto::{self, PResult, Problem, Tensor};
use super::wire;
use crate::error::Result;
use std::collections::HashMap;
use std::path::{Component, Path};

/// Where an initializer's data is: a file beside the model and a byte range of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExternalRef<'a> {
    pub location: &'a str,
    pub offset: usize,
    /// `None`: to the end of the file.
    pub length: Option<usize>,
}

/// The external data files a model refers to, by location, read into memory.
#[derive(Debug, Default)]
pub(crate) struct External {
    files: HashMap<String, Vec<u8>>,
    /// Whether the model came from a file whose directory locations resolve against.
    has_dir: bool,
}

impl External {
    /// No files: a model given as bytes (a reference to external data is then an error).
    pub(crate) fn none() -> Self {
        Self::default()
    }

    /// Whether the model refers to no external file.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Reads every file the top-level initializers of the model in `bytes` (read from `file`)
    /// refer to.
    pub(crate) fn load(bytes: &[u8], file: &Path) -> Result<Self> {
        let mut ext = External { files: HashMap::new(), has_dir: true };
        let dir = file.parent().unwrap_or(Path::new(""));
        for t in top_level_initializers(bytes) {
            let Ok(Some(r)) = t.external_ref() else { continue };
            if ext.files.contains_key(r.location) {
                continue;
            }
            let path = safe_location(r.location)
                .map(|rel| dir.join(rel))
                .map_err(|reason| onnx_error(file, format!("initializer `{}`", t.name), reason))?;
            let data = std::fs::read(&path).map_err(|e| {
                let reason = format!("external data file `{}` ({}) cannot be read: {e}", r.location, path.display());
                onnx_error(file, format!("initializer `{}`", t.name), reason)
            })?;
            ext.files.insert(r.location.to_string(), data);
        }
        Ok(ext)
    }

    /// The bytes `r` names.
    pub(crate) fn slice(&self, r: &ExternalRef<'_>, loc: &str) -> PResult<&[u8]> {
        let Some(data) = self.files.get(r.location) else {
            let why = if self.has_dir {
                format!("external data file `{}` was not read", r.location)
            } else {
                format!(
                    "data is stored in the external file `{}`; read the model from its file \
                     (rewrite_file) so that its directory is known",
                    r.location
                )
            };
            return Err(Problem::new(loc, why));
        };
        let end = match r.length {
            Some(n) => r.offset.checked_add(n),
            None => Some(data.len()),
        };
        match end {
            Some(end) if r.offset <= end && end <= data.len() => Ok(&data[r.offset..end]),
            _ => Err(Problem::new(
                loc,
                format!(
                    "external data range offset {} length {:?} lies outside `{}` ({} bytes)",
                    r.offset,
                    r.length,
                    r.location,
                    data.len()
                ),
            )),
        }
    }
}

/// The initializers of the model's main graph that parse (the rest is the decoder's to report).
fn top_level_initializers(bytes: &[u8]) -> Vec<Tensor<'_>> {
    let Ok(model) = wire::parse(bytes) else { return Vec::new() };
    let graph = model.iter().find(|f| f.number == proto::MODEL_GRAPH).and_then(|f| f.bytes());
    let Some(Ok(fields)) = graph.map(wire::parse) else { return Vec::new() };
    fields
        .iter()
        .filter(|f| f.number == proto::GRAPH_INITIALIZER)
        .filter_map(|f| f.bytes())
        .enumerate()
        .filter_map(|(i, b)| Tensor::parse(b, i).ok())
        .collect()
}

/// `location` as a path inside the model's directory: relative, without `..`.
fn safe_location(location: &str) -> std::result::Result<&Path, String> {
    let p = Path::new(location);
    let inside = !location.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(p)
    } else {
        Err(format!("external data location `{location}` must be a relative path inside the model's directory"))
    }
}

/// The initializer message `tensor` with its data inline: every field but `raw_data`,
/// `external_data` and `data_location`, then `raw_data`.
pub(crate) fn inline(tensor: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tensor.len() + data.len() + 16);
    for f in wire::parse(tensor).into_iter().flatten() {
        if ![proto::TENSOR_RAW_DATA, proto::TENSOR_EXTERNAL_DATA, proto::TENSOR_DATA_LOCATION].contains(&f.number) {
            out.extend_from_slice(f.raw);
        }
    }
    wire::put_bytes(&mut out, proto::TENSOR_RAW_DATA, data);
    out
}
