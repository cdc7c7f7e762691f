//! Converting checkpoint files: safetensors in, safetensors out (feature `safetensors`, on by
//! default).
//!
//! [`convert_file`] reads a checkpoint written by PyTorch, candle or burn (memory-mapped), finds
//! every convolution — a 4-D tensor `<layer>.weight` in OIHW order, with `<layer>.bias` if
//! present, in F32, F64, F16 or BF16 — and replaces the selected ones by
//!
//! | tensor | shape | layer to load it into |
//! |---|---|---|
//! | `<layer>.depthwise.weight` | `[C·r, 1, kh, kw]` | `Conv2d(C, C·r, (kh, kw), groups=C, bias=False)` with the original stride, padding and dilation |
//! | `<layer>.pointwise.weight` | `[N, C·r/g, 1, 1]` | `Conv2d(C·r, N, 1, groups=g)` |
//! | `<layer>.pointwise.bias` | `[N]` | (only when the layer had a bias) |
//!
//! Every other tensor is copied bit for bit, in the input's order; the converted layer's tensors
//! take the place of its weight. The file's `__metadata__` keeps the input's entries and adds
//! `dac.format` (`"1"`), `dac.version` (the crate version) and, per converted layer,
//! `dac.layer.<layer>` = a JSON object
//! `{"rank":r,"groups":g,"split":"sqrt","in_channels":C,"out_channels":N,"kernel":[kh,kw],"bias":true}`,
//! plus `"fit":"correlated=ρ"` for a pair made with a correlated [`Fit`]
//! ([`ConvertOptions::fit`]; see [`LayerRecord`] and [`read_records`]).
//!
//! Computation is in f32 (or f64, [`Precision::F64`]); converted tensors are written in the
//! weight's dtype unless [`ConvertOptions::output_dtype`] says otherwise. A checkpoint carries
//! no stride, padding or groups: the conversion needs no geometry, `groups` comes from the user
//! (default 1), and MAC counts assume stride 1 and "same" padding on an input of
//! [`ConvertOptions::input_size`] (or count one output position).
//!
//! The output is written to a temporary file in the target directory and renamed into place
//! when everything succeeded; on any error nothing is left behind.
//!
//! ```no_run
//! use dac::{io::{convert_file, ConvertOptions}, Rank};
//! let options = ConvertOptions::new(Rank::Energy(0.9)).exclude("features.0").input_size(224, 224);
//! let summary = convert_file("vgg16.safetensors", "vgg16-dac.safetensors", &options)?;
//! println!("MACs {} -> {}", summary.macs_before(), summary.macs_after());
//! # Ok::<(), dac::Error>(())
//! ```

mod atomic;
mod glob;
#[cfg(feature = "onnx")]
pub mod onnx;
mod safetensors;

pub use self::safetensors::FloatDtype;

use self::safetensors::{format_error, header_block, write_all, write_values, Checkpoint, OutEntry};
use crate::cost::{self, Cost};
use crate::decompose::{Factorization, Options, Spectrum, Split};
use crate::error::{Error, Result};
use crate::fit::Fit;
use crate::plan::{self, PlanLayer, PlanOptions, Target};
use crate::rank::{KeepDenseReason, Rank, RankChoice};
use crate::scalar::Real;
use crate::storage::Storage;
use crate::svd::{GramSvd, NalgebraSvd, SvdBackend};
use crate::weights::{Conv2dWeights, ConvShape, Geometry, Padding};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The value of the `dac.format` metadata key written by this version.
pub const FORMAT_VERSION: &str = "1";

/// The element type decompositions are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Precision {
    /// f32 (default): fast, and accurate enough for weights stored in f32 or narrower.
    #[default]
    F32,
    /// f64: for F64 checkpoints or when the last digits matter.
    F64,
}

/// What [`convert_file`] should do. Build with [`ConvertOptions::new`] and the setters.
///
/// Patterns are globs over layer names (the weight's name without `.weight`): `*` matches any
/// run of characters, dots included, `?` one character; a name without wildcards matches
/// itself. Every pattern must match at least one layer, or the conversion fails.
#[derive(Debug, Clone)]
#[must_use]
pub struct ConvertOptions {
    policy: Rank,
    target: Option<Target>,
    layer_inputs: Vec<(String, (usize, usize))>,
    rank_overrides: Vec<(String, usize)>,
    include: Vec<String>,
    exclude: Vec<String>,
    groups: Vec<(String, usize)>,
    input_size: Option<(usize, usize)>,
    allow_slower: bool,
    precision: Precision,
    output_dtype: Option<FloatDtype>,
    split: Split,
    fit: Fit,
    force: bool,
    svd: SvdMethod,
    memory_budget: Option<usize>,
}

/// The SVD algorithm [`convert_file`] and [`inspect_file`] use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SvdMethod {
    /// [`GramSvd`] (default): each channel's `K x K` Gram matrix in f64 and a Jacobi
    /// eigensolver, the layer streamed once; the fast backend (accuracy: see its docs).
    #[default]
    Gram,
    /// [`NalgebraSvd`]: nalgebra's one-sided SVD of every gathered channel matrix; slower,
    /// the reference.
    Nalgebra,
}

impl SvdMethod {
    /// The name used on the command line (`"gram"`, `"nalgebra"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Gram => "gram",
            Self::Nalgebra => "nalgebra",
        }
    }
}

impl ConvertOptions {
    /// Every convolution with `kh·kw > 1`, its rank chosen by `policy`.
    pub fn new(policy: Rank) -> Self {
        Self {
            policy,
            target: None,
            layer_inputs: Vec::new(),
            rank_overrides: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            groups: Vec::new(),
            input_size: None,
            allow_slower: false,
            precision: Precision::F32,
            output_dtype: None,
            split: Split::default(),
            fit: Fit::frobenius(),
            force: false,
            svd: SvdMethod::default(),
            memory_budget: None,
        }
    }
    /// Every convolution with `kh·kw > 1`, ranks planned together by [`plan`](crate::plan::plan)
    /// for a whole-network `target` (MACs count every convolution and every linear layer, a
    /// 2-D `<name>.weight`). Layers with a [`rank_for`](Self::rank_for) override keep it; the
    /// planner works around them. Every convolution needs an input size:
    /// [`layer_input`](Self::layer_input) or else [`input_size`](Self::input_size).
    pub fn planned(target: Target) -> Self {
        Self { target: Some(target), ..Self::new(Rank::Fixed(1)) }
    }
    /// [`planned`](Self::planned) for a whole-network MAC reduction of `factor`.
    pub fn speedup(factor: f64) -> Self {
        Self::planned(Target::MacReduction(factor))
    }
    /// The input `(height, width)` of the layers matching `pattern` (the last match wins);
    /// layers without one use [`input_size`](Self::input_size). A checkpoint has no graph, so
    /// it cannot tell where pooling or strides shrink the feature maps.
    pub fn layer_input(mut self, pattern: impl Into<String>, height: usize, width: usize) -> Self {
        self.layer_inputs.push((pattern.into(), (height, width)));
        self
    }
    /// The input size used for layer `name`, and whether it is the default
    /// ([`input_size`](Self::input_size)) rather than a [`layer_input`](Self::layer_input).
    fn input_of(&self, name: &str) -> (Option<(usize, usize)>, bool) {
        match self.layer_inputs.iter().rev().find(|(p, _)| glob::matches(p, name)) {
            Some(&(_, hw)) => (Some(hw), false),
            None => (self.input_size, true),
        }
    }
    /// Uses rank `rank` for the layers matching `pattern` (the last matching override wins).
    pub fn rank_for(mut self, pattern: impl Into<String>, rank: usize) -> Self {
        self.rank_overrides.push((pattern.into(), rank));
        self
    }
    /// Converts only layers matching one of the include patterns (default: all).
    pub fn include(mut self, pattern: impl Into<String>) -> Self {
        self.include.push(pattern.into());
        self
    }
    /// Leaves the layers matching `pattern` dense.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.exclude.push(pattern.into());
        self
    }
    /// Declares that the layers matching `pattern` have `groups` groups (default 1; a checkpoint
    /// cannot tell). The last matching declaration wins.
    pub fn groups(mut self, pattern: impl Into<String>, groups: usize) -> Self {
        self.groups.push((pattern.into(), groups));
        self
    }
    /// Input `(height, width)` for MAC counts (stride 1, "same" padding assumed).
    pub fn input_size(mut self, height: usize, width: usize) -> Self {
        self.input_size = Some((height, width));
        self
    }
    /// Converts layers even when their rank saves nothing (default: they stay dense).
    pub fn allow_slower(mut self, allow: bool) -> Self {
        self.allow_slower = allow;
        self
    }
    /// The element type to compute in (default f32).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Writes converted tensors in `dtype` instead of the weight's own dtype.
    pub fn output_dtype(mut self, dtype: FloatDtype) -> Self {
        self.output_dtype = Some(dtype);
        self
    }
    /// Where the singular values go (default [`Split::SquareRoot`]).
    pub fn split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
    /// Which rank-`r` approximation the pairs represent (default [`Fit::frobenius`], the DAC
    /// paper's). With [`Fit::correlated`], energy policies, the planner
    /// ([`planned`](Self::planned), scoring as
    /// [`PlanLayer::from_factorization`]) and the summary's errors all use the weighted
    /// spectra: the relative errors are output errors for correlated inputs. The file's
    /// `dac.layer.<layer>` records then carry `"fit":"correlated=ρ"`.
    pub fn fit(mut self, fit: Fit) -> Self {
        self.fit = fit;
        self
    }
    /// Replaces an existing output file (default: an existing output is an error).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
    /// The SVD algorithm [`convert_file`] uses (default [`SvdMethod::Gram`]);
    /// [`convert_file_with`] takes a backend instead.
    pub fn svd(mut self, method: SvdMethod) -> Self {
        self.svd = method;
        self
    }
    /// Bytes of weights (decoded, or viewed in the map) that may be kept between choosing ranks
    /// and writing, so that layers whose rank depends on their spectrum ([`Rank::Energy`],
    /// [`planned`](Self::planned)) are factored only once. Layers beyond the budget are factored
    /// again when written (same result, more time). Default: half the input's tensor data, at
    /// least 64 MiB; 0 keeps nothing.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = Some(bytes);
        self
    }
}

/// The default [`ConvertOptions::memory_budget`] for `data_len` bytes of tensor data.
fn default_budget(data_len: u64) -> usize {
    usize::try_from(data_len / 2).unwrap_or(usize::MAX).max(64 << 20)
}

/// What a conversion is doing, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Computing spectra to choose ranks (energy policies only).
    Analysing,
    /// Writing tensors.
    Writing,
    /// Done.
    Finished,
}

/// A progress report: called before each layer is analysed and each tensor is written.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Progress<'a> {
    /// The current phase.
    pub phase: Phase,
    /// The tensor or layer being processed.
    pub item: &'a str,
    /// Work done so far (bytes of input data in [`Phase::Writing`], layers in
    /// [`Phase::Analysing`]).
    pub done: u64,
    /// Total work of the phase, same unit.
    pub total: u64,
}

/// Why a convolution was left dense.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SkipReason {
    /// A 1x1 kernel has nothing to separate.
    PointwiseKernel,
    /// Not matched by any include pattern.
    NotIncluded,
    /// Matched by an exclude pattern.
    Excluded,
    /// The depthwise half of a layer `dac` already converted.
    AlreadyConverted,
    /// The whole-network planner kept it dense.
    Planned,
    /// The rank policy kept it dense (at `rank`, if it chose one).
    KeptDense {
        /// The rank the policy arrived at.
        rank: Option<usize>,
        /// Why.
        reason: KeepDenseReason,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PointwiseKernel => f.write_str("1x1 kernel: nothing to separate"),
            Self::NotIncluded => f.write_str("not matched by an include pattern"),
            Self::Excluded => f.write_str("matched by an exclude pattern"),
            Self::AlreadyConverted => f.write_str("already a dac depthwise layer"),
            Self::Planned => f.write_str("the planner kept it dense"),
            Self::KeptDense { rank: Some(r), reason } => write!(f, "rank {r}: {reason}"),
            Self::KeptDense { rank: None, reason } => write!(f, "{reason}"),
        }
    }
}

/// A converted layer in a [`ConversionSummary`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConvertedLayer {
    /// Layer name (the weight's name without `.weight`).
    pub name: String,
    /// The original weight's shape `[N, C/g, kh, kw]`.
    pub dims: [usize; 4],
    /// Groups.
    pub groups: usize,
    /// The rank used.
    pub rank: usize,
    /// The largest possible rank, `min(N/g, kh·kw)`.
    pub max_rank: usize,
    /// Kept `s²` over total `s²`.
    pub retained_energy: f64,
    /// `‖W − Ŵ‖ / ‖W‖` of the rank-`rank` approximation, from the singular values
    /// ([`Report::relative_error`](crate::Report::relative_error); rounding to the output dtype
    /// not included). With a correlated [`Fit`], the relative output error under its input
    /// model.
    pub relative_error: f64,
    /// The dtype the layer's tensors were written in.
    pub dtype: FloatDtype,
    /// Cost of the dense layer.
    pub before: Cost,
    /// Cost of the pair.
    pub after: Cost,
    /// The input size the costs refer to (`None`: one output position).
    pub input_size: Option<(usize, usize)>,
    /// Whether that is the default [`ConvertOptions::input_size`] rather than a
    /// [`ConvertOptions::layer_input`].
    pub default_input: bool,
}

/// A convolution left dense, in a [`ConversionSummary`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SkippedLayer {
    /// Layer name.
    pub name: String,
    /// The weight's shape.
    pub dims: [usize; 4],
    /// Groups.
    pub groups: usize,
    /// Why it stayed dense.
    pub reason: SkipReason,
    /// Its cost (unchanged).
    pub cost: Cost,
    /// The input size the cost refers to (`None`: one output position).
    pub input_size: Option<(usize, usize)>,
    /// Whether that is the default [`ConvertOptions::input_size`].
    pub default_input: bool,
}

/// What [`convert_file`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConversionSummary {
    /// The input file.
    pub input: PathBuf,
    /// The output file.
    pub output: PathBuf,
    /// The input size MACs refer to (`None`: one output position). Stride 1 and "same"
    /// padding are assumed for every layer.
    pub input_size: Option<(usize, usize)>,
    /// Converted layers, in file order.
    pub converted: Vec<ConvertedLayer>,
    /// Convolutions left dense, in file order.
    pub skipped: Vec<SkippedLayer>,
    /// Tensors copied unchanged (including the skipped layers' tensors).
    pub copied_tensors: usize,
    /// Cost of the linear layers (2-D `<name>.weight`), copied unchanged and counted in the
    /// totals.
    pub linear: Cost,
    /// The whole-network plan, when [`ConvertOptions::planned`] was used.
    pub plan: Option<plan::Plan>,
    /// The SVD backend's [name](SvdBackend::name) (`"gram-jacobi"`, `"nalgebra"`).
    pub svd: &'static str,
    /// The fit used ([`ConvertOptions::fit`]).
    pub fit: Fit,
}

impl ConversionSummary {
    /// MACs of every convolution and linear layer in the input.
    pub fn macs_before(&self) -> u64 {
        self.converted.iter().map(|l| l.before.macs).chain(self.skipped.iter().map(|l| l.cost.macs)).sum::<u64>()
            + self.linear.macs
    }
    /// MACs of every convolution and linear layer in the output.
    pub fn macs_after(&self) -> u64 {
        self.converted.iter().map(|l| l.after.macs).chain(self.skipped.iter().map(|l| l.cost.macs)).sum::<u64>()
            + self.linear.macs
    }
    /// `macs_before / macs_after` over all layers (1 when nothing was converted).
    pub fn reduction(&self) -> f64 {
        let after = self.macs_after();
        if after == 0 {
            1.0
        } else {
            self.macs_before() as f64 / after as f64
        }
    }
}

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
    /// The [`Fit`] the pair was computed for, as [displayed](Fit#impl-Display-for-Fit):
    /// `"frobenius"` (the default, then not written to the file) or `"correlated=ρ"`.
    pub fit: String,
}

impl LayerRecord {
    fn to_json(&self) -> String {
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
/// [`Error::Io`] / [`Error::Format`] when the file cannot be read or a `dac.layer.*` entry is
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

/// A convolution found in a checkpoint.
#[derive(Debug, Clone)]
struct ConvLayer {
    name: String,
    weight: usize,
    bias: Option<usize>,
    dims: [usize; 4],
    groups: usize,
}

impl ConvLayer {
    fn shape(&self) -> ConvShape {
        ConvShape {
            out_channels: self.dims[0],
            in_channels: self.dims[1] * self.groups,
            kh: self.dims[2],
            kw: self.dims[3],
            groups: self.groups,
        }
    }
}

/// Abbreviated list of layer names for messages.
fn available(layers: &[ConvLayer]) -> String {
    let mut names: Vec<&str> = layers.iter().take(8).map(|l| l.name.as_str()).collect();
    if layers.len() > 8 {
        names.push("...");
    }
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Io { .. } | Error::Format { .. } | Error::InFile { .. } | Error::NoMatch { .. } => e,
        other => Error::InFile { file: path.to_path_buf(), source: Box::new(other) },
    }
}

/// Finds every 4-D `<layer>.weight`, applies the groups declarations and validates the shape,
/// groups and bias of each.
fn find_convs(ck: &Checkpoint, groups: &[(String, usize)]) -> Result<Vec<ConvLayer>> {
    let path = &ck.path;
    let mut layers = Vec::new();
    for (i, t) in ck.tensors.iter().enumerate() {
        let Some(name) = t.name.strip_suffix(".weight") else { continue };
        if name.is_empty() || t.shape.len() != 4 {
            continue;
        }
        let dims = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
        let bias_name = format!("{name}.bias");
        let bias = ck.tensors.iter().position(|b| b.name == bias_name);
        layers.push(ConvLayer { name: name.to_string(), weight: i, bias, dims, groups: 1 });
    }
    for (pattern, g) in groups {
        let mut hit = false;
        for l in layers.iter_mut().filter(|l| glob::matches(pattern, &l.name)) {
            l.groups = *g;
            hit = true;
        }
        if !hit {
            return Err(Error::NoMatch {
                file: path.clone(),
                option: "--groups",
                pattern: pattern.clone(),
                available: available(&layers),
            });
        }
    }
    for l in &layers {
        let w = &ck.tensors[l.weight];
        if l.dims.contains(&0) {
            return Err(format_error(path, Some(&w.name), format!("shape {:?} has a zero dimension", l.dims)));
        }
        if l.groups == 0 || l.dims[0] % l.groups != 0 {
            return Err(in_file(
                path,
                Error::InvalidGroups {
                    layer: l.name.clone(),
                    groups: l.groups,
                    in_channels: l.dims[1].saturating_mul(l.groups),
                    out_channels: l.dims[0],
                },
            ));
        }
        if let Some(b) = l.bias {
            let b = &ck.tensors[b];
            if b.shape.len() != 1 || b.shape[0] != l.dims[0] {
                return Err(format_error(
                    path,
                    Some(&b.name),
                    format!(
                        "shape {:?} does not match `{}` of shape {:?}: a bias needs [{}]",
                        b.shape, w.name, l.dims, l.dims[0]
                    ),
                ));
            }
        }
    }
    Ok(layers)
}

/// MACs are counted at this output size: stride 1 and "same" padding keep the input size.
fn output_size(input: Option<(usize, usize)>) -> (usize, usize) {
    input.unwrap_or((1, 1))
}

/// "Same" padding for a `kh x kw` kernel (the extra row/column of even kernels at the end).
fn same_padding(kh: usize, kw: usize) -> Padding {
    Padding { top: (kh - 1) / 2, bottom: kh / 2, left: (kw - 1) / 2, right: kw / 2 }
}

/// Reads a layer as a validated [`Conv2dWeights`], to be factored by [`factor_loaded`] with a
/// backend whose [`rejects_non_finite`](SvdBackend::rejects_non_finite) is `defer`.
///
/// An f32 (f64) weight read as f32 (f64) is viewed in place in the mapped file, without a copy;
/// release its pages with [`Checkpoint::release`] once the layer is done. Any other weight is
/// decoded into `buffer`'s allocation (taken; get it back with
/// [`Conv2dWeights::into_weight_buffer`]) and its pages are released at once, so that the
/// decoded copy is the only one counted in the resident set.
///
/// With `defer`, the weight is not scanned for NaN and infinities here: the factorisation finds
/// them (one pass over the weight instead of two) and [`factor_loaded`] reports them.
fn load_layer<T: Real>(ck: &Checkpoint, l: &ConvLayer, buffer: &mut Vec<T>, defer: bool) -> Result<Conv2dWeights<T>> {
    let weight = &ck.tensors[l.weight];
    ck.populate(weight);
    let storage = match ck.view::<T>(weight) {
        Some(view) => view,
        None => {
            let mut w = std::mem::take(buffer);
            ck.read_real_into(weight, &mut w)?;
            ck.release(weight);
            Storage::Owned(w)
        }
    };
    let b = match l.bias {
        Some(b) => Some(ck.read_real::<T>(&ck.tensors[b])?),
        None => None,
    };
    let builder = Conv2dWeights::builder_from(storage, l.dims)
        .name(l.name.clone())
        .maybe_bias(b)
        .groups(l.groups)
        .padding(same_padding(l.dims[2], l.dims[3]));
    let builder = if defer { builder.defer_weight_finiteness() } else { builder };
    builder.build().map_err(|e| in_file(&ck.path, e))
}

/// Factors a layer read by [`load_layer`] (with `defer = backend.rejects_non_finite()`). When
/// the factorisation fails on a weight whose scan was deferred, the weight is scanned then, so
/// that a NaN or an infinity is reported as [`Error::NonFinite`] naming the element, exactly as
/// an eager scan would have; a success proves the weight finite.
fn factor_loaded<'a, T: Real, B: SvdBackend<T> + ?Sized>(
    path: &Path,
    layer: &'a Conv2dWeights<T>,
    backend: &B,
    fit: Fit,
) -> Result<Factorization<'a, T>> {
    Factorization::compute_fitted(layer, backend, fit).map_err(|e| {
        let scanned = if backend.rejects_non_finite() {
            crate::weights::check_finite(layer.name(), "weight", layer.weight())
        } else {
            Ok(())
        };
        in_file(path, scanned.err().unwrap_or(e))
    })
}

/// Gives a finished layer's decoding buffer back to `buffer` (if it has one) and releases the
/// layer's pages of the input.
fn done_with<T: Real>(ck: &Checkpoint, l: &ConvLayer, layer: Conv2dWeights<T>, buffer: &mut Vec<T>) {
    if let Some(w) = layer.into_weight_buffer() {
        *buffer = w;
    }
    ck.release(&ck.tensors[l.weight]);
}

/// Checks that a layer to be converted has float tensors.
fn check_dtypes(ck: &Checkpoint, l: &ConvLayer) -> Result<()> {
    for t in std::iter::once(l.weight).chain(l.bias).map(|i| &ck.tensors[i]) {
        if t.float_dtype().is_none() {
            return Err(format_error(
                &ck.path,
                Some(&t.name),
                format!(
                    "dtype {} is not supported for conversion (supported: F32, F64, F16, BF16); \
                     exclude the layer to keep it",
                    t.dtype
                ),
            ));
        }
    }
    Ok(())
}

/// Converts the checkpoint `input` into `output` with the SVD backend of
/// [`ConvertOptions::svd`] ([`GramSvd`] by default) and no progress reports. See the
/// [module docs](self) for the output's layout.
///
/// The input is memory-mapped; tensors that are not converted are copied file to file
/// (`copy_file_range` on Linux, as `cp` does), and converted layers are read, factored and
/// written one at a time, so memory stays well below the input's size. A weight stored in the
/// precision computed in (f32 for [`Precision::F32`]) is read in place from the map when its
/// bytes are aligned; any other is decoded into a buffer reused from layer to layer.
///
/// # Errors
/// Any malformed input ([`Error::Format`] naming the file and tensor), a pattern matching no
/// layer ([`Error::NoMatch`]), a rank above a layer's maximum or impossible groups
/// ([`Error::InFile`] around the core error), an output that is the input
/// ([`Error::OutputIsInput`]) or exists without `force` ([`Error::OutputExists`]), and I/O
/// failures ([`Error::Io`]). On error no output file is created or changed.
pub fn convert_file(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    options: &ConvertOptions,
) -> Result<ConversionSummary> {
    match options.svd {
        SvdMethod::Gram => convert_file_with(input, output, options, &GramSvd::default(), &mut |_| {}),
        SvdMethod::Nalgebra => convert_file_with(input, output, options, &NalgebraSvd::default(), &mut |_| {}),
    }
}

/// [`convert_file`] with an SVD backend of your choice (overriding [`ConvertOptions::svd`]) and
/// a progress callback.
///
/// # Errors
/// As [`convert_file`].
pub fn convert_file_with<B>(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    options: &ConvertOptions,
    backend: &B,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<ConversionSummary>
where
    B: SvdBackend<f32> + SvdBackend<f64> + ?Sized,
{
    let (input, output) = (input.as_ref(), output.as_ref());
    match options.precision {
        Precision::F32 => convert_impl::<f32, B>(input, output, options, backend, progress),
        Precision::F64 => convert_impl::<f64, B>(input, output, options, backend, progress),
    }
}

/// A layer's fate, decided before anything is written.
enum Plan {
    Convert { rank: usize },
    Skip(SkipReason),
}

fn convert_impl<T: Real, B: SvdBackend<T> + ?Sized>(
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
    backend: &B,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<ConversionSummary> {
    atomic::check_output(input, output, options.force)?;
    options.policy.validate("rank policy").map_err(|e| in_file(input, e))?;
    let ck = Checkpoint::open(input)?;
    let path = &ck.path;
    let layers = find_convs(&ck, &options.groups)?;
    // Every layer read is factored at once: with a backend that rejects non-finite weights,
    // that finds them and the separate scan is skipped (`factor_loaded` still names them).
    let defer = backend.rejects_non_finite();

    // Which layers are candidates, and every pattern must match one.
    let converted_before: Vec<&str> = ck.metadata.keys().filter_map(|k| k.strip_prefix("dac.layer.")).collect();
    let no_match = |option, pattern: &String| Error::NoMatch {
        file: path.clone(),
        option,
        pattern: pattern.clone(),
        available: available(&layers),
    };
    for p in &options.include {
        if !layers.iter().any(|l| glob::matches(p, &l.name)) {
            return Err(no_match("--layers", p));
        }
    }
    for p in &options.exclude {
        if !layers.iter().any(|l| glob::matches(p, &l.name)) {
            return Err(no_match("--skip", p));
        }
    }
    for (p, _) in &options.rank_overrides {
        if !layers.iter().any(|l| glob::matches(p, &l.name)) {
            return Err(no_match("--rank-for", p));
        }
    }
    for (p, _) in &options.layer_inputs {
        if !layers.iter().any(|l| glob::matches(p, &l.name)) {
            return Err(no_match("--layer-input", p));
        }
    }
    if options.target.is_some() {
        if let Some(l) = layers.iter().find(|l| options.input_of(&l.name).0.is_none()) {
            return Err(in_file(
                path,
                Error::InvalidParameter {
                    context: format!("layer `{}`", l.name),
                    what: "input size",
                    value: f64::NAN,
                    expected: "a size from --input HxW or --layer-input NAME=HxW: a whole-network target needs every convolution's input size",
                },
            ));
        }
    }
    let mut plans: Vec<Plan> = Vec::with_capacity(layers.len());
    for l in &layers {
        let reason = if l.dims[2] * l.dims[3] == 1 {
            Some(SkipReason::PointwiseKernel)
        } else if converted_before.iter().any(|c| l.name.strip_suffix(".depthwise") == Some(*c)) {
            Some(SkipReason::AlreadyConverted)
        } else if !options.include.is_empty() && !options.include.iter().any(|p| glob::matches(p, &l.name)) {
            Some(SkipReason::NotIncluded)
        } else if options.exclude.iter().any(|p| glob::matches(p, &l.name)) {
            Some(SkipReason::Excluded)
        } else {
            None
        };
        plans.push(match reason {
            Some(r) => Plan::Skip(r),
            None => {
                check_dtypes(&ck, l)?;
                Plan::Convert { rank: 0 }
            }
        });
    }

    // Choose ranks: overrides and shape-only policies now; energy policies need spectra.
    let overridden = |l: &ConvLayer| options.rank_overrides.iter().any(|(p, _)| glob::matches(p, &l.name));
    let planned: Vec<bool> = layers
        .iter()
        .zip(&plans)
        .map(|(l, p)| options.target.is_some() && matches!(p, Plan::Convert { .. }) && !overridden(l))
        .collect();
    let policy_of = |l: &ConvLayer| {
        options
            .rank_overrides
            .iter()
            .rev()
            .find(|(p, _)| glob::matches(p, &l.name))
            .map_or(options.policy, |&(_, r)| Rank::Fixed(r))
    };
    let needs_spectrum: Vec<bool> = layers
        .iter()
        .zip(&plans)
        .zip(&planned)
        .map(|((l, p), &planned)| {
            planned || (matches!(p, Plan::Convert { .. }) && matches!(policy_of(l), Rank::Energy(_)))
        })
        .collect();
    // Shape-only choices first, so that a bad rank fails before any SVD runs.
    for (i, l) in layers.iter().enumerate() {
        if matches!(plans[i], Plan::Convert { .. }) && !needs_spectrum[i] {
            let shape = l.shape();
            let zeros = Spectrum::new(&l.name, shape, vec![0.0; shape.in_channels * shape.max_rank()])
                .map_err(|e| in_file(path, e))?;
            plans[i] = decide(policy_of(l), l, &zeros, options.allow_slower).map_err(|e| in_file(path, e))?;
        }
    }
    // Layers whose rank needs a spectrum are factored here, once: their decoded weights and
    // factorisations are kept until written, as far as the memory budget allows (the rest are
    // factored again when written).
    let budget = options.memory_budget.unwrap_or_else(|| default_budget(ck.data_len()));
    let mut kept_bytes = 0usize;
    let mut owned: Vec<Option<Conv2dWeights<T>>> = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let bytes = l.dims.iter().product::<usize>().saturating_mul(std::mem::size_of::<T>());
        let keep = needs_spectrum[i] && kept_bytes.saturating_add(bytes) <= budget;
        owned.push(if keep {
            kept_bytes += bytes;
            Some(load_layer::<T>(&ck, l, &mut Vec::new(), defer)?)
        } else {
            None
        });
    }
    let owned = owned;
    let mut factored: Vec<Option<Factorization<'_, T>>> = (0..layers.len()).map(|_| None).collect();
    // One decoding buffer for every layer that is not kept, sized once for the largest.
    let largest = layers
        .iter()
        .zip(&plans)
        .filter(|(_, p)| matches!(p, Plan::Convert { .. }))
        .map(|(l, _)| l.dims.iter().product::<usize>())
        .max()
        .unwrap_or(0);
    let mut scratch: Vec<T> = Vec::with_capacity(largest);
    let mut pair = crate::decompose::PairBuffers::<T>::new();
    let analyse_total = needs_spectrum.iter().filter(|&&n| n).count() as u64;
    let mut analysed = 0;
    // A planned layer's spectrum and, while its weights are at hand, what `Proxy::Spatial` reads
    // from them (`plan::tap_energy_of_factorization`).
    let mut spectra: Vec<Option<(Spectrum, Vec<f64>)>> = vec![None; layers.len()];
    for (i, l) in layers.iter().enumerate() {
        if needs_spectrum[i] {
            progress(&Progress { phase: Phase::Analysing, item: &l.name, done: analysed, total: analyse_total });
            // `PlanLayer::from_factorization`'s energies: the weights' for the Frobenius fit,
            // the weighted spectrum's for a correlated one.
            let taps_of = |f: &Factorization<'_, T>| {
                if planned[i] {
                    plan::tap_energy_of_factorization(f)
                } else {
                    Vec::new()
                }
            };
            let (spectrum, taps) = match &owned[i] {
                Some(layer) => {
                    let f = factor_loaded(path, layer, backend, options.fit)?;
                    let (spectrum, taps) = (f.spectrum(), taps_of(&f));
                    factored[i] = Some(f);
                    (spectrum, taps)
                }
                None => {
                    let layer = load_layer::<T>(&ck, l, &mut scratch, defer)?;
                    let f = factor_loaded(path, &layer, backend, options.fit)?;
                    let (spectrum, taps) = (f.spectrum(), taps_of(&f));
                    drop(f);
                    done_with(&ck, l, layer, &mut scratch);
                    (spectrum, taps)
                }
            };
            if planned[i] {
                spectra[i] = Some((spectrum, taps));
            } else {
                plans[i] = decide(policy_of(l), l, &spectrum, options.allow_slower).map_err(|e| in_file(path, e))?;
            }
            analysed += 1;
        }
    }
    let linear = linear_cost(&ck);
    let whole_plan = match &options.target {
        Some(target) => Some(plan_layers(&ck, options, target, &layers, &mut plans, &planned, &spectra, linear)?),
        None => None,
    };

    // The output header, in the input's order.
    let by_weight: BTreeMap<usize, usize> = layers.iter().enumerate().map(|(i, l)| (l.weight, i)).collect();
    let moved_bias: Vec<usize> = layers
        .iter()
        .zip(&plans)
        .filter(|(_, p)| matches!(p, Plan::Convert { .. }))
        .filter_map(|(l, _)| l.bias)
        .collect();
    let out_dtype_of =
        |l: &ConvLayer| options.output_dtype.or_else(|| ck.tensors[l.weight].float_dtype()).unwrap_or(FloatDtype::F32);
    let mut entries: Vec<OutEntry> = Vec::with_capacity(ck.tensors.len() + 2 * layers.len());
    let mut metadata = ck.metadata.clone();
    for (ti, t) in ck.tensors.iter().enumerate() {
        if moved_bias.contains(&ti) {
            continue;
        }
        match by_weight.get(&ti).map(|&li| (&layers[li], &plans[li])) {
            Some((l, Plan::Convert { rank })) => {
                let dt = out_dtype_of(l);
                let shape = l.shape();
                let (n, c, kh, kw, r) = (shape.out_channels, shape.in_channels, shape.kh, shape.kw, *rank);
                let cr = c * r;
                let mut push = |suffix: &str, dims: Vec<usize>| {
                    let nbytes = dims.iter().product::<usize>() * dt.size();
                    entries.push(OutEntry {
                        name: format!("{}.{suffix}", l.name),
                        dtype: dt.name().to_string(),
                        shape: dims,
                        nbytes,
                    });
                };
                push("depthwise.weight", vec![cr, 1, kh, kw]);
                push("pointwise.weight", vec![n, cr / shape.groups, 1, 1]);
                if l.bias.is_some() {
                    push("pointwise.bias", vec![n]);
                }
                let record = LayerRecord {
                    name: l.name.clone(),
                    rank: r,
                    groups: shape.groups,
                    split: split_name(options.split).to_string(),
                    in_channels: c,
                    out_channels: n,
                    kernel: [kh, kw],
                    bias: l.bias.is_some(),
                    fit: options.fit.to_string(),
                };
                metadata.insert(format!("dac.layer.{}", l.name), record.to_json());
            }
            _ => entries.push(OutEntry {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                nbytes: t.end - t.begin,
            }),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        if !seen.insert(e.name.as_str()) {
            return Err(format_error(
                path,
                Some(&e.name),
                "the converted layer's new tensor name already exists in the input",
            ));
        }
    }
    metadata.insert("dac.format".to_string(), FORMAT_VERSION.to_string());
    metadata.insert("dac.version".to_string(), env!("CARGO_PKG_VERSION").to_string());

    // Stream the tensors into the temporary file.
    let mut out = atomic::AtomicFile::create(output, options.force)?;
    write_all(out.writer(), &header_block(&metadata, &entries), output)?;
    let total = ck.data_len();
    let mut summary = ConversionSummary {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        input_size: options.input_size,
        converted: Vec::new(),
        skipped: Vec::new(),
        copied_tensors: 0,
        linear,
        plan: whole_plan,
        svd: backend.name(),
        fit: options.fit,
    };
    let mut buf = Vec::new();
    // Tensors copied unchanged are gathered into runs of consecutive data and copied file to
    // file, one run at a time.
    let mut run: Option<(usize, usize)> = None;
    let flush_run = |run: &mut Option<(usize, usize)>, out: &mut atomic::AtomicFile| -> Result<()> {
        if let Some((begin, end)) = run.take() {
            ck.copy_data(begin, end, out.file()?, output)?;
        }
        Ok(())
    };
    for (ti, t) in ck.tensors.iter().enumerate() {
        progress(&Progress { phase: Phase::Writing, item: &t.name, done: t.begin as u64, total });
        if moved_bias.contains(&ti) {
            continue;
        }
        match by_weight.get(&ti).map(|&li| (li, &layers[li], &plans[li])) {
            Some((li, l, Plan::Convert { rank })) => {
                flush_run(&mut run, &mut out)?;
                let dt = out_dtype_of(l);
                let mut opts = Options::new(*rank).split(options.split);
                let (input_size, default_input) = options.input_of(&l.name);
                if let Some((h, w)) = input_size {
                    opts = opts.input_size(h, w);
                }
                // The pair goes into `pair` (reused across layers: no fresh pages per layer);
                // the pointwise bias is the original layer's, unchanged.
                let (report, bias) = match factored[li].take() {
                    Some(f) => (
                        f.truncate_into(&opts, &mut pair).map_err(|e| in_file(path, e))?,
                        f.layer().bias().map(<[T]>::to_vec),
                    ),
                    None => {
                        let layer = load_layer::<T>(&ck, l, &mut scratch, defer)?;
                        let report = factor_loaded(path, &layer, backend, options.fit)?
                            .truncate_into(&opts, &mut pair)
                            .map_err(|e| in_file(path, e))?;
                        let bias = layer.bias().map(<[T]>::to_vec);
                        if let Some(w) = layer.into_weight_buffer() {
                            scratch = w;
                        }
                        (report, bias)
                    }
                };
                // Kept or not, viewed in place or decoded: done with this layer's input pages.
                ck.release(&ck.tensors[l.weight]);
                let parts: [(&str, Option<&[T]>); 3] = [
                    ("depthwise.weight", Some(pair.depthwise())),
                    ("pointwise.weight", Some(pair.pointwise())),
                    ("pointwise.bias", bias.as_deref()),
                ];
                for (suffix, values) in parts {
                    let Some(values) = values else { continue };
                    write_values(values, dt, &mut buf, out.writer()).map_err(|e| match e {
                        Ok(i) => format_error(
                            path,
                            Some(&format!("{}.{suffix}", l.name)),
                            format!("value {} at index {i} overflows {dt}", values[i]),
                        ),
                        Err(e) => Error::Io { path: output.to_path_buf(), action: "write", source: e },
                    })?;
                }
                let rep = &report;
                summary.converted.push(ConvertedLayer {
                    name: l.name.clone(),
                    dims: l.dims,
                    groups: l.groups,
                    rank: rep.rank,
                    max_rank: rep.max_rank,
                    retained_energy: rep.retained_energy,
                    relative_error: rep.relative_error,
                    dtype: dt,
                    before: rep.before,
                    after: rep.after,
                    input_size,
                    default_input,
                });
            }
            other => {
                run = match run {
                    Some((begin, end)) if end == t.begin => Some((begin, t.end)),
                    _ => {
                        flush_run(&mut run, &mut out)?;
                        Some((t.begin, t.end))
                    }
                };
                summary.copied_tensors += 1;
                if let Some((_, l, Plan::Skip(reason))) = other {
                    let (input_size, default_input) = options.input_of(&l.name);
                    let cost = cost::dense(&l.name, &l.shape(), l.bias.is_some(), output_size(input_size))
                        .map_err(|e| in_file(path, e))?;
                    summary.skipped.push(SkippedLayer {
                        name: l.name.clone(),
                        dims: l.dims,
                        groups: l.groups,
                        reason: reason.clone(),
                        cost,
                        input_size,
                        default_input,
                    });
                }
            }
        }
    }
    flush_run(&mut run, &mut out)?;
    // A skipped layer's bias is counted among the copied tensors above.
    out.commit(ck.permissions.clone())?;
    progress(&Progress { phase: Phase::Finished, item: "", done: total, total });
    Ok(summary)
}

/// Cost of every linear layer: a 2-D float `<name>.weight` `[out, in]` (with `<name>.bias`).
fn linear_cost(ck: &Checkpoint) -> Cost {
    ck.tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && t.float_dtype().is_some())
        .filter_map(|t| t.name.strip_suffix(".weight").map(|name| (name, t)))
        .map(|(name, t)| {
            let bias = format!("{name}.bias");
            cost::linear(t.shape[0], t.shape[1], ck.tensors.iter().any(|b| b.name == bias))
        })
        .sum()
}

/// Plans the layers marked `planned` for `target`, around the others (whose choices are
/// already in `plans`), and writes the planner's choices into `plans`.
#[allow(clippy::too_many_arguments)]
fn plan_layers(
    ck: &Checkpoint,
    options: &ConvertOptions,
    target: &Target,
    layers: &[ConvLayer],
    plans: &mut [Plan],
    planned: &[bool],
    spectra: &[Option<(Spectrum, Vec<f64>)>],
    linear: Cost,
) -> Result<plan::Plan> {
    let path = &ck.path;
    let mut fixed = linear;
    let mut plan_input = Vec::new();
    let mut indices = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let input = options.input_of(&l.name).0;
        let out = output_size(input);
        let shape = l.shape();
        match (&spectra[i], planned[i]) {
            (Some((spectrum, taps)), true) => {
                let geometry =
                    Geometry { padding: same_padding(l.dims[2], l.dims[3]), groups: l.groups, ..Geometry::default() };
                let layer = PlanLayer::new(l.name.clone(), spectrum, geometry, l.bias.is_some(), out)
                    .map_err(|e| in_file(path, e))?
                    .with_tap_energy(taps.clone());
                plan_input.push(layer);
                indices.push(i);
            }
            _ => {
                let c = match plans[i] {
                    Plan::Convert { rank } => cost::pair(&l.name, &shape, l.bias.is_some(), rank, out),
                    Plan::Skip(_) => cost::dense(&l.name, &shape, l.bias.is_some(), out),
                };
                fixed = fixed + c.map_err(|e| in_file(path, e))?;
            }
        }
    }
    let result = plan::plan(&plan_input, target, &PlanOptions::default().fixed(fixed)).map_err(|e| in_file(path, e))?;
    for (&i, choice) in indices.iter().zip(&result.layers) {
        plans[i] = match choice.rank {
            Some(rank) => Plan::Convert { rank },
            None => Plan::Skip(SkipReason::Planned),
        };
    }
    Ok(result)
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::SquareRoot => "sqrt",
        Split::Pointwise => "pointwise",
        Split::Depthwise => "depthwise",
    }
}

fn decide(policy: Rank, l: &ConvLayer, spectrum: &Spectrum, allow_slower: bool) -> Result<Plan> {
    Ok(match policy.choose(&l.name, spectrum, allow_slower)? {
        RankChoice::Decompose { rank } => Plan::Convert { rank },
        RankChoice::KeepDense { rank, reason } => Plan::Skip(SkipReason::KeptDense { rank, reason }),
    })
}

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
    /// MACs and parameters of the dense layer at the inspection's input size.
    pub cost: Cost,
}

/// What [`inspect_file`] should assume.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct InspectOptions {
    groups: Vec<(String, usize)>,
    input_size: Option<(usize, usize)>,
    precision: Precision,
    svd: SvdMethod,
}

impl InspectOptions {
    /// Defaults: groups 1, MACs per output position, f32.
    pub fn new() -> Self {
        Self::default()
    }
    /// Declares `groups` for the layers matching `pattern`.
    pub fn groups(mut self, pattern: impl Into<String>, groups: usize) -> Self {
        self.groups.push((pattern.into(), groups));
        self
    }
    /// Input `(height, width)` for MAC counts (stride 1, "same" padding assumed).
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
/// summary and cost, in file order.
///
/// # Errors
/// As [`convert_file`] for reading; [`Error::Format`] for a convolution whose dtype is not a
/// float type.
pub fn inspect_file(path: impl AsRef<Path>, options: &InspectOptions) -> Result<Vec<LayerInfo>> {
    let path = path.as_ref();
    match (options.precision, options.svd) {
        (Precision::F32, SvdMethod::Gram) => inspect_impl::<f32, _>(path, options, &GramSvd::default()),
        (Precision::F64, SvdMethod::Gram) => inspect_impl::<f64, _>(path, options, &GramSvd::default()),
        (Precision::F32, SvdMethod::Nalgebra) => inspect_impl::<f32, _>(path, options, &NalgebraSvd::default()),
        (Precision::F64, SvdMethod::Nalgebra) => inspect_impl::<f64, _>(path, options, &NalgebraSvd::default()),
    }
}

fn inspect_impl<T: Real, B: SvdBackend<T>>(
    path: &Path,
    options: &InspectOptions,
    backend: &B,
) -> Result<Vec<LayerInfo>> {
    let ck = Checkpoint::open(path)?;
    let layers = find_convs(&ck, &options.groups)?;
    let out_hw = output_size(options.input_size);
    let mut infos = Vec::with_capacity(layers.len());
    let mut scratch = Vec::new();
    for l in &layers {
        check_dtypes(&ck, l)?;
        let layer = load_layer::<T>(&ck, l, &mut scratch, backend.rejects_non_finite())?;
        let shape = layer.shape();
        let spectrum = factor_loaded(path, &layer, backend, Fit::frobenius())?.spectrum();
        done_with(&ck, l, layer, &mut scratch);
        let max_rank = shape.max_rank();
        infos.push(LayerInfo {
            name: l.name.clone(),
            dims: l.dims,
            dtype: ck.tensors[l.weight].dtype.clone(),
            groups: l.groups,
            has_bias: l.bias.is_some(),
            max_rank,
            break_even: cost::break_even_rank(&shape),
            retained_energy: (1..=max_rank.min(5)).map(|r| spectrum.retained_energy(r)).collect(),
            cost: cost::dense(&l.name, &shape, l.bias.is_some(), out_hw).map_err(|e| in_file(path, e))?,
        });
    }
    Ok(infos)
}
