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
/// nalgebra's iteration can stop with wrong trailing singular values on some matrices, in
/// `f32` (one found by the tests: 0.675 for 0.624, the next 0.252 for 0.233; their squares then
/// sum to 3e-3 more than the matrix's energy) and, more rarely, in `f64` (an 8x10 weighted
/// matrix whose energy came out 3e-4 high). Every result is therefore checked in `f64` against
/// the energy identity `Σ s_j² = ‖M‖²`, to [`F32_CHECK`](Self::F32_CHECK) or
/// [`F64_CHECK`](Self::F64_CHECK) of `‖M‖²`. An `f32` result that fails is recomputed from the
/// same matrix in `f64` (checked in turn) and rounded once; an `f64` result that fails is
/// recomputed by one-sided (Hestenes) Jacobi rotations, slower but not subject to the same
/// stopping rule. Results that pass are returned as nalgebra computed them.
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
        if consistent(matrix, singular_values) {
            return Ok(());
        }
        // Stopped short: f32 retries in f64 (itself checked), f64 by one-sided Jacobi.
        let m: Vec<f64> = matrix.iter().map(|v| v.to_f64_exact()).collect();
        let (s, v) = if T::NAME == "f64" {
            jacobi_right_factors(&m, rows, cols, k)?
        } else {
            let (mut s, mut v) = (vec![0.0; k], vec![0.0; k * cols]);
            SvdBackend::<f64>::right_factors(self, &m, rows, cols, &mut s, &mut v)?;
            (s, v)
        };
        singular_values.iter_mut().zip(&s).for_each(|(d, &x)| *d = T::from_f64_lossy(x));
        vt.iter_mut().zip(&v).for_each(|(d, &x)| *d = T::from_f64_lossy(x));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "nalgebra"
    }
}

/// Whether the singular values `s` of the `matrix` keep its energy: `Σ s_j² = ‖M‖²` to
/// [`NalgebraSvd::F32_CHECK`] or [`NalgebraSvd::F64_CHECK`] (computed in `f64`; one pass over
/// the matrix).
fn consistent<T: Real>(matrix: &[T], s: &[T]) -> bool {
    let tolerance = if T::NAME == "f64" { NalgebraSvd::F64_CHECK } else { NalgebraSvd::F32_CHECK };
    let norm2: f64 = matrix.iter().map(|v| v.to_f64_exact().powi(2)).sum();
    let energy: f64 = s.iter().map(|v| v.to_f64_exact().powi(2)).sum();
    (energy - norm2).abs() <= tolerance * norm2
}

/// Sweeps of [`jacobi_right_factors`] before it gives up (it converges in about ten).
const JACOBI_SWEEPS: usize = 100;

/// The top `k` singular values and right singular vectors (rows of `Vᵀ`, `k x cols`) of the
/// row-major `rows x cols` matrix `m`, by one-sided Jacobi: plane rotations of pairs of columns
/// of `A = M` (accumulated in `V`, starting from `I`) until every pair is orthogonal to `f64`
/// precision. Then `M V = A` has orthogonal columns whose norms are the singular values, `V`
/// stays orthonormal, and small singular values keep their relative accuracy.
fn jacobi_right_factors(m: &[f64], rows: usize, cols: usize, k: usize) -> Result<(Vec<f64>, Vec<f64>), SvdFailure> {
    let mut a = DMatrix::from_row_slice(rows, cols, m);
    let mut v = DMatrix::<f64>::identity(cols, cols);
    // Columns below this squared norm are zero to f64 precision (when `cols > rows` at least
    // `cols - rows` of them end so) and are not rotated against.
    let negligible = (f64::EPSILON * f64::EPSILON) * a.norm_squared();
    let mut converged = false;
    for _ in 0..JACOBI_SWEEPS {
        converged = true;
        for p in 0..cols {
            for q in p + 1..cols {
                converged &= !rotate_pair(&mut a, &mut v, p, q, negligible);
            }
        }
        if converged {
            break;
        }
    }
    if !converged {
        return Err(SvdFailure::new(format!(
            "one-sided Jacobi on a {rows}x{cols} matrix did not converge in {JACOBI_SWEEPS} sweeps"
        )));
    }
    let norms: Vec<f64> = (0..cols).map(|c| a.column(c).norm()).collect();
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&x, &y| norms[y].total_cmp(&norms[x]));
    let s = order[..k].iter().map(|&c| norms[c]).collect();
    let v = &v;
    let vt = order[..k].iter().flat_map(|&c| (0..cols).map(move |r| v[(r, c)])).collect();
    Ok((s, vt))
}

/// Rotates columns `p` and `q` of `a` (and of `v`) to make them orthogonal; `false` when they
/// already are, to `f64` precision, or one of them is `negligible`.
fn rotate_pair(a: &mut DMatrix<f64>, v: &mut DMatrix<f64>, p: usize, q: usize, negligible: f64) -> bool {
    let (alpha, beta) = (a.column(p).norm_squared(), a.column(q).norm_squared());
    let gamma = a.column(p).dot(&a.column(q));
    if alpha <= negligible
        || beta <= negligible
        || gamma.abs() <= f64::EPSILON * a.nrows() as f64 * (alpha * beta).sqrt()
    {
        return false;
    }
    let zeta = (beta - alpha) / (2.0 * gamma);
    let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
    let c = 1.0 / (1.0 + t * t).sqrt();
    let s = c * t;
    for x in [a, v] {
        for r in 0..x.nrows() {
            let (xp, xq) = (x[(r, p)], x[(r, q)]);
            x[(r, p)] = c * xp - s * xq;
            x[(r, q)] = s * xp + c * xq;
        }
    }
    true
}

impl NalgebraSvd {
    /// Relative tolerance, against `‖M‖²`, of the check every `f32` result passes (see
    /// [`NalgebraSvd`]): about a hundred `f32` roundings, far above a converged SVD's error
    /// (about 1e-7) and far below the failure it catches (3e-3).
    pub const F32_CHECK: f64 = 1e-5;

    /// Relative tolerance, against `‖M‖²`, of the check every `f64` result passes: a converged
    /// SVD keeps the energy to about `k · 1e-16`; the failure found by the tests was 3e-4 off.
    pub const F64_CHECK: f64 = 1e-10;
}
