//! The `dac.layer.<name>` records a converted checkpoint carries in its `__metadata__`.

use super::safetensors::{format_error, Checkpoint};
use crate::error::Result;
use std::path::Path;

/// The value of the `dac.format` metadata key written by this version.
pub const FORMAT_VERSION: &str = "1";

/// One converted layer as recorded in an output file's metadata (`dac.layer.<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerRecord {
    /// Layer name.
    pub name: String,
    /// Rank `r`: the depthwise layer has `in_channels·r` outputs.
    pub rank: usize,
    /// Groups of the original layer and of the pointwise layer.
    pub groups: usize,
    /// `"sqrt"`, `"pointwise"` or `"depthwise"`: where the singular values went.
    pub split: String,
    /// `C`.
    pub in_channels: usize,
    /// `N`.
    pub out_channels: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Whether `<name>.pointwise.bias` exists.
    pub bias: bool,
    /// The [`Fit`](crate::Fit) the pair was computed for, as [displayed](crate::Fit#impl-Display-for-Fit):
    /// `"frobenius"` (the default, then not written to the file) or `"correlated=ρ"`.
    pub fit: String,
}

impl LayerRecord {
    pub(crate) fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "rank": self.rank,
            "groups": self.groups,
            "split": self.split,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel": self.kernel,
            "bias": self.bias,
        });
        // Only a non-default fit is recorded: default output stays byte for byte as before.
        if self.fit != "frobenius" {
            v["fit"] = serde_json::Value::String(self.fit.clone());
        }
        v.to_string()
    }

    fn from_json(name: &str, text: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let n = |k: &str| v.get(k)?.as_u64().and_then(|x| usize::try_from(x).ok());
        let kernel = v.get("kernel")?.as_array()?;
        Some(Self {
            name: name.to_string(),
            rank: n("rank")?,
            groups: n("groups")?,
            split: v.get("split")?.as_str()?.to_string(),
            in_channels: n("in_channels")?,
            out_channels: n("out_channels")?,
            kernel: [
                kernel.first()?.as_u64().and_then(|x| usize::try_from(x).ok())?,
                kernel.get(1)?.as_u64().and_then(|x| usize::try_from(x).ok())?,
            ],
            bias: v.get("bias").and_then(serde_json::Value::as_bool).unwrap_or(false),
            fit: v.get("fit").and_then(serde_json::Value::as_str).unwrap_or("frobenius").to_string(),
        })
    }
}

/// The layers a `dac` output file records as converted, sorted by name.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) / [`Error::Format`](crate::Error::Format) when the file cannot be read or a `dac.layer.*` entry is
/// malformed.
pub fn read_records(path: impl AsRef<Path>) -> Result<Vec<LayerRecord>> {
    let path = path.as_ref();
    let ck = Checkpoint::open(path)?;
    let mut out = Vec::new();
    for (k, v) in &ck.metadata {
        if let Some(name) = k.strip_prefix("dac.layer.") {
            let rec = LayerRecord::from_json(name, v)
                .ok_or_else(|| format_error(path, None, format!("metadata `{k}` is not a dac layer record: {v}")))?;
            out.push(rec);
        }
    }
    Ok(out)
}
