//! The pointwise weight of a 3x3 pair, eight channels at a time: the fast path of the
//! decomposition's `pointwise_weight` (used only by `decompose`). The per-rank bodies live in
//! [`portable`] and its instruction-set builds; this file gathers the coefficients, splits the
//! rows into parallel tasks and picks the build.

use super::lanes::{Lanes, LANES};
use super::portable;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use super::{isa, Isa};
use crate::scalar::Real;
use rayon::prelude::*;

/// Scratch space of [`pointwise9`] kept between calls: the per-block coefficients.
pub(crate) type Scratch = Vec<[Lanes; 9]>;

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
    scratch: &mut Scratch,
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
    scratch: &mut Scratch,
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

/// [`portable::pw9`] (or its AVX2 / AVX-512 build) for the rank and the CPU.
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
        ($($f:ident)::+) => {
            match r {
                1 => $($f)::+::<T, 1>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                2 => $($f)::+::<T, 2>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                3 => $($f)::+::<T, 3>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                4 => $($f)::+::<T, 4>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                5 => $($f)::+::<T, 5>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                6 => $($f)::+::<T, 6>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                7 => $($f)::+::<T, 7>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                8 => $($f)::+::<T, 8>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
                _ => $($f)::+::<T, 9>(w_rows, n0, ng, cg, coefs, p_rows, xbuf),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx512 only after detecting avx512f, avx2 and fma.
        Isa::Avx512 => unsafe { by_rank!(avx512::pw9) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { by_rank!(avx2::pw9) },
        Isa::Portable => by_rank!(pw9_portable),
    }
}

/// The portable build of [`portable::pw9`].
fn pw9_portable<T: Real, const R: usize>(
    w_rows: &[T],
    n0: usize,
    ng: usize,
    cg: usize,
    coefs: &[[Lanes; 9]],
    p_rows: &mut [T],
    xbuf: &mut [[Lanes; 9]],
) -> f64 {
    portable::pw9::<T, false, R>(w_rows, n0, ng, cg, coefs, p_rows, xbuf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::builds;

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
}
