//! The fast executor against the reference loop nest.

//! Every kernel choice against the reference, with thresholds shrunk or grown so that small
//! shapes reach each one (tests/fast_exec.rs covers the public functions as shipped).
use super::*;
use crate::exec::reference;
use proptest::prelude::*;

const TUNINGS: [Tuning; 4] = [
    // Batched GEMMs of a few columns; one-row im2col bands; the tap table everywhere.
    Tuning { batch_below: usize::MAX, batch_cols: 7, tile_bytes: 1, table_below: usize::MAX, wide_depthwise: false },
    // Never batched; one-row bands; never the tap table.
    Tuning { batch_below: 0, batch_cols: 1, tile_bytes: 1, table_below: 0, wide_depthwise: false },
    // The whole batch in one GEMM.
    Tuning {
        batch_below: usize::MAX,
        batch_cols: usize::MAX,
        tile_bytes: usize::MAX,
        table_below: 0,
        wide_depthwise: true,
    },
    TUNING,
];

fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

#[allow(clippy::type_complexity)]
fn case() -> impl Strategy<
    Value = (
        (usize, usize, usize, usize),
        (usize, usize, usize, usize, usize, usize),
        [usize; 4],
        (usize, usize, bool, u64),
    ),
> {
    (
        (1usize..5, 1usize..4, 1usize..4, 1usize..5),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3, 1usize..3, 1usize..3),
        [0usize..3, 0usize..3, 0usize..3, 0usize..3],
        (1usize..10, 1usize..10, any::<bool>(), any::<u64>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_kernel_matches_reference(
        ((batch, groups, cg, ng), (kh, kw, sh, sw, dh, dw), [t, b, l, r], (h, w, bias, seed)) in case(),
        depthwise in any::<bool>(),
        pointwise in any::<bool>(),
    ) {
        // Depthwise: multipliers 1, 3, 5, 7 (the wide kernel computes up to four outputs at once).
        let (cg, ng, kh, kw) = if depthwise { (1, 2 * ng - 1, kh + 1, kw) } else { (cg, ng, kh, kw) };
        let (kh, kw, stride, padding) = if pointwise && !depthwise {
            (1, 1, (1, 1), Padding::default())
        } else {
            (kh, kw, (sh, sw), Padding { top: t, bottom: b, left: l, right: r })
        };
        let n = groups * ng;
        let mut builder = Conv2dWeights::builder(values(seed, n * cg * kh * kw), [n, cg, kh, kw])
            .groups(groups)
            .stride(stride.0, stride.1)
            .dilation(dh, dw)
            .padding(padding);
        if bias {
            builder = builder.bias(values(seed ^ 1, n));
        }
        let layer = builder.build().unwrap();
        let x = Tensor4::new(values(seed ^ 2, batch * groups * cg * h * w), [batch, groups * cg, h, w]).unwrap();
        let Ok(want) = reference::conv2d(&x, &layer) else { return Ok(()) };
        let mut scratch = Scratch::new();
        for tuning in &TUNINGS {
            for par in [Parallelism::Sequential, Parallelism::Rayon] {
                let mut got = Tensor4::new(vec![f64::NAN; want.as_slice().len()], want.dims()).unwrap();
                run(x.as_slice(), x.dims(), &layer, got.as_mut_slice(), par, &mut scratch, tuning);
                prop_assert!(got.as_slice().iter().all(|v| v.is_finite()), "{tuning:?} {par:?}: unwritten output");
                let diff = want.max_abs_diff(&got).unwrap();
                prop_assert!(diff <= 1e-13 * (cg * kh * kw + 1) as f64, "{tuning:?} {par:?}: diff {diff}");
                if depthwise {
                    // The depthwise kernels run the reference's operations in its order (bias,
                    // then each tap's product added): equal, not just close.
                    prop_assert!(want.as_slice() == got.as_slice(), "{tuning:?} {par:?}: depthwise not exact");
                }
            }
        }
    }
}
