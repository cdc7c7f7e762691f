//! Network Decoupling (Guo, Li, Zhang, Wang and Wang 2018), the dual of DAC: a 1x1
//! convolution, a depthwise convolution, and a 1x1 convolution summing each output's channels.
//!
//! Weight `W` `[N, C/g, kh, kw]`, `g` groups, `Cg = C/g`, `K = kh·kw`. For each output channel
//! `n`, the `Cg x K` matrix `M_n[c, t] = W[n, c, t]` has the thin SVD `M_n = A_n B_nᵀ`; rank
//! `T ≤ min(Cg, K)` keeps the first `T` columns:
//!
//! - **expand** `[N·T, Cg, 1, 1]`, groups `g`, stride 1, no padding:
//!   `E[n·T + t, c] = A_n[c, t]`;
//! - **depthwise** `[N·T, 1, kh, kw]`, groups `N·T`, the layer's stride, padding and dilation:
//!   channel `n·T + t` is `B_n[:, t]`;
//! - **sum** `[N, T, 1, 1]`, groups `N`, every weight 1, the layer's bias.
//!
//! Output `n` is `Σ_{c,t'} (A_n B_nᵀ)[c, t'] · in_c[tap t']`, the layer's convolution with
//! `A_n B_nᵀ` for `M_n`: exact at full rank, each output channel's best rank-`T` approximation
//! below it. The expand factor runs at the input size: MACs `Hi·Wi·N·T·Cg + Ho·Wo·N·T·(K + 1)`
//! ([`cost::decoupled_macs`](crate::cost::decoupled_macs)). With a correlated [`Fit`], each `M_n`'s columns are weighted by
//! the tap correlation, so truncation is optimal for the output under that input model.

use super::lowrank::{weights_f64, Blocks, LowRank, Whitening};
use super::{FactorSpec, Factored, Scheme, SchemeKind};
use crate::error::Result;
use crate::fit::{tap_correlation, Fit};
use crate::scalar::Real;
use crate::weights::{Conv2dWeights, ConvShape, Geometry};
use nalgebra::DMatrix;
use rayon::prelude::*;

/// Network Decoupling with a [`Fit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Decoupled {
    fit: Fit,
}

impl Decoupled {
    /// Network Decoupling in the Frobenius norm.
    pub fn new() -> Self {
        Self::default()
    }
    /// Which rank-`T` approximation the factors represent.
    pub fn fit(mut self, fit: Fit) -> Self {
        self.fit = fit;
        self
    }
}

pub(super) fn specs(shape: &ConvShape, geometry: &Geometry, rank: usize) -> Vec<FactorSpec> {
    let nt = shape.out_channels * rank;
    let expand = Geometry { groups: shape.groups, ..Geometry::default() };
    let depthwise = Geometry { groups: nt, ..*geometry };
    let sum = Geometry { groups: shape.out_channels, ..Geometry::default() };
    vec![
        FactorSpec::new("expand", [nt, shape.in_per_group(), 1, 1], expand),
        FactorSpec::new("depthwise", [nt, 1, shape.kh, shape.kw], depthwise),
        FactorSpec::new("sum", [shape.out_channels, rank, 1, 1], sum),
    ]
}

impl<T: Real> Scheme<T> for Decoupled {
    fn kind(&self) -> SchemeKind {
        SchemeKind::Decoupled
    }
    fn factor<'a>(&self, layer: &'a Conv2dWeights<T>) -> Result<Box<dyn Factored<T> + 'a>> {
        let shape = layer.shape();
        let w = weights_f64(layer)?;
        let (cg, k) = (shape.in_per_group(), shape.taps());
        let dil = layer.geometry().dilation;
        let cols = self.fit.rho().map(|rho| Whitening::taps(shape.kh, shape.kw, dil, rho));
        let rho = self.fit.rho().unwrap_or(Fit::DEFAULT_RHO);
        let corr = (None, Some(tap_correlation(shape.kh, shape.kw, dil, rho)));
        let blocks = w
            .par_chunks(cg * k)
            .enumerate()
            .map(|(n, m)| LowRank::fitted(&DMatrix::from_row_slice(cg, k, m), None, cols.as_ref(), layer.name(), n))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Blocks { kind: SchemeKind::Decoupled, layer, blocks, corr, layout }))
    }
}

/// The expand, depthwise and sum factors' weights at `rank` (see the module docs).
fn layout(blocks: &[LowRank], shape: &ConvShape, rank: usize) -> Vec<Vec<f64>> {
    let (n_out, cg, k) = (shape.out_channels, shape.in_per_group(), shape.taps());
    let (mut e, mut d) = (vec![0.0; n_out * rank * cg], vec![0.0; n_out * rank * k]);
    for (n, b) in blocks.iter().enumerate() {
        for t in 0..rank {
            for c in 0..cg {
                e[(n * rank + t) * cg + c] = b.a[(c, t)];
            }
            for tap in 0..k {
                d[(n * rank + t) * k + tap] = b.b[(tap, t)];
            }
        }
    }
    vec![e, d, vec![1.0; n_out * rank]]
}
