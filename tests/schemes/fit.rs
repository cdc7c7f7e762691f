//! The correlated-input fit (`dac::Fit`): optimal in the output error it is defined by, reported
//! consistently, and the Frobenius fit unchanged bit for bit. (Exactness at full rank against the
//! reference executor: every fit runs through the harness, tests/schemes/harness.rs.)

use crate::support::gen::cases;
use crate::support::harness::SPLITS;
use crate::support::measure::{correlation, weighted_energy};
use crate::support::{reconstruct, relative_diff, Case, Rng};
use dac::svd::{GramSvd, NalgebraSvd, SvdBackend};
use dac::{Conv2dWeights, Factorization, Fit, Options, PairBuffers, Real};
use proptest::prelude::*;

fn factor<'a, T: Real>(layer: &'a Conv2dWeights<T>, fit: Fit, gram: bool) -> Factorization<'a, T>
where
    GramSvd: SvdBackend<T>,
    NalgebraSvd: SvdBackend<T>,
{
    if gram {
        Factorization::compute_fitted(layer, &GramSvd::default(), fit).unwrap()
    } else {
        Factorization::compute_fitted(layer, &NalgebraSvd::default(), fit).unwrap()
    }
}

/// Below full rank: the correlated fit's output error is the smallest, the Frobenius fit's
/// weight error is the smallest, and the report's error is the weighted one; all measured on the
/// written pairs, independently of the crate's report.
fn check_optimality(case: &Case, rho: f64, gram: bool) -> Result<(), TestCaseError> {
    let (layer, _) = case.build::<f64>();
    let shape = layer.shape();
    let taps = shape.taps();
    let r_mat = correlation(shape.kh, shape.kw, case.dilation, rho);
    let w: Vec<f64> = layer.weight().to_vec();
    let frob = factor(&layer, Fit::frobenius(), gram);
    let corr = factor(&layer, Fit::correlated(rho).unwrap(), gram);
    let total_out = weighted_energy(&w, &r_mat, taps);
    let total_w: f64 = w.iter().map(|v| v * v).sum();
    for rank in 1..shape.max_rank() {
        for split in SPLITS {
            let options = Options::new(rank).split(split);
            let (df, dc) = (frob.truncate(&options).unwrap(), corr.truncate(&options).unwrap());
            let diff = |d: &dac::Decomposition<f64>| -> Vec<f64> {
                reconstruct(&layer, &d.depthwise, &d.pointwise).iter().zip(&w).map(|(a, b)| b - a).collect()
            };
            let (ef, ec) = (diff(&df), diff(&dc));
            let slack = 1e-9 * total_out.max(total_w);
            let (out_f, out_c) = (weighted_energy(&ef, &r_mat, taps), weighted_energy(&ec, &r_mat, taps));
            prop_assert!(
                out_c <= out_f + slack,
                "rank {rank}: output error {out_c} (correlated) > {out_f} (frobenius)"
            );
            let (w_f, w_c) = (ef.iter().map(|v| v * v).sum::<f64>(), ec.iter().map(|v| v * v).sum::<f64>());
            prop_assert!(w_f <= w_c + slack, "rank {rank}: weight error {w_f} (frobenius) > {w_c} (correlated)");
            // The report's relative error is the relative output error of the written pair.
            let want = if total_out > 0.0 { (out_c / total_out).sqrt() } else { 0.0 };
            let got = dc.report.relative_error;
            prop_assert!((got - want).abs() <= 1e-7 * want.max(1e-3), "rank {rank}: report {got} vs measured {want}");
            let kept = 1.0 - want * want;
            prop_assert!((dc.report.retained_energy - kept).abs() <= 1e-7, "{} vs {kept}", dc.report.retained_energy);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn correlated_fit_minimises_the_output_error(
        case in cases(), rho in prop_oneof![Just(0.0f64), Just(0.3), Just(0.7), Just(0.9)], gram in any::<bool>(),
    ) {
        check_optimality(&case, rho, gram)?;
    }
}

/// `Fit::frobenius()` is `Factorization::compute`: the same spectrum and the same pair, bit for
/// bit, for both backends, every split and rank, through `truncate` and `truncate_into` (the
/// fast 3x3 pointwise kernel included).
fn frobenius_is_compute<T: Real>()
where
    GramSvd: SvdBackend<T>,
    NalgebraSvd: SvdBackend<T>,
{
    let mut rng = Rng::new(99);
    for (dims, groups) in [([16usize, 8usize, 3usize, 3usize], 1usize), ([12, 3, 5, 5], 2), ([9, 4, 3, 5], 3)] {
        let layer = Conv2dWeights::<T>::builder(rng.vec(dims.iter().product()), dims).groups(groups).build().unwrap();
        for gram in [true, false] {
            let (a, b) = if gram {
                (
                    Factorization::compute(&layer, &GramSvd::default()).unwrap(),
                    Factorization::compute_fitted(&layer, &GramSvd::default(), Fit::frobenius()).unwrap(),
                )
            } else {
                (
                    Factorization::compute(&layer, &NalgebraSvd::default()).unwrap(),
                    Factorization::compute_fitted(&layer, &NalgebraSvd::default(), Fit::default()).unwrap(),
                )
            };
            assert_eq!(b.fit(), Fit::frobenius());
            assert_eq!(a.spectrum(), b.spectrum());
            for rank in 1..=layer.shape().max_rank() {
                for split in SPLITS {
                    let o = Options::new(rank).split(split).input_size(8, 8);
                    let (da, db) = (a.truncate(&o).unwrap(), b.truncate(&o).unwrap());
                    assert_eq!(da, db, "{dims:?} rank {rank} {split:?}");
                    let bits = |w: &[T]| w.iter().map(|v| v.to_f64_exact().to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(da.depthwise.conv().weight()), bits(db.depthwise.conv().weight()));
                    assert_eq!(bits(da.pointwise.conv().weight()), bits(db.pointwise.conv().weight()));
                    let mut buffers = PairBuffers::new();
                    let report = b.truncate_into(&o, &mut buffers).unwrap();
                    assert_eq!(report, da.report);
                    assert_eq!(bits(buffers.depthwise()), bits(da.depthwise.conv().weight()));
                    assert_eq!(bits(buffers.pointwise()), bits(da.pointwise.conv().weight()));
                }
            }
        }
    }
}

#[test]
fn frobenius_fit_is_bitwise_compute_f32() {
    frobenius_is_compute::<f32>();
}

#[test]
fn frobenius_fit_is_bitwise_compute_f64() {
    frobenius_is_compute::<f64>();
}

#[test]
fn correlated_rejects_bad_rho() {
    for (rho, shown) in [(f64::NAN, "NaN"), (-0.1, "-0.1"), (1.0, "1"), (f64::INFINITY, "inf"), (1.5, "1.5")] {
        let e = Fit::correlated(rho).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("rho") && msg.contains(shown), "{rho}: {msg}");
        assert!(matches!(e, dac::Error::InvalidParameter { what: "rho", .. }), "{e:?}");
    }
    for rho in [0.0, 0.5, Fit::DEFAULT_RHO, 0.999] {
        assert_eq!(Fit::correlated(rho).unwrap().rho(), Some(rho));
    }
    assert_eq!(Fit::default(), Fit::frobenius());
    assert_eq!(Fit::frobenius().rho(), None);
}

/// The 3x3 fast pointwise kernel and the reference loop write the same correlated pair (f32,
/// one full lane block of eight channels and a partial one).
#[test]
fn correlated_fit_on_the_fast_3x3_path_matches_its_own_reconstruction() {
    let mut rng = Rng::new(5);
    let layer = Conv2dWeights::<f32>::builder(rng.vec(24 * 11 * 9), [24, 11, 3, 3]).build().unwrap();
    let f = Factorization::compute_fitted(&layer, &GramSvd::default(), Fit::correlated(0.7).unwrap()).unwrap();
    let full = f.truncate(&Options::new(9)).unwrap();
    let w: Vec<f64> = layer.weight().iter().map(|&v| f64::from(v)).collect();
    let rec = reconstruct(&layer, &full.depthwise, &full.pointwise);
    assert!(relative_diff(&rec, &w) < 1e-5, "{}", relative_diff(&rec, &w));
}

/// A weight that overflows once weighted, and a NaN weight, are errors naming the layer.
#[test]
fn non_finite_weights_are_errors() {
    let layer = Conv2dWeights::<f32>::new(vec![3e38; 4 * 2 * 9], [4, 2, 3, 3]).unwrap();
    let e = Factorization::compute_fitted(&layer, &NalgebraSvd::default(), Fit::correlated(0.9).unwrap()).unwrap_err();
    assert!(matches!(e, dac::Error::NonFinite { .. }), "{e:?}");
    assert!(e.to_string().contains("weighted"), "{e}");
}
