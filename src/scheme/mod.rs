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

mod dac;

pub use self::dac::Dac;

use crate::cost::Cost;
use crate::error::Result;
use crate::scalar::Real;
use crate::weights::{Conv2dWeights, ConvShape};

/// The factorization schemes `dac` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchemeKind {
    /// The DAC paper's depthwise + pointwise pair ([`Dac`]).
    Dac,
}

impl SchemeKind {
    /// The scheme's name in files, reports and on the command line (`"dac"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dac => "dac",
        }
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
    fn max_rank(&self) -> usize;
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
}

/// A factorisation scheme: costs by rank, and the computation itself.
pub trait Scheme<T: Real>: Send + Sync {
    /// Which scheme this is.
    fn kind(&self) -> SchemeKind;
    /// The largest rank for a layer of this shape.
    fn max_rank(&self, shape: &ConvShape) -> usize;
    /// The rank at which the factors cost as much as the dense layer: ranks strictly below it
    /// save MACs.
    fn break_even_rank(&self, shape: &ConvShape) -> f64;
    /// The MACs and parameters of the factors at `rank` for an `output` `(height, width)` of the
    /// original layer.
    ///
    /// # Errors
    /// [`Error::Overflow`](crate::Error::Overflow) when a count does not fit in `u64`.
    fn cost(&self, layer: &str, shape: &ConvShape, has_bias: bool, rank: usize, output: (usize, usize))
        -> Result<Cost>;
    /// The factors' roles and weight shapes at `rank`, in the order they run (what
    /// [`Factored::factors`] returns, known before computing it).
    fn factor_dims(&self, shape: &ConvShape, rank: usize) -> Vec<(&'static str, [usize; 4])>;
    /// Factors `layer` once.
    ///
    /// # Errors
    /// The backend's failures ([`Error::Svd`](crate::Error::Svd), naming the layer), and
    /// [`Error::NonFinite`](crate::Error::NonFinite) for weights that are not finite.
    fn factor<'a>(&self, layer: &'a Conv2dWeights<T>) -> Result<Box<dyn Factored<T> + 'a>>;
}
