//! The DAC decomposition: one dense convolution into a depthwise + pointwise pair.
//!
//! For every input channel `c` (in group `g`), the slice `M_c = W[outputs of g, c, :, :]` is an
//! `(N/groups) x (kh·kw)` matrix. With its SVD `M_c = U S Vᵀ` and the top `r` right singular
//! vectors `V_r`:
//! - depthwise output channel `c·r + j` is the kernel `v_jᵀ` (times a share of `s_j`);
//! - pointwise weight `[n, c_local·r + j]` is `(M_c v_j)[n]` (divided by that share).
//!
//! The pointwise side is computed as `M_c V_r`, never as `U_r S_r`: with an orthonormal `V`
//! the product `M_c V Vᵀ` is `M_c` exactly at full rank, however inaccurate the backend's `U`.

use crate::cost::Cost;
use crate::error::{Error, Result};
use crate::fit::Fit;
use crate::scalar::Real;
use crate::svd::{NalgebraSvd, SvdBackend};
use crate::weights::{Conv2dWeights, Padding};

mod factorization;
mod spectrum;

pub(crate) use self::factorization::pair_layers;
pub use self::factorization::{Factorization, PairBuffers};
pub use self::spectrum::Spectrum;

/// Where the singular values go when the factors are written out.
///
/// All three give the same product (the same reconstructed weight and the same outputs up to
/// rounding); they differ in the magnitudes of the two layers' weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Split {
    /// Depthwise gets `v_jᵀ` (unit norm), pointwise gets `M v_j = u_j s_j`.
    Pointwise,
    /// Depthwise gets `s_j v_jᵀ`, pointwise gets `u_j` (unit norm).
    Depthwise,
    /// Each side gets `sqrt(s_j)`: depthwise `sqrt(s_j) v_jᵀ`, pointwise `u_j sqrt(s_j)`.
    ///
    /// The default, because it balances the two layers: both weights and the intermediate
    /// activations stay near the geometric mean of the original scales, which keeps the most
    /// headroom when the result is stored in f16/bf16 or quantised, and avoids one layer holding
    /// values `s_1` times larger than the other.
    #[default]
    SquareRoot,
}

/// Parameters of one decomposition: the rank, the singular-value split, and the input size the
/// report's MAC counts refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Options {
    /// Singular values kept per input channel, `1..=min(N/groups, kh*kw)`.
    pub rank: usize,
    /// Where the singular values go.
    pub split: Split,
    /// Input `(height, width)` for the report's MACs; `None` counts one output position.
    pub input_size: Option<(usize, usize)>,
}

impl Options {
    /// Rank `rank`, the default [`Split::SquareRoot`], MACs per output position.
    pub fn new(rank: usize) -> Self {
        Self { rank, split: Split::default(), input_size: None }
    }
    /// Sets the split.
    pub fn split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
    /// Sets the input size for MAC counts.
    pub fn input_size(mut self, height: usize, width: usize) -> Self {
        self.input_size = Some((height, width));
        self
    }
}

/// The depthwise half: `C·r` kernels of `kh x kw`, `groups = C`, the original stride, padding
/// and dilation, no bias. Output channel `c·r + j` is component `j` of input channel `c`.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseR<T> {
    conv: Conv2dWeights<T>,
    rank: usize,
}

impl<T: Real> DepthwiseR<T> {
    /// Wraps a convolution read back from a file (for example a converted checkpoint) as the
    /// depthwise half of rank `rank`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless the weight is `[C·rank, 1, kh, kw]` with `groups = C`
    /// and no bias.
    pub fn from_conv(conv: Conv2dWeights<T>, rank: usize) -> Result<Self> {
        let [out, per_group, _, _] = conv.dims();
        let groups = conv.geometry().groups;
        if rank == 0 || per_group != 1 || groups.checked_mul(rank) != Some(out) || conv.bias().is_some() {
            return Err(Error::InvalidParameter {
                context: format!("layer `{}`", conv.name()),
                what: "depthwise rank",
                value: rank as f64,
                expected: "a [C*rank, 1, kh, kw] weight with groups = C and no bias",
            });
        }
        Ok(Self { conv, rank })
    }

    /// The layer as a plain grouped convolution (weight `[C·r, 1, kh, kw]`).
    pub fn conv(&self) -> &Conv2dWeights<T> {
        &self.conv
    }
    /// Components per input channel.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// Consumes the wrapper.
    pub fn into_conv(self) -> Conv2dWeights<T> {
        self.conv
    }
}

/// The pointwise half: a 1x1 convolution `C·r -> N` with the original `groups` and bias.
/// Input channel `c_local·r + j` of each group reads depthwise output `c·r + j`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointwise<T> {
    conv: Conv2dWeights<T>,
}

impl<T: Real> Pointwise<T> {
    /// Wraps a convolution read back from a file as the pointwise half.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless the kernel is 1x1 with stride 1 and no padding.
    pub fn from_conv(conv: Conv2dWeights<T>) -> Result<Self> {
        let [_, _, kh, kw] = conv.dims();
        let g = conv.geometry();
        if kh != 1 || kw != 1 || g.stride != (1, 1) || g.padding != Padding::default() {
            return Err(Error::InvalidParameter {
                context: format!("layer `{}`", conv.name()),
                what: "pointwise kernel size",
                value: (kh * kw) as f64,
                expected: "a 1x1 kernel with stride 1 and no padding",
            });
        }
        Ok(Self { conv })
    }

    /// The layer as a plain convolution (weight `[N, C·r/groups, 1, 1]`).
    pub fn conv(&self) -> &Conv2dWeights<T> {
        &self.conv
    }
    /// Consumes the wrapper.
    pub fn into_conv(self) -> Conv2dWeights<T> {
        self.conv
    }
}

/// What a decomposition did and what it costs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// The layer's name.
    pub layer: String,
    /// The rank used.
    pub rank: usize,
    /// The layer's maximum rank `min(N/groups, kh*kw)`.
    pub max_rank: usize,
    /// The split used.
    pub split: Split,
    /// The fit the factorisation was computed for ([`Fit::frobenius`] unless
    /// [`Factorization::compute_fitted`] was given another).
    pub fit: Fit,
    /// Singular values of every input channel (of the weighted matrices `M_c R^{1/2}` for a
    /// correlated [`Fit`]).
    pub spectrum: Spectrum,
    /// Kept `s²` over total `s²`, whole layer. For a correlated [`Fit`]: kept over total output
    /// energy for inputs with the fit's correlation.
    pub retained_energy: f64,
    /// `‖W − Ŵ‖ / ‖W‖` of the rank-`rank` approximation `Ŵ`: `sqrt(discarded s²) / ‖W‖` from
    /// [`spectrum`](Self::spectrum) ([`Spectrum::optimal_relative_error`], Eckart–Young: the
    /// pair is the best rank-`rank` approximation of every channel). Rounding the factors to the
    /// element type adds about its machine epsilon on top (the tests measure the written pair
    /// against this value).
    ///
    /// For a correlated [`Fit`] it is the relative *output* error for inputs with the fit's
    /// pixel correlation `R`: `sqrt(Σ_c tr(ΔM_c R ΔM_cᵀ) / Σ_c tr(M_c R M_cᵀ))`, from the
    /// weighted singular values (the pair is the best rank-`rank` approximation in that sense).
    pub relative_error: f64,
    /// Output `(height, width)` the costs refer to.
    pub output_size: (usize, usize),
    /// Cost of the dense layer.
    pub before: Cost,
    /// Cost of the pair.
    pub after: Cost,
}

/// A decomposition's result: the pair and its report.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition<T> {
    /// The depthwise half.
    pub depthwise: DepthwiseR<T>,
    /// The pointwise half.
    pub pointwise: Pointwise<T>,
    /// Singular values, error and costs.
    pub report: Report,
}

/// Decomposes `layer` at `rank` with the default backend ([`NalgebraSvd`]) and split
/// ([`Split::SquareRoot`]).
///
/// Any valid rank is honoured, including ranks that save nothing: at full rank the pair
/// reproduces the layer exactly, which is how equivalence is proven. Use a
/// [`Rank`](crate::Rank) policy to choose ranks that pay off.
///
/// ```
/// use dac::{decompose, Conv2dWeights};
/// // 2 outputs, 2 inputs, 3x3 kernels.
/// let w: Vec<f32> = (0..2 * 2 * 9).map(|i| i as f32).collect();
/// let layer = Conv2dWeights::new(w, [2, 2, 3, 3])?;
/// let (dw, pw) = decompose(&layer, 2)?;
/// assert_eq!(dw.conv().dims(), [4, 1, 3, 3]); // C·r depthwise kernels
/// assert_eq!(pw.conv().dims(), [2, 4, 1, 1]); // 1x1, C·r -> N
/// # Ok::<(), dac::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidRank`] when `rank` is 0 or above `min(N/groups, kh*kw)`; [`Error::Svd`] if
/// the SVD does not converge.
pub fn decompose<T: Real>(layer: &Conv2dWeights<T>, rank: usize) -> Result<(DepthwiseR<T>, Pointwise<T>)> {
    let d = decompose_with(layer, &Options::new(rank), &NalgebraSvd::default())?;
    Ok((d.depthwise, d.pointwise))
}

/// Decomposes `layer` with explicit options and backend, returning the pair and a [`Report`].
///
/// # Errors
/// As [`decompose`], plus the cost errors of [`Factorization::truncate`].
pub fn decompose_with<T: Real, B: SvdBackend<T> + ?Sized>(
    layer: &Conv2dWeights<T>,
    options: &Options,
    backend: &B,
) -> Result<Decomposition<T>> {
    let k = layer.shape().max_rank();
    if options.rank == 0 || options.rank > k {
        return Err(Error::InvalidRank { layer: layer.name().to_string(), rank: options.rank, max: k });
    }
    Factorization::compute(layer, backend)?.truncate(options)
}
