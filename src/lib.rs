//! # dac — Data-free Automatic Acceleration of Convolutional networks
//!
//! DAC (Li et al., WACV 2019, arXiv:1812.08374) turns a trained convolution into a cheaper
//! depthwise + pointwise pair from its weights alone, without data and without retraining.
//!
//! For a weight `W` of shape `[N, C, kh, kw]` (OIHW), each input channel `c` gives an
//! `N x (kh·kw)` matrix `M_c = W[:, c, :, :] = U S Vᵀ`. Keeping the `r` largest singular values:
//! - the **depthwise** layer has `C·r` kernels `kh x kw` with `groups = C`; output channel
//!   `c·r + j` holds row `j` of `V_rᵀ`; it keeps the original stride, padding and dilation;
//! - the **pointwise** layer is a 1x1 convolution `C·r -> N` whose column `c·r + j` is column
//!   `j` of `U_r S_r` (computed as `M_c V_r`); it carries the original bias.
//!
//! At `r = min(N, kh·kw)` the pair reproduces the layer exactly; below it every channel gets its
//! best rank-`r` approximation (Eckart–Young), and MACs shrink by the factor `r/N + r/(kh·kw)`.
//! Grouped convolutions are decomposed group by group.
//!
//! ```
//! use dac::{decompose, exec, Conv2dWeights, Padding};
//!
//! // A 3x3 convolution 4 -> 8 with padding 1 and seeded weights.
//! let w: Vec<f64> = (0..8 * 4 * 9).map(|i| ((i * 37 % 23) as f64 - 11.0) / 11.0).collect();
//! let layer = Conv2dWeights::builder(w, [8, 4, 3, 3]).padding(Padding::uniform(1)).build()?;
//!
//! // Full rank (min(8, 9) = 8) reproduces the original outputs.
//! let (dw, pw) = decompose(&layer, 8)?;
//! let x = exec::Tensor4::new((0..4 * 6 * 6).map(|i| (i as f64).cos()).collect(), [1, 4, 6, 6])?;
//! let dense = exec::conv2d(&x, &layer)?;
//! let separable = exec::pair(&x, &dw, &pw)?;
//! assert!(dense.max_abs_diff(&separable).unwrap() < 1e-12 * dense.max_abs());
//! # Ok::<(), dac::Error>(())
//! ```
//!
//! That rank-`r` fit is the paper's: the closest weights. [`Fit::correlated`] instead keeps, per
//! channel, the rank-`r` approximation with the smallest *output* error for input patches whose
//! pixels correlate as `ρ^(|Δy|+|Δx|)` (from the SVD of `M_c R^{1/2}`; same pair and cost, exact
//! at full rank): opt-in through [`Factorization::compute_fitted`] and the converters'
//! `fit` options; [`Fit::frobenius`] stays the default everywhere.
//!
//! Modules, in pipeline order: [`weights`] (layers, validated once) → [`svd`] (backends) →
//! [`decompose`](mod@decompose) (the pair and its report) → [`rank`] (policies) → [`cost`]
//! (MACs and parameters) → [`exec`] (the reference executor).
#![warn(missing_docs)]

pub mod convert;
pub mod cost;
pub mod decompose;
mod error;
pub mod exec;
mod fit;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "safetensors")]
pub mod io;
mod kernels;
pub mod moments;
pub mod plan;
pub mod rank;
#[cfg(feature = "onnx")]
pub mod runtime;
mod scalar;
pub mod scheme;
mod storage;
pub mod svd;
pub mod time;
pub mod weights;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use convert::ConvertOptions;
pub use cost::Cost;
pub use decompose::{
    decompose, decompose_with, Decomposition, DepthwiseR, Factorization, Options, PairBuffers, Pointwise, Report,
    Spectrum, Split,
};
pub use error::{Error, Result};
pub use fit::Fit;
pub use plan::plan;
pub use rank::{KeepDenseReason, Rank, RankChoice};
pub use scalar::Real;
pub use weights::{Conv2dWeights, Conv2dWeightsBuilder, ConvShape, Geometry, Padding};
