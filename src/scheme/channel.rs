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

use super::lowrank::{weights_f64, Blocks, LowRank, Whitening};
use super::{FactorSpec, Factored, Scheme, SchemeKind};
use crate::error::Result;
use crate::fit::{tap_correlation, Fit};
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
        let dil = layer.geometry().dilation;
        let cols = self.fit.rho().map(|rho| Whitening::taps(shape.kh, shape.kw, dil, rho));
        let rho = self.fit.rho().unwrap_or(Fit::DEFAULT_RHO);
        let corr = (None, Some(tap_correlation(shape.kh, shape.kw, dil, rho)));
        let blocks = (0..shape.groups)
            .map(|gi| {
                let m = DMatrix::from_row_slice(ng, row, &w[gi * ng * row..(gi + 1) * ng * row]);
                LowRank::fitted(&m, None, cols.as_ref(), layer.name(), gi)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Blocks { kind: SchemeKind::Channel, layer, blocks, corr, layout }))
    }
}

/// The kernel and pointwise factors' weights at `rank` (see the module docs).
fn layout(blocks: &[LowRank], shape: &ConvShape, rank: usize) -> Vec<Vec<f64>> {
    let (ng, row) = (shape.out_per_group(), shape.in_per_group() * shape.taps());
    let (mut f, mut p) = (vec![0.0; shape.groups * rank * row], vec![0.0; shape.out_channels * rank]);
    for (gi, b) in blocks.iter().enumerate() {
        for j in 0..rank {
            for i in 0..row {
                f[(gi * rank + j) * row + i] = b.b[(i, j)];
            }
            for n in 0..ng {
                p[(gi * ng + n) * rank + j] = b.a[(n, j)];
            }
        }
    }
    vec![f, p]
}
