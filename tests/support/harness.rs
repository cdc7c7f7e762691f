//! The checks every SVD backend and every decomposition scheme runs through.
//!
//! A [`Scheme`] drives one `dac::scheme` plug-in: the layer's factors at a given rank, a chain
//! of ordinary convolutions. [`schemes`] lists them all: today the paper's DAC ([`Dac`]) with
//! every backend of [`backends`], every [`Fit`] in [`FITS`] and every [`Split`]; spatial SVD,
//! channel SVD and Network Decoupling ([`Matrix`]) with the Frobenius and a correlated fit. A
//! new scheme is one more line in [`schemes`]. Each runs through:
//!
//! - [`exact_at_full_rank`]: at its maximum rank the chain of factors, run by
//!   `exec::reference`, reproduces the layer on every point of the geometry space
//!   ([`super::gen::cases`]);
//! - [`monotone_in_rank`]: the relative error, measured on the written factors in the norm the
//!   scheme minimises, never grows with the rank, agrees with the report and is ~0 at full rank;
//! - [`bad_input_is_an_error`]: rank 0 and ranks above the maximum are `Err`, never a panic.
//!
//! [`backend_contract`] checks an [`SvdBackend`] on its own against the definition.

use super::gen::{Case, Rng};
use super::measure::{correlation, reconstruct, weighted_energy};
use dac::exec::{reference, Tensor4};
use dac::scheme::{Factor, SchemeKind, Workspace};
use dac::svd::{GramSvd, NalgebraSvd, SvdBackend};
use dac::{Conv2dWeights, DepthwiseR, Error, Fit, Pointwise, Real, Split};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Every split of the singular values between the two halves.
pub const SPLITS: [Split; 3] = [Split::SquareRoot, Split::Pointwise, Split::Depthwise];

/// The fits every DAC scheme is run with: Frobenius (the paper's) and the correlated-input fit
/// at several correlations.
pub fn fits() -> Vec<Fit> {
    let mut v = vec![Fit::frobenius()];
    v.extend(FITS.iter().map(|&rho| Fit::correlated(rho).unwrap()));
    v
}

/// The correlations of the correlated fits in [`fits`].
pub const FITS: [f64; 4] = [0.0, 0.3, 0.7, 0.9];

/// Every SVD backend.
pub fn backends<T: Real>() -> Vec<Box<dyn SvdBackend<T>>>
where
    NalgebraSvd: SvdBackend<T>,
    GramSvd: SvdBackend<T>,
{
    vec![Box::new(NalgebraSvd::default()), Box::new(GramSvd::default())]
}

/// A factorization scheme as the harness drives it: a `dac::scheme::Scheme` plug-in with the
/// checks and measures that belong to it.
pub trait Scheme<T: Real> {
    /// For messages.
    fn name(&self) -> String;
    /// The factors at `rank` (a chain of convolutions) and the relative error the scheme reports.
    fn factors(&self, layer: &Conv2dWeights<T>, rank: usize) -> dac::Result<(Vec<Factor<T>>, f64)>;
    /// The layer's maximum rank under this scheme.
    fn max_rank(&self, layer: &Conv2dWeights<T>) -> usize;
    /// The weight the factors represent (OIHW, f64), computed by the tests' own code.
    fn reconstruct(&self, layer: &Conv2dWeights<T>, factors: &[Factor<T>]) -> Vec<f64>;
    /// The tap metric `R` (taps x taps) whose weighted error the scheme minimises for `layer`;
    /// `None` for the plain Frobenius error.
    fn metric(&self, layer: &Conv2dWeights<T>) -> Option<Vec<f64>>;
    /// Full-rank tolerance: max |dense − factors| over max |dense|.
    fn full_rank_tolerance(&self) -> f64;
    /// Scheme-specific checks of the factors at `rank` (structure, geometry).
    fn check(&self, _layer: &Conv2dWeights<T>, _factors: &[Factor<T>], _rank: usize) -> Result<(), TestCaseError> {
        Ok(())
    }
}

/// Every scheme: a new one is one more line here.
pub fn schemes<T: Real>() -> Vec<Box<dyn Scheme<T>>>
where
    NalgebraSvd: SvdBackend<T>,
    GramSvd: SvdBackend<T>,
{
    let mut v: Vec<Box<dyn Scheme<T>>> = Vec::new();
    for fit in fits() {
        for split in SPLITS {
            for backend in backends::<T>() {
                v.push(Box::new(Dac { backend, fit, split }));
            }
        }
    }
    for kind in [SchemeKind::Spatial, SchemeKind::Channel, SchemeKind::Decoupled] {
        for fit in [Fit::frobenius(), Fit::correlated(0.7).unwrap()] {
            v.push(Box::new(Matrix { kind, fit }));
        }
    }
    v
}

/// Spatial SVD, channel SVD and Network Decoupling through their plug-ins, with a fit.
pub struct Matrix {
    pub kind: SchemeKind,
    pub fit: Fit,
}

impl Matrix {
    fn plugin<T: Real>(&self) -> Box<dyn dac::scheme::Scheme<T>> {
        match self.kind {
            SchemeKind::Spatial => Box::new(dac::scheme::Spatial::new().fit(self.fit)),
            SchemeKind::Channel => Box::new(dac::scheme::Channel::new().fit(self.fit)),
            _ => Box::new(dac::scheme::Decoupled::new().fit(self.fit)),
        }
    }
}

impl<T: Real> Scheme<T> for Matrix {
    fn name(&self) -> String {
        format!("{}/{:?}/{}", self.kind, self.fit, T::NAME)
    }

    fn factors(&self, layer: &Conv2dWeights<T>, rank: usize) -> dac::Result<(Vec<Factor<T>>, f64)> {
        let factored = self.plugin::<T>().factor(layer)?;
        let factors = factored.factors(rank, &mut Workspace::new())?;
        Ok((factors, factored.errors().relative_error(rank)))
    }

    fn max_rank(&self, layer: &Conv2dWeights<T>) -> usize {
        self.kind.max_rank(&layer.shape())
    }

    /// The documented compositions, computed here from the written factors.
    fn reconstruct(&self, layer: &Conv2dWeights<T>, factors: &[Factor<T>]) -> Vec<f64> {
        let f = |k: usize| -> Vec<f64> { factors[k].conv.weight().iter().map(|v| v.to_f64_exact()).collect() };
        let [n_out, cg, kh, kw] = layer.dims();
        let ng = layer.shape().out_per_group();
        let mut w = vec![0.0; n_out * cg * kh * kw];
        match self.kind {
            SchemeKind::Spatial => {
                let (v, h, r) = (f(0), f(1), factors[1].conv.dims()[1]);
                for n in 0..n_out {
                    for c in 0..cg {
                        for y in 0..kh {
                            for x in 0..kw {
                                w[((n * cg + c) * kh + y) * kw + x] = (0..r)
                                    .map(|j| v[((n / ng * r + j) * cg + c) * kh + y] * h[(n * r + j) * kw + x])
                                    .sum();
                            }
                        }
                    }
                }
            }
            SchemeKind::Channel => {
                let (k, p, r) = (f(0), f(1), factors[1].conv.dims()[1]);
                let row = cg * kh * kw;
                for n in 0..n_out {
                    for i in 0..row {
                        w[n * row + i] = (0..r).map(|j| k[(n / ng * r + j) * row + i] * p[n * r + j]).sum();
                    }
                }
            }
            _ => {
                let (e, d, s, t) = (f(0), f(1), f(2), factors[2].conv.dims()[1]);
                let taps = kh * kw;
                for n in 0..n_out {
                    for c in 0..cg {
                        for tap in 0..taps {
                            w[(n * cg + c) * taps + tap] = (0..t)
                                .map(|j| e[(n * t + j) * cg + c] * d[(n * t + j) * taps + tap] * s[n * t + j])
                                .sum();
                        }
                    }
                }
            }
        }
        w
    }

    fn metric(&self, layer: &Conv2dWeights<T>) -> Option<Vec<f64>> {
        let [_, _, kh, kw] = layer.dims();
        self.fit.rho().map(|rho| correlation(kh, kw, layer.geometry().dilation, rho))
    }

    fn full_rank_tolerance(&self) -> f64 {
        if T::NAME == "f32" {
            2e-4
        } else {
            1e-9
        }
    }

    /// The factors' shapes and geometries are the documented ones, and the bias is on the last.
    fn check(&self, layer: &Conv2dWeights<T>, factors: &[Factor<T>], rank: usize) -> Result<(), TestCaseError> {
        let specs = self.kind.factor_specs(&layer.shape(), layer.geometry(), rank);
        prop_assert_eq!(factors.len(), specs.len());
        for (k, (f, spec)) in factors.iter().zip(&specs).enumerate() {
            prop_assert_eq!(f.role, spec.role);
            prop_assert_eq!(f.conv.dims(), spec.dims);
            prop_assert_eq!(*f.conv.geometry(), spec.geometry);
            let want = if k + 1 == factors.len() { layer.bias() } else { None };
            prop_assert_eq!(f.conv.bias(), want);
        }
        Ok(())
    }
}

/// The paper's DAC through its plug-in, `dac::scheme::Dac`, with a backend, a fit and a split.
pub struct Dac<T: Real> {
    pub backend: Box<dyn SvdBackend<T>>,
    pub fit: Fit,
    pub split: Split,
}

impl<T: Real> Scheme<T> for Dac<T> {
    fn name(&self) -> String {
        format!("dac/{}/{:?}/{:?}/{}", self.backend.name(), self.fit, self.split, T::NAME)
    }

    fn factors(&self, layer: &Conv2dWeights<T>, rank: usize) -> dac::Result<(Vec<Factor<T>>, f64)> {
        use dac::scheme::Scheme as _;
        let scheme = dac::scheme::Dac::new(self.backend.as_ref()).fit(self.fit).split(self.split);
        let factored = scheme.factor(layer)?;
        let factors = factored.factors(rank, &mut Workspace::new())?;
        Ok((factors, factored.errors().relative_error(rank)))
    }

    fn max_rank(&self, layer: &Conv2dWeights<T>) -> usize {
        layer.shape().max_rank()
    }

    fn reconstruct(&self, layer: &Conv2dWeights<T>, factors: &[Factor<T>]) -> Vec<f64> {
        let rank = factors[0].conv.dims()[0] / layer.shape().in_channels;
        let dw = DepthwiseR::from_conv(factors[0].conv.clone(), rank).unwrap();
        let pw = Pointwise::from_conv(factors[1].conv.clone()).unwrap();
        reconstruct(layer, &dw, &pw)
    }

    fn metric(&self, layer: &Conv2dWeights<T>) -> Option<Vec<f64>> {
        let [_, _, kh, kw] = layer.dims();
        self.fit.rho().map(|rho| correlation(kh, kw, layer.geometry().dilation, rho))
    }

    fn full_rank_tolerance(&self) -> f64 {
        let f32 = T::NAME == "f32";
        // The nalgebra Frobenius pair was always held to 1e-4 / 1e-10; the others to the
        // correlated fit's 2e-4 / 1e-9.
        match (self.fit == Fit::frobenius() && self.backend.name() == "nalgebra", f32) {
            (true, true) => 1e-4,
            (true, false) => 1e-10,
            (false, true) => 2e-4,
            (false, false) => 1e-9,
        }
    }

    /// The two factors' documented shapes and geometry, and the bias on the last.
    fn check(&self, layer: &Conv2dWeights<T>, factors: &[Factor<T>], rank: usize) -> Result<(), TestCaseError> {
        let [_, cg, kh, kw] = layer.dims();
        let geometry = layer.geometry();
        prop_assert_eq!(factors.len(), 2);
        prop_assert_eq!((factors[0].role, factors[1].role), ("depthwise", "pointwise"));
        let (dw, pw) = (&factors[0].conv, &factors[1].conv);
        prop_assert_eq!(dw.dims(), [layer.shape().in_channels * rank, 1, kh, kw]);
        prop_assert_eq!(dw.geometry().groups, layer.shape().in_channels);
        prop_assert_eq!(dw.geometry().stride, geometry.stride);
        prop_assert_eq!(dw.geometry().dilation, geometry.dilation);
        prop_assert_eq!(dw.geometry().padding, geometry.padding);
        prop_assert!(dw.bias().is_none());
        prop_assert_eq!(pw.dims(), [layer.shape().out_channels, cg * rank, 1, 1]);
        prop_assert_eq!(pw.geometry().groups, geometry.groups);
        prop_assert_eq!(pw.bias(), layer.bias());
        Ok(())
    }
}

/// The factors applied in order by the reference loop nest.
pub fn run_chain<T: Real>(input: &Tensor4<T>, factors: &[Factor<T>]) -> Tensor4<T> {
    let mut x = reference::conv2d(input, &factors[0].conv).unwrap();
    for f in &factors[1..] {
        x = reference::conv2d(&x, &f.conv).unwrap();
    }
    x
}

/// At its maximum rank the scheme's factors compute what the layer computes, by the reference
/// loop nest, on `case`'s layer and input.
pub fn exact_at_full_rank<T: Real>(scheme: &dyn Scheme<T>, case: &Case) -> Result<(), TestCaseError> {
    let (layer, input) = case.build::<T>();
    let dense = reference::conv2d(&input, &layer).unwrap();
    let scale = dense.max_abs().to_f64_exact().max(f64::MIN_POSITIVE);
    let full = scheme.max_rank(&layer);
    let (factors, reported) = scheme.factors(&layer, full).unwrap();
    scheme.check(&layer, &factors, full)?;
    prop_assert!(reported.abs() < 1e-6, "{}: reported error {reported} at full rank", scheme.name());
    let chain = run_chain(&input, &factors);
    let err = dense.max_abs_diff(&chain).unwrap().to_f64_exact();
    let tolerance = scheme.full_rank_tolerance();
    prop_assert!(err <= tolerance * scale, "{}: max diff {err:e} vs scale {scale:e}", scheme.name());
    Ok(())
}

/// The relative error of every rank, measured on the written factors (reconstructed in f64 by
/// the tests' own code) in the scheme's metric: non-increasing in the rank, equal to the
/// report's, and ~0 at full rank.
pub fn monotone_in_rank<T: Real>(scheme: &dyn Scheme<T>, layer: &Conv2dWeights<T>) -> Result<(), TestCaseError> {
    let f32 = T::NAME == "f32";
    // Slack for rounding: of the measured error between ranks, and of the report against it.
    let (slack, agree, full_tol) = if f32 { (1e-4, 1e-3, 1e-4) } else { (1e-9, 1e-7, 1e-9) };
    let taps = layer.shape().taps();
    let w: Vec<f64> = layer.weight().iter().map(|v| v.to_f64_exact()).collect();
    let metric = scheme.metric(layer);
    let energy = |d: &[f64]| match &metric {
        Some(r) => weighted_energy(d, r, taps),
        None => d.iter().map(|v| v * v).sum(),
    };
    let total = energy(&w);
    let k = scheme.max_rank(layer);
    let mut last = f64::INFINITY;
    for rank in 1..=k {
        let (factors, reported) = scheme.factors(layer, rank).unwrap();
        scheme.check(layer, &factors, rank)?;
        let diff: Vec<f64> = scheme.reconstruct(layer, &factors).iter().zip(&w).map(|(a, b)| b - a).collect();
        let err = if total > 0.0 { (energy(&diff) / total).max(0.0).sqrt() } else { 0.0 };
        let name = scheme.name();
        prop_assert!(err.is_finite(), "{name} rank {rank}: error {err}");
        prop_assert!(err <= last + slack, "{name}: error grew from {last} to {err} at rank {rank}");
        prop_assert!((reported - err).abs() <= agree * err.max(1e-3), "{name} rank {rank}: report {reported} vs {err}");
        if rank == k {
            prop_assert!(err <= full_tol, "{name}: full rank {rank} error {err}");
        }
        last = err;
    }
    Ok(())
}

/// Rank 0 and ranks above the maximum are [`Error::InvalidRank`], never a panic; so is every
/// rank of a layer whose weights overflow once squared (an error or a result, not a panic).
pub fn bad_input_is_an_error<T: Real>(scheme: &dyn Scheme<T>, layer: &Conv2dWeights<T>) {
    let name = scheme.name();
    let k = scheme.max_rank(layer);
    for rank in [0, k + 1, k + 7, usize::MAX] {
        let got = catch_unwind(AssertUnwindSafe(|| scheme.factors(layer, rank)));
        let got = got.unwrap_or_else(|_| panic!("{name}: rank {rank} panicked"));
        let e = got.err().unwrap_or_else(|| panic!("{name}: rank {rank} of max {k} accepted"));
        assert!(matches!(e, Error::InvalidRank { .. }), "{name} rank {rank}: {e:?}");
        assert!(e.to_string().contains(&format!("1..={k}")), "{name} rank {rank}: {e}");
    }
    let huge = T::from_f64_lossy(if T::NAME == "f32" { 3e38 } else { 1e300 });
    let big = Conv2dWeights::builder(vec![huge; layer.weight().len()], layer.dims())
        .geometry(*layer.geometry())
        .build()
        .unwrap();
    for rank in 1..=k {
        let got = catch_unwind(AssertUnwindSafe(|| scheme.factors(&big, rank).map(|_| ())));
        assert!(got.is_ok(), "{name}: rank {rank} of overflowing weights panicked");
    }
}

/// An [`SvdBackend`] against the definition on random matrices of `shapes`: singular values
/// non-negative and descending, `V` rows orthonormal, `‖M v_j‖ = s_j`, `Σ s² = ‖M‖²`; and bad
/// input (buffers of the wrong length, non-finite values where the backend promises to reject
/// them) is an error, never a panic.
pub fn backend_contract<T: Real>(backend: &dyn SvdBackend<T>, shapes: &[(usize, usize)], seed: u64) {
    let name = format!("{}/{}", backend.name(), T::NAME);
    // (orthonormality, ‖M v_j‖ − s_j over s_1, Σ s² − ‖M‖² over ‖M‖²)
    let (ortho, norm_tol, sum_tol) = if T::NAME == "f32" { (1e-5, 1e-5, 1e-5) } else { (1e-12, 1e-7, 1e-10) };
    let mut rng = Rng::new(seed);
    for &(rows, cols) in shapes {
        let m: Vec<T> = rng.vec(rows * cols);
        let k = rows.min(cols);
        let (mut s, mut vt) = (vec![T::zero(); k], vec![T::zero(); k * cols]);
        backend.right_factors(&m, rows, cols, &mut s, &mut vt).unwrap();
        let m: Vec<f64> = m.iter().map(|v| v.to_f64_exact()).collect();
        let s: Vec<f64> = s.iter().map(|v| v.to_f64_exact()).collect();
        let vt: Vec<f64> = vt.iter().map(|v| v.to_f64_exact()).collect();
        for j in 0..k {
            assert!(s[j] >= 0.0 && (j == 0 || s[j] <= s[j - 1]), "{name} {rows}x{cols}: s = {s:?}");
        }
        for a in 0..k {
            for b in 0..k {
                let dot: f64 = (0..cols).map(|t| vt[a * cols + t] * vt[b * cols + t]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < ortho, "{name} {rows}x{cols}: <v{a}, v{b}> = {dot}");
            }
        }
        for j in 0..k {
            let norm: f64 = m
                .chunks(cols)
                .map(|row| row.iter().zip(&vt[j * cols..(j + 1) * cols]).map(|(x, v)| x * v).sum::<f64>().powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((norm - s[j]).abs() <= norm_tol * s[0], "{name} {rows}x{cols}: ‖M v{j}‖ {norm} vs s {}", s[j]);
        }
        let (frob, sum): (f64, f64) = (m.iter().map(|v| v * v).sum(), s.iter().map(|v| v * v).sum());
        assert!((frob - sum).abs() <= sum_tol * frob, "{name} {rows}x{cols}: ‖M‖² {frob} vs Σ s² {sum}");
    }
    // Wrong buffer lengths through `factor_layer`.
    let layer = Conv2dWeights::<T>::new(rng.vec(8 * 2 * 9), [8, 2, 3, 3]).unwrap();
    // (16, 144) fits: one short or long buffer, or none.
    for (s_len, vt_len) in [(2 * 8 - 1, 2 * 8 * 9), (2 * 8 + 1, 2 * 8 * 9 + 9), (2 * 8, 2 * 8 * 9 + 1), (0, 0)] {
        let (mut s, mut vt) = (vec![T::zero(); s_len], vec![T::zero(); vt_len]);
        let got = catch_unwind(AssertUnwindSafe(|| backend.factor_layer(&layer, &mut s, &mut vt)));
        let got = got.unwrap_or_else(|_| panic!("{name}: buffers {s_len}, {vt_len} panicked"));
        assert!(matches!(got, Err(Error::LengthMismatch { .. })), "{name}: buffers {s_len}, {vt_len}: {got:?}");
    }
    // Non-finite input, where the backend promises to reject it.
    if backend.rejects_non_finite() {
        for &(rows, cols) in shapes {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                for at in [0, rows * cols / 2, rows * cols - 1] {
                    let k = rows.min(cols);
                    let mut m: Vec<T> = rng.vec(rows * cols);
                    m[at] = T::from_f64_lossy(bad);
                    let (mut s, mut v) = (vec![T::zero(); k], vec![T::zero(); k * cols]);
                    let got = catch_unwind(AssertUnwindSafe(|| backend.right_factors(&m, rows, cols, &mut s, &mut v)));
                    let got = got.unwrap_or_else(|_| panic!("{name} {rows}x{cols}: {bad} at {at} panicked"));
                    assert!(got.is_err(), "{name} {rows}x{cols}: {bad} at {at} accepted");
                }
            }
        }
    }
}
