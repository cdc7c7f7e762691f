//! One layer's decomposition: truncated ranks (Eckart–Young error, monotonicity, split
//! independence), rank-deficient channels, the report's costs, and the one-call `decompose`.

use crate::support::{reconstruct, relative_diff, Rng};
use dac::{decompose, decompose_with, svd::NalgebraSvd, Conv2dWeights, Factorization, Options, Split};
use nalgebra::DMatrix;
use proptest::prelude::*;

/// `Σ_c Σ_{j > r} s_j(M_c)²` for every rank `r`, from nalgebra SVDs of the paper's matrices
/// `M_c = W[group's outputs, c, :, :]` (`N/g x kh·kw`), computed here.
fn discarded_energy_per_rank(layer: &Conv2dWeights<f64>) -> Vec<f64> {
    let s = layer.shape();
    let (ng, cg, taps) = (s.out_channels / s.groups, s.in_per_group(), s.taps());
    let w = layer.weight();
    let mut discarded = vec![0.0; s.max_rank() + 1];
    for g in 0..s.groups {
        for c in 0..cg {
            let m = DMatrix::from_fn(ng, taps, |o, t| w[((g * ng + o) * cg + c) * taps + t]);
            let mut sv: Vec<f64> = m.svd(false, false).singular_values.iter().copied().collect();
            sv.sort_by(|a, b| b.total_cmp(a));
            for (r, d) in discarded.iter_mut().enumerate() {
                *d += sv.iter().skip(r).map(|v| v * v).sum::<f64>();
            }
        }
    }
    discarded
}

fn layer(seed: u64, groups: usize, cg: usize, ng: usize, kh: usize, kw: usize) -> Conv2dWeights<f64> {
    let mut rng = Rng::new(seed);
    let dims = [groups * ng, cg, kh, kw];
    Conv2dWeights::builder(rng.vec(dims.iter().product()), dims).name("trunc").groups(groups).build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn eckart_young_and_monotone(
        seed in any::<u64>(), groups in 1usize..=3, cg in 1usize..=5, ng in 1usize..=12,
        kh in 1usize..=5, kw in 1usize..=5,
    ) {
        let layer = layer(seed, groups, cg, ng, kh, kw);
        let f = Factorization::compute(&layer, &NalgebraSvd::default()).unwrap();
        let spectrum = f.spectrum();
        // Independent check of the singular values: Σ s² = ‖W‖².
        let norm2: f64 = layer.weight().iter().map(|w| w * w).sum();
        prop_assert!((spectrum.kept_energy(layer.shape().max_rank()) - norm2).abs() <= 1e-12 * norm2);
        let original: Vec<f64> = layer.weight().to_vec();
        let discarded = discarded_energy_per_rank(&layer);
        let (mut last_err, mut last_energy) = (f64::INFINITY, 0.0);
        for (r, discarded_r) in discarded.iter().enumerate().skip(1) {
            let d = f.truncate(&Options::new(r)).unwrap();
            let measured = relative_diff(&reconstruct(&layer, &d.depthwise, &d.pointwise), &original);
            // Eckart–Young, channel by channel, from the SVDs computed in this test.
            let optimum = (discarded_r / norm2).sqrt();
            prop_assert!((measured - optimum).abs() <= 1e-9, "r={r}: measured {measured} optimum {optimum}");
            prop_assert!((spectrum.optimal_relative_error(r) - optimum).abs() <= 1e-9);
            prop_assert!((d.report.relative_error - measured).abs() <= 1e-9, "r={r}: reported {} measured {measured}", d.report.relative_error);
            prop_assert!(measured <= last_err + 1e-12, "error increased at r={r}");
            prop_assert!(d.report.retained_energy >= last_energy - 1e-15, "energy decreased at r={r}");
            prop_assert!((d.report.retained_energy - (1.0 - optimum * optimum)).abs() <= 1e-9);
            last_err = measured;
            last_energy = d.report.retained_energy;
        }
        prop_assert!(last_err <= 1e-12);
        prop_assert!((last_energy - 1.0).abs() <= 1e-12);
    }

    #[test]
    fn every_split_gives_the_same_reconstruction(
        seed in any::<u64>(), groups in 1usize..=2, cg in 1usize..=4, ng in 1usize..=10, k in 1usize..=4,
    ) {
        let layer = layer(seed, groups, cg, ng, k, k);
        let f = Factorization::compute(&layer, &NalgebraSvd::default()).unwrap();
        for r in 1..=layer.shape().max_rank() {
            let base = f.truncate(&Options::new(r).split(Split::Pointwise)).unwrap();
            let base = reconstruct(&layer, &base.depthwise, &base.pointwise);
            for split in [Split::Depthwise, Split::SquareRoot] {
                let d = f.truncate(&Options::new(r).split(split)).unwrap();
                let other = reconstruct(&layer, &d.depthwise, &d.pointwise);
                prop_assert!(relative_diff(&other, &base) <= 1e-12, "{split:?} r={r}");
            }
        }
    }
}

#[test]
fn zero_and_rank_deficient_channels_stay_finite_for_every_split() {
    // Channel 0 all zero; channel 1 rank 1 (every output row a multiple of one kernel).
    let (n, taps) = (4, 9);
    let mut w = vec![0.0f32; n * 2 * taps];
    for o in 0..n {
        for t in 0..taps {
            w[(o * 2 + 1) * taps + t] = (o as f32 + 1.0) * (t as f32 - 4.0);
        }
    }
    let layer = Conv2dWeights::new(w.clone(), [n, 2, 3, 3]).unwrap();
    let f = Factorization::compute(&layer, &NalgebraSvd::default()).unwrap();
    for split in [Split::Pointwise, Split::Depthwise, Split::SquareRoot] {
        for r in 1..=4 {
            let d = f.truncate(&Options::new(r).split(split)).unwrap();
            assert!(d.depthwise.conv().weight().iter().chain(d.pointwise.conv().weight()).all(|v| v.is_finite()));
            let rec = reconstruct(&layer, &d.depthwise, &d.pointwise);
            let orig: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
            assert!(relative_diff(&rec, &orig) <= 1e-6, "{split:?} r={r}");
        }
    }
}

#[test]
fn report_counts_macs_for_the_input_size() {
    let layer = Conv2dWeights::<f64>::builder(Rng::new(3).vec(64 * 32 * 9), [64, 32, 3, 3])
        .padding(dac::Padding::uniform(1))
        .stride(2, 2)
        .build()
        .unwrap();
    let d = decompose_with(&layer, &Options::new(3).input_size(56, 56), &NalgebraSvd::default()).unwrap();
    assert_eq!(d.report.output_size, (28, 28));
    assert_eq!(d.report.before.macs, 28 * 28 * 64 * 32 * 9);
    assert_eq!(d.report.after.macs, 28 * 28 * (32 * 3 * 9 + 64 * 32 * 3));
    assert_eq!(d.report.before.params, 64 * 32 * 9);
    assert_eq!(d.report.after.params, 32 * 3 * 9 + 64 * 32 * 3);
}

#[test]
fn decompose_uses_the_default_backend_and_split() {
    let mut rng = Rng::new(7);
    let layer = Conv2dWeights::<f64>::builder(rng.vec(6 * 2 * 9), [6, 2, 3, 3]).groups(2).build().unwrap();
    let (dw, pw) = decompose(&layer, 2).unwrap();
    let d = decompose_with(&layer, &Options::new(2), &NalgebraSvd::default()).unwrap();
    assert_eq!(d.report.split, Split::SquareRoot);
    assert_eq!((dw, pw), (d.depthwise, d.pointwise));
}
