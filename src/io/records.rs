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
    /// Groups of the original layer (and of DAC's pointwise layer).
    pub groups: usize,
    /// The scheme: `"dac"` (the default, then not written to the file), `"spatial"`,
    /// `"channel"` or `"decoupled"`.
    pub scheme: String,
    /// DAC only: `"sqrt"`, `"pointwise"` or `"depthwise"`, where the singular values went.
    pub split: Option<String>,
    /// `C`.
    pub in_channels: usize,
    /// `N`.
    pub out_channels: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Whether `<name>.pointwise.bias` exists.
    pub bias: bool,
    /// The factors in the order they run, with their geometry (every scheme but DAC, whose
    /// records stay as before: depthwise `[C·r, 1, kh, kw]` with `C` groups, then pointwise
    /// `[N, (C/g)·r, 1, 1]` with `g` groups).
    pub factors: Vec<FactorRecord>,
    /// The [`Fit`](crate::Fit) the pair was computed for, as [displayed](crate::Fit#impl-Display-for-Fit):
    /// `"frobenius"` (the default, then not written to the file) or `"correlated=ρ"`.
    pub fit: String,
}

/// One factor of a converted layer: its tensor role, weight shape and geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FactorRecord {
    /// The role (`<layer>.<role>.weight`).
    pub role: String,
    /// The weight's `[out, in/groups, kh, kw]`.
    pub shape: [usize; 4],
    /// Stride `[h, w]`.
    pub stride: [usize; 2],
    /// Padding `[top, bottom, left, right]`.
    pub padding: [usize; 4],
    /// Dilation `[h, w]`.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
}

impl FactorRecord {
    /// The record of `spec`.
    pub(crate) fn of(spec: &crate::scheme::FactorSpec) -> Self {
        let g = spec.geometry;
        let p = g.padding;
        Self {
            role: spec.role.to_string(),
            shape: spec.dims,
            stride: [g.stride.0, g.stride.1],
            padding: [p.top, p.bottom, p.left, p.right],
            dilation: [g.dilation.0, g.dilation.1],
            groups: g.groups,
        }
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "role": self.role, "shape": self.shape, "stride": self.stride,
            "padding": self.padding, "dilation": self.dilation, "groups": self.groups,
        })
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        Some(Self {
            role: v.get("role")?.as_str()?.to_string(),
            shape: array(v.get("shape")?)?,
            stride: array(v.get("stride")?)?,
            padding: array(v.get("padding")?)?,
            dilation: array(v.get("dilation")?)?,
            groups: usize::try_from(v.get("groups")?.as_u64()?).ok()?,
        })
    }
}

/// A JSON array of exactly `N` unsigned integers.
fn array<const N: usize>(v: &serde_json::Value) -> Option<[usize; N]> {
    let items = v.as_array()?;
    if items.len() != N {
        return None;
    }
    let mut out = [0; N];
    for (o, x) in out.iter_mut().zip(items) {
        *o = usize::try_from(x.as_u64()?).ok()?;
    }
    Some(out)
}

impl LayerRecord {
    pub(crate) fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "rank": self.rank,
            "groups": self.groups,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel": self.kernel,
            "bias": self.bias,
        });
        // DAC's records are written exactly as before (no scheme or factor keys).
        if let Some(split) = &self.split {
            v["split"] = serde_json::Value::String(split.clone());
        }
        if self.scheme != "dac" {
            v["scheme"] = serde_json::Value::String(self.scheme.clone());
            v["factors"] = self.factors.iter().map(FactorRecord::to_json).collect();
        }
        // Only a non-default fit is recorded: default output stays byte for byte as before.
        if self.fit != "frobenius" {
            v["fit"] = serde_json::Value::String(self.fit.clone());
        }
        v.to_string()
    }

    fn from_json(name: &str, text: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let n = |k: &str| v.get(k)?.as_u64().and_then(|x| usize::try_from(x).ok());
        let scheme = v.get("scheme").map_or(Some("dac"), serde_json::Value::as_str)?.to_string();
        let split = v.get("split").map(|s| s.as_str().map(str::to_string)).unwrap_or_default();
        if scheme == "dac" && split.is_none() {
            return None;
        }
        let factors = match v.get("factors") {
            Some(list) => list.as_array()?.iter().map(FactorRecord::from_json).collect::<Option<Vec<_>>>()?,
            None if scheme == "dac" => Vec::new(),
            None => return None,
        };
        Some(Self {
            name: name.to_string(),
            rank: n("rank")?,
            groups: n("groups")?,
            scheme,
            split,
            in_channels: n("in_channels")?,
            out_channels: n("out_channels")?,
            kernel: array(v.get("kernel")?)?,
            factors,
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
    records_of(&Checkpoint::open(path)?.metadata, path)
}

/// The `dac.layer.*` records among a checkpoint's `__metadata__` entries.
pub(crate) fn records_of(
    metadata: &std::collections::BTreeMap<String, String>,
    path: &Path,
) -> Result<Vec<LayerRecord>> {
    let mut out = Vec::new();
    for (k, v) in metadata {
        if let Some(name) = k.strip_prefix("dac.layer.") {
            let rec = LayerRecord::from_json(name, v)
                .ok_or_else(|| format_error(path, None, format!("metadata `{k}` is not a dac layer record: {v}")))?;
            out.push(rec);
        }
    }
    Ok(out)
}
