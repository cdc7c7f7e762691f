//! The fast backend: Gram matrix `MᵀM` in f64 plus a cyclic Jacobi eigensolver.
//!
//! For an `N x K` matrix `M` with `K = kh·kw` small (9 for 3x3 kernels), the right singular
//! vectors are the eigenvectors of the `K x K` Gram matrix `G = MᵀM` and the singular values the
//! square roots of its eigenvalues. `G` is accumulated in f64 (products of f32 values are exact
//! there), after scaling `M` by a power of two so that squaring neither overflows nor
//! underflows; the eigenproblem is solved by cyclic Jacobi rotations in f64, which keep `V`
//! orthonormal to working precision whatever the spectrum.
//!
//! Accuracy, compared with a direct SVD: `V` is orthonormal, so the pointwise side `M V` makes
//! the full-rank pair reproduce `M` exactly. Truncation picks the dominant subspace of `G`,
//! whose reconstruction error exceeds the optimum by at most about `ε_f64 · s_1²` in squared
//! Frobenius norm — far below f32 rounding. Singular values far below `s_1` (below
//! `sqrt(ε_f64) · s_1 ≈ 1e-8 · s_1`) are only accurate in absolute terms; use
//! [`NalgebraSvd`](super::NalgebraSvd) when the tail of an f64 spectrum matters.
//!
//! Besides the per-matrix [`SvdBackend`] implementation, [`GramSvd::factor_layer`] factors every
//! input channel of a layer in one streaming pass over the OIHW weight, without gathering the
//! per-channel matrices: the form file conversion uses. For 3x3 kernels it runs the lane
//! kernels of `crate::kernels`: eight channels' Gram matrices from shifted element-wise products
//! of contiguous row segments, then one Jacobi solve for all eight (lane-wise rotations, sweeps
//! until no lane rotates); other kernel sizes take the general loop (`kernels::gram_packed`). Both are tested against
//! the per-matrix [`right_factors`](SvdBackend::right_factors) and against nalgebra.

use super::{SvdBackend, SvdFailure};
use crate::error::{Error, Result};
use crate::kernels::{gram_packed, LANES};
use crate::scalar::Real;
use crate::weights::Conv2dWeights;
use rayon::prelude::*;

/// SVD through the f64 Gram matrix and a bounded cyclic Jacobi eigensolver.
///
/// ```
/// use dac::svd::{GramSvd, SvdBackend};
/// let m = [3.0f32, 0.0, 0.0, 4.0]; // 2 x 2
/// let (mut s, mut vt) = ([0.0; 2], [0.0; 4]);
/// GramSvd::default().right_factors(&m, 2, 2, &mut s, &mut vt).unwrap();
/// assert!((s[0] - 4.0).abs() < 1e-6 && (s[1] - 3.0).abs() < 1e-6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GramSvd {
    /// Jacobi sweeps before giving up (default 64; 3x3 kernels converge in 5 to 8).
    pub max_sweeps: usize,
}

impl Default for GramSvd {
    fn default() -> Self {
        Self { max_sweeps: 64 }
    }
}

/// Channels per parallel task of [`GramSvd::factor_layer`].
const TASK_CHANNELS: usize = 64;

impl GramSvd {
    /// The build of the lane kernels this process runs: `"avx512"`, `"avx2"` or `"portable"`
    /// (detected once; the `DAC_ISA` environment variable, set to `portable` or `avx2`, caps it
    /// to run the lesser builds end to end on a CPU that has better ones).
    pub fn instruction_set() -> &'static str {
        crate::kernels::isa_name()
    }

    /// Factors every input channel of `layer`: writes `singular_values` (`C x k`, row `c`
    /// descending) and `vt` (`C x k x (kh·kw)`, the rows of `V_kᵀ` of channel `c`), with
    /// `k = min(N/groups, kh·kw)` — the same layout as calling
    /// [`right_factors`](SvdBackend::right_factors) on each gathered channel matrix.
    ///
    /// The weight is read in one streaming pass (two for f64, which first finds each channel's
    /// scale); channels are processed in parallel on the current rayon pool.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when a buffer has the wrong length; [`Error::Svd`] naming the
    /// channel whose eigensolver did not converge.
    pub fn factor_layer<T: Real>(
        &self,
        layer: &Conv2dWeights<T>,
        singular_values: &mut [T],
        vt: &mut [T],
    ) -> Result<()> {
        let shape = layer.shape();
        let (cg, taps, k) = (shape.in_per_group(), shape.taps(), shape.max_rank());
        let channels = shape.in_channels;
        super::check_layer_buffers(layer, singular_values.len(), vt.len())?;
        // Tasks: runs of at most TASK_CHANNELS channels that stay inside one group.
        let mut tasks = Vec::with_capacity(channels / TASK_CHANNELS + shape.groups);
        let (mut s_rest, mut v_rest) = (singular_values, vt);
        let mut c = 0;
        while c < channels {
            let len = TASK_CHANNELS.min(cg - c % cg);
            let (s_head, s_tail) = std::mem::take(&mut s_rest).split_at_mut(len * k);
            let (v_head, v_tail) = std::mem::take(&mut v_rest).split_at_mut(len * k * taps);
            tasks.push((c, len, s_head, v_head));
            (s_rest, v_rest) = (s_tail, v_tail);
            c += len;
        }
        let max_sweeps = self.max_sweeps;
        tasks.into_par_iter().try_for_each_init(
            || Workspace::new(taps),
            |ws, (c0, len, s, v)| {
                factor_run(layer, c0, len, max_sweeps, ws, s, v).map_err(|(channel, f)| Error::Svd {
                    layer: layer.name().to_string(),
                    channel,
                    reason: f.reason,
                })
            },
        )
    }
}

/// Per-thread buffers, allocated once.
struct Workspace {
    /// Gram accumulators, `[channel block][pair (a <= b)][lane]`.
    acc: Vec<f64>,
    /// Current row of a lane block, transposed: `[tap][lane]`.
    xt: Vec<f64>,
    /// Per-channel scales (powers of two).
    scale: Vec<f64>,
    /// One dense Gram matrix and its eigenvectors.
    g: Vec<f64>,
    v: Vec<f64>,
    order: Vec<usize>,
}

impl Workspace {
    fn new(taps: usize) -> Self {
        let pairs = taps * (taps + 1) / 2;
        Self {
            acc: vec![0.0; TASK_CHANNELS.div_ceil(LANES) * pairs * LANES],
            xt: vec![0.0; taps * LANES],
            scale: vec![1.0; TASK_CHANNELS],
            g: vec![0.0; taps * taps],
            v: vec![0.0; taps * taps],
            order: Vec::with_capacity(taps),
        }
    }
}

/// Factors channels `c0 .. c0 + len` (one group) into `s` and `v`.
fn factor_run<T: Real>(
    layer: &Conv2dWeights<T>,
    c0: usize,
    len: usize,
    max_sweeps: usize,
    ws: &mut Workspace,
    s: &mut [T],
    v: &mut [T],
) -> std::result::Result<(), (usize, SvdFailure)> {
    let shape = layer.shape();
    let (ng, cg, taps, k) = (shape.out_per_group(), shape.in_per_group(), shape.taps(), shape.max_rank());
    let (g, cl0) = (c0 / cg, c0 % cg);
    let w = layer.weight();
    let pairs = taps * (taps + 1) / 2;
    let row_stride = cg * taps;
    let rows = &w[g * ng * row_stride..(g + 1) * ng * row_stride];
    // Scales: f32 squares fit f64's range, f64 ones may not.
    let scale = &mut ws.scale[..len];
    if std::mem::size_of::<T>() > 4 {
        scale.fill(0.0);
        for row in rows.chunks_exact(row_stride) {
            for (sc, x) in scale.iter_mut().zip(row[cl0 * taps..(cl0 + len) * taps].chunks_exact(taps)) {
                for &e in x {
                    *sc = sc.max(e.to_f64_exact().abs());
                }
            }
        }
        for sc in scale.iter_mut() {
            *sc = power_of_two_scale(*sc);
        }
    } else {
        scale.fill(1.0);
    }
    if taps == 9 {
        return factor_run9(rows, row_stride, cl0 * 9, c0, len, scale, max_sweeps, s, v);
    }
    let blocks = len.div_ceil(LANES);
    let acc = &mut ws.acc[..blocks * pairs * LANES];
    acc.fill(0.0);
    gram_packed(rows, row_stride, cl0, len, taps, scale, &mut ws.xt, acc);
    for local in 0..len {
        let (b, lane) = (local / LANES, local % LANES);
        let block = &acc[b * pairs * LANES..(b + 1) * pairs * LANES];
        let mut p = 0;
        for a in 0..taps {
            for bb in a..taps {
                let val = block[p * LANES + lane];
                ws.g[a * taps + bb] = val;
                ws.g[bb * taps + a] = val;
                p += 1;
            }
        }
        let inv_scale = 1.0 / scale[local];
        eigen_to_factors(
            &mut ws.g,
            &mut ws.v,
            &mut ws.order,
            taps,
            k,
            inv_scale,
            max_sweeps,
            &mut s[local * k..(local + 1) * k],
            &mut v[local * k * taps..(local + 1) * k * taps],
        )
        .map_err(|f| (c0 + local, f))?;
    }
    Ok(())
}

/// [`factor_run`] for 3x3 kernels: eight channels at a time through the shifted-product Gram
/// kernel and the lane-wise Jacobi solver of `crate::kernels`.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn factor_run9<T: Real>(
    rows: &[T],
    row_stride: usize,
    base: usize,
    c0: usize,
    len: usize,
    scale: &[f64],
    max_sweeps: usize,
    s: &mut [T],
    v: &mut [T],
) -> std::result::Result<(), (usize, SvdFailure)> {
    use crate::kernels::{gram9, jacobi9, Mat9, BLOCK, GRAM_CHANNELS, LANES as L};
    let k = s.len() / len;
    let blocks = len.div_ceil(L);
    debug_assert!(len <= GRAM_CHANNELS);
    let mut scale_flat = [[0.0f64; BLOCK]; GRAM_CHANNELS / L];
    for (c, sc) in scale.iter().enumerate() {
        scale_flat[c / L][(c % L) * 9..(c % L + 1) * 9].fill(*sc);
    }
    let mut accs = [[[0.0f64; BLOCK]; 9]; GRAM_CHANNELS / L];
    gram9(rows, row_stride, base, len, &scale_flat[..blocks], &mut accs[..blocks]);
    for (b, acc) in accs.iter().enumerate().take(blocks) {
        let lanes = L.min(len - b * L);
        let mut a: Mat9 = [[[0.0; L]; 9]; 9];
        for (sh, acc_s) in acc.iter().enumerate() {
            for i in 0..9 - sh {
                for l in 0..L {
                    a[i][i + sh][l] = acc_s[l * 9 + i];
                    a[i + sh][i][l] = acc_s[l * 9 + i];
                }
            }
        }
        for l in 0..lanes {
            if !(0..9).all(|i| a[i][i][l].is_finite()) {
                return Err((c0 + b * L + l, SvdFailure::new("non-finite Gram matrix")));
            }
        }
        let mut vecs: Mat9 = [[[0.0; L]; 9]; 9];
        if !jacobi9(&mut a, &mut vecs, max_sweeps) {
            return Err((c0 + b * L, not_converged(9, max_sweeps)));
        }
        for l in 0..lanes {
            let local = b * L + l;
            let mut order = [0usize, 1, 2, 3, 4, 5, 6, 7, 8];
            order.sort_by(|&x, &y| a[y][y][l].total_cmp(&a[x][x][l]));
            let inv_scale = 1.0 / scale[local];
            let (s_out, v_out) = (&mut s[local * k..(local + 1) * k], &mut v[local * k * 9..(local + 1) * k * 9]);
            for (j, &src) in order.iter().take(k).enumerate() {
                s_out[j] = T::from_f64_lossy(a[src][src][l].max(0.0).sqrt() * inv_scale);
                for t in 0..9 {
                    v_out[j * 9 + t] = T::from_f64_lossy(vecs[t][src][l]);
                }
            }
        }
    }
    Ok(())
}

/// A power of two `2^e` with `max_abs · 2^e` in `[0.5, 1)`, or 1 for zero / non-finite input.
fn power_of_two_scale(max_abs: f64) -> f64 {
    if max_abs.is_nan() || max_abs <= 0.0 || !max_abs.is_finite() {
        return 1.0;
    }
    // Exponent via bits; subnormals handled by a pre-multiplication.
    let (m, extra) = if max_abs < f64::MIN_POSITIVE { (max_abs * 2f64.powi(600), 600) } else { (max_abs, 0) };
    let exp = ((m.to_bits() >> 52) & 0x7ff) as i32 - 1022; // m = f * 2^exp, f in [0.5, 1)
                                                           // A subnormal maximum cannot be brought to [0.5, 1) by one factor; 2^1023 gets it above 1e-3.
    pow2((extra - exp).min(1023))
}

/// `2^e` for any `e` whose result is a normal f64 or whose two halves are.
fn pow2(e: i32) -> f64 {
    if (-1022..=1023).contains(&e) {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        let h = e / 2;
        pow2(h) * pow2(e - h)
    }
}

/// Solves the eigenproblem of the symmetric `g` (`taps x taps`, overwritten) and writes the
/// top `k` singular values (`sqrt(λ) · inv_scale`, descending) and right singular vectors.
#[allow(clippy::too_many_arguments)]
fn eigen_to_factors<T: Real>(
    g: &mut [f64],
    v: &mut [f64],
    order: &mut Vec<usize>,
    taps: usize,
    k: usize,
    inv_scale: f64,
    max_sweeps: usize,
    s_out: &mut [T],
    vt_out: &mut [T],
) -> std::result::Result<(), SvdFailure> {
    // A NaN or infinite weight makes its tap's diagonal entry (a sum of squares) non-finite.
    if !(0..taps).all(|i| g[i * taps + i].is_finite()) {
        return Err(SvdFailure::new("non-finite Gram matrix"));
    }
    jacobi_eigen(g, v, taps, max_sweeps)?;
    order.clear();
    order.extend(0..taps);
    order.sort_by(|&a, &b| g[b * taps + b].total_cmp(&g[a * taps + a]));
    for (j, &src) in order.iter().take(k).enumerate() {
        let lambda = g[src * taps + src].max(0.0);
        s_out[j] = T::from_f64_lossy(lambda.sqrt() * inv_scale);
        for t in 0..taps {
            vt_out[j * taps + t] = T::from_f64_lossy(v[t * taps + src]);
        }
    }
    Ok(())
}

/// Cyclic Jacobi on the symmetric `a` (`n x n`, row-major): on return its diagonal holds the
/// eigenvalues and the columns of `v` the eigenvectors. Rotations stop when every off-diagonal
/// entry is below `ε · trace`, the accuracy to which a Gram matrix is known anyway.
fn jacobi_eigen(a: &mut [f64], v: &mut [f64], n: usize, max_sweeps: usize) -> std::result::Result<(), SvdFailure> {
    match n {
        4 => return jacobi_fixed::<4>(a, v, max_sweeps),
        9 => return jacobi_fixed::<9>(a, v, max_sweeps),
        25 => return jacobi_fixed::<25>(a, v, max_sweeps),
        _ => {}
    }
    v.fill(0.0);
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    if n == 1 {
        return if a[0].is_finite() { Ok(()) } else { Err(SvdFailure::new("non-finite Gram matrix")) };
    }
    for _ in 0..max_sweeps {
        let trace: f64 = (0..n).map(|i| a[i * n + i].abs()).sum();
        if !trace.is_finite() {
            return Err(SvdFailure::new("non-finite Gram matrix"));
        }
        let tol = f64::EPSILON * 0.25 * trace;
        let mut rotated = false;
        for p in 0..n - 1 {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.is_nan() || apq.abs() <= tol {
                    continue;
                }
                rotated = true;
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                a[p * n + p] = app - t * apq;
                a[q * n + q] = aqq + t * apq;
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
                for r in 0..n {
                    if r != p && r != q {
                        let (arp, arq) = (a[r * n + p], a[r * n + q]);
                        let (np, nq) = (c * arp - s * arq, s * arp + c * arq);
                        a[r * n + p] = np;
                        a[p * n + r] = np;
                        a[r * n + q] = nq;
                        a[q * n + r] = nq;
                    }
                }
                for r in 0..n {
                    let (vrp, vrq) = (v[r * n + p], v[r * n + q]);
                    v[r * n + p] = c * vrp - s * vrq;
                    v[r * n + q] = s * vrp + c * vrq;
                }
            }
        }
        if !rotated {
            return Ok(());
        }
    }
    Err(not_converged(n, max_sweeps))
}

/// The failure of a Jacobi eigensolver on an `n x n` Gram matrix after `max_sweeps` sweeps.
fn not_converged(n: usize, max_sweeps: usize) -> SvdFailure {
    SvdFailure::new(format!("Jacobi eigensolver on a {n}x{n} Gram matrix did not converge in {max_sweeps} sweeps"))
}

/// [`jacobi_eigen`] for a size known at compile time: the same rotations, without bounds checks.
fn jacobi_fixed<const N: usize>(
    a: &mut [f64],
    v: &mut [f64],
    max_sweeps: usize,
) -> std::result::Result<(), SvdFailure> {
    if a.len() < N * N || v.len() < N * N {
        return Err(SvdFailure::new("bad Gram size"));
    }
    let (a, v) = (&mut a[..N * N], &mut v[..N * N]);
    v.fill(0.0);
    for i in 0..N {
        v[i * N + i] = 1.0;
    }
    for _ in 0..max_sweeps {
        let trace: f64 = (0..N).map(|i| a[i * N + i].abs()).sum();
        if !trace.is_finite() {
            return Err(SvdFailure::new("non-finite Gram matrix"));
        }
        let tol = f64::EPSILON * 0.25 * trace;
        let mut rotated = false;
        for p in 0..N {
            for q in p + 1..N {
                let apq = a[p * N + q];
                if apq.is_nan() || apq.abs() <= tol {
                    continue;
                }
                rotated = true;
                let (app, aqq) = (a[p * N + p], a[q * N + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..N {
                    let (arp, arq) = (a[r * N + p], a[r * N + q]);
                    a[r * N + p] = c * arp - s * arq;
                    a[r * N + q] = s * arp + c * arq;
                }
                for r in 0..N {
                    let (apr, aqr) = (a[p * N + r], a[q * N + r]);
                    a[p * N + r] = c * apr - s * aqr;
                    a[q * N + r] = s * apr + c * aqr;
                }
                a[p * N + p] = app - t * apq;
                a[q * N + q] = aqq + t * apq;
                a[p * N + q] = 0.0;
                a[q * N + p] = 0.0;
                for r in 0..N {
                    let (vrp, vrq) = (v[r * N + p], v[r * N + q]);
                    v[r * N + p] = c * vrp - s * vrq;
                    v[r * N + q] = s * vrp + c * vrq;
                }
            }
        }
        if !rotated {
            return Ok(());
        }
    }
    Err(not_converged(N, max_sweeps))
}

impl<T: Real> SvdBackend<T> for GramSvd {
    fn right_factors(
        &self,
        matrix: &[T],
        rows: usize,
        cols: usize,
        singular_values: &mut [T],
        vt: &mut [T],
    ) -> std::result::Result<(), SvdFailure> {
        let k = rows.min(cols);
        if matrix.len() != rows * cols || singular_values.len() != k || vt.len() != k * cols {
            return Err(SvdFailure::new(format!(
                "buffer lengths {}, {}, {} do not fit a {rows}x{cols} matrix",
                matrix.len(),
                singular_values.len(),
                vt.len()
            )));
        }
        if k == 0 {
            return Ok(());
        }
        let max_abs = matrix.iter().fold(0.0f64, |m, x| m.max(x.to_f64_exact().abs()));
        let scale = power_of_two_scale(max_abs);
        let mut g = vec![0.0f64; cols * cols];
        let mut row = vec![0.0f64; cols];
        for src in matrix.chunks_exact(cols) {
            for (d, s) in row.iter_mut().zip(src) {
                *d = s.to_f64_exact() * scale;
            }
            for a in 0..cols {
                let ra = row[a];
                for b in a..cols {
                    g[a * cols + b] += ra * row[b];
                }
            }
        }
        for a in 0..cols {
            for b in 0..a {
                g[a * cols + b] = g[b * cols + a];
            }
        }
        let mut v = vec![0.0f64; cols * cols];
        let mut order = Vec::with_capacity(cols);
        eigen_to_factors(&mut g, &mut v, &mut order, cols, k, 1.0 / scale, self.max_sweeps, singular_values, vt)
    }

    fn name(&self) -> &'static str {
        "gram-jacobi"
    }

    /// `true`: a NaN or infinite weight makes its channel's Gram diagonal non-finite (every
    /// square of an f32 fits f64, and f64 channels are scaled to at most 1 first), which is
    /// rejected before the eigensolver runs.
    fn rejects_non_finite(&self) -> bool {
        true
    }

    fn factor_layer(&self, layer: &Conv2dWeights<T>, singular_values: &mut [T], vt: &mut [T]) -> Result<()> {
        GramSvd::factor_layer(self, layer, singular_values, vt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_of_two_scale_normalises() {
        for x in [1.0, 0.75, 3.0, 1e-30, 1e30, 1e-310, 1e300, f64::MIN_POSITIVE] {
            let s = power_of_two_scale(x);
            let y = x * s;
            let lo = if x < f64::MIN_POSITIVE { 1e-3 } else { 0.5 };
            assert!(s.is_finite() && (lo..1.0).contains(&y), "{x} -> {s} -> {y}");
        }
        assert_eq!(power_of_two_scale(0.0), 1.0);
    }
}
