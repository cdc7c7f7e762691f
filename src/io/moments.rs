//! Input moments for the planner's score, read from a safetensors file.
//!
//! One tensor per layer, named by the layer (an ONNX node's name, as `dac onnx` reports it),
//! of shape `[D, D]` with `D = C·kh·kw`, F32 or F64 (or F16, BF16): `E[p pᵀ]` over the layer's
//! input patches, entries in the order of [`DenseKernel`](crate::scheme::DenseKernel).
//! `scripts/synthetic_moments.py` writes such a file for an ONNX model.

use super::safetensors::{format_error, Checkpoint};
use crate::error::{Error, Result};
use crate::moments::InputMoments;
use std::collections::BTreeMap;
use std::path::Path;

/// Every layer's input moments in the safetensors file at `path`.
///
/// # Errors
/// [`Error::Io`] and [`Error::Format`] for a file that cannot be read as safetensors;
/// [`Error::Format`] naming the tensor for one that is not square 2-D floats; the errors of
/// [`InputMoments::new`] (with the file's name) for values that are not second moments.
pub fn read_input_moments(path: impl AsRef<Path>) -> Result<BTreeMap<String, InputMoments>> {
    let path = path.as_ref();
    let file = Checkpoint::open(path)?;
    let mut out = BTreeMap::new();
    for t in &file.tensors {
        let dim = match t.shape[..] {
            [a, b] if a == b && a > 0 => a,
            _ => return Err(format_error(path, Some(&t.name), format!("shape {:?} is not square [D, D]", t.shape))),
        };
        let values: Vec<f64> = file.read_real(t)?;
        let moments = InputMoments::new(&t.name, dim, values)
            .map_err(|e| Error::InFile { file: path.to_path_buf(), source: Box::new(e) })?;
        out.insert(t.name.clone(), moments);
    }
    Ok(out)
}
