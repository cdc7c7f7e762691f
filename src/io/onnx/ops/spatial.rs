//! Shape rules of the operators on images: convolutions, pools, padding, resizing and the
//! depth/space rearrangements.

use super::super::infer::{axis, Ctx, Fact, Stop};
use super::super::shapes::{axis_output, same_padding};
use super::Out;

/// Strides, dilations and explicit pads of an N-d window, `auto_pad` resolved for `spatial`.
fn window(c: &Ctx<'_, '_>, spatial: &[usize], kernel: &[usize]) -> Result<Vec<usize>, Stop> {
    let n = spatial.len();
    let list = |name: &str, default: usize, len: usize| -> Result<Vec<usize>, Stop> {
        match c.ints(name) {
            None => Ok(vec![default; len]),
            Some(v) if v.len() == len && v.iter().all(|&x| x >= 0) => Ok(v.iter().map(|&x| x as usize).collect()),
            Some(v) => Err(Stop::Reason(format!("attribute `{name}` = {v:?} must have {len} non-negative values"))),
        }
    };
    let (strides, dilations, pads) = (list("strides", 1, n)?, list("dilations", 1, n)?, list("pads", 0, 2 * n)?);
    let auto = c.node.attr("auto_pad").and_then(|a| a.s).unwrap_or(b"NOTSET");
    let ceil = c.int("ceil_mode", 0) != 0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (s, d) = (strides[i], dilations[i]);
        let p = match auto {
            b"SAME_UPPER" | b"SAME_LOWER" => same_padding(spatial[i], kernel[i], s, d, auto == b"SAME_UPPER"),
            b"VALID" => (0, 0),
            _ => (pads[i], pads[i + n]),
        };
        let o = axis_output(spatial[i], kernel[i], s, d, p, ceil)
            .ok_or_else(|| Stop::Reason(format!("axis {i} of size {} is too small for the window", spatial[i])))?;
        out.push(o);
    }
    Ok(out)
}

/// `[N, C, spatial...]` with at least one spatial axis.
fn image(f: &Fact) -> Result<(&[usize], &[usize]), Stop> {
    if f.shape.len() < 3 {
        return Err(Stop::Reason(format!("input of rank {} needs [N, C, spatial...]", f.shape.len())));
    }
    Ok(f.shape.split_at(2))
}

pub(super) fn conv(c: &Ctx<'_, '_>) -> Out {
    conv_of(c, 0, 1)
}

/// `QLinearConv`: a `Conv` whose input is input 0 and whose weight is input 3 (each followed
/// by its scale and zero point).
pub(super) fn qlinear_conv(c: &Ctx<'_, '_>) -> Out {
    conv_of(c, 0, 3)
}

/// A convolution's output from its input `x` and weight `w` (input indices).
fn conv_of(c: &Ctx<'_, '_>, x: usize, w: usize) -> Out {
    let (x, w) = (c.input(x)?, c.input(w)?);
    let (nc, spatial) = image(x)?;
    if w.shape.len() != x.shape.len() {
        return Err(Stop::Reason(format!("weight of shape {:?} does not fit input {:?}", w.shape, x.shape)));
    }
    let group = c.int("group", 1).max(1) as usize;
    if w.shape[1].checked_mul(group) != Some(nc[1]) {
        let reason = format!("weight of shape {:?} with group {group} does not fit input {:?}", w.shape, x.shape);
        return Err(Stop::Reason(reason));
    }
    let out = window(c, spatial, &w.shape[2..])?;
    Ok(vec![Fact::shaped([&[nc[0], w.shape[0]][..], &out].concat())])
}

pub(super) fn conv_transpose(c: &Ctx<'_, '_>) -> Out {
    let (x, w) = (c.input(0)?, c.input(1)?);
    let (nc, spatial) = image(x)?;
    let n = spatial.len();
    if w.shape.len() != x.shape.len() {
        return Err(Stop::Reason(format!("weight of shape {:?} does not fit input {:?}", w.shape, x.shape)));
    }
    let channels = w.shape[1].saturating_mul(c.int("group", 1).max(1) as usize);
    if let Some(os) = c.ints("output_shape") {
        let os: Vec<usize> = os.iter().rev().take(n).rev().map(|&v| v.max(0) as usize).collect();
        return Ok(vec![Fact::shaped([&[nc[0], channels][..], &os].concat())]);
    }
    let get = |name: &str, d: i64, len: usize| c.ints(name).filter(|v| v.len() == len).unwrap_or(vec![d; len]);
    let (s, d, p, op) =
        (get("strides", 1, n), get("dilations", 1, n), get("pads", 0, 2 * n), get("output_padding", 0, n));
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (k, x) = (w.shape[2 + i] as i128, spatial[i] as i128);
        let v = i128::from(s[i]) * (x - 1) + i128::from(op[i]) + (k - 1) * i128::from(d[i]) + 1
            - i128::from(p[i])
            - i128::from(p[i + n]);
        out.push(usize::try_from(v).map_err(|_| Stop::Reason(format!("output axis {i} would be {v}")))?);
    }
    Ok(vec![Fact::shaped([&[nc[0], channels][..], &out].concat())])
}

pub(super) fn pool(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let (nc, spatial) = image(x)?;
    let kernel: Vec<usize> = c
        .ints("kernel_shape")
        .filter(|k| k.len() == spatial.len() && k.iter().all(|&v| v > 0))
        .ok_or_else(|| Stop::Reason("needs a `kernel_shape` with one positive value per spatial axis".into()))?
        .iter()
        .map(|&v| v as usize)
        .collect();
    let out = Fact::shaped([nc, &window(c, spatial, &kernel)?].concat());
    Ok(vec![out.clone(), out])
}

pub(super) fn global_pool(c: &Ctx<'_, '_>) -> Out {
    let (nc, spatial) = image(c.input(0)?)?;
    Ok(vec![Fact::shaped([nc, &vec![1; spatial.len()]].concat())])
}

pub(super) fn pad(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let rank = x.shape.len();
    let pads = if c.opset < 11 { c.ints("pads") } else { c.ints_input(1)? }
        .ok_or_else(|| Stop::Reason("has no pads".into()))?;
    let axes: Vec<usize> = match c.ints_input(3)? {
        Some(a) => a.iter().map(|&v| axis(v, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(Stop::Reason(format!("pads {pads:?} need {} values", 2 * axes.len())));
    }
    let mut shape = x.shape.clone();
    for (j, &a) in axes.iter().enumerate() {
        let v = shape[a] as i128 + i128::from(pads[j]) + i128::from(pads[j + axes.len()]);
        shape[a] = usize::try_from(v).map_err(|_| Stop::Reason(format!("axis {a} would have size {v}")))?;
    }
    Ok(vec![Fact::shaped(shape)])
}

pub(super) fn resize(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let rank = x.shape.len();
    let upsample = c.node.op_type == "Upsample";
    let (scales, sizes) = match (upsample, c.opset) {
        (true, v) if v < 9 => (c.node.attr("scales").map(|a| a.floats.iter().map(|&f| f64::from(f)).collect()), None),
        (true, _) => (c.floats_input(1)?, None),
        (false, v) if v < 11 => (c.floats_input(1)?, None),
        (false, _) => (c.floats_input(2)?, c.ints_input(3)?),
    };
    // Opset 18's `axes`: the scales or sizes given are those of these axes only.
    let axes: Vec<usize> = match c.ints("axes") {
        Some(a) => a.iter().map(|&v| axis(v, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let mut shape = x.shape.clone();
    match (sizes.filter(|s| !s.is_empty()), scales.filter(|s| !s.is_empty())) {
        (Some(s), _) if s.len() == axes.len() => {
            for (&a, &v) in axes.iter().zip(&s) {
                shape[a] = v.max(0) as usize;
            }
        }
        (_, Some(s)) if s.len() == axes.len() => {
            for (&a, &f) in axes.iter().zip(&s) {
                shape[a] = (x.shape[a] as f64 * f).floor().max(0.0) as usize;
            }
        }
        _ => return Err(Stop::Reason(format!("needs scales or sizes for each of its {} axes", axes.len()))),
    }
    Ok(vec![Fact::shaped(shape)])
}

pub(super) fn depth_to_space(c: &Ctx<'_, '_>) -> Out {
    rearrange(c, true)
}

pub(super) fn space_to_depth(c: &Ctx<'_, '_>) -> Out {
    rearrange(c, false)
}

fn rearrange(c: &Ctx<'_, '_>, to_space: bool) -> Out {
    let x = c.input(0)?;
    let b = c.int("blocksize", 0);
    if x.shape.len() != 4 || b < 1 {
        return Err(Stop::Reason(format!("needs a 4-D input and a blocksize, got {:?} and {b}", x.shape)));
    }
    let (b, s) = (b as usize, &x.shape);
    let bb = b.saturating_mul(b);
    let shape = if to_space {
        vec![s[0], s[1] / bb, s[2].saturating_mul(b), s[3].saturating_mul(b)]
    } else {
        vec![s[0], s[1].saturating_mul(bb), s[2] / b, s[3] / b]
    };
    Ok(vec![Fact::shaped(shape)])
}

/// `GridSample`: `[N, C]` of the input, the output positions of the grid `[N, H_out, W_out, 2]`
/// (or `[N, D, H, W, 3]`).
pub(super) fn grid_sample(c: &Ctx<'_, '_>) -> Out {
    let (nc, _) = image(c.input(0)?)?;
    let grid = &c.input(1)?.shape;
    match grid.split_last() {
        Some((_, [_, positions @ ..])) if !positions.is_empty() => Ok(vec![Fact::shaped([nc, positions].concat())]),
        _ => Err(Stop::Reason(format!("grid of shape {grid:?} is not [N, ..., coordinates]"))),
    }
}
