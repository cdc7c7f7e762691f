//! [`Factorization`]: every channel's SVD once, and the pair written at any rank.

use super::{Decomposition, DepthwiseR, Options, Pointwise, Report, Spectrum, Split};
use crate::cost;
use crate::error::{Error, Result};
use crate::fit::Fit;
use crate::scalar::Real;
use crate::svd::SvdBackend;
use crate::weights::{Conv2dWeights, Padding};
use rayon::prelude::*;

/// Every input channel's SVD, computed once; truncate it to any rank without refactoring.
///
/// ```
/// use dac::{Conv2dWeights, Factorization, Options, svd::NalgebraSvd};
/// let w: Vec<f64> = (0..4 * 2 * 3 * 3).map(|i| (i as f64 * 0.37).sin()).collect();
/// let layer = Conv2dWeights::new(w, [4, 2, 3, 3])?;
/// let f = Factorization::compute(&layer, &NalgebraSvd::default())?;
/// let r1 = f.truncate(&Options::new(1))?;
/// let r4 = f.truncate(&Options::new(4))?;
/// assert!(r1.report.relative_error > r4.report.relative_error);
/// # Ok::<(), dac::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Factorization<'a, T> {
    layer: &'a Conv2dWeights<T>,
    singular_values: Vec<T>,
    /// Per channel, `k` rows of `kh·kw` values: the vectors `p_j` the pointwise side projects
    /// the original weights onto (`P[n, j] = (M_c p_j)[n]`). For the Frobenius fit the right
    /// singular vectors `v_j`; for a correlated fit `R^{1/2} v'_j`.
    vt: Vec<T>,
    /// The depthwise rows `d_j`, same layout as `vt`, when they differ from it (a correlated
    /// fit: `R^{-1/2} v'_j`); `None` means the depthwise rows are `vt`'s.
    depthwise_rows: Option<Vec<T>>,
    fit: Fit,
}

impl<'a, T: Real> Factorization<'a, T> {
    /// Factors every input channel's matrix with `backend`, in parallel over channels: the
    /// Frobenius fit ([`Fit::frobenius`], the DAC paper's). Same as
    /// [`compute_fitted`](Self::compute_fitted) with [`Fit::frobenius`].
    ///
    /// # Errors
    /// [`Error::Svd`] naming the channel whose SVD failed.
    pub fn compute<B: SvdBackend<T> + ?Sized>(layer: &'a Conv2dWeights<T>, backend: &B) -> Result<Self> {
        let shape = layer.shape();
        let (taps, k) = (shape.taps(), shape.max_rank());
        let mut singular_values = vec![T::zero(); shape.in_channels * k];
        let mut vt = vec![T::zero(); shape.in_channels * k * taps];
        backend.factor_layer(layer, &mut singular_values, &mut vt)?;
        Ok(Self { layer, singular_values, vt, depthwise_rows: None, fit: Fit::frobenius() })
    }

    /// Factors every input channel's matrix for the rank-`r` approximations `fit` asks for
    /// (see [`Fit`]). With [`Fit::frobenius`] this is exactly [`compute`](Self::compute).
    ///
    /// With [`Fit::correlated`]`(ρ)`, each channel's weighted matrix `M_c R^{1/2} = U' S' V'ᵀ`
    /// is factored by `backend` (`R` the layer's tap correlation, from its kernel size and
    /// dilation); the [`spectrum`](Self::spectrum) is `S'`, the depthwise kernels of a
    /// truncation are the rows of `V'_rᵀ R^{-1/2}` and the pointwise weight is
    /// `M_c R^{1/2} V'_r`. Costs one more pass over the weights than `compute`.
    ///
    /// # Errors
    /// As [`compute`](Self::compute); [`Error::NonFinite`] when a weight is not finite or the
    /// weighted weights overflow the element type.
    pub fn compute_fitted<B: SvdBackend<T> + ?Sized>(
        layer: &'a Conv2dWeights<T>,
        backend: &B,
        fit: Fit,
    ) -> Result<Self> {
        let Some(rho) = fit.rho() else {
            return Self::compute(layer, backend);
        };
        let shape = layer.shape();
        let (taps, k) = (shape.taps(), shape.max_rank());
        let (half, inv_half) = crate::fit::correlation_roots(shape.kh, shape.kw, layer.geometry().dilation, rho);
        // Every (n, c) tap row w becomes w R^{1/2} (R^{1/2} is symmetric), in f64 rounded once.
        let mut weighted = vec![T::zero(); layer.weight().len()];
        weighted.par_chunks_mut(taps).zip(layer.weight().par_chunks(taps)).for_each(|(out, w)| {
            for (b, o) in out.iter_mut().enumerate() {
                let acc: f64 = w.iter().enumerate().map(|(a, &x)| x.to_f64_exact() * half[a * taps + b]).sum();
                *o = T::from_f64_lossy(acc);
            }
        });
        if !weighted.iter().all(|v| v.is_finite()) {
            // A NaN or an infinity in the weights themselves is named where it is; otherwise the
            // weighting overflowed the element type.
            crate::weights::check_finite(layer.name(), "weight", layer.weight())?;
            crate::weights::check_finite(
                &format!("{} (weighted for the correlated fit)", layer.name()),
                "weight",
                &weighted,
            )?;
        }
        let weighted = Conv2dWeights::builder(weighted, layer.dims())
            .name(layer.name())
            .groups(shape.groups)
            .defer_weight_finiteness()
            .build()?;
        let mut singular_values = vec![T::zero(); shape.in_channels * k];
        let mut v_weighted = vec![T::zero(); shape.in_channels * k * taps];
        backend.factor_layer(&weighted, &mut singular_values, &mut v_weighted)?;
        drop(weighted);
        // Projection vectors p_j = R^{1/2} v'_j (the pointwise side is M p_j = u'_j s'_j) and
        // depthwise rows d_j = R^{-1/2} v'_j, so that Σ_j (M p_j) d_jᵀ = M'_r R^{-1/2}.
        let mut vt = vec![T::zero(); v_weighted.len()];
        let mut rows = vec![T::zero(); v_weighted.len()];
        vt.par_chunks_mut(taps).zip(rows.par_chunks_mut(taps)).zip(v_weighted.par_chunks(taps)).for_each(
            |((p, d), v)| {
                for a in 0..taps {
                    let (mut pa, mut da) = (0.0f64, 0.0f64);
                    for (b, &vb) in v.iter().enumerate() {
                        let vb = vb.to_f64_exact();
                        pa += half[a * taps + b] * vb;
                        da += inv_half[a * taps + b] * vb;
                    }
                    p[a] = T::from_f64_lossy(pa);
                    d[a] = T::from_f64_lossy(da);
                }
            },
        );
        Ok(Self { layer, singular_values, vt, depthwise_rows: Some(rows), fit })
    }

    /// The fit this factorisation was computed for.
    pub fn fit(&self) -> Fit {
        self.fit
    }

    /// The layer this factorisation belongs to.
    pub fn layer(&self) -> &Conv2dWeights<T> {
        self.layer
    }

    /// Every channel's singular values, in `f64`: those of `M_c` for the Frobenius fit, those of
    /// the weighted `M_c R^{1/2}` for a correlated one (see [`Fit`]).
    pub fn spectrum(&self) -> Spectrum {
        Spectrum { shape: self.layer.shape(), values: self.singular_values.iter().map(|v| v.to_f64_exact()).collect() }
    }

    /// Writes the pair at `options.rank` and reports its error and costs.
    ///
    /// Allocates both weights; [`truncate_into`](Self::truncate_into) writes them into reusable
    /// buffers instead (faster when converting many layers: fresh memory costs page faults).
    ///
    /// # Errors
    /// [`Error::InvalidRank`] for a rank of 0 or above the maximum; [`Error::EmptyOutput`] or
    /// [`Error::Overflow`] from the cost of `options.input_size`; [`Error::NonFinite`] if a
    /// factor overflows the element type.
    pub fn truncate(&self, options: &Options) -> Result<Decomposition<T>> {
        let layer = self.layer;
        let shape = layer.shape();
        let (cg, taps, r) = (shape.in_per_group(), shape.taps(), options.rank);
        self.check_rank(r)?;
        // `vec!` of zeros comes from the allocator's zeroed pages: touched once, by the writer.
        let mut dw = vec![T::zero(); shape.in_channels * r * taps];
        let mut pw = vec![T::zero(); shape.out_channels * cg * r];
        let mut scratch = Vec::new();
        self.write_pair(options, &mut dw, &mut pw, &mut scratch, true)?;
        let report = self.report(options)?;
        build_pair(layer, dw, pw, r, report)
    }

    /// [`truncate`](Self::truncate) into caller-owned buffers: writes the depthwise and pointwise
    /// weights at `options.rank` into `buffers` (resized to fit; no allocation or page fault
    /// when they already have the capacity) and returns the report.
    ///
    /// The values written are exactly those [`truncate`](Self::truncate) returns; the geometry
    /// of the pair (stride, padding, groups, the bias on the pointwise side) is the one documented
    /// on [`DepthwiseR`] and [`Pointwise`], and [`PairBuffers::to_decomposition`] builds the
    /// validated layers when needed.
    ///
    /// ```
    /// use dac::{svd::GramSvd, Conv2dWeights, Factorization, Options, PairBuffers};
    /// let layers: Vec<Conv2dWeights<f32>> = (1..4)
    ///     .map(|s| Conv2dWeights::new((0..16 * 8 * 9).map(|i| ((i * s) as f32 * 0.1).sin()).collect(), [16, 8, 3, 3]))
    ///     .collect::<Result<_, _>>()?;
    /// let mut out = PairBuffers::new(); // reused for every layer
    /// for layer in &layers {
    ///     let f = Factorization::compute(layer, &GramSvd::default())?;
    ///     let report = f.truncate_into(&Options::new(3), &mut out)?;
    ///     assert_eq!(out.depthwise_dims(), [8 * 3, 1, 3, 3]);
    ///     assert_eq!(out.pointwise_dims(), [16, 8 * 3, 1, 1]);
    ///     assert_eq!(out.pointwise().len(), 16 * 8 * 3);
    ///     assert!(report.relative_error < 1.0);
    ///     // ... write out.depthwise() and out.pointwise() somewhere ...
    /// }
    /// # Ok::<(), dac::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`truncate`](Self::truncate). On error the buffers' contents are unspecified.
    pub fn truncate_into(&self, options: &Options, buffers: &mut PairBuffers<T>) -> Result<Report> {
        let shape = self.layer.shape();
        let (cg, taps, r) = (shape.in_per_group(), shape.taps(), options.rank);
        self.check_rank(r)?;
        buffers.depthwise.resize(shape.in_channels * r * taps, T::zero());
        buffers.pointwise.resize(shape.out_channels * cg * r, T::zero());
        buffers.depthwise_dims = [shape.in_channels * r, 1, shape.kh, shape.kw];
        buffers.pointwise_dims = [shape.out_channels, cg * r, 1, 1];
        buffers.rank = r;
        let PairBuffers { depthwise, pointwise, scratch, .. } = buffers;
        self.write_pair(options, depthwise, pointwise, scratch, true)?;
        self.report(options)
    }

    /// The pair's weights at `options.rank` into `dw` and `pw` (resized), proven finite.
    pub(crate) fn write_pair_vecs(
        &self,
        options: &Options,
        dw: &mut Vec<T>,
        pw: &mut Vec<T>,
        scratch: &mut crate::kernels::pair::Scratch,
    ) -> Result<()> {
        let shape = self.layer.shape();
        let r = options.rank;
        self.check_rank(r)?;
        dw.resize(shape.in_channels * r * shape.taps(), T::zero());
        pw.resize(shape.out_channels * shape.in_per_group() * r, T::zero());
        self.write_pair(options, dw, pw, scratch, true)
    }

    /// Every channel's `s_j²·(v_jᵀ R v_j)` for its `max_rank` components (`R` the tap
    /// correlation at ρ = [`Fit::DEFAULT_RHO`] and the layer's dilation): the output energy of
    /// each component for spatially correlated inputs. For a correlated fit, whose spectrum
    /// already measures output energy under that model, `s'_j²`.
    pub(crate) fn correlated_energies(&self) -> Vec<f64> {
        let shape = self.layer.shape();
        let (taps, k) = (shape.taps(), shape.max_rank());
        let squares = self.singular_values.iter().map(|s| s.to_f64_exact() * s.to_f64_exact());
        if self.fit.rho().is_some() {
            return squares.collect();
        }
        let corr = crate::fit::tap_correlation(shape.kh, shape.kw, self.layer.geometry().dilation, Fit::DEFAULT_RHO);
        squares
            .zip(self.vt.chunks(taps))
            .map(|(s2, v)| {
                let mut gain = 0.0;
                for a in 0..taps {
                    let va = v[a].to_f64_exact();
                    gain += va * (0..taps).map(|b| corr[(a, b)] * v[b].to_f64_exact()).sum::<f64>();
                }
                s2 * gain
            })
            .take(shape.in_channels * k)
            .collect()
    }

    fn check_rank(&self, r: usize) -> Result<()> {
        let k = self.layer.shape().max_rank();
        if r == 0 || r > k {
            return Err(Error::InvalidRank { layer: self.layer.name().to_string(), rank: r, max: k });
        }
        Ok(())
    }

    /// The report of a truncation at `options.rank`.
    fn report(&self, options: &Options) -> Result<Report> {
        let layer = self.layer;
        let shape = layer.shape();
        let r = options.rank;
        let spectrum = self.spectrum();
        let output_size = match options.input_size {
            Some(hw) => layer.output_size(hw.0, hw.1)?,
            None => (1, 1),
        };
        let has_bias = layer.bias().is_some();
        Ok(Report {
            layer: layer.name().to_string(),
            rank: r,
            max_rank: shape.max_rank(),
            split: options.split,
            fit: self.fit,
            retained_energy: spectrum.retained_energy(r),
            relative_error: spectrum.optimal_relative_error(r),
            spectrum,
            output_size,
            before: cost::dense(layer.name(), &shape, has_bias, output_size)?,
            after: cost::pair(layer.name(), &shape, has_bias, r, output_size)?,
        })
    }

    /// Writes the depthwise (`dw`, `C·r·taps`) and pointwise (`pw`, `N·Cg·r`) weights at a
    /// checked rank.
    ///
    /// `fast` picks the 3x3 kernel when it applies; `false` forces the reference loop (tests).
    fn write_pair(
        &self,
        options: &Options,
        dw: &mut [T],
        pw: &mut [T],
        scratch: &mut crate::kernels::pair::Scratch,
        fast: bool,
    ) -> Result<()> {
        let layer = self.layer;
        let shape = layer.shape();
        let (ng, taps, k) = (shape.out_per_group(), shape.taps(), shape.max_rank());
        let r = options.rank;
        let c_total = shape.in_channels;
        let mut pw_scales = vec![0.0f64; c_total * r];
        let rows = self.depthwise_rows.as_deref().unwrap_or(&self.vt);
        for c in 0..c_total {
            let s = &self.singular_values[c * k..c * k + r];
            let s_max = self.singular_values[c * k].to_f64_exact();
            for (j, &sj) in s.iter().enumerate() {
                let v = &rows[(c * k + j) * taps..(c * k + j + 1) * taps];
                let (dw_scale, pw_scale) = split_scales(options.split, sj.to_f64_exact(), s_max, ng.max(taps));
                for (t, &vt) in v.iter().enumerate() {
                    dw[(c * r + j) * taps + t] = T::from_f64_lossy(vt.to_f64_exact() * dw_scale);
                }
                pw_scales[c * r + j] = pw_scale;
            }
        }
        crate::weights::check_finite(&format!("{}.depthwise", layer.name()), "weight", dw)?;
        let finite = if fast && taps == 9 {
            let (ng, cg) = (shape.out_per_group(), shape.in_per_group());
            crate::kernels::pair::pointwise9(layer.weight(), ng, cg, &self.vt, k, r, &pw_scales, pw, scratch)
        } else {
            pointwise_weight(layer, &self.vt, k, r, &pw_scales, pw)
        };
        if !finite {
            crate::weights::check_finite(&format!("{}.pointwise", layer.name()), "weight", pw)?;
        }
        Ok(())
    }
}

/// Reusable destination of [`Factorization::truncate_into`]: the depthwise and pointwise
/// weights of the last truncation, plus scratch space, kept between calls so that converting
/// layer after layer allocates (and page-faults) nothing once the buffers are large enough.
///
/// After a successful `truncate_into`, [`depthwise`](Self::depthwise) is the `[C·r, 1, kh, kw]`
/// weight and [`pointwise`](Self::pointwise) the `[N, Cg·r, 1, 1]` weight, both OIHW, exactly as
/// [`Factorization::truncate`] would return them.
#[derive(Debug, Clone, Default)]
pub struct PairBuffers<T> {
    depthwise: Vec<T>,
    pointwise: Vec<T>,
    depthwise_dims: [usize; 4],
    pointwise_dims: [usize; 4],
    rank: usize,
    scratch: crate::kernels::pair::Scratch,
}

impl<T: Real> PairBuffers<T> {
    /// Empty buffers; the first [`truncate_into`](Factorization::truncate_into) sizes them.
    pub fn new() -> Self {
        Self {
            depthwise: Vec::new(),
            pointwise: Vec::new(),
            depthwise_dims: [0; 4],
            pointwise_dims: [0; 4],
            rank: 0,
            scratch: Vec::new(),
        }
    }
    /// The depthwise weight written last, `[C·r, 1, kh, kw]` (empty before the first call).
    pub fn depthwise(&self) -> &[T] {
        &self.depthwise
    }
    /// The pointwise weight written last, `[N, Cg·r, 1, 1]` (empty before the first call).
    pub fn pointwise(&self) -> &[T] {
        &self.pointwise
    }
    /// Shape of [`depthwise`](Self::depthwise) (all zero before the first call).
    pub fn depthwise_dims(&self) -> [usize; 4] {
        self.depthwise_dims
    }
    /// Shape of [`pointwise`](Self::pointwise) (all zero before the first call).
    pub fn pointwise_dims(&self) -> [usize; 4] {
        self.pointwise_dims
    }
    /// The rank written last (0 before the first call).
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// Copies the weights into the validated pair [`Factorization::truncate`] returns, with the
    /// geometry and bias of `layer` (the layer the buffers were last written from).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the buffers do not hold a pair of `layer`'s shape
    /// (nothing written yet, or written from another layer).
    pub fn to_decomposition(&self, layer: &Conv2dWeights<T>, report: Report) -> Result<Decomposition<T>> {
        let shape = layer.shape();
        let r = self.rank;
        if r == 0
            || self.depthwise_dims != [shape.in_channels * r, 1, shape.kh, shape.kw]
            || self.pointwise_dims != [shape.out_channels, shape.in_per_group() * r, 1, 1]
        {
            return Err(Error::InvalidParameter {
                context: format!("layer `{}`", layer.name()),
                what: "pair buffer rank",
                value: r as f64,
                expected: "buffers last written by truncate_into from this layer",
            });
        }
        build_pair(layer, self.depthwise.clone(), self.pointwise.clone(), r, report)
    }
}

/// The validated pair of `layer` at rank `r` from its written weights (see [`pair_layers`]).
fn build_pair<T: Real>(
    layer: &Conv2dWeights<T>,
    dw: Vec<T>,
    pw: Vec<T>,
    r: usize,
    report: Report,
) -> Result<Decomposition<T>> {
    let (depthwise, pointwise) = pair_layers(layer, dw, pw, r, true)?;
    Ok(Decomposition {
        depthwise: DepthwiseR { conv: depthwise, rank: r },
        pointwise: Pointwise { conv: pointwise },
        report,
    })
}

/// The two layers of `layer`'s pair at rank `r` from their written weights: the depthwise half
/// keeps the stride, padding and dilation (`groups = C`), the pointwise half the groups and
/// bias. `check_finite = false` for weights [`Factorization::write_pair`] already proved finite.
pub(crate) fn pair_layers<T: Real>(
    layer: &Conv2dWeights<T>,
    dw: Vec<T>,
    pw: Vec<T>,
    r: usize,
    check_finite: bool,
) -> Result<(Conv2dWeights<T>, Conv2dWeights<T>)> {
    let shape = layer.shape();
    let geometry = *layer.geometry();
    let depthwise = Conv2dWeights::builder(dw, [shape.in_channels * r, 1, shape.kh, shape.kw])
        .name(format!("{}.depthwise", layer.name()))
        .stride(geometry.stride.0, geometry.stride.1)
        .dilation(geometry.dilation.0, geometry.dilation.1)
        .padding(geometry.padding)
        .groups(shape.in_channels);
    let pointwise = Conv2dWeights::builder(pw, [shape.out_channels, shape.in_per_group() * r, 1, 1])
        .name(format!("{}.pointwise", layer.name()))
        .maybe_bias(layer.bias().map(<[T]>::to_vec))
        .groups(shape.groups)
        .padding(Padding::default());
    if check_finite {
        Ok((depthwise.build()?, pointwise.build()?))
    } else {
        Ok((depthwise.defer_weight_finiteness().build()?, pointwise.defer_weight_finiteness().build()?))
    }
}

/// Multipliers `(depthwise, pointwise)` for component `j` with singular value `s` of a channel
/// whose largest is `s_max`. Values at or below the channel's rounding floor (including exact
/// zeros) are not divided by: both factors then stay as `v_jᵀ` and `M v_j`, whose product is
/// unchanged and finite.
fn split_scales(split: Split, s: f64, s_max: f64, dim: usize) -> (f64, f64) {
    let floor = s_max * f64::EPSILON * dim as f64;
    if s.is_nan() || s <= floor || !s.is_finite() || s < f64::MIN_POSITIVE {
        return (1.0, 1.0);
    }
    match split {
        Split::Pointwise => (1.0, 1.0),
        Split::Depthwise => (s, 1.0 / s),
        Split::SquareRoot => {
            let q = s.sqrt();
            (q, 1.0 / q)
        }
    }
}

/// The pointwise weight `P[n, c_local·r + j] = (M_c v_j)[n] · pw_scales[c·r + j]` (each row `n`
/// written in its final layout from row `n` of `W`, rows in parallel, in f64 rounded once);
/// `false` when a written value is not finite.
///
/// The reference for every kernel size; `kernels::pair::pointwise9` is the fast path for 3x3 kernels
/// and is tested against this one.
fn pointwise_weight<T: Real>(
    layer: &Conv2dWeights<T>,
    vt: &[T],
    k: usize,
    r: usize,
    pw_scales: &[f64],
    pw: &mut [T],
) -> bool {
    let shape = layer.shape();
    let (ng, cg, taps) = (shape.out_per_group(), shape.in_per_group(), shape.taps());
    pw.par_chunks_mut(cg * r).zip(layer.weight().par_chunks(cg * taps)).enumerate().for_each(|(n, (p_row, w_row))| {
        let g = n / ng;
        for (cl, (p, x)) in p_row.chunks_mut(r).zip(w_row.chunks(taps)).enumerate() {
            let c = g * cg + cl;
            for (j, pj) in p.iter_mut().enumerate() {
                let v = &vt[(c * k + j) * taps..(c * k + j + 1) * taps];
                let mut acc = 0.0f64;
                for (&w, &vv) in x.iter().zip(v) {
                    acc += w.to_f64_exact() * vv.to_f64_exact();
                }
                *pj = T::from_f64_lossy(acc * pw_scales[c * r + j]);
            }
        }
    });
    pw.iter().all(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::GramSvd;

    fn seeded<T: Real>(seed: u64, n: usize) -> Vec<T> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                T::from_f64_lossy((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
            })
            .collect()
    }

    /// The 3x3 kernel writes the same pointwise weight as the
    /// reference loop, for every rank and split, partial lane blocks and groups included.
    fn fast_matches_reference<T: Real>(tol: f64) {
        for (seed, &(dims, groups)) in [
            ([16usize, 3usize, 3usize, 3usize], 1usize),
            ([10, 20, 3, 3], 1),
            ([12, 8, 3, 3], 2),
            ([6, 1, 3, 3], 6),
            ([40, 17, 3, 3], 1),
            ([3, 9, 3, 3], 1),
            ([36, 11, 3, 3], 3),
        ]
        .iter()
        .enumerate()
        {
            let w = seeded::<T>(seed as u64 + 1, dims.iter().product());
            let layer = Conv2dWeights::builder(w, dims).groups(groups).build().unwrap();
            let f = Factorization::compute(&layer, &GramSvd::default()).unwrap();
            let shape = layer.shape();
            for r in 1..=shape.max_rank() {
                for split in [Split::Pointwise, Split::Depthwise, Split::SquareRoot] {
                    let options = Options::new(r).split(split);
                    let (dw_len, pw_len) = (shape.in_channels * r * 9, shape.out_channels * shape.in_per_group() * r);
                    let (mut dw1, mut pw1) = (vec![T::zero(); dw_len], vec![T::zero(); pw_len]);
                    let (mut dw2, mut pw2) = (vec![T::zero(); dw_len], vec![T::zero(); pw_len]);
                    let mut scratch = Vec::new();
                    f.write_pair(&options, &mut dw1, &mut pw1, &mut scratch, true).unwrap();
                    f.write_pair(&options, &mut dw2, &mut pw2, &mut scratch, false).unwrap();
                    assert_eq!(dw1, dw2);
                    let scale = pw2.iter().fold(0.0f64, |m, v| m.max(v.to_f64_exact().abs()));
                    for (a, b) in pw1.iter().zip(&pw2) {
                        let (a, b) = (a.to_f64_exact(), b.to_f64_exact());
                        assert!((a - b).abs() <= tol * scale, "{dims:?} r{r} {split:?}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn pointwise9_matches_reference_f32() {
        fast_matches_reference::<f32>(1e-6);
    }

    #[test]
    fn pointwise9_matches_reference_f64() {
        fast_matches_reference::<f64>(1e-13);
    }

    #[test]
    fn overflowing_factors_are_an_error_on_both_paths() {
        // Every row is 3e38 in every tap: M v_1 = 9e38 overflows f32 on the pointwise side.
        for dims in [[4usize, 2usize, 3usize, 3usize], [4, 2, 2, 2]] {
            let layer = Conv2dWeights::new(vec![3e38f32; dims.iter().product()], dims).unwrap();
            let f = Factorization::compute(&layer, &GramSvd::default()).unwrap();
            let options = Options::new(1).split(Split::Pointwise);
            assert!(matches!(f.truncate(&options), Err(Error::NonFinite { .. })), "{dims:?}");
            let mut buffers = PairBuffers::new();
            assert!(matches!(f.truncate_into(&options, &mut buffers), Err(Error::NonFinite { .. })), "{dims:?}");
            // The depthwise side overflows with the singular values on it.
            let options = Options::new(1).split(Split::Depthwise);
            assert!(matches!(f.truncate(&options), Err(Error::NonFinite { .. })), "{dims:?}");
        }
        // One overflowing channel among finite ones, in a whole block of eight channels (the
        // AVX-512 kernel's path) and in a partial one.
        for (cg, bad) in [(8usize, 5usize), (16, 9), (11, 10)] {
            let dims = [4, cg, 3, 3];
            let w: Vec<f32> = (0..4 * cg * 9).map(|i| if (i / 9) % cg == bad { 3e38 } else { 0.5 }).collect();
            let layer = Conv2dWeights::new(w, dims).unwrap();
            let f = Factorization::compute(&layer, &GramSvd::default()).unwrap();
            let options = Options::new(1).split(Split::Pointwise);
            assert!(matches!(f.truncate(&options), Err(Error::NonFinite { .. })), "{dims:?}");
            let options = Options::new(1).split(Split::Depthwise);
            assert!(matches!(f.truncate(&options), Err(Error::NonFinite { .. })), "{dims:?}");
        }
    }
}
