//! 3x3 kernels, eight channels at a time: the streaming Gram accumulation and a lane-wise
//! Jacobi eigensolver.
//!
//! Both are written over fixed-size `[f64; LANES]` arrays so that the compiler turns every lane
//! loop into one vector instruction; each entry point picks an AVX-512 or AVX2 build of the same
//! code at run time (`isa`) and falls back to the portable one.
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

use super::SvdFailure;
use crate::scalar::{slice_as, slice_as_mut, Real};
use rayon::prelude::*;

/// Channels per lane block.
pub(crate) const LANES: usize = 8;
/// Values of one 8-channel block of a 3x3 row.
pub(crate) const BLOCK: usize = LANES * 9;
/// Rows converted to f64 before the accumulators are loaded.
const ROW_CHUNK: usize = 4;

/// Eight lanes of `f64`.
pub(crate) type Lanes = [f64; LANES];
/// A 9x9 symmetric matrix per lane: `m[row][col][lane]`.
pub(crate) type Mat9 = [[Lanes; 9]; 9];

/// `a · b + c`, fused when the build has FMA.
#[inline(always)]
pub(crate) fn fma<const F: bool>(a: f64, b: f64, c: f64) -> f64 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `a · b + c` lane by lane.
#[inline(always)]
fn vfma<const F: bool>(a: &Lanes, b: &Lanes, c: &Lanes) -> Lanes {
    let mut out = [0.0; LANES];
    for l in 0..LANES {
        out[l] = fma::<F>(a[l], b[l], c[l]);
    }
    out
}

/// Which build of a kernel to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512F + AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Whatever the crate was compiled for.
    Portable,
}

/// The best build this CPU runs (feature detection is cached by std).
#[inline]
pub(crate) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Channels per call of [`gram9`] at most (eight lane blocks).
pub(crate) const GRAM_CHANNELS: usize = 8 * LANES;

/// Accumulates the Gram matrices of the `len <= 64` channels whose values sit at
/// `row[base .. base + len·9]` of every row of `rows` (rows of `row_stride` values), each value
/// multiplied by `scale[b][i]` first (block `b`, position `i = l·9 + t`).
/// `acc[b][s][l·9 + a]` receives `G[a][a + s]` of channel `b·8 + l`, for `a + s < 9`.
///
/// Rows are read in order, a few at a time, each as one contiguous run: a streaming pass.
pub(crate) fn gram9<T: Real>(
    rows: &[T],
    row_stride: usize,
    base: usize,
    len: usize,
    scale: &[[f64; BLOCK]],
    acc: &mut [[[f64; BLOCK]; 9]],
) {
    gram9_on(isa(), rows, row_stride, base, len, scale, acc)
}

/// [`gram9`] with the build chosen by the caller (`isa` must be one this CPU runs).
fn gram9_on<T: Real>(
    isa: Isa,
    rows: &[T],
    row_stride: usize,
    base: usize,
    len: usize,
    scale: &[[f64; BLOCK]],
    acc: &mut [[[f64; BLOCK]; 9]],
) {
    assert!(len <= GRAM_CHANNELS && scale.len() >= len.div_ceil(LANES) && acc.len() >= len.div_ceil(LANES));
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            if let Some(rows) = slice_as::<T, f32>(rows) {
                // Whole blocks through the register-shift kernel, a partial block through the
                // lane code (f32 needs no scales).
                let whole = len / LANES;
                // SAFETY: `isa()` returned Avx512 only after detecting avx512f.
                unsafe { super::avx512::gram9_f32(rows, row_stride, base, whole, acc) };
                if !len.is_multiple_of(LANES) {
                    let (base, len) = (base + whole * BLOCK, len % LANES);
                    // SAFETY: as above (avx512f, avx2 and fma detected).
                    unsafe { gram9_avx512(rows, row_stride, base, len, &scale[whole..], &mut acc[whole..]) };
                }
            } else {
                // SAFETY: `isa()` returned Avx512 only after detecting avx512f, avx2 and fma.
                unsafe { gram9_avx512(rows, row_stride, base, len, scale, acc) }
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { gram9_avx2(rows, row_stride, base, len, scale, acc) },
        Isa::Portable => gram9_impl::<T, false>(rows, row_stride, base, len, scale, acc),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gram9_avx512<T: Real>(
    rows: &[T],
    row_stride: usize,
    base: usize,
    len: usize,
    scale: &[[f64; BLOCK]],
    acc: &mut [[[f64; BLOCK]; 9]],
) {
    gram9_impl::<T, true>(rows, row_stride, base, len, scale, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gram9_avx2<T: Real>(
    rows: &[T],
    row_stride: usize,
    base: usize,
    len: usize,
    scale: &[[f64; BLOCK]],
    acc: &mut [[[f64; BLOCK]; 9]],
) {
    gram9_impl::<T, true>(rows, row_stride, base, len, scale, acc)
}

#[inline(always)]
fn gram9_impl<T: Real, const F: bool>(
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

/// Cyclic Jacobi, sweep by sweep in the rounds of [`ROUNDS`], on eight 9x9 symmetric matrices at
/// once (`a[row][col][lane]`, overwritten):
/// on return each lane's diagonal holds its eigenvalues and the columns of `v` its eigenvectors.
///
/// Every lane follows the scalar algorithm: the rotation of pair `(p, q)` is skipped (made the
/// identity) in lanes where `|a_pq| <= ε/4 · Σ|a_ii|`, and sweeps continue until no lane rotates.
/// The matrices must be finite.
///
/// # Errors
/// When some lane still rotates after `max_sweeps` sweeps.
pub(crate) fn jacobi9(a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> Result<(), SvdFailure> {
    jacobi9_on(isa(), a, v, max_sweeps)
}

/// [`jacobi9`] with the build chosen by the caller (`isa` must be one this CPU runs).
fn jacobi9_on(isa: Isa, a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> Result<(), SvdFailure> {
    let converged = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx512 only after detecting avx512f, avx2 and fma.
        Isa::Avx512 => unsafe { jacobi9_avx512(a, v, max_sweeps) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { jacobi9_avx2(a, v, max_sweeps) },
        Isa::Portable => jacobi9_impl::<false>(a, v, max_sweeps),
    };
    if converged {
        Ok(())
    } else {
        Err(SvdFailure::new(format!("Jacobi eigensolver on a 9x9 Gram matrix did not converge in {max_sweeps} sweeps")))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn jacobi9_avx512(a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> bool {
    jacobi9_impl::<true>(a, v, max_sweeps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn jacobi9_avx2(a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> bool {
    jacobi9_impl::<true>(a, v, max_sweeps)
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

#[inline(always)]
fn jacobi9_impl<const F: bool>(a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> bool {
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

/// Rows of the pointwise weight per parallel task of [`pointwise9`].
const PW_TASK_ROWS: usize = 16;

/// The pointwise weight of a 3x3 layer, eight channels at a time: the fast path of
/// `decompose::pointwise_weight` (the reference it is tested against), with the same contract.
///
/// `w` is the OIHW weight (`groups·ng` rows of `cg·9`), `vt` the `C x k x 9` right factors,
/// `pw_scales` (`C x r`) the pointwise multipliers. Writes
/// `pw[n, c_local·r + j] = (M_c v_j)[n] · pw_scales[c·r + j]` (in f64, rounded once) and returns
/// whether every written value is finite. `scratch` holds the per-block coefficients between
/// calls.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pointwise9<T: Real>(
    w: &[T],
    ng: usize,
    cg: usize,
    vt: &[T],
    k: usize,
    r: usize,
    pw_scales: &[f64],
    pw: &mut [T],
    scratch: &mut Vec<[Lanes; 9]>,
) -> bool {
    pointwise9_on(isa(), w, ng, cg, vt, k, r, pw_scales, pw, scratch)
}

/// [`pointwise9`] with the build chosen by the caller (`isa` must be one this CPU runs).
#[allow(clippy::too_many_arguments)]
fn pointwise9_on<T: Real>(
    isa: Isa,
    w: &[T],
    ng: usize,
    cg: usize,
    vt: &[T],
    k: usize,
    r: usize,
    pw_scales: &[f64],
    pw: &mut [T],
    scratch: &mut Vec<[Lanes; 9]>,
) -> bool {
    assert!((1..=9).contains(&r) && r <= k, "rank {r} of a 3x3 layer");
    let channels = w.len() / (ng * 9);
    let groups = channels / cg;
    let blocks = cg.div_ceil(LANES);
    // Coefficients per (group, block): `r` rows of nine taps, `v_j[t]·scale`.
    scratch.clear();
    scratch.resize(groups * blocks * r, [[0.0; LANES]; 9]);
    for c in 0..channels {
        let (g, cl) = (c / cg, c % cg);
        let (b, l) = (cl / LANES, cl % LANES);
        let coef = &mut scratch[(g * blocks + b) * r..(g * blocks + b + 1) * r];
        for j in 0..r {
            let ps = pw_scales[c * r + j];
            let v = &vt[(c * k + j) * 9..(c * k + j + 1) * 9];
            for t in 0..9 {
                coef[j][t][l] = v[t].to_f64_exact() * ps;
            }
        }
    }
    let coefs = &scratch[..];
    // Every task's check is 0 or NaN; NaN makes the sum fail the comparison.
    let check: f64 = pw
        .par_chunks_mut(PW_TASK_ROWS * cg * r)
        .zip(w.par_chunks(PW_TASK_ROWS * cg * 9))
        .enumerate()
        .map_init(
            || vec![[[0.0; LANES]; 9]; PW_TASK_ROWS],
            |xbuf, (task, (p_rows, w_rows))| pw9_rows(isa, r, w_rows, task * PW_TASK_ROWS, ng, cg, coefs, p_rows, xbuf),
        )
        .sum();
    check == 0.0
}

/// [`pw9_impl`] for the rank and the CPU.
#[allow(clippy::too_many_arguments)]
fn pw9_rows<T: Real>(
    isa: Isa,
    r: usize,
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
) -> f64 {
    macro_rules! by_rank {
        ($f:ident) => {
            match r {
                1 => $f::<T, 1>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                2 => $f::<T, 2>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                3 => $f::<T, 3>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                4 => $f::<T, 4>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                5 => $f::<T, 5>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                6 => $f::<T, 6>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                7 => $f::<T, 7>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                8 => $f::<T, 8>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                _ => $f::<T, 9>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx512 only after detecting avx512f, avx2 and fma.
        Isa::Avx512 => unsafe { by_rank!(pw9_avx512) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { by_rank!(pw9_avx2) },
        Isa::Portable => by_rank!(pw9_portable),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pw9_avx512<T: Real, const R: usize>(
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
) -> f64 {
    pw9_impl::<T, true, true, R>(w_rows, n0, ng, cg, coefs, p_rows, xbuf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pw9_avx2<T: Real, const R: usize>(
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
) -> f64 {
    pw9_impl::<T, true, false, R>(w_rows, n0, ng, cg, coefs, p_rows, xbuf)
}

fn pw9_portable<T: Real, const R: usize>(
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
) -> f64 {
    pw9_impl::<T, false, false, R>(w_rows, n0, ng, cg, coefs, p_rows, xbuf)
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

/// Rows `n0 ..` of the pointwise weight at rank `R`: returns 0 when every written value is
/// finite (NaN otherwise). `X512` (set only in the AVX-512 build) hands whole 8-channel blocks
/// of f32 weights to `avx512::pw9_block_f32`.
#[inline(always)]
fn pw9_impl<T: Real, const F: bool, const X512: bool, const R: usize>(
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
) -> f64 {
    let blocks = cg.div_ceil(LANES);
    let rows = p_rows.len() / (cg * R);
    let xbuf = &mut xbuf[..rows];
    // `p · 0`: 0 for a finite `p`, NaN otherwise.
    let mut check = [0.0f64; LANES];
    for b in 0..blocks {
        let lanes = LANES.min(cg - b * LANES);
        #[cfg(target_arch = "x86_64")]
        if X512 && lanes == LANES {
            if let (Some(w32), Some(p32)) = (slice_as::<T, f32>(w_rows), slice_as_mut::<T, f32>(p_rows)) {
                // SAFETY: `X512` is set only in the build that runs after detecting avx512f.
                check[0] += f64::from(unsafe { super::avx512::pw9_block_f32::<R>(w32, n0, ng, cg, b, coefs, p32) });
                continue;
            }
        }
        // The block's values of every row, transposed to `[tap][lane]` in memory first: kept in
        // memory (not registers), the compute below reads them as whole vectors.
        for (xt, w_row) in xbuf.iter_mut().zip(w_rows.chunks_exact(cg * 9)) {
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
        for (i, (x, p_row)) in xbuf.iter().zip(p_rows.chunks_exact_mut(cg * R)).enumerate() {
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
                check = vfma::<F>(&p[j], &[0.0; LANES], &check);
            }
            let dst = &mut p_row[b * LANES * R..(b * LANES + lanes) * R];
            for (l, out) in dst.chunks_exact_mut(R).enumerate() {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = T::from_f64_lossy(p[j][l]);
                }
            }
        }
    }
    check.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every build this CPU runs, the portable one included.
    fn builds() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if isa() == Isa::Avx512 {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    #[test]
    fn pointwise9_builds_agree() {
        // 2 groups of 11 input channels (a partial lane block), 20 rows per group: two tasks.
        let (ng, cg, groups) = (20usize, 11usize, 2usize);
        let channels = cg * groups;
        let w: Vec<f32> = (0..groups * ng * cg * 9).map(|i| ((i as f32) * 0.311).cos()).collect();
        let vt: Vec<f32> = (0..channels * 9 * 9).map(|i| ((i as f32) * 0.173).sin()).collect();
        for r in 1..=9 {
            let scales: Vec<f64> = (0..channels * r).map(|i| 0.5 + (i % 5) as f64).collect();
            let mut results = Vec::new();
            for build in builds() {
                let mut pw = vec![0.0f32; groups * ng * cg * r];
                let mut scratch = Vec::new();
                assert!(pointwise9_on(build, &w, ng, cg, &vt, 9, r, &scales, &mut pw, &mut scratch));
                results.push((build, pw));
            }
            let (_, p0) = &results[0];
            for (build, p) in &results[1..] {
                for (a, b) in p.iter().zip(p0) {
                    assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{build:?} r{r}: {a} vs {b}");
                }
            }
        }
    }

    /// Every build of the kernels agrees with the portable one and with the definitions.
    #[test]
    fn gram9_matches_definition() {
        // 70 rows: more than one row chunk of the AVX-512 kernel; up to eight lane blocks plus a
        // partial one.
        let (n, cg) = (70usize, 70usize);
        let w: Vec<f32> = (0..n * cg * 9).map(|i| ((i as f32) * 0.731).sin()).collect();
        for (cl0, len) in [(0usize, 11usize), (8, 3), (2, 1), (0, 8), (0, 64), (3, 19), (61, 9)] {
            let mut scale = [[0.0; BLOCK]; 8];
            for c in 0..len {
                scale[c / LANES][(c % LANES) * 9..(c % LANES + 1) * 9].fill(1.0);
            }
            for build in builds() {
                let mut acc = [[[0.0; BLOCK]; 9]; 8];
                gram9_on(build, &w, cg * 9, cl0 * 9, len, &scale, &mut acc);
                let mut acc0 = [[[0.0; BLOCK]; 9]; 8];
                gram9_impl::<f32, false>(&w, cg * 9, cl0 * 9, len, &scale, &mut acc0);
                for c in 0..len {
                    let (b, l) = (c / LANES, c % LANES);
                    for a in 0..9 {
                        for s in 0..9 - a {
                            let want: f64 = (0..n)
                                .map(|o| {
                                    let x = &w[(o * cg + cl0 + c) * 9..];
                                    f64::from(x[a]) * f64::from(x[a + s])
                                })
                                .sum();
                            let (got, got0) = (acc[b][s][l * 9 + a], acc0[b][s][l * 9 + a]);
                            assert!((got - want).abs() <= 1e-12 * n as f64, "{got} vs {want}");
                            assert!((got0 - want).abs() <= 1e-12 * n as f64, "{got0} vs {want}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn jacobi9_diagonalises_every_lane() {
        let mut a: Mat9 = [[[0.0; LANES]; 9]; 9];
        let mut orig = a;
        for l in 0..LANES {
            for i in 0..9 {
                for j in 0..=i {
                    // Lane 0: zero; lane 1: identity (all eigenvalues repeated); others random.
                    let x = match l {
                        0 => 0.0,
                        1 => f64::from(u8::from(i == j)),
                        _ => (((i * 9 + j) * (l + 3)) as f64 * 0.377).sin(),
                    };
                    a[i][j][l] = x;
                    a[j][i][l] = x;
                }
            }
        }
        orig.clone_from(&a);
        for build in builds() {
            let mut m = orig;
            let mut v = [[[0.0; LANES]; 9]; 9];
            jacobi9_on(build, &mut m, &mut v, 64).unwrap();
            for l in 0..LANES {
                // V diag(m) Vᵀ == orig and VᵀV == I.
                for i in 0..9 {
                    for j in 0..9 {
                        let rec: f64 = (0..9).map(|k| v[i][k][l] * m[k][k][l] * v[j][k][l]).sum();
                        assert!((rec - orig[i][j][l]).abs() < 1e-13, "lane {l} ({i},{j}): {rec}");
                        let dot: f64 = (0..9).map(|k| v[k][i][l] * v[k][j][l]).sum();
                        assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-14);
                    }
                }
            }
        }
    }
}
