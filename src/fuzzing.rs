//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the crate's hand-written
//! parsers run on raw bytes, without files. Not part of the supported API; every function
//! returns the parser's verdict and must never panic, whatever the bytes.

use crate::error::Result;
use std::path::Path;

const FILE: &str = "<fuzz>";

/// The safetensors header (length, JSON, entries, data layout) and the `dac.layer.*` records
/// in its metadata.
pub fn safetensors(bytes: &[u8]) -> Result<usize> {
    let header = crate::io::safetensors::Header::parse(bytes, Path::new(FILE))?;
    let records = crate::io::records::records_of(&header.metadata, Path::new(FILE))?;
    Ok(header.tensors.len() + records.len())
}

/// The protobuf wire reader on a message and, recursively, on every length-delimited field
/// that parses as a message (up to `depth` levels).
pub fn protobuf(bytes: &[u8]) -> usize {
    crate::io::onnx::fuzz_wire(bytes, 4)
}

/// The ONNX model parser: the decoded graph's node count.
pub fn onnx_model(bytes: &[u8]) -> Result<usize> {
    crate::io::onnx::fuzz_model(bytes)
}

/// Shape inference and MAC counting on a decoded graph: how many tensors got a shape.
pub fn onnx_shapes(bytes: &[u8], input_size: Option<(usize, usize)>) -> Result<usize> {
    crate::io::onnx::fuzz_shapes(bytes, input_size)
}
