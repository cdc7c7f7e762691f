//! The whole-network planner: targets met, never at or above break-even, deterministic, and
//! (on small stacks) as good as exhaustive search up to the knapsack's rounding.

#[path = "../support/mod.rs"]
mod support;
mod time;

use dac::cost::{self, Cost};
use dac::plan::{Plan, PlanLayer, PlanOptions, Proxy, Target};
use dac::scheme::{Dac, Scheme};
use dac::svd::NalgebraSvd;
use dac::{plan, Conv2dWeights, ConvShape, Error, Factorization, Fit, Geometry, Padding, Real, Spectrum};
use proptest::prelude::*;
use support::measure::correlation;
use support::Rng;

/// A random convolution: shape, geometry, input size and a descending spectrum.
#[derive(Debug, Clone)]
struct Layer {
    shape: ConvShape,
    geometry: Geometry,
    input: (usize, usize),
    spectrum: Spectrum,
}

fn layer() -> impl Strategy<Value = Layer> {
    (1usize..=4, 1usize..=24, 1usize..=24, prop::sample::select(vec![1usize, 3, 5]), 1usize..=2, 2usize..=20)
        .prop_flat_map(|(groups, ng, cg, k, stride, size)| {
            let shape = ConvShape { out_channels: ng * groups, in_channels: cg * groups, kh: k, kw: k, groups };
            let n = shape.in_channels * shape.max_rank();
            (Just(shape), Just(stride), Just(size), prop::collection::vec(0.0f64..10.0, n))
        })
        .prop_map(|(shape, stride, size, mut values)| {
            for row in values.chunks_mut(shape.max_rank()) {
                row.sort_by(|a, b| b.partial_cmp(a).unwrap());
            }
            let geometry = Geometry {
                stride: (stride, stride),
                padding: Padding::uniform(shape.kh / 2),
                groups: shape.groups,
                ..Geometry::default()
            };
            let spectrum = Spectrum::new("l", shape, values).unwrap();
            Layer { shape, geometry, input: (size, size), spectrum }
        })
}

/// A convolution whose every channel matrix is diagonal with `spectrum`'s values: a layer with
/// exactly that spectrum (its right singular vectors are single taps).
fn conv_with_spectrum(name: &str, spectrum: &Spectrum, geometry: Geometry, bias: bool) -> Conv2dWeights<f64> {
    let shape = *spectrum.shape();
    let (ng, cg, taps) = (shape.out_per_group(), shape.in_per_group(), shape.taps());
    let mut w = vec![0.0; shape.out_channels * cg * taps];
    for (c, values) in spectrum.channels().enumerate() {
        let (group, local) = (c / cg, c % cg);
        for (j, &s) in values.iter().enumerate() {
            w[((group * ng + j) * cg + local) * taps + j] = s;
        }
    }
    let b = bias.then(|| vec![0.0; shape.out_channels]);
    Conv2dWeights::builder(w, [shape.out_channels, cg, shape.kh, shape.kw])
        .name(name)
        .maybe_bias(b)
        .geometry(geometry)
        .build()
        .unwrap()
}

/// The planner's layer for `conv` (the paper's scheme, nalgebra's SVD).
fn plan_layer<T: Real>(conv: &Conv2dWeights<T>, fit: Fit, input: (usize, usize)) -> dac::Result<PlanLayer>
where
    NalgebraSvd: dac::svd::SvdBackend<T>,
{
    let svd = NalgebraSvd::default();
    PlanLayer::new(&*Dac::new(&svd).fit(fit).factor(conv)?, input)
}

fn plan_layers(stack: &[Layer]) -> Vec<PlanLayer> {
    stack
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let conv = conv_with_spectrum(&format!("conv{i}"), &l.spectrum, l.geometry, i % 2 == 0);
            plan_layer(&conv, Fit::frobenius(), l.input).unwrap()
        })
        .collect()
}

fn options(proxy: Proxy) -> PlanOptions {
    PlanOptions::default().fixed(cost::linear(10, 64, true)).proxy(proxy)
}

fn check_invariants(stack: &[Layer], p: &Plan) {
    assert_eq!(p.layers.len(), stack.len());
    let mut total = Cost::default();
    for (l, lp) in stack.iter().zip(&p.layers) {
        if let Some(r) = lp.rank {
            assert!(r >= 1 && r <= l.shape.max_rank());
            assert!(cost::is_beneficial(&l.shape, r), "{}: rank {r} at or above break-even", lp.name);
            assert!(lp.after.macs < lp.before.macs && lp.after.params < lp.before.params);
        } else {
            assert_eq!(lp.after, lp.before);
        }
        total = total + lp.after;
    }
    assert_eq!(p.after, total + cost::linear(10, 64, true));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn mac_target_met_when_reachable(stack in prop::collection::vec(layer(), 1..7), x in 1.01f64..12.0) {
        for proxy in [Proxy::Sensitivity, Proxy::Energy, Proxy::Spatial] {
            let layers = plan_layers(&stack);
            let p = plan(&layers, &Target::MacReduction(x), &options(proxy)).unwrap();
            check_invariants(&stack, &p);
            // Reachable exactly when every layer at its cheapest rank reaches it.
            prop_assert_eq!(p.met, p.max_reduction >= x, "met {} max {} x {}", p.met, p.max_reduction, x);
            if p.met {
                prop_assert!(p.after.macs as f64 * x <= p.before.macs as f64, "{} * {} > {}", p.after.macs, x, p.before.macs);
            } else {
                // The cheapest plan possible.
                prop_assert!((p.reduction() - p.max_reduction).abs() <= 1e-12 * p.max_reduction);
            }
            // Deterministic.
            let again = plan(&plan_layers(&stack), &Target::MacReduction(x), &options(proxy)).unwrap();
            prop_assert_eq!(&p, &again);
        }
    }

    #[test]
    fn param_budget_met_when_reachable(stack in prop::collection::vec(layer(), 1..7), frac in 0.05f64..1.2) {
        let layers = plan_layers(&stack);
        let dense = plan(&layers, &Target::ParamBudget(u64::MAX), &options(Proxy::default())).unwrap();
        prop_assert!(dense.layers.iter().all(|l| l.rank.is_none()));
        let budget = (dense.before.params as f64 * frac) as u64;
        let p = plan(&layers, &Target::ParamBudget(budget), &options(Proxy::default())).unwrap();
        check_invariants(&stack, &p);
        if p.met {
            prop_assert!(p.after.params <= budget);
        } else {
            // Not even every layer at rank 1 fits.
            let min: u64 = stack.iter().zip(&p.layers).enumerate().map(|(i, (l, lp))| {
                if cost::is_beneficial(&l.shape, 1) {
                    cost::pair("l", &l.shape, i % 2 == 0, 1, lp.output_size).unwrap().params
                } else {
                    lp.before.params
                }
            }).sum::<u64>() + cost::linear(10, 64, true).params;
            prop_assert!(min > budget);
        }
    }

    /// No plan meeting a slightly stricter target (by the knapsack's rounding slack) has a lower
    /// score than the planner's.
    #[test]
    fn as_good_as_exhaustive_search(stack in prop::collection::vec(layer(), 1..4), x in 1.05f64..6.0) {
        let layers = plan_layers(&stack);
        let p = plan(&layers, &Target::MacReduction(x), &options(Proxy::Sensitivity)).unwrap();
        prop_assume!(p.met);
        // Every combination of dense / beneficial ranks.
        let choices: Vec<Vec<(u64, f64)>> = p.layers.iter().zip(&stack).map(|(lp, l)| {
            let mut v = vec![(lp.before.macs, 0.0)];
            for r in (1..=l.shape.max_rank()).filter(|&r| cost::is_beneficial(&l.shape, r)) {
                let macs = cost::pair("l", &l.shape, true, r, lp.output_size).unwrap().macs;
                v.push((macs, single_score(&layers, lp, r)));
            }
            v
        }).collect();
        let fixed = cost::linear(10, 64, true).macs;
        let need = p.before.macs - (p.before.macs as f64 / x).floor() as u64;
        let strict = need + (stack.len() as u64 * need).div_ceil(4096) + stack.len() as u64;
        let mut best = f64::INFINITY;
        let mut idx = vec![0usize; choices.len()];
        loop {
            let macs: u64 = idx.iter().zip(&choices).map(|(&k, c)| c[k].0).sum::<u64>() + fixed;
            let score: f64 = idx.iter().zip(&choices).map(|(&k, c)| c[k].1).sum();
            if p.before.macs - macs >= strict && score < best {
                best = score;
            }
            let mut i = 0;
            while i < idx.len() {
                idx[i] += 1;
                if idx[i] < choices[i].len() { break; }
                idx[i] = 0;
                i += 1;
            }
            if i == idx.len() { break; }
        }
        prop_assert!(p.score <= best * (1.0 + 1e-9) + 1e-12, "planner {} > exhaustive {}", p.score, best);
    }
}

/// The planner's score for one layer at one rank.
fn single_score(layers: &[PlanLayer], lp: &dac::plan::LayerPlan, r: usize) -> f64 {
    let i = layers.iter().position(|l| l.name() == lp.name).unwrap();
    layers[i].score(Proxy::Sensitivity, r, i, layers.len())
}

/// The layer of spectrum `s` at `geometry` with input `input`.
fn from_spectrum(
    name: &str,
    s: &Spectrum,
    geometry: Geometry,
    bias: bool,
    input: (usize, usize),
) -> dac::Result<PlanLayer> {
    plan_layer(&conv_with_spectrum(name, s, geometry, bias), Fit::frobenius(), input)
}

#[test]
fn invalid_targets_are_errors() {
    let shape = ConvShape { out_channels: 8, in_channels: 4, kh: 3, kw: 3, groups: 1 };
    let s = Spectrum::new("l", shape, vec![1.0; 4 * 8]).unwrap();
    let layers = [from_spectrum("a", &s, Geometry::default(), false, (8, 8)).unwrap()];
    for x in [1.0, 0.5, -2.0, f64::NAN, f64::INFINITY] {
        let e = plan(&layers, &Target::MacReduction(x), &PlanOptions::default()).unwrap_err();
        assert!(matches!(e, Error::InvalidParameter { .. }), "{x}: {e}");
        assert!(e.to_string().contains("MAC reduction"), "{e}");
    }
    // An input too small for the kernel.
    assert!(matches!(from_spectrum("a", &s, Geometry::default(), false, (2, 2)), Err(Error::EmptyOutput { .. })));
}

#[test]
fn unreachable_target_reports_the_cheapest_plan() {
    let shape = ConvShape { out_channels: 8, in_channels: 4, kh: 3, kw: 3, groups: 1 };
    let s = Spectrum::new("l", shape, vec![1.0; 4 * 8]).unwrap();
    let layers = [from_spectrum("a", &s, Geometry::default(), false, (8, 8)).unwrap()];
    let p = plan(&layers, &Target::MacReduction(100.0), &PlanOptions::default()).unwrap();
    assert!(!p.met);
    assert_eq!(p.layers[0].rank, Some(1));
    // 1 / (1/8 + 1/9) = 4.24.
    assert!((p.max_reduction - 72.0 / 17.0).abs() < 1e-12);
}

#[test]
fn first_layer_with_one_input_channel_is_spared() {
    // A 1 -> 16 first layer and seven 64 -> 64 layers with the same (flat) spectra shape:
    // decomposing the first layer saves little and squeezes 16 outputs through r channels.
    let first = ConvShape { out_channels: 16, in_channels: 1, kh: 3, kw: 3, groups: 1 };
    let mid = ConvShape { out_channels: 64, in_channels: 64, kh: 3, kw: 3, groups: 1 };
    let decay = |k: usize| (0..k).map(|j| 0.6f64.powi(j as i32)).collect::<Vec<_>>();
    let s0 = Spectrum::new("first", first, decay(9)).unwrap();
    let sm = Spectrum::new("mid", mid, (0..64).flat_map(|_| decay(9)).collect()).unwrap();
    let pad = Geometry { padding: Padding::uniform(1), ..Geometry::default() };
    let mut layers = vec![from_spectrum("first", &s0, pad, true, (32, 32)).unwrap()];
    for i in 0..7 {
        layers.push(from_spectrum(&format!("mid{i}"), &sm, pad, true, (16, 16)).unwrap());
    }
    let p = plan(&layers, &Target::MacReduction(2.0), &PlanOptions::default()).unwrap();
    assert!(p.met && p.reduction() >= 2.0);
    assert_eq!(p.layers[0].rank, None, "{p:#?}");
}

/// A random convolution with weights.
#[derive(Debug, Clone)]
struct Weighted {
    conv: Conv2dWeights<f32>,
    input: (usize, usize),
}

fn weighted_layer() -> impl Strategy<Value = Weighted> {
    (1usize..=2, 1usize..=8, 1usize..=8, prop::sample::select(vec![1usize, 3, 5]), 1usize..=2, 1usize..=2, 5usize..=12)
        .prop_flat_map(|(groups, ng, cg, k, stride, dilation, size)| {
            let dims = [ng * groups, cg, k, k];
            let n = dims.iter().product::<usize>();
            (Just((dims, groups, stride, dilation, size)), prop::collection::vec(-1.0f32..1.0, n))
        })
        .prop_map(|((dims, groups, stride, dilation, size), w)| {
            let conv = Conv2dWeights::builder(w, dims)
                .groups(groups)
                .stride(stride, stride)
                .dilation(dilation, dilation)
                .padding(Padding::uniform(dilation * (dims[2] / 2)))
                .build()
                .unwrap();
            Weighted { conv, input: (size, size) }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// `Proxy::Spatial` on layers that carry their weights: the target is met when reachable,
    /// no rank at or above break-even, the same plan twice.
    #[test]
    fn spatial_proxy_meets_its_target_on_weighted_stacks(stack in prop::collection::vec(weighted_layer(), 1..6), x in 1.01f64..8.0) {
        let layers: Vec<PlanLayer> =
            stack.iter().map(|l| plan_layer(&l.conv, Fit::frobenius(), l.input).unwrap()).collect();
        let opts = PlanOptions::default().fixed(cost::linear(10, 64, true)).proxy(Proxy::Spatial);
        let p = plan(&layers, &Target::MacReduction(x), &opts).unwrap();
        for (l, lp) in stack.iter().zip(&p.layers) {
            if let Some(r) = lp.rank {
                prop_assert!(cost::is_beneficial(&l.conv.shape(), r), "{}: rank {r} at or above break-even", lp.name);
            }
        }
        prop_assert_eq!(p.met, p.max_reduction >= x);
        if p.met {
            prop_assert!(p.after.macs as f64 * x <= p.before.macs as f64);
        }
        for lp in &p.layers {
            prop_assert!(lp.score.is_finite() && lp.score >= 0.0, "{}: score {}", lp.name, lp.score);
        }
        let again = plan(&layers, &Target::MacReduction(x), &opts).unwrap();
        prop_assert_eq!(&p, &again);
    }
}

/// A 2 x 1 x 3 x 3 layer made of a smooth tap pattern (all ones) and a checkerboard, with
/// singular values `smooth` and `checker`.
fn two_patterns(smooth: f32, checker: f32) -> Conv2dWeights<f32> {
    let ones = [1.0f32 / 3.0; 9];
    let board: Vec<f32> = (0..9).map(|t| if (t / 3 + t % 3) % 2 == 0 { 1.0 / 3.0 } else { -1.0 / 3.0 }).collect();
    // Orthonormal output directions u1 = (1, 1)/√2, u2 = (1, −1)/√2.
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let mut w = vec![0.0f32; 18];
    for t in 0..9 {
        w[t] = h * (smooth * ones[t] + checker * board[t]);
        w[9 + t] = h * (smooth * ones[t] - checker * board[t]);
    }
    Conv2dWeights::builder(w, [2, 1, 3, 3]).name("two").padding(Padding::uniform(1)).build().unwrap()
}

#[test]
fn spatial_proxy_charges_smooth_components_more_than_alternating_ones() {
    let svd = NalgebraSvd::default();
    // Rank 1 keeps the larger component and discards the other, 1/4 of the weight energy either way.
    for (smooth, checker, cheaper) in [(2.0, 1.0, true), (1.0, 2.0, false)] {
        let conv = two_patterns(smooth, checker);
        let s = Factorization::compute(&conv, &svd).unwrap().spectrum();
        let layer = plan_layer(&conv, Fit::frobenius(), (8, 8)).unwrap();
        let sens = layer.score(Proxy::Sensitivity, 1, 0, 1);
        assert!((sens - Proxy::Sensitivity.score(&s, 1, 0, 1)).abs() < 1e-12);
        // Through `Proxy::score`, which sees only the spectrum, Spatial is Sensitivity.
        assert_eq!(Proxy::Spatial.score(&s, 1, 0, 1), Proxy::Sensitivity.score(&s, 1, 0, 1));
        let spatial = layer.score(Proxy::Spatial, 1, 0, 1);
        // Discarding the checkerboard costs less than its energy says, the smooth pattern more.
        assert_eq!(spatial < sens, cheaper, "smooth {smooth} checker {checker}: spatial {spatial} sens {sens}");
        // Nothing discarded at the maximum rank.
        assert_eq!(layer.score(Proxy::Spatial, 2, 0, 1), 0.0);
    }
}

/// `PlanLayer::new` of a correlated fit: `Proxy::Spatial` scores as `Proxy::Sensitivity` of the
/// weighted spectrum; every proxy reads that spectrum.
#[test]
fn correlated_plan_layer_scores_the_weighted_spectrum() {
    let mut rng = Rng::new(11);
    let layer = Conv2dWeights::<f64>::builder(rng.vec(32 * 16 * 9), [32, 16, 3, 3])
        .padding(Padding::uniform(1))
        .build()
        .unwrap();
    let fit = Fit::correlated(0.7).unwrap();
    let spectrum = Factorization::compute_fitted(&layer, &NalgebraSvd::default(), fit).unwrap().spectrum();
    let pl = plan_layer(&layer, fit, (16, 16)).unwrap();
    for rank in 1..=9 {
        let spatial = pl.score(Proxy::Spatial, rank, 0, 1);
        let sensitivity = Proxy::Sensitivity.score(&spectrum, rank, 0, 1);
        assert!(
            (spatial - sensitivity).abs() <= 1e-12 * sensitivity.max(1.0),
            "rank {rank}: {spatial} vs {sensitivity}"
        );
        assert_eq!(pl.score(Proxy::Sensitivity, rank, 0, 1), sensitivity);
    }
}

/// The output energy `Proxy::Spatial` reads (`PlanLayer::correlated_lost`) equals, at every
/// rank, the same quantity computed here from nalgebra's SVD of every channel matrix and the
/// tap correlation written from its definition.
#[test]
fn correlated_loss_matches_an_independent_computation() {
    let mut rng = Rng::new(12);
    for (dims, dilation) in [([8, 4, 3, 3], 1), ([6, 3, 3, 5], 2), ([16, 2, 5, 5], 1)] {
        let layer = Conv2dWeights::<f64>::builder(rng.vec(dims.iter().product()), dims)
            .dilation(dilation, dilation)
            .build()
            .unwrap();
        let [n, cg, kh, kw] = dims;
        let taps = kh * kw;
        let r_matrix = correlation(kh, kw, (dilation, dilation), 0.7);
        let k = n.min(taps);
        // Per channel, s_j² · v_jᵀ R v_j of its k largest components.
        let energies: Vec<Vec<f64>> = (0..cg)
            .map(|c| {
                let m = nalgebra::DMatrix::from_fn(n, taps, |o, t| layer.weight()[(o * cg + c) * taps + t]);
                let svd = m.svd(false, true);
                let vt = svd.v_t.unwrap();
                let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
                order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
                order
                    .iter()
                    .take(k)
                    .map(|&j| {
                        let v: Vec<f64> = (0..taps).map(|t| vt[(j, t)]).collect();
                        let gain: f64 = (0..taps)
                            .map(|a| (0..taps).map(|b| v[a] * r_matrix[a * taps + b] * v[b]).sum::<f64>())
                            .sum();
                        svd.singular_values[j].powi(2) * gain
                    })
                    .collect()
            })
            .collect();
        let total: f64 = energies.iter().flatten().sum();
        let pl = plan_layer(&layer, Fit::frobenius(), (16, 16)).unwrap();
        for rank in 0..=k {
            let lost: f64 = energies.iter().map(|e| e[rank..].iter().sum::<f64>()).sum();
            let got = pl.correlated_lost(rank);
            assert!((got - lost / total).abs() < 1e-9, "{dims:?} rank {rank}: {got} vs {}", lost / total);
        }
    }
}

/// The depth weight: layer `i` of `L` scores `1 + α·(L−1−i)/(L−1)` times its own; with α > 0 of
/// two identical layers the first keeps at least the second's rank and, at some target, more;
/// α = 0 is the unweighted plan; a negative or non-finite α is an error.
#[test]
fn depth_weight_spares_early_layers() {
    let shape = ConvShape { out_channels: 16, in_channels: 16, kh: 3, kw: 3, groups: 1 };
    let values: Vec<f64> = (0..16).flat_map(|_| [9.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25]).collect();
    let s = Spectrum::new("l", shape, values).unwrap();
    let g = Geometry { padding: Padding::uniform(1), ..Geometry::default() };
    let layers: Vec<PlanLayer> =
        ["a", "b", "c"].iter().map(|n| from_spectrum(n, &s, g, false, (8, 8)).unwrap()).collect();
    let weighted = PlanOptions::default().depth_weight(3.0);
    assert_eq!(weighted.depth_factor(0, 3), 4.0);
    assert_eq!(weighted.depth_factor(1, 3), 2.5);
    assert_eq!(weighted.depth_factor(2, 3), 1.0);
    assert_eq!(weighted.depth_factor(0, 1), 1.0);
    let mut spared = false;
    for x in [1.2, 1.5, 2.0, 3.0] {
        let t = Target::MacReduction(x);
        let flat = plan(&layers, &t, &PlanOptions::default()).unwrap();
        assert_eq!(flat, plan(&layers, &t, &PlanOptions::default().depth_weight(0.0)).unwrap());
        let p = plan(&layers, &t, &weighted).unwrap();
        assert!(p.met && p.reduction() >= x, "{x}");
        assert_eq!(p.depth_weight, 3.0);
        let rank = |l: &dac::plan::LayerPlan| l.rank.unwrap_or(usize::MAX);
        assert!(rank(&p.layers[0]) >= rank(&p.layers[1]) && rank(&p.layers[1]) >= rank(&p.layers[2]), "{x}");
        spared |= rank(&p.layers[0]) > rank(&p.layers[2]);
        let weights: Vec<f64> = (0..3).map(|i| weighted.depth_factor(i, 3)).collect();
        for (i, (lp, w)) in p.layers.iter().zip(weights).enumerate() {
            let unweighted = lp.rank.map_or(0.0, |r| layers[i].score(Proxy::Spatial, r, i, 3));
            assert!((lp.score - w * unweighted).abs() <= 1e-12 * lp.score.max(1.0), "{x} {}", lp.name);
        }
    }
    assert!(spared, "the weight should change some plan");
    for alpha in [-1.0, f64::NAN, f64::INFINITY] {
        let e = plan(&layers, &Target::MacReduction(2.0), &PlanOptions::default().depth_weight(alpha)).unwrap_err();
        assert!(matches!(e, Error::InvalidParameter { .. }) && e.to_string().contains("depth weight"), "{e}");
    }
}
