//! The AVX-512 build (`avx512f,avx2,fma`) of every kernel: the lane code of
//! [`portable`] compiled for AVX-512, and, for the f32 3x3 hot paths where that
//! auto-vectorised code is load-bound, kernels written with explicit intrinsics.
//!
//! Every intrinsics kernel here is the fast path of a body in `portable` and is tested against
//! it.
//!
//! # Safety
//! Every `unsafe fn` here requires a CPU with AVX-512F, AVX2 and FMA (what
//! [`isa`](super::isa) returns [`Isa::Avx512`](super::Isa::Avx512) for).

// Vector arrays are indexed by the same index as the memory they mirror, on purpose.
#![allow(clippy::needless_range_loop)]

use super::lanes::{Lanes, Mat9, BLOCK, LANES};
use super::portable;
use crate::scalar::{slice_as, slice_as_mut, Real};
use std::arch::x86_64::*;

/// [`gram9`](super::gram9) for AVX-512: whole blocks of f32 values through the register-shift
/// kernel [`gram9_f32`], a partial block and f64 values through the lane code (f32 needs no
/// scales).
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn gram9<T: Real>(
    rows: &[T],
    row_stride: usize,
    base: usize,
    len: usize,
    scale: &[[f64; BLOCK]],
    acc: &mut [[[f64; BLOCK]; 9]],
) {
    if let Some(rows) = slice_as::<T, f32>(rows) {
        let whole = len / LANES;
        // SAFETY: the caller guarantees avx512f (this function's contract).
        unsafe { gram9_f32(rows, row_stride, base, whole, acc) };
        if !len.is_multiple_of(LANES) {
            let (base, len) = (base + whole * BLOCK, len % LANES);
            portable::gram9::<f32, true>(rows, row_stride, base, len, &scale[whole..], &mut acc[whole..]);
        }
    } else {
        portable::gram9::<T, true>(rows, row_stride, base, len, scale, acc)
    }
}

/// [`gram_packed`](super::gram_packed) compiled for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gram_packed<T: Real>(
    rows: &[T],
    row_stride: usize,
    cl0: usize,
    len: usize,
    taps: usize,
    scale: &[f64],
    xt: &mut [f64],
    acc: &mut [f64],
) {
    portable::gram_packed(rows, row_stride, cl0, len, taps, scale, xt, acc)
}

/// [`jacobi9`](super::jacobi9) compiled for AVX-512: whether every lane converged.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn jacobi9(a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> bool {
    portable::jacobi9::<true>(a, v, max_sweeps)
}

/// The pointwise rows of `pair` for AVX-512 (the contract of [`portable::pw9`]): whole
/// 8-channel blocks of f32 weights through [`pw9_block_f32`], other blocks through the lane code.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn pw9<T: Real, const R: usize>(
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
        if (b + 1) * LANES <= cg {
            if let (Some(w32), Some(p32)) = (slice_as::<T, f32>(w_rows), slice_as_mut::<T, f32>(p_rows)) {
                // SAFETY: the caller guarantees avx512f (this function's contract).
                check[0] += f64::from(unsafe { pw9_block_f32::<R>(w32, n0, ng, cg, b, coefs, p32) });
                continue;
            }
        }
        portable::pw9_block::<T, true, R>(w_rows, n0, ng, cg, b, coefs, p_rows, xbuf, &mut check);
    }
    check.iter().sum()
}

/// Rows converted to f64 per chunk: 32 rows of ten vectors are 20 KiB, resident in L1.
const ROW_CHUNK: usize = 32;

/// The Gram accumulation of [`gram9`](super::gram9) for `blocks` whole 8-channel blocks of f32 values:
/// `acc[b][s][l·9 + a] += Σ_rows x[l·9 + a] · x[l·9 + a + s]` with `x` the 72 values of block
/// `b` (`rows[row·row_stride + base + b·72 ..]`), the products formed in f64 (exact) and
/// summed in f64.
///
/// The shifted operand `x[i + s]` is built in registers (`valignq` of two neighbouring
/// vectors) instead of loaded from an unaligned address: the loads that split cache lines were
/// what bounded the auto-vectorised kernel. Each row is converted to f64 once per chunk and then
/// read from L1 once per pair of shifts, with the eighteen accumulators of the pair in
/// registers across the whole chunk; the next chunk's rows are prefetched meanwhile.
///
/// # Panics
/// When a block reaches past a row (`base + blocks·72 > row_stride`) or `acc` is short.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn gram9_f32(rows: &[f32], row_stride: usize, base: usize, blocks: usize, acc: &mut [[[f64; BLOCK]; 9]]) {
    assert!(base + blocks * BLOCK <= row_stride && acc.len() >= blocks);
    let nrows = rows.len() / row_stride;
    let mut xs = [[_mm512_setzero_pd(); 10]; ROW_CHUNK];
    let mut n = 0;
    while n < nrows {
        let m = ROW_CHUNK.min(nrows - n);
        for (b, acc_b) in acc.iter_mut().enumerate().take(blocks) {
            for (k, x) in xs[..m].iter_mut().enumerate() {
                let start = (n + k) * row_stride + base + b * BLOCK;
                let src = &rows[start..start + BLOCK];
                let ahead = start + ROW_CHUNK * row_stride;
                if ahead + BLOCK <= rows.len() {
                    let p = rows[ahead..].as_ptr().cast::<i8>();
                    for off in [0, 64, 128, 192, 256, 4 * BLOCK - 1] {
                        // SAFETY: inside `rows` (checked above); a prefetch has no effect on memory.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
                    }
                }
                for i in 0..9 {
                    // SAFETY: `src` holds 72 values; this reads 8 at `8i <= 64`.
                    x[i] = _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(src.as_ptr().add(8 * i)) });
                }
            }
            let chunk = &xs[..m];
            shift_pair::<0, 1, true>(chunk, acc_b);
            shift_pair::<2, 3, true>(chunk, acc_b);
            shift_pair::<4, 5, true>(chunk, acc_b);
            shift_pair::<6, 7, true>(chunk, acc_b);
            shift_pair::<8, 8, false>(chunk, acc_b);
        }
        n += m;
    }
}

/// `x[8i + S ..][..8]` of a row held as ten vectors (the tenth zero): `valignq` of vectors `i`
/// and `i + 1`.
#[target_feature(enable = "avx512f")]
#[inline]
fn shifted<const S: i32>(lo: __m512d, hi: __m512d) -> __m512d {
    match S {
        0 => lo,
        8 => hi,
        _ => _mm512_castsi512_pd(_mm512_alignr_epi64::<S>(_mm512_castpd_si512(hi), _mm512_castpd_si512(lo))),
    }
}

/// Accumulates shifts `S0` and (when `TWO`) `S1` over every row of `chunk` into `acc`.
#[target_feature(enable = "avx512f")]
#[inline]
fn shift_pair<const S0: i32, const S1: i32, const TWO: bool>(chunk: &[[__m512d; 10]], acc: &mut [[f64; BLOCK]; 9]) {
    // SAFETY: every load and store below is of 8 values inside a `[f64; 72]` at `8i <= 64`.
    unsafe {
        let mut a0 = [_mm512_setzero_pd(); 9];
        let mut a1 = [_mm512_setzero_pd(); 9];
        for i in 0..9 {
            a0[i] = _mm512_loadu_pd(acc[S0 as usize].as_ptr().add(8 * i));
            if TWO {
                a1[i] = _mm512_loadu_pd(acc[S1 as usize].as_ptr().add(8 * i));
            }
        }
        for x in chunk {
            for i in 0..9 {
                let (lo, hi) = (x[i], x[i + 1]);
                a0[i] = _mm512_fmadd_pd(lo, shifted::<S0>(lo, hi), a0[i]);
                if TWO {
                    a1[i] = _mm512_fmadd_pd(lo, shifted::<S1>(lo, hi), a1[i]);
                }
            }
        }
        for i in 0..9 {
            _mm512_storeu_pd(acc[S0 as usize].as_mut_ptr().add(8 * i), a0[i]);
            if TWO {
                _mm512_storeu_pd(acc[S1 as usize].as_mut_ptr().add(8 * i), a1[i]);
            }
        }
    }
}

/// Permutation tables of [`deinterleave9`]: for the vector holding taps `2k` and `2k + 1`
/// (the latter absent for `k = 4`), element `e = h·8 + l` is tap `2k + h` of lane `l`, at
/// position `p = 9l + 2k + h` of the 72 values. `idx[k][0]` indexes positions `0..32` (two
/// sources), `idx[k][1]` positions `32..64`, `idx[k][2]` positions `64..72`; `mask[k][0]`
/// marks the elements taken from the second range, `mask[k][1]` from the third.
struct Deinterleave;

impl Deinterleave {
    const TABLES: ([[[i32; 16]; 3]; 5], [[u16; 2]; 5]) = {
        let mut idx = [[[0i32; 16]; 3]; 5];
        let mut mask = [[0u16; 2]; 5];
        let mut k = 0;
        while k < 5 {
            let mut e = 0;
            while e < 16 {
                let t = 2 * k + e / 8;
                if t < 9 {
                    let p = (9 * (e % 8) + t) as i32;
                    if p < 32 {
                        idx[k][0][e] = p;
                    } else if p < 64 {
                        idx[k][1][e] = p - 32;
                        mask[k][0] |= 1 << e;
                    } else {
                        idx[k][2][e] = p - 64;
                        mask[k][1] |= 1 << e;
                    }
                }
                e += 1;
            }
            k += 1;
        }
        (idx, mask)
    };
}

/// `x[t]` lane `l` = `src[l·9 + t]` in f64: eight 3x3 channels of one row, transposed to one
/// vector per tap (the layout the lane kernels compute in), with register permutes instead of
/// 72 scalar moves.
#[target_feature(enable = "avx512f")]
#[inline]
fn deinterleave9(src: &[f32]) -> [__m512d; 9] {
    assert!(src.len() >= BLOCK);
    let (idx, mask) = Deinterleave::TABLES;
    let mut x = [_mm512_setzero_pd(); 9];
    // SAFETY: the loads read `src[0..72]` (the last one masked to eight values).
    unsafe {
        let p = src.as_ptr();
        let s0 = _mm512_loadu_ps(p);
        let s1 = _mm512_loadu_ps(p.add(16));
        let s2 = _mm512_loadu_ps(p.add(32));
        let s3 = _mm512_loadu_ps(p.add(48));
        let s4 = _mm512_maskz_loadu_ps(0x00FF, p.add(64));
        for k in 0..5 {
            let lo = _mm512_permutex2var_ps(s0, _mm512_loadu_si512(idx[k][0].as_ptr().cast()), s1);
            let mid = _mm512_permutex2var_ps(s2, _mm512_loadu_si512(idx[k][1].as_ptr().cast()), s3);
            let hi = _mm512_permutexvar_ps(_mm512_loadu_si512(idx[k][2].as_ptr().cast()), s4);
            let v = _mm512_mask_blend_ps(mask[k][1], _mm512_mask_blend_ps(mask[k][0], lo, mid), hi);
            x[2 * k] = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            if k < 4 {
                x[2 * k + 1] = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
            }
        }
    }
    x
}

/// Permutation tables of [`interleave_store`] at rank `R`: output element `i = 16o + e` is
/// `p[j][l]` with `l = i / R`, `j = i % R`. The rows are packed two per vector
/// (`q[m] = p[2m] | p[2m + 1]`, `m = j / 2`) and the packed vectors taken in pairs:
/// `idx[o][pair]` indexes the pair `(q[2·pair], q[2·pair + 1])`, `mask[o][pair - 1]` marks the
/// elements taken from pairs 1 and 2.
struct Interleave<const R: usize>;

impl<const R: usize> Interleave<R> {
    const TABLES: ([[[i32; 16]; 3]; 5], [[u16; 2]; 5]) = {
        let mut idx = [[[0i32; 16]; 3]; 5];
        let mut mask = [[0u16; 2]; 5];
        let mut o = 0;
        while o < 5 {
            let mut e = 0;
            while e < 16 {
                let i = 16 * o + e;
                if i < 8 * R {
                    let (l, j) = (i / R, i % R);
                    let m = j / 2;
                    let within = ((m % 2) * 16 + (j % 2) * 8 + l) as i32;
                    let pair = m / 2;
                    idx[o][pair][e] = within;
                    if pair > 0 {
                        mask[o][pair - 1] |= 1 << e;
                    }
                }
                e += 1;
            }
            o += 1;
        }
        (idx, mask)
    };
}

/// `dst[l·R + j] = p[j][l]` for eight lanes (`dst.len() >= 8R`), the values already f32
/// (`p[j]` holds eight f32 in its lower half): the pointwise weight of eight channels of one
/// row in its final layout, written with register permutes and whole-vector stores.
#[target_feature(enable = "avx512f")]
#[inline]
fn interleave_store<const R: usize>(p: &[__m256; R], dst: &mut [f32]) {
    assert!(dst.len() >= 8 * R);
    let (idx, mask) = Interleave::<R>::TABLES;
    let mut q = [_mm512_setzero_ps(); 5];
    for m in 0..R.div_ceil(2) {
        let a = p[2 * m];
        let b = if 2 * m + 1 < R { p[2 * m + 1] } else { a };
        q[m] =
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(_mm256_castps_pd(a)), _mm256_castps_pd(b)));
    }
    // SAFETY: the index loads read `[i32; 16]` tables; the stores write `dst[16o ..]`, masked
    // to the `8R` values.
    unsafe {
        for o in 0..R.div_ceil(2) {
            let mut v = _mm512_permutex2var_ps(q[0], _mm512_loadu_si512(idx[o][0].as_ptr().cast()), q[1]);
            if R > 4 {
                let w = _mm512_permutex2var_ps(q[2], _mm512_loadu_si512(idx[o][1].as_ptr().cast()), q[3]);
                v = _mm512_mask_blend_ps(mask[o][0], v, w);
            }
            if R > 8 {
                let w = _mm512_permutexvar_ps(_mm512_loadu_si512(idx[o][2].as_ptr().cast()), q[4]);
                v = _mm512_mask_blend_ps(mask[o][1], v, w);
            }
            let ptr = dst.as_mut_ptr().add(16 * o);
            if 16 * (o + 1) <= 8 * R {
                _mm512_storeu_ps(ptr, v);
            } else {
                _mm512_mask_storeu_ps(ptr, 0x00FF, v);
            }
        }
    }
}

/// Lane block `b` (a whole one: eight channels) of rows `n0 ..` of the pointwise weight at
/// rank `R` for f32 weights: the AVX-512 form of [`portable::pw9_block`] (same arguments and
/// coefficient layout), with the transposes done in registers. Returns 0 unless
/// a written value is not finite.
///
/// # Safety
/// The CPU must support AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn pw9_block_f32<const R: usize>(
    w_rows: &[f32],
    n0: usize,
    ng: usize,
    cg: usize,
    b: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [f32],
) -> f32 {
    let blocks = cg.div_ceil(8);
    assert!((b + 1) * 8 <= cg);
    // `p − p` is 0 for a finite `p` and NaN otherwise: summed over the block, 0 exactly when
    // every written value is finite.
    let mut check = _mm256_setzero_ps();
    for (i, (w_row, p_row)) in w_rows.chunks_exact(cg * 9).zip(p_rows.chunks_exact_mut(cg * R)).enumerate() {
        let g = (n0 + i) / ng;
        let coef = &coefs[(g * blocks + b) * R..(g * blocks + b + 1) * R];
        let x = deinterleave9(&w_row[b * BLOCK..(b + 1) * BLOCK]);
        let mut p = [_mm256_setzero_ps(); R];
        for j in 0..R {
            let v = &coef[j];
            // SAFETY: every load reads a whole `[f64; 8]`.
            let mut acc = _mm512_mul_pd(x[0], unsafe { _mm512_loadu_pd(v[0].as_ptr()) });
            for t in 1..9 {
                acc = _mm512_fmadd_pd(x[t], unsafe { _mm512_loadu_pd(v[t].as_ptr()) }, acc);
            }
            p[j] = _mm512_cvtpd_ps(acc);
            check = _mm256_add_ps(check, _mm256_sub_ps(p[j], p[j]));
        }
        interleave_store::<R>(&p, &mut p_row[b * 8 * R..(b + 1) * 8 * R]);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: stores eight f32 values into an `[f32; 8]`.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), check) };
    lanes.iter().sum()
}
