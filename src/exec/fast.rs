//! A fast executor beside the reference loop nest: im2col + GEMM, a direct depthwise kernel
//! and a plain GEMM for pointwise layers.
//!
//! Same semantics as [`reference`](super::reference) (cross-correlation with stride, per-side
//! zero padding, dilation, groups and bias), property-tested against it. Three paths are chosen
//! per layer:
//! - **depthwise** (one input channel per group, e.g. [`DepthwiseR`]): direct loops over each
//!   output row, vectorised along the width, no im2col;
//! - **pointwise** (1x1, stride 1, no padding): the input planes are the GEMM's right operand
//!   as they are;
//! - anything else: each group's input is unfolded (im2col) into a `(C/g·kh·kw) x (oh·ow)`
//!   matrix in a reusable [`Scratch`] buffer and multiplied by the `(N/g) x (C/g·kh·kw)` weight.
//!
//! GEMMs go to [`matrixmultiply`], whose kernels pick AVX/FMA at run time.
//! [`Parallelism::Rayon`] spreads images of a batch over the current rayon pool, and for a
//! single image splits the GEMM's output rows and the depthwise channels.
//!
//! ```
//! use dac::exec::{fast, reference, Tensor4};
//! use dac::{Conv2dWeights, Padding};
//! let w: Vec<f32> = (0..8 * 4 * 9).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
//! let layer = Conv2dWeights::builder(w, [8, 4, 3, 3]).padding(Padding::uniform(1)).build()?;
//! let x = Tensor4::new((0..2 * 4 * 10 * 10).map(|i| (i as f32 * 0.1).sin()).collect(), [2, 4, 10, 10])?;
//! let mut scratch = fast::Scratch::new();
//! let y = fast::conv2d(&x, &layer, fast::Parallelism::Rayon, &mut scratch)?;
//! let want = reference::conv2d(&x, &layer)?;
//! assert!(y.max_abs_diff(&want).unwrap() < 1e-5);
//! # Ok::<(), dac::Error>(())
//! ```

use super::reference::output_dims;
use super::Tensor4;
use crate::decompose::{DepthwiseR, Pointwise};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::weights::Conv2dWeights;
use rayon::prelude::*;
use std::any::TypeId;

/// How much of the machine an executor call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Parallelism {
    /// One thread: the calling one.
    Sequential,
    /// The current rayon pool (the global one, or the one installed with
    /// `rayon::ThreadPool::install`): images of a batch in parallel, and for one image the
    /// GEMM rows and depthwise channels.
    #[default]
    Rayon,
}

/// Reusable working memory: im2col columns and the pair's intermediate activations.
///
/// Keep one per evaluation loop; buffers grow to the largest layer seen and are then reused,
/// so repeated calls allocate nothing but their outputs (and nothing at all with
/// [`conv2d_into`]).
#[derive(Debug, Clone, Default)]
pub struct Scratch<T> {
    cols: Vec<Vec<T>>,
    mid: Vec<T>,
}

impl<T: Real> Scratch<T> {
    /// Empty scratch; buffers are sized on first use.
    pub fn new() -> Self {
        Self { cols: Vec::new(), mid: Vec::new() }
    }
}

/// Runs `layer` on `input`, returning a new tensor.
///
/// # Errors
/// [`Error::ChannelMismatch`] when the input's channels differ from the layer's;
/// [`Error::EmptyOutput`] when the input is too small for the dilated kernel;
/// [`Error::Overflow`] when the output size overflows.
pub fn conv2d<T: Real>(
    input: &Tensor4<T>,
    layer: &Conv2dWeights<T>,
    parallelism: Parallelism,
    scratch: &mut Scratch<T>,
) -> Result<Tensor4<T>> {
    let dims = output_dims(input, layer)?;
    let mut out = Tensor4::zeros(dims)?;
    run(input.as_slice(), input.dims(), layer, out.as_mut_slice(), parallelism, scratch);
    Ok(out)
}

/// Runs `layer` on `input` into an existing `output` (every element overwritten).
///
/// # Errors
/// As [`conv2d`], plus [`Error::LengthMismatch`] when `output` does not have the output shape.
pub fn conv2d_into<T: Real>(
    input: &Tensor4<T>,
    layer: &Conv2dWeights<T>,
    output: &mut Tensor4<T>,
    parallelism: Parallelism,
    scratch: &mut Scratch<T>,
) -> Result<()> {
    let dims = output_dims(input, layer)?;
    if output.dims() != dims {
        return Err(Error::LengthMismatch {
            layer: layer.name().to_string(),
            what: "output",
            shape: dims.to_vec(),
            expected: dims.iter().product(),
            actual: output.as_slice().len(),
        });
    }
    run(input.as_slice(), input.dims(), layer, output.as_mut_slice(), parallelism, scratch);
    Ok(())
}

/// Runs the depthwise + pointwise pair; the intermediate activations live in `scratch`.
///
/// # Errors
/// As [`conv2d`], for either layer.
pub fn pair<T: Real>(
    input: &Tensor4<T>,
    depthwise: &DepthwiseR<T>,
    pointwise: &Pointwise<T>,
    parallelism: Parallelism,
    scratch: &mut Scratch<T>,
) -> Result<Tensor4<T>> {
    let mid_dims = output_dims(input, depthwise.conv())?;
    let pw = pointwise.conv();
    let pw_shape = pw.shape();
    if mid_dims[1] != pw_shape.in_channels {
        return Err(Error::ChannelMismatch {
            layer: pw.name().to_string(),
            expected: pw_shape.in_channels,
            actual: mid_dims[1],
        });
    }
    let (oh, ow) = pw.output_size(mid_dims[2], mid_dims[3])?;
    let mut out = Tensor4::zeros([mid_dims[0], pw_shape.out_channels, oh, ow])?;
    let mut mid = std::mem::take(&mut scratch.mid);
    mid.clear();
    mid.resize(mid_dims.iter().product(), T::zero());
    run(input.as_slice(), input.dims(), depthwise.conv(), &mut mid, parallelism, scratch);
    run(&mid, mid_dims, pw, out.as_mut_slice(), parallelism, scratch);
    scratch.mid = mid;
    Ok(out)
}

/// Which kernel a layer runs with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Depthwise,
    Pointwise,
    Im2col,
}

fn path_of<T: Real>(layer: &Conv2dWeights<T>) -> Path {
    let shape = layer.shape();
    let g = layer.geometry();
    if shape.in_per_group() == 1 && shape.taps() > 1 {
        Path::Depthwise
    } else if shape.taps() == 1 && g.stride == (1, 1) && g.padding == crate::weights::Padding::default() {
        Path::Pointwise
    } else {
        Path::Im2col
    }
}

/// Everything one image needs, shared by the paths.
struct Job<'a, T> {
    layer: &'a Conv2dWeights<T>,
    in_hw: (usize, usize),
    out_hw: (usize, usize),
}

/// Runs a validated layer on a validated input (`out` has the output shape).
fn run<T: Real>(
    input: &[T],
    in_dims: [usize; 4],
    layer: &Conv2dWeights<T>,
    out: &mut [T],
    parallelism: Parallelism,
    scratch: &mut Scratch<T>,
) {
    let [batch, channels, h, w] = in_dims;
    let shape = layer.shape();
    let out_hw = layer.output_size(h, w).expect("validated by the caller");
    let job = Job { layer, in_hw: (h, w), out_hw };
    let in_plane = channels * h * w;
    let out_plane = shape.out_channels * out_hw.0 * out_hw.1;
    let path = path_of(layer);
    let col_len = if path == Path::Im2col { shape.in_per_group() * shape.taps() * out_hw.0 * out_hw.1 } else { 0 };
    let threads = rayon::current_num_threads();
    match parallelism {
        Parallelism::Rayon if batch > 1 && threads > 1 => {
            let tasks = threads.min(batch);
            if scratch.cols.len() < tasks {
                scratch.cols.resize_with(tasks, Vec::new);
            }
            let per = batch.div_ceil(tasks);
            out.par_chunks_mut(per * out_plane).zip(scratch.cols.par_iter_mut()).enumerate().for_each(
                |(t, (out_chunk, col))| {
                    col.resize(col.len().max(col_len), T::zero());
                    for (i, o) in out_chunk.chunks_mut(out_plane).enumerate() {
                        let b = t * per + i;
                        image(&job, &input[b * in_plane..(b + 1) * in_plane], o, path, col, false);
                    }
                },
            );
        }
        _ => {
            if scratch.cols.is_empty() {
                scratch.cols.push(Vec::new());
            }
            let col = &mut scratch.cols[0];
            col.resize(col.len().max(col_len), T::zero());
            let par = parallelism == Parallelism::Rayon && threads > 1;
            for b in 0..batch {
                image(
                    &job,
                    &input[b * in_plane..(b + 1) * in_plane],
                    &mut out[b * out_plane..(b + 1) * out_plane],
                    path,
                    col,
                    par,
                );
            }
        }
    }
}

/// One image: `input` is `C x h x w`, `out` is `N x oh x ow`.
fn image<T: Real>(job: &Job<'_, T>, input: &[T], out: &mut [T], path: Path, col: &mut [T], par: bool) {
    let layer = job.layer;
    let shape = layer.shape();
    let (oh, ow) = job.out_hw;
    let (h, w) = job.in_hw;
    let pixels = oh * ow;
    match path {
        Path::Depthwise => {
            let mult = shape.out_per_group();
            let body =
                |(o, plane): (usize, &mut [T])| depthwise_plane(job, &input[(o / mult) * h * w..][..h * w], o, plane);
            if par {
                out.par_chunks_mut(pixels).enumerate().for_each(body);
            } else {
                out.chunks_mut(pixels).enumerate().for_each(body);
            }
        }
        Path::Pointwise | Path::Im2col => {
            let (ng, cg) = (shape.out_per_group(), shape.in_per_group());
            let depth = cg * shape.taps();
            for g in 0..shape.groups {
                let rhs: &[T] = if path == Path::Pointwise {
                    &input[g * cg * h * w..(g + 1) * cg * h * w]
                } else {
                    let col = &mut col[..depth * pixels];
                    im2col(job, &input[g * cg * h * w..(g + 1) * cg * h * w], col, par);
                    col
                };
                let weight = &layer.weight()[g * ng * depth..(g + 1) * ng * depth];
                let dst = &mut out[g * ng * pixels..(g + 1) * ng * pixels];
                if par && ng >= 2 {
                    let rows = ng.div_ceil(rayon::current_num_threads().min(ng)).max(1);
                    dst.par_chunks_mut(rows * pixels).enumerate().for_each(|(i, d)| {
                        let m = d.len() / pixels;
                        gemm(m, depth, pixels, &weight[i * rows * depth..][..m * depth], rhs, d);
                    });
                } else {
                    gemm(ng, depth, pixels, weight, rhs, dst);
                }
                if let Some(bias) = layer.bias() {
                    for (row, &b) in dst.chunks_mut(pixels).zip(&bias[g * ng..(g + 1) * ng]) {
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
        }
    }
}

/// `c (m x n) = a (m x k) · b (k x n)`, all row-major and contiguous.
fn gemm<T: Real>(m: usize, k: usize, n: usize, a: &[T], b: &[T], c: &mut [T]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm operands too short");
    if m == 0 || n == 0 {
        return;
    }
    let (k_i, n_i) = (k as isize, n as isize);
    // SAFETY: the lengths are checked above; T is f32 or f64 (`Real` is sealed) and the pointer
    // casts only happen when the TypeId says the types are identical.
    unsafe {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr().cast(),
                k_i,
                1,
                b.as_ptr().cast(),
                n_i,
                1,
                0.0,
                c.as_mut_ptr().cast(),
                n_i,
                1,
            );
        } else {
            debug_assert_eq!(TypeId::of::<T>(), TypeId::of::<f64>());
            matrixmultiply::dgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr().cast(),
                k_i,
                1,
                b.as_ptr().cast(),
                n_i,
                1,
                0.0,
                c.as_mut_ptr().cast(),
                n_i,
                1,
            );
        }
    }
}

/// The output positions `ox` whose input column `ox·stride + offset - pad` lies in `0..len`:
/// returns `(first, end)`.
#[inline]
fn valid_range(out_len: usize, stride: usize, offset: usize, pad: usize, len: usize) -> (usize, usize) {
    // ox·stride + offset >= pad  <=>  ox >= ceil((pad - offset) / stride)
    let first = pad.saturating_sub(offset).div_ceil(stride);
    // ox·stride + offset < pad + len  <=>  ox < ceil((pad + len - offset) / stride)
    let end = (pad + len).saturating_sub(offset).div_ceil(stride).min(out_len);
    (first.min(end), end)
}

/// Unfolds one group's input (`cg x h x w`) into `col` (`(cg·kh·kw) x (oh·ow)`).
fn im2col<T: Real>(job: &Job<'_, T>, input: &[T], col: &mut [T], par: bool) {
    let shape = job.layer.shape();
    let g = job.layer.geometry();
    let (h, w) = job.in_hw;
    let (oh, ow) = job.out_hw;
    let (kh, kw) = (shape.kh, shape.kw);
    let body = |(row, dst): (usize, &mut [T])| {
        let (c, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
        let plane = &input[c * h * w..(c + 1) * h * w];
        let (x0, x1) = valid_range(ow, g.stride.1, kx * g.dilation.1, g.padding.left, w);
        let (y0, y1) = valid_range(oh, g.stride.0, ky * g.dilation.0, g.padding.top, h);
        for (oy, out_row) in dst.chunks_mut(ow).enumerate() {
            if oy < y0 || oy >= y1 {
                out_row.fill(T::zero());
                continue;
            }
            let iy = oy * g.stride.0 + ky * g.dilation.0 - g.padding.top;
            let src = &plane[iy * w..(iy + 1) * w];
            out_row[..x0].fill(T::zero());
            out_row[x1..].fill(T::zero());
            if x0 < x1 {
                let ix0 = x0 * g.stride.1 + kx * g.dilation.1 - g.padding.left;
                if g.stride.1 == 1 {
                    out_row[x0..x1].copy_from_slice(&src[ix0..ix0 + (x1 - x0)]);
                } else {
                    for (d, s) in out_row[x0..x1].iter_mut().zip(src[ix0..].iter().step_by(g.stride.1)) {
                        *d = *s;
                    }
                }
            }
        }
    };
    if par {
        col.par_chunks_mut(oh * ow).enumerate().for_each(body);
    } else {
        col.chunks_mut(oh * ow).enumerate().for_each(body);
    }
}

/// One output plane of a depthwise layer: output channel `o` from its input `plane` (`h x w`).
fn depthwise_plane<T: Real>(job: &Job<'_, T>, plane: &[T], o: usize, out: &mut [T]) {
    let layer = job.layer;
    let shape = layer.shape();
    let g = layer.geometry();
    let (h, w) = job.in_hw;
    let ow = job.out_hw.1;
    let (kh, kw) = (shape.kh, shape.kw);
    let kernel = &layer.weight()[o * kh * kw..(o + 1) * kh * kw];
    let bias = layer.bias().map_or(T::zero(), |b| b[o]);
    let x_ranges: Vec<(usize, usize)> =
        (0..kw).map(|kx| valid_range(ow, g.stride.1, kx * g.dilation.1, g.padding.left, w)).collect();
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
#[inline]
fn axpy<T: Real>(a: T, x: &[T], y: &mut [T]) {
    for (d, s) in y.iter_mut().zip(x) {
        *d += a * *s;
    }
}
