//! AVX-512 kernels written with explicit intrinsics, for the f32 3x3 hot paths where the
//! auto-vectorised lane code of [`lanes`](super::lanes) is load-bound.
//!
//! Every function here is the fast path of a reference in `lanes` and is tested against it.

// Vector arrays are indexed by the same index as the memory they mirror, on purpose.
#![allow(clippy::needless_range_loop)]

use super::lanes::BLOCK;
use std::arch::x86_64::*;

/// Rows converted to f64 per chunk: 32 rows of ten vectors are 20 KiB, resident in L1.
const ROW_CHUNK: usize = 32;

/// The Gram accumulation of `lanes::gram9` for `blocks` whole 8-channel blocks of f32 values:
/// `acc[b][s][l·9 + a] += Σ_rows x[l·9 + a] · x[l·9 + a + s]` with `x` the 72 values of block
/// `b` (`rows[row·row_stride + base + b·72 ..]`), the products formed in f64 (exact) and
/// summed in f64.
///
/// The shifted operand `x[i + s]` is built in registers (`valignq` of two neighbouring
/// vectors) instead of loaded from an unaligned address: the loads that split cache lines were
/// what bounded the auto-vectorised kernel. Each row is converted to f64 once per chunk and then
/// read from L1 once per pair of shifts, with the eighteen accumulators of the pair in
/// registers across the whole chunk.
///
/// # Panics
/// When a block reaches past a row (`base + blocks·72 > row_stride`) or `acc` is short.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gram9_f32(
    rows: &[f32],
    row_stride: usize,
    base: usize,
    blocks: usize,
    acc: &mut [[[f64; BLOCK]; 9]],
) {
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
