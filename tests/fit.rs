//! The correlated-input fit (`dac::Fit`): exact at full rank against the reference executor,
//! optimal in the output error it is defined by, reported consistently, and the Frobenius fit
//! unchanged bit for bit.

mod common;

use common::{reconstruct, Rng};
use dac::exec::{self, Tensor4};
use dac::plan::{PlanLayer, Proxy};
use dac::svd::{GramSvd, NalgebraSvd, SvdBackend};
use dac::{Conv2dWeights, Factorization, Fit, Options, Padding, PairBuffers, Real, Split};
use proptest::prelude::*;

const SPLITS: [Split; 3] = [Split::SquareRoot, Split::Pointwise, Split::Depthwise];

#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    groups: usize,
    in_per_group: usize,
    out_per_group: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    padding: Padding,
    bias: bool,
    rho: f64,
    gram: bool,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (1usize..=3)
        .prop_flat_map(|groups| {
            let max_per_group = 12 / groups;
            (
                Just(groups),
                1..=max_per_group,
                1..=max_per_group,
                prop_oneof![Just((1usize, 1usize)), Just((3, 3)), Just((5, 5)), Just((3, 5)), Just((2, 3))],
                (1usize..=3, 1usize..=3),
                (1usize..=2, 1usize..=2),
                (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
                prop_oneof![Just(0.0f64), Just(0.3), Just(0.7), Just(0.9)],
                (1usize..=2, any::<bool>(), any::<bool>(), any::<u64>()),
            )
        })
        .prop_map(
            |(groups, cg, ng, kernel, stride, dilation, (top, bottom, left, right), rho, (batch, bias, gram, seed))| {
                Case {
                    batch,
                    groups,
                    in_per_group: cg,
                    out_per_group: ng,
                    kernel,
                    stride,
                    dilation,
                    padding: Padding { top, bottom, left, right },
                    bias,
                    rho,
                    gram,
                    seed,
                }
            },
        )
}

fn layer_of<T: Real>(case: &Case, rng: &mut Rng) -> Conv2dWeights<T> {
    let n = case.groups * case.out_per_group;
    let dims = [n, case.in_per_group, case.kernel.0, case.kernel.1];
    let weight = rng.vec(dims.iter().product());
    let bias = case.bias.then(|| rng.vec(n));
    Conv2dWeights::builder(weight, dims)
        .name("fit")
        .maybe_bias(bias)
        .groups(case.groups)
        .stride(case.stride.0, case.stride.1)
        .dilation(case.dilation.0, case.dilation.1)
        .padding(case.padding)
        .build()
        .expect("valid layer")
}

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

/// The tap correlation `R[a][b] = ρ^(|Δy|·dh + |Δx|·dw)`, written from the definition.
fn correlation(kh: usize, kw: usize, dilation: (usize, usize), rho: f64) -> Vec<f64> {
    let taps = kh * kw;
    let mut r = vec![0.0; taps * taps];
    for a in 0..taps {
        for b in 0..taps {
            let dy = (a / kw).abs_diff(b / kw) * dilation.0;
            let dx = (a % kw).abs_diff(b % kw) * dilation.1;
            r[a * taps + b] = rho.powi((dy + dx) as i32);
        }
    }
    r
}

/// `Σ over (n, c) rows d of d R dᵀ`: the expected squared output error of a weight difference
/// `d` (OIHW, flattened) for input patches with covariance `R`.
fn weighted_energy(d: &[f64], r: &[f64], taps: usize) -> f64 {
    d.chunks(taps)
        .map(|row| (0..taps).map(|a| (0..taps).map(|b| row[a] * r[a * taps + b] * row[b]).sum::<f64>()).sum::<f64>())
        .sum()
}

fn check_full_rank<T: Real>(case: &Case, tolerance: f64) -> Result<(), TestCaseError>
where
    GramSvd: SvdBackend<T>,
    NalgebraSvd: SvdBackend<T>,
{
    let mut rng = Rng::new(case.seed);
    let layer = layer_of::<T>(case, &mut rng);
    let (kh, kw) = case.kernel;
    let eff_h = (kh - 1) * case.dilation.0 + 1;
    let eff_w = (kw - 1) * case.dilation.1 + 1;
    let h = eff_h.saturating_sub(case.padding.top + case.padding.bottom).max(1) + 3;
    let w = eff_w.saturating_sub(case.padding.left + case.padding.right).max(1) + 2;
    let c = layer.shape().in_channels;
    let input = Tensor4::new(rng.vec(case.batch * c * h * w), [case.batch, c, h, w]).unwrap();
    let dense = exec::reference::conv2d(&input, &layer).unwrap();
    let scale = dense.max_abs().to_f64_exact().max(f64::MIN_POSITIVE);
    let fit = Fit::correlated(case.rho).unwrap();
    let f = factor(&layer, fit, case.gram);
    prop_assert_eq!(f.fit(), fit);
    let full = layer.shape().max_rank();
    for split in SPLITS {
        let d = f.truncate(&Options::new(full).split(split)).unwrap();
        prop_assert_eq!(d.report.fit, fit);
        prop_assert!(d.report.relative_error.abs() < 1e-6, "{}", d.report.relative_error);
        let pair = exec::reference::pair(&input, &d.depthwise, &d.pointwise).unwrap();
        let err = dense.max_abs_diff(&pair).unwrap().to_f64_exact();
        prop_assert!(err <= tolerance * scale, "{split:?}: max diff {err:e} vs scale {scale:e}");
    }
    Ok(())
}

/// Below full rank: the correlated fit's output error is the smallest, the Frobenius fit's
/// weight error is the smallest, and the report's error is the weighted one; all measured on the
/// written pairs, independently of the crate's report.
fn check_optimality(case: &Case) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(case.seed);
    let layer = layer_of::<f64>(case, &mut rng);
    let shape = layer.shape();
    let taps = shape.taps();
    let r_mat = correlation(shape.kh, shape.kw, case.dilation, case.rho);
    let w: Vec<f64> = layer.weight().to_vec();
    let frob = factor(&layer, Fit::frobenius(), case.gram);
    let corr = factor(&layer, Fit::correlated(case.rho).unwrap(), case.gram);
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
    fn full_rank_correlated_fit_reproduces_the_convolution_f64(case in cases()) {
        check_full_rank::<f64>(&case, 1e-9)?;
    }

    #[test]
    fn full_rank_correlated_fit_reproduces_the_convolution_f32(case in cases()) {
        check_full_rank::<f32>(&case, 2e-4)?;
    }

    #[test]
    fn correlated_fit_minimises_the_output_error(case in cases()) {
        check_optimality(&case)?;
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
    assert!(common::relative_diff(&rec, &w) < 1e-5, "{}", common::relative_diff(&rec, &w));
}

/// A weight that overflows once weighted, and a NaN weight, are errors naming the layer.
#[test]
fn non_finite_weights_are_errors() {
    let layer = Conv2dWeights::<f32>::new(vec![3e38; 4 * 2 * 9], [4, 2, 3, 3]).unwrap();
    let e = Factorization::compute_fitted(&layer, &NalgebraSvd::default(), Fit::correlated(0.9).unwrap()).unwrap_err();
    assert!(matches!(e, dac::Error::NonFinite { .. }), "{e:?}");
    assert!(e.to_string().contains("weighted"), "{e}");
}

/// `PlanLayer::from_factorization` of a correlated fit: `Proxy::Spatial` scores as
/// `Proxy::Sensitivity` of the weighted spectrum; every proxy reads that spectrum.
#[test]
fn correlated_plan_layer_scores_the_weighted_spectrum() {
    let mut rng = Rng::new(11);
    let layer = Conv2dWeights::<f64>::builder(rng.vec(32 * 16 * 9), [32, 16, 3, 3])
        .padding(Padding::uniform(1))
        .build()
        .unwrap();
    let f = Factorization::compute_fitted(&layer, &NalgebraSvd::default(), Fit::correlated(0.7).unwrap()).unwrap();
    let spectrum = f.spectrum();
    let pl = PlanLayer::from_factorization(&f, &spectrum, (16, 16)).unwrap();
    for rank in 1..=9 {
        let spatial = pl.score(Proxy::Spatial, rank, 0, 1);
        let sensitivity = Proxy::Sensitivity.score(&spectrum, rank, 0, 1);
        assert!(
            (spatial - sensitivity).abs() <= 1e-12 * sensitivity.max(1.0),
            "rank {rank}: {spatial} vs {sensitivity}"
        );
        assert_eq!(pl.score(Proxy::Sensitivity, rank, 0, 1), sensitivity);
    }
    // A Frobenius factorisation's layer is from_conv's.
    let fr = Factorization::compute(&layer, &NalgebraSvd::default()).unwrap();
    let s = fr.spectrum();
    let a = PlanLayer::from_factorization(&fr, &s, (16, 16)).unwrap();
    let b = PlanLayer::from_conv(&layer, &s, (16, 16)).unwrap();
    for rank in 1..=9 {
        for proxy in [Proxy::Spatial, Proxy::Sensitivity, Proxy::Energy] {
            assert_eq!(a.score(proxy, rank, 0, 1).to_bits(), b.score(proxy, rank, 0, 1).to_bits());
        }
    }
    // A spectrum of another shape is an error.
    let other = Conv2dWeights::<f64>::new(rng.vec(8 * 16 * 9), [8, 16, 3, 3]).unwrap();
    let so = Factorization::compute(&other, &NalgebraSvd::default()).unwrap().spectrum();
    assert!(matches!(PlanLayer::from_factorization(&f, &so, (16, 16)), Err(dac::Error::LengthMismatch { .. })));
}
