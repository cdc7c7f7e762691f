//! Rewriting ONNX models (feature `onnx`): every selected `Conv` becomes a depthwise `Conv`
//! followed by a 1x1 `Conv`, and nothing else in the file changes.
//!
//! [`rewrite_file`] (or [`rewrite_model`] on bytes) reads a `ModelProto` at the protobuf wire
//! level. Every field of the model outside the graph — IR version, opset imports, producer,
//! metadata, functions, fields this crate does not know — is copied byte for byte; inside the
//! graph every node, initializer, input, output and value_info that the rewrite does not touch is
//! copied byte for byte too, in its original order. A rewrite that converts nothing therefore
//! returns the input bytes.
//!
//! A `Conv` (default domain, 2-D) whose weight is an initializer becomes, at rank `r`:
//!
//! | layout | nodes |
//! |---|---|
//! | [`Layout::Fused`] | `Conv(X, Wd)` with `group` = C, `C·r` outputs, the original `strides`, `pads`, `dilations`, `auto_pad`, `kernel_shape`; then `Conv(·, Wp, B)` 1x1 with the original `group` |
//! | [`Layout::Multiplier1`] | (`Split` of X into the `g` groups when `g > 1`), `g·r` depthwise `Conv`s of multiplier 1, one `Concat`, then the 1x1 `Conv` with its input channels permuted to match |
//!
//! The 1x1 `Conv` produces the original output name and carries the original bias input and the
//! original node's doc string and unknown fields; new tensors, nodes and initializers get fresh
//! names (`<weight stem>.depthwise.weight`, `<weight stem>.pointwise.weight`,
//! `<output>/dac_depthwise`, ... with a numeric suffix on collision) and the new initializers
//! are placed where the original weight was. The original weight initializer is removed when no
//! other node (including subgraphs) and no graph output uses it. Weights are written as
//! `raw_data` in the original data type (float, double, float16 or bfloat16); decompositions are
//! computed in f32 (f64 for double weights).
//!
//! Left alone and listed in [`RewriteReport::skipped`] with the reason: convolutions whose weight
//! is not an initializer (or is also a graph input, so it can be replaced at run time), 1-D and
//! 3-D convolutions, 1x1 kernels, layers not selected, and layers whose rank saves nothing.
//!
//! Layer names for `include`/`exclude` patterns (globs, `*` and `?`): a pattern selects a `Conv`
//! when it matches the node's name, its weight initializer's name, or that name without a
//! trailing `.weight`. Unlike checkpoint conversion, a pattern matching nothing is not an error
//! (the report lists it in [`RewriteReport::unmatched_patterns`]).
//!
//! Sizes: the planner ([`RewriteOptions::planned`]) and the MAC counts need every convolution's
//! input size. They are inferred by walking the graph from the model's static input shape (or
//! [`RewriteOptions::input_size`]) through `Conv`, pooling and shape-preserving operators; a
//! convolution whose input size cannot be inferred falls back to `input_size` (and is flagged in
//! [`RewrittenConv::size_inferred`]).
//!
//! ```no_run
//! use dac::io::onnx::{rewrite_file, RewriteOptions};
//! let report = rewrite_file("net.onnx", "net-dac.onnx", &RewriteOptions::planned(2.0))?;
//! for c in &report.converted {
//!     println!("{}: rank {}", c.node, c.rank);
//! }
//! # Ok::<(), dac::Error>(())
//! ```

mod proto;
mod rewrite;
mod shapes;
mod wire;

use crate::cost::Cost;
use crate::decompose::Split;
use crate::error::{Error, Result};
use crate::fit::Fit;
use crate::rank::{KeepDenseReason, Rank};
use std::path::{Path, PathBuf};

/// How a decomposed convolution is laid out in the rewritten graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Layout {
    /// One depthwise `Conv` with `group = C` and `C·r` outputs (channel multiplier `r`), then
    /// the 1x1 `Conv`. Fewest nodes, but onnxruntime and tract have no fast kernel for a
    /// multiplier above 1: slower than [`Layout::Multiplier1`] (see BENCHMARKS.md).
    Fused,
    /// The default: `r` depthwise `Conv`s of multiplier 1 per group (after a `Split` into groups
    /// when the layer is grouped) and a `Concat`, then the 1x1 `Conv` with its input channels
    /// permuted to the concatenated order. Runtimes' fast depthwise kernels need multiplier 1;
    /// measured faster in onnxruntime and tract on the reference network (BENCHMARKS.md).
    #[default]
    Multiplier1,
}

impl Layout {
    /// `"fused"` or `"multiplier1"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Layout::Fused => "fused",
            Layout::Multiplier1 => "multiplier1",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fused" => Ok(Layout::Fused),
            "multiplier1" | "split" => Ok(Layout::Multiplier1),
            other => Err(format!("unknown layout `{other}` (fused | multiplier1)")),
        }
    }
}

/// How ranks are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum RankSource {
    /// Each layer on its own, by a [`Rank`] policy.
    Policy(Rank),
    /// The whole-network planner ([`plan`](fn@crate::plan)) for this MAC reduction (`> 1`) over the
    /// selected convolutions, counting the other convolutions and `Gemm`/`MatMul` layers with
    /// constant weights as fixed cost.
    Plan(f64),
}

/// What [`rewrite_file`] / [`rewrite_model`] should do. Build with [`RewriteOptions::new`] or
/// [`RewriteOptions::planned`] and the setters.
#[derive(Debug, Clone)]
#[must_use]
pub struct RewriteOptions {
    pub(crate) ranks: RankSource,
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
    pub(crate) input_size: Option<(usize, usize)>,
    pub(crate) allow_slower: bool,
    pub(crate) layout: Layout,
    pub(crate) split: Split,
    pub(crate) fit: Fit,
    pub(crate) force: bool,
}

impl RewriteOptions {
    /// Every 2-D convolution with a constant weight and a kernel larger than 1x1, its rank
    /// chosen by `policy`.
    pub fn new(policy: Rank) -> Self {
        Self::with(RankSource::Policy(policy))
    }
    /// Ranks from the whole-network planner for a MAC reduction of `reduction`.
    pub fn planned(reduction: f64) -> Self {
        Self::with(RankSource::Plan(reduction))
    }
    fn with(ranks: RankSource) -> Self {
        Self {
            ranks,
            include: Vec::new(),
            exclude: Vec::new(),
            input_size: None,
            allow_slower: false,
            layout: Layout::default(),
            split: Split::default(),
            fit: Fit::frobenius(),
            force: false,
        }
    }
    /// Converts only convolutions matching one of the include patterns (default: all).
    pub fn include(mut self, pattern: impl Into<String>) -> Self {
        self.include.push(pattern.into());
        self
    }
    /// Leaves the convolutions matching `pattern` alone.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.exclude.push(pattern.into());
        self
    }
    /// The model input's `(height, width)` (default: its static shape), also used for any
    /// convolution whose input size cannot be inferred.
    pub fn input_size(mut self, height: usize, width: usize) -> Self {
        self.input_size = Some((height, width));
        self
    }
    /// Converts layers even when their rank saves nothing (rank policies only).
    pub fn allow_slower(mut self, allow: bool) -> Self {
        self.allow_slower = allow;
        self
    }
    /// The layout of the new nodes (default [`Layout::Fused`]).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    /// Where the singular values go (default [`Split::SquareRoot`]).
    pub fn split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
    /// Which rank-`r` approximation the pairs represent (default [`Fit::frobenius`], the DAC
    /// paper's). With [`Fit::correlated`], energy policies and the planner (scoring as
    /// [`PlanLayer::from_factorization`](crate::plan::PlanLayer::from_factorization)) use the
    /// weighted spectra, and the report's errors are output errors for correlated inputs.
    pub fn fit(mut self, fit: Fit) -> Self {
        self.fit = fit;
        self
    }
    /// Replaces an existing output file (default: an existing output is an error).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// Why a `Conv` was left alone.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The weight is not an initializer (computed, or a `Constant` node's output).
    WeightNotInitializer,
    /// The weight initializer is also a graph input, so it can be replaced at run time.
    WeightIsGraphInput,
    /// Not a 2-D convolution (the weight has this many dimensions).
    NotTwoD {
        /// The weight's rank.
        dims: usize,
    },
    /// A 1x1 kernel has nothing to separate.
    PointwiseKernel,
    /// Not matched by any include pattern.
    NotIncluded,
    /// Matched by an exclude pattern.
    Excluded,
    /// The rank policy kept it dense.
    KeptDense {
        /// The rank the policy arrived at.
        rank: Option<usize>,
        /// Why.
        reason: KeepDenseReason,
    },
    /// The planner kept it dense.
    PlannedDense,
    /// A fixed rank above this layer's maximum `min(N/g, kh·kw)` (for example rank 2 on a
    /// depthwise convolution, whose maximum is 1): such a rank could never save anything.
    RankAboveMaximum {
        /// The rank asked for.
        rank: usize,
        /// The layer's maximum rank.
        max: usize,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WeightNotInitializer => f.write_str("weight is not an initializer"),
            Self::WeightIsGraphInput => {
                f.write_str("weight initializer is also a graph input (replaceable at run time)")
            }
            Self::NotTwoD { dims } => write!(f, "not a 2-D convolution (weight has {dims} dimensions)"),
            Self::PointwiseKernel => f.write_str("1x1 kernel: nothing to separate"),
            Self::NotIncluded => f.write_str("not matched by an include pattern"),
            Self::Excluded => f.write_str("matched by an exclude pattern"),
            Self::KeptDense { rank: Some(r), reason } => write!(f, "rank {r}: {reason}"),
            Self::KeptDense { rank: None, reason } => write!(f, "{reason}"),
            Self::PlannedDense => f.write_str("the planner kept it dense"),
            Self::RankAboveMaximum { rank, max } => {
                write!(f, "rank {rank} is above this layer's maximum rank {max}: nothing to save")
            }
        }
    }
}

/// A `Conv` replaced by a pair.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RewrittenConv {
    /// The node's name (or its weight's stem when unnamed).
    pub node: String,
    /// The weight initializer's name.
    pub weight: String,
    /// The weight's shape `[N, C/g, kh, kw]`.
    pub dims: [usize; 4],
    /// Groups.
    pub groups: usize,
    /// The rank used.
    pub rank: usize,
    /// `min(N/g, kh·kw)`.
    pub max_rank: usize,
    /// Kept `s²` over total `s²`.
    pub retained_energy: f64,
    /// `‖W − Ŵ‖ / ‖W‖` of the rank-`rank` approximation, from the singular values
    /// ([`Report::relative_error`](crate::Report::relative_error)).
    pub relative_error: f64,
    /// The input `(height, width)` costs refer to, if known.
    pub input_size: Option<(usize, usize)>,
    /// Whether `input_size` was inferred from the graph (`false`: the fallback size, or unknown).
    pub size_inferred: bool,
    /// Cost of the dense layer (when the input size is known).
    pub before: Option<Cost>,
    /// Cost of the pair (when the input size is known).
    pub after: Option<Cost>,
    /// Names of the nodes that replace it, in graph order.
    pub nodes: Vec<String>,
}

/// A `Conv` left alone.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SkippedConv {
    /// The node's name (or `#index` when unnamed and its weight is unknown).
    pub node: String,
    /// The weight input's name.
    pub weight: String,
    /// Why it stayed.
    pub reason: SkipReason,
    /// Its cost (when its shape and input size are known).
    pub cost: Option<Cost>,
}

/// The planner's outcome, when ranks were planned.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PlanOutcome {
    /// The requested whole-network MAC reduction.
    pub target: f64,
    /// The planned reduction.
    pub reduction: f64,
    /// Whether the target was met.
    pub met: bool,
    /// The largest reduction any plan could reach.
    pub max_reduction: f64,
}

/// What a rewrite did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RewriteReport {
    /// Converted convolutions, in graph order.
    pub converted: Vec<RewrittenConv>,
    /// Convolutions left alone, in graph order.
    pub skipped: Vec<SkippedConv>,
    /// Original weight initializers removed (no longer used).
    pub removed_initializers: Vec<String>,
    /// Include/exclude patterns that matched no `Conv`.
    pub unmatched_patterns: Vec<String>,
    /// The model input size used for size inference, if any.
    pub input_size: Option<(usize, usize)>,
    /// Cost of `Gemm`/`MatMul` nodes with constant weights (counted in the totals).
    pub fixed: Cost,
    /// The planner's outcome ([`RankSource::Plan`] only).
    pub plan: Option<PlanOutcome>,
    /// The layout used.
    pub layout: Layout,
    /// The fit used ([`RewriteOptions::fit`]).
    pub fit: Fit,
}

impl RewriteReport {
    fn total(&self, after: bool) -> Option<u64> {
        let mut sum = self.fixed.macs;
        for c in &self.converted {
            sum = sum.saturating_add(if after { c.after?.macs } else { c.before?.macs });
        }
        for s in &self.skipped {
            if let Some(c) = s.cost {
                sum = sum.saturating_add(c.macs);
            }
        }
        Some(sum)
    }
    /// MACs of the convolutions (with known sizes) and constant-weight linear layers before the
    /// rewrite; `None` when a converted layer's size is unknown.
    pub fn macs_before(&self) -> Option<u64> {
        self.total(false)
    }
    /// The same after the rewrite.
    pub fn macs_after(&self) -> Option<u64> {
        self.total(true)
    }
    /// `macs_before / macs_after`.
    pub fn reduction(&self) -> Option<f64> {
        let (b, a) = (self.macs_before()?, self.macs_after()?);
        Some(if a == 0 { 1.0 } else { b as f64 / a as f64 })
    }

    /// The report as a JSON object (for `dac onnx --json`).
    pub fn to_json(&self) -> String {
        use serde_json::json;
        let cost = |c: &Option<Cost>| c.map(|c| json!({"macs": c.macs, "params": c.params}));
        let converted: Vec<_> = self
            .converted
            .iter()
            .map(|c| {
                json!({
                    "node": c.node, "weight": c.weight, "dims": c.dims, "groups": c.groups, "rank": c.rank,
                    "max_rank": c.max_rank, "retained_energy": c.retained_energy,
                    "relative_error": c.relative_error, "input_size": c.input_size,
                    "size_inferred": c.size_inferred, "before": cost(&c.before), "after": cost(&c.after),
                    "nodes": c.nodes,
                })
            })
            .collect();
        let skipped: Vec<_> = self
            .skipped
            .iter()
            .map(|s| json!({"node": s.node, "weight": s.weight, "reason": s.reason.to_string(), "cost": cost(&s.cost)}))
            .collect();
        json!({
            "layout": self.layout.as_str(),
            "fit": self.fit.to_string(),
            "input_size": self.input_size,
            "converted": converted,
            "skipped": skipped,
            "removed_initializers": self.removed_initializers,
            "unmatched_patterns": self.unmatched_patterns,
            "fixed": {"macs": self.fixed.macs, "params": self.fixed.params},
            "macs_before": self.macs_before(),
            "macs_after": self.macs_after(),
            "reduction": self.reduction(),
            "plan": self.plan.map(|p| json!({
                "target": p.target, "reduction": p.reduction, "met": p.met, "max_reduction": p.max_reduction
            })),
        })
        .to_string()
    }
}

/// Rewrites an ONNX model held in memory; returns the new model's bytes and the report.
///
/// # Errors
/// [`Error::Onnx`] naming the node or tensor for a file that is not an ONNX model, truncated or
/// malformed protobuf, initializers stored in external files, a `Conv` whose weight shape
/// disagrees with its attributes or bias, or unsupported weight data types; errors from the
/// decomposition ([`Error::InvalidRank`], ...) name the layer.
pub fn rewrite_model(bytes: &[u8], options: &RewriteOptions) -> Result<(Vec<u8>, RewriteReport)> {
    rewrite::rewrite(bytes, options, Path::new("<memory>"))
}

/// Reads `input`, rewrites it and writes `output` atomically (a temporary file in the target
/// directory, renamed into place only on success). Never writes over the input.
///
/// # Errors
/// As [`rewrite_model`], plus [`Error::Io`] for file system failures,
/// [`Error::OutputIsInput`] when `output` names the input file and [`Error::OutputExists`] when
/// it exists and [`RewriteOptions::force`] is not set. Nothing is written on error.
pub fn rewrite_file(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    options: &RewriteOptions,
) -> Result<RewriteReport> {
    use std::io::Write;
    let (input, output) = (input.as_ref(), output.as_ref());
    super::atomic::check_output(input, output, options.force)?;
    let bytes = std::fs::read(input).map_err(|e| Error::Io { path: input.to_path_buf(), action: "read", source: e })?;
    let (out, report) = rewrite::rewrite(&bytes, options, input).map_err(|e| match e {
        Error::Onnx { .. } | Error::Io { .. } | Error::InFile { .. } => e,
        other => Error::InFile { file: input.to_path_buf(), source: Box::new(other) },
    })?;
    let mut file = super::atomic::AtomicFile::create(output, options.force)?;
    file.writer().write_all(&out).map_err(|e| Error::Io { path: output.to_path_buf(), action: "write", source: e })?;
    let permissions = std::fs::metadata(input).ok().map(|m| m.permissions());
    file.commit(permissions)?;
    Ok(report)
}

/// An [`Error::Onnx`] about `file`.
pub(crate) fn onnx_error(file: &Path, location: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Onnx { file: PathBuf::from(file), location: location.into(), reason: reason.into() }
}
