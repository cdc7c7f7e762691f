//! The convolutions of an ONNX graph, as the conversion pipeline sees them.

use super::graph::{dims4, Graph};
use super::onnx_error;
use super::proto::{Node, Problem};
use super::shapes::Window;
use crate::convert::{self, ConvertOptions, Found, SizeSource, SkipReason, SkippedLayer};
use crate::cost::{self, Cost};
use crate::error::Result;
use std::collections::HashMap;
use std::path::Path;

/// A 2-D `Conv` with a constant 4-D weight: where it is and how to read it.
pub(crate) struct Conv<'a> {
    /// Index into the graph's nodes.
    pub node: usize,
    pub weight: &'a str,
    pub data_type: i64,
}

/// What the graph holds for the pipeline.
pub(crate) struct Discovered<'a> {
    /// Convolutions with a constant 4-D weight, in graph order, and what the pipeline sees of each.
    pub convs: Vec<Conv<'a>>,
    pub found: Vec<Found>,
    /// `Conv`s the rewrite cannot touch whatever the options, with their node index.
    pub blocked: Vec<(usize, SkippedLayer)>,
    /// `Gemm` / `MatMul` nodes with a constant 2-D weight.
    pub linear: Cost,
}

/// A weight's name without a trailing `.weight`.
pub(crate) fn stem(weight: &str) -> &str {
    weight.strip_suffix(".weight").unwrap_or(weight)
}

/// Finds every `Conv` (and the linear layers' cost), validating what the rewrite relies on.
pub(crate) fn find<'a>(
    g: &Graph<'a>,
    sizes: &HashMap<String, (usize, usize)>,
    options: &ConvertOptions,
    file: &Path,
) -> Result<Discovered<'a>> {
    let mut d = Discovered { convs: Vec::new(), found: Vec::new(), blocked: Vec::new(), linear: Cost::default() };
    for (k, (_, node)) in g.nodes.iter().enumerate() {
        if node.is("Gemm") || node.is("MatMul") {
            d.linear = d.linear + linear_cost(g, node);
        } else if node.is("Conv") {
            match conv(g, k, node, sizes, options, file)? {
                Ok((c, f)) => {
                    d.convs.push(c);
                    d.found.push(f);
                }
                Err(s) => d.blocked.push((k, s)),
            }
        }
    }
    Ok(d)
}

fn linear_cost(g: &Graph<'_>, node: &Node<'_>) -> Cost {
    let Some((_, t)) = node.inputs.get(1).and_then(|w| g.inits.get(w)) else { return Cost::default() };
    if t.dims.len() != 2 {
        return Cost::default();
    }
    let (a, b) = (t.dims[0].max(0) as usize, t.dims[1].max(0) as usize);
    let trans_b = node.is("Gemm") && node.attr("transB").and_then(|a| a.i).unwrap_or(0) != 0;
    let (out, inp) = if trans_b { (a, b) } else { (b, a) };
    cost::linear(out, inp, node.inputs.len() > 2)
}

/// A `Conv` node: a convolution for the pipeline, or the reason it cannot be rewritten.
fn conv<'a>(
    g: &Graph<'a>,
    k: usize,
    node: &Node<'a>,
    sizes: &HashMap<String, (usize, usize)>,
    options: &ConvertOptions,
    file: &Path,
) -> Result<std::result::Result<(Conv<'a>, Found), SkippedLayer>> {
    let label = node.label(k);
    let weight = node.inputs.get(1).copied().unwrap_or("");
    if node.inputs.first().is_none_or(|x| x.is_empty()) || weight.is_empty() || node.outputs.len() != 1 {
        let reason = format!(
            "a Conv needs inputs X and W and one output; it has {} inputs, {} outputs",
            node.inputs.len(),
            node.outputs.len()
        );
        return Err(onnx_error(file, label, reason));
    }
    let name = if node.name.is_empty() { stem(weight).to_string() } else { node.name.to_string() };
    let blocked = |reason| SkippedLayer {
        name: name.clone(),
        weight: weight.to_string(),
        dims: None,
        groups: 1,
        reason,
        input_size: None,
        size: SizeSource::Unknown,
        cost: None,
    };
    let Some((_, wt)) = g.inits.get(weight) else { return Ok(Err(blocked(SkipReason::WeightNotInitializer))) };
    if g.inputs.iter().any(|(n, _)| n == weight) {
        return Ok(Err(blocked(SkipReason::WeightIsGraphInput)));
    }
    if wt.dims.len() != 4 {
        return Ok(Err(blocked(SkipReason::NotTwoD { dims: wt.dims.len() })));
    }
    let p = |e: Problem| onnx_error(file, e.location, e.reason);
    let dims = dims4(wt)
        .filter(|d| d.iter().all(|&x| x > 0))
        .ok_or_else(|| onnx_error(file, &label, format!("weight `{weight}` has invalid dims {:?}", wt.dims)))?;
    let window = Window::parse(node, &label).map_err(p)?;
    check_conv(g, node, &label, weight, dims, &window, file)?;
    let keys = vec![name.clone(), weight.to_string(), stem(weight).to_string(), node.name.to_string()];
    let inferred = sizes.get(node.inputs[0]).copied();
    let declared = convert::Selection::last_match(&options.selection().inputs, &keys).copied();
    let size = inferred.or(declared).or(options.input_size);
    if let Some(hw) = size {
        if window.output((dims[2], dims[3]), hw).is_none() {
            let (kh, kw) = (dims[2], dims[3]);
            let reason = format!("input {}x{} is smaller than the kernel {kh}x{kw} (dilated, padded)", hw.0, hw.1);
            return Err(onnx_error(file, &label, reason));
        }
    }
    let found = Found {
        name,
        keys,
        weight: weight.to_string(),
        dims,
        geometry: window.geometry((dims[2], dims[3]), size),
        groups_known: true,
        has_bias: node.inputs.get(2).is_some_and(|b| !b.is_empty()),
        inferred_size: inferred,
        blocked: None,
    };
    Ok(Ok((Conv { node: k, weight, data_type: wt.data_type }, found)))
}

/// Groups, `kernel_shape` and bias agree with the weight.
fn check_conv(
    g: &Graph<'_>,
    node: &Node<'_>,
    label: &str,
    weight: &str,
    dims: [usize; 4],
    window: &Window,
    file: &Path,
) -> Result<()> {
    let group = window.group;
    if !dims[0].is_multiple_of(group) {
        let reason = format!("weight `{weight}` has {} output channels, not divisible by group = {group}", dims[0]);
        return Err(onnx_error(file, label, reason));
    }
    if let Some(ks) = window.kernel_shape.filter(|&ks| ks != (dims[2], dims[3])) {
        let reason = format!("kernel_shape {:?} disagrees with weight `{weight}` dims {dims:?}", [ks.0, ks.1]);
        return Err(onnx_error(file, label, reason));
    }
    let bias = node.inputs.get(2).copied().filter(|b| !b.is_empty());
    if let Some((b, (_, bt))) = bias.and_then(|b| g.inits.get(b).map(|t| (b, t))) {
        if bt.dims.len() != 1 || bt.dims[0] != dims[0] as i64 {
            let reason = format!("bias `{b}` has dims {:?}; weight `{weight}` needs [{}]", bt.dims, dims[0]);
            return Err(onnx_error(file, label, reason));
        }
        bt.values().map_err(|e| onnx_error(file, e.location, e.reason))?;
    }
    Ok(())
}
