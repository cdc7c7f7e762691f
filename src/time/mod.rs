//! Modeled run time: how long a runtime takes for a convolution, a `Concat` or an `Add`, and so
//! for a layer dense or factored in each [`Layout`](crate::convert::Layout).
//!
//! MACs are not milliseconds: onnxruntime runs a dense convolution at about 80 GMAC/s on one
//! core of the reference machine but a depthwise one on three channels at 2.8, and a depthwise
//! convolution of channel multiplier above 1 slower than the dense layer it replaces. A
//! [`TimeModel`] predicts each node's time from a table fitted to measurements of the runtime
//! (`bench/calibrate.py` sweeps a grid of shapes in onnxruntime, each node measured in context
//! between two dense convolutions, and fits it):
//!
//! `t = a + b·MACs + c·input elements + d·output elements` (nanoseconds, non-negative
//! coefficients), one `(a, b, c, d)` per convolution class ([`ConvClass`]) and per channel
//! alignment (both channel counts multiples of the runtime's block of channels, 16 for
//! onnxruntime with AVX-512: aligned convolutions keep the blocked layout), and
//! `t = a + b·output elements` for `Concat` and `Add`.
//!
//! The crate ships the table for onnxruntime on x86-64 ([`TimeModel::onnxruntime_x86_64`]);
//! [`TimeModel::from_json`] reads another (for another machine or thread count) written by the
//! same script. Accuracy against layers of real networks: BENCHMARKS.md.

mod layouts;

pub use self::layouts::{dense_nodes, layout_nodes, layouts_of};

use crate::error::{Error, Result};
use crate::weights::Geometry;
use std::time::Duration;

/// The table shipped for onnxruntime 1.32 on x86-64 (AVX-512), 1 and 2 threads.
const ONNXRUNTIME_X86_64: &str = include_str!("onnxruntime-x86_64.json");

/// What kind of kernel a convolution runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConvClass {
    /// One group, a kernel larger than 1x1.
    Dense,
    /// One group, a 1x1 kernel.
    Pointwise,
    /// `group` = input channels = output channels (channel multiplier 1).
    Depthwise,
    /// `group` = input channels, more output channels than input (multiplier above 1).
    DepthwiseMultiplier,
    /// Any other grouped convolution.
    Grouped,
}

impl ConvClass {
    /// Every class, in table order.
    pub const ALL: [ConvClass; 5] =
        [Self::Dense, Self::Pointwise, Self::Depthwise, Self::DepthwiseMultiplier, Self::Grouped];

    /// The class of a convolution with weight `dims = [N, C/g, kh, kw]` and `groups` groups.
    pub fn of(dims: [usize; 4], groups: usize) -> Self {
        let (n, c) = (dims[0], dims[1] * groups);
        match (groups, dims[2] * dims[3]) {
            (g, _) if g > 1 && g == c && n == c => Self::Depthwise,
            (g, _) if g > 1 && g == c => Self::DepthwiseMultiplier,
            (g, _) if g > 1 => Self::Grouped,
            (_, 1) => Self::Pointwise,
            _ => Self::Dense,
        }
    }

    /// The class's name in tables (`"dense"`, `"pointwise"`, `"depthwise"`,
    /// `"depthwise_multiplier"`, `"grouped"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Pointwise => "pointwise",
            Self::Depthwise => "depthwise",
            Self::DepthwiseMultiplier => "depthwise_multiplier",
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
        Ok(Self { dims, groups: geometry.groups, input, output })
    }

    /// Multiply–accumulates.
    pub fn macs(&self) -> f64 {
        let [n, cg, kh, kw] = self.dims.map(|d| d as f64);
        n * cg * kh * kw * (self.output.0 * self.output.1) as f64
    }

    fn in_channels(&self) -> usize {
        self.dims[1] * self.groups
    }

    fn features(&self) -> [f64; 4] {
        let area = |(h, w): (usize, usize)| (h * w) as f64;
        let input = self.in_channels() as f64 * area(self.input);
        [1.0, self.macs(), input, self.dims[0] as f64 * area(self.output)]
    }
}

/// A node of a layer's replacement, at its sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TimedNode {
    /// A convolution.
    Conv(ConvNode),
    /// A `Concat` (or `Split`: the same copy) writing `elements` values.
    Concat {
        /// Output elements.
        elements: u64,
    },
    /// An `Add` writing `elements` values.
    Add {
        /// Output elements.
        elements: u64,
    },
}

/// A linear layer `[out, in]` for one image, as the 1x1 convolution it is.
pub fn linear_node(out: usize, input: usize) -> TimedNode {
    TimedNode::Conv(ConvNode { dims: [out, input, 1, 1], groups: 1, input: (1, 1), output: (1, 1) })
}

/// A feature a table's coefficient multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    One,
    Macs,
    InElems,
    OutElems,
}

impl Feature {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "one" => Some(Self::One),
            "macs" => Some(Self::Macs),
            "in_elems" => Some(Self::InElems),
            "out_elems" => Some(Self::OutElems),
            _ => None,
        }
    }
    /// The feature's index in [`ConvNode::features`] (`Concat`/`Add` have one and out_elems).
    fn index(self) -> usize {
        self as usize
    }
}

/// `Σ coef·feature`, in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
struct Linear {
    terms: Vec<(Feature, f64)>,
}

impl Linear {
    fn eval(&self, features: &[f64; 4]) -> f64 {
        self.terms.iter().map(|&(f, c)| c * features[f.index()]).sum::<f64>().max(0.0)
    }
}

/// One conversion table entry: a class, the alignment it applies to (`None`: both), its fit.
#[derive(Debug, Clone, PartialEq)]
struct ConvEntry {
    class: ConvClass,
    aligned: Option<bool>,
    fit: Linear,
}

/// Predicted node times of one runtime, machine and thread count (see the [module](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeModel {
    name: String,
    runtime: String,
    threads: usize,
    block: usize,
    conv: Vec<ConvEntry>,
    concat: Linear,
    add: Linear,
}

mod table;

impl TimeModel {
    /// The shipped table: onnxruntime 1.32 on x86-64 with AVX-512, one intra-op thread
    /// (measured on the 2-core reference machine; BENCHMARKS.md).
    pub fn onnxruntime_x86_64() -> Self {
        Self::shipped(1).expect("the shipped time table parses (tested)")
    }

    /// The shipped table for `threads` intra-op threads: the table measured with the most
    /// threads not above `threads` (1 and 2 are shipped).
    ///
    /// # Errors
    /// [`Error::TimeTable`] when `threads` is 0.
    pub fn shipped(threads: usize) -> Result<Self> {
        Self::from_json("onnxruntime-x86_64", ONNXRUNTIME_X86_64, threads)
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

    /// `"<runtime>, <n> thread(s)"`, for reports.
    pub fn describe(&self) -> String {
        format!("{}, {} thread{}", self.runtime, self.threads, if self.threads == 1 { "" } else { "s" })
    }

    /// The intra-op thread count the table was measured with.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The predicted time of a convolution.
    pub fn conv(&self, node: &ConvNode) -> Duration {
        let class = ConvClass::of(node.dims, node.groups);
        let aligned = node.in_channels().is_multiple_of(self.block) && node.dims[0].is_multiple_of(self.block);
        let of_class = || self.conv.iter().filter(|e| e.class == class);
        let entry = of_class()
            .find(|e| e.aligned == Some(aligned))
            .or_else(|| of_class().find(|e| e.aligned.is_none()))
            .or_else(|| of_class().next())
            .expect("a table has an entry for every class (checked when read)");
        nanos(entry.fit.eval(&node.features()))
    }

    /// The predicted time of a node.
    pub fn node(&self, node: &TimedNode) -> Duration {
        let elementwise = |fit: &Linear, e: u64| nanos(fit.eval(&[1.0, 0.0, 0.0, e as f64]));
        match node {
            TimedNode::Conv(c) => self.conv(c),
            TimedNode::Concat { elements } => elementwise(&self.concat, *elements),
            TimedNode::Add { elements } => elementwise(&self.add, *elements),
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
