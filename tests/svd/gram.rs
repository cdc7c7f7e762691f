//! Accuracy of the Gram + Jacobi backend against the definition and the f64 nalgebra SVD.

use crate::support::{reconstruct, relative_diff, Rng};
use dac::svd::{GramSvd, NalgebraSvd, SvdBackend};
use dac::{decompose_with, Conv2dWeights, Factorization, Options, Split};

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The exact optimum (f64 nalgebra) of a layer whose weight is `w` (exact f32 values).
fn optimum(w: &[f32], dims: [usize; 4], groups: usize, rank: usize) -> f64 {
    let w64: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    let layer = Conv2dWeights::builder(w64, dims).groups(groups).build().unwrap();
    Factorization::compute(&layer, &NalgebraSvd::default()).unwrap().spectrum().optimal_relative_error(rank)
}

/// Checks full-rank exactness and every truncation against the optimum, for an f32 layer: the
/// error is measured on the written pair (reconstructed in f64 by the tests' own code), and the
/// report's error must agree with it.
fn check_layer(w: Vec<f32>, dims: [usize; 4], groups: usize) {
    let layer = Conv2dWeights::builder(w.clone(), dims).groups(groups).build().unwrap();
    let k = layer.shape().max_rank();
    let f = Factorization::compute(&layer, &GramSvd::default()).unwrap();
    let original: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    for r in 1..=k {
        let d = f.truncate(&Options::new(r)).unwrap();
        for v in d.depthwise.conv().weight().iter().chain(d.pointwise.conv().weight()) {
            assert!(v.is_finite(), "rank {r}: non-finite factor {v}");
        }
        let err = relative_diff(&reconstruct(&layer, &d.depthwise, &d.pointwise), &original);
        let reported = d.report.relative_error;
        assert!(err.is_finite() && reported.is_finite(), "rank {r}: error {err}, reported {reported}");
        if r == k {
            assert!(err <= 1e-6, "full rank {r} of {dims:?}: relative error {err}");
            assert!(reported <= 1e-6, "full rank {r} of {dims:?}: reported error {reported}");
        } else {
            let opt = optimum(&w, dims, groups, r);
            assert!(err <= opt * (1.0 + 1e-4) + 1e-6, "rank {r} of {dims:?}: error {err}, optimum {opt}");
            assert!(
                (reported - err).abs() <= 1e-4 * opt + 1e-6,
                "rank {r} of {dims:?}: reported {reported}, measured {err}"
            );
        }
    }
}

#[test]
fn singular_values_and_vectors_match_nalgebra_f64() {
    let mut rng = Rng::new(1);
    for &(rows, cols) in &[(1, 9), (2, 9), (5, 9), (9, 9), (16, 9), (64, 9), (40, 25), (7, 1), (30, 49), (3, 4)] {
        let m = rng.vec::<f64>(rows * cols);
        let k = rows.min(cols);
        let (mut s1, mut v1) = (vec![0.0; k], vec![0.0; k * cols]);
        let (mut s2, mut v2) = (vec![0.0; k], vec![0.0; k * cols]);
        GramSvd::default().right_factors(&m, rows, cols, &mut s1, &mut v1).unwrap();
        NalgebraSvd::default().right_factors(&m, rows, cols, &mut s2, &mut v2).unwrap();
        for j in 0..k {
            assert!((s1[j] - s2[j]).abs() <= 1e-7 * s2[0], "{rows}x{cols} s[{j}]: {} vs {}", s1[j], s2[j]);
            if j > 0 {
                assert!(s1[j] <= s1[j - 1], "not descending");
            }
        }
        // Orthonormal rows and ‖M v_j‖ = s_j: for every backend, on these same matrices, by
        // `harness::backend_contract` (tests/svd/backends.rs).
    }
}

#[test]
fn bad_buffers_are_an_error_not_a_panic() {
    let m = [1.0f32; 6];
    let (mut s, mut vt) = ([0.0f32; 1], [0.0f32; 3]);
    assert!(GramSvd::default().right_factors(&m, 2, 3, &mut s, &mut vt).is_err());
}

#[test]
fn factor_layer_matches_per_channel_backend() {
    let mut rng = Rng::new(2);
    for &(dims, groups) in &[
        ([64usize, 3usize, 3usize, 3usize], 1usize),
        ([32, 70, 3, 3], 1),
        ([8, 4, 3, 3], 2),
        ([12, 1, 3, 3], 6),
        ([5, 3, 5, 5], 1),
        ([6, 130, 1, 3], 1),
        ([3, 2, 1, 1], 1),
    ] {
        let w = to_f32(&rng.vec::<f64>(dims.iter().product()));
        let layer = Conv2dWeights::builder(w, dims).groups(groups).build().unwrap();
        let shape = layer.shape();
        let (k, taps) = (shape.max_rank(), shape.taps());
        let mut s = vec![0.0f32; shape.in_channels * k];
        let mut vt = vec![0.0f32; shape.in_channels * k * taps];
        GramSvd::default().factor_layer(&layer, &mut s, &mut vt).unwrap();
        // The reference: each channel's matrix gathered and factored on its own, by the
        // per-matrix Gram path and by nalgebra in f64.
        let (ng, cg) = (shape.out_per_group(), shape.in_per_group());
        for c in 0..shape.in_channels {
            let (g, cl) = (c / cg, c % cg);
            let m: Vec<f32> = (0..ng)
                .flat_map(|nl| {
                    let src = ((g * ng + nl) * cg + cl) * taps;
                    layer.weight()[src..src + taps].to_vec()
                })
                .collect();
            let (mut s1, mut v1) = (vec![0.0f32; k], vec![0.0f32; k * taps]);
            GramSvd::default().right_factors(&m, ng, taps, &mut s1, &mut v1).unwrap();
            let m64: Vec<f64> = m.iter().map(|&x| f64::from(x)).collect();
            let (mut s2, mut v2) = (vec![0.0f64; k], vec![0.0f64; k * taps]);
            NalgebraSvd::default().right_factors(&m64, ng, taps, &mut s2, &mut v2).unwrap();
            for j in 0..k {
                let got = f64::from(s[c * k + j]);
                for want in [f64::from(s1[j]), s2[j]] {
                    assert!((got - want).abs() <= 1e-6 * s2[0].max(1e-30), "{dims:?} c{c} s{j}: {got} vs {want}");
                }
                // The same right singular vector up to sign, where the singular value is simple.
                let gap = (if j > 0 { s2[j - 1] - s2[j] } else { f64::INFINITY }).min(if j + 1 < k {
                    s2[j] - s2[j + 1]
                } else {
                    f64::INFINITY
                });
                if gap > 1e-3 * s2[0] {
                    let dot: f64 =
                        (0..taps).map(|t| f64::from(vt[(c * k + j) * taps + t]) * v2[j * taps + t]).sum::<f64>();
                    assert!((dot.abs() - 1.0).abs() <= 1e-5, "{dims:?} c{c} v{j}: |<v, v_ref>| = {dot}");
                }
            }
        }
        // Wrong buffer lengths are reported.
        assert!(GramSvd::default().factor_layer(&layer, &mut s[1..], &mut vt).is_err());
    }
}

#[test]
fn random_layers_full_rank_exact_and_truncation_near_optimal() {
    let mut rng = Rng::new(3);
    for &(dims, groups) in &[
        ([64usize, 3usize, 3usize, 3usize], 1usize),
        ([16, 8, 3, 3], 1),
        ([4, 6, 3, 3], 1),
        ([8, 4, 3, 3], 2),
        ([24, 3, 5, 5], 1),
    ] {
        check_layer(to_f32(&rng.vec::<f64>(dims.iter().product())), dims, groups);
    }
}

#[test]
fn rank_deficient_and_zero_channels() {
    let mut rng = Rng::new(4);
    let (n, c, taps) = (32usize, 6usize, 9usize);
    let mut w = vec![0.0f32; n * c * taps];
    for ci in 0..c {
        // Channel ci has rank ci (channel 0 is exactly zero).
        let a = rng.vec::<f64>(n * ci);
        let b = rng.vec::<f64>(ci * taps);
        for o in 0..n {
            for t in 0..taps {
                let v: f64 = (0..ci).map(|j| a[o * ci + j] * b[j * taps + t]).sum();
                w[(o * c + ci) * taps + t] = v as f32;
            }
        }
    }
    check_layer(w, [n, c, 3, 3], 1);
    // An all-zero layer.
    let layer = Conv2dWeights::new(vec![0.0f32; 8 * 2 * 9], [8, 2, 3, 3]).unwrap();
    let d = decompose_with(&layer, &Options::new(3), &GramSvd::default()).unwrap();
    assert_eq!(d.report.relative_error, 0.0);
    assert!(d.depthwise.conv().weight().iter().all(|v| v.is_finite()));
    assert!(d.pointwise.conv().weight().iter().all(|v| *v == 0.0));
}

#[test]
fn repeated_singular_values() {
    // Each channel: orthonormal columns scaled so that singular values repeat (2, 2, 2, 1, 1, ...).
    let mut rng = Rng::new(5);
    let (n, c, taps) = (16usize, 3usize, 9usize);
    let mut w = vec![0.0f32; n * c * taps];
    for ci in 0..c {
        // Gram-Schmidt on random N x taps.
        let mut q = rng.vec::<f64>(n * taps);
        for j in 0..taps {
            for i in 0..j {
                let dot: f64 = (0..n).map(|o| q[o * taps + i] * q[o * taps + j]).sum();
                for o in 0..n {
                    q[o * taps + j] -= dot * q[o * taps + i];
                }
            }
            let norm = (0..n).map(|o| q[o * taps + j].powi(2)).sum::<f64>().sqrt();
            for o in 0..n {
                q[o * taps + j] /= norm;
            }
        }
        for o in 0..n {
            for t in 0..taps {
                let s = if t < 3 {
                    2.0
                } else if t < 7 {
                    1.0
                } else {
                    0.5
                };
                w[(o * c + ci) * taps + t] = (q[o * taps + t] * s) as f32;
            }
        }
    }
    check_layer(w.clone(), [n, c, 3, 3], 1);
    // Every singular value equal.
    let ones: Vec<f32> = (0..9 * 9).map(|i| if i % 10 == 0 { 1.0 } else { 0.0 }).collect();
    check_layer(ones, [9, 1, 3, 3], 1);
}

#[test]
fn extreme_scales_f32() {
    let mut rng = Rng::new(6);
    let base = rng.vec::<f64>(16 * 4 * 9);
    for scale in [1e-30f64, 1e-20, 1e20, 1e30] {
        let w: Vec<f32> = base.iter().map(|&x| (x * scale) as f32).collect();
        assert!(w.iter().all(|v| v.is_finite() && (*v == 0.0 || v.abs() > f32::MIN_POSITIVE)));
        check_layer(w, [16, 4, 3, 3], 1);
    }
}

#[test]
fn extreme_scales_f64() {
    let mut rng = Rng::new(7);
    let base = rng.vec::<f64>(16 * 4 * 9);
    let reference = Conv2dWeights::new(base.clone(), [16, 4, 3, 3]).unwrap();
    let exact = Factorization::compute(&reference, &NalgebraSvd::default()).unwrap().spectrum();
    // Decomposition, measured on the written pair (whose f64 sums of squares need |w| < 1e154).
    for scale in [1e-150f64, 1e-100, 1e100, 1e150] {
        let w: Vec<f64> = base.iter().map(|&x| x * scale).collect();
        let layer = Conv2dWeights::new(w.clone(), [16, 4, 3, 3]).unwrap();
        let f = Factorization::compute(&layer, &GramSvd::default()).unwrap();
        for r in 1..=9 {
            let d = f.truncate(&Options::new(r)).unwrap();
            let opt = exact.optimal_relative_error(r);
            let err = relative_diff(&reconstruct(&layer, &d.depthwise, &d.pointwise), &w);
            let reported = d.report.relative_error;
            assert!(err.is_finite() && err <= opt * (1.0 + 1e-4) + 1e-12, "scale {scale} r {r}: {err} vs {opt}");
            assert!((reported - opt).abs() <= 1e-4 * opt + 1e-12, "scale {scale} r {r}: reported {reported} vs {opt}");
        }
    }
    // The backend alone, up to the ends of f64's range: squares would overflow without scaling.
    for scale in [1e-300f64, 1e-200, 1e200, 1e300] {
        let w: Vec<f64> = base.iter().map(|&x| x * scale).collect();
        let layer = Conv2dWeights::new(w, [16, 4, 3, 3]).unwrap();
        let mut s = vec![0.0f64; 4 * 9];
        let mut vt = vec![0.0f64; 4 * 81];
        GramSvd::default().factor_layer(&layer, &mut s, &mut vt).unwrap();
        for (c, (got, want)) in s.chunks(9).zip(exact.channels()).enumerate() {
            for j in 0..9 {
                let g = got[j] / scale;
                assert!(
                    g.is_finite() && (g - want[j]).abs() <= 1e-7 * want[0],
                    "scale {scale} c{c} s{j}: {g} vs {}",
                    want[j]
                );
            }
        }
        assert!(vt.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn truncate_into_writes_what_truncate_returns() {
    let mut rng = Rng::new(8);
    // One buffer reused across layers of growing and shrinking sizes, kernels and element types.
    let mut buffers = Default::default();
    for &(dims, groups) in &[
        ([64usize, 24usize, 3usize, 3usize], 1usize),
        ([8, 4, 3, 3], 2),
        ([32, 70, 3, 3], 1),
        ([12, 5, 5, 5], 1),
        ([6, 3, 1, 3], 3),
        ([4, 1, 3, 3], 1),
    ] {
        let w = to_f32(&rng.vec::<f64>(dims.iter().product()));
        let layer =
            Conv2dWeights::builder(w, dims).groups(groups).bias(to_f32(&rng.vec::<f64>(dims[0]))).build().unwrap();
        let f = Factorization::compute(&layer, &GramSvd::default()).unwrap();
        for r in 1..=layer.shape().max_rank() {
            for split in [Split::Pointwise, Split::Depthwise, Split::SquareRoot] {
                let options = Options::new(r).split(split).input_size(9, 9);
                let want = f.truncate(&options).unwrap();
                let report = f.truncate_into(&options, &mut buffers).unwrap();
                assert_eq!(report, want.report);
                assert_eq!(buffers.rank(), r);
                assert_eq!(buffers.depthwise(), want.depthwise.conv().weight());
                assert_eq!(buffers.pointwise(), want.pointwise.conv().weight());
                assert_eq!(buffers.depthwise_dims(), want.depthwise.conv().dims());
                assert_eq!(buffers.pointwise_dims(), want.pointwise.conv().dims());
                assert_eq!(buffers.to_decomposition(&layer, report).unwrap(), want);
            }
        }
    }
    // Buffers written from another layer are refused, not misread.
    let other = Conv2dWeights::new(vec![1.0f32; 2 * 2 * 9], [2, 2, 3, 3]).unwrap();
    let report =
        Factorization::compute(&other, &GramSvd::default()).unwrap().truncate(&Options::new(1)).unwrap().report;
    assert!(buffers.to_decomposition(&other, report).is_err());
    // A bad rank is an error, not a panic.
    let f = Factorization::compute(&other, &GramSvd::default()).unwrap();
    assert!(f.truncate_into(&Options::new(0), &mut buffers).is_err());
    assert!(f.truncate_into(&Options::new(10), &mut buffers).is_err());
}

#[test]
fn vgg_sized_layer_full_rank_exact_and_truncation_near_optimal() {
    // Many lane blocks and a partial one, through the streaming kernels.
    let mut rng = Rng::new(9);
    let dims = [72usize, 45usize, 3usize, 3usize];
    let w = to_f32(&rng.vec::<f64>(dims.iter().product()));
    check_layer(w, dims, 1);
}

/// `GramSvd` promises (`rejects_non_finite`) to fail, not to factor, on a NaN or an infinity:
/// the converter relies on it to skip its own scan (tests/io/errors.rs checks that path). The
/// failures themselves are checked for every backend that promises them, by
/// `harness::backend_contract` (tests/svd/backends.rs).
#[test]
fn gram_rejects_non_finite_input() {
    let backend = GramSvd::default();
    assert!(SvdBackend::<f32>::rejects_non_finite(&backend));
    assert!(!SvdBackend::<f32>::rejects_non_finite(&NalgebraSvd::default()));
}

/// CI runs the GramSvd tests again under `DAC_ISA=portable` and `DAC_ISA=avx2`: the kernels
/// follow the variable (never above what the CPU has).
#[test]
fn the_kernels_follow_dac_isa() {
    let isa = dac::svd::GramSvd::instruction_set();
    match std::env::var("DAC_ISA").as_deref() {
        Ok("portable") => assert_eq!(isa, "portable"),
        Ok("avx2") => assert!(isa == "avx2" || isa == "portable", "{isa}"),
        _ => assert!(["avx512", "avx2", "portable"].contains(&isa), "{isa}"),
    }
}
