//! Spatial SVD (Jaderberg, Vedaldi and Zisserman 2014, scheme 2): a vertical then a horizontal
//! convolution.
//!
//! Weight `W` `[N, C/g, kh, kw]`, `g` groups, `Ng = N/g`, `Cg = C/g`. For each group, the
//! `(Cg·kh) x (Ng·kw)` matrix `M[(c, y), (n, x)] = W[n, c, y, x]` has the thin SVD
//! `M = A Bᵀ`; rank `r ≤ min(Cg·kh, Ng·kw)` keeps the first `r` columns:
//!
//! - **vertical** `[g·r, Cg, kh, 1]`, groups `g`, stride `(sh, 1)`, dilation `(dh, 1)`,
//!   padding top and bottom: `V[gi·r + j, c, y, 0] = A[(c, y), j]`;
//! - **horizontal** `[N, r, 1, kw]`, groups `g`, stride `(1, sw)`, dilation `(1, dw)`, padding
//!   left and right, the layer's bias: `H[gi·Ng + n, j, 0, x] = B[(n, x), j]`.
//!
//! Output `n` is `Σ_{c,y,x} (Σ_j A[(c,y),j] B[(n,x),j]) · in_c[h·sh + y·dh − top, w·sw + x·dw −
//! left]`, the layer's convolution with `A Bᵀ` for `M`: exact at full rank, the best rank-`r`
//! approximation of every group's `M` below it (relative error `sqrt(Σ discarded s²) / ‖W‖`).
//! The vertical factor runs at the output height and the input width: MACs
//! `Ho·Wi·r·C·kh + Ho·Wo·N·r·kw` ([`cost::spatial_macs`](crate::cost::spatial_macs)). With a correlated [`Fit`], `M` is
//! weighted by the vertical tap correlation on its rows and the horizontal one on its columns
//! (the model's correlation `ρ^(|Δy|·dh + |Δx|·dw)` is their product), so truncation is optimal
//! for the layer's output under that input model.

use super::lowrank::{weights_f64, Blocks, LowRank, Whitening};
use super::{FactorSpec, Factored, Scheme, SchemeKind};
use crate::error::Result;
use crate::fit::{tap_correlation, Fit};
use crate::scalar::Real;
use crate::weights::{Conv2dWeights, ConvShape, Geometry, Padding};
use nalgebra::DMatrix;

/// Spatial SVD with a [`Fit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Spatial {
    fit: Fit,
}

impl Spatial {
    /// Spatial SVD in the Frobenius norm.
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
    let p = geometry.padding;
    let vertical = Geometry {
        stride: (geometry.stride.0, 1),
        dilation: (geometry.dilation.0, 1),
        padding: Padding { top: p.top, bottom: p.bottom, left: 0, right: 0 },
        groups: g,
    };
    let horizontal = Geometry {
        stride: (1, geometry.stride.1),
        dilation: (1, geometry.dilation.1),
        padding: Padding { top: 0, bottom: 0, left: p.left, right: p.right },
        groups: g,
    };
    vec![
        FactorSpec::new("vertical", [g * rank, shape.in_per_group(), shape.kh, 1], vertical),
        FactorSpec::new("horizontal", [shape.out_channels, rank, 1, shape.kw], horizontal),
    ]
}

impl<T: Real> Scheme<T> for Spatial {
    fn kind(&self) -> SchemeKind {
        SchemeKind::Spatial
    }
    fn factor<'a>(&self, layer: &'a Conv2dWeights<T>) -> Result<Box<dyn Factored<T> + 'a>> {
        let shape = layer.shape();
        let w = weights_f64(layer)?;
        let (ng, cg, kh, kw) = (shape.out_per_group(), shape.in_per_group(), shape.kh, shape.kw);
        let dil = layer.geometry().dilation;
        let (rows, cols) = match self.fit.rho() {
            Some(rho) => (Some(Whitening::taps(kh, 1, dil, rho)), Some(Whitening::taps(1, kw, dil, rho))),
            None => (None, None),
        };
        let rho = self.fit.rho().unwrap_or(Fit::DEFAULT_RHO);
        let corr = (Some(tap_correlation(kh, 1, dil, rho)), Some(tap_correlation(1, kw, dil, rho)));
        let blocks = (0..shape.groups)
            .map(|gi| {
                let m = DMatrix::from_fn(cg * kh, ng * kw, |row, col| {
                    let (c, y, n, x) = (row / kh, row % kh, col / kw, col % kw);
                    w[(((gi * ng + n) * cg + c) * kh + y) * kw + x]
                });
                LowRank::fitted(&m, rows.as_ref(), cols.as_ref(), layer.name(), gi)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Blocks { kind: SchemeKind::Spatial, layer, blocks, corr, layout }))
    }
}

/// The vertical and horizontal factors' weights at `rank` (see the module docs).
fn layout(blocks: &[LowRank], shape: &ConvShape, rank: usize) -> Vec<Vec<f64>> {
    let (ng, cg, kh, kw, g) = (shape.out_per_group(), shape.in_per_group(), shape.kh, shape.kw, shape.groups);
    let (mut v, mut h) = (vec![0.0; g * rank * cg * kh], vec![0.0; shape.out_channels * rank * kw]);
    for (gi, b) in blocks.iter().enumerate() {
        for j in 0..rank {
            for row in 0..cg * kh {
                v[(gi * rank + j) * cg * kh + row] = b.a[(row, j)];
            }
            for n in 0..ng {
                for x in 0..kw {
                    h[((gi * ng + n) * rank + j) * kw + x] = b.b[(n * kw + x, j)];
                }
            }
        }
    }
    vec![v, h]
}
