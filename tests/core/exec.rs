//! The fast executor against the reference loop nest.

use crate::support::seeded;
use dac::exec::{fast, reference, Tensor4};
use dac::{decompose_with, svd::GramSvd, Conv2dWeights, Options, Padding};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    groups: usize,
    cg: usize,
    ng: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    dilation: (usize, usize),
    padding: Padding,
    bias: bool,
    h: usize,
    w: usize,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..4, 1usize..4, 1usize..5, 1usize..6),
        (1usize..5, 1usize..5, 1usize..4, 1usize..4, 1usize..3, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3, any::<bool>()),
        (1usize..12, 1usize..12, any::<u64>()),
    )
        .prop_map(|((batch, groups, cg, ng), (kh, kw, sh, sw, dh, dw), (t, b, l, r, bias), (h, w, seed))| Case {
            batch,
            groups,
            cg,
            ng,
            kh,
            kw,
            stride: (sh, sw),
            dilation: (dh, dw),
            padding: Padding { top: t, bottom: b, left: l, right: r },
            bias,
            h,
            w,
            seed,
        })
}

fn layer<T: dac::Real>(c: &Case, f: fn(f64) -> T) -> Conv2dWeights<T> {
    let n = c.groups * c.ng;
    let w = seeded::<f64>(c.seed, n * c.cg * c.kh * c.kw).into_iter().map(f).collect();
    let mut b = Conv2dWeights::builder(w, [n, c.cg, c.kh, c.kw])
        .groups(c.groups)
        .stride(c.stride.0, c.stride.1)
        .dilation(c.dilation.0, c.dilation.1)
        .padding(c.padding);
    if c.bias {
        b = b.bias(seeded::<f64>(c.seed ^ 1, n).into_iter().map(f).collect());
    }
    b.build().unwrap()
}

fn check<T: dac::Real>(c: &Case, f: fn(f64) -> T, tol: f64) -> Result<(), TestCaseError> {
    let layer = layer(c, f);
    let x = Tensor4::new(
        seeded::<f64>(c.seed ^ 2, c.batch * c.groups * c.cg * c.h * c.w).into_iter().map(f).collect(),
        [c.batch, c.groups * c.cg, c.h, c.w],
    )
    .unwrap();
    let want = reference::conv2d(&x, &layer);
    let mut scratch = fast::Scratch::new();
    for par in [fast::Parallelism::Sequential, fast::Parallelism::Rayon] {
        let got = fast::conv2d(&x, &layer, par, &mut scratch);
        match (&want, got) {
            (Ok(want), Ok(got)) => {
                let diff = want.max_abs_diff(&got).unwrap().to_f64_exact();
                let depth = (c.cg * c.kh * c.kw + 1) as f64;
                prop_assert!(diff <= tol * depth, "{c:?} {par:?}: diff {diff}");
                // The _into form, into a dirty buffer.
                let mut out = Tensor4::new(vec![f(7.0); got.as_slice().len()], got.dims()).unwrap();
                fast::conv2d_into(&x, &layer, &mut out, par, &mut scratch).unwrap();
                prop_assert_eq!(out.as_slice(), got.as_slice());
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "{c:?}: reference {a:?}, fast {b:?}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn conv2d_matches_reference_f64(c in case()) {
        check(&c, |v| v, 1e-13)?;
    }

    #[test]
    fn conv2d_matches_reference_f32(c in case()) {
        check(&c, |v| v as f32, 1e-6)?;
    }

    #[test]
    fn depthwise_layers_match_reference(c in case()) {
        // One input channel per group: the direct depthwise kernel.
        let c = Case { cg: 1, groups: c.groups + 2, ..c };
        check(&c, |v| v, 1e-13)?;
    }

    #[test]
    fn pointwise_layers_match_reference(c in case()) {
        // 1x1, stride 1, no padding: the plain GEMM path.
        let c = Case { kh: 1, kw: 1, stride: (1, 1), padding: Padding::default(), ..c };
        check(&c, |v| v, 1e-13)?;
    }

    #[test]
    fn pair_matches_reference(c in case(), rank in 1usize..10) {
        let layer = layer(&c, |v| v);
        let k = layer.shape().max_rank();
        let d = decompose_with(&layer, &Options::new(rank.min(k)), &GramSvd::default()).unwrap();
        let x = Tensor4::new(seeded::<f64>(c.seed ^ 3, c.batch * c.groups * c.cg * c.h * c.w), [c.batch, c.groups * c.cg, c.h, c.w]).unwrap();
        let want = reference::pair(&x, &d.depthwise, &d.pointwise);
        let mut scratch = fast::Scratch::new();
        for par in [fast::Parallelism::Sequential, fast::Parallelism::Rayon] {
            match (&want, fast::pair(&x, &d.depthwise, &d.pointwise, par, &mut scratch)) {
                (Ok(want), Ok(got)) => {
                    let diff = want.max_abs_diff(&got).unwrap();
                    prop_assert!(diff <= 1e-12 * (1.0 + want.max_abs()), "{c:?}: diff {diff}");
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "{c:?}: reference {a:?}, fast {b:?}"),
            }
        }
    }
}

#[test]
fn wrong_channels_and_output_shape_are_errors() {
    let layer = Conv2dWeights::new(vec![1.0f32; 2 * 3 * 9], [2, 3, 3, 3]).unwrap();
    let x = Tensor4::new(vec![0.0f32; 2 * 5 * 5], [1, 2, 5, 5]).unwrap();
    let mut s = fast::Scratch::new();
    assert!(fast::conv2d(&x, &layer, fast::Parallelism::Sequential, &mut s).is_err());
    let x = Tensor4::new(vec![0.0f32; 3 * 5 * 5], [1, 3, 5, 5]).unwrap();
    let mut out = Tensor4::zeros([1, 2, 4, 4]).unwrap();
    assert!(fast::conv2d_into(&x, &layer, &mut out, fast::Parallelism::Sequential, &mut s).is_err());
    let tiny = Tensor4::new(vec![0.0f32; 3], [1, 3, 1, 1]).unwrap();
    assert!(fast::conv2d(&tiny, &layer, fast::Parallelism::Rayon, &mut s).is_err());
}

#[test]
fn large_batch_single_thread_pool_and_reuse() {
    // Batch > threads, a one-thread pool, and scratch reuse across differently sized layers.
    let mk = |n, c, pad| {
        Conv2dWeights::builder(seeded::<f64>(n as u64 * 31 + c as u64, n * c * 9), [n, c, 3, 3])
            .padding(Padding::uniform(pad))
            .bias(seeded::<f64>(5, n))
            .build()
            .unwrap()
    };
    let layers = [mk(8, 1, 1), mk(16, 8, 0), mk(4, 16, 1)];
    let x = Tensor4::new(seeded::<f64>(9, 7 * 28 * 28), [7, 1, 28, 28]).unwrap();
    let mut scratch = fast::Scratch::new();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for par in [fast::Parallelism::Rayon, fast::Parallelism::Sequential] {
        let (mut a, mut b) = (x.clone(), x.clone());
        for l in &layers {
            a = reference::conv2d(&a, l).unwrap();
            b = pool.install(|| fast::conv2d(&b, l, par, &mut scratch)).unwrap();
            let b2 = fast::conv2d(&b, l, par, &mut scratch);
            drop(b2);
        }
        assert!(a.max_abs_diff(&b).unwrap() < 1e-10 * (1.0 + a.max_abs()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn larger_maps_match_reference(
        seed in any::<u64>(),
        batch in 1usize..4,
        hw in 16usize..40,
        cg in 8usize..40,
        kind in 0usize..4,
    ) {
        // Feature maps above the batching threshold, with enough channels that the im2col
        // tile and the pointwise operand are cut into bands: the per-image paths as shipped.
        let (k, stride, pad, dil, groups) = match kind {
            0 => (3, (1, 1), Padding::uniform(1), (1, 1), 1),
            1 => (5, (2, 1), Padding { top: 2, bottom: 1, left: 0, right: 3 }, (1, 2), 2),
            2 => (1, (1, 1), Padding::default(), (1, 1), 1),
            _ => (3, (1, 1), Padding::uniform(2), (2, 2), 1),
        };
        let c = Case {
            batch,
            groups,
            cg,
            ng: 48 / groups,
            kh: k,
            kw: k,
            stride,
            dilation: dil,
            padding: pad,
            bias: seed % 2 == 0,
            h: hw,
            w: hw + 3,
            seed,
        };
        check(&c, |v| v as f32, 1e-6)?;
    }

    #[test]
    fn batches_of_small_maps_match_reference(seed in any::<u64>(), batch in 1usize..40, hw in 1usize..6, rank in 1usize..6) {
        // Deep-layer shapes: many images of 1x1 .. 5x5 maps, one GEMM across the batch.
        let c = Case {
            batch,
            groups: 1,
            cg: 24,
            ng: 16,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding::uniform(1),
            bias: true,
            h: hw,
            w: hw,
            seed,
        };
        check(&c, |v| v as f32, 1e-6)?;
        let layer = layer(&c, |v| v);
        let d = decompose_with(&layer, &Options::new(rank), &GramSvd::default()).unwrap();
        let x = Tensor4::new(seeded::<f64>(seed ^ 3, batch * 24 * hw * hw), [batch, 24, hw, hw]).unwrap();
        let want = reference::pair(&x, &d.depthwise, &d.pointwise).unwrap();
        let mut scratch = fast::Scratch::new();
        for par in [fast::Parallelism::Sequential, fast::Parallelism::Rayon] {
            let got = fast::pair(&x, &d.depthwise, &d.pointwise, par, &mut scratch).unwrap();
            let diff = want.max_abs_diff(&got).unwrap();
            prop_assert!(diff <= 1e-12 * (1.0 + want.max_abs()), "{c:?}: diff {diff}");
        }
    }
}
