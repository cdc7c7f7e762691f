//! `dac inspect`: every convolution of a checkpoint with its ranks, spectrum summary and cost.

use super::checkpoint::{check_dtypes, discover, done_with, factor_loaded, in_file, load, other_weights};
use super::safetensors::Checkpoint;
use crate::convert::{self, LayerGeometry, Precision, Selection, SizeSource, SkipReason, SvdMethod};
use crate::cost::Cost;
use crate::error::Result;
use crate::scalar::Real;
use crate::scheme::{Dac, Scheme};
use crate::weights::Geometry;
use std::path::Path;

/// What [`inspect_file`] reports about one convolution.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LayerInfo {
    /// Layer name.
    pub name: String,
    /// The weight's shape `[N, C/g, kh, kw]`.
    pub dims: [usize; 4],
    /// The weight's dtype name.
    pub dtype: String,
    /// Groups (as declared; default 1).
    pub groups: usize,
    /// Whether the layer has a bias.
    pub has_bias: bool,
    /// `min(N/g, kh·kw)`.
    pub max_rank: usize,
    /// Ranks strictly below this save MACs.
    pub break_even: f64,
    /// Retained energy at ranks `1..=min(5, max_rank)` (element `i` is rank `i + 1`).
    pub retained_energy: Vec<f64>,
    /// The stride, padding, dilation and groups the cost assumes (declared, or stride 1 and
    /// "same" padding).
    pub geometry: Geometry,
    /// The input size the cost refers to (`None`: one output position).
    pub input_size: Option<(usize, usize)>,
    /// Where that size came from.
    pub size: SizeSource,
    /// MACs and parameters of the dense layer at that input size.
    pub cost: Cost,
}

/// A convolution the converters cannot touch (ONNX): a `Conv` whose weight is computed,
/// quantized, 1-D or 3-D, or replaceable at run time, or another convolution operator
/// (`ConvTranspose`, `ConvInteger`, `QLinearConv`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtherConv {
    /// The node's name (`#k` for the k-th node when it has none).
    pub name: String,
    /// The operator.
    pub op: String,
    /// Why it is not converted.
    pub reason: String,
    /// MACs at its inferred shapes, or why they are unknown.
    pub macs: std::result::Result<u64, String>,
}

/// What [`inspect_model`] reads from a file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Inspection {
    /// Every convolution the converters consider, in file order.
    pub layers: Vec<LayerInfo>,
    /// The other convolutions (ONNX; empty for a checkpoint), in graph order.
    pub others: Vec<OtherConv>,
    /// An ONNX graph's nodes with subgraphs (`If`, `Loop`, `Scan`), which dac does not read:
    /// convolutions inside them are in neither list.
    pub subgraph_nodes: Vec<String>,
    /// A checkpoint's float `.weight` tensors of 3 or 5 dimensions (1-D and 3-D convolutions'),
    /// as `"name [shape]"`: not listed in `layers` nor counted ([`Summary::other_weights`]).
    ///
    /// [`Summary::other_weights`]: crate::convert::Summary::other_weights
    pub other_weights: Vec<String>,
}

impl Inspection {
    /// MACs of every convolution listed, when each one's input size is known; `None` when one
    /// is unknown. (A checkpoint's layers when none has a size count one output position each,
    /// [`SizeSource::PerPosition`], and add up as such.)
    pub fn total_macs(&self) -> Option<u64> {
        let per_position = self.layers.iter().filter(|l| l.size == SizeSource::PerPosition).count();
        let mixed = per_position > 0 && per_position < self.layers.len();
        if mixed || self.layers.iter().any(|l| l.size == SizeSource::Unknown) {
            return None; // per-position counts do not add to whole-layer ones
        }
        let others: Option<u64> = self.others.iter().map(|o| o.macs.as_ref().ok().copied()).sum();
        Some(self.layers.iter().map(|l| l.cost.macs).sum::<u64>() + others?)
    }
}

/// What [`inspect_file`] should assume.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct InspectOptions {
    selection: Selection,
    input_size: Option<(usize, usize)>,
    precision: Precision,
    svd: SvdMethod,
}

impl InspectOptions {
    /// Defaults: groups 1, MACs per output position, f32, the Gram SVD.
    pub fn new() -> Self {
        Self::default()
    }
    /// Declares `groups` for the layers matching `pattern`.
    pub fn groups(mut self, pattern: impl Into<String>, groups: usize) -> Self {
        self.selection.groups.push((pattern.into(), groups));
        self
    }
    /// The input `(height, width)` of the layers matching `pattern`.
    pub fn layer_input(mut self, pattern: impl Into<String>, height: usize, width: usize) -> Self {
        self.selection.inputs.push((pattern.into(), (height, width)));
        self
    }
    /// Every declaration of `layer` (a geometry sidecar's entry, [`read_geometry`](super::read_geometry),
    /// or a single declaration made with [`LayerGeometry::named`]) for the layers its name matches.
    pub fn declare(mut self, layer: &LayerGeometry) -> Self {
        self.selection.declare(layer);
        self
    }
    /// Input `(height, width)` for MAC counts of the layers without a
    /// [`layer_input`](Self::layer_input) (stride 1, "same" padding assumed).
    pub fn input_size(mut self, height: usize, width: usize) -> Self {
        self.input_size = Some((height, width));
        self
    }
    /// The element type spectra are computed in.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// The SVD algorithm (default [`SvdMethod::Gram`]).
    pub fn svd(mut self, method: SvdMethod) -> Self {
        self.svd = method;
        self
    }
}

/// Lists every convolution of a checkpoint (4-D `<layer>.weight`) with its ranks, spectrum
/// summary and cost, in file order. With the `onnx` feature, a path ending in `.onnx` is read
/// as an ONNX model instead: every `Conv` the converters would consider, at its node's
/// geometry and the input size shape inference gives (the declared groups are not used).
///
/// # Errors
/// As [`convert_file`](super::convert_file) for reading; [`Error::Format`](crate::Error::Format)
/// for a convolution whose dtype is not a float type.
pub fn inspect_file(path: impl AsRef<Path>, options: &InspectOptions) -> Result<Vec<LayerInfo>> {
    inspect_model(path, options).map(|i| i.layers)
}

/// [`inspect_file`], and for an ONNX model also the convolutions the converters cannot touch
/// and the nodes whose subgraphs are not read.
///
/// # Errors
/// As [`inspect_file`].
pub fn inspect_model(path: impl AsRef<Path>, options: &InspectOptions) -> Result<Inspection> {
    let path = path.as_ref();
    #[cfg(feature = "onnx")]
    if is_onnx(path) {
        return match options.precision {
            Precision::F32 => inspect_onnx::<f32>(path, options),
            Precision::F64 => inspect_onnx::<f64>(path, options),
        };
    }
    match options.precision {
        Precision::F32 => inspect::<f32>(path, options),
        Precision::F64 => inspect::<f64>(path, options),
    }
}

/// Whether `path` names an ONNX model (extension `.onnx`, any case).
#[cfg(feature = "onnx")]
fn is_onnx(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

fn inspect<T: Real>(path: &Path, options: &InspectOptions) -> Result<Inspection> {
    let ck = Checkpoint::open(path)?;
    let (found, tensors) = discover(&ck)?;
    let sites = convert::select(found, &options.selection, options.input_size, &ck.path, true, false)
        .map_err(|e| in_file(path, e))?;
    let backend = convert::backend::<T>(options.svd);
    let scheme = Dac::new(&*backend);
    let (mut infos, mut others) = (Vec::with_capacity(sites.len()), Vec::new());
    let mut scratch = Vec::new();
    for (site, &t) in sites.iter().zip(&tensors) {
        if site.found.blocked == Some(SkipReason::Transposed) {
            // Without a size its count would be per position: not added to whole-layer counts.
            let cost = site.dense_cost().map_err(|e| in_file(path, e))?.filter(|_| site.input.is_some());
            let macs = cost.map(|c| c.macs).ok_or_else(|| "no input size".to_string());
            let (name, op) = (site.name().to_string(), "transposed (declared)".to_string());
            others.push(OtherConv { name, op, reason: SkipReason::Transposed.to_string(), macs });
            continue;
        }
        check_dtypes(&ck, t)?;
        let deferred = backend.rejects_non_finite();
        let layer = load::<T>(&ck, site, t, &mut scratch, deferred)?;
        let errors = factor_loaded(path, &layer, &scheme, deferred)?.errors();
        done_with(&ck, t, layer, &mut scratch);
        infos.push(info(path, site, ck.tensors[t.weight].dtype.clone(), &scheme, &errors)?);
    }
    Ok(Inspection { layers: infos, others, subgraph_nodes: Vec::new(), other_weights: other_weights(&ck) })
}

/// [`inspect`] of an ONNX model: the layers' geometry from their nodes, sizes from shape
/// inference (or a declaration), groups from the graph (declared groups are not needed).
#[cfg(feature = "onnx")]
fn inspect_onnx<T: Real>(path: &Path, options: &InspectOptions) -> Result<Inspection> {
    if !options.selection.groups.is_empty() {
        let reason = "groups were declared (InspectOptions::groups, --groups), but an ONNX node declares its own: \
                      leave them unset";
        return Err(super::onnx::onnx_error(path, "options", reason));
    }
    let bytes =
        std::fs::read(path).map_err(|e| crate::Error::Io { path: path.to_path_buf(), action: "read", source: e })?;
    // Discovery reads the declared sizes and the time model of the options; no rank is chosen.
    let mut convert_options = convert::ConvertOptions::new(crate::Rank::Fixed(1));
    convert_options.selection = options.selection.clone();
    convert_options.input_size = options.input_size;
    let backend = convert::backend::<T>(options.svd);
    let scheme = Dac::new(&*backend);
    let listing = super::onnx::inspect::convolutions(&bytes, &convert_options, path)?;
    let mut layers = Vec::new();
    for found in listing.found {
        let layer = found.layer::<T>().map_err(|e| in_file(path, e))?;
        let errors = scheme.factor(&layer).map_err(|e| in_file(path, e))?.errors();
        let mut layer = info(path, &found.site, found.dtype.to_string(), &scheme, &errors)?;
        // Counted per output position, but a graph has sizes: this one's inference stopped.
        if layer.size == SizeSource::PerPosition {
            layer.size = SizeSource::Unknown;
        }
        layers.push(layer);
    }
    let (others, subgraph_nodes) = (listing.others, listing.subgraph_nodes);
    Ok(Inspection { layers, others, subgraph_nodes, other_weights: Vec::new() })
}

/// The report of one site from its DAC error table.
fn info<T: Real>(
    path: &Path,
    site: &convert::Site,
    dtype: String,
    scheme: &Dac<'_, T>,
    errors: &crate::scheme::ErrorTable,
) -> Result<LayerInfo> {
    let shape = site.shape();
    let max_rank = scheme.max_rank(&shape);
    Ok(LayerInfo {
        name: site.name().to_string(),
        dims: site.found.dims,
        dtype,
        groups: shape.groups,
        has_bias: site.found.has_bias(),
        max_rank,
        break_even: scheme.break_even_rank(&shape),
        retained_energy: (1..=max_rank.min(5)).map(|r| errors.retained_energy(r)).collect(),
        geometry: site.found.geometry,
        input_size: site.input,
        size: site.size,
        cost: site.dense_cost().map_err(|e| in_file(path, e))?.unwrap_or_default(),
    })
}
