//! Convolution and pooling attributes, and the arithmetic of one window axis.

use super::proto::{Node, PResult, Problem};
use crate::weights::{Geometry, Padding};

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
        let int = |name: &str| match node.attr(name) {
            None => Ok(None),
            Some(a) => a.i.map(Some).ok_or_else(|| Problem::new(loc, format!("attribute `{name}` is not an INT"))),
        };
        let group = match int("group")? {
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
        let auto_pad = match node.attr("auto_pad").map(|a| a.s) {
            Some(None) => return Err(Problem::new(loc, "attribute `auto_pad` is not a STRING")),
            None | Some(Some(b"NOTSET")) | Some(Some(b"")) => AutoPad::NotSet,
            Some(Some(b"VALID")) => AutoPad::Valid,
            Some(Some(b"SAME_UPPER")) => AutoPad::SameUpper,
            Some(Some(b"SAME_LOWER")) => AutoPad::SameLower,
            Some(Some(other)) => {
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
            ceil_mode: int("ceil_mode")?.unwrap_or(0) != 0,
        })
    }

    /// The explicit padding for a `kernel` on an input of `hw` (auto_pad resolved).
    pub(crate) fn padding(&self, kernel: (usize, usize), hw: Option<(usize, usize)>) -> Padding {
        match (self.auto_pad, hw) {
            (AutoPad::NotSet, _) => self.pads,
            (AutoPad::Valid, _) | (_, None) => Padding::default(),
            (a, Some((h, w))) => {
                let upper = a == AutoPad::SameUpper;
                let (top, bottom) = same_padding(h, kernel.0, self.strides.0, self.dilations.0, upper);
                let (left, right) = same_padding(w, kernel.1, self.strides.1, self.dilations.1, upper);
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
        let (s, d, c) = (self.strides, self.dilations, self.ceil_mode);
        Some((
            axis_output(hw.0, kernel.0, s.0, d.0, (p.top, p.bottom), c)?,
            axis_output(hw.1, kernel.1, s.1, d.1, (p.left, p.right), c)?,
        ))
    }
}

/// `SAME_UPPER` / `SAME_LOWER` padding `(before, after)` of one axis: the output is
/// `ceil(input / stride)`, the odd pixel after (upper) or before (lower).
pub(crate) fn same_padding(input: usize, k: usize, s: usize, d: usize, upper: bool) -> (usize, usize) {
    let out = input.div_ceil(s.max(1));
    let eff = k.saturating_sub(1).saturating_mul(d).saturating_add(1);
    let total = (out.saturating_sub(1)).saturating_mul(s).saturating_add(eff).saturating_sub(input);
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

/// The output length of one window axis (`pads` before and after), `None` when empty. With
/// `ceil`, a last window that would start in the padding after the input is dropped (as
/// PyTorch and onnxruntime do).
pub(crate) fn axis_output(
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pads: (usize, usize),
    ceil: bool,
) -> Option<usize> {
    let eff = k.checked_sub(1)?.checked_mul(d)?.checked_add(1)?;
    let padded = input.checked_add(pads.0)?.checked_add(pads.1)?;
    let span = padded.checked_sub(eff)?;
    if s == 0 {
        return None;
    }
    if !ceil {
        return Some(span / s + 1);
    }
    let out = span.div_ceil(s) + 1;
    let last_start = (out - 1).checked_mul(s)?;
    Some(if last_start >= input.checked_add(pads.0)? { out - 1 } else { out })
}
