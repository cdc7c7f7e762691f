//! The cost model: multiply–accumulates (MACs) and parameters of a dense convolution and of its
//! depthwise + pointwise replacement. This is the only module that knows the formulas.
//!
//! For a layer with `N` outputs, `C` inputs, `g` groups and a `kh x kw` kernel producing an
//! `Ho x Wo` output:
//!
//! | | MACs | parameters (without bias) |
//! |---|---|---|
//! | dense | `Ho·Wo · N · (C/g) · kh·kw` | `N · (C/g) · kh·kw` |
//! | pair at rank `r` | `Ho·Wo · (C·r·kh·kw + N · C·r/g)` | `C·r·kh·kw + N · C·r/g` |
//!
//! Both sides carry the same `N` bias values. The pair is cheaper exactly when
//! `r · (N/g + kh·kw) < (N/g) · kh·kw`, i.e. below the break-even rank
//! `(N/g)·kh·kw / (N/g + kh·kw)`; the MAC ratio is `r/(N/g) + r/(kh·kw)`.

use crate::error::{Error, Result};
use crate::weights::{ConvShape, Geometry};

/// MACs and parameter count of one layer (or a sum of layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Cost {
    /// Multiply–accumulates for one image (batch 1).
    pub macs: u64,
    /// Weights plus biases.
    pub params: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, rhs: Cost) -> Cost {
        Cost { macs: self.macs.saturating_add(rhs.macs), params: self.params.saturating_add(rhs.params) }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

fn mul(layer: &str, what: &'static str, factors: &[u64]) -> Result<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f)).ok_or_else(|| Error::Overflow {
        layer: layer.to_string(),
        what,
        detail: format!("factors {factors:?}"),
    })
}

fn add(layer: &str, what: &'static str, a: u64, b: u64) -> Result<u64> {
    a.checked_add(b).ok_or_else(|| Error::Overflow { layer: layer.to_string(), what, detail: format!("{a} + {b}") })
}

/// Cost of the dense convolution producing an `out_hw` output.
///
/// # Errors
/// [`Error::Overflow`] if the count does not fit in `u64`.
pub fn dense(layer: &str, shape: &ConvShape, has_bias: bool, out_hw: (usize, usize)) -> Result<Cost> {
    let per_pixel =
        mul(layer, "dense MACs", &[shape.out_channels as u64, shape.in_per_group() as u64, shape.taps() as u64])?;
    let macs = mul(layer, "dense MACs", &[per_pixel, out_hw.0 as u64, out_hw.1 as u64])?;
    let params = add(layer, "dense parameters", per_pixel, if has_bias { shape.out_channels as u64 } else { 0 })?;
    Ok(Cost { macs, params })
}

/// Cost of the depthwise + pointwise pair at rank `rank` producing an `out_hw` output.
///
/// # Errors
/// [`Error::Overflow`] if the count does not fit in `u64`.
pub fn pair(layer: &str, shape: &ConvShape, has_bias: bool, rank: usize, out_hw: (usize, usize)) -> Result<Cost> {
    let c = shape.in_channels as u64;
    let r = rank as u64;
    let depthwise = mul(layer, "depthwise MACs", &[c, r, shape.taps() as u64])?;
    let pointwise = mul(layer, "pointwise MACs", &[shape.out_channels as u64, shape.in_per_group() as u64, r])?;
    let per_pixel = add(layer, "pair MACs", depthwise, pointwise)?;
    let macs = mul(layer, "pair MACs", &[per_pixel, out_hw.0 as u64, out_hw.1 as u64])?;
    let params = add(layer, "pair parameters", per_pixel, if has_bias { shape.out_channels as u64 } else { 0 })?;
    Ok(Cost { macs, params })
}

/// Cost of a chain of convolutions run one after another on an `input` `(height, width)`
/// feature map: each factor's dense cost at its own input size (the previous factor's output),
/// summed, plus `bias` values (the last factor's). `factors` are `(dims, geometry)` of each
/// convolution, `dims = [out, in/groups, kh, kw]`. What every scheme's factors cost.
///
/// # Errors
/// [`Error::EmptyOutput`] when a factor's input is too small for its kernel;
/// [`Error::Overflow`] if a count does not fit in `u64`.
pub fn chain(layer: &str, factors: &[([usize; 4], Geometry)], bias: usize, input: (usize, usize)) -> Result<Cost> {
    let mut hw = input;
    let mut total = Cost { macs: 0, params: bias as u64 };
    for (dims, geometry) in factors {
        let out = geometry.output_size(layer, (dims[2], dims[3]), hw)?;
        let weights = mul(layer, "factor parameters", &dims.map(|d| d as u64))?;
        let macs = mul(layer, "factor MACs", &[weights, out.0 as u64, out.1 as u64])?;
        total = Cost {
            macs: add(layer, "factor MACs", total.macs, macs)?,
            params: add(layer, "factor parameters", total.params, weights)?,
        };
        hw = out;
    }
    Ok(total)
}

/// [`chain`] per output position: every factor counted at one position (its weights). Exact
/// per output pixel when every factor runs at the layer's output resolution (DAC, channel SVD);
/// for factors that run at the input resolution (spatial SVD's first, Network Decoupling's
/// first) it is the count of a stride-1 layer whose output is as large as its input.
///
/// # Errors
/// [`Error::Overflow`] if a count does not fit in `u64`.
pub fn chain_per_position(layer: &str, factors: &[([usize; 4], Geometry)], bias: usize) -> Result<Cost> {
    let mut total = Cost { macs: 0, params: bias as u64 };
    for (dims, _) in factors {
        let weights = mul(layer, "factor parameters", &dims.map(|d| d as u64))?;
        total = Cost {
            macs: add(layer, "factor MACs", total.macs, weights)?,
            params: add(layer, "factor parameters", total.params, weights)?,
        };
    }
    Ok(total)
}

/// Spatial SVD (Jaderberg et al.) at rank `r` per group: a `kh x 1` convolution `C -> g·r` at
/// `(Ho, Wi)` then a `1 x kw` convolution `g·r -> N` at `(Ho, Wo)`: MACs
/// `Ho·Wi·r·C·kh + Ho·Wo·N·r·kw`, where `Wi` is the input width. Maximum rank
/// `min((C/g)·kh, (N/g)·kw)`; at stride 1 with `Wi = Wo` the break-even rank is
/// `(N/g)(C/g)·kh·kw / ((C/g)·kh + (N/g)·kw)`.
pub fn spatial_macs(shape: &ConvShape, rank: usize, input_width: usize, out_hw: (usize, usize)) -> u128 {
    let (r, (ho, wo)) = (rank as u128, (out_hw.0 as u128, out_hw.1 as u128));
    let (c, n) = (shape.in_channels as u128, shape.out_channels as u128);
    ho * input_width as u128 * r * c * shape.kh as u128 + ho * wo * n * r * shape.kw as u128
}

/// The stride-1 break-even rank of spatial SVD (see [`spatial_macs`]).
pub fn spatial_break_even_rank(shape: &ConvShape) -> f64 {
    let (ng, cg) = (shape.out_per_group() as f64, shape.in_per_group() as f64);
    let (kh, kw) = (shape.kh as f64, shape.kw as f64);
    ng * cg * kh * kw / (cg * kh + ng * kw)
}

/// The largest spatial SVD rank, `min((C/g)·kh, (N/g)·kw)`.
pub fn spatial_max_rank(shape: &ConvShape) -> usize {
    (shape.in_per_group() * shape.kh).min(shape.out_per_group() * shape.kw)
}

/// Channel SVD (Zhang et al.) at rank `r` per group: a `kh x kw` convolution `C -> g·r` with the
/// layer's geometry, then a 1x1 `g·r -> N`, both at `(Ho, Wo)`: MACs `Ho·Wo·r·(C·kh·kw + N)`.
/// Maximum rank `min(N/g, (C/g)·kh·kw)`; break-even rank `(N/g)(C/g)K / ((C/g)K + N/g)`.
pub fn channel_macs(shape: &ConvShape, rank: usize, out_hw: (usize, usize)) -> u128 {
    let per_pixel = rank as u128 * (shape.in_channels as u128 * shape.taps() as u128 + shape.out_channels as u128);
    per_pixel * out_hw.0 as u128 * out_hw.1 as u128
}

/// The break-even rank of channel SVD (see [`channel_macs`]).
pub fn channel_break_even_rank(shape: &ConvShape) -> f64 {
    let (ng, cg, k) = (shape.out_per_group() as f64, shape.in_per_group() as f64, shape.taps() as f64);
    ng * cg * k / (cg * k + ng)
}

/// The largest channel SVD rank, `min(N/g, (C/g)·kh·kw)`.
pub fn channel_max_rank(shape: &ConvShape) -> usize {
    shape.out_per_group().min(shape.in_per_group() * shape.taps())
}

/// Network Decoupling (Guo et al.) at rank `T`: a 1x1 `C -> N·T` (groups `g`) at the input
/// size `(Hi, Wi)`, a depthwise `kh x kw` on `N·T` channels and a 1x1 summing each output's `T`
/// channels (groups `N`), both at `(Ho, Wo)`: MACs `Hi·Wi·N·T·(C/g) + Ho·Wo·N·T·(K + 1)`.
/// Maximum rank `min(C/g, kh·kw)`; at stride 1 with equal input and output sizes the
/// break-even rank is `(C/g)·K / ((C/g) + K + 1)`.
pub fn decoupled_macs(shape: &ConvShape, rank: usize, in_hw: (usize, usize), out_hw: (usize, usize)) -> u128 {
    let nt = shape.out_channels as u128 * rank as u128;
    let input = in_hw.0 as u128 * in_hw.1 as u128 * nt * shape.in_per_group() as u128;
    input + out_hw.0 as u128 * out_hw.1 as u128 * nt * (shape.taps() as u128 + 1)
}

/// The stride-1 break-even rank of Network Decoupling (see [`decoupled_macs`]).
pub fn decoupled_break_even_rank(shape: &ConvShape) -> f64 {
    let (cg, k) = (shape.in_per_group() as f64, shape.taps() as f64);
    cg * k / (cg + k + 1.0)
}

/// The largest Network Decoupling rank, `min(C/g, kh·kw)`.
pub fn decoupled_max_rank(shape: &ConvShape) -> usize {
    shape.in_per_group().min(shape.taps())
}

/// MAC cost of a fully connected layer with an `[out, in]` weight (for whole-network totals).
pub fn linear(out_features: usize, in_features: usize, has_bias: bool) -> Cost {
    let macs = (out_features as u64).saturating_mul(in_features as u64);
    Cost { macs, params: macs.saturating_add(if has_bias { out_features as u64 } else { 0 }) }
}

/// Output size of a convolution of `shape` and `geometry` on an `input_hw` input.
///
/// # Errors
/// [`Error::EmptyOutput`] when the input is too small.
pub fn output_size(
    layer: &str,
    shape: &ConvShape,
    geometry: &Geometry,
    input_hw: (usize, usize),
) -> Result<(usize, usize)> {
    geometry.output_size(layer, (shape.kh, shape.kw), input_hw)
}

/// The break-even rank `(N/g)·kh·kw / (N/g + kh·kw)`: ranks strictly below it save MACs and
/// parameters.
pub fn break_even_rank(shape: &ConvShape) -> f64 {
    let n = shape.out_per_group() as f64;
    let k = shape.taps() as f64;
    n * k / (n + k)
}

/// Whether the pair at `rank` is strictly cheaper than the dense layer (exact integer test).
pub fn is_beneficial(shape: &ConvShape, rank: usize) -> bool {
    let n = shape.out_per_group() as u128;
    let k = shape.taps() as u128;
    (rank as u128) * (n + k) < n * k
}

/// The factor by which the pair at `rank` reduces MACs: `1 / (r/(N/g) + r/(kh·kw))`.
/// Independent of the input size, since both run at the original output resolution.
pub fn mac_reduction(shape: &ConvShape, rank: usize) -> f64 {
    let n = shape.out_per_group() as f64;
    let k = shape.taps() as f64;
    let r = rank as f64;
    1.0 / (r / n + r / k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vgg(n: usize, c: usize) -> ConvShape {
        ConvShape { out_channels: n, in_channels: c, kh: 3, kw: 3, groups: 1 }
    }

    #[test]
    fn counts_by_hand() {
        // 4 -> 2, 3x3, 5x5 output: dense 25 * 2*4*9 = 1800 MACs, 72 + 2 params.
        let s = vgg(2, 4);
        assert_eq!(dense("l", &s, true, (5, 5)).unwrap(), Cost { macs: 1800, params: 74 });
        // r = 1: depthwise 4*1*9 = 36, pointwise 2*4*1 = 8 per pixel.
        assert_eq!(pair("l", &s, true, 1, (5, 5)).unwrap(), Cost { macs: 44 * 25, params: 46 });
    }

    #[test]
    fn break_even_matches_integer_test() {
        for n in [1, 2, 3, 8, 9, 10, 64, 512] {
            let s = vgg(n, 16);
            let be = break_even_rank(&s);
            for r in 1..=s.max_rank() {
                assert_eq!(is_beneficial(&s, r), (r as f64) < be, "n={n} r={r}");
                let d = dense("l", &s, false, (7, 7)).unwrap().macs;
                let p = pair("l", &s, false, r, (7, 7)).unwrap().macs;
                assert_eq!(is_beneficial(&s, r), p < d);
                assert!((mac_reduction(&s, r) - d as f64 / p as f64).abs() < 1e-9 * mac_reduction(&s, r));
            }
        }
    }

    #[test]
    fn grouped_uses_per_group_outputs() {
        let s = ConvShape { out_channels: 8, in_channels: 8, kh: 3, kw: 3, groups: 4 };
        assert_eq!(s.max_rank(), 2);
        assert!((break_even_rank(&s) - 18.0 / 11.0).abs() < 1e-12);
        assert!(is_beneficial(&s, 1));
        assert!(!is_beneficial(&s, 2));
    }

    #[test]
    fn overflow_is_an_error() {
        let s = vgg(1 << 20, 1 << 20);
        assert!(matches!(dense("big", &s, false, (1 << 20, 1 << 20)), Err(Error::Overflow { .. })));
    }
}
