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
}
