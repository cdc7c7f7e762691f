//! The three matrix schemes against definitions computed here: each truncation error is the
//! Eckart–Young bound of the scheme's documented matrix, from an SVD computed in the test
//! (nalgebra), and each cost is the documented closed form and the MACs of the factor
//! convolutions counted one by one.

use crate::support::Rng;
use dac::cost;
use dac::scheme::{Channel, Decoupled, Scheme, SchemeKind, Spatial};
use dac::{Conv2dWeights, Padding};
use nalgebra::DMatrix;

/// Singular values of `m`, descending.
fn singular_values(m: DMatrix<f64>) -> Vec<f64> {
    let mut s: Vec<f64> = m.svd(false, false).singular_values.iter().copied().collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

/// The documented matrices of a layer (one per group, or per output channel for Network
/// Decoupling).
fn matrices(kind: SchemeKind, w: &[f64], [n, cg, kh, kw]: [usize; 4], groups: usize) -> Vec<DMatrix<f64>> {
    let ng = n / groups;
    let at = |o: usize, c: usize, y: usize, x: usize| w[((o * cg + c) * kh + y) * kw + x];
    match kind {
        SchemeKind::Spatial => (0..groups)
            .map(|g| DMatrix::from_fn(cg * kh, ng * kw, |r, c| at(g * ng + c / kw, r / kh, r % kh, c % kw)))
            .collect(),
        SchemeKind::Channel => (0..groups)
            .map(|g| {
                DMatrix::from_fn(ng, cg * kh * kw, |r, c| at(g * ng + r, c / (kh * kw), c % (kh * kw) / kw, c % kw))
            })
            .collect(),
        _ => (0..n).map(|o| DMatrix::from_fn(cg, kh * kw, |c, t| at(o, c, t / kw, t % kw))).collect(),
    }
}

#[test]
fn errors_are_the_eckart_young_bound_of_the_documented_matrix() {
    let mut rng = Rng::new(41);
    for (dims, groups) in [([8usize, 4usize, 3usize, 3usize], 1usize), ([6, 2, 5, 3], 3), ([12, 3, 3, 2], 2)] {
        let w: Vec<f64> = rng.vec(dims.iter().product());
        let layer = Conv2dWeights::builder(w.clone(), dims).groups(groups).build().unwrap();
        let schemes: [Box<dyn Scheme<f64>>; 3] =
            [Box::new(Spatial::new()), Box::new(Channel::new()), Box::new(Decoupled::new())];
        for scheme in schemes {
            let kind = scheme.kind();
            let spectra: Vec<Vec<f64>> = matrices(kind, &w, dims, groups).into_iter().map(singular_values).collect();
            let total: f64 = w.iter().map(|v| v * v).sum();
            let errors = scheme.factor(&layer).unwrap().errors();
            assert_eq!(errors.max_rank(), kind.max_rank(&layer.shape()), "{kind}");
            for r in 0..=errors.max_rank() {
                let discarded: f64 = spectra.iter().map(|s| s.iter().skip(r).map(|v| v * v).sum::<f64>()).sum();
                let want = (discarded / total).sqrt();
                let got = errors.relative_error(r);
                assert!((got - want).abs() < 1e-7, "{kind} {dims:?}/{groups} rank {r}: {got} vs {want}");
            }
        }
    }
}

/// MACs of a chain of convolutions counted factor by factor here.
fn counted(kind: SchemeKind, layer: &Conv2dWeights<f64>, rank: usize, hw: (usize, usize)) -> u64 {
    let mut size = hw;
    let mut macs = 0u64;
    for f in kind.factor_specs(&layer.shape(), layer.geometry(), rank) {
        let g = f.geometry;
        let span = |k: usize, d: usize| d * (k - 1) + 1;
        let oh = (size.0 + g.padding.top + g.padding.bottom - span(f.dims[2], g.dilation.0)) / g.stride.0 + 1;
        let ow = (size.1 + g.padding.left + g.padding.right - span(f.dims[3], g.dilation.1)) / g.stride.1 + 1;
        macs += (oh * ow * f.dims.iter().product::<usize>()) as u64;
        size = (oh, ow);
    }
    macs
}

#[test]
fn costs_are_the_closed_forms_and_the_counted_factor_macs() {
    let cases = [
        ([16usize, 8usize, 3usize, 3usize], 1usize, (1, 1), Padding::uniform(1), (1, 1), (14, 14)),
        ([32, 4, 3, 3], 2, (2, 2), Padding::uniform(1), (1, 1), (15, 17)),
        ([12, 6, 5, 3], 1, (2, 1), Padding { top: 2, bottom: 1, left: 0, right: 3 }, (1, 2), (20, 11)),
        ([64, 64, 7, 7], 1, (2, 2), Padding::uniform(3), (1, 1), (224, 224)),
    ];
    let mut rng = Rng::new(5);
    for (dims, groups, stride, padding, dilation, hw) in cases {
        let layer = Conv2dWeights::builder(rng.vec(dims.iter().product()), dims)
            .groups(groups)
            .stride(stride.0, stride.1)
            .padding(padding)
            .dilation(dilation.0, dilation.1)
            .bias(rng.vec(dims[0]))
            .build()
            .unwrap();
        let shape = layer.shape();
        let out = layer.output_size(hw.0, hw.1).unwrap();
        for kind in [SchemeKind::Spatial, SchemeKind::Channel, SchemeKind::Decoupled, SchemeKind::Dac] {
            for rank in [1, 2, kind.max_rank(&shape)] {
                let c = kind.cost("l", &shape, layer.geometry(), true, rank, Some(hw)).unwrap();
                assert_eq!(c.macs, counted(kind, &layer, rank, hw), "{kind} {dims:?} rank {rank}");
                let closed = match kind {
                    SchemeKind::Spatial => cost::spatial_macs(&shape, rank, hw.1, out),
                    SchemeKind::Channel => cost::channel_macs(&shape, rank, out),
                    SchemeKind::Decoupled => cost::decoupled_macs(&shape, rank, hw, out),
                    _ => cost::pair("l", &shape, true, rank, out).unwrap().macs as u128,
                };
                assert_eq!(c.macs as u128, closed, "{kind} {dims:?} rank {rank}");
                let weights: usize = kind
                    .factor_specs(&shape, layer.geometry(), rank)
                    .iter()
                    .map(|f| f.dims.iter().product::<usize>())
                    .sum();
                assert_eq!(c.params, (weights + dims[0]) as u64, "{kind} {dims:?} rank {rank}");
            }
        }
    }
}

#[test]
fn break_even_ranks_match_the_per_position_test() {
    for (n, c, k, g) in [(16usize, 8usize, 3usize, 1usize), (64, 64, 3, 1), (32, 32, 5, 4), (8, 3, 7, 1)] {
        let shape = dac::ConvShape { out_channels: n, in_channels: c, kh: k, kw: k, groups: g };
        for kind in SchemeKind::ALL {
            let be = kind.break_even_rank(&shape);
            for r in 1..=kind.max_rank(&shape) {
                let beneficial = kind.is_beneficial(&shape, r);
                assert_eq!(beneficial, (r as f64) < be, "{kind} {shape:?} rank {r} break-even {be}");
                assert_eq!(beneficial, kind.mac_reduction(&shape, r) > 1.0, "{kind} {shape:?} rank {r}");
            }
        }
    }
}
