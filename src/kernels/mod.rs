//! SIMD kernels: 3x3 Gram accumulation and lane-wise Jacobi for [`GramSvd`](crate::svd::GramSvd),
//! the general Gram accumulation for other kernel sizes, and the pointwise writer of a pair
//! ([`pair`], used by the decomposition); plus the one place the CPU's features are detected.
//!
//! Each kernel has a portable build and, on x86_64, AVX2 + FMA and AVX-512 builds; the
//! dispatch functions here pick one with [`isa`], which detects the CPU once per process and
//! caches the answer. The builds run the same operations in the same order and differ only in
//! whether multiply-adds are fused, so which build runs decides the bits.
//!
//! Layout (arrows only point down; no module imports one that imports it back):
//!
//! ```text
//! pair.rs      pointwise9 (decompose's 3x3 fast path): coefficients, tasks, dispatch by rank
//! mod.rs       Isa, isa(), avx2_fma(); dispatch of gram9, gram_packed, jacobi9
//! avx2.rs      #[target_feature(enable = "avx2,fma")] builds of the portable bodies
//! avx512.rs    AVX-512 builds, and the f32 intrinsics kernels (Gram, pointwise block)
//! portable.rs  every kernel body, once, over const F (fused or not); F = false is portable
//! lanes.rs     shared types and helpers: LANES, BLOCK, Lanes, Mat9, fma, vfma
//! ```
//!
//! Users: `svd::gram` (gram9, gram_packed, jacobi9), `decompose` (pair), `exec::fast`
//! ([`avx2_fma`]). Nothing here imports `svd`, `decompose` or `exec`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod lanes;
pub(crate) mod pair;
mod portable;

pub(crate) use lanes::{Mat9, BLOCK, GRAM_CHANNELS, LANES};

use crate::scalar::Real;
use std::sync::OnceLock;

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

/// The features of this CPU the kernels use.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    /// AVX2 and FMA.
    avx2_fma: bool,
    /// AVX-512F, AVX2 and FMA.
    avx512: bool,
}

/// The CPU's features, detected on the first call and cached for the process, capped by the
/// `DAC_ISA` environment variable ([`ISA_VAR`]).
#[inline]
fn cpu() -> Cpu {
    static CPU: OnceLock<Cpu> = OnceLock::new();
    *CPU.get_or_init(|| cap(detect(), std::env::var(ISA_VAR).ok().as_deref()))
}

/// The environment variable capping the instruction set the kernels use: `portable` or `avx2`
/// run those builds end to end on a CPU that has better ones (tests and CI do); `avx512` or
/// anything else leaves the detected features alone. It never enables what the CPU lacks.
pub(crate) const ISA_VAR: &str = "DAC_ISA";

/// `cpu` with at most the features `limit` names.
fn cap(cpu: Cpu, limit: Option<&str>) -> Cpu {
    match limit {
        Some("portable") => Cpu { avx2_fma: false, avx512: false },
        Some("avx2") => Cpu { avx512: false, ..cpu },
        _ => cpu,
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn detect() -> Cpu {
    let avx2_fma = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    Cpu { avx2_fma, avx512: avx2_fma && std::arch::is_x86_feature_detected!("avx512f") }
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn detect() -> Cpu {
    Cpu { avx2_fma: false, avx512: false }
}

/// The best build of the lane kernels this CPU runs.
#[inline]
pub(crate) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = cpu();
        if cpu.avx512 {
            return Isa::Avx512;
        }
        if cpu.avx2_fma {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// The name of [`isa`]'s build: `"avx512"`, `"avx2"` or `"portable"`.
pub(crate) fn isa_name() -> &'static str {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "avx512",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "avx2",
        Isa::Portable => "portable",
    }
}

/// Whether this CPU runs AVX2 and FMA (x86 and x86_64; `false` elsewhere): what the
/// `#[target_feature(enable = "avx2,fma")]` builds of `exec::fast` need.
#[inline]
pub(crate) fn avx2_fma() -> bool {
    cpu().avx2_fma
}

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
        // SAFETY: `isa()` returned Avx512 only after detecting avx512f, avx2 and fma.
        Isa::Avx512 => unsafe { avx512::gram9(rows, row_stride, base, len, scale, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { avx2::gram9(rows, row_stride, base, len, scale, acc) },
        Isa::Portable => portable::gram9::<T, false>(rows, row_stride, base, len, scale, acc),
    }
}

/// Accumulates the Gram matrices of the `len` channels starting at local channel `cl0` of every
/// row of `rows` (rows of `row_stride` values, `taps` values a channel), each value multiplied
/// by its channel's `scale` first, for any number of taps: `acc[b][p][lane]` (blocks of eight
/// channels, `p` the upper-triangle pairs `a <= b` in row order) receives the sums of products.
/// `xt` (`taps · 8` values) is scratch space.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gram_packed<T: Real>(
    rows: &[T],
    row_stride: usize,
    cl0: usize,
    len: usize,
    taps: usize,
    scale: &[f64],
    xt: &mut [f64],
    acc: &mut [f64],
) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx512 only after detecting avx512f, avx2 and fma.
        Isa::Avx512 => unsafe { avx512::gram_packed(rows, row_stride, cl0, len, taps, scale, xt, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { avx2::gram_packed(rows, row_stride, cl0, len, taps, scale, xt, acc) },
        Isa::Portable => portable::gram_packed(rows, row_stride, cl0, len, taps, scale, xt, acc),
    }
}

/// Cyclic Jacobi, sweep by sweep in rounds of four disjoint pairs, on eight 9x9 symmetric
/// matrices at once (`a[row][col][lane]`, overwritten): on return each lane's diagonal holds its
/// eigenvalues and the columns of `v` its eigenvectors. Returns `false` when some lane still
/// rotates after `max_sweeps` sweeps.
///
/// Every lane follows the scalar algorithm: the rotation of pair `(p, q)` is skipped (made the
/// identity) in lanes where `|a_pq| <= ε/4 · Σ|a_ii|`, and sweeps continue until no lane rotates.
/// The matrices must be finite.
pub(crate) fn jacobi9(a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> bool {
    jacobi9_on(isa(), a, v, max_sweeps)
}

/// [`jacobi9`] with the build chosen by the caller (`isa` must be one this CPU runs).
fn jacobi9_on(isa: Isa, a: &mut Mat9, v: &mut Mat9, max_sweeps: usize) -> bool {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx512 only after detecting avx512f, avx2 and fma.
        Isa::Avx512 => unsafe { avx512::jacobi9(a, v, max_sweeps) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { avx2::jacobi9(a, v, max_sweeps) },
        Isa::Portable => portable::jacobi9::<false>(a, v, max_sweeps),
    }
}

/// Every build this CPU runs, the portable one included.
#[cfg(test)]
pub(crate) fn builds() -> Vec<Isa> {
    let mut v = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if avx2_fma() {
            v.push(Isa::Avx2);
        }
        if isa() == Isa::Avx512 {
            v.push(Isa::Avx512);
        }
    }
    v
}

#[cfg(test)]
// The tests index several arrays by the same lane/tap index, as the kernels do.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    /// Every build of the kernels agrees with the portable one and with the definitions.
    #[test]
    fn the_isa_variable_only_ever_lowers_the_features() {
        let all = Cpu { avx2_fma: true, avx512: true };
        let none = Cpu { avx2_fma: false, avx512: false };
        let show = |c: Cpu| (c.avx2_fma, c.avx512);
        assert_eq!(show(cap(all, Some("portable"))), (false, false));
        assert_eq!(show(cap(all, Some("avx2"))), (true, false));
        assert_eq!(show(cap(all, Some("avx512"))), (true, true));
        assert_eq!(show(cap(all, None)), (true, true));
        assert_eq!(show(cap(none, Some("avx2"))), (false, false));
        assert_eq!(show(cap(none, Some("avx512"))), (false, false));
    }

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
                portable::gram9::<f32, false>(&w, cg * 9, cl0 * 9, len, &scale, &mut acc0);
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
            assert!(jacobi9_on(build, &mut m, &mut v, 64), "{build:?} did not converge");
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
