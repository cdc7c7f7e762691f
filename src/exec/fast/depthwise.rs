//! The direct depthwise kernels: padded planes accumulated a block of positions at a time in
//! registers (stride 1), direct row loops, or a table of valid taps on narrow outputs.

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
    // The wide kernel's tap offsets in the padded plane, in `(ky, kx)` order.
    let (dh, dw) = g.dilation;
    let offsets: Vec<usize> =
        (0..job.shape.kh).flat_map(|ky| (0..job.shape.kw).map(move |kx| ky * dh * wp + kx * dw)).collect();
    let avx2 = crate::kernels::avx2_fma();

    let new_buffers = || {
        if wide {
            // Room for the last block of lanes to read and write past the plane's end.
            let len = ((oh - 1) * wp + ow).next_multiple_of(WIDE_LANES);
            (vec![T::zero(); hp * wp + WIDE_LANES], vec![T::zero(); mult * len])
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
            let kernels = &weight[c * mult * taps..][..mult * taps];
            let biases = job.layer.bias().map(|b| &b[c * mult..][..mult]);
            let wide = Wide { job, wp, offsets: &offsets, kernels, biases };
            if avx2 {
                // SAFETY: the CPU supports AVX2 and FMA (checked at run time above).
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                unsafe {
                    wide.run_avx2(padded, acc, outs)
                }
            } else {
                wide.run(padded, acc, outs)
            }
            return;
        }
        for (j, plane_out) in outs.chunks_exact_mut(pixels).enumerate() {
            let o = c * mult + j;
            let kernel = &weight[o * taps..(o + 1) * taps];
            let bias = job.layer.bias().map_or(T::zero(), |b| b[o]);
            match &table {
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

/// Lanes of one block of the wide kernel: a block's accumulators stay in registers while
/// every tap is added (16 `f32` are two AVX2 registers).
const WIDE_LANES: usize = 16;

/// Output channels computed together by the wide kernel (independent accumulators that share
/// each load of the input).
const WIDE_OUTPUTS: usize = 4;

/// The stride-1 kernel for the output planes of one input plane: the zero-padded input plane
/// (`wp` wide, followed by [`WIDE_LANES`] zeros) is read a block of [`WIDE_LANES`] positions
/// at a time, and every output is accumulated `wp` wide (the columns past `ow` are junk) in
/// registers, then its valid columns are copied out.
///
/// Each output is its bias, then `+ w·x` tap by tap in `(ky, kx)` order (a multiply, then an
/// add): the reference's operations, plus exact zero terms for padded taps.
struct Wide<'a, T> {
    job: &'a Job<'a, T>,
    /// Width of the padded plane.
    wp: usize,
    /// Each tap's offset in the padded plane, `(ky, kx)` order.
    offsets: &'a [usize],
    /// The plane's output channels' kernels, `mult x taps`.
    kernels: &'a [T],
    /// Their biases.
    biases: Option<&'a [T]>,
}

impl<T: Real> Wide<'_, T> {
    /// [`run`](Self::run) compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, padded: &[T], acc: &mut [T], outs: &mut [T]) {
        self.run(padded, acc, outs)
    }

    /// Every output plane of the input plane in `padded` into `outs`; `acc` holds one
    /// `wp`-wide plane per output, rounded up to whole blocks.
    #[inline(always)]
    fn run(&self, padded: &[T], acc: &mut [T], outs: &mut [T]) {
        let taps = self.offsets.len();
        let mult = self.kernels.len() / taps;
        let lenr = acc.len() / mult;
        let bias = |j: usize| self.biases.map_or(T::zero(), |b| b[j]);
        if mult == 1 {
            // One output: blocks four times wider, for independent accumulators.
            let (k, b) = ([self.kernels], [bias(0)]);
            let wide_end = lenr / (4 * WIDE_LANES) * (4 * WIDE_LANES);
            let (head, tail) = acc.split_at_mut(wide_end);
            blocks::<T, { 4 * WIDE_LANES }, 1>(self.offsets, k, b, padded, [head], 0);
            blocks::<T, WIDE_LANES, 1>(self.offsets, k, b, padded, [tail], wide_end);
        } else {
            // Up to WIDE_OUTPUTS outputs at a time share each block's loads.
            for (g, accs) in acc.chunks_mut(WIDE_OUTPUTS * lenr).enumerate() {
                let j0 = g * WIDE_OUTPUTS;
                match accs.len() / lenr {
                    4 => self.outputs::<4>(padded, accs, j0),
                    3 => self.outputs::<3>(padded, accs, j0),
                    2 => self.outputs::<2>(padded, accs, j0),
                    _ => self.outputs::<1>(padded, accs, j0),
                }
            }
        }
        let (oh, ow) = self.job.out_hw;
        for (plane, out) in acc.chunks_exact(lenr).zip(outs.chunks_exact_mut(oh * ow)) {
            for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
                row.copy_from_slice(&plane[oy * self.wp..oy * self.wp + ow]);
            }
        }
    }

    /// Outputs `j0..j0 + J` together, into the `J` planes of `accs`.
    #[inline(always)]
    fn outputs<const J: usize>(&self, padded: &[T], accs: &mut [T], j0: usize) {
        let taps = self.offsets.len();
        let lenr = accs.len() / J;
        let kernels = std::array::from_fn(|j| &self.kernels[(j0 + j) * taps..][..taps]);
        let biases = std::array::from_fn(|j| self.biases.map_or(T::zero(), |b| b[j0 + j]));
        let mut planes = accs.chunks_exact_mut(lenr);
        let accs = std::array::from_fn(|_| planes.next().expect("J planes"));
        blocks::<T, WIDE_LANES, J>(self.offsets, kernels, biases, padded, accs, 0);
    }
}

/// [`Wide`]'s blocks of `L` positions for `J` outputs at once: `accs[j]` (whole blocks)
/// receives output `j` from position `start` of the padded plane on.
#[inline(always)]
fn blocks<T: Real, const L: usize, const J: usize>(
    offsets: &[usize],
    kernels: [&[T]; J],
    biases: [T; J],
    padded: &[T],
    accs: [&mut [T]; J],
    start: usize,
) {
    let n = accs[0].len() / L;
    for s in 0..n {
        let mut a = biases.map(|b| [b; L]);
        for (t, &off) in offsets.iter().enumerate() {
            let x: &[T; L] = padded[start + off + s * L..][..L].try_into().expect("one block");
            for j in 0..J {
                let wv = kernels[j][t];
                for l in 0..L {
                    a[j][l] += wv * x[l];
                }
            }
        }
        for j in 0..J {
            accs[j][s * L..(s + 1) * L].copy_from_slice(&a[j]);
        }
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
