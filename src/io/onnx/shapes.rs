//! Convolution and pooling attributes, and spatial-size inference over the graph.

use super::proto::{Node, PResult, Problem};
use crate::weights::{Geometry, Padding};
use std::collections::HashMap;

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

/// The 2-D spatial attributes of a `Conv` or pooling node, validated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub group: usize,
    pub kernel_shape: Option<(usize, usize)>,
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    pub pads: Padding,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

fn positive(v: i64, loc: &str, what: &str) -> PResult<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&x| x >= 1)
        .ok_or_else(|| Problem::new(loc, format!("{what} value {v} must be at least 1")))
}

fn pair(node: &Node<'_>, name: &str, loc: &str) -> PResult<Option<(usize, usize)>> {
    match node.attr(name) {
        None => Ok(None),
        Some(a) if a.ints.len() == 2 => Ok(Some((positive(a.ints[0], loc, name)?, positive(a.ints[1], loc, name)?))),
        Some(a) => {
            Err(Problem::new(loc, format!("attribute `{name}` = {:?} must have 2 values for a 2-D window", a.ints)))
        }
    }
}

impl Window {
    /// Reads and validates the attributes of a 2-D `Conv` / pooling node.
    pub(crate) fn parse(node: &Node<'_>, loc: &str) -> PResult<Self> {
        let group = match node.attr("group").and_then(|a| a.i) {
            None => 1,
            Some(g) => positive(g, loc, "group")?,
        };
        let pads = match node.attr("pads") {
            None => Padding::default(),
            Some(a) if a.ints.len() == 4 => {
                let p: Vec<usize> = a
                    .ints
                    .iter()
                    .map(|&v| usize::try_from(v).map_err(|_| Problem::new(loc, format!("pads value {v} is negative"))))
                    .collect::<PResult<_>>()?;
                // ONNX order: [top, left, bottom, right].
                Padding { top: p[0], left: p[1], bottom: p[2], right: p[3] }
            }
            Some(a) => return Err(Problem::new(loc, format!("attribute `pads` = {:?} must have 4 values", a.ints))),
        };
        let auto_pad = match node.attr("auto_pad").and_then(|a| a.s) {
            None | Some(b"NOTSET") | Some(b"") => AutoPad::NotSet,
            Some(b"VALID") => AutoPad::Valid,
            Some(b"SAME_UPPER") => AutoPad::SameUpper,
            Some(b"SAME_LOWER") => AutoPad::SameLower,
            Some(other) => {
                return Err(Problem::new(loc, format!("auto_pad `{}` is not valid", String::from_utf8_lossy(other))))
            }
        };
        Ok(Self {
            group,
            kernel_shape: pair(node, "kernel_shape", loc)?,
            strides: pair(node, "strides", loc)?.unwrap_or((1, 1)),
            dilations: pair(node, "dilations", loc)?.unwrap_or((1, 1)),
            pads,
            auto_pad,
            ceil_mode: node.attr("ceil_mode").and_then(|a| a.i).unwrap_or(0) != 0,
        })
    }

    /// The explicit padding for a `kernel` on an input of `hw` (auto_pad resolved).
    pub(crate) fn padding(&self, kernel: (usize, usize), hw: Option<(usize, usize)>) -> Padding {
        let same = |input: usize, k: usize, s: usize, d: usize, upper: bool| -> (usize, usize) {
            let out = input.div_ceil(s);
            let eff = (k - 1) * d + 1;
            let total = ((out.saturating_sub(1)) * s + eff).saturating_sub(input);
            let small = total / 2;
            if upper {
                (small, total - small)
            } else {
                (total - small, small)
            }
        };
        match (self.auto_pad, hw) {
            (AutoPad::NotSet, _) => self.pads,
            (AutoPad::Valid, _) | (_, None) => Padding::default(),
            (a, Some((h, w))) => {
                let upper = a == AutoPad::SameUpper;
                let (top, bottom) = same(h, kernel.0, self.strides.0, self.dilations.0, upper);
                let (left, right) = same(w, kernel.1, self.strides.1, self.dilations.1, upper);
                Padding { top, bottom, left, right }
            }
        }
    }

    /// The geometry for the core (explicit padding for this input size).
    pub(crate) fn geometry(&self, kernel: (usize, usize), hw: Option<(usize, usize)>) -> Geometry {
        Geometry {
            stride: self.strides,
            dilation: self.dilations,
            padding: self.padding(kernel, hw),
            groups: self.group,
        }
    }

    /// Output size on an `hw` input, `None` when it would be empty.
    pub(crate) fn output(&self, kernel: (usize, usize), hw: (usize, usize)) -> Option<(usize, usize)> {
        let p = self.padding(kernel, Some(hw));
        let one = |input: usize, lo: usize, hi: usize, k: usize, s: usize, d: usize| -> Option<usize> {
            let eff = k.checked_sub(1)?.checked_mul(d)?.checked_add(1)?;
            let padded = input.checked_add(lo)?.checked_add(hi)?;
            let span = padded.checked_sub(eff)?;
            Some(if self.ceil_mode { span.div_ceil(s) } else { span / s } + 1)
        };
        Some((
            one(hw.0, p.top, p.bottom, kernel.0, self.strides.0, self.dilations.0)?,
            one(hw.1, p.left, p.right, kernel.1, self.strides.1, self.dilations.1)?,
        ))
    }
}

/// Operators whose output has the spatial size of their first sized input.
const SAME_SIZE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Clip",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Mish",
    "Gelu",
    "Erf",
    "Exp",
    "Log",
    "Sqrt",
    "Abs",
    "Neg",
    "Reciprocal",
    "Cast",
    "Identity",
    "Dropout",
    "BatchNormalization",
    "InstanceNormalization",
    "LRN",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Where",
];

/// Infers the spatial `(height, width)` of tensors from the graph inputs' sizes, walking nodes
/// in order. `weight_kernel` gives a Conv's kernel size from its weight initializer.
pub(crate) fn infer<'a>(
    nodes: &[(usize, Node<'a>)],
    inputs: &[(String, (usize, usize))],
    weight_kernel: &dyn Fn(&Node<'a>) -> Option<(usize, usize)>,
) -> HashMap<String, (usize, usize)> {
    let mut sizes: HashMap<String, (usize, usize)> = inputs.iter().cloned().collect();
    for (_, node) in nodes {
        let first = node.inputs.first().and_then(|i| sizes.get(*i)).copied();
        let out = if node.domain.is_empty() || node.domain == "ai.onnx" {
            match node.op_type {
                "Conv" | "MaxPool" | "AveragePool" | "LpPool" => (|| {
                    let w = Window::parse(node, "").ok()?;
                    let k =
                        if node.op_type == "Conv" { weight_kernel(node).or(w.kernel_shape)? } else { w.kernel_shape? };
                    w.output(k, first?)
                })(),
                "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => first.map(|_| (1, 1)),
                "Concat" => match node.attr("axis").and_then(|a| a.i) {
                    Some(1) | Some(-3) => node.inputs.iter().find_map(|i| sizes.get(*i)).copied(),
                    _ => None,
                },
                op if SAME_SIZE.contains(&op) => node.inputs.iter().find_map(|i| sizes.get(*i)).copied(),
                _ => None,
            }
        } else {
            None
        };
        if let (Some(hw), Some(o)) = (out, node.outputs.first()) {
            sizes.insert(o.to_string(), hw);
        }
    }
    sizes
}
