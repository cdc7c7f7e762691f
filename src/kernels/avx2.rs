//! The AVX2 + FMA build of every kernel: the lane code of [`portable`] compiled
//! with `#[target_feature(enable = "avx2,fma")]` and fused multiply-adds (`F = true`).
//!
//! # Safety
//! Every function here requires a CPU with AVX2 and FMA (what [`isa`](super::isa) returns
//! [`Isa::Avx2`](super::Isa::Avx2) or better for).

use super::lanes::{Lanes, Mat9, BLOCK};
use super::portable;
use crate::scalar::Real;

/// [`gram9`](super::gram9) compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gram9<T: Real>(
    rows: &[T],
    row_stride: usize,
    base: usize,
    len: usize,
    scale: &[[f64; BLOCK]],
    acc: &mut [[[f64; BLOCK]; 9]],
) {
    portable::gram9::<T, true>(rows, row_stride, base, len, scale, acc)
}

/// [`gram_packed`](super::gram_packed) compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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

/// [`jacobi9`](super::jacobi9) compiled for AVX2 + FMA: whether every lane converged.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn jacobi9(a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> bool {
    portable::jacobi9::<true>(a, v, max_sweeps)
}

/// [`portable::pw9`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pw9<T: Real, const R: usize>(
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
) -> f64 {
    portable::pw9::<T, true, R>(w_rows, n0, ng, cg, coefs, p_rows, xbuf)
}
