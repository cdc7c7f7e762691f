//! SVD backends: the one small trait every factorisation algorithm implements.
//!
//! A decomposition needs, for each input channel, the right singular vectors `V` and the
//! singular values of an `N x (kh*kw)` matrix; it never needs `U` (the pointwise side is
//! derived as `M * V_r`, which is exact at full rank whatever `U`'s accuracy). Backends write
//! into buffers the caller owns, so a decomposition allocates once per thread, not per channel.

mod gram;
mod nalgebra_backend;

pub use gram::GramSvd;
pub use nalgebra_backend::NalgebraSvd;

use crate::scalar::Real;
use crate::weights::Conv2dWeights;
use rayon::prelude::*;

/// Why a backend could not factor a matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SvdFailure {
    /// Human-readable reason, included in [`Error::Svd`](crate::Error::Svd).
    pub reason: String,
}

impl SvdFailure {
    /// A failure with the given reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

/// A singular value decomposition algorithm for small dense matrices.
///
/// Contract for [`right_factors`](Self::right_factors), with `k = min(rows, cols)`:
/// - `matrix` is `rows x cols`, row-major, finite;
/// - `singular_values` (length `k`) receives the singular values in **descending** order,
///   non-negative;
/// - `vt` (length `k * cols`, row-major `k x cols`) receives the matching right singular
///   vectors as rows, orthonormal to working precision.
///
/// Implementations must never loop forever: a bounded iteration count that ends in an
/// [`SvdFailure`] is the expected way to give up. Every backend is tested against the
/// definition (`M = U S Vᵀ`) and against [`NalgebraSvd`] in f64.
pub trait SvdBackend<T: Real>: Send + Sync {
    /// Factors one matrix; see the trait docs for the buffer contract.
    ///
    /// # Errors
    /// [`SvdFailure`] when the algorithm does not converge.
    fn right_factors(
        &self,
        matrix: &[T],
        rows: usize,
        cols: usize,
        singular_values: &mut [T],
        vt: &mut [T],
    ) -> Result<(), SvdFailure>;

    /// A short name for reports and benchmarks.
    fn name(&self) -> &'static str;

    /// Whether [`factor_layer`](Self::factor_layer) and
    /// [`right_factors`](Self::right_factors) are guaranteed to fail (return an error, never
    /// panic or loop) on input holding a NaN or an infinity. A caller holding weights nobody
    /// has checked yet may then let the factorisation find them instead of scanning the weights
    /// first (the converter does, for weights read from a file). Default `false`.
    fn rejects_non_finite(&self) -> bool {
        false
    }

    /// Factors every input channel of `layer`: `singular_values` is `C x k` and `vt` is
    /// `C x k x (kh·kw)` (channel `c`'s rows of `V_kᵀ`), `k = min(N/groups, kh·kw)`.
    ///
    /// The default gathers each channel's matrix and calls
    /// [`right_factors`](Self::right_factors), in parallel over channels on the current rayon
    /// pool; backends with a whole-layer algorithm (such as [`GramSvd`]) override it.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`](crate::Error::LengthMismatch) for buffers of the wrong length;
    /// [`Error::Svd`](crate::Error::Svd) naming the channel whose factorisation failed.
    fn factor_layer(&self, layer: &Conv2dWeights<T>, singular_values: &mut [T], vt: &mut [T]) -> crate::Result<()> {
        let shape = layer.shape();
        let (ng, cg, taps, k) = (shape.out_per_group(), shape.in_per_group(), shape.taps(), shape.max_rank());
        check_layer_buffers(layer, singular_values.len(), vt.len())?;
        singular_values.par_chunks_mut(k).zip(vt.par_chunks_mut(k * taps)).enumerate().try_for_each_init(
            || vec![T::zero(); ng * taps],
            |m, (c, (s, v))| {
                let (g, cl) = (c / cg, c % cg);
                for nl in 0..ng {
                    let src = ((g * ng + nl) * cg + cl) * taps;
                    m[nl * taps..(nl + 1) * taps].copy_from_slice(&layer.weight()[src..src + taps]);
                }
                self.right_factors(m, ng, taps, s, v).map_err(|f| crate::Error::Svd {
                    layer: layer.name().to_string(),
                    channel: c,
                    reason: f.reason,
                })
            },
        )
    }
}

/// [`Error::LengthMismatch`](crate::Error::LengthMismatch) unless the buffers fit
/// [`SvdBackend::factor_layer`] for `layer`.
pub(crate) fn check_layer_buffers<T: Real>(layer: &Conv2dWeights<T>, s_len: usize, vt_len: usize) -> crate::Result<()> {
    let shape = layer.shape();
    let (channels, k) = (shape.in_channels, shape.max_rank());
    for (actual, what, expected) in
        [(s_len, "singular values", channels * k), (vt_len, "vt", channels * k * shape.taps())]
    {
        if actual != expected {
            return Err(crate::Error::LengthMismatch {
                layer: layer.name().to_string(),
                what,
                shape: vec![channels, k],
                expected,
                actual,
            });
        }
    }
    Ok(())
}
