//! Modeled run time: how long a runtime takes for a convolution, a `Concat` or an `Add`, and so
//! for a layer dense or factored in each [`Layout`].
//!
//! MACs are not milliseconds: onnxruntime runs a dense convolution at about 80 GMAC/s on one
//! core of the reference machine but a depthwise one on three channels at 2.8, and a depthwise
//! convolution of channel multiplier above 1 slower than the dense layer it replaces. A
//! [`TimeModel`] predicts each node's time from a table fitted to measurements of the runtime
//! (`bench/calibrate.py` sweeps a grid of shapes in onnxruntime, each node measured in context
//! between two dense convolutions, and fits it):
//!
//! `t = a + b·x₁ + c·x₂ + ...` (nanoseconds, non-negative coefficients) over features of the node
//! (MACs, MACs with channels padded to the runtime's block, MACs of a strided convolution, input
//! and output elements), one fit per convolution class ([`ConvClass`]: the kernel onnxruntime
//! picks) and per channel alignment (both channel counts multiples of the block of channels,
//! 16 for onnxruntime with AVX-512), and `t = a + b·output elements` for `Concat` and `Add`
//! (aligned when the pieces' channel counts are multiples of the block). The nodes around the
//! convolutions that onnxruntime runs as kernels of their own ([`ElementOp`]: Swish,
//! per-channel scales, pooling, and the reorders between its blocked and plain layouts) are
//! fitted on their element counts by `bench/calibrate_elementwise.py`, per alignment; an
//! activation onnxruntime fuses into the kernel before it ([`Activation`]) is that kernel's pass
//! over its output, fitted on the output elements by `bench/calibrate_activation.py`. Products
//! of one row (a linear layer at batch 1, `gemv`) and blocked 1x1 convolutions at one output
//! position (a squeeze-and-excitation block's, `conv_one_position`) read each weight once, in a
//! network from memory: their entries are measured with the caches flushed
//! (`bench/calibrate_matmul.py`, `bench/calibrate_one_position.py`).
//!
//! The crate ships tables for onnxruntime on x86-64 with AVX-512, measured on an AMD EPYC of
//! family 25 (the reference, [`TimeModel::onnxruntime_x86_64`]), on one of family 26 and on an
//! Intel Xeon, and by default uses the one measured on a CPU of this machine's kind, else the
//! reference ([`TimeModel::shipped`]);
//! [`TimeModel::from_json`] reads another (for another machine or thread count) written by the
//! same script. Accuracy against layers of real networks: BENCHMARKS.md.

mod layouts;
mod machine;

pub use self::layouts::{dense_nodes, layout_choices, layout_nodes, layouts_of, nodes_cost, Layout};
pub use self::machine::Cpu;

use crate::error::{Error, Result};
use crate::weights::Geometry;
use std::time::Duration;

/// Weight elements a node timed alone keeps in cache between runs (16 MiB of f32, half the
/// reference machine's 32 MiB L3); beyond it, weights stream from memory (`weights_over_cache`).
/// The shipped table's products are measured with the caches flushed before every run, as a
/// network's other layers flush them, so their `weights` term already reads from memory.
pub const CACHED_WEIGHTS: f64 = (1u64 << 22) as f64;

/// Elements of one activation tensor (4 MiB of f32) beyond which a node's reads and writes of it
/// stop being served from cache when the node runs among the other nodes of a factored layout
/// (`tensor_elems_over_cache`: each of a node's input and output tensors counts its elements
/// beyond this). Measured on whole layouts by `bench/layout_probe.py`.
pub const CACHED_TENSOR: f64 = (1u64 << 20) as f64;

/// The tables shipped for onnxruntime 1.32 on x86-64 with AVX-512, by the machine they were
/// measured on: the reference machine (an AMD EPYC of family 25, Zen 4; 1 and 2 threads) first,
/// then an AMD EPYC of family 26 (Zen 5; 1 thread, the reference's fits rescaled to its
/// calibration by `bench/rescale_table.py`, plus the large-tensor term fitted on whole layouts by
/// `bench/fit_tensor_term.py`) and an Intel Xeon (1 and 2 threads).
const SHIPPED: [(&str, &str); 3] = [
    ("onnxruntime-x86_64", include_str!("onnxruntime-x86_64.json")),
    ("onnxruntime-x86_64-amd-zen5", include_str!("onnxruntime-x86_64-amd-zen5.json")),
    ("onnxruntime-x86_64-intel-xeon", include_str!("onnxruntime-x86_64-intel-xeon.json")),
];

/// What kind of kernel a convolution runs with: onnxruntime's choice (its NCHWc transformer),
/// which decides its speed more than its MACs do.
///
/// With channel blocks of `b` (16 with AVX-512, 8 with AVX2): one group, or groups holding
/// whole blocks of input and output channels, runs blocked (`Dense`, `Pointwise`; channel counts
/// padded up to the block) unless it has fewer than `b` input channels (`*SmallInput`, read as
/// plain NCHW) or a count not a multiple of 4 (`*Nchw`, left in NCHW with layout conversions
/// around it). A depthwise convolution runs blocked when its channels are a multiple of 4
/// (`Depthwise`), else `DepthwiseNchw`; a channel multiplier above 1 and any other grouped
/// convolution run in NCHW, one group at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConvClass {
    /// Blocked, a kernel larger than 1x1.
    Dense,
    /// Blocked, 1x1.
    Pointwise,
    /// One group, fewer input channels than a block, larger than 1x1.
    DenseSmallInput,
    /// One group, fewer input channels than a block, 1x1.
    PointwiseSmallInput,
    /// One group, input channels not a multiple of 4, larger than 1x1.
    DenseNchw,
    /// One group, input channels not a multiple of 4, 1x1.
    PointwiseNchw,
    /// `group` = input = output channels, a multiple of 4.
    Depthwise,
    /// `group` = input = output channels, not a multiple of 4.
    DepthwiseNchw,
    /// `group` = input channels, more output channels than input (multiplier above 1).
    DepthwiseMultiplier,
    /// Another grouped convolution, 1x1.
    GroupedPointwise,
    /// Another grouped convolution, larger than 1x1.
    Grouped,
}

impl ConvClass {
    /// Every class, in table order.
    pub const ALL: [ConvClass; 11] = [
        Self::Dense,
        Self::Pointwise,
        Self::DenseSmallInput,
        Self::PointwiseSmallInput,
        Self::DenseNchw,
        Self::PointwiseNchw,
        Self::Depthwise,
        Self::DepthwiseNchw,
        Self::DepthwiseMultiplier,
        Self::GroupedPointwise,
        Self::Grouped,
    ];

    /// The class of a convolution with weight `dims = [N, C/g, kh, kw]` and `groups` groups,
    /// for channel blocks of `block`.
    pub fn of(dims: [usize; 4], groups: usize, block: usize) -> Self {
        let (n, cg, pointwise) = (dims[0], dims[1], dims[2] * dims[3] == 1);
        let c = cg * groups;
        let pick = |one, many| if pointwise { one } else { many };
        if groups > 1 && groups == c {
            return match (n == c, c % 4) {
                (true, 0) => Self::Depthwise,
                (true, _) => Self::DepthwiseNchw,
                (false, _) => Self::DepthwiseMultiplier,
            };
        }
        let blocked_groups = cg.is_multiple_of(block) && (n / groups).is_multiple_of(block);
        match (groups, c) {
            (1, c) if c < block => pick(Self::PointwiseSmallInput, Self::DenseSmallInput),
            (1, c) if c % 4 != 0 => pick(Self::PointwiseNchw, Self::DenseNchw),
            (1, _) => pick(Self::Pointwise, Self::Dense),
            _ if blocked_groups => pick(Self::Pointwise, Self::Dense),
            _ => pick(Self::GroupedPointwise, Self::Grouped),
        }
    }

    /// The class's name in tables (`"dense"`, `"pointwise"`, `"dense_small_cin"`,
    /// `"pointwise_small_cin"`, `"dense_nchw"`, `"pointwise_nchw"`, `"depthwise"`,
    /// `"depthwise_nchw"`, `"depthwise_multiplier"`, `"grouped_pointwise"`, `"grouped"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Pointwise => "pointwise",
            Self::DenseSmallInput => "dense_small_cin",
            Self::PointwiseSmallInput => "pointwise_small_cin",
            Self::DenseNchw => "dense_nchw",
            Self::PointwiseNchw => "pointwise_nchw",
            Self::Depthwise => "depthwise",
            Self::DepthwiseNchw => "depthwise_nchw",
            Self::DepthwiseMultiplier => "depthwise_multiplier",
            Self::GroupedPointwise => "grouped_pointwise",
            Self::Grouped => "grouped",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One convolution at its sizes, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvNode {
    /// The weight's dimensions `[N, C/g, kh, kw]`.
    pub dims: [usize; 4],
    /// Channel groups.
    pub groups: usize,
    /// Step between output positions, `(h, w)`.
    pub stride: (usize, usize),
    /// Input `(height, width)`.
    pub input: (usize, usize),
    /// Output `(height, width)`.
    pub output: (usize, usize),
}

impl ConvNode {
    /// The convolution of weight `dims` with `geometry` on an `input` feature map.
    ///
    /// # Errors
    /// [`Error::EmptyOutput`] when the input is too small for the kernel.
    pub fn new(layer: &str, dims: [usize; 4], geometry: &Geometry, input: (usize, usize)) -> Result<Self> {
        let output = geometry.output_size(layer, (dims[2], dims[3]), input)?;
        Ok(Self { dims, groups: geometry.groups, stride: geometry.stride, input, output })
    }

    /// Multiply–accumulates.
    pub fn macs(&self) -> f64 {
        let [n, cg, kh, kw] = self.dims.map(|d| d as f64);
        n * cg * kh * kw * (self.output.0 * self.output.1) as f64
    }

    fn in_channels(&self) -> usize {
        self.dims[1] * self.groups
    }

    /// The features a table's coefficients multiply, in [`Feature`] order.
    fn features(&self, class: ConvClass, block: usize) -> [f64; FEATURES] {
        let area = |(h, w): (usize, usize)| (h * w) as f64;
        let up = |x: usize| x.div_ceil(block) * block;
        let (n, c, taps) = (self.dims[0], self.in_channels(), (self.dims[2] * self.dims[3]) as f64);
        let per_output = taps * area(self.output);
        let padded = match class {
            ConvClass::Dense | ConvClass::Pointwise if self.groups == 1 => {
                (up(n) * if c < block { c } else { up(c) }) as f64 * per_output
            }
            ConvClass::Dense | ConvClass::Pointwise | ConvClass::DenseSmallInput | ConvClass::PointwiseSmallInput => {
                (up(n) * self.dims[1]) as f64 * per_output
            }
            ConvClass::Depthwise => up(c) as f64 * per_output,
            _ => self.macs(),
        };
        let strided = if self.stride.0 > 1 || self.stride.1 > 1 { self.macs() } else { 0.0 };
        let weights = self.dims.iter().product::<usize>() as f64;
        let over = (weights - CACHED_WEIGHTS).max(0.0);
        let (input, output) = (c as f64 * area(self.input), n as f64 * area(self.output));
        let channel_rows = (up(n) * self.output.0) as f64;
        let group_taps = (self.groups * self.dims[2] * self.dims[3] * self.output.0) as f64;
        let tensors = tensors_over_cache(&[input, output]);
        [1.0, self.macs(), padded, strided, input, output, weights, over, tensors, channel_rows, group_taps]
    }
}

/// A node of a layer's replacement, at its sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TimedNode {
    /// A convolution.
    Conv(ConvNode),
    /// A `Concat` (or `Split`: the same copy) writing `elements` values; its pieces' channel
    /// counts are multiples of `channels` (their greatest common divisor).
    Concat {
        /// Output elements.
        elements: u64,
        /// A divisor of every piece's channel count.
        channels: usize,
    },
    /// An `Add` writing `elements` values of `channels` channels.
    Add {
        /// Output elements.
        elements: u64,
        /// Channels.
        channels: usize,
    },
    /// An operator that streams through its values once (an activation, a scale, a pooling),
    /// timed by its element counts.
    Elements {
        /// Which operator.
        op: ElementOp,
        /// Channels (the fit differs off the runtime's channel block).
        channels: usize,
        /// Input elements (of the larger input).
        input: u64,
        /// Output elements.
        output: u64,
        /// Values read per output value (a pooling window's size; 1 for the others).
        taps: u64,
    },
    /// A matrix product `[m, k] x [k, n]` with a constant right side (`Gemm`, `MatMul`, a
    /// linear layer), for one image.
    MatMul {
        /// Rows of the left side (1 for a linear layer on one image).
        m: usize,
        /// The shared dimension.
        k: usize,
        /// Columns of the right side.
        n: usize,
    },
}

/// Operators around the convolutions, as onnxruntime runs them; each has a table entry of that
/// name (`bench/calibrate_elementwise.py` measures them between two convolutions; the layout
/// reorders around a node are entries of their own, [`ElementOp::ReorderInput`] and
/// [`ElementOp::ReorderOutput`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ElementOp {
    /// `x·sigmoid(x)` (`Sigmoid` and `Mul`, which onnxruntime fuses into one `QuickGelu`):
    /// `"swish"`.
    Swish,
    /// A feature map times a per-channel `[1, C, 1, 1]` tensor (a squeeze-and-excitation
    /// block's `Mul`, which runs on plain NCHW tensors): `"scale"`.
    Scale,
    /// `GlobalAveragePool`, `GlobalMaxPool`, or a mean or max over the spatial axes:
    /// `"global_pool"`.
    GlobalPool,
    /// `MaxPool` or `AveragePool`: `"pool"`.
    Pool,
    /// onnxruntime's `ReorderInput`: a plain NCHW tensor copied into the blocked layout for a
    /// node that runs blocked: `"reorder_input"`.
    ReorderInput,
    /// onnxruntime's `ReorderOutput`: a blocked tensor copied back to plain NCHW (or NHWC, in
    /// place of a `Transpose`) for a node that reads it plain: `"reorder_output"`.
    ReorderOutput,
    /// An activation onnxruntime runs inside the kernel before it (a convolution's, an
    /// `Add`'s): its pass over that kernel's output, `"activation_<name>"`
    /// (`bench/calibrate_activation.py`).
    Activation(Activation),
}

/// An activation that onnxruntime fuses into the kernel before it. `Relu` is applied in the
/// kernel's registers and costs almost nothing; the others are a pass over the output after it
/// (in the zoo's mobile networks 15-45 % of a depthwise or expanding 1x1 convolution's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Activation {
    /// `Relu`: `"relu"`.
    Relu,
    /// `Clip` (ReLU6): `"clip"`.
    Clip,
    /// `LeakyRelu`: `"leaky_relu"`.
    LeakyRelu,
    /// `HardSigmoid`: `"hard_sigmoid"`.
    HardSigmoid,
    /// `x·hardsigmoid(x)` (`HardSigmoid` and `Mul` on a convolution's output): `"hard_swish"`.
    HardSwish,
    /// `Sigmoid`: `"sigmoid"`.
    Sigmoid,
    /// `Tanh`: `"tanh"`.
    Tanh,
}

impl ElementOp {
    /// Every operator, in table order.
    pub const ALL: [ElementOp; 13] = [
        Self::Swish,
        Self::Scale,
        Self::GlobalPool,
        Self::Pool,
        Self::ReorderInput,
        Self::ReorderOutput,
        Self::Activation(Activation::Relu),
        Self::Activation(Activation::Clip),
        Self::Activation(Activation::LeakyRelu),
        Self::Activation(Activation::HardSigmoid),
        Self::Activation(Activation::HardSwish),
        Self::Activation(Activation::Sigmoid),
        Self::Activation(Activation::Tanh),
    ];

    /// The operator's name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Swish => "swish",
            Self::Scale => "scale",
            Self::GlobalPool => "global_pool",
            Self::Pool => "pool",
            Self::ReorderInput => "reorder_input",
            Self::ReorderOutput => "reorder_output",
            Self::Activation(a) => match a {
                Activation::Relu => "activation_relu",
                Activation::Clip => "activation_clip",
                Activation::LeakyRelu => "activation_leaky_relu",
                Activation::HardSigmoid => "activation_hard_sigmoid",
                Activation::HardSwish => "activation_hard_swish",
                Activation::Sigmoid => "activation_sigmoid",
                Activation::Tanh => "activation_tanh",
            },
        }
    }
}

/// A linear layer `[out, in]` for one image.
pub fn linear_node(out: usize, input: usize) -> TimedNode {
    TimedNode::MatMul { m: 1, k: input, n: out }
}

/// A feature a table's coefficient multiplies (`macs_padded`: MACs with the channel counts a
/// blocked kernel computes, rounded up to the block; `macs_strided`: the MACs of a strided
/// convolution, 0 for stride 1; `weights`: weight elements; `weights_over_cache`: the weight
/// elements beyond [`CACHED_WEIGHTS`], which a product streams from memory on every run;
/// `tensor_elems_over_cache`: the elements of the node's input and output tensors beyond
/// [`CACHED_TENSOR`] each; `channel_rows`: output channels rounded up to the block, times output
/// rows, the rows a blocked depthwise kernel starts, each at a fixed cost that many channels on
/// a small map pay more of per element; `group_taps`: groups times kernel taps times output
/// rows, a fixed cost of each group's pass of each tap over a row in a grouped convolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    One,
    Macs,
    MacsPadded,
    MacsStrided,
    InElems,
    OutElems,
    Weights,
    WeightsOverCache,
    TensorsOverCache,
    ChannelRows,
    GroupTaps,
}

/// How many [`Feature`]s there are (the length of a node's feature vector).
const FEATURES: usize = 11;

/// The elements of `tensors` beyond [`CACHED_TENSOR`] each.
fn tensors_over_cache(tensors: &[f64]) -> f64 {
    tensors.iter().map(|&e| (e - CACHED_TENSOR).max(0.0)).sum()
}

impl Feature {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "one" => Some(Self::One),
            "macs" => Some(Self::Macs),
            "macs_padded" => Some(Self::MacsPadded),
            "macs_strided" => Some(Self::MacsStrided),
            "in_elems" => Some(Self::InElems),
            "out_elems" => Some(Self::OutElems),
            "weights" => Some(Self::Weights),
            "weights_over_cache" => Some(Self::WeightsOverCache),
            "tensor_elems_over_cache" => Some(Self::TensorsOverCache),
            "channel_rows" => Some(Self::ChannelRows),
            "group_taps" => Some(Self::GroupTaps),
            _ => None,
        }
    }
}

/// `Σ coef·feature`, in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
struct Linear {
    terms: Vec<(Feature, f64)>,
}

impl Linear {
    fn eval(&self, features: &[f64; FEATURES]) -> f64 {
        self.terms.iter().map(|&(f, c)| c * features[f as usize]).sum::<f64>().max(0.0)
    }
}

/// What a table entry times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Conv(ConvClass),
    Concat,
    Add,
    /// A product of one row (a linear layer at batch 1).
    Gemv,
    /// A blocked 1x1 convolution of one group at one output position (a squeeze-and-excitation
    /// block's), timed with its weights from memory.
    ConvOnePosition,
    /// A grouped convolution whose groups are whole channel blocks (run blocked, as its class
    /// `dense` or `pointwise` says, one group at a time).
    ConvGroupedBlocks,
    MatMul,
    Elements(ElementOp),
}

/// One table entry: an operator, the channel alignment it applies to (`None`: both), its fit.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    op: Op,
    aligned: Option<bool>,
    fit: Linear,
}

/// Predicted node times of one runtime, machine and thread count (see the [module](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeModel {
    name: String,
    runtime: String,
    /// The instruction set the table says it was measured with (`"isa"`), when it says.
    isa: Option<String>,
    /// The CPU model the table says it was measured on (`"cpu"`), when it says.
    cpu: Option<String>,
    /// The CPUID family number the table says it was measured on (`"cpu_family"`), when it says.
    cpu_family: Option<u32>,
    threads: usize,
    block: usize,
    entries: Vec<Entry>,
}

mod table;

impl TimeModel {
    /// The reference table: onnxruntime 1.32 on x86-64 with AVX-512, one intra-op thread,
    /// measured on the 2-core AMD EPYC reference machine (BENCHMARKS.md), whatever this CPU.
    /// Plans made with it are the same on every machine; [`for_this_cpu`](Self::for_this_cpu)
    /// is the default of the planner and the converter.
    pub fn onnxruntime_x86_64() -> Self {
        static ONE_THREAD: std::sync::OnceLock<TimeModel> = std::sync::OnceLock::new();
        let parse = || Self::from_json(SHIPPED[0].0, SHIPPED[0].1, 1).expect("the shipped time tables parse (tested)");
        ONE_THREAD.get_or_init(parse).clone()
    }

    /// The shipped table for this CPU, one intra-op thread ([`shipped`](Self::shipped) with 1):
    /// the default time model of [`PlanOptions`](crate::plan::PlanOptions) and
    /// [`ConvertOptions`](crate::ConvertOptions).
    pub fn for_this_cpu() -> Self {
        static ONE_THREAD: std::sync::OnceLock<TimeModel> = std::sync::OnceLock::new();
        ONE_THREAD.get_or_init(|| Self::shipped(1).expect("the shipped time tables parse (tested)")).clone()
    }

    /// The shipped table for this CPU ([`Cpu::this`]) and `threads` intra-op threads:
    /// [`shipped_for`](Self::shipped_for).
    ///
    /// # Errors
    /// [`Error::TimeTable`] when `threads` is 0.
    pub fn shipped(threads: usize) -> Result<Self> {
        Self::shipped_for(&Cpu::this(), threads)
    }

    /// The shipped table measured on a CPU of `cpu`'s kind (model name, instruction set and,
    /// where the table names one, family number: [`unlike`](Self::unlike)), else the reference
    /// table ([`onnxruntime_x86_64`](Self::onnxruntime_x86_64)'s); of it, the table measured
    /// with the most threads not above `threads` (1 and 2 are shipped). A table of `cpu`'s kind
    /// measured with fewer threads than the reference has for `threads` is passed over (the
    /// Zen 5 table has 1 thread only: with 2, the reference's 2-thread table is used).
    ///
    /// # Errors
    /// [`Error::TimeTable`] when `threads` is 0.
    pub fn shipped_for(cpu: &Cpu, threads: usize) -> Result<Self> {
        let mut tables = SHIPPED.iter().map(|(name, text)| Self::from_json(name, text, threads));
        let reference = tables.next().expect("SHIPPED is not empty")?;
        for t in tables {
            let t = t?;
            if t.unlike(cpu).is_none() && t.threads() >= reference.threads() {
                return Ok(t);
            }
        }
        Ok(reference)
    }

    /// Reads a table written by `bench/calibrate.py`, taking the table measured with the most
    /// threads not above `threads`. `name` names it in errors.
    ///
    /// # Errors
    /// [`Error::TimeTable`] naming what is wrong: not JSON, no table for the thread count, an
    /// unknown class or feature, a negative or non-finite coefficient, a class without an entry.
    pub fn from_json(name: &str, text: &str, threads: usize) -> Result<Self> {
        table::parse(name, text, threads)
    }

    /// The runtime the table was measured with, as the table says.
    pub fn runtime(&self) -> &str {
        &self.runtime
    }

    /// `"<runtime> (<cpu>, <isa>, family <n>), <n> thread(s)"`, for reports (without the CPU,
    /// the instruction set or the family where the table does not name them).
    pub fn describe(&self) -> String {
        let family = self.cpu_family.map(|f| format!("family {f}"));
        let named: Vec<&str> =
            [self.cpu.as_deref(), self.isa.as_deref(), family.as_deref()].into_iter().flatten().collect();
        let machine = if named.is_empty() { String::new() } else { format!(" ({})", named.join(", ")) };
        format!("{}{machine}, {} thread{}", self.runtime, self.threads, if self.threads == 1 { "" } else { "s" })
    }

    /// The instruction set the table was measured with, as it names it (`"avx512"`, `"avx2"`).
    pub fn isa(&self) -> Option<&str> {
        self.isa.as_deref()
    }

    /// The intra-op thread count the table was measured with.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The fit for `op` at this alignment: the entry of that alignment, else one for both,
    /// else any of the op (every op has one, checked when read).
    fn fit(&self, op: Op, aligned: bool) -> &Linear {
        let of_op = || self.entries.iter().filter(|e| e.op == op);
        let entry = of_op().find(|e| e.aligned == Some(aligned)).or_else(|| of_op().find(|e| e.aligned.is_none()));
        &entry.or_else(|| of_op().next()).expect("a table has an entry for every op (checked when read)").fit
    }

    /// The predicted time of a convolution: its class's entry, or the `conv_one_position`
    /// entry for a blocked 1x1 convolution of one group at one output position when the table
    /// has one (a matrix-vector product whose weights, in a network, come from memory; measured
    /// by `bench/calibrate_one_position.py`), or the `conv_grouped_blocks` entry for a grouped
    /// convolution whose groups are whole channel blocks when the table has one (a cost per
    /// group that single-group fits do not see; measured by `bench/calibrate_grouped.py`).
    pub fn conv(&self, node: &ConvNode) -> Duration {
        let class = ConvClass::of(node.dims, node.groups, self.block);
        let aligned = node.in_channels().is_multiple_of(self.block) && node.dims[0].is_multiple_of(self.block);
        let one_position = class == ConvClass::Pointwise && node.groups == 1 && node.output == (1, 1);
        let grouped_blocks = node.groups > 1 && matches!(class, ConvClass::Dense | ConvClass::Pointwise);
        let op = match (one_position, grouped_blocks) {
            (true, _) if self.has(Op::ConvOnePosition) => Op::ConvOnePosition,
            (_, true) if self.has(Op::ConvGroupedBlocks) => Op::ConvGroupedBlocks,
            _ => Op::Conv(class),
        };
        nanos(self.fit(op, aligned).eval(&node.features(class, self.block)))
    }

    /// Whether the table has an entry for `op`.
    fn has(&self, op: Op) -> bool {
        self.entries.iter().any(|e| e.op == op)
    }

    /// A matrix product: the table's `gemv` entry (one row) or `matmul` entry, or (a table
    /// without it) the 1x1 convolution of `k` channels to `n` on `m` positions.
    fn matmul(&self, m: usize, k: usize, n: usize) -> Duration {
        let op = if m == 1 { Op::Gemv } else { Op::MatMul };
        if !self.has(op) {
            let as_conv = ConvNode { dims: [n, k, 1, 1], groups: 1, stride: (1, 1), input: (m, 1), output: (m, 1) };
            return self.conv(&as_conv);
        }
        let (m, k, n) = (m as f64, k as f64, n as f64);
        let over = (k * n - CACHED_WEIGHTS).max(0.0);
        nanos(self.fit(op, true).eval(&[1.0, m * k * n, m * k * n, 0.0, m * k, m * n, k * n, over, 0.0, 0.0, 0.0]))
    }

    /// Whether the table times `op` (tables written before `bench/calibrate_elementwise.py`
    /// existed do not; a network's nodes of that operator are then outside the model).
    pub fn models(&self, op: ElementOp) -> bool {
        self.has(Op::Elements(op))
    }

    /// An [`ElementOp`] node: its table entry at its channels' alignment, zero without one.
    fn elements(&self, op: ElementOp, channels: usize, input: u64, output: u64, taps: u64) -> Duration {
        if !self.models(op) {
            return Duration::ZERO;
        }
        let (i, o) = (input as f64, output as f64);
        let fit = self.fit(Op::Elements(op), channels.is_multiple_of(self.block));
        nanos(fit.eval(&[1.0, o * taps as f64, 0.0, 0.0, i, o, 0.0, 0.0, 0.0, 0.0, 0.0]))
    }

    /// The class of a convolution under this table's channel block.
    pub fn class(&self, node: &ConvNode) -> ConvClass {
        ConvClass::of(node.dims, node.groups, self.block)
    }

    /// Channels per block of the runtime's blocked layout (16 for onnxruntime with AVX-512).
    pub fn block(&self) -> usize {
        self.block
    }

    /// The predicted time of a node; zero for an [`ElementOp`] the table does not time
    /// ([`TimeModel::models`]).
    pub fn node(&self, node: &TimedNode) -> Duration {
        let copy = |op, e: u64, c: usize| {
            let e = e as f64;
            let over = tensors_over_cache(&[e, e]);
            nanos(
                self.fit(op, c.is_multiple_of(self.block))
                    .eval(&[1.0, 0.0, 0.0, 0.0, 0.0, e, 0.0, 0.0, over, 0.0, 0.0]),
            )
        };
        match *node {
            TimedNode::Conv(ref c) => self.conv(c),
            TimedNode::Concat { elements, channels } => copy(Op::Concat, elements, channels),
            TimedNode::Add { elements, channels } => copy(Op::Add, elements, channels),
            TimedNode::MatMul { m, k, n } => self.matmul(m, k, n),
            TimedNode::Elements { op, channels, input, output, taps } => {
                self.elements(op, channels, input, output, taps)
            }
        }
    }

    /// The predicted time of nodes run one after another.
    pub fn nodes(&self, nodes: &[TimedNode]) -> Duration {
        nodes.iter().map(|n| self.node(n)).sum()
    }
}

fn nanos(ns: f64) -> Duration {
    Duration::from_nanos(ns.round().clamp(0.0, u64::MAX as f64) as u64)
}

fn table_error(table: &str, reason: impl Into<String>) -> Error {
    Error::TimeTable { table: table.to_string(), reason: reason.into() }
}
