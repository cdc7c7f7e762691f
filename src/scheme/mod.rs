//! Factorization schemes: how one trained convolution becomes a short chain of cheaper ones.
//!
//! A [`Scheme`] knows, for a layer's shape, its maximum and break-even rank and the cost of its
//! factors at every rank; [`Scheme::factor`] computes a layer's decomposition once, as a
//! [`Factored`] value that gives the error at every rank ([`ErrorTable`],
//! [`Factored::correlated_loss`]) and the factors at any
//! rank: a short list of ordinary convolutions ([`Factor`], each a [`Conv2dWeights`] with its
//! own geometry) whose composition, applied in order, is the layer — exactly at the maximum
//! rank, approximately below it.
//!
//! The converters ([`convert`](crate::convert)) and the planner ([`plan`](mod@crate::plan)) see
//! schemes only through these two traits, so a new scheme is one new file here. Every scheme is
//! tested against [`exec::reference`](crate::exec) by one shared harness (`tests/`).
//!
//! | scheme | factors | file |
//! |---|---|---|
//! | [`Dac`] (the paper's) | depthwise `kh x kw` (`C·r` channels), then pointwise 1x1 `C·r -> N` | `dac.rs` |
//! | [`Spatial`] (Jaderberg et al. 2014) | `kh x 1` `C -> r`, then `1 x kw` `r -> N` | `spatial.rs` |
//! | [`Channel`] (Zhang et al. 2015) | `kh x kw` `C -> r`, then 1x1 `r -> N` | `channel.rs` |
//! | [`Decoupled`] (Guo et al. 2018) | 1x1 `C -> N·r`, depthwise `kh x kw`, 1x1 sum of each output's `r` | `decoupled.rs` |
//!
//! Ranks are per group for grouped layers. The last three factor one large matrix per group
//! (or per output channel) through the `f64` Gram matrix of its smaller side and a symmetric
//! eigensolver (`lowrank.rs`); DAC uses the configured [`SvdBackend`](crate::svd::SvdBackend).
//!
//! ```
//! use dac::scheme::{Dac, Scheme};
//! use dac::{svd::GramSvd, Conv2dWeights, Padding};
//! let w: Vec<f32> = (0..8 * 4 * 9).map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0).collect();
//! let layer = Conv2dWeights::builder(w, [8, 4, 3, 3]).padding(Padding::uniform(1)).build()?;
//! let svd = GramSvd::default();
//! let scheme = Dac::new(&svd);
//! let factored = scheme.factor(&layer)?;
//! let errors = factored.errors();
//! assert!(errors.relative_error(1) > errors.relative_error(8)); // full rank: exact
//! let factors = factored.factors(2, &mut Default::default())?;
//! assert_eq!(factors.iter().map(|f| f.role).collect::<Vec<_>>(), ["depthwise", "pointwise"]);
//! # Ok::<(), dac::Error>(())
//! ```

mod channel;
mod composed;
mod dac;
mod decoupled;
mod lowrank;
mod spatial;

pub use self::channel::Channel;
pub use self::composed::{DenseKernel, LowRankKernel};
pub use self::dac::Dac;
pub use self::decoupled::Decoupled;
pub use self::spatial::Spatial;

use crate::cost::{self, Cost};
use crate::error::Result;
use crate::scalar::Real;
use crate::weights::{Conv2dWeights, ConvShape, Geometry};

/// The factorization schemes `dac` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchemeKind {
    /// The DAC paper's depthwise + pointwise pair ([`Dac`]).
    Dac,
    /// `kh x 1` then `1 x kw` ([`Spatial`]).
    Spatial,
    /// `kh x kw` to `r` channels then 1x1 ([`Channel`]).
    Channel,
    /// 1x1, depthwise, grouped 1x1 sum ([`Decoupled`]).
    Decoupled,
}

impl SchemeKind {
    /// Every scheme, in the order reports list them.
    pub const ALL: [SchemeKind; 4] = [Self::Dac, Self::Spatial, Self::Channel, Self::Decoupled];

    /// The scheme's name in files, reports and on the command line (`"dac"`, `"spatial"`,
    /// `"channel"`, `"decoupled"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dac => "dac",
            Self::Spatial => "spatial",
            Self::Channel => "channel",
            Self::Decoupled => "decoupled",
        }
    }

    /// The largest rank for a layer of this shape (the factors are exact there).
    pub fn max_rank(self, shape: &ConvShape) -> usize {
        match self {
            Self::Dac => shape.max_rank(),
            Self::Spatial => cost::spatial_max_rank(shape),
            Self::Channel => cost::channel_max_rank(shape),
            Self::Decoupled => cost::decoupled_max_rank(shape),
        }
    }

    /// The rank at which the factors cost as many MACs as the dense layer when they all run at
    /// its output size (stride 1, "same" padding): ranks strictly below it save MACs there.
    /// The planner compares exact costs ([`cost`](Self::cost)) instead.
    pub fn break_even_rank(self, shape: &ConvShape) -> f64 {
        match self {
            Self::Dac => cost::break_even_rank(shape),
            Self::Spatial => cost::spatial_break_even_rank(shape),
            Self::Channel => cost::channel_break_even_rank(shape),
            Self::Decoupled => cost::decoupled_break_even_rank(shape),
        }
    }

    /// The factors' roles, weight shapes and geometries at `rank`, in the order they run (what
    /// [`Factored::factors`] returns, known before computing it).
    pub fn factor_specs(self, shape: &ConvShape, geometry: &Geometry, rank: usize) -> Vec<FactorSpec> {
        match self {
            Self::Dac => dac::specs(shape, geometry, rank),
            Self::Spatial => spatial::specs(shape, geometry, rank),
            Self::Channel => channel::specs(shape, geometry, rank),
            Self::Decoupled => decoupled::specs(shape, geometry, rank),
        }
    }

    /// The MACs and parameters of the factors at `rank` on an `input` `(height, width)` feature
    /// map (`None`: per output position, [`cost::chain_per_position`]).
    ///
    /// # Errors
    /// [`Error::Overflow`](crate::Error::Overflow) when a count does not fit in `u64`;
    /// [`Error::EmptyOutput`](crate::Error::EmptyOutput) for an input too small.
    pub fn cost(
        self,
        layer: &str,
        shape: &ConvShape,
        geometry: &Geometry,
        has_bias: bool,
        rank: usize,
        input: Option<(usize, usize)>,
    ) -> Result<Cost> {
        let bias = if has_bias { shape.out_channels } else { 0 };
        specs_cost(layer, &self.factor_specs(shape, geometry, rank), bias, input)
    }

    /// The factor by which the factors at `rank` reduce MACs when they all run at the layer's
    /// output size (stride 1, "same" padding; DAC's and channel SVD's ratio at any size).
    pub fn mac_reduction(self, shape: &ConvShape, rank: usize) -> f64 {
        match self {
            Self::Dac => cost::mac_reduction(shape, rank),
            _ => {
                let (dense, factored) = self.per_position_macs(shape, rank);
                dense as f64 / factored as f64
            }
        }
    }

    /// Whether the factors at `rank` are strictly cheaper than the dense layer per output
    /// position (exact integer test; see [`mac_reduction`](Self::mac_reduction)).
    pub fn is_beneficial(self, shape: &ConvShape, rank: usize) -> bool {
        match self {
            Self::Dac => cost::is_beneficial(shape, rank),
            _ => {
                let (dense, factored) = self.per_position_macs(shape, rank);
                factored < dense
            }
        }
    }

    /// Dense and factored MACs per output position.
    fn per_position_macs(self, shape: &ConvShape, rank: usize) -> (u128, u128) {
        let dense = shape.out_channels as u128 * shape.in_per_group() as u128 * shape.taps() as u128;
        let specs = self.factor_specs(shape, &Geometry::default(), rank);
        (dense, specs.iter().map(|f| f.dims.iter().map(|&d| d as u128).product::<u128>()).sum())
    }

    /// The scheme named `name` ([`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One convolution of a factorisation, in the order the factors run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Factor<T> {
    /// The factor's role, which names its tensors in files (`<layer>.<role>.weight`, and
    /// `<layer>.<role>.bias` on the factor carrying the original bias): `"depthwise"`,
    /// `"pointwise"`, ...
    pub role: &'static str,
    /// The convolution, with its own shape and geometry.
    pub conv: Conv2dWeights<T>,
}

/// The error of a factorisation at every rank `0..=max_rank`, from its singular values.
///
/// Index `r` is rank `r`; rank 0 keeps nothing. For a correlated [`Fit`](crate::Fit) the
/// energies are output energies under the fit's input model.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorTable {
    retained: Vec<f64>,
    relative_error: Vec<f64>,
}

impl ErrorTable {
    /// A table from its two columns, each of `max_rank + 1` entries.
    pub(crate) fn new(retained: Vec<f64>, relative_error: Vec<f64>) -> Self {
        debug_assert_eq!(retained.len(), relative_error.len());
        Self { retained, relative_error }
    }
    /// The largest rank in the table.
    pub fn max_rank(&self) -> usize {
        self.retained.len() - 1
    }
    /// Kept over total energy at `rank` (ranks above the maximum count as the maximum).
    pub fn retained_energy(&self, rank: usize) -> f64 {
        self.retained[rank.min(self.max_rank())]
    }
    /// The relative error `‖W − Ŵ‖ / ‖W‖` of the best rank-`rank` approximation.
    pub fn relative_error(&self, rank: usize) -> f64 {
        self.relative_error[rank.min(self.max_rank())]
    }
}

/// Reusable storage for [`Factored::factors`]: weight buffers handed back with
/// [`recycle`](Self::recycle) are written again for the next layer, so that converting layer
/// after layer allocates (and page-faults) nothing once they are large enough.
#[derive(Debug, Default)]
pub struct Workspace<T> {
    buffers: Vec<Vec<T>>,
    pub(crate) lanes: crate::kernels::pair::Scratch,
}

impl<T: Real> Workspace<T> {
    /// An empty workspace.
    pub fn new() -> Self {
        Self { buffers: Vec::new(), lanes: Vec::new() }
    }
    /// A buffer to write a factor's weight into, with whatever length and contents it had: the
    /// writer resizes it and overwrites every element (no zero fill of a buffer that fits).
    pub(crate) fn take(&mut self) -> Vec<T> {
        self.buffers.pop().unwrap_or_default()
    }
    /// Keeps the factors' weight buffers for the next [`Factored::factors`].
    pub fn recycle(&mut self, factors: Vec<Factor<T>>) {
        // Reversed, so that the next layer's first factor gets this layer's first buffer back:
        // factors of a scheme differ in size, and a buffer that fits is not reallocated.
        for f in factors.into_iter().rev() {
            let (weight, _) = f.conv.into_parts();
            self.buffers.push(weight);
        }
    }
}

/// One layer factored by a [`Scheme`]: its error at every rank and its factors at any rank.
pub trait Factored<T: Real>: Send + Sync {
    /// The scheme that computed it.
    fn scheme(&self) -> SchemeKind;
    /// The layer factored.
    fn layer(&self) -> &Conv2dWeights<T>;
    /// The largest rank (the factors are exact there).
    fn max_rank(&self) -> usize {
        self.scheme().max_rank(&self.layer().shape())
    }
    /// The error at every rank.
    fn errors(&self) -> ErrorTable;
    /// At every rank `0..=max_rank`, the fraction of the layer's output energy lost for inputs
    /// whose neighbouring pixels correlate as `ρ = 0.7`, in `[0, 1]`: what
    /// [`Proxy::Spatial`](crate::plan::Proxy::Spatial) scores. For a correlated fit, whose
    /// spectrum already measures that, the weighted spectrum's lost energy.
    fn correlated_loss(&self) -> Vec<f64>;
    /// The retained energy and relative error at `rank` alone: what a report of one converted
    /// layer needs ([`errors`](Self::errors) computes every rank and every column).
    fn error_at(&self, rank: usize) -> (f64, f64) {
        let e = self.errors();
        (e.retained_energy(rank), e.relative_error(rank))
    }
    /// The factors at `rank`, in the order they run; the last carries the layer's bias.
    ///
    /// # Errors
    /// [`Error::InvalidRank`](crate::Error::InvalidRank) outside `1..=max_rank`;
    /// [`Error::NonFinite`](crate::Error::NonFinite) when a factor overflows the element type.
    fn factors(&self, rank: usize, workspace: &mut Workspace<T>) -> Result<Vec<Factor<T>>>;
    /// The roles, shapes and geometries of [`factors`](Self::factors) at `rank`.
    fn factor_specs(&self, rank: usize) -> Vec<FactorSpec> {
        self.scheme().factor_specs(&self.layer().shape(), self.layer().geometry(), rank)
    }
    /// For a factorisation whose factors at rank `r` compute the sum of what its first `r`
    /// components compute (nested truncations of one decomposition, as the matrix schemes'),
    /// the factors of component `index` alone (the factors at rank 1 of that component, bias
    /// included); `None` for others. [`InputMoments::lost_energy`] adds components one at a
    /// time with it.
    ///
    /// [`InputMoments::lost_energy`]: crate::moments::InputMoments::lost_energy
    fn component(&self, index: usize, workspace: &mut Workspace<T>) -> Option<Result<Vec<Factor<T>>>> {
        let _ = (index, workspace);
        None
    }
}

/// A factorisation scheme: the computation. What depends only on a layer's shape (ranks,
/// factor shapes, costs) is plain data on its [`SchemeKind`], which the provided methods use.
pub trait Scheme<T: Real>: Send + Sync {
    /// Which scheme this is.
    fn kind(&self) -> SchemeKind;
    /// Factors `layer` once.
    ///
    /// # Errors
    /// The backend's failures ([`Error::Svd`](crate::Error::Svd), naming the layer), and
    /// [`Error::NonFinite`](crate::Error::NonFinite) for weights that are not finite.
    fn factor<'a>(&self, layer: &'a Conv2dWeights<T>) -> Result<Box<dyn Factored<T> + 'a>>;
    /// [`SchemeKind::max_rank`].
    fn max_rank(&self, shape: &ConvShape) -> usize {
        self.kind().max_rank(shape)
    }
    /// [`SchemeKind::break_even_rank`].
    fn break_even_rank(&self, shape: &ConvShape) -> f64 {
        self.kind().break_even_rank(shape)
    }
    /// [`SchemeKind::factor_specs`].
    fn factor_specs(&self, shape: &ConvShape, geometry: &Geometry, rank: usize) -> Vec<FactorSpec> {
        self.kind().factor_specs(shape, geometry, rank)
    }
}

/// One factor's role, weight shape `[out, in/groups, kh, kw]` and geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FactorSpec {
    /// The factor's role ([`Factor::role`]).
    pub role: &'static str,
    /// The weight's dimensions.
    pub dims: [usize; 4],
    /// Stride, dilation, padding and groups.
    pub geometry: Geometry,
}

impl FactorSpec {
    /// A factor of `dims` with `geometry`.
    pub fn new(role: &'static str, dims: [usize; 4], geometry: Geometry) -> Self {
        Self { role, dims, geometry }
    }
}

/// The cost of factors `specs` plus `bias` values on an `input` feature map, or per output
/// position for `None` ([`cost::chain`], [`cost::chain_per_position`]).
///
/// # Errors
/// As [`cost::chain`].
pub fn specs_cost(layer: &str, specs: &[FactorSpec], bias: usize, input: Option<(usize, usize)>) -> Result<Cost> {
    let factors: Vec<([usize; 4], Geometry)> = specs.iter().map(|f| (f.dims, f.geometry)).collect();
    match input {
        Some(hw) => cost::chain(layer, &factors, bias, hw),
        None => cost::chain_per_position(layer, &factors, bias),
    }
}

/// The factors of `layer` at the shapes and geometries of `specs`, from `f64` values in the
/// weights' layout (one `Vec` per factor); the last carries the layer's bias. Weight buffers
/// come from `workspace`.
///
/// # Errors
/// [`Error::NonFinite`](crate::Error::NonFinite) when a value overflows `T`.
pub(crate) fn build_factors<T: Real>(
    layer: &Conv2dWeights<T>,
    specs: &[FactorSpec],
    values: Vec<Vec<f64>>,
    workspace: &mut Workspace<T>,
) -> Result<Vec<Factor<T>>> {
    debug_assert_eq!(specs.len(), values.len());
    let last = specs.len() - 1;
    let mut out = Vec::with_capacity(specs.len());
    for (k, (spec, v)) in specs.iter().zip(values).enumerate() {
        let name = format!("{}.{}", layer.name(), spec.role);
        let mut buffer = workspace.take();
        lowrank::write_as(&name, "weight", &v, &mut buffer)?;
        let bias = if k == last { layer.bias().map(<[T]>::to_vec) } else { None };
        let conv = Conv2dWeights::builder(buffer, spec.dims).name(name).geometry(spec.geometry).maybe_bias(bias);
        let conv = conv.defer_weight_finiteness().build()?; // `write_as` checked it
        out.push(Factor { role: spec.role, conv });
    }
    Ok(out)
}
