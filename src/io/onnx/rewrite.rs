//! The ONNX adapter: decode the graph, let the pipeline decide, factor, patch, re-encode.

use super::discover::{self, stem, Conv, Discovered};
use super::external::External;
use super::graph::{Graph, Patch};
use super::layout::{self, Chain, Names, PairNames, PairValues};
use super::sum::{self, Sum};
use super::{onnx_error, proto};
use crate::convert::{self, Analysis, ConvertOptions, ConvertedLayer, Decision, Layout, Precision, Site, Summary};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::scheme::FactorSpec;
use crate::scheme::SchemeKind;
use crate::scheme::{Factored, Workspace};
use crate::svd::SvdBackend;
use crate::weights::Conv2dWeights;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The schemes factoring f32 and f64 weights, and the options choosing among them.
struct Schemes<'b> {
    f32: convert::Schemes<'b, f32>,
    f64: convert::Schemes<'b, f64>,
    options: &'b ConvertOptions,
}

/// A convolution's weights in the precision it is factored in: f64 for double weights or
/// [`Precision::F64`], else f32.
enum Layer {
    F32(Conv2dWeights<f32>),
    F64(Conv2dWeights<f64>),
}

/// A layer factored once by one scheme, kept from the analysis to the writing.
enum Fact<'a> {
    F32(Box<dyn Factored<f32> + 'a>),
    F64(Box<dyn Factored<f64> + 'a>),
}

/// Factor weights in f64, and their retained energy and relative error.
type Pair = (Vec<Vec<f64>>, (f64, f64));

/// Rewrites `bytes`; `file` is used in error messages only.
pub(crate) fn rewrite(
    bytes: &[u8],
    options: &ConvertOptions,
    file: &Path,
    ext: &External,
) -> Result<(Vec<u8>, Summary)> {
    if let Some(dt) = options.output_dtype {
        let reason = format!("output_dtype {dt}: an ONNX graph keeps its tensors' data types; leave it unset");
        return Err(onnx_error(file, "options", reason));
    }
    let g = Graph::parse(bytes, file, ext)?;
    let (shapes, model_size) = g.shapes(options.input_size);
    let Discovered { convs, found, blocked, fixed, mut uncounted, unmodeled, subgraph_nodes } =
        discover::find(&g, &shapes, options, file)?;
    // A graph's layers are counted at their inferred or declared sizes, never at the model's.
    let targeted = options.ranks.is_target();
    let sites = convert::select(found, &options.selection, None, file, false, targeted)?;
    uncounted.extend(sites.iter().filter_map(Site::uncounted));
    // A convolution's name when one is unknown (the size a user can declare), else the node's.
    let unknown_conv = uncounted.iter().find(|u| sites.iter().any(|s| s.found.name == u.name));
    if let (true, Some(u)) = (targeted, unknown_conv.or(uncounted.first())) {
        return Err(Error::UnknownInputSize { layer: u.name.clone(), reason: u.reason.clone() });
    }
    let (b32, b64): (Box<dyn SvdBackend<f32>>, Box<dyn SvdBackend<f64>>) =
        (convert::backend(options.svd), convert::backend(options.svd));
    let fit = convert::fit_in_use(&sites, options);
    let schemes = Schemes {
        f32: convert::Schemes::new(fit, options, &*b32),
        f64: convert::Schemes::new(fit, options, &*b64),
        options,
    };
    let needs = convert::needs_analysis(&sites, options)?;
    // Layers ranked from their spectra are decoded and factored once, and kept until written.
    let mut layers = Vec::with_capacity(sites.len());
    for ((site, conv), need) in sites.iter().zip(&convs).zip(needs) {
        layers.push(if need { Some(Layer::decode(&g, site, conv, options, file)?) } else { None });
    }
    // One layer per parallel task (the matrix schemes' large eigenproblems dominate).
    let facts: Vec<Vec<Fact<'_>>> = layers
        .par_iter()
        .zip(&sites)
        .map(|(l, site)| l.as_ref().map_or(Ok(Vec::new()), |l| l.factor_all(site, &schemes)))
        .collect::<Result<_>>()?;
    let analyses: Vec<Option<Analysis>> = facts
        .iter()
        .zip(&sites)
        .map(|(f, site)| (!f.is_empty()).then(|| analyse(f, site, options)).transpose())
        .collect::<Result<_>>()?;
    let (decisions, plan) = convert::decide(&sites, &analyses, options, fixed)?;
    let mut rw = Rewriter {
        g: &g,
        file,
        options,
        patch: Patch::default(),
        names: Names(g.names.clone()),
        shared: HashMap::new(),
    };
    let mut entries: Vec<(usize, std::result::Result<ConvertedLayer, convert::SkippedLayer>)> =
        blocked.into_iter().map(|(k, s)| (k, Err(s))).collect();
    for (((site, conv), decision), fact) in sites.iter().zip(&convs).zip(&decisions).zip(&facts) {
        entries.push((
            conv.node,
            match decision {
                Decision::Convert { scheme, rank, layout } => {
                    let kept = fact.iter().find(|f| f.scheme() == *scheme);
                    Ok(rw.convert(site, conv, (*scheme, *rank, *layout), &schemes, kept)?)
                }
                Decision::Skip(reason) => Err(convert::skipped(site, reason.clone(), &options.time)?),
            },
        ));
    }
    entries.sort_by_key(|(k, _)| *k);
    let (converted, skipped) = split(entries);
    let removed = rw.remove_unused(&converted);
    // IR version 3 and below: every initializer is also a graph input.
    rw.patch.new_as_inputs = (1..=3).contains(&g.ir_version);
    let out = g.encode(&rw.patch, bytes.len());
    if out.len() > i32::MAX as usize {
        let reason = format!(
            "the rewritten model is {} bytes, above protobuf's 2 GiB limit for one message (dac writes \
             every tensor inline, external data included)",
            out.len()
        );
        return Err(onnx_error(file, "model", reason));
    }
    let summary = Summary {
        input: file.to_path_buf(),
        output: Path::new("<memory>").to_path_buf(),
        input_size: model_size,
        converted,
        skipped,
        removed,
        copied_tensors: 0,
        linear: fixed.cost,
        linear_time: Some(fixed.time),
        time_model: options.time.describe(),
        time_model_other_cpu: options.time.unlike(&crate::time::Cpu::this()),
        uncounted,
        unmodeled,
        subgraph_nodes,
        other_weights: Vec::new(),
        plan,
        svd: b32.name(),
        fit,
        input_moments: options.input_moments.is_some(),
        layout: options.layout,
        assumption: None,
    };
    Ok((out, summary))
}

type Entry = std::result::Result<ConvertedLayer, convert::SkippedLayer>;

fn split(entries: Vec<(usize, Entry)>) -> (Vec<ConvertedLayer>, Vec<convert::SkippedLayer>) {
    let (mut converted, mut skipped) = (Vec::new(), Vec::new());
    for (_, e) in entries {
        match e {
            Ok(c) => converted.push(c),
            Err(s) => skipped.push(s),
        }
    }
    (converted, skipped)
}

impl Layer {
    /// The weights of a site's `Conv` in the precision it is factored in.
    fn decode(g: &Graph<'_>, site: &Site, conv: &Conv<'_>, options: &ConvertOptions, file: &Path) -> Result<Self> {
        let (_, t) = &g.inits[conv.weight];
        let values = t.values().map_err(|e| onnx_error(file, e.location, e.reason))?;
        Ok(if conv.data_type == proto::DT_DOUBLE || options.precision == Precision::F64 {
            Layer::F64(build(site, &values)?)
        } else {
            Layer::F32(build(site, &values)?)
        })
    }
    fn factor<'a>(&'a self, scheme: SchemeKind, schemes: &Schemes<'_>) -> Result<Fact<'a>> {
        Ok(match self {
            Layer::F32(l) => Fact::F32(schemes.f32.get(scheme).factor(l)?),
            Layer::F64(l) => Fact::F64(schemes.f64.get(scheme).factor(l)?),
        })
    }
    /// Factored by every scheme the site allows, in that order.
    fn factor_all<'a>(&'a self, site: &Site, schemes: &Schemes<'_>) -> Result<Vec<Fact<'a>>> {
        convert::kinds(site, schemes.options).into_iter().map(|k| self.factor(k, schemes)).collect()
    }
}

/// The layer of `site` with the weight `values` (ONNX keeps them in f64 after decoding).
pub(super) fn build<T: Real>(site: &Site, values: &[f64]) -> Result<Conv2dWeights<T>> {
    let weight = values.iter().map(|&v| T::from_f64_lossy(v)).collect();
    Conv2dWeights::builder(weight, site.found.dims).name(site.name()).geometry(site.found.geometry).build()
}

/// [`convert::analyse`] of a layer factored by each of its schemes (all in one precision).
fn analyse(facts: &[Fact<'_>], site: &Site, options: &ConvertOptions) -> Result<Analysis> {
    match &facts[0] {
        Fact::F32(_) => {
            let refs: Vec<&dyn Factored<f32>> =
                facts.iter().filter_map(|f| if let Fact::F32(f) = f { Some(&**f) } else { None }).collect();
            convert::analyse(site, &refs, options)
        }
        Fact::F64(_) => {
            let refs: Vec<&dyn Factored<f64>> =
                facts.iter().filter_map(|f| if let Fact::F64(f) = f { Some(&**f) } else { None }).collect();
            convert::analyse(site, &refs, options)
        }
    }
}

impl Fact<'_> {
    fn scheme(&self) -> SchemeKind {
        match self {
            Fact::F32(f) => f.scheme(),
            Fact::F64(f) => f.scheme(),
        }
    }
    fn pair(&self, rank: usize) -> Result<Pair> {
        match self {
            Fact::F32(f) => pair_of(&**f, rank),
            Fact::F64(f) => pair_of(&**f, rank),
        }
    }
}

fn pair_of<T: Real>(f: &dyn Factored<T>, rank: usize) -> Result<Pair> {
    let factors = f.factors(rank, &mut Workspace::new())?;
    let values = factors.iter().map(|x| x.conv.weight().iter().map(|v| v.to_f64_exact()).collect()).collect();
    Ok((values, f.error_at(rank)))
}

/// The initializer names of factors written once: DAC's pair (per layout) or a chain.
#[derive(Debug, Clone)]
enum InitNames {
    Pair(PairNames),
    Chain(Vec<String>),
    Sum(Vec<Vec<FactorSpec>>, Vec<Vec<String>>),
}

/// Factors already written: their initializer names, and their retained energy and relative
/// error.
type Written = (InitNames, (f64, f64));

/// The patch being built, and the names handed out.
struct Rewriter<'g, 'a> {
    g: &'g Graph<'a>,
    file: &'g Path,
    options: &'g ConvertOptions,
    patch: Patch,
    names: Names,
    /// Factors already written, by (weight, groups, scheme, rank, layout): a shared weight is
    /// decomposed once per layout.
    shared: HashMap<(String, usize, SchemeKind, usize, Option<Layout>), Written>,
}

impl Rewriter<'_, '_> {
    /// Replaces a site's `Conv` by the factors of `scheme` at `rank`.
    fn convert(
        &mut self,
        site: &Site,
        conv: &Conv<'_>,
        (scheme, rank, layout): (SchemeKind, usize, Option<Layout>),
        schemes: &Schemes<'_>,
        kept: Option<&Fact<'_>>,
    ) -> Result<ConvertedLayer> {
        let (field, node) = &self.g.nodes[conv.node];
        let shape = site.shape();
        let pair = layout::Site {
            node,
            shape,
            rank,
            layout: layout.unwrap_or(Layout::Multiplier1),
            opset: self.g.opset,
            stem: stem(conv.weight),
        };
        let chain =
            Chain { node, specs: scheme.factor_specs(&shape, &site.found.geometry, rank), stem: stem(conv.weight) };
        let key = (conv.weight.to_string(), shape.groups, scheme, rank, layout);
        let (init_names, errors) = match self.shared.get(&key) {
            Some(done) => done.clone(),
            None => {
                let (values, errors) = match kept {
                    Some(f) => f.pair(rank)?,
                    None => {
                        let layer = Layer::decode(self.g, site, conv, self.options, self.file)?;
                        let pair = layer.factor(scheme, schemes)?.pair(rank)?;
                        pair
                    }
                };
                let branches = match layout {
                    Some(Layout::Sum) => sum::branches(scheme, &shape, &site.found.geometry, rank, &values),
                    _ => None,
                };
                let (names, inits) = if let Some(b) = branches {
                    let e = sum::initializers(&b, stem(conv.weight), &mut self.names, conv.data_type);
                    (InitNames::Sum(e.specs, e.names), e.initializers)
                } else if scheme == SchemeKind::Dac {
                    let names = pair.pair_names(&mut self.names);
                    let values = PairValues { depthwise: &values[0], pointwise: &values[1] };
                    let inits = pair.initializers(&values, &names, conv.data_type);
                    (InitNames::Pair(names), inits)
                } else {
                    let names = chain.names(&mut self.names);
                    let inits = chain.initializers(&values, &names, conv.data_type);
                    (InitNames::Chain(names), inits)
                };
                let anchor = self.g.inits[conv.weight].0;
                self.patch.initializers.entry(anchor).or_default().extend(inits);
                self.shared.insert(key, (names.clone(), errors));
                (names, errors)
            }
        };
        let nodes = match &init_names {
            InitNames::Pair(n) => pair.nodes(n, &mut self.names),
            InitNames::Chain(n) => chain.nodes(n, &mut self.names),
            InitNames::Sum(specs, n) => {
                Sum { node, specs: specs.clone(), stem: stem(conv.weight) }.nodes(n, &mut self.names)
            }
        };
        self.patch.nodes.insert(*field, nodes.iter().map(proto::NewNode::encode).collect());
        let written = nodes.iter().map(|n| n.name.clone()).collect();
        let dtype = proto::data_type_name(conv.data_type).to_string();
        convert::converted(site, (scheme, rank, layout), errors, dtype, written, &self.options.time)
    }

    /// Removes the converted weights nothing else uses; returns their names.
    fn remove_unused(&mut self, converted: &[ConvertedLayer]) -> Vec<String> {
        let replaced: HashSet<usize> = self.patch.nodes.keys().copied().collect();
        let mut removed = Vec::new();
        let mut seen = HashSet::new();
        for c in converted {
            let w = c.weight.as_str();
            let still_used = self.g.outputs.contains(w)
                || self.g.nodes.iter().zip(&self.g.node_uses).any(|((f, _), u)| !replaced.contains(f) && u.contains(w));
            let field = self.g.inits[w].0;
            if !still_used && seen.insert(field) {
                self.patch.removed.insert(field);
                // A weight listed as a graph input too (`freeze_input_weights`) leaves both.
                self.patch.removed.extend(self.g.input_fields.get(w));
                removed.push(w.to_string());
            }
        }
        removed
    }
}
