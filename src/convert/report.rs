//! What a conversion did: one report for every format.

use super::options::Layout;
use crate::cost::Cost;
use crate::fit::Fit;
use crate::plan::{Plan, Target};
use crate::rank::KeepDenseReason;
use crate::scheme::SchemeKind;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Why a convolution was left dense.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SkipReason {
    /// A 1x1 kernel, and the layer's schemes cannot reduce it: only channel SVD can, and it is
    /// allowed in planned runs with `auto` schemes or when chosen for the layer.
    PointwiseKernel,
    /// Not matched by any include pattern.
    NotIncluded,
    /// Matched by an exclude pattern.
    Excluded,
    /// The depthwise half of a layer `dac` already converted (checkpoints).
    AlreadyConverted,
    /// The weight is not an initializer: computed at run time (ONNX; a top-level `Constant`
    /// node's tensor counts as an initializer).
    WeightNotInitializer,
    /// Declared a transposed convolution ([`ConvertOptions::transposed`](super::ConvertOptions::transposed)):
    /// its weight is `[in, out / groups, kh, kw]`, not a convolution's.
    Transposed,
    /// The weight is quantized: a `DequantizeLinear` node's output (ONNX). Factoring it would
    /// turn integer weights into float ones.
    QuantizedWeight,
    /// The weight initializer is also a graph input, so it can be replaced at run time (ONNX).
    WeightIsGraphInput,
    /// Not a 2-D convolution: the weight has this many dimensions (ONNX).
    NotTwoD {
        /// The weight's rank.
        dims: usize,
    },
    /// The whole-network planner kept it dense.
    PlannedDense,
    /// The rank policy kept it dense (at `rank`, if it chose one).
    KeptDense {
        /// The rank the policy arrived at.
        rank: Option<usize>,
        /// Why.
        reason: KeepDenseReason,
    },
    /// `dac onnx --measure --speedup`: the fastest plan measured slower than the original in
    /// the runtime, so the original model was written unchanged.
    MeasuredSlower,
    /// A fixed rank above this layer's maximum (for example rank 2 on a depthwise convolution,
    /// whose maximum is 1): such a rank could never save anything. The same rule for every
    /// format: a network routinely holds layers of different maximum ranks.
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
            Self::PointwiseKernel => f.write_str("1x1 kernel: nothing to separate"),
            Self::NotIncluded => f.write_str("not matched by an include pattern"),
            Self::Excluded => f.write_str("matched by an exclude pattern"),
            Self::AlreadyConverted => f.write_str("already a dac depthwise layer"),
            Self::WeightNotInitializer => f.write_str("weight is not an initializer"),
            Self::Transposed => f.write_str("a transposed convolution (declared): not converted"),
            Self::QuantizedWeight => {
                f.write_str("weight is quantized (a DequantizeLinear output); dac factors float weights")
            }
            Self::WeightIsGraphInput => {
                f.write_str("weight initializer is also a graph input (replaceable at run time)")
            }
            Self::NotTwoD { dims } => write!(f, "not a 2-D convolution (weight has {dims} dimensions)"),
            Self::PlannedDense => f.write_str("the planner kept it dense"),
            Self::KeptDense { rank: Some(r), reason } => write!(f, "rank {r}: {reason}"),
            Self::KeptDense { rank: None, reason } => write!(f, "{reason}"),
            Self::MeasuredSlower => f.write_str("the plans measured slower than the original: the original is written"),
            Self::RankAboveMaximum { rank, max } => {
                write!(f, "rank {rank} is above this layer's maximum rank {max}: nothing to save")
            }
        }
    }
}

/// Where the input size a layer's costs refer to came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizeSource {
    /// Inferred from the graph (ONNX).
    Inferred,
    /// Declared for the layer ([`ConvertOptions::layer_input`](super::ConvertOptions::layer_input)).
    Declared,
    /// The network's input size ([`ConvertOptions::input_size`](super::ConvertOptions::input_size)),
    /// used because nothing else was known.
    Default,
    /// No size at all: a checkpoint without any input size; costs count one output position.
    PerPosition,
    /// Unknown (ONNX, where inference stopped and no size was given): no cost.
    Unknown,
}

impl SizeSource {
    /// `"inferred"`, `"declared"`, `"default"`, `"per-position"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inferred => "inferred",
            Self::Declared => "declared",
            Self::Default => "default",
            Self::PerPosition => "per-position",
            Self::Unknown => "unknown",
        }
    }
}

/// A convolution replaced by its factors.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConvertedLayer {
    /// Layer name: a checkpoint's weight name without `.weight`; an ONNX node's name (or its
    /// weight's stem when unnamed).
    pub name: String,
    /// The weight tensor's name.
    pub weight: String,
    /// The weight's shape `[N, C/g, kh, kw]`.
    pub dims: [usize; 4],
    /// Groups.
    pub groups: usize,
    /// The scheme used.
    pub scheme: SchemeKind,
    /// The rank used.
    pub rank: usize,
    /// The largest possible rank.
    pub max_rank: usize,
    /// The layout of its nodes in a graph (`None` for a scheme with one layout; a checkpoint
    /// stores the factors' weights, and the layout is what the time refers to).
    pub layout: Option<Layout>,
    /// Kept `s²` over total `s²`.
    pub retained_energy: f64,
    /// `‖W − Ŵ‖ / ‖W‖` of the rank-`rank` approximation, from the singular values
    /// (Eckart–Young; rounding to the output dtype not included). With a correlated [`Fit`], the
    /// relative output error under its input model.
    pub relative_error: f64,
    /// The dtype the factors were written in (`"F32"`, `"F16"`, ... for checkpoints; the ONNX
    /// data type's name, `"float"`, ..., for graphs).
    pub dtype: String,
    /// The input `(height, width)` the costs refer to, if known.
    pub input_size: Option<(usize, usize)>,
    /// Where that size came from.
    pub size: SizeSource,
    /// Cost of the dense layer (when the size is known).
    pub before: Option<Cost>,
    /// Cost of the factors (when the size is known).
    pub after: Option<Cost>,
    /// Modeled time of the dense layer (when the size is known; [`Summary::time_model`]).
    pub time_before: Option<Duration>,
    /// Modeled time of the factors in [`layout`](Self::layout) (when the size is known).
    pub time_after: Option<Duration>,
    /// What replaces it: the new tensors (checkpoint) or nodes (ONNX), in order.
    pub written: Vec<String>,
}

/// A convolution left dense.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SkippedLayer {
    /// Layer name.
    pub name: String,
    /// The weight tensor's name.
    pub weight: String,
    /// The weight's shape, when it is a 2-D convolution's.
    pub dims: Option<[usize; 4]>,
    /// Groups (1 when unknown).
    pub groups: usize,
    /// Why it stayed dense.
    pub reason: SkipReason,
    /// The input size the cost refers to, if known.
    pub input_size: Option<(usize, usize)>,
    /// Where that size came from.
    pub size: SizeSource,
    /// Its cost (when its shape and size are known).
    pub cost: Option<Cost>,
    /// Its modeled time (when its shape and size are known).
    pub time: Option<Duration>,
}

/// Something with MACs the network totals cannot count because its size is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uncounted {
    /// The layer or node.
    pub name: String,
    /// Why its size is unknown (where shape inference stopped, and why).
    pub reason: String,
}

/// What a conversion did, for every format.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// The input file (`<memory>` for bytes).
    pub input: PathBuf,
    /// The output file (`<memory>` for bytes).
    pub output: PathBuf,
    /// The network input size used (`None`: none known).
    pub input_size: Option<(usize, usize)>,
    /// Converted layers, in file (graph) order.
    pub converted: Vec<ConvertedLayer>,
    /// Convolutions left dense, in file (graph) order.
    pub skipped: Vec<SkippedLayer>,
    /// Tensors (checkpoint) or initializers (ONNX) no longer in the output: the converted
    /// layers' weights (and a checkpoint's moved biases) that nothing else uses.
    pub removed: Vec<String>,
    /// Checkpoint tensors copied unchanged (0 for ONNX).
    pub copied_tensors: usize,
    /// Cost of what the layer entries do not cover, counted in the totals: a checkpoint's linear
    /// layers (2-D `<name>.weight`); in a graph every `Gemm`, `MatMul` and `ConvTranspose`, and
    /// the `Conv`s that cannot be rewritten, at their inferred shapes.
    pub linear: Cost,
    /// Modeled time of what [`linear`](Self::linear) counts and, in a graph, of the nodes
    /// around the convolutions that the model times (Swish, per-channel scales, pooling, and
    /// the layout reorders not next to a convolution: [`ElementOp`](crate::time::ElementOp))
    /// (`None`: a checkpoint without input sizes). A reorder next to a convolution counts in
    /// that layer's times.
    pub linear_time: Option<Duration>,
    /// The time model's runtime and thread count, as in its table.
    pub time_model: String,
    /// `Some("measured on AMD EPYC (avx512, family 25); this CPU is ...")` when the time table
    /// was measured on another kind of CPU than the one converting
    /// ([`TimeModel::unlike`](crate::time::TimeModel::unlike)): its milliseconds, and so
    /// the modeled speed-ups, may not be this machine's. `None` when they match or the table
    /// names no CPU.
    pub time_model_other_cpu: Option<String>,
    /// Layers and nodes whose size is unknown: while any is listed, the totals are unknown.
    pub uncounted: Vec<Uncounted>,
    /// A graph's operators that compute but that the time model does not cover (activations
    /// onnxruntime cannot fuse into a convolution, other elementwise arithmetic,
    /// normalisations), with their node counts, in first-seen order: their time is in neither
    /// modeled total, so a network whose time they take a share of runs faster by less than
    /// [`speedup`](Self::speedup) says. Empty for a checkpoint.
    pub unmodeled: Vec<(String, usize)>,
    /// A graph's nodes with subgraphs (`If`, `Loop`, `Scan`), which dac does not read: the
    /// convolutions inside them are neither converted nor in the totals. Empty for a checkpoint.
    pub subgraph_nodes: Vec<String>,
    /// A checkpoint's float `.weight` tensors of 3 or 5 dimensions (a `Conv1d`'s or `Conv3d`'s,
    /// as `"name [shape]"`): neither converted nor in the totals. Empty for a graph, whose 1-D
    /// and 3-D convolutions are counted.
    pub other_weights: Vec<String>,
    /// The whole-network plan, when ranks were planned.
    pub plan: Option<Plan>,
    /// The SVD backend's [name](crate::svd::SvdBackend::name).
    pub svd: &'static str,
    /// The fit used.
    pub fit: Fit,
    /// Whether the planned layers were scored by input moments
    /// ([`ConvertOptions::input_moments`](super::ConvertOptions::input_moments)) rather than by
    /// the fit's input model.
    pub input_moments: bool,
    /// The layout forced for every layer ([`ConvertOptions::layout`](super::ConvertOptions::layout));
    /// `None`: each layer's fastest ([`ConvertedLayer::layout`]).
    pub layout: Option<Layout>,
    /// What the costs assume beyond the file, when the file cannot say (a checkpoint's
    /// geometry).
    pub assumption: Option<&'static str>,
}

impl Summary {
    /// What an unchanged copy of the input reports: every converted layer listed as left dense
    /// for `reason` (after the other dense layers), at its dense cost and time; nothing removed
    /// and no plan.
    #[cfg(feature = "onnx")]
    pub(crate) fn unchanged(mut self, reason: SkipReason) -> Self {
        let dense = self.converted.drain(..).map(|c| SkippedLayer {
            name: c.name,
            weight: c.weight,
            dims: Some(c.dims),
            groups: c.groups,
            reason: reason.clone(),
            input_size: c.input_size,
            size: c.size,
            cost: c.before,
            time: c.time_before,
        });
        self.skipped.extend(dense);
        self.removed.clear();
        self.plan = None;
        self
    }
    fn total(&self, after: bool) -> Option<u64> {
        if !self.uncounted.is_empty() {
            return None;
        }
        let mut sum = self.linear.macs;
        for c in &self.converted {
            let cost = if after { c.after } else { c.before };
            sum = sum.saturating_add(cost?.macs);
        }
        for s in self.skipped.iter().filter(|s| s.cost.is_some() || s.dims.is_some()) {
            sum = sum.saturating_add(s.cost?.macs);
        }
        Some(sum)
    }
    /// MACs of every convolution and linear layer, before; `None` when a size is unknown
    /// ([`Summary::uncounted`]).
    pub fn macs_before(&self) -> Option<u64> {
        self.total(false)
    }
    /// The same after the conversion.
    pub fn macs_after(&self) -> Option<u64> {
        self.total(true)
    }
    fn time_total(&self, after: bool) -> Option<Duration> {
        if !self.uncounted.is_empty() {
            return None;
        }
        let mut sum = self.linear_time?;
        for c in &self.converted {
            sum += if after { c.time_after } else { c.time_before }?;
        }
        for s in self.skipped.iter().filter(|s| s.cost.is_some() || s.dims.is_some()) {
            sum += s.time?;
        }
        Some(sum)
    }
    /// Modeled time of every convolution and linear layer (and, in a graph, of the other
    /// nodes the model knows), before; `None` when a size is unknown.
    pub fn time_before(&self) -> Option<Duration> {
        self.time_total(false)
    }
    /// The same after the conversion.
    pub fn time_after(&self) -> Option<Duration> {
        self.time_total(true)
    }
    /// Modeled speed-up `time_before / time_after`.
    pub fn speedup(&self) -> Option<f64> {
        let (b, a) = (self.time_before()?, self.time_after()?);
        Some(if a.is_zero() { 1.0 } else { b.as_secs_f64() / a.as_secs_f64() })
    }
    /// `macs_before / macs_after` (1 when nothing is counted).
    pub fn reduction(&self) -> Option<f64> {
        let (b, a) = (self.macs_before()?, self.macs_after()?);
        Some(if a == 0 { 1.0 } else { b as f64 / a as f64 })
    }
    /// Layers whose size is the network's default input size rather than inferred or declared.
    pub fn defaulted_sizes(&self) -> usize {
        let c = self.converted.iter().filter(|l| l.size == SizeSource::Default).count();
        c + self.skipped.iter().filter(|l| l.size == SizeSource::Default).count()
    }

    /// The summary as one JSON document (what `dac convert --json` and `dac onnx --json` print).
    pub fn to_json(&self) -> Value {
        json!({
            "input": self.input.display().to_string(),
            "output": self.output.display().to_string(),
            "input_size": self.input_size,
            "assumptions": self.assumption,
            "layout": self.layout.map(|l| l.as_str()),
            "svd": self.svd,
            "fit": self.fit.to_string(),
            "planner_score": if self.input_moments { "input moments" } else { "input model of the fit" },
            "converted": self.converted.iter().map(converted_json).collect::<Vec<_>>(),
            "skipped": self.skipped.iter().map(skipped_json).collect::<Vec<_>>(),
            "removed": self.removed,
            "removed_initializers": self.removed,
            "copied_tensors": self.copied_tensors,
            "linear_macs": self.linear.macs,
            "uncounted": self.uncounted.iter().map(|u| json!({"name": u.name, "reason": u.reason})).collect::<Vec<_>>(),
            "unmodeled": self.unmodeled.iter().map(|(op, n)| json!({"op": op, "nodes": n})).collect::<Vec<_>>(),
            "subgraph_nodes": self.subgraph_nodes,
            "other_weights": self.other_weights,
            "fixed": cost_json(Some(self.linear)),
            "plan": self.plan.as_ref().map(plan_json),
            "macs_before": self.macs_before(),
            "macs_after": self.macs_after(),
            "reduction": self.reduction(),
            "time_model": self.time_model,
            "time_model_other_cpu": self.time_model_other_cpu,
            "time_before_ms": ms(self.time_before()),
            "time_after_ms": ms(self.time_after()),
            "speedup": self.speedup(),
            "total": {
                "macs_before": self.macs_before(), "macs_after": self.macs_after(), "reduction": self.reduction(),
                "time_before_ms": ms(self.time_before()), "time_after_ms": ms(self.time_after()),
                "speedup": self.speedup(),
            },
        })
    }
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

fn cost_json(c: Option<Cost>) -> Value {
    c.map_or(Value::Null, |c| json!({"macs": c.macs, "params": c.params}))
}

fn converted_json(l: &ConvertedLayer) -> Value {
    json!({
        "name": l.name, "node": l.name, "weight": l.weight, "shape": l.dims, "dims": l.dims,
        "groups": l.groups, "scheme": l.scheme.name(), "rank": l.rank, "max_rank": l.max_rank,
        "retained_energy": l.retained_energy, "relative_error": l.relative_error, "dtype": l.dtype,
        "input_size": l.input_size, "size": l.size.as_str(),
        "size_inferred": l.size == SizeSource::Inferred, "default_input": l.size == SizeSource::Default,
        "before": cost_json(l.before), "after": cost_json(l.after),
        "macs_before": l.before.map(|c| c.macs), "macs_after": l.after.map(|c| c.macs),
        "params_before": l.before.map(|c| c.params), "params_after": l.after.map(|c| c.params),
        "layout": l.layout.map(|l| l.as_str()),
        "time_before_ms": ms(l.time_before), "time_after_ms": ms(l.time_after),
        "written": l.written, "nodes": l.written,
    })
}

fn skipped_json(l: &SkippedLayer) -> Value {
    json!({
        "name": l.name, "node": l.name, "weight": l.weight, "shape": l.dims, "groups": l.groups,
        "reason": l.reason.to_string(), "input_size": l.input_size, "size": l.size.as_str(),
        "default_input": l.size == SizeSource::Default, "cost": cost_json(l.cost),
        "macs": l.cost.map(|c| c.macs), "time_ms": ms(l.time),
    })
}

fn plan_json(p: &Plan) -> Value {
    let (macs, speedup) = match p.target {
        Target::MacReduction(x) => (Some(x), None),
        Target::TimeReduction(x) => (None, Some(x)),
        _ => (None, None),
    };
    json!({
        "target": macs.or(speedup), "target_mac_reduction": macs, "target_speedup": speedup,
        "met": p.met, "max_reduction": p.max_reduction, "max_speedup": p.max_speedup, "depth_weight": p.depth_weight,
        "reduction": p.reduction(), "macs_before": p.before.macs, "macs_after": p.after.macs,
        "speedup": p.speedup(), "time_before_ms": ms(Some(p.time_before)), "time_after_ms": ms(Some(p.time_after)),
        "layers": p.layers.iter().map(|l| json!({
            "name": l.name, "scheme": l.scheme.map(SchemeKind::name), "rank": l.rank,
            "layout": l.layout.map(|l| l.as_str()), "retained_energy": l.retained_energy, "score": l.score,
            "time_before_ms": ms(Some(l.time_before)), "time_after_ms": ms(Some(l.time_after)),
        })).collect::<Vec<_>>(),
    })
}
