//! The input-moments score (`dac::moments`) against the reference loop nest: the kernel a chain
//! of factors composes to computes what the chain computes, and the energy a candidate loses
//! under the moments of an input is the output error the chain makes on that input.

use crate::support::gen::{cases, Case};
use crate::support::harness::run_chain;
use dac::exec::{reference, Tensor4};
use dac::moments::{InputMoments, Scored};
use dac::scheme::{Channel, Dac, Decoupled, DenseKernel, Factored, Scheme, Spatial, Workspace};
use dac::svd::GramSvd;
use dac::{Conv2dWeights, Error, Fit};
use proptest::prelude::*;

static SVD: GramSvd = GramSvd { max_sweeps: 64 };

/// Every scheme's plug-in, DAC with both kinds of fit.
fn plugins() -> Vec<Box<dyn Scheme<f64>>> {
    let corr = Fit::correlated(0.7).unwrap();
    vec![
        Box::new(Dac::new(&SVD)),
        Box::new(Dac::new(&SVD).fit(corr)),
        Box::new(Spatial::new().fit(corr)),
        Box::new(Channel::new()),
        Box::new(Decoupled::new().fit(corr)),
    ]
}

/// `k` as one ungrouped layer with `layer`'s geometry and bias.
fn as_layer(k: &DenseKernel, layer: &Conv2dWeights<f64>) -> Conv2dWeights<f64> {
    let g = layer.geometry();
    Conv2dWeights::builder(k.weight.clone(), [k.out_channels, k.in_channels, k.kh, k.kw])
        .maybe_bias(layer.bias().map(<[f64]>::to_vec))
        .stride(g.stride.0, g.stride.1)
        .dilation(g.dilation.0, g.dilation.1)
        .padding(g.padding)
        .build()
        .unwrap()
}

/// `Σ (a − b)²` over every element.
fn squared_distance(a: &Tensor4<f64>, b: &Tensor4<f64>) -> f64 {
    a.as_slice().iter().zip(b.as_slice()).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The layer's output without its bias.
fn unbiased(layer: &Conv2dWeights<f64>, input: &Tensor4<f64>) -> Tensor4<f64> {
    let (w, _) = layer.clone().into_parts();
    let g = layer.geometry();
    let plain = Conv2dWeights::builder(w, layer.dims())
        .groups(g.groups)
        .stride(g.stride.0, g.stride.1)
        .dilation(g.dilation.0, g.dilation.1)
        .padding(g.padding)
        .build()
        .unwrap();
    reference::conv2d(input, &plain).unwrap()
}

/// A rank in `1..=top` from `pick`.
fn rank_in(top: usize, pick: u64) -> usize {
    1 + (pick % top as u64) as usize
}

fn composes(case: &Case, pick: u64) -> Result<(), TestCaseError> {
    let (layer, input) = case.build::<f64>();
    for scheme in plugins() {
        let f = scheme.factor(&layer).unwrap();
        let rank = rank_in(f.max_rank(), pick);
        let factors = f.factors(rank, &mut Workspace::new()).unwrap();
        let composed = reference::conv2d(&input, &as_layer(&DenseKernel::of_chain(&factors).unwrap(), &layer)).unwrap();
        let chain = run_chain(&input, &factors);
        let scale = chain.max_abs().max(1e-300);
        let err = composed.max_abs_diff(&chain).unwrap();
        prop_assert!(err <= 1e-9 * scale, "{:?} rank {rank}: {err:e} vs {scale:e}", scheme.kind());
    }
    Ok(())
}

fn loses_what_the_chain_loses(case: &Case, pick: u64) -> Result<(), TestCaseError> {
    let (layer, input) = case.build::<f64>();
    let moments = InputMoments::of_input(&layer, &input).unwrap();
    let dense = reference::conv2d(&input, &layer).unwrap();
    let signal = unbiased(&layer, &input).as_slice().iter().map(|v| v * v).sum::<f64>();
    for scheme in plugins() {
        let f = scheme.factor(&layer).unwrap();
        let loss = Scored::new(&*f, &moments).unwrap().correlated_loss();
        prop_assert_eq!(loss.len(), f.max_rank() + 1);
        let top = (f.scheme().break_even_rank(&layer.shape()).ceil() as usize).clamp(1, f.max_rank());
        let rank = rank_in(top, pick);
        let chain = run_chain(&input, &f.factors(rank, &mut Workspace::new()).unwrap());
        let measured = if signal > 0.0 { (squared_distance(&dense, &chain) / signal).min(1.0) } else { 0.0 };
        let got = loss[rank];
        prop_assert!(
            (got - measured).abs() <= 1e-9 + 1e-7 * measured,
            "{:?} rank {rank}: {got} vs {measured}",
            scheme.kind()
        );
        prop_assert_eq!(loss[0], if signal > 0.0 { 1.0 } else { 0.0 });
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_composed_kernel_computes_what_the_chain_computes(case in cases(), pick in any::<u64>()) {
        composes(&case, pick)?;
    }

    #[test]
    fn the_lost_energy_is_the_chain_s_output_error_on_the_input(case in cases(), pick in any::<u64>()) {
        loses_what_the_chain_loses(&case, pick)?;
    }
}

#[test]
fn white_inputs_lose_the_relative_squared_frobenius_error() {
    let w: Vec<f64> = (0..6 * 3 * 9).map(|i| ((i * 37 % 23) as f64 - 11.0) / 11.0).collect();
    let layer = Conv2dWeights::new(w, [6, 3, 3, 3]).unwrap();
    let f = Dac::new(&SVD).factor(&layer).unwrap();
    let loss = InputMoments::identity(27).lost_energy(&*f).unwrap();
    let errors = f.errors();
    let top = (f.scheme().break_even_rank(&layer.shape()).ceil() as usize).clamp(1, f.max_rank());
    for (rank, &e) in loss.iter().enumerate().take(top + 1) {
        let want = errors.relative_error(rank).powi(2);
        assert!((e - want).abs() < 1e-9, "rank {rank}: {e} vs {want}");
    }
}

#[test]
fn bad_moments_are_errors_naming_the_layer() {
    let named = |e: Error, what: &str| {
        let text = e.to_string();
        assert!(text.contains("conv1") && text.contains(what), "{text}");
    };
    named(InputMoments::new("conv1", 2, vec![1.0; 3]).unwrap_err(), "input moments");
    named(InputMoments::new("conv1", 2, vec![1.0, 0.0, 0.0, f64::NAN]).unwrap_err(), "NaN");
    named(InputMoments::new("conv1", 2, vec![-1.0, 0.0, 0.0, 1.0]).unwrap_err(), "-1");
    named(InputMoments::new("conv1", 2, vec![1.0, 0.5, 0.0, 1.0]).unwrap_err(), "asymmetry");
    let layer = Conv2dWeights::builder(vec![1.0f64; 2 * 2 * 9], [2, 2, 3, 3]).name("conv1").build().unwrap();
    let f = Channel::new().factor(&layer).unwrap();
    named(InputMoments::identity(9).lost_energy(&*f).unwrap_err(), "dimension = 9");
}
