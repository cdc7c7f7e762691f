//! What a conversion should do: one options type for every file format.

use super::glob;
use crate::decompose::Split;
use crate::fit::Fit;
use crate::moments::InputMoments;
use crate::plan::Target;
use crate::rank::Rank;
use crate::scheme::SchemeKind;
pub use crate::time::Layout;
use crate::time::TimeModel;
use crate::weights::Padding;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which layers to convert, and what to assume about each, by glob patterns over layer names.
///
/// Patterns are globs: `*` matches any run of characters, dots included, `?` one character; a
/// name without wildcards matches itself. For an ONNX `Conv` a pattern may match the node's
/// name, its weight initializer's name or that name without a trailing `.weight`; for a
/// checkpoint, the layer name (the weight's name without `.weight`). Every pattern must match at
/// least one convolution of the file, or the conversion fails with
/// [`Error::NoMatch`](crate::Error::NoMatch) naming the option. Where several per-layer
/// declarations match a layer, the last one wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
    pub(crate) ranks: Vec<(String, usize)>,
    pub(crate) groups: Vec<(String, usize)>,
    pub(crate) inputs: Vec<(String, (usize, usize))>,
    pub(crate) strides: Vec<(String, (usize, usize))>,
    pub(crate) paddings: Vec<(String, Padding)>,
    pub(crate) dilations: Vec<(String, (usize, usize))>,
    /// Applications per image of the linear layers matching the pattern.
    pub(crate) positions: Vec<(String, usize)>,
    /// Patterns of the layers whose weights are transposed convolutions'.
    pub(crate) transposed: Vec<String>,
    /// `None`: the default (see [`ConvertOptions::scheme`]).
    pub(crate) scheme: Option<SchemeChoice>,
    pub(crate) schemes: Vec<(String, SchemeChoice)>,
}

impl Selection {
    /// The last declaration in `list` whose pattern matches one of `keys`.
    pub(crate) fn last_match<'v, V>(list: &'v [(String, V)], keys: &[String]) -> Option<&'v V> {
        list.iter().rev().find(|(p, _)| matches_any(p, keys)).map(|(_, v)| v)
    }
    /// Every declaration of `layer`, under its exact name.
    pub(crate) fn declare(&mut self, layer: &LayerGeometry) {
        let name = || layer.name.clone();
        if let Some(g) = layer.groups {
            self.groups.push((name(), g));
        }
        if let Some(s) = layer.stride {
            self.strides.push((name(), s));
        }
        if let Some(p) = layer.padding {
            self.paddings.push((name(), p));
        }
        if let Some(d) = layer.dilation {
            self.dilations.push((name(), d));
        }
        if let Some(hw) = layer.input {
            self.inputs.push((name(), hw));
        }
        if let Some(n) = layer.positions {
            self.positions.push((name(), n));
        }
        if layer.transposed {
            self.transposed.push(name());
        }
    }
    /// Whether `keys` are selected by the include patterns (all are when there are none).
    pub(crate) fn included(&self, keys: &[String]) -> bool {
        self.include.is_empty() || self.include.iter().any(|p| matches_any(p, keys))
    }
    /// Whether an exclude pattern matches `keys`.
    pub(crate) fn excluded(&self, keys: &[String]) -> bool {
        self.exclude.iter().any(|p| matches_any(p, keys))
    }
    /// Every pattern with the name of the option it came from.
    pub(crate) fn patterns(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.include
            .iter()
            .map(|p| ("include", p.as_str()))
            .chain(self.exclude.iter().map(|p| ("exclude", p.as_str())))
            .chain(self.ranks.iter().map(|(p, _)| ("rank_for", p.as_str())))
            .chain(self.groups.iter().map(|(p, _)| ("groups", p.as_str())))
            .chain(self.inputs.iter().map(|(p, _)| ("layer_input", p.as_str())))
            .chain(self.strides.iter().map(|(p, _)| ("stride", p.as_str())))
            .chain(self.paddings.iter().map(|(p, _)| ("padding", p.as_str())))
            .chain(self.dilations.iter().map(|(p, _)| ("dilation", p.as_str())))
            .chain(self.schemes.iter().map(|(p, _)| ("scheme_for", p.as_str())))
            .chain(self.transposed.iter().map(|p| ("transposed", p.as_str())))
    }
}

/// Whether `pattern` matches one of the non-empty `keys`.
pub(crate) fn matches_any(pattern: &str, keys: &[String]) -> bool {
    keys.iter().any(|k| !k.is_empty() && glob::matches(pattern, k))
}

/// What a geometry sidecar (`dac convert --geometry FILE`, [`crate::io::read_geometry`]) says
/// about one layer; `None` leaves the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerGeometry {
    /// The layer's name (exact, not a pattern).
    pub name: String,
    /// Groups.
    pub groups: Option<usize>,
    /// Stride `(height, width)`.
    pub stride: Option<(usize, usize)>,
    /// Zero padding per side.
    pub padding: Option<Padding>,
    /// Dilation `(height, width)`.
    pub dilation: Option<(usize, usize)>,
    /// Input `(height, width)`.
    pub input: Option<(usize, usize)>,
    /// A linear layer's (2-D weight's) applications per image: the positions of a
    /// channels-last MLP (ConvNeXt's blocks) or the tokens it runs on. Default 1.
    pub positions: Option<usize>,
    /// The 4-D weight is a transposed convolution's (`[in, out / groups, kh, kw]`, PyTorch's
    /// `ConvTranspose2d`), which a checkpoint cannot tell from a convolution's: the layer is
    /// left dense ([`SkipReason::Transposed`](crate::convert::SkipReason::Transposed)) and
    /// counted as one (MACs `in · out / groups · kh · kw` per input position).
    pub transposed: bool,
}

impl LayerGeometry {
    /// Nothing declared yet for the layers `name` matches.
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Self::default() }
    }
}

/// Which factorisation schemes a layer may be converted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchemeChoice {
    /// The planner chooses a (scheme, rank) or dense per layer among every scheme
    /// ([`SchemeKind::ALL`]); needs a whole-network target.
    Auto,
    /// This scheme only.
    Only(SchemeKind),
}

impl SchemeChoice {
    /// The schemes allowed, in [`SchemeKind::ALL`] order for `Auto`.
    pub fn kinds(self) -> Vec<SchemeKind> {
        match self {
            Self::Auto => SchemeKind::ALL.to_vec(),
            Self::Only(k) => vec![k],
        }
    }
    /// `"auto"` or the scheme's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Only(k) => k.name(),
        }
    }
    /// The choice named `name` (`auto`, `dac`, `spatial`, `channel`, `decoupled`).
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "auto" {
            Some(Self::Auto)
        } else {
            SchemeKind::from_name(name).map(Self::Only)
        }
    }
}

/// How ranks are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum RankSource {
    /// Each layer on its own, by a [`Rank`] policy.
    Policy(Rank),
    /// The whole-network planner ([`plan`](fn@crate::plan)) for this target over the selected
    /// convolutions, counting the others and the linear layers as fixed cost.
    Target(Target),
}

impl RankSource {
    /// Whether ranks come from the whole-network planner.
    pub(crate) fn is_target(&self) -> bool {
        matches!(self, Self::Target(_))
    }
}

/// The element type decompositions are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Precision {
    /// f32 (default): fast, and accurate enough for weights stored in f32 or narrower.
    #[default]
    F32,
    /// f64: for F64 weights or when the last digits matter.
    F64,
}

/// The SVD algorithm a conversion uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SvdMethod {
    /// [`GramSvd`](crate::svd::GramSvd) (default): each channel's `K x K` Gram matrix in f64 and
    /// a Jacobi eigensolver, the layer streamed once; the fast backend (accuracy: see its docs).
    #[default]
    Gram,
    /// [`NalgebraSvd`](crate::svd::NalgebraSvd): nalgebra's one-sided SVD of every gathered
    /// channel matrix; slower, the reference.
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

/// A floating-point storage type for weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FloatDtype {
    /// IEEE binary32 (`"F32"`).
    F32,
    /// IEEE binary64 (`"F64"`).
    F64,
    /// IEEE binary16 (`"F16"`).
    F16,
    /// bfloat16 (`"BF16"`).
    BF16,
}

impl FloatDtype {
    /// The name used in safetensors headers (`"F32"`, `"F64"`, `"F16"`, `"BF16"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F64 => "F64",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F64 => 8,
            Self::F16 | Self::BF16 => 2,
        }
    }
    /// The dtype named `name` in a safetensors header, if it is a float type.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "F32" => Some(Self::F32),
            "F64" => Some(Self::F64),
            "F16" => Some(Self::F16),
            "BF16" => Some(Self::BF16),
            _ => None,
        }
    }
}

impl std::fmt::Display for FloatDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a conversion should do, for every format: [`io::convert_file`](crate::io::convert_file)
/// (safetensors) and [`io::onnx::rewrite_file`](crate::io::onnx::rewrite_file) (ONNX). Build
/// with [`new`](Self::new) or [`planned`](Self::planned) and the setters.
///
/// A few settings concern one format only and say so: [`output_dtype`](Self::output_dtype) and
/// [`memory_budget`](Self::memory_budget) (checkpoints), [`layout`](Self::layout) (ONNX graphs).
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ConvertOptions {
    pub(crate) ranks: RankSource,
    pub(crate) selection: Selection,
    pub(crate) input_size: Option<(usize, usize)>,
    pub(crate) allow_slower: bool,
    pub(crate) precision: Precision,
    pub(crate) output_dtype: Option<FloatDtype>,
    pub(crate) split: Split,
    /// `None`: the default (see [`ConvertOptions::fit`]).
    pub(crate) fit: Option<Fit>,
    pub(crate) force: bool,
    pub(crate) svd: SvdMethod,
    pub(crate) memory_budget: Option<usize>,
    /// `None`: each layer's fastest by [`time_model`](Self::time_model).
    pub(crate) layout: Option<Layout>,
    pub(crate) time: TimeModel,
    pub(crate) freeze_input_weights: bool,
    pub(crate) require_target: bool,
    /// `None`: the default (see [`ConvertOptions::depth_weight`]).
    pub(crate) depth_weight: Option<f64>,
    /// `None`: every planned layer scored by its fit's input model.
    pub(crate) input_moments: Option<Arc<BTreeMap<String, InputMoments>>>,
}

impl ConvertOptions {
    /// Every convolution with `kh·kw > 1`, its rank chosen by `policy`.
    pub fn new(policy: Rank) -> Self {
        Self::with(RankSource::Policy(policy))
    }
    /// Every convolution with `kh·kw > 1`, ranks planned together by [`plan`](fn@crate::plan)
    /// for a whole-network `target` (MACs count every convolution and every linear layer).
    /// Layers with a [`rank_for`](Self::rank_for) override keep it; the planner works around
    /// them. Every selected convolution needs an input size: known from the graph (ONNX), or
    /// given by [`layer_input`](Self::layer_input) or else [`input_size`](Self::input_size).
    pub fn planned(target: Target) -> Self {
        Self::with(RankSource::Target(target))
    }
    /// [`planned`](Self::planned) for a whole network `factor` times faster by the
    /// [time model](Self::time_model) ([`Target::TimeReduction`]).
    pub fn speedup(factor: f64) -> Self {
        Self::planned(Target::TimeReduction(factor))
    }
    /// [`planned`](Self::planned) for a whole-network MAC reduction of `factor`
    /// ([`Target::MacReduction`]).
    pub fn macs(factor: f64) -> Self {
        Self::planned(Target::MacReduction(factor))
    }
    fn with(ranks: RankSource) -> Self {
        Self {
            ranks,
            selection: Selection::default(),
            input_size: None,
            allow_slower: false,
            precision: Precision::F32,
            output_dtype: None,
            split: Split::default(),
            fit: None,
            force: false,
            svd: SvdMethod::default(),
            memory_budget: None,
            layout: None,
            time: TimeModel::for_this_cpu(),
            freeze_input_weights: false,
            require_target: false,
            depth_weight: None,
            input_moments: None,
        }
    }
    /// How ranks are chosen.
    pub fn ranks(&self) -> RankSource {
        self.ranks
    }
    /// The layer patterns and per-layer declarations.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }
    /// The time model plans, reports and layout choices use (set by
    /// [`time_model`](Self::time_model)).
    pub fn time(&self) -> &TimeModel {
        &self.time
    }
    /// Converts only layers matching one of the include patterns (default: all).
    pub fn include(mut self, pattern: impl Into<String>) -> Self {
        self.selection.include.push(pattern.into());
        self
    }
    /// Leaves the layers matching `pattern` dense.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.selection.exclude.push(pattern.into());
        self
    }
    /// The schemes every layer may be converted with. By default, a layer whose rank the
    /// whole-network planner chooses ([`planned`](Self::planned)) may take any scheme
    /// ([`SchemeChoice::Auto`]: it beat every DAC-only plan on both shipped networks,
    /// EXPERIMENTS.md), and a layer ranked by a policy or [`rank_for`](Self::rank_for) is DAC's.
    /// An explicit `Auto` on a layer that is not planned is
    /// [`Error::SchemeNeedsPlanner`](crate::Error::SchemeNeedsPlanner).
    pub fn scheme(mut self, choice: SchemeChoice) -> Self {
        self.selection.scheme = Some(choice);
        self
    }
    /// The schemes the layers matching `pattern` may be converted with (the last matching
    /// override wins over [`scheme`](Self::scheme)).
    pub fn scheme_for(mut self, pattern: impl Into<String>, choice: SchemeChoice) -> Self {
        self.selection.schemes.push((pattern.into(), choice));
        self
    }
    /// Uses rank `rank` for the layers matching `pattern` (the last matching override wins).
    pub fn rank_for(mut self, pattern: impl Into<String>, rank: usize) -> Self {
        self.selection.ranks.push((pattern.into(), rank));
        self
    }
    /// Declares that the layers matching `pattern` have `groups` groups (default 1). Only a
    /// checkpoint needs this: it cannot tell. An ONNX graph has its own, and a declaration that
    /// contradicts it is an error.
    pub fn groups(mut self, pattern: impl Into<String>, groups: usize) -> Self {
        self.selection.groups.push((pattern.into(), groups));
        self
    }
    /// Declares the stride `(height, width)` of the layers matching `pattern` (a checkpoint has
    /// none: default 1), for MAC counts, planning and `inspect`. A graph's must agree with it.
    pub fn stride(mut self, pattern: impl Into<String>, height: usize, width: usize) -> Self {
        self.selection.strides.push((pattern.into(), (height, width)));
        self
    }
    /// Declares the zero padding of the layers matching `pattern` (a checkpoint has none: default
    /// "same" for stride 1, `(k−1)/2` before and `k/2` after).
    pub fn padding(mut self, pattern: impl Into<String>, padding: Padding) -> Self {
        self.selection.paddings.push((pattern.into(), padding));
        self
    }
    /// Declares the dilation `(height, width)` of the layers matching `pattern` (default 1).
    pub fn dilation(mut self, pattern: impl Into<String>, height: usize, width: usize) -> Self {
        self.selection.dilations.push((pattern.into(), (height, width)));
        self
    }
    /// Every declaration of a [`LayerGeometry`] (a `--geometry` sidecar's entry), for the layers
    /// its name matches (a pattern; a name without wildcards matches itself).
    pub fn declare(mut self, layer: &LayerGeometry) -> Self {
        self.selection.declare(layer);
        self
    }
    /// The input `(height, width)` of the layers matching `pattern`, for MAC counts and
    /// planning. A checkpoint has no graph, so it cannot tell where pooling or strides shrink the
    /// feature maps; in an ONNX graph a size inferred from the graph comes first.
    pub fn layer_input(mut self, pattern: impl Into<String>, height: usize, width: usize) -> Self {
        self.selection.inputs.push((pattern.into(), (height, width)));
        self
    }
    /// The layers matching `pattern` are transposed convolutions (a checkpoint's 4-D weight
    /// does not say): left dense and counted as such; see [`LayerGeometry::transposed`].
    pub fn transposed(mut self, pattern: impl Into<String>) -> Self {
        self.selection.transposed.push(pattern.into());
        self
    }
    /// A checkpoint's linear layers (2-D `<name>.weight`) matching `pattern` run at `positions`
    /// positions per image (a channels-last MLP at every pixel, or tokens); default 1, the
    /// classifier head's. Their MACs and modeled time count every application. (An ONNX graph
    /// has their shapes.)
    pub fn linear_positions(mut self, pattern: impl Into<String>, positions: usize) -> Self {
        self.selection.positions.push((pattern.into(), positions));
        self
    }
    /// The network's input `(height, width)`.
    ///
    /// ONNX: the spatial size of the model's 4-D inputs (default: their static shape), from
    /// which every tensor's shape is inferred; a layer after an operator inference cannot
    /// follow is never counted at this size: it needs [`layer_input`](Self::layer_input).
    /// Checkpoints (no graph): the size of every layer not declared with `layer_input` or a
    /// geometry sidecar, with stride 1 and "same" padding unless declared.
    pub fn input_size(mut self, height: usize, width: usize) -> Self {
        self.input_size = Some((height, width));
        self
    }
    /// Converts layers even when they save nothing (default: they stay dense). Rank policies:
    /// a rank that saves no MACs. [`macs`](Self::macs) and other non-time targets: the planner
    /// may factor a layer whose factors are not modeled [`MIN_TIME_GAIN`] faster than dense
    /// ([`PlanOptions::time_guard`] off), so a plan for fewer MACs may run slower than the
    /// original. [`speedup`](Self::speedup) plans never factor such a layer.
    ///
    /// [`MIN_TIME_GAIN`]: crate::plan::MIN_TIME_GAIN
    /// [`PlanOptions::time_guard`]: crate::plan::PlanOptions::time_guard
    pub fn allow_slower(mut self, allow: bool) -> Self {
        self.allow_slower = allow;
        self
    }
    /// The element type to compute in (default f32; f64 weights of an ONNX model are always
    /// computed in f64).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Checkpoints only: writes converted tensors in `dtype` instead of the weight's own dtype
    /// (an ONNX graph keeps its tensors' type; setting this for a rewrite is an error).
    pub fn output_dtype(mut self, dtype: FloatDtype) -> Self {
        self.output_dtype = Some(dtype);
        self
    }
    /// Where the singular values go (default [`Split::SquareRoot`]).
    pub fn split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
    /// Which rank-`r` approximation the factors represent. Default: [`Fit::frobenius`] (the DAC
    /// paper's), except when some layer may take any scheme ([`SchemeChoice::Auto`]):
    /// `Fit::correlated(Fit::AUTO_RHO)` then. With [`Fit::correlated`], energy policies, the
    /// planner (scoring as [`PlanLayer::new`](crate::plan::PlanLayer::new) describes) and the
    /// summary's errors all use the weighted spectra: the relative errors are output errors for
    /// correlated inputs. A checkpoint's `dac.layer.<layer>` records then carry
    /// `"fit":"correlated=ρ"`.
    pub fn fit(mut self, fit: Fit) -> Self {
        self.fit = Some(fit);
        self
    }
    /// Replaces an existing output file (default: an existing output is an error).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
    /// The SVD algorithm (default [`SvdMethod::Gram`], for both formats).
    pub fn svd(mut self, method: SvdMethod) -> Self {
        self.svd = method;
        self
    }
    /// Checkpoints only: bytes of weights (decoded, or viewed in the map) that may be kept
    /// between choosing ranks and writing, so that layers whose rank depends on their spectrum
    /// ([`Rank::Energy`], [`planned`](Self::planned)) are factored only once. Layers beyond the
    /// budget are factored again when written (same result, more time). Default: half the
    /// input's tensor data, at least 64 MiB; 0 keeps nothing.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = Some(bytes);
        self
    }
    /// ONNX only: the layout of every factored layer, instead of each layer's fastest by the
    /// [time model](Self::time_model) (a scheme without that layout keeps its own, see
    /// [`Layout`]).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = Some(layout);
        self
    }
    /// The time model that [`speedup`](Self::speedup) targets, reports and layout choices use
    /// (default: [`TimeModel::for_this_cpu`]: the shipped table of this kind of CPU, one thread).
    pub fn time_model(mut self, model: TimeModel) -> Self {
        self.time = model;
        self
    }
    /// ONNX only: convert `Conv` weights that the graph also lists as inputs. ONNX lets a
    /// caller replace such an initializer at run time, so by default those layers stay dense
    /// ([`SkipReason::WeightIsGraphInput`](crate::convert::SkipReason::WeightIsGraphInput));
    /// old exporters (and every model of IR version 3 or below) list all initializers as
    /// inputs without meaning that. With `true` they are converted as constants and the
    /// replaced weights leave the graph's inputs with their initializers. In an IR version 3
    /// model, which must list every initializer as an input, the new factors are listed too.
    pub fn freeze_input_weights(mut self, freeze: bool) -> Self {
        self.freeze_input_weights = freeze;
        self
    }
    /// With a planner target ([`planned`](Self::planned)): a target no plan reaches is
    /// [`Error::TargetNotMet`](crate::Error::TargetNotMet) and nothing is written. By default the
    /// cheapest plan is written and its summary says the target was not met
    /// ([`Plan::met`](crate::plan::Plan::met) is `false`). No effect on rank policies.
    pub fn require_target(mut self, require: bool) -> Self {
        self.require_target = require;
        self
    }
    /// The planner's [depth weight](crate::plan::PlanOptions::depth_weight): how much more an
    /// early layer's error counts than a late one's. By default
    /// [`AUTO_DEPTH_WEIGHT`](crate::plan::AUTO_DEPTH_WEIGHT) when a planned layer may take a
    /// scheme other than DAC, and 0 when every planned layer is DAC's (the score DAC's recorded
    /// plans come from). A finite `alpha >= 0`; any other is
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when the plan is made.
    pub fn depth_weight(mut self, alpha: f64) -> Self {
        self.depth_weight = Some(alpha);
        self
    }
    /// Scores every planned layer's candidates by the second moments of its input
    /// ([`moments`](crate::moments)), keyed by layer name (an ONNX node's name), in place of the
    /// fit's input model. Every layer the planner plans needs an entry of its `C·kh·kw`; a
    /// missing or misfitting one is an error when the layer is analysed. Policies
    /// ([`new`](Self::new)) do not score, and ignore it.
    pub fn input_moments(mut self, moments: BTreeMap<String, InputMoments>) -> Self {
        self.input_moments = Some(Arc::new(moments));
        self
    }
}
