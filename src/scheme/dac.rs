//! DAC, the paper's scheme (Li et al., WACV 2019): a depthwise + pointwise pair.
//!
//! Weight `W` `[N, C/g, kh, kw]`, `g` groups, `Ng = N/g`, `Cg = C/g`, `K = kh·kw`. For every
//! input channel `c` (group `c / Cg`), `M_c = W[outputs of its group, c mod Cg, :, :]` is an
//! `Ng x K` matrix with SVD `M_c = U S Vᵀ`; rank `r ≤ min(Ng, K)` keeps the top `r` components:
//!
//! - **depthwise** `[C·r, 1, kh, kw]`, `groups = C`, the layer's stride, padding and dilation:
//!   output channel `c·r + j` is `a_j·v_jᵀ`;
//! - **pointwise** `[N, Cg·r, 1, 1]`, `groups = g`, the layer's bias:
//!   `P[n, (c mod Cg)·r + j] = (M_c v_j)[n] / a_j`,
//!
//! with `a_j` from the [`Split`]. Exact at `r = min(Ng, K)`; below it each channel is its best
//! rank-`r` approximation (Eckart–Young), relative error `sqrt(Σ discarded s²) / ‖W‖`.
//! Cost per output pixel: `C·r·K + N·Cg·r` MACs against `N·Cg·K` dense; break-even rank
//! `Ng·K / (Ng + K)`. With a correlated [`Fit`], the SVD is of `M_c R^{1/2}` instead (see
//! [`Fit`]). [`Factorization`] does the work; [`decompose`](crate::decompose()) is the same
//! computation as a function.

use super::{ErrorTable, Factor, FactorSpec, Factored, Scheme, SchemeKind, Workspace};
use crate::decompose::{pair_layers, Factorization, Options, Split};
use crate::error::Result;
use crate::fit::Fit;
use crate::scalar::Real;
use crate::svd::SvdBackend;
use crate::weights::{Conv2dWeights, ConvShape, Geometry};

/// The DAC scheme with an SVD backend, a [`Fit`] and a [`Split`].
#[derive(Clone, Copy)]
pub struct Dac<'b, T: Real> {
    backend: &'b dyn SvdBackend<T>,
    fit: Fit,
    split: Split,
}

impl<T: Real> std::fmt::Debug for Dac<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dac")
            .field("backend", &self.backend.name())
            .field("fit", &self.fit)
            .field("split", &self.split)
            .finish()
    }
}

impl<'b, T: Real> Dac<'b, T> {
    /// The paper's fit ([`Fit::frobenius`]) and the default [`Split`], factored by `backend`.
    pub fn new(backend: &'b dyn SvdBackend<T>) -> Self {
        Self { backend, fit: Fit::frobenius(), split: Split::default() }
    }
    /// Which rank-`r` approximation the pairs represent.
    pub fn fit(mut self, fit: Fit) -> Self {
        self.fit = fit;
        self
    }
    /// Where the singular values go.
    pub fn split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
    /// Factors `layer` as the concrete [`Factorization`] (what [`Scheme::factor`] boxes).
    ///
    /// # Errors
    /// As [`Factorization::compute_fitted`].
    pub fn factorization<'a>(&self, layer: &'a Conv2dWeights<T>) -> Result<Factorization<'a, T>> {
        Factorization::compute_fitted(layer, self.backend, self.fit)
    }
}

/// A layer factored by [`Dac`].
struct DacFactored<'a, T> {
    factorization: Factorization<'a, T>,
    split: Split,
}

impl<T: Real> Scheme<T> for Dac<'_, T> {
    fn kind(&self) -> SchemeKind {
        SchemeKind::Dac
    }
    fn factor<'a>(&self, layer: &'a Conv2dWeights<T>) -> Result<Box<dyn Factored<T> + 'a>> {
        Ok(Box::new(DacFactored { factorization: self.factorization(layer)?, split: self.split }))
    }
}

impl<T: Real> Factored<T> for DacFactored<'_, T> {
    fn scheme(&self) -> SchemeKind {
        SchemeKind::Dac
    }
    fn layer(&self) -> &Conv2dWeights<T> {
        self.factorization.layer()
    }
    fn errors(&self) -> ErrorTable {
        let spectrum = self.factorization.spectrum();
        let k = spectrum.shape().max_rank();
        ErrorTable::new(
            (0..=k).map(|r| spectrum.retained_energy(r)).collect(),
            (0..=k).map(|r| spectrum.optimal_relative_error(r)).collect(),
        )
    }
    fn correlated_loss(&self) -> Vec<f64> {
        correlated_loss(&self.factorization)
    }
    fn error_at(&self, rank: usize) -> (f64, f64) {
        let spectrum = self.factorization.spectrum();
        (spectrum.retained_energy(rank), spectrum.optimal_relative_error(rank))
    }
    fn factors(&self, rank: usize, workspace: &mut Workspace<T>) -> Result<Vec<Factor<T>>> {
        let (mut dw, mut pw) = (workspace.take(), workspace.take());
        let options = Options::new(rank).split(self.split);
        self.factorization.write_pair_vecs(&options, &mut dw, &mut pw, &mut workspace.lanes)?;
        let (depthwise, pointwise) = pair_layers(self.layer(), dw, pw, rank, false)?;
        Ok(vec![Factor { role: "depthwise", conv: depthwise }, Factor { role: "pointwise", conv: pointwise }])
    }
}

/// The pair at `rank`: the depthwise with the layer's stride, padding and dilation, the
/// pointwise 1x1 with its groups.
pub(super) fn specs(shape: &ConvShape, geometry: &Geometry, rank: usize) -> Vec<FactorSpec> {
    let (c, n, cg) = (shape.in_channels, shape.out_channels, shape.in_per_group());
    let depthwise = Geometry { groups: c, ..*geometry };
    let pointwise = Geometry { groups: shape.groups, ..Geometry::default() };
    vec![
        FactorSpec::new("depthwise", [c * rank, 1, shape.kh, shape.kw], depthwise),
        FactorSpec::new("pointwise", [n, cg * rank, 1, 1], pointwise),
    ]
}

/// At every rank, the fraction of the correlated-input output energy the discarded components
/// of every channel carry (from the factorisation's right singular vectors).
fn correlated_loss<T: Real>(f: &Factorization<'_, T>) -> Vec<f64> {
    let k = f.layer().shape().max_rank();
    let energies = f.correlated_energies();
    let total: f64 = energies.chunks(k).map(|c| c.iter().sum::<f64>()).sum();
    let lost = |r: usize| {
        let lost: f64 = energies.chunks(k).map(|c| c[r..].iter().sum::<f64>()).sum();
        if total > 0.0 {
            (lost / total).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    (0..=k).map(lost).collect()
}
