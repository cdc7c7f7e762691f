//! The nodes each scheme's factors become in each [`Layout`], at their sizes: what the ONNX
//! writer emits (`io::onnx::layout`), for the time model to add up.

use super::{ConvNode, TimedNode};
use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::scheme::SchemeKind;
use crate::weights::{ConvShape, Geometry};

/// How a factored convolution is laid out in a rewritten ONNX graph (a checkpoint stores the
/// factors' weights whatever the layout). Layouts of one scheme compute the same thing; they
/// differ in speed. By default each layer gets the layout its [time model](crate::time) says is
/// fastest ([`ConvertOptions::layout`](crate::convert::ConvertOptions::layout) forces one).
///
/// | scheme | layouts |
/// |---|---|
/// | DAC | [`Fused`](Self::Fused), [`Multiplier1`](Self::Multiplier1), [`Sum`](Self::Sum) |
/// | Network Decoupling | [`Multiplier1`](Self::Multiplier1) (its depthwise stage has multiplier 1; also used when `Fused` is forced), [`Sum`](Self::Sum) |
/// | spatial, channel SVD | one (a chain of dense convolutions) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// One depthwise `Conv` with `group = C` and `C·r` outputs (channel multiplier `r`), then
    /// the 1x1 `Conv`. Fewest nodes, but onnxruntime and tract have no fast kernel for a
    /// multiplier above 1.
    Fused,
    /// DAC: `r` depthwise `Conv`s of multiplier 1 per group (after a `Split` into groups when
    /// the layer is grouped) and a `Concat`, then the 1x1 `Conv` with its input channels
    /// permuted to the concatenated order. Network Decoupling: its three factors as they are
    /// (1x1 to `N·T`, depthwise of multiplier 1, grouped 1x1 summing each output's `T`).
    Multiplier1,
    /// No `Concat`: `r` branches, each a depthwise `Conv` of multiplier 1 on all `C` channels
    /// and its own 1x1 `Conv` to the `N` outputs, added (`Add` nodes; the first branch carries
    /// the bias). Network Decoupling's `T` branches are a 1x1 to `N` then a depthwise on `N`.
    /// onnxruntime keeps its blocked layout and fuses each `Add` into the `Conv` before it.
    Sum,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 3] = [Layout::Fused, Layout::Multiplier1, Layout::Sum];

    /// `"fused"`, `"multiplier1"` or `"sum"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Layout::Fused => "fused",
            Layout::Multiplier1 => "multiplier1",
            Layout::Sum => "sum",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fused" => Ok(Layout::Fused),
            "multiplier1" | "split" => Ok(Layout::Multiplier1),
            "sum" => Ok(Layout::Sum),
            other => Err(format!("unknown layout `{other}` (fused | multiplier1 | sum)")),
        }
    }
}

/// The layouts a scheme can be written in, the default first; empty for the schemes written as
/// one chain of dense convolutions (spatial and channel SVD).
pub fn layouts_of(scheme: SchemeKind) -> &'static [Layout] {
    match scheme {
        SchemeKind::Dac => &[Layout::Multiplier1, Layout::Sum, Layout::Fused],
        SchemeKind::Decoupled => &[Layout::Multiplier1, Layout::Sum],
        _ => &[],
    }
}

/// The layouts a factored layer of `scheme` may be written in: `forced` when the scheme has it,
/// the scheme's default when it has not, every layout of the scheme when nothing is forced (the
/// caller picks the fastest); empty for a scheme with one way of writing it.
pub fn layout_choices(scheme: SchemeKind, forced: Option<Layout>) -> Vec<Layout> {
    let layouts = layouts_of(scheme);
    match (forced, layouts.first()) {
        (_, None) => Vec::new(),
        (Some(l), Some(_)) if layouts.contains(&l) => vec![l],
        (Some(_), Some(&first)) => vec![first],
        (None, Some(_)) => layouts.to_vec(),
    }
}

/// The dense layer as one node.
///
/// # Errors
/// [`Error::EmptyOutput`](crate::Error::EmptyOutput) when the input is too small.
pub fn dense_nodes(
    layer: &str,
    shape: &ConvShape,
    geometry: &Geometry,
    input: (usize, usize),
) -> Result<Vec<TimedNode>> {
    let dims = [shape.out_channels, shape.in_per_group(), shape.kh, shape.kw];
    Ok(vec![TimedNode::Conv(ConvNode::new(layer, dims, geometry, input)?)])
}

/// The nodes replacing a layer factored by `scheme` at `rank` in `layout` (a layout the scheme
/// lacks is read as its first, [`layouts_of`]), on an `input` feature map.
///
/// # Errors
/// [`Error::EmptyOutput`](crate::Error::EmptyOutput) when the input is too small.
pub fn layout_nodes(
    layer: &str,
    scheme: SchemeKind,
    layout: Layout,
    shape: &ConvShape,
    geometry: &Geometry,
    rank: usize,
    input: (usize, usize),
) -> Result<Vec<TimedNode>> {
    let layout = if layouts_of(scheme).contains(&layout) { Some(layout) } else { layouts_of(scheme).first().copied() };
    let output = geometry.output_size(layer, (shape.kh, shape.kw), input)?;
    let at = |dims: [usize; 4], g: &Geometry, hw| ConvNode::new(layer, dims, g, hw).map(TimedNode::Conv);
    let elements = |channels: usize, (h, w): (usize, usize)| (channels * h * w) as u64;
    let (n, c, cg, k) = (shape.out_channels, shape.in_channels, shape.in_per_group(), (shape.kh, shape.kw));
    let pointwise = Geometry { groups: shape.groups, ..Geometry::default() };
    match (scheme, layout) {
        (SchemeKind::Dac, Some(Layout::Multiplier1)) => {
            let g = shape.groups;
            let depthwise = Geometry { groups: cg, ..*geometry };
            let mut nodes = Vec::new();
            if g > 1 {
                nodes.push(TimedNode::Concat { elements: elements(c, input), channels: cg });
            }
            for _ in 0..g * rank {
                nodes.push(at([cg, 1, k.0, k.1], &depthwise, input)?);
            }
            if g * rank > 1 {
                nodes.push(TimedNode::Concat { elements: elements(c * rank, output), channels: cg });
            }
            nodes.push(at([n, cg * rank, 1, 1], &pointwise, output)?);
            Ok(nodes)
        }
        (SchemeKind::Dac, Some(Layout::Sum)) => {
            let depthwise = Geometry { groups: c, ..*geometry };
            let branch = [at([c, 1, k.0, k.1], &depthwise, input)?, at([n, cg, 1, 1], &pointwise, output)?];
            Ok(branches(&branch, rank, TimedNode::Add { elements: elements(n, output), channels: n }))
        }
        (SchemeKind::Decoupled, Some(Layout::Sum)) => {
            let depthwise = Geometry { groups: n, ..*geometry };
            let branch = [at([n, cg, 1, 1], &pointwise, input)?, at([n, 1, k.0, k.1], &depthwise, input)?];
            Ok(branches(&branch, rank, TimedNode::Add { elements: elements(n, output), channels: n }))
        }
        _ => chain(layer, &scheme.factor_specs(shape, geometry, rank), input),
    }
}

/// The MACs and parameters of `nodes` (their convolutions' weights) plus `bias` values: a
/// layout's cost, which can differ from the scheme's chain (Network Decoupling's sum layout folds
/// its summing 1x1 into the depthwise weights).
///
/// # Errors
/// [`Error::Overflow`](crate::Error::Overflow) when a count does not fit in `u64`.
pub fn nodes_cost(layer: &str, nodes: &[TimedNode], bias: usize) -> Result<Cost> {
    let overflow = |what| Error::Overflow { layer: layer.to_string(), what, detail: format!("{} nodes", nodes.len()) };
    let mut total = Cost { macs: 0, params: bias as u64 };
    for n in nodes {
        if let TimedNode::Conv(c) = n {
            let weights = c.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).ok_or(overflow("weights"))?;
            let area = (c.output.0 as u64).checked_mul(c.output.1 as u64).ok_or(overflow("output size"))?;
            let macs = weights.checked_mul(area).ok_or(overflow("factor MACs"))?;
            total.macs = total.macs.checked_add(macs).ok_or(overflow("factor MACs"))?;
            total.params = total.params.checked_add(weights).ok_or(overflow("factor parameters"))?;
        }
    }
    Ok(total)
}

/// `count` copies of `branch`, summed by `count - 1` `add`s.
fn branches(branch: &[TimedNode], count: usize, add: TimedNode) -> Vec<TimedNode> {
    let mut nodes = Vec::with_capacity(count * (branch.len() + 1));
    for i in 0..count {
        nodes.extend_from_slice(branch);
        if i > 0 {
            nodes.push(add);
        }
    }
    nodes
}

/// Factors run one after another, each on the previous one's output.
fn chain(layer: &str, specs: &[crate::scheme::FactorSpec], input: (usize, usize)) -> Result<Vec<TimedNode>> {
    let mut hw = input;
    let mut nodes = Vec::with_capacity(specs.len());
    for f in specs {
        let node = ConvNode::new(layer, f.dims, &f.geometry, hw)?;
        hw = node.output;
        nodes.push(TimedNode::Conv(node));
    }
    Ok(nodes)
}
