//! The whole-network rank planner: one rank (or "stay dense") per layer for a target MAC
//! reduction or parameter budget, from the weights alone.
//!
//! Every layer is described by a [`PlanLayer`]: its error at every rank (an
//! [`ErrorTable`] from its [factorisation](crate::scheme::Factored)), its geometry and the size
//! of its input feature map. For each layer the candidates are "dense" and every rank below
//! break-even (ranks at or above it cost as much as the dense layer or more and are never
//! chosen). Each candidate has an exact cost ([`cost`](mod@crate::cost)) and a data-free damage
//! score ([`Proxy`]). The planner minimises the summed score subject to the target with a
//! multiple-choice knapsack (dynamic programming over a conservatively rounded savings axis,
//! then a greedy pass that gives back any savings the rounding over-spent), so the target is
//! always met when it can be, and the result is deterministic.
//!
//! ```
//! use dac::{plan, Conv2dWeights, Padding, svd::NalgebraSvd};
//! use dac::plan::{PlanLayer, PlanOptions, Target};
//! use dac::scheme::{Dac, Scheme};
//!
//! let w = |n: usize, c: usize| -> Vec<f32> {
//!     (0..n * c * 9).map(|i| ((i * 7919 % 113) as f32 - 56.0) / 56.0).collect()
//! };
//! let a = Conv2dWeights::builder(w(32, 16), [32, 16, 3, 3]).name("a").padding(Padding::uniform(1)).build()?;
//! let b = Conv2dWeights::builder(w(64, 32), [64, 32, 3, 3]).name("b").padding(Padding::uniform(1)).build()?;
//! let svd = NalgebraSvd::default();
//! let dac = Dac::new(&svd);
//! let layers = [PlanLayer::new(&*dac.factor(&a)?, (16, 16))?, PlanLayer::new(&*dac.factor(&b)?, (16, 16))?];
//! let p = plan(&layers, &Target::MacReduction(2.0), &PlanOptions::default())?;
//! assert!(p.met && p.reduction() >= 2.0);
//! for l in &p.layers {
//!     println!("{}: {:?}", l.name, l.rank); // None = dense
//! }
//! # Ok::<(), dac::Error>(())
//! ```

use crate::cost::{self, Cost};
use crate::decompose::Spectrum;
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::scheme::{ErrorTable, Factored, SchemeKind};
use crate::time::{self, Layout, TimeModel};
use crate::weights::{ConvShape, Geometry};
use std::time::Duration;

mod knapsack;
use self::knapsack::{knapsack, refine};

/// One convolution as the planner sees it: for each scheme it may be factored with, its error
/// at every rank; its geometry and input size.
///
/// Layers are given in forward (network) order; [`Proxy::score`] receives each layer's position.
#[derive(Debug, Clone)]
pub struct PlanLayer {
    name: String,
    shape: ConvShape,
    geometry: Geometry,
    has_bias: bool,
    input_size: (usize, usize),
    /// One per scheme, the first first.
    options: Vec<SchemeOption>,
}

/// One scheme a layer may be factored with, and its errors.
#[derive(Debug, Clone)]
struct SchemeOption {
    kind: SchemeKind,
    errors: ErrorTable,
    correlated_loss: Vec<f64>,
}

impl SchemeOption {
    fn of<T: Real, F: Factored<T> + ?Sized>(factored: &F) -> Self {
        Self { kind: factored.scheme(), errors: factored.errors(), correlated_loss: factored.correlated_loss() }
    }
    fn correlated_lost(&self, rank: usize) -> f64 {
        self.correlated_loss[rank.min(self.correlated_loss.len() - 1)]
    }
    /// The score `proxy` gives this scheme at `rank`: DAC's as documented on [`Proxy`]; the
    /// other schemes without the bottleneck factor (their error already is that of a rank-`r`
    /// matrix whose rank bounds the intermediate channels).
    fn score(&self, proxy: Proxy, shape: &ConvShape, rank: usize) -> f64 {
        let nsr = |e: f64| match self.kind {
            SchemeKind::Dac => nsr_times_bottleneck(e, shape, rank),
            _ => nsr(e),
        };
        let weight = (1.0 - self.errors.retained_energy(rank)).clamp(0.0, 1.0);
        match proxy {
            Proxy::Energy => weight,
            Proxy::Sensitivity => nsr(weight),
            Proxy::Spatial => nsr(self.correlated_lost(rank)),
        }
    }
}

impl PlanLayer {
    /// The planner's view of a factored layer (from [`Scheme::factor`](crate::scheme::Scheme::factor))
    /// whose input feature map is `input_size`: its geometry, bias and [`ErrorTable`], scored
    /// consistently with the fit it was computed for.
    ///
    /// - [`Fit::frobenius`](crate::Fit::frobenius): [`Proxy::Spatial`] weighs each discarded
    ///   component `s_j·u_j·v_jᵀ` by `v_jᵀ R v_j`, from the factorisation's own right singular
    ///   vectors.
    /// - [`Fit::correlated`](crate::Fit::correlated): the spectrum already is the output-error
    ///   spectrum under the correlated-input model, so [`Proxy::Spatial`]'s per-component
    ///   energies are the weighted singular values squared, `s'_j²`: Spatial then scores as
    ///   [`Proxy::Sensitivity`] of the weighted spectrum, and every proxy measures the output
    ///   error of the fitted pair.
    ///
    /// # Errors
    /// [`Error::EmptyOutput`] when the input is too small for the kernel.
    pub fn new<T: Real, F: Factored<T> + ?Sized>(factored: &F, input_size: (usize, usize)) -> Result<Self> {
        let layer = factored.layer();
        let shape = layer.shape();
        let geometry = *layer.geometry();
        geometry.output_size(layer.name(), (shape.kh, shape.kw), input_size)?;
        Ok(Self {
            name: layer.name().to_string(),
            shape,
            geometry,
            has_bias: layer.bias().is_some(),
            input_size,
            options: vec![SchemeOption::of(factored)],
        })
    }

    /// [`new`](Self::new) with the same layer factored by several schemes: the planner chooses
    /// a (scheme, rank) or dense for it.
    ///
    /// # Errors
    /// [`Error::EmptyOutput`] when the input is too small for the kernel;
    /// [`Error::InvalidParameter`] when `factored` is empty or its entries factor different
    /// layers.
    pub fn with_schemes<T: Real>(factored: &[&dyn Factored<T>], input_size: (usize, usize)) -> Result<Self> {
        let Some(first) = factored.first() else {
            return Err(Error::InvalidParameter {
                context: "plan layer".to_string(),
                what: "number of factored schemes",
                value: 0.0,
                expected: "at least one",
            });
        };
        let mut layer = Self::new(*first, input_size)?;
        for f in &factored[1..] {
            if f.layer().name() != layer.name || f.layer().shape() != layer.shape {
                return Err(Error::InvalidParameter {
                    context: format!("plan layer `{}`", layer.name),
                    what: "factored layers",
                    value: factored.len() as f64,
                    expected: "factorisations of the same layer",
                });
            }
            layer.options.push(SchemeOption::of(*f));
        }
        Ok(layer)
    }

    /// Whether the layer has a bias, when the weights it was factored from do not say (a graph
    /// decodes the weight alone): the bias counts in its parameters.
    pub(crate) fn with_bias(mut self, has_bias: bool) -> Self {
        self.has_bias = has_bias;
        self
    }

    /// The score `proxy` gives this layer (index `index` of `count`, forward order) at `rank`
    /// with its first scheme: what [`plan`](fn@plan) minimises with
    /// [`PlanOptions::depth_weight`] 0. Equal to [`Proxy::score`] on
    /// the layer's spectrum except for [`Proxy::Spatial`], which reads the factorisation's
    /// singular vectors.
    pub fn score(&self, proxy: Proxy, rank: usize, index: usize, count: usize) -> f64 {
        let _ = (index, count);
        self.options[0].score(proxy, &self.shape, rank)
    }

    /// The schemes the layer may be factored with, the first first.
    pub fn schemes(&self) -> impl Iterator<Item = SchemeKind> + '_ {
        self.options.iter().map(|o| o.kind)
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The layer's shape.
    pub fn shape(&self) -> &ConvShape {
        &self.shape
    }
    /// The input `(height, width)`.
    pub fn input_size(&self) -> (usize, usize) {
        self.input_size
    }
    /// The layer's error at every rank with its first scheme.
    pub fn errors(&self) -> &ErrorTable {
        &self.options[0].errors
    }
    /// The fraction of the output energy lost at `rank` for spatially correlated inputs with
    /// its first scheme ([`Factored::correlated_loss`]; ranks above the maximum count as the
    /// maximum).
    pub fn correlated_lost(&self, rank: usize) -> f64 {
        self.options[0].correlated_lost(rank)
    }
}

/// What the plan must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Target {
    /// Whole-network MACs (convolutions plus [`PlanOptions::fixed`]) divided by at least this
    /// factor; finite and `> 1`.
    MacReduction(f64),
    /// Whole-network modeled time (convolutions by [`PlanOptions::time`], plus
    /// [`PlanOptions::fixed_time`]) divided by at least this factor; finite and `> 1`. A layer
    /// whose factors are not modeled at least [`MIN_TIME_GAIN`] faster than the dense layer
    /// stays dense.
    TimeReduction(f64),
    /// Whole-network parameters (weights and biases, plus [`PlanOptions::fixed`]) at most this.
    ParamBudget(u64),
}

impl std::fmt::Display for Target {
    /// `2x fewer MACs`, `2x faster (modeled)` or `at most 1000 parameters`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MacReduction(x) => write!(f, "{x}x fewer MACs"),
            Self::TimeReduction(x) => write!(f, "{x}x faster (modeled)"),
            Self::ParamBudget(b) => write!(f, "at most {b} parameters"),
        }
    }
}

/// The data-free damage score of decomposing one layer at one rank.
///
/// All proxies start from the discarded energy `e(r) = 1 − retained_energy(r)`, the squared
/// relative weight error of the best rank-`r` approximation (Eckart–Young).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Proxy {
    /// `e(r)` alone. Simple, and misleading: it treats every layer as equally sensitive and a
    /// large error on one layer as no worse than small errors spread over several.
    Energy,
    /// The noise-to-signal ratio `e/(1−e)` (convex, so one crippled layer costs
    /// more than several mildly approximated ones), times a bottleneck factor
    /// `(N/g) / min(N/g, (C/g)·r)` (a layer whose `(C/g)·r` intermediate channels are fewer than
    /// its outputs per group cannot reproduce them: the first layer of an image network at low
    /// rank).
    ///
    /// It has no depth term of its own; [`PlanOptions::depth_weight`] adds one. An earlier
    /// version multiplied by `1 + (L−1−i)/(L−1)` (depth weight 1), favouring cuts in late layers
    /// as the paper's CIFAR-VGG experiment suggests; for plans of DAC alone, without the factor
    /// the planner beat every uniform and last-k choice in more of the six comparisons of
    /// EXPERIMENTS.md, so DAC's plans keep weight 0. Plans among every scheme gain from one
    /// ([`AUTO_DEPTH_WEIGHT`], chosen for them).
    Sensitivity,
    /// The default: [`Sensitivity`](Self::Sensitivity) measured on the layer's output for
    /// inputs whose neighbouring pixels are correlated, instead of on the weights (white
    /// inputs).
    ///
    /// Decomposing input channel `c` at rank `r` discards the components `s_j·u_j·v_j^T`,
    /// `j > r`, of its `N/g x kh·kw` matrix. For an input patch with spatial correlation
    /// `R[a][b] = ρ^(|Δy_ab|·dh + |Δx_ab|·dw)` (taps `a`, `b` of the kernel, dilation `dh x dw`,
    /// ρ = 0.7 per pixel of distance), the output error has energy `Σ_{j>r} s_j²·v_j^T R v_j`
    /// (the `u_j` are orthonormal, so the components do not interfere) and the output signal
    /// `Σ_j s_j²·v_j^T R v_j`. A smooth (low-frequency) tap pattern `v_j` has `v_j^T R v_j > 1`,
    /// an alternating one `< 1`: discarding the high-frequency part of a kernel costs less
    /// than its weight energy says, because neighbouring input pixels largely cancel it.
    /// The fraction lost, `e_R`, then goes through the same `e/(1−e)` and bottleneck factor as
    /// [`Sensitivity`](Self::Sensitivity).
    ///
    /// Needs the right singular vectors, which a [`Spectrum`] does not hold: [`PlanLayer::new`]
    /// takes them from the layer's factorisation ([`Factored::correlated_loss`]); in
    /// [`Proxy::score`], which sees only the spectrum, it equals
    /// [`Sensitivity`](Self::Sensitivity). Data-free like the others: it
    /// reads weights and the kernel's geometry only. ρ is one constant for every network; the
    /// value 0.7 was picked from a scan on the two shipped networks (every ρ from 0.5 to 0.8
    /// wins the same comparisons on their full test sets; EXPERIMENTS.md).
    ///
    /// The default since it beat every uniform and last-k choice in 5 of the 6 comparisons of
    /// EXPERIMENTS.md (3 of 6 for [`Sensitivity`](Self::Sensitivity)).
    #[default]
    Spatial,
}

/// `e/(1−e)` times the bottleneck factor `(N/g) / min(N/g, (C/g)·r)`.
fn nsr_times_bottleneck(e: f64, shape: &ConvShape, rank: usize) -> f64 {
    let (ng, cg) = (shape.out_per_group() as f64, shape.in_per_group() as f64);
    let bottleneck = ng / ng.min(cg * rank.max(1) as f64);
    nsr(e) * bottleneck
}

/// The noise-to-signal ratio `e/(1−e)`: a layer keeping (almost) nothing is (almost) infinitely
/// bad.
fn nsr(e: f64) -> f64 {
    e / (1.0 - e).max(1e-9)
}

impl Proxy {
    /// The score of decomposing layer `index` of `count` (forward order) at `rank`; 0 means
    /// harmless, larger is worse. `rank` above the maximum counts as the maximum. The current
    /// proxies do not use the position; it is part of the signature for proxies that will.
    /// [`Proxy::Spatial`] needs the layer's weights, which a spectrum does not hold: here it
    /// scores as [`Proxy::Sensitivity`]; [`PlanLayer::score`] gives the value the planner uses.
    pub fn score(&self, spectrum: &Spectrum, rank: usize, index: usize, count: usize) -> f64 {
        let _ = (index, count);
        self.score_energy(spectrum.retained_energy(rank), spectrum.shape(), rank)
    }

    /// The score of keeping `retained` of the energy at `rank` ([`Proxy::Spatial`] as
    /// [`Proxy::Sensitivity`]).
    fn score_energy(&self, retained: f64, shape: &ConvShape, rank: usize) -> f64 {
        let e = (1.0 - retained).clamp(0.0, 1.0);
        match self {
            Proxy::Energy => e,
            Proxy::Sensitivity | Proxy::Spatial => nsr_times_bottleneck(e, shape, rank),
        }
    }
}

/// Options of [`plan`](fn@plan).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Cost of the layers the planner cannot change (linear layers, see [`cost::linear`]),
    /// counted in the whole-network totals.
    pub fixed: Cost,
    /// Modeled time of what the planner cannot change, counted in the whole-network time.
    pub fixed_time: Duration,
    /// The damage score to minimise.
    pub proxy: Proxy,
    /// The time model of layers and their layouts (default [`TimeModel::for_this_cpu`]: the
    /// shipped table of this kind of CPU, one thread).
    pub time: TimeModel,
    /// The layout of every factored layer; `None`: each candidate's fastest.
    pub layout: Option<Layout>,
    /// The weight of a layer's position ([`PlanOptions::depth_weight`]); 0 scores every layer
    /// alike.
    pub depth_weight: f64,
    /// Keeps dense every layer whose factors are not modeled at least [`MIN_TIME_GAIN`] faster
    /// than dense (the break-even guard in time), whatever the target. A
    /// [`Target::TimeReduction`] always has it; for the other targets it is off by default here
    /// (the MAC plans of the recorded experiments) and on in the converter unless
    /// [`ConvertOptions::allow_slower`](crate::ConvertOptions::allow_slower).
    pub time_guard: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            fixed: Cost::default(),
            fixed_time: Duration::ZERO,
            proxy: Proxy::default(),
            time: TimeModel::for_this_cpu(),
            layout: None,
            depth_weight: 0.0,
            time_guard: false,
        }
    }
}

impl PlanOptions {
    /// Sets the fixed cost.
    pub fn fixed(mut self, fixed: Cost) -> Self {
        self.fixed = fixed;
        self
    }
    /// Sets the fixed modeled time.
    pub fn fixed_time(mut self, time: Duration) -> Self {
        self.fixed_time = time;
        self
    }
    /// Sets the time model.
    pub fn time_model(mut self, model: TimeModel) -> Self {
        self.time = model;
        self
    }
    /// Forces one layout for every factored layer.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = Some(layout);
        self
    }
    /// Sets [`time_guard`](Self::time_guard): whether a layer whose factors are modeled slower
    /// than it stays dense under every target.
    pub fn time_guard(mut self, guard: bool) -> Self {
        self.time_guard = guard;
        self
    }
    /// Sets the proxy.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }
    /// Weighs each layer's score by its position: layer `i` of `L` (forward order) has its
    /// score multiplied by `1 + α·(L−1−i)/(L−1)`, from `1 + α` for the first layer down to 1 for
    /// the last. An error made early passes through every later layer, so it costs more than
    /// the same relative error made late. `α = 0` (the default here) scores every layer alike;
    /// the converter uses [`default_depth_weight`].
    /// A finite `α >= 0`; [`plan`](fn@plan) rejects any other.
    pub fn depth_weight(mut self, alpha: f64) -> Self {
        self.depth_weight = alpha;
        self
    }
    /// The factor [`depth_weight`](Self::depth_weight) gives layer `index` of `count`.
    pub fn depth_factor(&self, index: usize, count: usize) -> f64 {
        if count < 2 {
            return 1.0;
        }
        let remaining = (count - 1 - index.min(count - 1)) as f64;
        1.0 + self.depth_weight * remaining / (count - 1) as f64
    }
}

/// The converter's [`PlanOptions::depth_weight`] when a planned layer may take a scheme other
/// than DAC (`--scheme auto`, the default of `--macs` and `--speedup`, or `spatial`, `channel`,
/// `decoupled`): the first layer's score
/// counts four times the last's. Chosen from a scan of α ∈ {0, 1, 1.5, 2, 3, 4} on both
/// shipped networks together, scored on 10,000 *training* images (EXPERIMENTS.md, "The depth
/// weight"). Plans of DAC alone keep 0, the score their recorded results come from.
pub const AUTO_DEPTH_WEIGHT: f64 = 3.0;

/// The converter's default depth weight for `layers`: [`AUTO_DEPTH_WEIGHT`] when one of them may
/// take a scheme other than DAC, else 0.
pub fn default_depth_weight(layers: &[PlanLayer]) -> f64 {
    let dac_only = layers.iter().all(|l| l.schemes().all(|k| k == SchemeKind::Dac));
    if dac_only {
        0.0
    } else {
        AUTO_DEPTH_WEIGHT
    }
}

/// The plan for one layer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LayerPlan {
    /// The layer's name.
    pub name: String,
    /// The chosen scheme, `None` to keep the layer dense.
    pub scheme: Option<SchemeKind>,
    /// The chosen rank, `None` to keep the layer dense.
    pub rank: Option<usize>,
    /// The maximum rank of the chosen scheme (of the layer's first scheme when dense; DAC's is
    /// `min(N/g, kh·kw)`).
    pub max_rank: usize,
    /// The stride-1 break-even rank of the same scheme
    /// ([`SchemeKind::break_even_rank`]); the planner compares exact costs.
    pub break_even: f64,
    /// The layout of the chosen scheme's nodes (`None` when dense or the scheme has one
    /// layout, [`time::layouts_of`]).
    pub layout: Option<Layout>,
    /// Output `(height, width)` the costs refer to.
    pub output_size: (usize, usize),
    /// Cost of the dense layer.
    pub before: Cost,
    /// Cost as planned (equal to `before` when dense).
    pub after: Cost,
    /// Modeled time of the dense layer.
    pub time_before: Duration,
    /// Modeled time as planned.
    pub time_after: Duration,
    /// Fraction of the chosen scheme's `s²` kept (1 when dense).
    pub retained_energy: f64,
    /// The proxy's score of this choice times the layer's
    /// [`PlanOptions::depth_factor`] (0 when dense).
    pub score: f64,
}

/// A whole-network plan.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// One entry per input layer, in the same order.
    pub layers: Vec<LayerPlan>,
    /// Whole-network cost before (all layers dense, plus the fixed cost).
    pub before: Cost,
    /// Whole-network cost as planned.
    pub after: Cost,
    /// Whole-network modeled time before (all layers dense, plus the fixed time).
    pub time_before: Duration,
    /// Whole-network modeled time as planned.
    pub time_after: Duration,
    /// Whether the target is reached. When it cannot be, the plan is the cheapest one possible
    /// (every layer at its cheapest beneficial rank) and this is `false`.
    pub met: bool,
    /// The largest MAC reduction any plan can reach (every layer at rank 1 where beneficial).
    pub max_reduction: f64,
    /// The largest modeled speed-up any plan can reach (every layer at its fastest).
    pub max_speedup: f64,
    /// The summed proxy score.
    pub score: f64,
    /// The target asked for.
    pub target: Target,
    /// The [depth weight](PlanOptions::depth_weight) the scores were weighted with.
    pub depth_weight: f64,
}

impl Plan {
    /// Whole-network MAC reduction `before.macs / after.macs`.
    pub fn reduction(&self) -> f64 {
        ratio(self.before.macs, self.after.macs)
    }
    /// Whole-network modeled speed-up `time_before / time_after`.
    pub fn speedup(&self) -> f64 {
        ratio(self.time_before.as_nanos() as u64, self.time_after.as_nanos() as u64)
    }
    /// What the plan reaches and the most any plan can, in its target's measure: the modeled
    /// speed-up for [`Target::TimeReduction`], else the MAC reduction.
    pub fn achieved(&self) -> (f64, f64) {
        match self.target {
            Target::TimeReduction(_) => (self.speedup(), self.max_speedup),
            _ => (self.reduction(), self.max_reduction),
        }
    }
    /// The layers left dense.
    pub fn dense_layers(&self) -> impl Iterator<Item = &LayerPlan> + '_ {
        self.layers.iter().filter(|l| l.rank.is_none())
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::INFINITY
    } else {
        a as f64 / b as f64
    }
}

/// One candidate for one layer: dense, or a (scheme option index, rank, layout).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    choice: Option<(usize, usize, Option<Layout>)>,
    cost: Cost,
    /// Modeled nanoseconds.
    time: u64,
    score: f64,
}

/// A layer's dense cost, time and output size.
struct Dense {
    output: (usize, usize),
    cost: Cost,
    time: u64,
}

impl PlanLayer {
    fn dense(&self, model: &TimeModel) -> Result<Dense> {
        let (shape, name) = (&self.shape, &self.name);
        let output = self.geometry.output_size(name, (shape.kh, shape.kw), self.input_size)?;
        let cost = cost::dense(name, shape, self.has_bias, output)?;
        let time = model.nodes(&time::dense_nodes(name, shape, &self.geometry, self.input_size)?);
        Ok(Dense { output, cost, time: nanos(time) })
    }

    /// The fastest layout of `kind` at `rank` (`options.layout` when forced), its time and its
    /// cost.
    fn fastest(&self, kind: SchemeKind, rank: usize, options: &PlanOptions) -> Result<(Option<Layout>, u64, Cost)> {
        let choices = time::layout_choices(kind, options.layout);
        let allowed: Vec<Option<Layout>> =
            if choices.is_empty() { vec![None] } else { choices.into_iter().map(Some).collect() };
        let bias = if self.has_bias { self.shape.out_channels } else { 0 };
        let mut best: Option<(Option<Layout>, u64, Cost)> = None;
        for layout in allowed {
            let l = layout.unwrap_or(Layout::Multiplier1);
            let nodes = time::layout_nodes(&self.name, kind, l, &self.shape, &self.geometry, rank, self.input_size)?;
            let t = nanos(options.time.nodes(&nodes));
            if best.is_none_or(|(_, b, _)| t < b) {
                best = Some((layout, t, time::nodes_cost(&self.name, &nodes, bias)?));
            }
        }
        Ok(best.expect("at least one layout"))
    }

    /// Dense first, then every (scheme, rank) strictly cheaper than `dense` in MACs and
    /// parameters (and, with the time guard, in modeled time), each scheme's ranks from the
    /// highest down, each at its fastest layout.
    fn candidates(&self, dense: &Dense, options: &PlanOptions, time_guard: bool) -> Result<Vec<Candidate>> {
        let mut list = vec![Candidate { choice: None, cost: dense.cost, time: dense.time, score: 0.0 }];
        for (o, option) in self.options.iter().enumerate() {
            for r in (1..=option.kind.max_rank(&self.shape)).rev() {
                let (layout, time, c) = self.fastest(option.kind, r, options)?;
                let too_slow = time_guard && time as f64 > dense.time as f64 * (1.0 - MIN_TIME_GAIN);
                if c.macs >= dense.cost.macs || c.params >= dense.cost.params || too_slow {
                    continue;
                }
                let score = option.score(options.proxy, &self.shape, r);
                list.push(Candidate { choice: Some((o, r, layout)), cost: c, time, score });
            }
        }
        Ok(list)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A target checked once: which resource, and the most of it the plan may use.
#[derive(Debug, Clone, Copy)]
enum Budget {
    Macs(u64),
    Params(u64),
    Time(u64),
}

impl Budget {
    fn check(target: &Target, before: &Candidate) -> Result<Self> {
        match *target {
            Target::MacReduction(x) => Ok(Budget::Macs(within(before.cost.macs, x, "MAC reduction")?)),
            Target::TimeReduction(x) => Ok(Budget::Time(within(before.time, x, "speed-up")?)),
            Target::ParamBudget(p) => Ok(Budget::Params(p)),
        }
    }
    fn of(&self, c: &Candidate) -> u64 {
        match self {
            Budget::Macs(_) => c.cost.macs,
            Budget::Params(_) => c.cost.params,
            Budget::Time(_) => c.time,
        }
    }
    fn limit(&self) -> u64 {
        match *self {
            Budget::Macs(a) | Budget::Params(a) | Budget::Time(a) => a,
        }
    }
}

/// The largest whole number `a` with `a·x <= before`, for a finite factor `x > 1`.
fn within(before: u64, x: f64, what: &'static str) -> Result<u64> {
    if !(x.is_finite() && x > 1.0) {
        return Err(Error::InvalidParameter {
            context: "plan".to_string(),
            what,
            value: x,
            expected: "a finite factor > 1",
        });
    }
    let mut allowed = (before as f64 / x).floor() as u64;
    while allowed > 0 && allowed as f64 * x > before as f64 {
        allowed -= 1;
    }
    while (allowed + 1) as f64 * x <= before as f64 {
        allowed += 1;
    }
    Ok(allowed)
}

/// A depth weight is finite and not negative.
fn check_depth_weight(alpha: f64) -> Result<()> {
    if alpha.is_finite() && alpha >= 0.0 {
        return Ok(());
    }
    Err(Error::InvalidParameter {
        context: "plan".to_string(),
        what: "depth weight",
        value: alpha,
        expected: "a finite weight >= 0",
    })
}

/// The least fraction of a layer's modeled time its factors must save under a
/// [`Target::TimeReduction`], or any target with [`PlanOptions::time_guard`] (the break-even
/// guard in time, with a margin): below it the gain is within the time model's typical error on
/// a layer (BENCHMARKS.md), and a rewrite could run slower than the original.
pub const MIN_TIME_GAIN: f64 = 0.1;

/// Plans every layer's rank for `target`, from spectra alone.
///
/// Each layer is kept dense or decomposed at a rank below break-even (for a
/// [`Target::TimeReduction`] or with [`PlanOptions::time_guard`], also modeled faster than
/// dense by [`MIN_TIME_GAIN`]); the summed [`Proxy`] score (each
/// layer's times its [`PlanOptions::depth_factor`]) is minimised subject to the target.
/// Deterministic: the same input gives the same plan.
///
/// # Errors
/// [`Error::InvalidParameter`] for a reduction that is not finite and `> 1`, or a depth weight
/// that is not finite and `>= 0`;
/// [`Error::Overflow`] when a cost does not fit in `u64`. An unreachable target is not an
/// error: see [`Plan::met`].
pub fn plan(layers: &[PlanLayer], target: &Target, options: &PlanOptions) -> Result<Plan> {
    let time_guard = options.time_guard || matches!(target, Target::TimeReduction(_));
    check_depth_weight(options.depth_weight)?;
    let mut candidates: Vec<Vec<Candidate>> = Vec::with_capacity(layers.len());
    let mut info = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let dense = l.dense(&options.time)?;
        let mut list = l.candidates(&dense, options, time_guard)?;
        let factor = options.depth_factor(i, layers.len());
        list.iter_mut().for_each(|c| c.score *= factor);
        candidates.push(list);
        info.push(dense);
    }
    let fixed = Candidate { choice: None, cost: options.fixed, time: nanos(options.fixed_time), score: 0.0 };
    let sum = |pick: &[usize]| -> Candidate {
        pick.iter().zip(&candidates).fold(fixed, |a, (&k, c)| Candidate {
            cost: a.cost + c[k].cost,
            time: a.time.saturating_add(c[k].time),
            ..a
        })
    };
    let dense_pick = vec![0usize; layers.len()];
    let before = sum(&dense_pick);
    let budget = Budget::check(target, &before)?;
    let cheapest_by = |of: &dyn Fn(&Candidate) -> u64| -> Vec<usize> {
        let first_min = |c: &Vec<Candidate>| (0..c.len()).fold(0, |b, k| if of(&c[k]) < of(&c[b]) { k } else { b });
        candidates.iter().map(first_min).collect()
    };
    let cheapest = cheapest_by(&|c| budget.of(c));
    let max_reduction = ratio(before.cost.macs, sum(&cheapest_by(&|c| c.cost.macs)).cost.macs);
    let max_speedup = ratio(before.time, sum(&cheapest_by(&|c| c.time)).time);

    let fits = |pick: &[usize]| budget.of(&sum(pick)) <= budget.limit();
    let (pick, met) = if fits(&dense_pick) {
        (dense_pick, true)
    } else if !fits(&cheapest) {
        (cheapest, false)
    } else {
        let pick = knapsack(&candidates, &budget, &before).unwrap_or(cheapest);
        (refine(&candidates, pick, &fits), true)
    };

    let after = sum(&pick);
    let layers_out: Vec<LayerPlan> =
        layers.iter().zip(&candidates).zip(&pick).zip(info).map(|(((l, c), &k), d)| l.planned(&c[k], d)).collect();
    let score = layers_out.iter().map(|l| l.score).sum();
    Ok(Plan {
        layers: layers_out,
        before: before.cost,
        after: after.cost,
        time_before: Duration::from_nanos(before.time),
        time_after: Duration::from_nanos(after.time),
        met,
        max_reduction,
        max_speedup,
        score,
        target: *target,
        depth_weight: options.depth_weight,
    })
}

impl PlanLayer {
    /// The plan entry of choosing `c` for this layer, whose dense form is `dense`.
    fn planned(&self, c: &Candidate, dense: Dense) -> LayerPlan {
        let option = &self.options[c.choice.map_or(0, |(o, _, _)| o)];
        LayerPlan {
            name: self.name.clone(),
            scheme: c.choice.map(|_| option.kind),
            rank: c.choice.map(|(_, r, _)| r),
            max_rank: option.kind.max_rank(&self.shape),
            break_even: option.kind.break_even_rank(&self.shape),
            layout: c.choice.and_then(|(_, _, l)| l),
            output_size: dense.output,
            before: dense.cost,
            after: c.cost,
            time_before: Duration::from_nanos(dense.time),
            time_after: Duration::from_nanos(c.time),
            retained_energy: c.choice.map_or(1.0, |(_, r, _)| option.errors.retained_energy(r)),
            score: c.score,
        }
    }
}
