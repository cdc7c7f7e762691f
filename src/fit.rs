//! Which rank-`r` approximation of every input channel's matrix the decomposition keeps.
//!
//! See [`Fit`].

use crate::error::{Error, Result};

/// Which rank-`r` approximation of each input channel's matrix `M_c` (`N/g x kh·kw`) the pair
/// represents.
///
/// - [`Fit::frobenius`] (the default, the DAC paper's): the truncated SVD `M_c = U S Vᵀ`, the
///   best rank-`r` approximation in the Frobenius norm of the weights (Eckart–Young). Every
///   function that does not take a `Fit` (`decompose`, `decompose_with`,
///   [`Factorization::compute`](crate::Factorization::compute), the converters by default) uses
///   it.
/// - [`Fit::correlated`]`(ρ)`: the rank-`r` approximation with the smallest *output* error for
///   input patches whose pixels are correlated as
///   `R[a][b] = ρ^(|Δy_ab|·dh + |Δx_ab|·dw)` (taps `a`, `b` of the `kh x kw` kernel, dilation
///   `dh x dw`). For a patch `x` with covariance `R`, the output error of an approximation `M̂`
///   is `E‖(M − M̂) x‖² = ‖(M − M̂) R^{1/2}‖²_F`, so the best one comes from the SVD of the
///   weighted matrix `M R^{1/2} = U' S' V'ᵀ`:
///   `M ≈ (U'_r S'_r) (V'_rᵀ R^{-1/2})`. The depthwise kernels are the rows of
///   `V'_rᵀ R^{-1/2}`, the pointwise weight is `M R^{1/2} V'_r = U'_r S'_r`. Same pair
///   structure and cost as the Frobenius fit, and still exact at full rank; natural images are
///   smooth, so discarding a kernel's high-frequency part costs less than its weight energy
///   says, and this fit discards it first.
///
/// With a correlated fit, the singular values a factorisation reports are `S'`: its
/// [`Spectrum`](crate::Spectrum), and with it [`Report::relative_error`](crate::Report),
/// [`Report::retained_energy`](crate::Report), the [`Rank::Energy`](crate::Rank::Energy) policy
/// and the planner's scores, measure the relative *output* error under that input model
/// (`sqrt(Σ discarded s'²) / sqrt(Σ s'²)` = `sqrt(tr(ΔW R ΔWᵀ) / tr(W R Wᵀ))` summed over
/// channels), not the relative weight error.
///
/// ```
/// use dac::{exec, svd::NalgebraSvd, Conv2dWeights, Factorization, Fit, Options, Padding};
///
/// let w: Vec<f64> = (0..8 * 4 * 9).map(|i| ((i * 37 % 23) as f64 - 11.0) / 11.0).collect();
/// let layer = Conv2dWeights::builder(w, [8, 4, 3, 3]).padding(Padding::uniform(1)).build()?;
/// let fit = Fit::correlated(Fit::DEFAULT_RHO)?;
/// let f = Factorization::compute_fitted(&layer, &NalgebraSvd::default(), fit)?;
/// assert_eq!(f.fit().rho(), Some(0.7));
///
/// // Full rank is still exact.
/// let d = f.truncate(&Options::new(8))?;
/// let x = exec::Tensor4::new((0..4 * 6 * 6).map(|i| (i as f64 * 0.3).cos()).collect(), [1, 4, 6, 6])?;
/// let dense = exec::conv2d(&x, &layer)?;
/// let pair = exec::pair(&x, &d.depthwise, &d.pointwise)?;
/// assert!(dense.max_abs_diff(&pair).unwrap() < 1e-10 * dense.max_abs());
///
/// // Below it, the report's error is the relative output error for correlated inputs.
/// let r2 = f.truncate(&Options::new(2))?;
/// assert!(r2.report.relative_error > 0.0 && r2.report.relative_error < 1.0);
/// # Ok::<(), dac::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Fit {
    /// `None`: Frobenius; `Some(ρ)`: correlated inputs with pixel correlation `ρ`.
    rho: Option<f64>,
}

impl Fit {
    /// The pixel correlation `ρ` of `--fit correlated` without a value: 0.7, the value
    /// [`Proxy::Spatial`](crate::plan::Proxy::Spatial) assumes.
    pub const DEFAULT_RHO: f64 = 0.7;

    /// The pixel correlation of the fit a conversion planned with `auto` schemes uses unless
    /// told otherwise: 0.2. Every scheme is then fitted, and the planner scores it, for the
    /// output error on mildly correlated inputs. Chosen on both shipped networks together
    /// (EXPERIMENTS.md, "Schemes"): from 0.15 to 0.2 the plans beat every DAC-only plan at
    /// 1.5x, 2x and 3x on both; 0.1 loses on `fmnist_alt` at 3x, 0.25 and above on
    /// `fmnist_vgg`.
    pub const AUTO_RHO: f64 = 0.2;

    /// `Fit::correlated(Fit::AUTO_RHO)`, which cannot fail.
    pub(crate) const fn auto() -> Fit {
        Fit { rho: Some(Self::AUTO_RHO) }
    }

    /// The best rank-`r` approximation of the weights (Frobenius norm): the DAC paper's fit and
    /// the default.
    pub fn frobenius() -> Fit {
        Fit { rho: None }
    }

    /// The best rank-`r` approximation of the outputs for inputs whose pixels one step apart
    /// correlate as `rho` (see the type's docs).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming `rho` and its value unless it is finite and
    /// `0 <= rho < 1` (at 1 the correlation matrix is singular).
    pub fn correlated(rho: f64) -> Result<Fit> {
        if !(rho.is_finite() && (0.0..1.0).contains(&rho)) {
            return Err(Error::InvalidParameter {
                context: "correlated fit".to_string(),
                what: "rho",
                value: rho,
                expected: "a finite pixel correlation with 0 <= rho < 1",
            });
        }
        Ok(Fit { rho: Some(rho) })
    }

    /// `None` for the Frobenius fit, `Some(ρ)` for a correlated one.
    pub fn rho(&self) -> Option<f64> {
        self.rho
    }
}

/// `frobenius` or `correlated=ρ` (the command-line syntax).
impl std::fmt::Display for Fit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rho {
            None => f.write_str("frobenius"),
            Some(rho) => write!(f, "correlated={rho}"),
        }
    }
}

/// The tap correlation `R[a][b] = ρ^(|Δy|·dh + |Δx|·dw)` of a `kh x kw` kernel with dilation
/// `(dh, dw)` (taps in row-major order): the input model of [`Fit::correlated`] and of
/// [`Proxy::Spatial`](crate::plan::Proxy::Spatial).
pub(crate) fn tap_correlation(kh: usize, kw: usize, dilation: (usize, usize), rho: f64) -> nalgebra::DMatrix<f64> {
    nalgebra::DMatrix::from_fn(kh * kw, kh * kw, |a, b| {
        let dy = (a / kw).abs_diff(b / kw) * dilation.0;
        let dx = (a % kw).abs_diff(b % kw) * dilation.1;
        rho.powi((dy + dx) as i32)
    })
}

/// `R^{1/2}` and `R^{-1/2}` (row-major `taps x taps`, symmetric) of the [`tap_correlation`]
/// `R`, from its symmetric eigendecomposition in f64.
///
/// `R` is the Kronecker product of two AR(1) correlation matrices with correlations `ρ^dh` and
/// `ρ^dw`, positive definite for `0 <= ρ < 1`.
pub(crate) fn correlation_roots(kh: usize, kw: usize, dilation: (usize, usize), rho: f64) -> (Vec<f64>, Vec<f64>) {
    use nalgebra::{DMatrix, SymmetricEigen};
    let taps = kh * kw;
    let corr = tap_correlation(kh, kw, dilation, rho);
    let eig = SymmetricEigen::new(corr);
    let root = |p: f64| {
        let d = DMatrix::from_fn(taps, taps, |a, b| {
            (0..taps)
                .map(|k| {
                    eig.eigenvectors[(a, k)]
                        * eig.eigenvalues[k].max(f64::MIN_POSITIVE).powf(p)
                        * eig.eigenvectors[(b, k)]
                })
                .sum::<f64>()
        });
        // Row-major; symmetric up to rounding, made exactly so.
        let mut out = vec![0.0; taps * taps];
        for a in 0..taps {
            for b in 0..taps {
                out[a * taps + b] = 0.5 * (d[(a, b)] + d[(b, a)]);
            }
        }
        out
    };
    (root(0.5), root(-0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        (0..n * n).map(|i| (0..n).map(|k| a[(i / n) * n + k] * b[k * n + i % n]).sum()).collect()
    }

    #[test]
    fn roots_square_to_the_correlation_and_invert_each_other() {
        for (kh, kw, dil, rho) in [(3, 3, (1, 1), 0.7), (5, 5, (1, 1), 0.9), (3, 5, (2, 1), 0.5), (1, 1, (1, 1), 0.7)] {
            let n = kh * kw;
            let (half, inv) = correlation_roots(kh, kw, dil, rho);
            let r = matmul(&half, &half, n);
            let id = matmul(&half, &inv, n);
            for a in 0..n {
                for b in 0..n {
                    let dy = (a / kw).abs_diff(b / kw) * dil.0;
                    let dx = (a % kw).abs_diff(b % kw) * dil.1;
                    let want = rho.powi((dy + dx) as i32);
                    assert!((r[a * n + b] - want).abs() < 1e-12, "{kh}x{kw} R[{a}][{b}]");
                    let want = if a == b { 1.0 } else { 0.0 };
                    assert!((id[a * n + b] - want).abs() < 1e-10, "{kh}x{kw} I[{a}][{b}]");
                }
            }
        }
    }

    #[test]
    fn display_and_default() {
        assert_eq!(Fit::default(), Fit::frobenius());
        assert_eq!(Fit::frobenius().rho(), None);
        assert_eq!(Fit::frobenius().to_string(), "frobenius");
        assert_eq!(Fit::correlated(0.7).unwrap().to_string(), "correlated=0.7");
        assert_eq!(Fit::correlated(0.0).unwrap().rho(), Some(0.0));
    }
}
