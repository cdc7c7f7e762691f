//! The input-moments score (`dac::moments`) against the reference loop nest: the kernel a chain
//! of factors composes to computes what the chain computes, and the energy a candidate loses
//! under the moments of an input is the output error the chain makes on that input.

use crate::support::gen::{cases, Case};
use crate::support::harness::run_chain;
use dac::exec::{reference, Tensor4};
use dac::moments::{lost_fractions, InputMoments, PatchSum, Prior, Scored, Synthetic};
use dac::scheme::{
    Channel, Dac, Decoupled, DenseKernel, Factored, LowRankKernel, Scheme, SchemeKind, Spatial, Workspace,
};
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

/// `A·B` of a kernel given as a product.
fn multiply(k: &LowRankKernel) -> Vec<f64> {
    let mut out = vec![0.0; k.out_channels * k.patch_len];
    for (row, dst) in out.chunks_exact_mut(k.patch_len).enumerate() {
        for (i, &a) in k.a[row * k.inner..][..k.inner].iter().enumerate() {
            dst.iter_mut().zip(&k.b[i * k.patch_len..][..k.patch_len]).for_each(|(o, b)| *o += a * b);
        }
    }
    out
}

/// The product form of a chain is its kernel, and where a scheme has components, the first
/// `r` of them add up to its kernel at rank `r`.
fn components_add_up(case: &Case, pick: u64) -> Result<(), TestCaseError> {
    let (layer, _) = case.build::<f64>();
    for scheme in plugins() {
        let f = scheme.factor(&layer).unwrap();
        let rank = rank_in(f.max_rank(), pick);
        let ws = &mut Workspace::new();
        let factors = f.factors(rank, ws).unwrap();
        let kernel = DenseKernel::of_chain(&factors).unwrap();
        let scale = kernel.weight.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        let close = |a: &[f64], what: &str| -> Result<(), TestCaseError> {
            let err = a.iter().zip(&kernel.weight).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            prop_assert!(err <= 1e-9 * scale, "{:?} rank {rank} {what}: {err:e} vs {scale:e}", scheme.kind());
            Ok(())
        };
        close(&multiply(&DenseKernel::product_of_chain(&factors).unwrap()), "product form")?;
        if f.component(0, ws).is_none() {
            prop_assert!(matches!(f.scheme(), SchemeKind::Dac), "{:?} has no components", f.scheme());
            continue;
        }
        let mut sum = vec![0.0; kernel.weight.len()];
        for j in 0..rank {
            let c = DenseKernel::product_of_chain(&f.component(j, ws).unwrap().unwrap()).unwrap();
            sum.iter_mut().zip(multiply(&c)).for_each(|(s, x)| *s += x);
        }
        close(&sum, "sum of components")?;
        prop_assert!(f.component(f.max_rank(), ws).unwrap().is_err());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn components_add_up_to_the_kernel_at_each_rank(case in cases(), pick in any::<u64>()) {
        components_add_up(&case, pick)?;
    }

    #[test]
    fn the_composed_kernel_computes_what_the_chain_computes(case in cases(), pick in any::<u64>()) {
        composes(&case, pick)?;
    }

    #[test]
    fn the_lost_energy_is_the_chain_s_output_error_on_the_input(case in cases(), pick in any::<u64>()) {
        loses_what_the_chain_loses(&case, pick)?;
    }
}

/// Component by component (the matrix schemes, few inner dimensions) the lost energy is what
/// composing the kernel at every rank gives.
#[test]
fn lost_energy_by_components_is_that_of_the_composed_kernels() {
    let mut x = 0.37f64;
    let mut next = || {
        x = (x * 997.0 + 0.123).fract();
        x - 0.5
    };
    let w: Vec<f64> = (0..32 * 4 * 9).map(|_| next()).collect();
    let layer = Conv2dWeights::builder(w, [32, 4, 3, 3]).groups(2).padding(dac::Padding::uniform(1)).build().unwrap();
    let input = Tensor4::new((0..2 * 8 * 10 * 10).map(|_| next()).collect(), [2, 8, 10, 10]).unwrap();
    let moments = InputMoments::of_input(&layer, &input).unwrap();
    for scheme in plugins() {
        let f = scheme.factor(&layer).unwrap();
        let fast = moments.lost_energy(&*f).unwrap();
        let slow = lost_fractions(&*f, |k| moments.energy(k)).unwrap();
        for (r, (a, b)) in fast.iter().zip(&slow).enumerate() {
            assert!((a - b).abs() <= 1e-10 + 1e-8 * b, "{:?} rank {r}: {a} vs {b}", f.scheme());
        }
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

/// Mean, standard deviation and lag-1 correlation along rows and columns of `x`'s pixels.
fn pixel_statistics(x: &Tensor4<f32>) -> (f64, f64, f64, f64) {
    let [n, c, h, w] = x.dims();
    let v = |i: usize, y: usize, x_: usize| x.get(i / c, i % c, y, x_) as f64;
    let all: Vec<f64> = x.as_slice().iter().map(|&p| p as f64).collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let var = all.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / all.len() as f64;
    let (mut along_x, mut along_y, mut nx, mut ny) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..n * c {
        for y in 0..h {
            for x_ in 0..w {
                if x_ + 1 < w {
                    along_x += (v(i, y, x_) - mean) * (v(i, y, x_ + 1) - mean);
                    nx += 1.0;
                }
                if y + 1 < h {
                    along_y += (v(i, y, x_) - mean) * (v(i, y + 1, x_) - mean);
                    ny += 1.0;
                }
            }
        }
    }
    (mean, var.sqrt(), along_x / nx / var, along_y / ny / var)
}

#[test]
fn synthetic_images_have_the_prior_s_statistics() {
    let prior = Prior::new(0.9, 0.3, 0.2).unwrap();
    let x = Synthetic::new(prior, 3).images([64, 2, 48, 48]).unwrap();
    let (mean, std, rx, ry) = pixel_statistics(&x);
    assert!((mean - 0.3).abs() < 0.02, "mean {mean}");
    assert!((std - 0.2).abs() < 0.02, "std {std}");
    assert!((rx - 0.9).abs() < 0.02 && (ry - 0.9).abs() < 0.02, "lag-1 correlations {rx}, {ry}");
    // The same seed gives the same images; another seed others.
    assert_eq!(Synthetic::new(prior, 3).images([64, 2, 48, 48]).unwrap(), x);
    assert_ne!(Synthetic::new(prior, 4).images([64, 2, 48, 48]).unwrap(), x);
    // Normalised per channel: (pixel - mean[c]) / std[c] of the same draw.
    let normed = Synthetic::new(prior, 3).normalize(vec![0.1, 0.2], vec![0.5, 2.0]).unwrap();
    let y = normed.clone().images([64, 2, 48, 48]).unwrap();
    for (i, (&a, &b)) in x.as_slice().iter().zip(y.as_slice()).enumerate() {
        let ch = (i / (48 * 48)) % 2;
        let want = (a as f64 - [0.1, 0.2][ch]) / [0.5, 2.0][ch];
        assert!((b as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "pixel {i}: {b} vs {want}");
    }
    let err = normed.clone().images([1, 3, 8, 8]).unwrap_err();
    assert!(err.to_string().contains("one per input channel"), "{err}");
}

#[test]
fn bad_priors_and_normalisations_are_errors() {
    for (rho, mean, std) in [(1.0, 0.5, 0.2), (-0.1, 0.5, 0.2), (0.5, f64::NAN, 0.2), (0.5, 0.5, 0.0)] {
        assert!(matches!(Prior::new(rho, mean, std), Err(Error::InvalidParameter { .. })), "{rho} {mean} {std}");
    }
    let s = || Synthetic::new(Prior::default(), 0);
    assert!(s().normalize(vec![], vec![1.0]).is_err());
    assert!(s().normalize(vec![0.5], vec![-1.0]).is_err());
    assert!(s().normalize(vec![f64::INFINITY], vec![1.0]).is_err());
}

/// A layer with padding, stride and dilation, and inputs for it.
fn sampled_layer() -> (Conv2dWeights<f32>, Tensor4<f32>) {
    let layer = Conv2dWeights::builder(vec![0.1f32; 3 * 2 * 6], [3, 2, 2, 3])
        .name("s")
        .padding(dac::Padding { top: 1, bottom: 0, left: 2, right: 1 })
        .stride(2, 1)
        .dilation(1, 2)
        .build()
        .unwrap();
    let x = Synthetic::new(Prior::new(0.6, 0.0, 1.0).unwrap(), 9).images([3, 2, 7, 6]).unwrap();
    (layer, x)
}

#[test]
fn sampled_patch_moments_converge_to_those_of_every_position() {
    let (layer, x) = sampled_layer();
    let every = InputMoments::of_input(&layer, &x).unwrap();
    let mut synth = Synthetic::new(Prior::default(), 1);
    let mut sum = PatchSum::new(12);
    for _ in 0..4 {
        synth.sample_patches(&layer, &x, 50_000, &mut sum).unwrap();
    }
    assert_eq!(sum.count(), 200_000);
    let sampled = sum.moments("s").unwrap();
    let scale = every.values().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = sampled.values().iter().zip(every.values()).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 0.02 * scale, "sampled moments differ by {diff} (largest entry {scale})");
}

/// A grouped layer's moments are the diagonal blocks of the whole matrix (that of an
/// ungrouped layer of the same geometry on all the channels), they give a grouped kernel the
/// same energy, and sampling them converges to them.
#[test]
fn grouped_moments_are_the_diagonal_blocks_of_the_whole_matrix() {
    let geometry = |b: dac::Conv2dWeightsBuilder<f32>| b.padding(dac::Padding::uniform(1)).stride(2, 1);
    let grouped = geometry(Conv2dWeights::builder(vec![0.1f32; 6 * 2 * 9], [6, 2, 3, 3]).groups(3)).build().unwrap();
    let whole = geometry(Conv2dWeights::builder(vec![0.1f32; 6 * 6 * 9], [6, 6, 3, 3])).build().unwrap();
    let x = Synthetic::new(Prior::new(0.7, 0.2, 1.0).unwrap(), 5).images([2, 6, 8, 7]).unwrap();
    let (blocks, full) = (InputMoments::of_input(&grouped, &x).unwrap(), InputMoments::of_input(&whole, &x).unwrap());
    assert_eq!((blocks.groups(), blocks.dim(), full.groups(), full.dim()), (3, 54, 1, 54));
    let (b, f) = (blocks.values(), full.values());
    for g in 0..3 {
        for i in 0..18 {
            for j in 0..18 {
                let want = f[(g * 18 + i) * 54 + g * 18 + j];
                assert!((b[g * 324 + i * 18 + j] - want).abs() <= 1e-12 * (1.0 + want.abs()), "group {g} ({i}, {j})");
            }
        }
    }
    let kernel = DenseKernel::of(
        &Conv2dWeights::builder((0..108).map(|i| (i as f32 * 0.37).sin()).collect(), [6, 2, 3, 3])
            .groups(3)
            .build()
            .unwrap(),
    );
    let (eb, ef) = (blocks.energy(&kernel), full.energy(&kernel));
    assert!((eb - ef).abs() <= 1e-12 * ef, "{eb} vs {ef}");
    let mut sum = PatchSum::grouped(3, 18);
    Synthetic::new(Prior::default(), 2).sample_patches(&grouped, &x, 100_000, &mut sum).unwrap();
    let sampled = sum.moments("g").unwrap().values();
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = sampled.iter().zip(&b).fold(0.0f64, |m, (s, w)| m.max((s - w).abs()));
    assert!(diff < 0.03 * scale, "sampled blocks differ by {diff} (largest entry {scale})");
    // Whole moments serve a grouped layer too, and score every scheme as its blocks do; blocks
    // of another grouping are an error.
    let w: Vec<f64> = (0..108).map(|i| (i as f64 * 0.61).cos()).collect();
    let layer = Conv2dWeights::builder(w, [6, 2, 3, 3]).groups(3).padding(dac::Padding::uniform(1)).build().unwrap();
    for scheme in plugins() {
        let f = scheme.factor(&layer).unwrap();
        let (lb, lf) = (blocks.lost_energy(&*f).unwrap(), full.lost_energy(&*f).unwrap());
        for (r, (x, y)) in lb.iter().zip(&lf).enumerate() {
            assert!((x - y).abs() <= 1e-9, "{:?} rank {r}: {x} vs {y}", f.scheme());
        }
    }
    let other = InputMoments::grouped("g", 2, 27, vec![0.0; 2 * 27 * 27]).unwrap();
    let err = other.lost_energy(&*Channel::new().factor(&layer).unwrap()).unwrap_err();
    assert!(err.to_string().contains("groups"), "{err}");
}

#[test]
fn one_output_position_samples_exactly_its_patch() {
    // A 2x3 kernel on a 2x3 input without padding: one output position per image.
    let layer = Conv2dWeights::new(vec![1.0f32; 2 * 6], [2, 1, 2, 3]).unwrap();
    let x = Tensor4::new(vec![1.0f32, -2.0, 3.0, 0.5, 4.0, -1.5], [1, 1, 2, 3]).unwrap();
    let mut sum = PatchSum::new(6);
    Synthetic::new(Prior::default(), 0).sample_patches(&layer, &x, 7, &mut sum).unwrap();
    let s = sum.moments("one").unwrap();
    for (i, a) in x.as_slice().iter().enumerate() {
        for (j, b) in x.as_slice().iter().enumerate() {
            assert_eq!(s.values()[i * 6 + j], (a * b) as f64);
        }
    }
}

#[test]
fn empty_or_misfit_patch_sums_are_errors() {
    let (layer, x) = sampled_layer();
    assert!(PatchSum::new(12).moments("s").unwrap_err().to_string().contains("`s`"));
    let err = Synthetic::new(Prior::default(), 0).sample_patches(&layer, &x, 5, &mut PatchSum::new(11)).unwrap_err();
    assert!(err.to_string().contains("`s`"), "{err}");
    let wrong = Tensor4::new(vec![0.0f32; 3 * 6 * 6], [1, 3, 6, 6]).unwrap();
    let err =
        Synthetic::new(Prior::default(), 0).sample_patches(&layer, &wrong, 5, &mut PatchSum::new(12)).unwrap_err();
    assert!(matches!(err, Error::ChannelMismatch { .. }), "{err}");
}
