//! Full rank reproduces the direct convolution: every shape, stride, padding, dilation, group
//! count, with and without bias, in f32 and f64, checked against `exec::reference`.

mod common;

use common::Rng;
use dac::exec::{self, Tensor4};
use dac::{decompose, decompose_with, svd::NalgebraSvd, Conv2dWeights, Options, Padding, Real, Split};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    groups: usize,
    in_per_group: usize,
    out_per_group: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    dilation: (usize, usize),
    padding: Padding,
    extra: (usize, usize),
    bias: bool,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (1usize..=4)
        .prop_flat_map(|groups| {
            let max_per_group = 16 / groups;
            (
                Just(groups),
                1..=max_per_group,
                1..=max_per_group,
                (1usize..=5, 1usize..=5),
                (1usize..=3, 1usize..=3),
                (1usize..=3, 1usize..=3),
                (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
                (0usize..=4, 0usize..=4),
                (1usize..=3, any::<bool>(), any::<u64>()),
            )
        })
        .prop_map(
            |(groups, cg, ng, (kh, kw), stride, dilation, (top, bottom, left, right), extra, (batch, bias, seed))| {
                Case {
                    batch,
                    groups,
                    in_per_group: cg,
                    out_per_group: ng,
                    kh,
                    kw,
                    stride,
                    dilation,
                    padding: Padding { top, bottom, left, right },
                    extra,
                    bias,
                    seed,
                }
            },
        )
}

fn build<T: Real>(case: &Case) -> (Conv2dWeights<T>, Tensor4<T>) {
    let mut rng = Rng::new(case.seed);
    let n = case.groups * case.out_per_group;
    let c = case.groups * case.in_per_group;
    let dims = [n, case.in_per_group, case.kh, case.kw];
    let weight = rng.vec(dims.iter().product());
    let bias = case.bias.then(|| rng.vec(n));
    let layer = Conv2dWeights::builder(weight, dims)
        .name("prop")
        .maybe_bias(bias)
        .groups(case.groups)
        .stride(case.stride.0, case.stride.1)
        .dilation(case.dilation.0, case.dilation.1)
        .padding(case.padding)
        .build()
        .expect("valid layer");
    // Smallest input that still gives an output, plus some slack.
    let eff_h = (case.kh - 1) * case.dilation.0 + 1;
    let eff_w = (case.kw - 1) * case.dilation.1 + 1;
    let h = eff_h.saturating_sub(case.padding.top + case.padding.bottom).max(1) + case.extra.0;
    let w = eff_w.saturating_sub(case.padding.left + case.padding.right).max(1) + case.extra.1;
    let input = Tensor4::new(rng.vec(case.batch * c * h * w), [case.batch, c, h, w]).unwrap();
    (layer, input)
}

fn check_full_rank<T: Real>(case: &Case, tolerance: f64) -> Result<(), TestCaseError> {
    let (layer, input) = build::<T>(case);
    let dense = exec::conv2d(&input, &layer).unwrap();
    let scale = dense.max_abs().to_f64_exact().max(f64::MIN_POSITIVE);
    let full = layer.shape().max_rank();
    for split in [Split::SquareRoot, Split::Pointwise, Split::Depthwise] {
        let d = decompose_with(&layer, &Options::new(full).split(split), &NalgebraSvd::default()).unwrap();
        // Geometry of the pair as documented.
        let dw = d.depthwise.conv();
        let pw = d.pointwise.conv();
        prop_assert_eq!(dw.dims(), [layer.shape().in_channels * full, 1, case.kh, case.kw]);
        prop_assert_eq!(dw.geometry().groups, layer.shape().in_channels);
        prop_assert_eq!(dw.geometry().stride, case.stride);
        prop_assert_eq!(dw.geometry().dilation, case.dilation);
        prop_assert_eq!(dw.geometry().padding, case.padding);
        prop_assert!(dw.bias().is_none());
        prop_assert_eq!(pw.dims(), [layer.shape().out_channels, case.in_per_group * full, 1, 1]);
        prop_assert_eq!(pw.geometry().groups, case.groups);
        prop_assert_eq!(pw.bias(), layer.bias());
        let separable = exec::pair(&input, &d.depthwise, &d.pointwise).unwrap();
        let err = dense.max_abs_diff(&separable).unwrap().to_f64_exact();
        prop_assert!(err <= tolerance * scale, "{split:?}: max diff {err:e} vs scale {scale:e}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn full_rank_reproduces_direct_convolution_f32(case in cases()) {
        check_full_rank::<f32>(&case, 1e-4)?;
    }

    #[test]
    fn full_rank_reproduces_direct_convolution_f64(case in cases()) {
        check_full_rank::<f64>(&case, 1e-10)?;
    }
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
