//! The types and helpers every kernel shares: eight `f64` lanes, one per channel, written as
//! fixed-size arrays so that the compiler turns every lane loop into one vector instruction.

/// Channels per lane block.
pub(crate) const LANES: usize = 8;
/// Values of one 8-channel block of a 3x3 row.
pub(crate) const BLOCK: usize = LANES * 9;
/// Channels per call of [`gram9`](super::gram9) at most (eight lane blocks).
pub(crate) const GRAM_CHANNELS: usize = 8 * LANES;

/// Eight lanes of `f64`.
pub(crate) type Lanes = [f64; LANES];
/// A 9x9 symmetric matrix per lane: `m[row][col][lane]`.
pub(crate) type Mat9 = [[Lanes; 9]; 9];

/// `a · b + c`, fused when the build has FMA.
#[inline(always)]
pub(super) fn fma<const F: bool>(a: f64, b: f64, c: f64) -> f64 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `a · b + c` lane by lane.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(super) fn vfma<const F: bool>(a: &Lanes, b: &Lanes, c: &Lanes) -> Lanes {
    let mut out = [0.0; LANES];
    for l in 0..LANES {
        out[l] = fma::<F>(a[l], b[l], c[l]);
    }
    out
}
