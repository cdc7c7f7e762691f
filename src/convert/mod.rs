//! The one conversion pipeline every file format goes through.
//!
//! A format adapter ([`io`](crate::io) for safetensors, [`io::onnx`](crate::io::onnx)) lists
//! the convolutions it found and writes back what it is handed; between them the phases below
//! are functions returning values, the same for every format:
//!
//! 1. `select`: patterns checked (each must match a convolution), groups and input sizes
//!    settled, each layer a candidate or skipped with a [`SkipReason`];
//! 2. `needs_analysis`: which candidates must be factored before ranks can be chosen (energy
//!    policies, the planner); the adapter factors them (`analyse`);
//! 3. `decide`: one (scheme, rank) or "dense" per layer, by a policy or the planner (which
//!    chooses among the schemes a layer allows, `choice`);
//! 4. factoring: the adapter asks the chosen [`Scheme`] (of `Schemes`, all with the
//!    conversion's fit, `fit_in_use`) for each converted layer's factors and writes them;
//! 5. reporting: `converted` and `skipped` entries, gathered into a [`Summary`].
//!
//! The rules are the same for every format: a pattern matching no convolution is an error
//! ([`Error::NoMatch`]); a fixed rank above a layer's maximum leaves that layer dense
//! ([`SkipReason::RankAboveMaximum`]); the SVD backend is [`ConvertOptions::svd`] (the fast
//! [`GramSvd`] by default).

// The phases below serve the format adapters; without a format (no `safetensors` feature)
// only the public options and report types are used.
#![cfg_attr(not(feature = "safetensors"), allow(dead_code))]

mod glob;
mod options;
mod report;
mod timing;

pub use self::options::{
    ConvertOptions, FloatDtype, LayerGeometry, Layout, Precision, RankSource, SchemeChoice, Selection, SvdMethod,
};
pub use self::report::{ConvertedLayer, SizeSource, SkipReason, SkippedLayer, Summary, Uncounted};

pub(crate) use self::options::matches_any;
use crate::cost::{self, Cost};
use crate::error::{Error, Result};
use crate::fit::Fit;
use crate::moments::Scored;
use crate::plan::{self, Plan, PlanLayer, PlanOptions};
use crate::rank::{Rank, RankChoice};
use crate::scalar::Real;
use crate::scheme::{Channel, Dac, Decoupled, ErrorTable, Factored, Scheme, SchemeKind, Spatial};
use crate::svd::{GramSvd, NalgebraSvd, SvdBackend};
use crate::time::{TimeModel, TimedNode};
use crate::weights::{ConvShape, Geometry, Padding};
use std::path::Path;
use std::time::Duration;

/// A convolution as a format adapter found it.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The name reports use.
    pub name: String,
    /// The names patterns may match (the name first).
    pub keys: Vec<String>,
    /// The weight tensor's name.
    pub weight: String,
    /// `[N, C/g, kh, kw]`.
    pub dims: [usize; 4],
    /// Stride, padding, dilation and groups as far as the file knows them.
    pub geometry: Geometry,
    /// Whether the file states the groups (a graph) or the user must declare them (a
    /// checkpoint, [`ConvertOptions::groups`]).
    pub groups_known: bool,
    /// The bias's length, when there is one (checked against the weight by [`select`]: a
    /// transposed convolution's is `out / groups · groups`, not `N`).
    pub bias_len: Option<usize>,
    /// The input size inferred from the file, if any.
    pub inferred_size: Option<(usize, usize)>,
    /// Why the file does not give the input size, when it could (a graph where inference
    /// stopped).
    pub unknown_size: Option<String>,
    /// A reason the format gives for leaving the layer alone.
    pub blocked: Option<SkipReason>,
    /// Nodes the runtime runs next to the layer whatever it becomes (the layout reorders
    /// onnxruntime inserts between it and plain neighbours), timed with the layer.
    pub context: Vec<TimedNode>,
}

impl Found {
    /// Whether the layer has a bias.
    pub fn has_bias(&self) -> bool {
        self.bias_len.is_some()
    }
}

/// What selection decided for a layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    /// To be converted, at this [`ConvertOptions::rank_for`] rank if one matched.
    Candidate { rank: Option<usize> },
    /// Left dense.
    Skip(SkipReason),
}

/// A found convolution after [`select`]: groups and input size settled.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub found: Found,
    pub input: Option<(usize, usize)>,
    pub size: SizeSource,
    pub fate: Fate,
    /// The schemes the layer may be converted with, when given ([`ConvertOptions::scheme`],
    /// [`ConvertOptions::scheme_for`]); `None`: the default ([`choice`]).
    pub scheme: Option<SchemeChoice>,
}

impl Site {
    pub fn name(&self) -> &str {
        &self.found.name
    }
    pub fn shape(&self) -> ConvShape {
        let [n, cg, kh, kw] = self.found.dims;
        let groups = self.found.geometry.groups;
        ConvShape { out_channels: n, in_channels: cg * groups, kh, kw, groups }
    }
    /// The output size costs are counted at: one position without a size, `None` when unknown.
    pub fn output(&self) -> Result<Option<(usize, usize)>> {
        let (kh, kw) = (self.found.dims[2], self.found.dims[3]);
        match (self.size, self.input) {
            (SizeSource::PerPosition, _) => Ok(Some((1, 1))),
            (_, Some(hw)) => self.found.geometry.output_size(&self.found.name, (kh, kw), hw).map(Some),
            (_, None) => Ok(None),
        }
    }
    /// The cost of the factors of `scheme` at `rank` in `layout`, when the layer's size is
    /// known (per output position: the scheme's chain).
    pub fn factored_cost(&self, scheme: SchemeKind, rank: usize, layout: Option<Layout>) -> Result<Option<Cost>> {
        let f = &self.found;
        let bias = if f.has_bias() { f.dims[0] } else { 0 };
        match (self.size, self.input) {
            (SizeSource::PerPosition, _) => {
                scheme.cost(&f.name, &self.shape(), &f.geometry, f.has_bias(), rank, None).map(Some)
            }
            (_, None) => Ok(None),
            (_, Some(hw)) => {
                let layout = layout.unwrap_or(Layout::Multiplier1);
                let nodes = crate::time::layout_nodes(&f.name, scheme, layout, &self.shape(), &f.geometry, rank, hw)?;
                crate::time::nodes_cost(&f.name, &nodes, bias).map(Some)
            }
        }
    }
    /// Why the site's input size is unknown.
    fn size_reason(&self) -> String {
        self.found.unknown_size.clone().unwrap_or_else(|| "no input size was given".to_string())
    }
    /// [`Error::UnknownInputSize`] for this site.
    pub fn unknown_size(&self) -> Error {
        Error::UnknownInputSize { layer: self.found.name.clone(), reason: self.size_reason() }
    }
    /// The report entry of a site whose costs are unknown, `None` when they are known (ONNX:
    /// checkpoints list unknown sizes as errors).
    #[cfg(feature = "onnx")]
    pub fn uncounted(&self) -> Option<Uncounted> {
        (self.input.is_none() && self.size != SizeSource::PerPosition)
            .then(|| Uncounted { name: self.found.name.clone(), reason: self.size_reason() })
    }
    /// The dense layer's cost, when its size is known.
    pub fn dense_cost(&self) -> Result<Option<Cost>> {
        let (f, shape) = (&self.found, self.shape());
        if f.blocked == Some(SkipReason::Transposed) {
            // Its MACs per input position, as counted at stride 1 "same"; its own bias length.
            let bias = f.bias_len.unwrap_or(0) as u64;
            let cost = self.output()?.map(|o| cost::dense(&f.name, &shape, false, o)).transpose()?;
            return Ok(cost.map(|c| Cost { params: c.params.saturating_add(bias), ..c }));
        }
        self.output()?.map(|o| cost::dense(&f.name, &shape, f.has_bias(), o)).transpose()
    }
}

/// A layer's rank decision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// `layout`: the nodes' layout, `None` for a scheme with one ([`crate::time::layouts_of`]).
    Convert {
        scheme: SchemeKind,
        rank: usize,
        layout: Option<Layout>,
    },
    Skip(SkipReason),
}

/// What no site covers, counted in the whole-network totals: MACs and parameters, and the
/// modeled time of what the format could model.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fixed {
    pub cost: Cost,
    pub time: Duration,
}

/// What ranks are chosen from: a factored layer's errors, and its planner view when planned.
#[derive(Debug, Clone)]
pub(crate) enum Analysis {
    Errors(ErrorTable),
    Planned(PlanLayer),
}

impl Analysis {
    fn errors(&self) -> &ErrorTable {
        match self {
            Analysis::Errors(e) => e,
            Analysis::Planned(p) => p.errors(),
        }
    }
}

/// The SVD backend for `method`: the one place a backend is chosen.
pub(crate) fn backend<T: Real>(method: SvdMethod) -> Box<dyn SvdBackend<T>> {
    match method {
        SvdMethod::Gram => Box::new(GramSvd::default()),
        SvdMethod::Nalgebra => Box::new(NalgebraSvd::default()),
    }
}

/// Every scheme, configured by the options (fit; DAC's split and SVD backend).
pub(crate) struct Schemes<'b, T: Real> {
    dac: Dac<'b, T>,
    spatial: Spatial,
    channel: Channel,
    decoupled: Decoupled,
}

impl<'b, T: Real> Schemes<'b, T> {
    /// Every scheme with `fit` (from [`fit_in_use`]), DAC with the options' split.
    pub fn new(fit: Fit, options: &ConvertOptions, backend: &'b dyn SvdBackend<T>) -> Self {
        Self {
            dac: Dac::new(backend).fit(fit).split(options.split),
            spatial: Spatial::new().fit(fit),
            channel: Channel::new().fit(fit),
            decoupled: Decoupled::new().fit(fit),
        }
    }
    /// The scheme of `kind`.
    pub fn get(&self, kind: SchemeKind) -> &dyn Scheme<T> {
        match kind {
            SchemeKind::Dac => &self.dac,
            SchemeKind::Spatial => &self.spatial,
            SchemeKind::Channel => &self.channel,
            SchemeKind::Decoupled => &self.decoupled,
        }
    }
}

/// The schemes a site may be converted with: as given, or by default any scheme when the
/// planner chooses its rank and DAC's otherwise.
pub(crate) fn choice(site: &Site, options: &ConvertOptions) -> SchemeChoice {
    match site.scheme {
        Some(c) => c,
        None if planned(site, options) => SchemeChoice::Auto,
        None => SchemeChoice::Only(SchemeKind::Dac),
    }
}

/// The fit of the whole conversion: as given, or [`Fit::frobenius`] unless some candidate may
/// take any scheme (then `Fit::correlated(Fit::AUTO_RHO)`).
pub(crate) fn fit_in_use(sites: &[Site], options: &ConvertOptions) -> Fit {
    let auto = |s: &Site| matches!(s.fate, Fate::Candidate { .. }) && choice(s, options) == SchemeChoice::Auto;
    match options.fit {
        Some(fit) => fit,
        None if sites.iter().any(auto) => Fit::auto(),
        None => Fit::frobenius(),
    }
}

/// Abbreviated list of layer names for messages.
fn available(found: &[Found]) -> String {
    let mut names: Vec<&str> = found.iter().take(8).map(|l| l.name.as_str()).collect();
    if found.len() > 8 {
        names.push("...");
    }
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Phase 1: checks every pattern, settles groups and sizes (`input_size`: the network's, used
/// where nothing else is known), and decides which layers are candidates. `per_position`: a
/// format without sizes (a checkpoint) counts one output position when no size is given at all;
/// `targeted`: ranks come from a planner target ([`RankSource::Target`]).
pub(crate) fn select(
    found: Vec<Found>,
    selection: &Selection,
    input_size: Option<(usize, usize)>,
    file: &Path,
    per_position: bool,
    targeted: bool,
) -> Result<Vec<Site>> {
    for (option, pattern) in selection.patterns() {
        if !found.iter().any(|f| matches_any(pattern, &f.keys)) {
            let available = available(&found);
            return Err(Error::NoMatch { file: file.to_path_buf(), option, pattern: pattern.to_string(), available });
        }
    }
    let mut sites = Vec::with_capacity(found.len());
    for mut f in found {
        if selection.transposed.iter().any(|p| matches_any(p, &f.keys)) {
            transposed(&mut f)?;
        }
        settle_geometry(&mut f, selection)?;
        check_bias(&f, file)?;
        let (input, size) = settle_size(&f, selection, input_size, per_position);
        let scheme = Selection::last_match(&selection.schemes, &f.keys).copied().or(selection.scheme);
        let fate = fate(&f, selection, scheme, targeted);
        sites.push(Site { found: f, input, size, fate, scheme });
    }
    Ok(sites)
}

/// The bias has the layer's output channels: the weight's first dimension, or a declared
/// transposed convolution's second times its groups.
fn check_bias(f: &Found, file: &Path) -> Result<()> {
    let Some(len) = f.bias_len else { return Ok(()) };
    let [n, c, _, _] = f.dims;
    let transposed_len = c.saturating_mul(f.geometry.groups);
    let transposed = f.blocked == Some(SkipReason::Transposed);
    let want = if transposed { transposed_len } else { n };
    if len == want {
        return Ok(());
    }
    let mut reason =
        format!("shape [{len}] does not match `{}` of shape {:?}: a bias needs [{want}]", f.weight, f.dims);
    if !transposed && len == transposed_len {
        reason.push_str(
            "; a transposed convolution's (ConvTranspose2d) would match: declare it (\"transposed\": true in the \
             geometry sidecar, ConvertOptions::transposed)",
        );
    }
    let tensor = Some(format!("{}.bias", f.name));
    Err(Error::Format { file: file.to_path_buf(), tensor, reason })
}

/// Marks a checkpoint's layer declared transposed; a graph's `Conv` node is never one.
fn transposed(f: &mut Found) -> Result<()> {
    if f.groups_known {
        return Err(Error::InvalidParameter {
            context: format!("layer `{}`", f.name),
            what: "transposed",
            value: 1.0,
            expected: "a checkpoint's layer (a graph's Conv node is a convolution; its ConvTranspose nodes are never converted)",
        });
    }
    f.blocked = Some(SkipReason::Transposed);
    Ok(())
}

/// Applies a checkpoint's geometry declarations (groups, stride, padding, dilation; a graph's
/// must agree with the graph) and checks that the groups divide the output channels.
fn settle_geometry(f: &mut Found, selection: &Selection) -> Result<()> {
    let mut declared = f.geometry;
    let keys = &f.keys;
    declared.groups = Selection::last_match(&selection.groups, keys).copied().unwrap_or(declared.groups);
    declared.stride = Selection::last_match(&selection.strides, keys).copied().unwrap_or(declared.stride);
    declared.dilation = Selection::last_match(&selection.dilations, keys).copied().unwrap_or(declared.dilation);
    declared.padding = Selection::last_match(&selection.paddings, keys).copied().unwrap_or(declared.padding);
    if f.groups_known && declared != f.geometry {
        let graph = f.geometry;
        let (what, value) = if declared.groups != graph.groups {
            ("groups", declared.groups)
        } else if declared.stride != graph.stride {
            ("stride", declared.stride.0)
        } else if declared.dilation != graph.dilation {
            ("dilation", declared.dilation.0)
        } else {
            ("padding (top)", declared.padding.top)
        };
        return Err(Error::InvalidParameter {
            context: format!("layer `{}`", f.name),
            what,
            value: value as f64,
            expected: "what the graph gives the layer (a graph's geometry needs no declaration)",
        });
    }
    for (v, what) in [
        (declared.stride.0, "stride (h)"),
        (declared.stride.1, "stride (w)"),
        (declared.dilation.0, "dilation (h)"),
        (declared.dilation.1, "dilation (w)"),
    ] {
        if v == 0 {
            return Err(Error::ZeroSize { layer: f.name.clone(), what });
        }
    }
    f.geometry = declared;
    if f.blocked == Some(SkipReason::Transposed) {
        // Counted per input position: stride 1, "same" padding, whatever was declared.
        let padding = Padding::same(f.dims[2], f.dims[3]);
        f.geometry = Geometry { groups: declared.groups, padding, ..Geometry::default() };
    }
    let g = f.geometry.groups;
    if g == 0 || !f.dims[0].is_multiple_of(g) {
        let [n, cg, _, _] = f.dims;
        return Err(Error::InvalidGroups {
            layer: f.name.clone(),
            groups: g,
            in_channels: cg.saturating_mul(g),
            out_channels: n,
        });
    }
    Ok(())
}

/// The input size a layer's costs refer to, and where it came from.
fn settle_size(
    f: &Found,
    selection: &Selection,
    input_size: Option<(usize, usize)>,
    per_position: bool,
) -> (Option<(usize, usize)>, SizeSource) {
    if let Some(hw) = f.inferred_size {
        return (Some(hw), SizeSource::Inferred);
    }
    if let Some(&hw) = Selection::last_match(&selection.inputs, &f.keys) {
        return (Some(hw), SizeSource::Declared);
    }
    match (input_size, per_position) {
        (Some(hw), _) => (Some(hw), SizeSource::Default),
        (None, true) => (None, SizeSource::PerPosition),
        (None, false) => (None, SizeSource::Unknown),
    }
}

/// Whether a layer is a candidate, by the format's reason, its kernel, its schemes (`scheme`
/// as given; `targeted`: ranks are planned) and the patterns.
fn fate(f: &Found, selection: &Selection, scheme: Option<SchemeChoice>, targeted: bool) -> Fate {
    let rank = Selection::last_match(&selection.ranks, &f.keys).copied();
    let reason = if let Some(r) = &f.blocked {
        Some(r.clone())
    } else if is_pointwise(f) && !channel_allowed(scheme, rank, targeted) {
        Some(SkipReason::PointwiseKernel)
    } else if !selection.included(&f.keys) {
        Some(SkipReason::NotIncluded)
    } else if selection.excluded(&f.keys) {
        Some(SkipReason::Excluded)
    } else {
        None
    };
    match reason {
        Some(r) => Fate::Skip(r),
        None => Fate::Candidate { rank },
    }
}

fn is_pointwise(f: &Found) -> bool {
    f.dims[2] * f.dims[3] == 1
}

/// Whether channel SVD, the one scheme that reduces a 1x1 kernel (a low-rank product of two
/// 1x1 convolutions), may convert a layer: chosen, or `auto` (given, or the default of a
/// planned rank: `targeted` and no per-layer rank).
fn channel_allowed(scheme: Option<SchemeChoice>, rank: Option<usize>, targeted: bool) -> bool {
    match scheme {
        Some(SchemeChoice::Auto | SchemeChoice::Only(SchemeKind::Channel)) => true,
        Some(SchemeChoice::Only(_)) => false,
        None => targeted && rank.is_none(),
    }
}

/// The schemes a site's layer is factored by: its [`choice`]'s, of which only channel SVD for
/// a 1x1 kernel (the others cannot reduce it).
pub(crate) fn kinds(site: &Site, options: &ConvertOptions) -> Vec<SchemeKind> {
    if is_pointwise(&site.found) {
        return vec![SchemeKind::Channel];
    }
    choice(site, options).kinds()
}

/// Whether a site's rank is planned by the whole-network planner.
pub(crate) fn planned(site: &Site, options: &ConvertOptions) -> bool {
    options.ranks.is_target() && site.fate == Fate::Candidate { rank: None }
}

/// Phase 2: which sites must be factored before ranks are chosen.
///
/// # Errors
/// [`Error::UnknownInputSize`] for a layer the planner must size and whose size is unknown.
pub(crate) fn needs_analysis(sites: &[Site], options: &ConvertOptions) -> Result<Vec<bool>> {
    if let Some(s) = sites.iter().find(|s| planned(s, options) && s.input.is_none()) {
        return Err(s.unknown_size());
    }
    let by_policy = |s: &&Site| matches!(s.fate, Fate::Candidate { .. }) && !planned(s, options);
    if let Some(s) = sites.iter().filter(by_policy).find(|s| s.scheme == Some(SchemeChoice::Auto)) {
        return Err(Error::SchemeNeedsPlanner { layer: s.found.name.clone() });
    }
    let energy = matches!(options.ranks, RankSource::Policy(Rank::Energy(_)));
    Ok(sites.iter().map(|s| planned(s, options) || (energy && s.fate == Fate::Candidate { rank: None })).collect())
}

/// What [`decide`] needs from a layer factored by each of its schemes (`site.scheme.kinds()`,
/// in that order).
///
/// # Errors
/// [`Error::EmptyOutput`] when the layer's input is too small for its kernel;
/// [`Error::MissingInputMoments`] and the errors of [`Scored::new`] when input moments score
/// the planned layers.
pub(crate) fn analyse<T: Real>(
    site: &Site,
    factored: &[&dyn Factored<T>],
    options: &ConvertOptions,
) -> Result<Analysis> {
    let (true, Some(hw)) = (planned(site, options), site.input) else {
        return Ok(Analysis::Errors(factored[0].errors()));
    };
    let layer = match &options.input_moments {
        None => PlanLayer::with_schemes(factored, hw)?,
        Some(all) => {
            let name = site.name();
            let moments = all.get(name).ok_or_else(|| Error::MissingInputMoments { layer: name.to_string() })?;
            let scored = factored.iter().map(|f| Scored::new(*f, moments)).collect::<Result<Vec<_>>>()?;
            let views: Vec<&dyn Factored<T>> = scored.iter().map(|s| s as &dyn Factored<T>).collect();
            PlanLayer::with_schemes(&views, hw)?
        }
    };
    Ok(Analysis::Planned(layer.with_bias(site.found.has_bias())))
}

/// Phase 3: one decision per site, by the policy or the planner (`analyses` from [`analyse`]
/// for the sites [`needs_analysis`] named; `fixed` what no site covers).
pub(crate) fn decide(
    sites: &[Site],
    analyses: &[Option<Analysis>],
    options: &ConvertOptions,
    fixed: Fixed,
) -> Result<(Vec<Decision>, Option<Plan>)> {
    // `None`: left to the planner.
    let mut decided: Vec<Option<Decision>> = Vec::with_capacity(sites.len());
    for (s, a) in sites.iter().zip(analyses) {
        decided.push(match (&s.fate, options.ranks) {
            (Fate::Skip(r), _) => Some(Decision::Skip(r.clone())),
            (Fate::Candidate { rank: Some(r) }, _) => Some(by_policy(s, Rank::Fixed(*r), None, options)?),
            (Fate::Candidate { rank: None }, RankSource::Policy(p)) => Some(by_policy(s, p, a.as_ref(), options)?),
            (Fate::Candidate { rank: None }, RankSource::Target(_)) => None,
        });
    }
    let plan = match options.ranks {
        RankSource::Target(target) => Some(plan_rest(sites, analyses, &mut decided, &target, fixed, options)?),
        RankSource::Policy(_) => None,
    };
    if let Some(p) = plan.as_ref().filter(|p| options.require_target && !p.met) {
        let (reached, max) = p.achieved();
        return Err(Error::TargetNotMet { target: p.target, reached, max });
    }
    let decisions = decided.into_iter().map(|d| d.expect("plan_rest decides every undecided site")).collect();
    Ok((decisions, plan))
}

/// Plans the undecided sites for `target` around the decided ones and fills in their decisions.
fn plan_rest(
    sites: &[Site],
    analyses: &[Option<Analysis>],
    decided: &mut [Option<Decision>],
    target: &plan::Target,
    mut fixed: Fixed,
    options: &ConvertOptions,
) -> Result<Plan> {
    let (mut layers, mut indices) = (Vec::new(), Vec::new());
    for (i, (s, a)) in sites.iter().zip(analyses).enumerate() {
        match (&decided[i], a) {
            (Some(d), _) => {
                fixed.cost = fixed.cost + decided_cost(s, d)?.ok_or_else(|| s.unknown_size())?;
                fixed.time += s.decided_time(d, &options.time)?.ok_or_else(|| s.unknown_size())?;
            }
            (None, Some(Analysis::Planned(l))) => {
                // The planner times the layer alone; what runs beside it is fixed.
                fixed.time += s.context_time(&options.time);
                layers.push(l.clone());
                indices.push(i);
            }
            (None, _) => return Err(s.unknown_size()),
        }
    }
    let depth = options.depth_weight.unwrap_or_else(|| plan::default_depth_weight(&layers));
    let mut plan_options = PlanOptions::default()
        .fixed(fixed.cost)
        .fixed_time(fixed.time)
        .depth_weight(depth)
        .time_guard(!options.allow_slower);
    plan_options.time = options.time.clone();
    plan_options.layout = options.layout;
    let result = plan::plan(&layers, target, &plan_options)?;
    for (&i, choice) in indices.iter().zip(&result.layers) {
        decided[i] = Some(match (choice.scheme, choice.rank) {
            (Some(scheme), Some(rank)) => Decision::Convert { scheme, rank, layout: choice.layout },
            _ => Decision::Skip(SkipReason::PlannedDense),
        });
    }
    Ok(result)
}

/// A policy's decision for one site; a fixed rank above the maximum leaves it dense.
fn by_policy(site: &Site, policy: Rank, analysis: Option<&Analysis>, options: &ConvertOptions) -> Result<Decision> {
    let shape = site.shape();
    let SchemeChoice::Only(scheme) = choice(site, options) else {
        return Err(Error::SchemeNeedsPlanner { layer: site.name().to_string() });
    };
    if let Rank::Fixed(rank) = policy {
        let max = scheme.max_rank(&shape);
        if rank > max {
            return Ok(Decision::Skip(SkipReason::RankAboveMaximum { rank, max }));
        }
    }
    let errors = analysis.map(Analysis::errors);
    Ok(match policy.choose_from(site.name(), scheme, &shape, errors, options.allow_slower)? {
        RankChoice::Decompose { rank } => {
            Decision::Convert { scheme, rank, layout: site.layout_for(scheme, rank, options)? }
        }
        RankChoice::KeepDense { rank, reason } => Decision::Skip(SkipReason::KeptDense { rank, reason }),
    })
}

/// The cost of a site as decided (dense or its factors), when its size is known.
fn decided_cost(site: &Site, decision: &Decision) -> Result<Option<Cost>> {
    match decision {
        Decision::Skip(_) => site.dense_cost(),
        Decision::Convert { scheme, rank, layout } => site.factored_cost(*scheme, *rank, *layout),
    }
}

/// Phase 5: the report entry of a converted site (`errors`: its factorisation's retained energy
/// and relative error at `rank`, [`Factored::error_at`]; the factors were written as `written`,
/// in `dtype`; times by `model`).
pub(crate) fn converted(
    site: &Site,
    (scheme, rank, layout): (SchemeKind, usize, Option<Layout>),
    (retained_energy, relative_error): (f64, f64),
    dtype: String,
    written: Vec<String>,
    model: &TimeModel,
) -> Result<ConvertedLayer> {
    let shape = site.shape();
    let after = site.factored_cost(scheme, rank, layout)?;
    let decision = Decision::Convert { scheme, rank, layout };
    Ok(ConvertedLayer {
        name: site.found.name.clone(),
        weight: site.found.weight.clone(),
        dims: site.found.dims,
        groups: shape.groups,
        scheme,
        rank,
        max_rank: scheme.max_rank(&shape),
        layout,
        retained_energy,
        relative_error,
        dtype,
        input_size: site.input,
        size: site.size,
        before: site.dense_cost()?,
        after,
        time_before: site.dense_time(model)?,
        time_after: site.decided_time(&decision, model)?,
        written,
    })
}

/// Phase 5: the report entry of a site left dense.
pub(crate) fn skipped(site: &Site, reason: SkipReason, model: &TimeModel) -> Result<SkippedLayer> {
    Ok(SkippedLayer {
        name: site.found.name.clone(),
        weight: site.found.weight.clone(),
        dims: Some(site.found.dims),
        groups: site.found.geometry.groups,
        reason,
        input_size: site.input,
        size: site.size,
        cost: site.dense_cost()?,
        time: site.dense_time(model)?,
    })
}
