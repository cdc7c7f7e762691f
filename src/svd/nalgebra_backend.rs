//! The reference backend: nalgebra's Golub–Kahan SVD, bounded.

use super::{SvdBackend, SvdFailure};
use crate::scalar::Real;
use nalgebra::DMatrix;

/// SVD through [`nalgebra::linalg::SVD::try_new`] with a bounded iteration count.
///
/// nalgebra's unbounded `svd()` can iterate forever on some inputs; this backend gives up after
/// [`max_iterations`](Self::max_iterations) sweeps and reports the failure instead. Singular
/// values are sorted into descending order (nalgebra does not guarantee it).
///
/// In `f32`, nalgebra's iteration can stop with a wrong trailing singular value on some
/// matrices (one found by the tests: 0.675 for 0.624, the next 0.252 for 0.233; their squares
/// then sum to 3e-3 more than the matrix's energy). Every `f32` result is therefore checked in
/// `f64` against the energy identity `Σ s_j² = ‖M‖²`, to [`F32_CHECK`](Self::F32_CHECK) of
/// `‖M‖²`; a result that fails is recomputed from the same matrix in `f64` and rounded once.
/// `f64` results are returned as computed.
///
/// ```
/// use dac::svd::{NalgebraSvd, SvdBackend};
/// let m = [3.0f64, 0.0, 0.0, 4.0]; // 2 x 2
/// let (mut s, mut vt) = ([0.0; 2], [0.0; 4]);
/// NalgebraSvd::default().right_factors(&m, 2, 2, &mut s, &mut vt).unwrap();
/// assert!((s[0] - 4.0).abs() < 1e-12 && (s[1] - 3.0).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalgebraSvd {
    /// Iteration limit passed to `try_new` (default 10 000).
    pub max_iterations: usize,
}

impl Default for NalgebraSvd {
    fn default() -> Self {
        Self { max_iterations: 10_000 }
    }
}

impl<T: Real> SvdBackend<T> for NalgebraSvd {
    fn right_factors(
        &self,
        matrix: &[T],
        rows: usize,
        cols: usize,
        singular_values: &mut [T],
        vt: &mut [T],
    ) -> Result<(), SvdFailure> {
        let k = rows.min(cols);
        debug_assert_eq!(matrix.len(), rows * cols);
        debug_assert_eq!(singular_values.len(), k);
        debug_assert_eq!(vt.len(), k * cols);
        let m = DMatrix::from_row_slice(rows, cols, matrix);
        let svd = nalgebra::linalg::SVD::try_new(m, false, true, T::default_epsilon(), self.max_iterations)
            .ok_or_else(|| {
                SvdFailure::new(format!(
                    "nalgebra SVD of a {rows}x{cols} matrix did not converge in {} iterations",
                    self.max_iterations
                ))
            })?;
        let v_t = svd.v_t.as_ref().ok_or_else(|| SvdFailure::new("nalgebra returned no V"))?;
        let s = &svd.singular_values;
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap_or(std::cmp::Ordering::Equal));
        for (dst, &src) in order.iter().enumerate() {
            singular_values[dst] = num_traits::Float::abs(s[src]);
            for c in 0..cols {
                vt[dst * cols + c] = v_t[(src, c)];
            }
        }
        if T::NAME == "f64" || consistent(matrix, singular_values) {
            return Ok(());
        }
        // Stopped short in f32: the same matrix in f64 (never checked again), rounded once.
        let m: Vec<f64> = matrix.iter().map(|v| v.to_f64_exact()).collect();
        let (mut s, mut v) = (vec![0.0; singular_values.len()], vec![0.0; vt.len()]);
        SvdBackend::<f64>::right_factors(self, &m, rows, cols, &mut s, &mut v)?;
        singular_values.iter_mut().zip(&s).for_each(|(d, &x)| *d = T::from_f64_lossy(x));
        vt.iter_mut().zip(&v).for_each(|(d, &x)| *d = T::from_f64_lossy(x));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "nalgebra"
    }
}

/// Whether the singular values `s` of the `matrix` keep its energy: `Σ s_j² = ‖M‖²` to
/// [`NalgebraSvd::F32_CHECK`] (computed in `f64`; one pass over the matrix).
fn consistent<T: Real>(matrix: &[T], s: &[T]) -> bool {
    let norm2: f64 = matrix.iter().map(|v| v.to_f64_exact().powi(2)).sum();
    let energy: f64 = s.iter().map(|v| v.to_f64_exact().powi(2)).sum();
    (energy - norm2).abs() <= NalgebraSvd::F32_CHECK * norm2
}

impl NalgebraSvd {
    /// Relative tolerance, against `‖M‖²`, of the check every `f32` result passes (see
    /// [`NalgebraSvd`]): about a hundred `f32` roundings, far above a converged SVD's error
    /// (about 1e-7) and far below the failure it catches (3e-3).
    pub const F32_CHECK: f64 = 1e-5;
}
