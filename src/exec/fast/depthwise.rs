//! The direct depthwise kernels: padded planes with one `axpy` per tap, direct row loops, or a
//! table of valid taps on narrow outputs.

use super::{valid_range, Job};
use crate::scalar::Real;
use rayon::prelude::*;

/// The depthwise path over a whole batch: one task per input plane and its output planes.
pub(super) fn depthwise<T: Real>(job: &Job<'_, T>, input: &[T], out: &mut [T], par: bool) {
    let (h, w) = job.in_hw;
    let (oh, ow) = job.out_hw;
    let pixels = job.pixels();
    let (n_in, mult) = (job.shape.in_channels, job.shape.out_per_group());
    let g = &job.geo;
    let taps = job.shape.taps();
    let x_ranges: Vec<(usize, usize)> =
        (0..job.shape.kw).map(|kx| valid_range(ow, g.stride.1, kx * g.dilation.1, g.padding.left, w)).collect();
    // Stride 1: the padded, full-width kernel; otherwise a tap table on narrow outputs (its
    // indices are u32), row loops elsewhere.
    let wide = job.tuning.wide_depthwise && g.stride == (1, 1);
    let fits_u32 = |n: usize| u32::try_from(n).is_ok();
    let table = (!wide && ow < job.tuning.table_below && fits_u32(h * w) && fits_u32(pixels) && fits_u32(taps))
        .then(|| tap_table(job));
    let (hp, wp) = (g.padding.top + h + g.padding.bottom, g.padding.left + w + g.padding.right);
    let weight = job.layer.weight();
    let avx2 = crate::kernels::avx2_fma();
    let new_buffers = || {
        if wide {
            (vec![T::zero(); hp * wp], vec![T::zero(); (oh - 1) * wp + ow])
        } else {
            (Vec::new(), Vec::new())
        }
    };
    let body = |(padded, acc): &mut (Vec<T>, Vec<T>), (idx, outs): (usize, &mut [T])| {
        let c = idx % n_in;
        let plane = &input[idx * h * w..][..h * w];
        if wide {
            // Interior rows only: the border stays zero from the allocation.
            for (y, row) in plane.chunks_exact(w).enumerate() {
                padded[(g.padding.top + y) * wp + g.padding.left..][..w].copy_from_slice(row);
            }
        }
        for (j, plane_out) in outs.chunks_exact_mut(pixels).enumerate() {
            let o = c * mult + j;
            let kernel = &weight[o * taps..(o + 1) * taps];
            let bias = job.layer.bias().map_or(T::zero(), |b| b[o]);
            match &table {
                _ if wide => {
                    if avx2 {
                        // SAFETY: the CPU supports AVX2 and FMA (checked at run time above).
                        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                        unsafe {
                            depthwise_wide_avx2(job, wp, kernel, bias, padded, acc, plane_out)
                        }
                    } else {
                        depthwise_wide(job, wp, kernel, bias, padded, acc, plane_out)
                    }
                }
                Some(table) => depthwise_table(table, kernel, bias, plane, plane_out),
                None if avx2 => {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time above).
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    unsafe {
                        depthwise_plane_avx2(job, &x_ranges, kernel, bias, plane, plane_out)
                    }
                }
                None => depthwise_plane(job, &x_ranges, kernel, bias, plane, plane_out),
            }
        }
    };
    if par {
        out.par_chunks_mut(mult * pixels).enumerate().for_each_init(new_buffers, body);
    } else {
        let mut buffers = new_buffers();
        out.chunks_mut(mult * pixels).enumerate().for_each(|item| body(&mut buffers, item));
    }
}

/// [`depthwise_wide`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_wide_avx2<T: Real>(
    job: &Job<'_, T>,
    wp: usize,
    kernel: &[T],
    bias: T,
    padded: &[T],
    acc: &mut [T],
    out: &mut [T],
) {
    depthwise_wide(job, wp, kernel, bias, padded, acc, out)
}

/// One stride-1 output plane from the zero-padded input plane (`wp` wide): the output is
/// accumulated `wp` wide in `acc` (the columns past `ow` are junk), so that every tap is a
/// single long `axpy`, then its valid columns are copied to `out`.
#[inline(always)]
fn depthwise_wide<T: Real>(
    job: &Job<'_, T>,
    wp: usize,
    kernel: &[T],
    bias: T,
    padded: &[T],
    acc: &mut [T],
    out: &mut [T],
) {
    let (dh, dw) = job.geo.dilation;
    let ow = job.out_hw.1;
    let len = acc.len();
    acc.fill(bias);
    for ky in 0..job.shape.kh {
        for kx in 0..job.shape.kw {
            let start = ky * dh * wp + kx * dw;
            axpy(kernel[ky * job.shape.kw + kx], &padded[start..start + len], acc);
        }
    }
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        row.copy_from_slice(&acc[oy * wp..oy * wp + ow]);
    }
}

/// Every valid `(output pixel, input pixel, tap)` of a depthwise layer, in the reference's
/// summation order (output pixel, then `ky`, then `kx`).
fn tap_table<T: Real>(job: &Job<'_, T>) -> Vec<[u32; 3]> {
    let g = &job.geo;
    let (h, w) = job.in_hw;
    let (oh, ow) = job.out_hw;
    let (kh, kw) = (job.shape.kh, job.shape.kw);
    let mut table = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            for ky in 0..kh {
                let Some(iy) = (oy * g.stride.0 + ky * g.dilation.0).checked_sub(g.padding.top).filter(|&y| y < h)
                else {
                    continue;
                };
                for kx in 0..kw {
                    let Some(ix) = (ox * g.stride.1 + kx * g.dilation.1).checked_sub(g.padding.left).filter(|&x| x < w)
                    else {
                        continue;
                    };
                    // Planes and kernels of one depthwise layer are far below 2^32 elements
                    // whenever this table is used (narrow outputs); `as` cannot truncate then.
                    table.push([(oy * ow + ox) as u32, (iy * w + ix) as u32, (ky * kw + kx) as u32]);
                }
            }
        }
    }
    table
}

/// One output plane of a depthwise layer from its tap table.
fn depthwise_table<T: Real>(table: &[[u32; 3]], kernel: &[T], bias: T, plane: &[T], out: &mut [T]) {
    out.fill(bias);
    for &[o, i, t] in table {
        out[o as usize] += kernel[t as usize] * plane[i as usize];
    }
}

/// [`depthwise_plane`] compiled for AVX2 + FMA (wider vectors for the row updates).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_plane_avx2<T: Real>(
    job: &Job<'_, T>,
    x_ranges: &[(usize, usize)],
    kernel: &[T],
    bias: T,
    plane: &[T],
    out: &mut [T],
) {
    depthwise_plane(job, x_ranges, kernel, bias, plane, out)
}

/// One output plane of a depthwise layer: `out` from its input `plane` (`h x w`), row by row.
#[inline(always)]
fn depthwise_plane<T: Real>(
    job: &Job<'_, T>,
    x_ranges: &[(usize, usize)],
    kernel: &[T],
    bias: T,
    plane: &[T],
    out: &mut [T],
) {
    let g = &job.geo;
    let (h, w) = job.in_hw;
    let ow = job.out_hw.1;
    let (kh, kw) = (job.shape.kh, job.shape.kw);
    for (oy, out_row) in out.chunks_mut(ow).enumerate() {
        out_row.fill(bias);
        for ky in 0..kh {
            let Some(iy) = (oy * g.stride.0 + ky * g.dilation.0).checked_sub(g.padding.top).filter(|&y| y < h) else {
                continue;
            };
            let src = &plane[iy * w..(iy + 1) * w];
            for (kx, &(x0, x1)) in x_ranges.iter().enumerate() {
                if x0 >= x1 {
                    continue;
                }
                let wv = kernel[ky * kw + kx];
                let ix0 = x0 * g.stride.1 + kx * g.dilation.1 - g.padding.left;
                if g.stride.1 == 1 {
                    axpy(wv, &src[ix0..ix0 + (x1 - x0)], &mut out_row[x0..x1]);
                } else {
                    for (d, s) in out_row[x0..x1].iter_mut().zip(src[ix0..].iter().step_by(g.stride.1)) {
                        *d += wv * *s;
                    }
                }
            }
        }
    }
}

/// `y += a · x`.
#[inline(always)]
fn axpy<T: Real>(a: T, x: &[T], y: &mut [T]) {
    for (d, s) in y.iter_mut().zip(x) {
        *d += a * *s;
    }
}
