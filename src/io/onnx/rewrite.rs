//! The rewrite itself: find the convolutions, choose ranks, decompose, re-encode the graph.

use super::proto::{self, NewNode, Node, Problem, Tensor};
use super::shapes::{self, Window};
use super::wire::{self, Field};
use super::{
    onnx_error, Layout, PlanOutcome, RankSource, RewriteOptions, RewriteReport, RewrittenConv, SkipReason, SkippedConv,
};
use crate::cost::{self, Cost};
use crate::decompose::{Factorization, Options, Spectrum};
use crate::error::Result;
use crate::fit::Fit;
use crate::plan::{PlanLayer, PlanOptions, Target};
use crate::rank::{Rank, RankChoice};
use crate::scalar::Real;
use crate::svd::NalgebraSvd;
use crate::weights::{Conv2dWeights, ConvShape};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// A convolution's weights in the precision it is computed in.
enum AnyConv {
    F32(Conv2dWeights<f32>),
    F64(Conv2dWeights<f64>),
}

enum AnyFact<'a> {
    F32(Factorization<'a, f32>),
    F64(Factorization<'a, f64>),
}

/// The pair's weights (f64), as the core laid them out, and the truncation's report values.
struct PairWeights {
    dw: Vec<f64>,
    pw: Vec<f64>,
    relative_error: f64,
    retained_energy: f64,
}

impl AnyConv {
    fn build<T: Real>(
        name: &str,
        w: &[f64],
        dims: [usize; 4],
        bias: Option<Vec<f64>>,
        geometry: crate::weights::Geometry,
    ) -> Result<Conv2dWeights<T>> {
        Conv2dWeights::builder(w.iter().map(|&v| T::from_f64_lossy(v)).collect(), dims)
            .name(name)
            .maybe_bias(bias.map(|b| b.into_iter().map(T::from_f64_lossy).collect()))
            .geometry(geometry)
            .build()
    }
    fn has_bias(&self) -> bool {
        match self {
            AnyConv::F32(l) => l.bias().is_some(),
            AnyConv::F64(l) => l.bias().is_some(),
        }
    }
    fn factor(&self, fit: Fit) -> Result<AnyFact<'_>> {
        let svd = NalgebraSvd::default();
        Ok(match self {
            AnyConv::F32(l) => AnyFact::F32(Factorization::compute_fitted(l, &svd, fit)?),
            AnyConv::F64(l) => AnyFact::F64(Factorization::compute_fitted(l, &svd, fit)?),
        })
    }
}

impl AnyFact<'_> {
    fn spectrum(&self) -> Spectrum {
        match self {
            AnyFact::F32(f) => f.spectrum(),
            AnyFact::F64(f) => f.spectrum(),
        }
    }
    /// The planner layer of this factorisation ([`PlanLayer::from_factorization`]) at the
    /// ONNX node's own geometry.
    fn plan_layer<'s>(
        &self,
        name: &str,
        spectrum: &'s Spectrum,
        geometry: crate::weights::Geometry,
        hw: (usize, usize),
    ) -> Result<PlanLayer<'s>> {
        fn go<'s, T: Real>(
            f: &Factorization<'_, T>,
            name: &str,
            spectrum: &'s Spectrum,
            geometry: crate::weights::Geometry,
            hw: (usize, usize),
        ) -> Result<PlanLayer<'s>> {
            let layer = PlanLayer::new(name, spectrum, geometry, f.layer().bias().is_some(), hw)?;
            Ok(layer.with_tap_energy(crate::plan::tap_energy_of_factorization(f)))
        }
        match self {
            AnyFact::F32(f) => go(f, name, spectrum, geometry, hw),
            AnyFact::F64(f) => go(f, name, spectrum, geometry, hw),
        }
    }
    fn truncate(&self, options: &Options) -> Result<PairWeights> {
        fn go<T: Real>(f: &Factorization<'_, T>, o: &Options) -> Result<PairWeights> {
            let d = f.truncate(o)?;
            let v = |w: &[T]| w.iter().map(|x| x.to_f64_exact()).collect();
            Ok(PairWeights {
                dw: v(d.depthwise.conv().weight()),
                pw: v(d.pointwise.conv().weight()),
                relative_error: d.report.relative_error,
                retained_energy: d.report.retained_energy,
            })
        }
        match self {
            AnyFact::F32(f) => go(f, options),
            AnyFact::F64(f) => go(f, options),
        }
    }
}

/// A `Conv` that can be decomposed.
struct Candidate {
    /// Index into `nodes`.
    node: usize,
    name: String,
    weight: String,
    dims: [usize; 4],
    window: Window,
    data_type: i64,
    layer: AnyConv,
    input_size: Option<(usize, usize)>,
    size_inferred: bool,
}

impl Candidate {
    fn shape(&self) -> ConvShape {
        ConvShape {
            out_channels: self.dims[0],
            in_channels: self.dims[1] * self.window.group,
            kh: self.dims[2],
            kw: self.dims[3],
            groups: self.window.group,
        }
    }
    fn out_size(&self) -> Option<(usize, usize)> {
        self.window.output((self.dims[2], self.dims[3]), self.input_size?)
    }
}

/// Fresh names: never one already in the model or handed out before.
struct Names(HashSet<String>);

impl Names {
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.0.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

fn dims4(t: &Tensor<'_>) -> Option<[usize; 4]> {
    if t.dims.len() != 4 {
        return None;
    }
    let mut d = [0usize; 4];
    for (o, &v) in d.iter_mut().zip(&t.dims) {
        *o = usize::try_from(v).ok()?;
    }
    Some(d)
}

fn stem(weight: &str) -> &str {
    weight.strip_suffix(".weight").unwrap_or(weight)
}

/// Rewrites `bytes`; `file` is used in error messages only.
pub(crate) fn rewrite(bytes: &[u8], options: &RewriteOptions, file: &Path) -> Result<(Vec<u8>, RewriteReport)> {
    let p = |e: Problem| onnx_error(file, e.location, e.reason);
    let model = wire::parse(bytes).map_err(|e| onnx_error(file, "model", format!("not an ONNX model: {e}")))?;
    let graphs: Vec<&Field<'_>> = model.iter().filter(|f| f.number == proto::MODEL_GRAPH).collect();
    let graph_field = match graphs.as_slice() {
        [] => return Err(onnx_error(file, "model", "not an ONNX model: it has no graph (ModelProto field 7)")),
        [g] => *g,
        _ => return Err(onnx_error(file, "model", format!("{} graphs; a model has one", graphs.len()))),
    };
    let graph_bytes = graph_field
        .bytes()
        .ok_or_else(|| onnx_error(file, "model", "not an ONNX model: field 7 (graph) is not a message"))?;
    let opset = proto::default_opset(&model).map_err(p)?;
    let graph = wire::parse(graph_bytes).map_err(|e| onnx_error(file, "graph", e.to_string()))?;

    // Decode the graph.
    let mut nodes: Vec<(usize, Node<'_>)> = Vec::new();
    let mut inits: HashMap<&str, (usize, Tensor<'_>)> = HashMap::new();
    let mut graph_inputs: Vec<(String, Option<Vec<Option<i64>>>)> = Vec::new();
    let mut graph_outputs: HashSet<String> = HashSet::new();
    for (i, f) in graph.iter().enumerate() {
        let bytes_of = |what: &str| {
            f.bytes().ok_or_else(|| onnx_error(file, "graph", format!("{what} (field {}) is not a message", f.number)))
        };
        match f.number {
            proto::GRAPH_NODE => nodes.push((i, Node::parse(bytes_of("node")?, nodes.len()).map_err(p)?)),
            proto::GRAPH_INITIALIZER => {
                let t = Tensor::parse(bytes_of("initializer")?, inits.len()).map_err(p)?;
                if t.external {
                    return Err(onnx_error(
                        file,
                        format!("initializer `{}`", t.name),
                        "data is stored in an external file (external data is not supported; \
                         save the model with all tensors inside it)",
                    ));
                }
                inits.insert(t.name, (i, t));
            }
            proto::GRAPH_INPUT => graph_inputs.push(proto::value_info(bytes_of("input")?, "input").map_err(p)?),
            proto::GRAPH_OUTPUT => {
                graph_outputs.insert(proto::value_info(bytes_of("output")?, "output").map_err(p)?.0);
            }
            _ => {}
        }
    }
    let input_names: HashSet<&str> = graph_inputs.iter().map(|(n, _)| n.as_str()).collect();

    // Names in use, and uses of every tensor by each node (subgraph references included).
    let mut names = HashSet::new();
    proto::collect_names(graph_bytes, &mut names, 0).map_err(p)?;
    let mut names = Names(names);
    let mut node_uses: Vec<HashSet<String>> = Vec::with_capacity(nodes.len());
    for (_, n) in &nodes {
        let mut u: HashSet<String> = n.inputs.iter().map(|s| s.to_string()).collect();
        proto::subgraph_inputs(n, &mut u, 0).map_err(p)?;
        node_uses.push(u);
    }

    // Sizes.
    let model_inputs: Vec<(String, (usize, usize))> = graph_inputs
        .iter()
        .filter(|(n, _)| !inits.contains_key(n.as_str()))
        .filter_map(|(n, shape)| {
            let shape = shape.as_ref()?;
            if shape.len() != 4 {
                return None;
            }
            let hw = match options.input_size {
                Some(hw) => hw,
                None => (usize::try_from(shape[2]?).ok()?, usize::try_from(shape[3]?).ok()?),
            };
            Some((n.clone(), hw))
        })
        .collect();
    let kernel_of = |n: &Node<'_>| {
        let t = &inits.get(n.inputs.get(1)?)?.1;
        let d = dims4(t)?;
        Some((d[2], d[3]))
    };
    let sizes = shapes::infer(&nodes, &model_inputs, &kernel_of);
    let model_size = model_inputs.first().map(|(_, hw)| *hw).or(options.input_size);

    // Find the convolutions.
    let mut report = RewriteReport {
        converted: Vec::new(),
        skipped: Vec::new(),
        removed_initializers: Vec::new(),
        unmatched_patterns: Vec::new(),
        input_size: model_size,
        fixed: Cost::default(),
        plan: None,
        layout: options.layout,
        fit: options.fit,
    };
    let mut matched_include = vec![false; options.include.len()];
    let mut matched_exclude = vec![false; options.exclude.len()];
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut skipped_at: Vec<(usize, SkippedConv)> = Vec::new();
    for (k, (_, node)) in nodes.iter().enumerate() {
        if node.is("Gemm") || node.is("MatMul") {
            if let Some((_, t)) = node.inputs.get(1).and_then(|w| inits.get(w)) {
                if t.dims.len() == 2 {
                    let (a, b) = (t.dims[0].max(0) as usize, t.dims[1].max(0) as usize);
                    let trans_b = node.is("Gemm") && node.attr("transB").and_then(|a| a.i).unwrap_or(0) != 0;
                    let (out, inp) = if trans_b { (a, b) } else { (b, a) };
                    report.fixed = report.fixed + cost::linear(out, inp, node.inputs.len() > 2);
                }
            }
            continue;
        }
        if !node.is("Conv") {
            continue;
        }
        let label = node.label(k);
        let weight = node.inputs.get(1).copied().unwrap_or("");
        if node.inputs.first().is_none_or(|x| x.is_empty()) || weight.is_empty() || node.outputs.len() != 1 {
            return Err(onnx_error(
                file,
                label,
                format!(
                    "a Conv needs inputs X and W and one output; it has {} inputs, {} outputs",
                    node.inputs.len(),
                    node.outputs.len()
                ),
            ));
        }
        let display = if node.name.is_empty() { stem(weight).to_string() } else { node.name.to_string() };
        let skip = |reason| SkippedConv { node: display.clone(), weight: weight.to_string(), reason, cost: None };
        let Some((_, wt)) = inits.get(weight) else {
            skipped_at.push((k, skip(SkipReason::WeightNotInitializer)));
            continue;
        };
        if input_names.contains(weight) {
            skipped_at.push((k, skip(SkipReason::WeightIsGraphInput)));
            continue;
        }
        if wt.dims.len() != 4 {
            skipped_at.push((k, skip(SkipReason::NotTwoD { dims: wt.dims.len() })));
            continue;
        }
        let dims = dims4(wt)
            .filter(|d| d.iter().all(|&x| x > 0))
            .ok_or_else(|| onnx_error(file, &label, format!("weight `{weight}` has invalid dims {:?}", wt.dims)))?;
        let window = Window::parse(node, &label).map_err(p)?;
        let g = window.group;
        if dims[0] % g != 0 {
            return Err(onnx_error(
                file,
                &label,
                format!("weight `{weight}` has {} output channels, not divisible by group = {g}", dims[0]),
            ));
        }
        if let Some(ks) = window.kernel_shape {
            if ks != (dims[2], dims[3]) {
                return Err(onnx_error(
                    file,
                    &label,
                    format!("kernel_shape {:?} disagrees with weight `{weight}` dims {dims:?}", [ks.0, ks.1]),
                ));
            }
        }
        let bias_name = node.inputs.get(2).copied().filter(|b| !b.is_empty());
        let mut bias = None;
        if let Some(b) = bias_name {
            if let Some((_, bt)) = inits.get(b) {
                if bt.dims.len() != 1 || bt.dims[0] != dims[0] as i64 {
                    return Err(onnx_error(
                        file,
                        &label,
                        format!("bias `{b}` has dims {:?}; weight `{weight}` needs [{}]", bt.dims, dims[0]),
                    ));
                }
                bias = Some(bt.values().map_err(p)?);
            } else {
                bias = Some(vec![0.0; dims[0]]);
            }
        }
        let x = node.inputs[0];
        let (input_size, size_inferred) = match sizes.get(x) {
            Some(&hw) => (Some(hw), true),
            None => (options.input_size, false),
        };
        if let Some(hw) = input_size {
            if window.output((dims[2], dims[3]), hw).is_none() {
                return Err(onnx_error(
                    file,
                    &label,
                    format!(
                        "input {}x{} is smaller than the kernel {}x{} (dilated, padded)",
                        hw.0, hw.1, dims[2], dims[3]
                    ),
                ));
            }
        }
        let shape = ConvShape { out_channels: dims[0], in_channels: dims[1] * g, kh: dims[2], kw: dims[3], groups: g };
        let dense_cost = |hw: Option<(usize, usize)>| {
            hw.and_then(|hw| window.output((dims[2], dims[3]), hw))
                .and_then(|o| cost::dense(&display, &shape, bias.is_some(), o).ok())
        };
        if dims[2] * dims[3] == 1 {
            let mut s = skip(SkipReason::PointwiseKernel);
            s.cost = dense_cost(input_size);
            skipped_at.push((k, s));
            continue;
        }
        let keys = [node.name, weight, stem(weight)];
        let hit = |pats: &[String], matched: &mut [bool]| -> bool {
            let mut any = false;
            for (pat, m) in pats.iter().zip(matched.iter_mut()) {
                if keys.iter().any(|k| !k.is_empty() && super::super::glob::matches(pat, k)) {
                    *m = true;
                    any = true;
                }
            }
            any
        };
        let included = options.include.is_empty() || hit(&options.include, &mut matched_include);
        let excluded = hit(&options.exclude, &mut matched_exclude);
        if !included || excluded {
            let mut s = skip(if included { SkipReason::Excluded } else { SkipReason::NotIncluded });
            s.cost = dense_cost(input_size);
            skipped_at.push((k, s));
            continue;
        }
        let values = wt.values().map_err(p)?;
        let geometry = window.geometry((dims[2], dims[3]), input_size);
        let layer = if wt.data_type == proto::DT_DOUBLE {
            AnyConv::F64(AnyConv::build(&display, &values, dims, bias, geometry)?)
        } else {
            AnyConv::F32(AnyConv::build(&display, &values, dims, bias, geometry)?)
        };
        candidates.push(Candidate {
            node: k,
            name: display,
            weight: weight.to_string(),
            dims,
            window,
            data_type: wt.data_type,
            layer,
            input_size,
            size_inferred,
        });
    }
    report.unmatched_patterns = options
        .include
        .iter()
        .zip(&matched_include)
        .chain(options.exclude.iter().zip(&matched_exclude))
        .filter(|(_, &m)| !m)
        .map(|(p, _)| p.clone())
        .collect();

    // Choose ranks.
    let facts: Vec<AnyFact<'_>> = candidates.iter().map(|c| c.layer.factor(options.fit)).collect::<Result<_>>()?;
    let spectra: Vec<Spectrum> = facts.iter().map(AnyFact::spectrum).collect();
    let mut ranks: Vec<std::result::Result<usize, SkipReason>> = Vec::with_capacity(candidates.len());
    match options.ranks {
        RankSource::Policy(policy) => {
            for (c, s) in candidates.iter().zip(&spectra) {
                let max = s.shape().max_rank();
                if let Rank::Fixed(rank) = policy {
                    if rank > max {
                        // Unlike a checkpoint conversion (where a rank above a layer's maximum
                        // is an error), a graph routinely holds layers such as depthwise
                        // convolutions whose maximum rank is 1: leave them alone and say why.
                        ranks.push(Err(SkipReason::RankAboveMaximum { rank, max }));
                        continue;
                    }
                }
                ranks.push(match policy.choose(&c.name, s, options.allow_slower)? {
                    RankChoice::Decompose { rank } => Ok(rank),
                    RankChoice::KeepDense { rank, reason } => Err(SkipReason::KeptDense { rank, reason }),
                });
            }
        }
        RankSource::Plan(target) => {
            let mut fixed = report.fixed;
            for (_, s) in &skipped_at {
                if let Some(c) = s.cost {
                    fixed = fixed + c;
                }
            }
            let mut layers = Vec::with_capacity(candidates.len());
            for ((c, s), fact) in candidates.iter().zip(&spectra).zip(&facts) {
                let hw = c.input_size.ok_or_else(|| {
                    onnx_error(
                        file,
                        format!("node `{}`", c.name),
                        "cannot infer its input size for planning; give the model input size (--input HxW)",
                    )
                })?;
                let geometry = c.window.geometry((c.dims[2], c.dims[3]), Some(hw));
                // Scored as `PlanLayer::from_factorization`: with the weights (Frobenius fit) or
                // the weighted spectrum (correlated fit) for the proxies that read more than the
                // spectrum.
                layers.push(fact.plan_layer(&c.name, s, geometry, hw)?);
            }
            let plan = crate::plan(&layers, &Target::MacReduction(target), &PlanOptions::default().fixed(fixed))?;
            report.plan = Some(PlanOutcome {
                target,
                reduction: plan.reduction(),
                met: plan.met,
                max_reduction: plan.max_reduction,
            });
            ranks.extend(plan.layers.iter().map(|l| l.rank.ok_or(SkipReason::PlannedDense)));
        }
    }

    // Decompose and build the replacement nodes.
    let mut replacement: HashMap<usize, Vec<Vec<u8>>> = HashMap::new(); // graph field -> encoded nodes
    let mut new_inits: HashMap<usize, Vec<Vec<u8>>> = HashMap::new(); // anchor field -> encoded tensors
    let mut shared: HashMap<(String, usize, usize), (Vec<String>, String)> = HashMap::new();
    let mut converted_nodes: HashSet<usize> = HashSet::new();
    let mut results: Vec<(usize, std::result::Result<RewrittenConv, SkippedConv>)> = Vec::new();
    for ((c, fact), rank) in candidates.iter().zip(&facts).zip(ranks) {
        let shape = c.shape();
        let r = match rank {
            Ok(r) => r,
            Err(reason) => {
                let cost = c.out_size().and_then(|o| cost::dense(&c.name, &shape, c.layer.has_bias(), o).ok());
                results
                    .push((c.node, Err(SkippedConv { node: c.name.clone(), weight: c.weight.clone(), reason, cost })));
                continue;
            }
        };
        let (field_index, node) = &nodes[c.node];
        let (g, cin, n) = (shape.groups, shape.in_channels, shape.out_channels);
        let (cg, taps) = (shape.in_per_group(), shape.taps());
        let key = (c.weight.clone(), g, r);
        let pieces = match options.layout {
            Layout::Fused => 1,
            Layout::Multiplier1 => g * r,
        };
        let (pair, (dw_names, pw_name)) = match shared.get(&key) {
            Some(names) => (None, names.clone()),
            None => {
                let pair = fact.truncate(&Options::new(r).split(options.split))?;
                let s = stem(&c.weight);
                let dw_names: Vec<String> = if pieces == 1 {
                    vec![names.fresh(&format!("{s}.depthwise.weight"))]
                } else {
                    (0..pieces).map(|k| names.fresh(&format!("{s}.depthwise.{k}.weight"))).collect()
                };
                let pw_name = names.fresh(&format!("{s}.pointwise.weight"));
                let anchor = inits[c.weight.as_str()].0;
                let out = new_inits.entry(anchor).or_default();
                match options.layout {
                    Layout::Fused => {
                        out.push(proto::encode_tensor(
                            &dw_names[0],
                            &[cin * r, 1, c.dims[2], c.dims[3]],
                            c.data_type,
                            &pair.dw,
                        ));
                        out.push(proto::encode_tensor(&pw_name, &[n, cg * r, 1, 1], c.data_type, &pair.pw));
                    }
                    Layout::Multiplier1 => {
                        for gi in 0..g {
                            for j in 0..r {
                                let mut w = Vec::with_capacity(cg * taps);
                                for cl in 0..cg {
                                    let src = ((gi * cg + cl) * r + j) * taps;
                                    w.extend_from_slice(&pair.dw[src..src + taps]);
                                }
                                let name = &dw_names[gi * r + j];
                                out.push(proto::encode_tensor(name, &[cg, 1, c.dims[2], c.dims[3]], c.data_type, &w));
                            }
                        }
                        // Concatenated channel (within a group) j*Cg + cl holds the fused channel cl*r + j.
                        let mut pw = vec![0.0; pair.pw.len()];
                        for o in 0..n {
                            for cl in 0..cg {
                                for j in 0..r {
                                    pw[o * cg * r + j * cg + cl] = pair.pw[o * cg * r + cl * r + j];
                                }
                            }
                        }
                        out.push(proto::encode_tensor(&pw_name, &[n, cg * r, 1, 1], c.data_type, &pw));
                    }
                }
                let names_pair = (dw_names, pw_name);
                shared.insert(key, names_pair.clone());
                (Some(pair), names_pair)
            }
        };
        let (relative_error, retained_energy) = match &pair {
            Some(p) => (p.relative_error, p.retained_energy),
            None => {
                // Shared weight already decomposed at this rank: same factors.
                let spectrum = fact.spectrum();
                (f64::NAN, spectrum.retained_energy(r))
            }
        };

        // Nodes.
        let x = node.inputs[0];
        let y = node.outputs[0];
        let base = if node.name.is_empty() { stem(&c.weight).to_string() } else { node.name.to_string() };
        let domain = node.domain.to_string();
        let attrs_with_group = |group: usize| -> Vec<Vec<u8>> {
            let mut v: Vec<Vec<u8>> = Vec::new();
            let mut had = false;
            for a in &node.attrs {
                if a.name == "group" {
                    v.push(proto::attr_int("group", group as i64));
                    had = true;
                } else {
                    v.push(a.payload.to_vec());
                }
            }
            if !had {
                v.push(proto::attr_int("group", group as i64));
            }
            v
        };
        let mut new_nodes: Vec<NewNode<'_>> = Vec::new();
        let mid = names.fresh(&format!("{y}/dac_depthwise"));
        match options.layout {
            Layout::Fused => new_nodes.push(NewNode {
                inputs: vec![x.to_string(), dw_names[0].clone()],
                outputs: vec![mid.clone()],
                name: names.fresh(&format!("{base}/depthwise")),
                op_type: "Conv",
                attrs: attrs_with_group(cin),
                extra: Vec::new(),
                domain: domain.clone(),
            }),
            Layout::Multiplier1 => {
                let slices: Vec<String> = if g == 1 {
                    vec![x.to_string()]
                } else {
                    let outs: Vec<String> = (0..g).map(|gi| names.fresh(&format!("{y}/dac_group.{gi}"))).collect();
                    let mut attrs = vec![proto::attr_int("axis", 1)];
                    if opset.unwrap_or(0) >= 18 {
                        attrs.push(proto::attr_int("num_outputs", g as i64));
                    }
                    new_nodes.push(NewNode {
                        inputs: vec![x.to_string()],
                        outputs: outs.clone(),
                        name: names.fresh(&format!("{base}/split")),
                        op_type: "Split",
                        attrs,
                        extra: Vec::new(),
                        domain: domain.clone(),
                    });
                    outs
                };
                let mut parts = Vec::with_capacity(pieces);
                for (gi, slice) in slices.iter().enumerate().take(g) {
                    for j in 0..r {
                        let k = gi * r + j;
                        let out =
                            if pieces == 1 { mid.clone() } else { names.fresh(&format!("{y}/dac_depthwise.{k}")) };
                        new_nodes.push(NewNode {
                            inputs: vec![slice.clone(), dw_names[k].clone()],
                            outputs: vec![out.clone()],
                            name: names.fresh(&format!("{base}/depthwise.{k}")),
                            op_type: "Conv",
                            attrs: attrs_with_group(cg),
                            extra: Vec::new(),
                            domain: domain.clone(),
                        });
                        parts.push(out);
                    }
                }
                if pieces > 1 {
                    new_nodes.push(NewNode {
                        inputs: parts,
                        outputs: vec![mid.clone()],
                        name: names.fresh(&format!("{base}/concat")),
                        op_type: "Concat",
                        attrs: vec![proto::attr_int("axis", 1)],
                        extra: Vec::new(),
                        domain: domain.clone(),
                    });
                }
            }
        }
        let mut pw_attrs = vec![proto::attr_ints("kernel_shape", &[1, 1])];
        if g != 1 {
            pw_attrs.push(proto::attr_int("group", g as i64));
        }
        let mut pw_inputs = vec![mid, pw_name];
        if let Some(b) = node.inputs.get(2).filter(|b| !b.is_empty()) {
            pw_inputs.push(b.to_string());
        }
        new_nodes.push(NewNode {
            inputs: pw_inputs,
            outputs: vec![y.to_string()],
            name: names.fresh(&format!("{base}/pointwise")),
            op_type: "Conv",
            attrs: pw_attrs,
            extra: node.extra_fields().map(|f| f.raw).collect(),
            domain,
        });
        replacement.insert(*field_index, new_nodes.iter().map(NewNode::encode).collect());
        converted_nodes.insert(c.node);
        let out = c.out_size();
        let has_bias = c.layer.has_bias();
        results.push((
            c.node,
            Ok(RewrittenConv {
                node: c.name.clone(),
                weight: c.weight.clone(),
                dims: c.dims,
                groups: g,
                rank: r,
                max_rank: shape.max_rank(),
                retained_energy,
                relative_error,
                input_size: c.input_size,
                size_inferred: c.size_inferred,
                before: out.and_then(|o| cost::dense(&c.name, &shape, has_bias, o).ok()),
                after: out.and_then(|o| cost::pair(&c.name, &shape, has_bias, r, o).ok()),
                nodes: new_nodes.iter().map(|n| n.name.clone()).collect(),
            }),
        ));
    }
    // Fill in the relative error of convs that shared an already decomposed weight.
    let mut errors: HashMap<(String, usize, usize), f64> = HashMap::new();
    for (_, r) in &results {
        if let Ok(c) = r {
            if !c.relative_error.is_nan() {
                errors.insert((c.weight.clone(), c.groups, c.rank), c.relative_error);
            }
        }
    }
    for (_, r) in results.iter_mut() {
        if let Ok(c) = r {
            if c.relative_error.is_nan() {
                c.relative_error = errors.get(&(c.weight.clone(), c.groups, c.rank)).copied().unwrap_or(f64::NAN);
            }
        }
    }
    results.extend(skipped_at.into_iter().map(|(k, s)| (k, Err(s))));
    results.sort_by_key(|(k, _)| *k);
    for (_, r) in results {
        match r {
            Ok(c) => report.converted.push(c),
            Err(s) => report.skipped.push(s),
        }
    }

    // Initializers that nothing uses any more.
    let mut removed: HashSet<usize> = HashSet::new();
    for c in &report.converted {
        let w = c.weight.as_str();
        let still_used = graph_outputs.contains(w)
            || node_uses.iter().enumerate().any(|(k, u)| !converted_nodes.contains(&k) && u.contains(w));
        if !still_used && removed.insert(inits[w].0) {
            report.removed_initializers.push(w.to_string());
        }
    }

    // Encode.
    let mut new_graph = Vec::with_capacity(graph_bytes.len());
    for (i, f) in graph.iter().enumerate() {
        if let Some(nodes) = replacement.get(&i) {
            for n in nodes {
                wire::put_bytes(&mut new_graph, proto::GRAPH_NODE, n);
            }
        } else if !removed.contains(&i) {
            new_graph.extend_from_slice(f.raw);
        }
        for t in new_inits.get(&i).into_iter().flatten() {
            wire::put_bytes(&mut new_graph, proto::GRAPH_INITIALIZER, t);
        }
    }
    let mut out = Vec::with_capacity(bytes.len() + new_graph.len().saturating_sub(graph_bytes.len()));
    for f in &model {
        if f.number == proto::MODEL_GRAPH {
            wire::put_bytes(&mut out, proto::MODEL_GRAPH, &new_graph);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok((out, report))
}
