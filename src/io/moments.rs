//! Input moments for the planner's score, read from and written to a safetensors file.
//!
//! One tensor per layer, named by the layer (an ONNX node's name, as `dac onnx` reports it),
//! of shape `[D, D]` with `D = C·kh·kw`, F32 or F64 (or F16, BF16): `E[p pᵀ]` over the layer's
//! input patches, entries in the order of [`DenseKernel`](crate::scheme::DenseKernel); or, for
//! a grouped layer, `[g, D/g, D/g]`: the diagonal block of each of its `g` channel groups
//! ([`InputMoments::grouped`]).
//! `scripts/synthetic_moments.py` writes such a file for an ONNX model, and so does
//! [`write_input_moments`] (`dac onnx --synthetic-moments --save-moments FILE`).

use super::atomic::AtomicFile;
use super::safetensors::{format_error, header_block, write_all, write_values, Checkpoint, FloatDtype, OutEntry};
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
        let (groups, dim) = match t.shape[..] {
            [a, b] if a == b && a > 0 => (1, a),
            [g, a, b] if a == b && a > 0 && g > 0 => (g, a),
            _ => {
                let reason = format!("shape {:?} is neither square [D, D] nor [groups, D/groups, D/groups]", t.shape);
                return Err(format_error(path, Some(&t.name), reason));
            }
        };
        let values: Vec<f64> = file.read_real(t)?;
        let moments = InputMoments::grouped(&t.name, groups, dim, values)
            .map_err(|e| Error::InFile { file: path.to_path_buf(), source: Box::new(e) })?;
        out.insert(t.name.clone(), moments);
    }
    Ok(out)
}

/// Writes `moments` to `path` in the format [`read_input_moments`] reads: one F64 `[D, D]`
/// tensor per layer, named by it (`[g, D/g, D/g]` for grouped moments). Atomic (a temporary file beside `path`, renamed into place);
/// an existing file is replaced only with `force`.
///
/// # Errors
/// [`Error::OutputExists`] when `path` exists and `force` is not set, [`Error::Io`] for file
/// system failures. Nothing is written on error.
pub fn write_input_moments(
    path: impl AsRef<Path>,
    moments: &BTreeMap<String, InputMoments>,
    force: bool,
) -> Result<()> {
    let path = path.as_ref();
    let entries: Vec<OutEntry> = moments
        .iter()
        .map(|(name, m)| {
            let (g, d) = (m.groups(), m.dim() / m.groups());
            let shape = if g == 1 { vec![d, d] } else { vec![g, d, d] };
            OutEntry { name: name.clone(), dtype: FloatDtype::F64.name().into(), shape, nbytes: g * d * d * 8 }
        })
        .collect();
    let mut file = AtomicFile::create(path, force)?;
    write_all(file.writer(), &header_block(&BTreeMap::new(), &entries), path)?;
    let mut buf = Vec::new();
    for (name, m) in moments {
        let values = m.values();
        write_values(&values, FloatDtype::F64, &mut buf, file.writer()).map_err(|e| match e {
            Ok(index) => Error::NonFinite { layer: name.clone(), what: "input moments", index, value: values[index] },
            Err(source) => Error::Io { path: path.to_path_buf(), action: "write", source },
        })?;
    }
    file.commit(None)
}
