//! Shape rules of the ONNX operators, one small function each, looked up by [`rule`].
//!
//! A rule reads its node's attributes and its inputs' [`Fact`]s and returns its outputs' facts
//! in order (fewer than the node has leaves the rest unknown), or a [`Stop`]. Rules follow the
//! ONNX operator specification, opset 7 to 21.

use super::infer::{axis, broadcast, numel, Ctx, Data, Fact, Stop, MAX_DATA};
use super::proto::{Node, Tensor};

mod contrib;
mod indexing;
mod spatial;
pub(crate) use self::contrib::is as is_contrib;
use self::indexing::{gather_elements, top_k};
use self::spatial::{
    conv, conv_transpose, depth_to_space, global_pool, grid_sample, pad, pool, qlinear_conv, resize, space_to_depth,
};

/// The opset assumed when a model imports none.
pub(crate) const DEFAULT_OPSET: i64 = 13;

pub(super) type Rule = fn(&Ctx<'_, '_>) -> Result<Vec<Fact>, Stop>;
pub(super) type Out = Result<Vec<Fact>, Stop>;

/// The rule of a node's operator (the default domain, and the `com.microsoft` operators of
/// [`contrib`]).
pub(crate) fn rule(node: &Node<'_>) -> Option<Rule> {
    if node.domain == "com.microsoft" {
        return contrib::rule(node);
    }
    if !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return None;
    }
    Some(match node.op_type {
        "Conv" | "ConvInteger" => conv,
        "QLinearConv" => qlinear_conv,
        "ConvTranspose" => conv_transpose,
        "MaxPool" | "AveragePool" | "LpPool" => pool,
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => global_pool,
        "Pad" => pad,
        "Concat" => concat,
        "Split" => split,
        "Slice" => slice,
        "Reshape" => reshape,
        "Transpose" => transpose,
        "Flatten" => flatten,
        "Squeeze" => squeeze,
        "Unsqueeze" => unsqueeze,
        "Resize" | "Upsample" => resize,
        "Gather" => gather,
        "GatherElements" => gather_elements,
        "TopK" => top_k,
        "GridSample" => grid_sample,
        "Shape" => shape,
        "Size" => size,
        "Constant" => constant,
        "ConstantOfShape" => constant_of_shape,
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => reduce,
        "ArgMax" | "ArgMin" => arg_reduce,
        "MatMul" | "MatMulInteger" => matmul,
        "QLinearMatMul" => qlinear_matmul,
        "DynamicQuantizeLinear" => dynamic_quantize,
        "Gemm" => gemm,
        "Expand" => expand,
        "Tile" => tile,
        "Range" => range,
        "DepthToSpace" => depth_to_space,
        "SpaceToDepth" => space_to_depth,
        "Cast" => cast,
        "Identity" | "Neg" | "Floor" | "Ceil" | "Round" | "Abs" | "Sqrt" | "Reciprocal" | "CastLike" => same_with_data,
        "Add" | "Sub" | "Mul" | "Div" => arithmetic,
        "Pow" | "Mod" | "Max" | "Min" | "Sum" | "Mean" | "Where" | "Equal" | "Less" | "Greater" | "LessOrEqual"
        | "GreaterOrEqual" | "And" | "Or" | "Xor" | "BitShift" | "PRelu" | "BitwiseAnd" | "BitwiseOr"
        | "BitwiseXor" => elementwise,
        op if SAME_SHAPE.contains(&op) => same_shape,
        _ => return None,
    })
}

/// Operators whose outputs all have their first input's shape.
const SAME_SHAPE: &[&str] = &[
    "Relu",
    "LeakyRelu",
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
    "Sign",
    "Not",
    "IsNaN",
    "IsInf",
    "Sin",
    "Cos",
    "Dropout",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "LayerNormalization",
    "LRN",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "CumSum",
    "Shrink",
    "ThresholdedRelu",
    "QuantizeLinear",
    "DequantizeLinear",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "BitwiseNot",
    "Trilu",
    "MeanVarianceNormalization",
    "LpNormalization",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "EyeLike",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
];

fn same_shape(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    // Dropout's mask has X's shape too; other second outputs (statistics) stay unknown.
    let n = if c.node.op_type == "Dropout" { 2 } else { 1 };
    Ok(vec![Fact::shaped(x.shape.clone()); n])
}

/// Identity and the unary operators shape arithmetic uses, with their values.
fn same_with_data(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let op = c.node.op_type;
    let data = match &x.data {
        Some(Data::Int(v)) if matches!(op, "Identity" | "CastLike" | "Floor" | "Ceil" | "Round") => {
            Some(Data::Int(v.clone()))
        }
        Some(Data::Int(v)) if matches!(op, "Neg" | "Abs") => v
            .iter()
            .map(|a| if op == "Neg" { a.checked_neg() } else { a.checked_abs() })
            .collect::<Option<_>>()
            .map(Data::Int),
        Some(d) if !matches!(op, "Identity" | "CastLike") => {
            let f = |a: f64| match op {
                "Neg" => -a,
                "Floor" => a.floor(),
                "Ceil" => a.ceil(),
                "Round" => a.round_ties_even(),
                "Abs" => a.abs(),
                "Sqrt" => a.sqrt(),
                _ => 1.0 / a,
            };
            Some(Data::Float(d.floats().into_iter().map(f).collect()))
        }
        d => d.clone(),
    };
    Ok(vec![Fact { shape: x.shape.clone(), data }])
}

fn cast(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    const FLOATS: [i64; 4] = [1, 10, 11, 16];
    let data = x.data.as_ref().map(|d| match d {
        _ if FLOATS.contains(&c.int("to", 1)) => Data::Float(d.floats()),
        Data::Int(v) => Data::Int(v.clone()),
        Data::Float(v) => Data::Int(v.iter().map(|x| x.trunc() as i64).collect()),
    });
    Ok(vec![Fact { shape: x.shape.clone(), data }])
}

/// The facts of every present input.
fn all_inputs<'c>(c: &'c Ctx<'_, '_>) -> Result<Vec<&'c Fact>, Stop> {
    (0..c.node.inputs.len()).filter_map(|i| c.optional(i).transpose()).collect()
}

fn elementwise(c: &Ctx<'_, '_>) -> Out {
    let inputs = all_inputs(c)?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|f| f.shape.as_slice()).collect();
    Ok(vec![Fact::shaped(broadcast(&shapes)?)])
}

/// Add, Sub, Mul, Div: shapes broadcast; values computed for shape arithmetic.
fn arithmetic(c: &Ctx<'_, '_>) -> Out {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let shape = broadcast(&[&a.shape, &b.shape])?;
    let n = numel(&shape).unwrap_or(usize::MAX);
    let data = match (&a.data, &b.data) {
        (Some(x), Some(y)) if (x.len() == n || x.len() == 1) && (y.len() == n || y.len() == 1) => {
            combine(c.node.op_type, x, y, n)
        }
        _ => None,
    };
    Ok(vec![Fact::with_data(shape, data)])
}

/// `x op y` element by element (a length-1 side repeats), integer when both are.
fn combine(op: &str, x: &Data, y: &Data, n: usize) -> Option<Data> {
    let at = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let fat = |v: &[f64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    match (x, y) {
        (Data::Int(a), Data::Int(b)) => (0..n)
            .map(|i| {
                let (p, q) = (at(a, i), at(b, i));
                match op {
                    "Add" => p.checked_add(q),
                    "Sub" => p.checked_sub(q),
                    "Mul" => p.checked_mul(q),
                    _ => p.checked_div(q),
                }
            })
            .collect::<Option<Vec<_>>>()
            .map(Data::Int),
        _ => {
            let (a, b) = (x.floats(), y.floats());
            let f = |i: usize| {
                let (p, q) = (fat(&a, i), fat(&b, i));
                match op {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    _ => p / q,
                }
            };
            Some(Data::Float((0..n).map(f).collect()))
        }
    }
}

fn concat(c: &Ctx<'_, '_>) -> Out {
    let inputs = all_inputs(c)?;
    let first = inputs.first().ok_or_else(|| Stop::Reason("has no inputs".into()))?;
    let a = axis(c.int("axis", 0), first.shape.len())?;
    let mut shape = first.shape.clone();
    shape[a] = 0;
    for f in &inputs {
        let same_rest = f.shape.len() == shape.len() && (0..shape.len()).all(|i| i == a || f.shape[i] == shape[i]);
        if !same_rest {
            return Err(Stop::Reason(format!("input shapes {:?} do not concatenate on axis {a}", f.shape)));
        }
        shape[a] += f.shape[a];
    }
    let data = if shape.len() == 1 { concat_data(&inputs) } else { None };
    Ok(vec![Fact::with_data(shape, data)])
}

/// The values of 1-D inputs joined, when all are known.
fn concat_data(inputs: &[&Fact]) -> Option<Data> {
    let all: Vec<&Data> = inputs.iter().map(|f| f.data.as_ref()).collect::<Option<_>>()?;
    if all.iter().all(|d| matches!(d, Data::Int(_))) {
        Some(Data::Int(all.iter().flat_map(|d| d.ints().unwrap_or_default()).collect()))
    } else {
        Some(Data::Float(all.iter().flat_map(|d| d.floats()).collect()))
    }
}

fn split(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let a = axis(c.int("axis", 0), x.shape.len())?;
    let outputs = c.node.outputs.len();
    let dim = x.shape[a];
    let sizes: Vec<usize> = match c.ints_input(1)?.or_else(|| c.ints("split")) {
        Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
        None if outputs > 0 => {
            let chunk = dim.div_ceil(outputs);
            (0..outputs).map(|i| chunk.min(dim.saturating_sub(i.saturating_mul(chunk)))).collect()
        }
        None => return Err(Stop::Reason("has no outputs".into())),
    };
    if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim) {
        return Err(Stop::Reason(format!("split sizes {sizes:?} do not add up to {dim}")));
    }
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut shape = x.shape.clone();
            shape[a] = s;
            Fact::shaped(shape)
        })
        .collect())
}

fn slice(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let rank = x.shape.len();
    let (starts, ends, axes, steps) = if c.opset < 10 {
        (c.ints("starts"), c.ints("ends"), c.ints("axes"), None)
    } else {
        (c.ints_input(1)?, c.ints_input(2)?, c.ints_input(3)?, c.ints_input(4)?)
    };
    let (starts, ends) = starts.zip(ends).ok_or_else(|| Stop::Reason("needs starts and ends".into()))?;
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(Stop::Reason("starts, ends, axes and steps differ in length".into()));
    }
    let mut shape = x.shape.clone();
    let mut walk: Vec<(i64, i64)> = vec![(0, 1); rank];
    for j in 0..starts.len() {
        let a = axis(axes[j], rank)?;
        let (begin, len) = slice_axis(x.shape[a] as i64, starts[j], ends[j], steps[j])?;
        shape[a] = len;
        walk[a] = (begin, steps[j]);
    }
    // The values of a small sliced tensor (shape arithmetic; torch's pads reversed by a
    // negative step on a 2-D view).
    let from = strides(&x.shape);
    let data = x.data.as_ref().and_then(|d| {
        rearrange(d, &shape, |i| {
            i.iter().zip(&walk).zip(&from).try_fold(0usize, |acc, ((&o, &(b, s)), &st)| {
                let v = (o as i64).checked_mul(s)?.checked_add(b)?;
                usize::try_from(v).ok()?.checked_mul(st)?.checked_add(acc)
            })
        })
    });
    Ok(vec![Fact::with_data(shape, data)])
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        st[a] = st[a + 1].saturating_mul(shape[a + 1]);
    }
    st
}

/// The flat offset of multi-index `index` under `strides`.
fn dot(index: &[usize], strides: &[usize]) -> usize {
    index.iter().zip(strides).map(|(&i, &s)| i * s).sum()
}

/// The values of a small tensor rearranged into shape `out`: the element at multi-index `i`
/// is input element `source(i)` (flat). `None` when any source is missing or out of range.
fn rearrange(d: &Data, out: &[usize], source: impl Fn(&[usize]) -> Option<usize>) -> Option<Data> {
    let n = numel(out).filter(|&n| n <= MAX_DATA)?;
    let mut at = vec![0usize; out.len()];
    let mut picks = Vec::with_capacity(n);
    for _ in 0..n {
        picks.push(source(&at).filter(|&s| s < d.len())?);
        for a in (0..out.len()).rev() {
            at[a] += 1;
            if at[a] < out[a] {
                break;
            }
            at[a] = 0;
        }
    }
    Some(d.pick(&picks))
}

/// One Slice axis of length `dim` (ONNX clamping rules): the first index kept and how many.
fn slice_axis(dim: i64, start: i64, end: i64, step: i64) -> Result<(i64, usize), Stop> {
    if step == 0 {
        return Err(Stop::Reason("a step is 0".into()));
    }
    if dim == 0 {
        return Ok((0, 0));
    }
    let (dim, step) = (i128::from(dim), i128::from(step));
    let norm = |v: i64| if v < 0 { i128::from(v) + dim } else { i128::from(v) };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, dim), norm(end).clamp(0, dim))
    } else {
        (norm(start).clamp(0, dim - 1), norm(end).clamp(-1, dim - 1))
    };
    let span = if step > 0 { e - s } else { s - e };
    let len = if span <= 0 { 0 } else { (span + step.abs() - 1) / step.abs() };
    Ok((s as i64, len as usize))
}

fn reshape(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let target = if c.opset < 5 { c.ints("shape") } else { c.ints_input(1)? }
        .ok_or_else(|| Stop::Reason("has no target shape".into()))?;
    let allow_zero = c.int("allowzero", 0) != 0;
    let total = x.numel().ok_or_else(|| Stop::Reason("input is too large".into()))?;
    let mut shape = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                shape.push(1);
            }
            0 if !allow_zero => shape.push(
                *x.shape.get(i).ok_or_else(|| Stop::Reason(format!("target {target:?} copies a missing axis {i}")))?,
            ),
            t if t >= 0 => shape.push(t as usize),
            _ => return Err(Stop::Reason(format!("target shape {target:?} is invalid"))),
        }
    }
    let known = numel(&shape).unwrap_or(0);
    if let Some(i) = infer_at {
        if known == 0 || total % known != 0 {
            return Err(Stop::Reason(format!("cannot reshape {:?} to {target:?}", x.shape)));
        }
        shape[i] = total / known;
    } else if known != total {
        return Err(Stop::Reason(format!("cannot reshape {:?} to {target:?}", x.shape)));
    }
    Ok(vec![Fact::with_data(shape, x.data.clone())])
}

fn transpose(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let rank = x.shape.len();
    let perm = c.ints("perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
    let mut seen = vec![false; rank];
    let (mut shape, mut order) = (Vec::with_capacity(rank), Vec::with_capacity(rank));
    for &p in &perm {
        let a = axis(p, rank)?;
        if std::mem::replace(&mut seen[a], true) {
            return Err(Stop::Reason(format!("perm {perm:?} repeats an axis")));
        }
        shape.push(x.shape[a]);
        order.push(a);
    }
    if shape.len() != rank {
        return Err(Stop::Reason(format!("perm {perm:?} does not fit rank {rank}")));
    }
    let from = strides(&x.shape);
    let permuted: Vec<usize> = order.iter().map(|&a| from[a]).collect();
    let data = x.data.as_ref().and_then(|d| rearrange(d, &shape, |i| Some(dot(i, &permuted))));
    Ok(vec![Fact::with_data(shape, data)])
}

fn flatten(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let rank = x.shape.len();
    let a = match c.int("axis", 1) {
        v if v == rank as i64 => rank,
        v => axis(v, rank)?,
    };
    let (head, tail) = x.shape.split_at(a);
    let too_big = || Stop::Reason("input is too large".into());
    Ok(vec![Fact::shaped(vec![numel(head).ok_or_else(too_big)?, numel(tail).ok_or_else(too_big)?])])
}

/// `axes` from the attribute (before opset 13) or input 1.
fn axes_of(c: &Ctx<'_, '_>, input_since: i64) -> Result<Option<Vec<i64>>, Stop> {
    if c.opset < input_since {
        Ok(c.ints("axes"))
    } else {
        c.ints_input(1)
    }
}

fn squeeze(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let rank = x.shape.len();
    let axes: Vec<usize> = match axes_of(c, 13)? {
        Some(a) => a.iter().map(|&v| axis(v, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).filter(|&i| x.shape[i] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| x.shape[a] != 1) {
        return Err(Stop::Reason(format!("axis {a} of {:?} is not 1", x.shape)));
    }
    let shape = (0..rank).filter(|i| !axes.contains(i)).map(|i| x.shape[i]).collect();
    Ok(vec![Fact::with_data(shape, x.data.clone())])
}

fn unsqueeze(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let axes = axes_of(c, 13)?.ok_or_else(|| Stop::Reason("has no axes".into()))?;
    let rank = x.shape.len() + axes.len();
    let axes: Vec<usize> = axes.iter().map(|&v| axis(v, rank)).collect::<Result<_, _>>()?;
    let mut rest = x.shape.iter();
    let shape: Option<Vec<usize>> =
        (0..rank).map(|i| if axes.contains(&i) { Some(1) } else { rest.next().copied() }).collect();
    let shape = shape.ok_or_else(|| Stop::Reason(format!("axes {axes:?} repeat")))?;
    Ok(vec![Fact::with_data(shape, x.data.clone())])
}

fn gather(c: &Ctx<'_, '_>) -> Out {
    let (x, idx) = (c.input(0)?, c.input(1)?);
    let a = axis(c.int("axis", 0), x.shape.len())?;
    let shape = [&x.shape[..a], &idx.shape, &x.shape[a + 1..]].concat();
    // The values of a small tensor gathered along any axis (shape arithmetic).
    let dim = x.shape[a] as i64;
    let picks: Option<Vec<usize>> = idx.data.as_ref().and_then(Data::ints).and_then(|ix| {
        ix.iter().map(|&i| usize::try_from(if i < 0 { i + dim } else { i }).ok().filter(|&u| u < x.shape[a])).collect()
    });
    let (from, within) = (strides(&x.shape), strides(&idx.shape));
    let q = idx.shape.len();
    let data = x.data.as_ref().zip(picks).and_then(|(d, picks)| {
        rearrange(d, &shape, |i| {
            let picked = picks.get(dot(&i[a..a + q], &within))?;
            Some(dot(&i[..a], &from) + picked * from[a] + dot(&i[a + q..], &from[a + 1..]))
        })
    });
    Ok(vec![Fact::with_data(shape, data)])
}

fn shape(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let rank = x.shape.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let (start, end) = (clampi(c.int("start", 0)), clampi(c.int("end", rank)));
    let dims = x.shape.get(start..end.max(start)).unwrap_or(&[]);
    Ok(vec![Fact::ints(dims.iter().map(|&d| d as i64).collect())])
}

fn size(c: &Ctx<'_, '_>) -> Out {
    let n = c.input(0)?.numel().ok_or_else(|| Stop::Reason("input is too large".into()))?;
    Ok(vec![Fact::with_data(vec![], Some(Data::Int(vec![n as i64])))])
}

fn constant(c: &Ctx<'_, '_>) -> Out {
    let a = c.node.attrs.first().ok_or_else(|| Stop::Reason("has no value attribute".into()))?;
    let fact = match a.name {
        "value" => {
            let bytes = a.t.ok_or_else(|| Stop::Reason("`value` is not a tensor".into()))?;
            tensor_fact(bytes)?
        }
        "value_int" => Fact::with_data(vec![], Some(Data::Int(vec![a.i.unwrap_or(0)]))),
        "value_ints" => Fact::ints(a.ints.clone()),
        "value_float" => Fact::with_data(vec![], Some(Data::Float(vec![f64::from(a.f.unwrap_or(0.0))]))),
        "value_floats" => {
            Fact::with_data(vec![a.floats.len()], Some(Data::Float(a.floats.iter().map(|&f| f64::from(f)).collect())))
        }
        other => return Err(Stop::Reason(format!("attribute `{other}` is not supported"))),
    };
    Ok(vec![fact])
}

/// A TensorProto's shape and small values.
fn tensor_fact(bytes: &[u8]) -> Result<Fact, Stop> {
    let t = Tensor::parse(bytes, 0).map_err(|e| Stop::Reason(e.reason))?;
    Fact::of_tensor(&t).ok_or_else(|| Stop::Reason(format!("tensor dims {:?} are invalid", t.dims)))
}

fn constant_of_shape(c: &Ctx<'_, '_>) -> Out {
    let dims = c.ints_input(0)?.ok_or_else(|| Stop::Reason("has no shape input".into()))?;
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()
        .ok_or_else(|| Stop::Reason(format!("shape {dims:?} is negative")))?;
    let value = match c.node.attr("value").and_then(|a| a.t) {
        Some(b) => tensor_fact(b)?.data,
        None => Some(Data::Float(vec![0.0])),
    };
    let n = numel(&shape).unwrap_or(usize::MAX);
    let filled = match value {
        Some(Data::Int(v)) if v.len() == 1 && n <= MAX_DATA => Some(Data::Int(vec![v[0]; n])),
        Some(Data::Float(v)) if v.len() == 1 && n <= MAX_DATA => Some(Data::Float(vec![v[0]; n])),
        _ => None,
    };
    Ok(vec![Fact::with_data(shape, filled)])
}

fn reduce(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let rank = x.shape.len();
    let input_since = if c.node.op_type == "ReduceSum" { 13 } else { 18 };
    let axes = axes_of(c, input_since)?.unwrap_or_default();
    if axes.is_empty() && c.int("noop_with_empty_axes", 0) != 0 {
        return Ok(vec![Fact::shaped(x.shape.clone())]);
    }
    let axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter().map(|&v| axis(v, rank)).collect::<Result<_, _>>()?
    };
    Ok(vec![Fact::shaped(reduced(&x.shape, &axes, c.int("keepdims", 1) != 0))])
}

fn arg_reduce(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let a = axis(c.int("axis", 0), x.shape.len())?;
    Ok(vec![Fact::shaped(reduced(&x.shape, &[a], c.int("keepdims", 1) != 0))])
}

fn reduced(shape: &[usize], axes: &[usize], keep: bool) -> Vec<usize> {
    let kept = shape.iter().enumerate().filter_map(|(i, &d)| match (axes.contains(&i), keep) {
        (false, _) => Some(d),
        (true, true) => Some(1),
        (true, false) => None,
    });
    kept.collect()
}

/// MatMul's output shape (numpy semantics) and its inner dimension.
pub(crate) fn matmul_shape(a: &[usize], b: &[usize]) -> Result<(Vec<usize>, usize), Stop> {
    if a.is_empty() || b.is_empty() {
        return Err(Stop::Reason("MatMul of a scalar".into()));
    }
    let (a2, b2) =
        (if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() }, if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() });
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(Stop::Reason(format!("inner dimensions of {a:?} and {b:?} differ")));
    }
    let mut shape = broadcast(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
    if a.len() > 1 {
        shape.push(m);
    }
    if b.len() > 1 {
        shape.push(n);
    }
    Ok((shape, k))
}

fn matmul(c: &Ctx<'_, '_>) -> Out {
    let (a, b) = (c.input(0)?, c.input(1)?);
    Ok(vec![Fact::shaped(matmul_shape(&a.shape, &b.shape)?.0)])
}

/// `QLinearMatMul`: a `MatMul` of inputs 0 and 3 (each followed by its scale and zero point).
fn qlinear_matmul(c: &Ctx<'_, '_>) -> Out {
    let (a, b) = (c.input(0)?, c.input(3)?);
    Ok(vec![Fact::shaped(matmul_shape(&a.shape, &b.shape)?.0)])
}

/// `DynamicQuantizeLinear`: the quantized input, and a scalar scale and zero point.
fn dynamic_quantize(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    Ok(vec![Fact::shaped(x.shape.clone()), Fact::shaped(Vec::new()), Fact::shaped(Vec::new())])
}

/// Gemm's `(M, K, N)`.
pub(crate) fn gemm_dims(node: &Node<'_>, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize), Stop> {
    if a.len() != 2 || b.len() != 2 {
        return Err(Stop::Reason(format!("Gemm needs 2-D inputs, got {a:?} and {b:?}")));
    }
    let t = |name: &str| node.attr(name).and_then(|x| x.i).unwrap_or(0) != 0;
    let (m, k) = if t("transA") { (a[1], a[0]) } else { (a[0], a[1]) };
    let (k2, n) = if t("transB") { (b[1], b[0]) } else { (b[0], b[1]) };
    if k != k2 {
        return Err(Stop::Reason(format!("inner dimensions of {a:?} and {b:?} differ")));
    }
    Ok((m, k, n))
}

pub(super) fn gemm(c: &Ctx<'_, '_>) -> Out {
    let (m, _, n) = gemm_dims(c.node, &c.input(0)?.shape, &c.input(1)?.shape)?;
    Ok(vec![Fact::shaped(vec![m, n])])
}

fn expand(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let to = c.ints_input(1)?.ok_or_else(|| Stop::Reason("has no shape input".into()))?;
    let to: Vec<usize> = to.iter().map(|&v| v.max(0) as usize).collect();
    Ok(vec![Fact::shaped(broadcast(&[&x.shape, &to])?)])
}

fn tile(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let reps = c.ints_input(1)?.ok_or_else(|| Stop::Reason("has no repeats input".into()))?;
    if reps.len() != x.shape.len() || reps.iter().any(|&r| r < 0) {
        return Err(Stop::Reason(format!("repeats {reps:?} do not fit {:?}", x.shape)));
    }
    Ok(vec![Fact::shaped(x.shape.iter().zip(&reps).map(|(&d, &r)| d.saturating_mul(r as usize)).collect())])
}

fn range(c: &Ctx<'_, '_>) -> Out {
    let scalar = |i: usize| -> Result<f64, Stop> {
        let v = c.floats_input(i)?.filter(|v| v.len() == 1);
        v.map(|v| v[0]).ok_or_else(|| Stop::Reason(format!("input {i} is not a known scalar")))
    };
    let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
    if delta == 0.0 {
        return Err(Stop::Reason("delta is 0".into()));
    }
    let n = ((limit - start) / delta).ceil().max(0.0) as usize;
    Ok(vec![Fact::shaped(vec![n])])
}
