//! The geometry sidecar of a checkpoint (`dac convert --geometry FILE`): what a safetensors file
//! cannot say about its convolutions.
//!
//! A JSON object with an optional network `"input"` `[H, W]` and a `"layers"` object keyed by
//! exact layer name (the weight's name without `.weight`); every field of a layer is optional:
//!
//! ```json
//! {
//!   "input": [224, 224],
//!   "layers": {
//!     "conv1":          {"stride": 2, "padding": 3, "input": [224, 224]},
//!     "layer1.0.conv1": {"input": [56, 56]},
//!     "layer2.0.conv1": {"stride": [2, 2], "padding": [1, 1, 1, 1], "input": [56, 56]},
//!     "features.3":     {"groups": 32, "dilation": 2},
//!     "stages.1.0.mlp.fc1": {"positions": 784},
//!     "decoder.up":     {"transposed": true, "input": [28, 28]}
//!   }
//! }
//! ```
//!
//! `stride` and `dilation` are `S` or `[SH, SW]`; `padding` is `P` or `[top, bottom, left,
//! right]`; `groups` a count; `input` the layer's input `[H, W]`. A linear layer (2-D weight)
//! may give `positions`, how many times it runs per image (a channels-last MLP at every pixel,
//! tokens; default 1). `"transposed": true` marks a 4-D weight as a transposed convolution's
//! (PyTorch's `ConvTranspose2d`, `[in, out / groups, kh, kw]`), which is then left dense and
//! counted as one. `docs/geometry-resnet18.json` is the whole of a torchvision ResNet-18 at
//! 224x224; `scripts/torch_geometry.py` writes the file of any PyTorch model.

use crate::convert::LayerGeometry;
use crate::error::{Error, Result};
use crate::weights::Padding;
use serde_json::Value;
use std::path::Path;

/// A geometry sidecar's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GeometryFile {
    /// The network input `(height, width)`, if given.
    pub input: Option<(usize, usize)>,
    /// Every layer's declarations.
    pub layers: Vec<LayerGeometry>,
}

/// The network input size (if given) and every layer's declarations of the sidecar at `path`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the layer and the value
/// when it is not such a JSON object.
pub fn read_geometry(path: impl AsRef<Path>) -> Result<GeometryFile> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), action: "read", source: e })?;
    let bad = |layer: Option<&str>, reason: String| Error::Format {
        file: path.to_path_buf(),
        tensor: layer.map(str::to_string),
        reason,
    };
    let doc: Value = serde_json::from_str(&text).map_err(|e| bad(None, format!("not a geometry file: {e}")))?;
    let input = match doc.get("input") {
        Some(v) => Some(pair(v).ok_or_else(|| bad(None, format!("\"input\" = {v} is not [H, W]")))?),
        None => None,
    };
    let layers =
        doc.get("layers").and_then(Value::as_object).ok_or_else(|| bad(None, "no \"layers\" object".into()))?;
    let mut out = Vec::with_capacity(layers.len());
    for (name, v) in layers {
        out.push(layer(name, v).map_err(|reason| bad(Some(name), reason))?);
    }
    Ok(GeometryFile { input, layers: out })
}

/// One layer's entry.
fn layer(name: &str, v: &Value) -> std::result::Result<LayerGeometry, String> {
    let fields = v.as_object().ok_or_else(|| format!("{v} is not an object"))?;
    let mut g = LayerGeometry::named(name);
    for (key, x) in fields {
        let wrong = || format!("\"{key}\" = {x} is not valid");
        match key.as_str() {
            "stride" => g.stride = Some(pair_or_one(x).ok_or_else(wrong)?),
            "dilation" => g.dilation = Some(pair_or_one(x).ok_or_else(wrong)?),
            "padding" => g.padding = Some(padding(x).ok_or_else(wrong)?),
            "groups" => g.groups = Some(positive(x).ok_or_else(wrong)?),
            "input" => g.input = Some(pair(x).ok_or_else(wrong)?),
            "positions" => g.positions = Some(positive(x).ok_or_else(wrong)?),
            "transposed" => g.transposed = x.as_bool().ok_or_else(wrong)?,
            other => {
                let known = "stride, padding, dilation, groups, input, positions, transposed";
                return Err(format!("unknown field \"{other}\" ({known})"));
            }
        }
    }
    Ok(g)
}

fn positive(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|x| usize::try_from(x).ok()).filter(|&x| x > 0)
}

fn count(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|x| usize::try_from(x).ok())
}

fn pair(v: &Value) -> Option<(usize, usize)> {
    match v.as_array()?.as_slice() {
        [h, w] => Some((positive(h)?, positive(w)?)),
        _ => None,
    }
}

fn pair_or_one(v: &Value) -> Option<(usize, usize)> {
    positive(v).map(|s| (s, s)).or_else(|| pair(v))
}

fn padding(v: &Value) -> Option<Padding> {
    if let Some(p) = count(v) {
        return Some(Padding::uniform(p));
    }
    match v.as_array()?.as_slice() {
        [t, b, l, r] => Some(Padding { top: count(t)?, bottom: count(b)?, left: count(l)?, right: count(r)? }),
        _ => None,
    }
}
