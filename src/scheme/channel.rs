//! Channel SVD (Zhang, Zou, He and Sun 2015, without their data): a convolution to `r`
//! channels, then a 1x1 convolution back to `N`.
//!
//! Weight `W` `[N, C/g, kh, kw]`, `g` groups, `Ng = N/g`, `Cg = C/g`, `K = kh·kw`. For each
//! group, the `Ng x (Cg·K)` matrix `M[n, (c, t)] = W[n, c, t]` has the thin SVD `M = A Bᵀ`;
//! rank `r ≤ min(Ng, Cg·K)` keeps the first `r` columns:
//!
//! - **kernel** `[g·r, Cg, kh, kw]`, groups `g`, the layer's stride, padding and dilation:
//!   `F[gi·r + j, c, t] = B[(c, t), j]`;
//! - **pointwise** `[N, r, 1, 1]`, groups `g`, the layer's bias: `P[gi·Ng + n, j] = A[n, j]`.
//!
//! Their composition is the layer's convolution with `A Bᵀ` for `M`: exact at full rank, the
//! best rank-`r` approximation of every group's `M` below it. Both run at the output size:
//! MACs `Ho·Wo·r·(C·K + N)` ([`cost::channel_macs`](crate::cost::channel_macs)). With a correlated [`Fit`], `M`'s columns
//! are weighted by the tap correlation of each input channel, so truncation is optimal for the
//! layer's output under that input model.

use super::lowrank::{error_table, loss_fraction, weights_f64, LowRank, Whitening};
use super::{ErrorTable, Factor, FactorSpec, Factored, Scheme, SchemeKind, Workspace};
use crate::error::{Error, Result};
use crate::fit::Fit;
use crate::scalar::Real;
use crate::weights::{Conv2dWeights, ConvShape, Geometry};
use nalgebra::DMatrix;

/// Channel SVD with a [`Fit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Channel {
    fit: Fit,
}

impl Channel {
    /// Channel SVD in the Frobenius norm.
    pub fn new() -> Self {
        Self::default()
    }
    /// Which rank-`r` approximation the factors represent.
    pub fn fit(mut self, fit: Fit) -> Self {
        self.fit = fit;
        self
    }
}

pub(super) fn specs(shape: &ConvShape, geometry: &Geometry, rank: usize) -> Vec<FactorSpec> {
    let g = shape.groups;
    let pointwise = Geometry { groups: g, ..Geometry::default() };
    vec![
        FactorSpec::new("kernel", [g * rank, shape.in_per_group(), shape.kh, shape.kw], *geometry),
        FactorSpec::new("pointwise", [shape.out_channels, rank, 1, 1], pointwise),
    ]
}

impl<T: Real> Scheme<T> for Channel {
    fn kind(&self) -> SchemeKind {
        SchemeKind::Channel
    }
    fn factor<'a>(&self, layer: &'a Conv2dWeights<T>) -> Result<Box<dyn Factored<T> + 'a>> {
        let shape = layer.shape();
        let w = weights_f64(layer)?;
        let (ng, row) = (shape.out_per_group(), shape.in_per_group() * shape.taps());
        let cols = self.fit.rho().map(|rho| Whitening::taps(shape.kh, shape.kw, layer.geometry().dilation, rho));
        let blocks = (0..shape.groups)
            .map(|gi| {
                let m = DMatrix::from_row_slice(ng, row, &w[gi * ng * row..(gi + 1) * ng * row]);
                LowRank::fitted(&m, None, cols.as_ref(), layer.name(), gi)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(ChannelFactored { layer, blocks, rho: self.fit.rho() }))
    }
}

/// A layer factored by [`Channel`].
struct ChannelFactored<'a, T> {
    layer: &'a Conv2dWeights<T>,
    blocks: Vec<LowRank>,
    rho: Option<f64>,
}

impl<T: Real> Factored<T> for ChannelFactored<'_, T> {
    fn scheme(&self) -> SchemeKind {
        SchemeKind::Channel
    }
    fn layer(&self) -> &Conv2dWeights<T> {
        self.layer
    }
    fn errors(&self) -> ErrorTable {
        error_table(&self.blocks)
    }
    fn correlated_loss(&self) -> Vec<f64> {
        let [_, _, kh, kw] = self.layer.dims();
        let rho = self.rho.unwrap_or(Fit::DEFAULT_RHO);
        let corr = crate::fit::tap_correlation(kh, kw, self.layer.geometry().dilation, rho);
        let per_block: Vec<Vec<f64>> = self.blocks.iter().map(|b| b.discarded_energy(None, Some(&corr))).collect();
        loss_fraction(&per_block)
    }
    fn factors(&self, rank: usize, workspace: &mut Workspace<T>) -> Result<Vec<Factor<T>>> {
        let max = Factored::max_rank(self);
        if rank == 0 || rank > max {
            return Err(Error::InvalidRank { layer: self.layer.name().to_string(), rank, max });
        }
        let shape = self.layer.shape();
        let (ng, row) = (shape.out_per_group(), shape.in_per_group() * shape.taps());
        let (mut f, mut p) = (vec![0.0; shape.groups * rank * row], vec![0.0; shape.out_channels * rank]);
        for (gi, b) in self.blocks.iter().enumerate() {
            for j in 0..rank {
                for i in 0..row {
                    f[(gi * rank + j) * row + i] = b.b[(i, j)];
                }
                for n in 0..ng {
                    p[(gi * ng + n) * rank + j] = b.a[(n, j)];
                }
            }
        }
        super::build_factors(self.layer, &specs(&shape, self.layer.geometry(), rank), [f, p], workspace)
    }
}
