//! The kernel bodies, written once over fixed-size lane arrays: `F` picks fused multiply-adds.
//!
//! Instantiated with `F = false` they are the portable build, run as they are on any CPU; the
//! instruction-set leaves ([`avx2`](super::avx2), [`avx512`](super::avx512)) compile the same
//! bodies with `F = true` inside `#[target_feature]` functions, which is why every body here is
//! `#[inline(always)]`.
//!
//! **Gram without a transpose.** Eight consecutive channels of one OIHW row are 72 contiguous
//! values `x[l·9 + t]` (lane `l`, tap `t`). For a shift `s` in `0..9`, the element-wise product
//! `x[i] · x[i + s]` at `i = l·9 + a` is `G_l[a][a + s]` whenever `a + s < 9` (other positions mix
//! neighbouring channels and are ignored). So nine shifted element-wise products of contiguous
//! vectors accumulate all eight Gram matrices with no shuffles: 81 vector FMAs per 72 inputs
//! instead of 45 plus a transpose.

// Lane kernels index several arrays by the same lane/tap index on purpose: that is the form the
// compiler vectorises.
#![allow(clippy::needless_range_loop)]

use super::lanes::{fma, vfma, Lanes, Mat9, BLOCK, GRAM_CHANNELS, LANES};
use crate::scalar::Real;

/// Rows converted to f64 before the accumulators are loaded.
const ROW_CHUNK: usize = 4;

/// The lane code of [`gram9`](super::gram9) (same contract), fused multiply-adds when `F`.
#[inline(always)]
pub(super) fn gram9<T: Real, const F: bool>(
    rows: &[T],
    row_stride: usize,
    base: usize,
    len: usize,
    scale: &[[f64; BLOCK]],
    acc: &mut [[[f64; BLOCK]; 9]],
) {
    let blocks = len.div_ceil(LANES);
    let width = len * 9;
    // Eight spare zeros after each block: the shifted reads run up to index 79. Values past
    // `width` stay zero.
    let mut xs = [[[0.0f64; BLOCK + 8]; GRAM_CHANNELS / LANES]; ROW_CHUNK];
    let mut it = rows.chunks_exact(row_stride);
    loop {
        let mut m = 0;
        while m < ROW_CHUNK {
            let Some(row) = it.next() else { break };
            let run = &row[base..base + width];
            for ((dst, src), sc) in xs[m].iter_mut().zip(run.chunks(BLOCK)).zip(scale) {
                if let Ok(src) = <&[T; BLOCK]>::try_from(src) {
                    if std::mem::size_of::<T>() == 4 {
                        // f32 squares fit f64's range: the scales are all 1.
                        for i in 0..BLOCK {
                            dst[i] = src[i].to_f64_exact();
                        }
                    } else {
                        for i in 0..BLOCK {
                            dst[i] = src[i].to_f64_exact() * sc[i];
                        }
                    }
                } else {
                    for (i, x) in src.iter().enumerate() {
                        dst[i] = x.to_f64_exact() * sc[i];
                    }
                }
            }
            m += 1;
        }
        if m == 0 {
            return;
        }
        for (b, acc_b) in acc.iter_mut().enumerate().take(blocks) {
            for (s, acc_s) in acc_b.iter_mut().enumerate() {
                let mut a = *acc_s;
                for x in &xs[..m] {
                    let (lo, hi) = (&x[b][..BLOCK], &x[b][s..s + BLOCK]);
                    for i in 0..BLOCK {
                        a[i] = fma::<F>(lo[i], hi[i], a[i]);
                    }
                }
                *acc_s = a;
            }
        }
        if m < ROW_CHUNK {
            return;
        }
    }
}

/// The Gram accumulation of [`gram_packed`](super::gram_packed) (same contract) for any
/// number of taps: products summed in f64, never fused.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn gram_packed<T: Real>(
    rows: &[T],
    row_stride: usize,
    cl0: usize,
    len: usize,
    taps: usize,
    scale: &[f64],
    xt: &mut [f64],
    acc: &mut [f64],
) {
    let pairs = taps * (taps + 1) / 2;
    let blocks = len.div_ceil(LANES);
    if taps == 9 {
        // The common 3x3 case: fixed sizes, so the pair loop unrolls with no bounds checks.
        for row in rows.chunks_exact(row_stride) {
            for b in 0..blocks {
                let lanes = LANES.min(len - b * LANES);
                let base = (cl0 + b * LANES) * 9;
                let mut x = [[0.0f64; LANES]; 9];
                for lane in 0..lanes {
                    let src: &[T; 9] = row[base + lane * 9..base + lane * 9 + 9].try_into().expect("9 taps");
                    let sc = scale[b * LANES + lane];
                    for a in 0..9 {
                        x[a][lane] = src[a].to_f64_exact() * sc;
                    }
                }
                let block: &mut [f64; 45 * LANES] =
                    (&mut acc[b * 45 * LANES..(b + 1) * 45 * LANES]).try_into().expect("45 pairs");
                let mut p = 0;
                for a in 0..9 {
                    for bb in a..9 {
                        for lane in 0..LANES {
                            block[p * LANES + lane] += x[a][lane] * x[bb][lane];
                        }
                        p += 1;
                    }
                }
            }
        }
        return;
    }
    for row in rows.chunks_exact(row_stride) {
        for b in 0..blocks {
            let lanes = LANES.min(len - b * LANES);
            let base = (cl0 + b * LANES) * taps;
            xt.fill(0.0);
            for lane in 0..lanes {
                let src = &row[base + lane * taps..base + (lane + 1) * taps];
                let sc = scale[b * LANES + lane];
                for a in 0..taps {
                    xt[a * LANES + lane] = src[a].to_f64_exact() * sc;
                }
            }
            let block = &mut acc[b * pairs * LANES..(b + 1) * pairs * LANES];
            let mut p = 0;
            for a in 0..taps {
                for bb in a..taps {
                    let dst = &mut block[p * LANES..(p + 1) * LANES];
                    let (xa, xb) = (&xt[a * LANES..(a + 1) * LANES], &xt[bb * LANES..(bb + 1) * LANES]);
                    for lane in 0..LANES {
                        dst[lane] += xa[lane] * xb[lane];
                    }
                    p += 1;
                }
            }
        }
    }
}

/// The 36 pairs of a sweep in nine rounds of four disjoint pairs (the circle method: round `k`
/// pairs `k + i` with `k - i` mod 9, `i = 1..=4`; index `k` sits out). Rotations of disjoint
/// pairs commute and leave each other's 2x2 blocks alone, so a round's four rotation angles
/// are computed together, as independent chains of divisions and square roots.
const ROUNDS: [[(usize, usize); 4]; 9] = {
    let mut out = [[(0, 0); 4]; 9];
    let mut k = 0;
    while k < 9 {
        let mut i = 1;
        while i <= 4 {
            let (a, b) = ((k + i) % 9, (k + 9 - i) % 9);
            out[k][i - 1] = if a < b { (a, b) } else { (b, a) };
            i += 1;
        }
        k += 1;
    }
    out
};

/// The lane code of [`jacobi9`](super::jacobi9) (same contract), fused multiply-adds when `F`:
/// returns whether every lane converged within `max_sweeps` sweeps.
#[inline(always)]
pub(super) fn jacobi9<const F: bool>(a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> bool {
    for (i, row) in v.iter_mut().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = [if i == j { 1.0 } else { 0.0 }; LANES];
        }
    }
    for _ in 0..max_sweeps {
        let mut tol = [0.0f64; LANES];
        for (i, row) in a.iter().enumerate() {
            for l in 0..LANES {
                tol[l] += row[i][l].abs();
            }
        }
        for t in tol.iter_mut() {
            *t *= f64::EPSILON * 0.25;
        }
        let mut rotated = false;
        for round in &ROUNDS {
            // The four rotations' (c, s, t) and which lanes rotate.
            let mut rot = [([1.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES], [false; LANES]); 4];
            for (&(p, q), (c, s, t, big)) in round.iter().zip(rot.iter_mut()) {
                let (apq, app, aqq) = (a[p][q], a[p][p], a[q][q]);
                for l in 0..LANES {
                    big[l] = apq[l].abs() > tol[l];
                }
                // No lane rotates (most pairs of the last sweeps): no angles to compute.
                if !big.iter().any(|&b| b) {
                    continue;
                }
                for l in 0..LANES {
                    let den = if big[l] { 2.0 * apq[l] } else { 1.0 };
                    let theta = (aqq[l] - app[l]) / den;
                    let tt = theta.signum() / (theta.abs() + fma::<F>(theta, theta, 1.0).sqrt());
                    let tt = if big[l] { tt } else { 0.0 };
                    let cc = 1.0 / fma::<F>(tt, tt, 1.0).sqrt();
                    t[l] = tt;
                    c[l] = cc;
                    s[l] = tt * cc;
                }
            }
            for (&(p, q), (c, s, t, big)) in round.iter().zip(rot.iter()) {
                if !big.iter().any(|&b| b) {
                    continue;
                }
                rotated = true;
                let (apq, app, aqq) = (a[p][q], a[p][p], a[q][q]);
                // Columns p and q, mirrored into rows p and q (the matrix stays symmetric); the
                // 2x2 block written here is overwritten just below.
                for r in 0..9 {
                    let (x, y) = (a[r][p], a[r][q]);
                    let mut nx = [0.0; LANES];
                    let mut ny = [0.0; LANES];
                    for l in 0..LANES {
                        nx[l] = fma::<F>(c[l], x[l], -s[l] * y[l]);
                        ny[l] = fma::<F>(s[l], x[l], c[l] * y[l]);
                    }
                    a[r][p] = nx;
                    a[r][q] = ny;
                    a[p][r] = nx;
                    a[q][r] = ny;
                }
                for l in 0..LANES {
                    a[p][p][l] = fma::<F>(-t[l], apq[l], app[l]);
                    a[q][q][l] = fma::<F>(t[l], apq[l], aqq[l]);
                    let off = if big[l] { 0.0 } else { apq[l] };
                    a[p][q][l] = off;
                    a[q][p][l] = off;
                }
                for row in v.iter_mut() {
                    let (vrp, vrq) = (row[p], row[q]);
                    for l in 0..LANES {
                        row[p][l] = fma::<F>(c[l], vrp[l], -s[l] * vrq[l]);
                        row[q][l] = fma::<F>(s[l], vrp[l], c[l] * vrq[l]);
                    }
                }
            }
        }
        if !rotated {
            return true;
        }
    }
    false
}

/// Runs `$body` with `$t` bound to 0, 1, ..., 8: a loop the compiler cannot vectorise along `t`
/// (it would, two taps at a time, instead of along the eight lanes).
macro_rules! unroll9 {
    ($t:ident => $body:expr) => {{
        {
            let $t: usize = 0;
            $body;
        }
        {
            let $t: usize = 1;
            $body;
        }
        {
            let $t: usize = 2;
            $body;
        }
        {
            let $t: usize = 3;
            $body;
        }
        {
            let $t: usize = 4;
            $body;
        }
        {
            let $t: usize = 5;
            $body;
        }
        {
            let $t: usize = 6;
            $body;
        }
        {
            let $t: usize = 7;
            $body;
        }
        {
            let $t: usize = 8;
            $body;
        }
    }};
}

/// Rows `n0 ..` of the pointwise weight at rank `R` (the contract of `pair::pw9_rows`): returns 0
/// when every written value is finite (NaN otherwise).
#[inline(always)]
pub(super) fn pw9<T: Real, const F: bool, const R: usize>(
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
) -> f64 {
    // `p · 0`: 0 for a finite `p`, NaN otherwise.
    let mut check = [0.0f64; LANES];
    for b in 0..cg.div_ceil(LANES) {
        pw9_block::<T, F, R>(w_rows, n0, ng, cg, b, coefs, p_rows, xbuf, &mut check);
    }
    check.iter().sum()
}

/// Lane block `b` (channels `8b ..` of the group, up to eight) of rows `n0 ..` of the pointwise
/// weight at rank `R`, adding `p · 0` of every written value `p` to `check`. `xbuf` holds at
/// least one `[tap][lane]` transpose per row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn pw9_block<T: Real, const F: bool, const R: usize>(
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    b: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
    check: &mut Lanes,
) {
    let blocks = cg.div_ceil(LANES);
    let rows = p_rows.len() / (cg * R);
    let lanes = LANES.min(cg - b * LANES);
    // The block's values of every row, transposed to `[tap][lane]` in memory first: kept in
    // memory (not registers), the compute below reads them as whole vectors.
    for (xt, w_row) in xbuf[..rows].iter_mut().zip(w_rows.chunks_exact(cg * 9)) {
        let src = &w_row[b * BLOCK..b * BLOCK + lanes * 9];
        if let Ok(src) = <&[T; BLOCK]>::try_from(src) {
            for l in 0..LANES {
                for t in 0..9 {
                    xt[t][l] = src[l * 9 + t].to_f64_exact();
                }
            }
        } else {
            *xt = [[0.0; LANES]; 9];
            for (l, xs) in src.chunks_exact(9).enumerate() {
                for t in 0..9 {
                    xt[t][l] = xs[t].to_f64_exact();
                }
            }
        }
    }
    for (i, (x, p_row)) in xbuf[..rows].iter().zip(p_rows.chunks_exact_mut(cg * R)).enumerate() {
        let g = (n0 + i) / ng;
        let Ok(vs) = <&[[Lanes; 9]; R]>::try_from(&coefs[(g * blocks + b) * R..(g * blocks + b + 1) * R]) else {
            unreachable!("R coefficient rows per block")
        };
        let mut p = [[0.0f64; LANES]; R];
        for j in 0..R {
            let mut acc = [0.0f64; LANES];
            unroll9!(t => acc = vfma::<F>(&x[t], &vs[j][t], &acc));
            // The value as written (rounded to `T`), so that the check sees its overflow.
            for l in 0..LANES {
                p[j][l] = T::from_f64_lossy(acc[l]).to_f64_exact();
            }
            *check = vfma::<F>(&p[j], &[0.0; LANES], check);
        }
        let dst = &mut p_row[b * LANES * R..(b * LANES + lanes) * R];
        for (l, out) in dst.chunks_exact_mut(R).enumerate() {
            for (j, o) in out.iter_mut().enumerate() {
                *o = T::from_f64_lossy(p[j][l]);
            }
        }
    }
}
