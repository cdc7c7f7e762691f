//! A fast executor beside the reference loop nest: im2col + GEMM, a direct depthwise kernel
//! and a plain GEMM for pointwise layers.
//!
//! Same semantics as [`reference`](super::reference) (cross-correlation with stride, per-side
//! zero padding, dilation, groups and bias), property-tested against it. Three paths are chosen
//! per layer:
//! - **depthwise** (one input channel per group, e.g. [`DepthwiseR`]), no im2col: with stride 1
//!   the input plane is copied once into a zero-padded buffer and its output planes are
//!   accumulated at the padded width a block of positions at a time, every tap added to the
//!   block in registers (64 positions of one output channel, or 16 of up to four channels that
//!   share each load; AVX2 when the CPU has it); other strides run direct loops over each output row,
//!   or a precomputed table of the valid taps on narrow outputs. Every depthwise kernel runs
//!   the reference's operations in its order, so its outputs equal the reference's exactly;
//! - **pointwise** (1x1, stride 1, no padding): the input planes are the GEMM's right operand
//!   as they are, a cache-sized band of columns at a time;
//! - anything else: each group's input is unfolded (im2col) into a `(C/g·kh·kw) x pixels`
//!   matrix in a reusable [`Scratch`] buffer and multiplied by the `(N/g) x (C/g·kh·kw)` weight.
//!   On large feature maps the unfolding is done a band of output rows at a time, so that the
//!   unfolded tile stays in cache while the GEMM reads it.
//!
//! On small feature maps (under 256 output pixels, as deep in a CIFAR-style network) a GEMM
//! per image would have only a handful of columns. There the images of a batch are unfolded
//! side by side into one `(C/g·kh·kw) x (images·pixels)` matrix (pointwise layers: their planes
//! gathered), multiplied once, and the result scattered back to NCHW.
//!
//! GEMMs go to the [`gemm`] crate, whose kernels pick AVX2/FMA or AVX-512 at run time.
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
use crate::weights::{Conv2dWeights, ConvShape, Geometry, Padding};
use rayon::prelude::*;

mod depthwise;
use self::depthwise::depthwise;

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

/// Reusable working memory: im2col tiles, batched GEMM results and the pair's intermediate
/// activations.
///
/// Keep one per evaluation loop; buffers grow to the largest layer seen and are then reused,
/// so repeated calls allocate nothing but their outputs (and nothing at all with
/// [`conv2d_into`]).
#[derive(Debug, Clone, Default)]
pub struct Scratch<T> {
    work: Vec<Work<T>>,
    mid: Vec<T>,
}

/// One task's buffers.
#[derive(Debug, Clone, Default)]
struct Work<T> {
    /// The GEMM's right operand (im2col tile or gathered planes).
    col: Vec<T>,
    /// A batched GEMM's result before it is scattered to NCHW.
    tmp: Vec<T>,
}

impl<T: Real> Scratch<T> {
    /// Empty scratch; buffers are sized on first use.
    pub fn new() -> Self {
        Self { work: Vec::new(), mid: Vec::new() }
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
    run(input.as_slice(), input.dims(), layer, out.as_mut_slice(), parallelism, scratch, &TUNING);
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
    run(input.as_slice(), input.dims(), layer, output.as_mut_slice(), parallelism, scratch, &TUNING);
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
    pair_with(input, depthwise, pointwise, parallelism, scratch, &TUNING)
}

fn pair_with<T: Real>(
    input: &Tensor4<T>,
    depthwise: &DepthwiseR<T>,
    pointwise: &Pointwise<T>,
    parallelism: Parallelism,
    scratch: &mut Scratch<T>,
    tuning: &Tuning,
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
    // Every element is overwritten: only grow, never clear.
    let mid_len: usize = mid_dims.iter().product();
    if mid.len() < mid_len {
        mid.resize(mid_len, T::zero());
    }
    let mid_slice = &mut mid[..mid_len];
    run(input.as_slice(), input.dims(), depthwise.conv(), mid_slice, parallelism, scratch, tuning);
    run(mid_slice, mid_dims, pw, out.as_mut_slice(), parallelism, scratch, tuning);
    scratch.mid = mid;
    Ok(out)
}

/// Size thresholds that choose between equivalent kernels (unit tests shrink them so that
/// every kernel runs on small shapes).
#[derive(Debug, Clone, Copy)]
struct Tuning {
    /// Images with fewer output pixels than this are multiplied together in one GEMM.
    batch_below: usize,
    /// Most columns of a batched GEMM.
    batch_cols: usize,
    /// Most bytes of an im2col tile (a band of output rows, or a group of images).
    tile_bytes: usize,
    /// Depthwise layers with an output narrower than this run the tap-table kernel.
    table_below: usize,
    /// Stride-1 depthwise layers run the padded full-width kernel.
    wide_depthwise: bool,
}

const TUNING: Tuning =
    Tuning { batch_below: 256, batch_cols: 1024, tile_bytes: 1 << 20, table_below: 8, wide_depthwise: true };

/// Which kernel a layer runs with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Depthwise,
    Pointwise,
    Im2col,
}

/// Everything a call needs, shared by the paths.
struct Job<'a, T> {
    layer: &'a Conv2dWeights<T>,
    shape: ConvShape,
    geo: Geometry,
    in_hw: (usize, usize),
    out_hw: (usize, usize),
    path: Path,
    tuning: &'a Tuning,
}

impl<'a, T: Real> Job<'a, T> {
    fn new(layer: &'a Conv2dWeights<T>, in_hw: (usize, usize), tuning: &'a Tuning) -> Self {
        let shape = layer.shape();
        let geo = *layer.geometry();
        let out_hw = layer.output_size(in_hw.0, in_hw.1).expect("validated by the caller");
        let path = if shape.in_per_group() == 1 && shape.taps() > 1 {
            Path::Depthwise
        } else if shape.taps() == 1 && geo.stride == (1, 1) && geo.padding == Padding::default() {
            Path::Pointwise
        } else {
            Path::Im2col
        };
        Self { layer, shape, geo, in_hw, out_hw, path, tuning }
    }
    /// Output pixels per plane.
    fn pixels(&self) -> usize {
        self.out_hw.0 * self.out_hw.1
    }
    /// Input elements per image.
    fn in_image(&self) -> usize {
        self.shape.in_channels * self.in_hw.0 * self.in_hw.1
    }
    /// Output elements per image.
    fn out_image(&self) -> usize {
        self.shape.out_channels * self.pixels()
    }
    /// Input elements of one group of one image.
    fn in_group(&self) -> usize {
        self.shape.in_per_group() * self.in_hw.0 * self.in_hw.1
    }
    /// The GEMM's inner dimension.
    fn depth(&self) -> usize {
        self.shape.in_per_group() * self.shape.taps()
    }
    /// Group `g`'s weight, `(N/g) x depth` row-major.
    fn weight(&self, g: usize) -> &'a [T] {
        let len = self.shape.out_per_group() * self.depth();
        &self.layer.weight()[g * len..(g + 1) * len]
    }
    /// Group `g`'s bias, if any.
    fn bias(&self, g: usize) -> Option<&'a [T]> {
        let ng = self.shape.out_per_group();
        self.layer.bias().map(|b| &b[g * ng..(g + 1) * ng])
    }
}

/// Runs a validated layer on a validated input (`out` has the output shape).
fn run<T: Real>(
    input: &[T],
    in_dims: [usize; 4],
    layer: &Conv2dWeights<T>,
    out: &mut [T],
    parallelism: Parallelism,
    scratch: &mut Scratch<T>,
    tuning: &Tuning,
) {
    let [batch, _, h, w] = in_dims;
    let job = Job::new(layer, (h, w), tuning);
    let threads = match parallelism {
        Parallelism::Rayon => rayon::current_num_threads(),
        Parallelism::Sequential => 1,
    };
    if job.path == Path::Depthwise {
        depthwise(&job, input, out, threads > 1);
        return;
    }
    if threads > 1 && batch > 1 {
        let tasks = threads.min(batch);
        if scratch.work.len() < tasks {
            scratch.work.resize_with(tasks, Work::default);
        }
        let per = batch.div_ceil(tasks);
        out.par_chunks_mut(per * job.out_image())
            .zip(input.par_chunks(per * job.in_image()))
            .zip(scratch.work.par_iter_mut())
            .for_each(|((o, i), work)| gemm_images(&job, i, o, work, false));
    } else {
        if scratch.work.is_empty() {
            scratch.work.push(Work::default());
        }
        gemm_images(&job, input, out, &mut scratch.work[0], threads > 1);
    }
}

/// Grows `v` to at least `len` elements (their values are overwritten before use).
fn grow<T: Real>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::zero());
    }
}

/// The GEMM paths (pointwise and im2col) on a run of whole images: `input` and `out` hold the
/// same number of images. `par` splits each GEMM's rows over the rayon pool.
fn gemm_images<T: Real>(job: &Job<'_, T>, input: &[T], out: &mut [T], work: &mut Work<T>, par: bool) {
    let images = out.len() / job.out_image();
    let pixels = job.pixels();
    let depth = job.depth();
    let (ng, groups) = (job.shape.out_per_group(), job.shape.groups);
    let elem = std::mem::size_of::<T>();
    let index = if job.path == Path::Im2col { gather_index(job) } else { None };
    if images > 1 && pixels < job.tuning.batch_below {
        // Small feature maps: `per` images side by side in one GEMM.
        let by_cols = job.tuning.batch_cols / pixels;
        let by_bytes = job.tuning.tile_bytes / (depth * pixels * elem);
        let per = by_cols.min(by_bytes).clamp(1, images);
        let cols_max = per * pixels;
        grow(&mut work.col, depth * cols_max);
        grow(&mut work.tmp, ng * cols_max);
        for b0 in (0..images).step_by(per) {
            let nb = per.min(images - b0);
            let cols = nb * pixels;
            let col = &mut work.col[..depth * cols];
            let tmp = &mut work.tmp[..ng * cols];
            for g in 0..groups {
                for bi in 0..nb {
                    let src = &input[(b0 + bi) * job.in_image() + g * job.in_group()..][..job.in_group()];
                    if job.path == Path::Pointwise {
                        for (c, plane) in src.chunks_exact(pixels).enumerate() {
                            col[c * cols + bi * pixels..][..pixels].copy_from_slice(plane);
                        }
                    } else {
                        im2col(job, src, &mut col[bi * pixels..], cols, (0, job.out_hw.0), index.as_deref(), false);
                    }
                }
                gemm_rows(ng, depth, cols, job.weight(g), col, cols, tmp, cols, par);
                let bias = job.bias(g);
                for bi in 0..nb {
                    let dst = &mut out[(b0 + bi) * job.out_image() + g * ng * pixels..][..ng * pixels];
                    for (n, row) in dst.chunks_exact_mut(pixels).enumerate() {
                        let src = &tmp[n * cols + bi * pixels..][..pixels];
                        match bias {
                            Some(b) => row.iter_mut().zip(src).for_each(|(d, &s)| *d = s + b[n]),
                            None => row.copy_from_slice(src),
                        }
                    }
                }
            }
        }
        return;
    }
    let ow = job.out_hw.1;
    let band_rows = (job.tuning.tile_bytes / (depth * ow * elem)).clamp(1, job.out_hw.0);
    if job.path == Path::Im2col {
        grow(&mut work.col, depth * band_rows * ow);
    }
    for b in 0..images {
        for g in 0..groups {
            let src = &input[b * job.in_image() + g * job.in_group()..][..job.in_group()];
            let dst = &mut out[b * job.out_image() + g * ng * pixels..][..ng * pixels];
            let bias = job.bias(g);
            if job.path == Path::Pointwise {
                // The planes are the right operand as they are; a band of columns at a time
                // keeps the GEMM's packed blocks in cache.
                let band = job.tuning.tile_bytes / (depth * elem);
                let band = if band >= 64 { band / 16 * 16 } else { band.max(1) };
                for p0 in (0..pixels).step_by(band) {
                    let np = band.min(pixels - p0);
                    gemm_rows(ng, depth, np, job.weight(g), &src[p0..], pixels, &mut dst[p0..], pixels, par);
                    add_bias(dst, pixels, p0, np, bias);
                }
                continue;
            }
            for oy0 in (0..job.out_hw.0).step_by(band_rows) {
                let oy1 = (oy0 + band_rows).min(job.out_hw.0);
                let (p0, np) = (oy0 * ow, (oy1 - oy0) * ow);
                let col = &mut work.col[..depth * np];
                im2col(job, src, col, np, (oy0, oy1), index.as_deref(), par);
                gemm_rows(ng, depth, np, job.weight(g), col, np, &mut dst[p0..], pixels, par);
                add_bias(dst, pixels, p0, np, bias);
            }
        }
    }
}

/// Adds `bias[n]` to columns `p0..p0 + np` of every row `n` of `dst` (rows `ld` apart).
fn add_bias<T: Real>(dst: &mut [T], ld: usize, p0: usize, np: usize, bias: Option<&[T]>) {
    if let Some(bias) = bias {
        for (row, &b) in dst.chunks_mut(ld).zip(bias) {
            row[p0..p0 + np].iter_mut().for_each(|v| *v += b);
        }
    }
}

/// `c = a · b` with `a` `m x k` (rows `lda` apart), `b` `k x n` (rows `ldb` apart) and `c`
/// `m x n` (rows `ldc` apart); `par` splits the rows of `c` over the rayon pool.
#[allow(clippy::too_many_arguments)]
fn gemm_rows<T: Real>(m: usize, k: usize, n: usize, a: &[T], b: &[T], ldb: usize, c: &mut [T], ldc: usize, par: bool) {
    let threads = if par { rayon::current_num_threads().min(m) } else { 1 };
    if threads > 1 && m * k * n >= 1 << 16 {
        let rows = m.div_ceil(threads);
        c.par_chunks_mut(rows * ldc).enumerate().for_each(|(i, c)| {
            let mi = rows.min(m - i * rows);
            gemm(mi, k, n, &a[i * rows * k..], k, b, ldb, c, ldc);
        });
    } else {
        gemm(m, k, n, a, k, b, ldb, c, ldc);
    }
}

/// `c = a · b`, row-major operands with the given row strides (column stride 1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let need = |rows: usize, cols: usize, ld: usize| if rows == 0 { 0 } else { (rows - 1) * ld + cols };
    assert!(
        lda >= k
            && ldb >= n
            && ldc >= n
            && a.len() >= need(m, k, lda)
            && b.len() >= need(k, n, ldb)
            && c.len() >= need(m, n, ldc),
        "gemm operands too short"
    );
    if k == 0 {
        c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(T::zero()));
        return;
    }
    // SAFETY: every element the GEMM touches is in bounds (checked above); `dst` does not alias
    // the operands (distinct borrows). `gemm::gemm` dispatches on the `TypeId` of `T`, which is
    // f32 or f64 (`Real` is sealed), both supported.
    unsafe {
        gemm::gemm::<T>(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            false,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            1,
            ldb as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
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

/// Unfolds output rows `oys.0..oys.1` of one group's input (`cg x h x w`) into `col`: row
/// `(c, ky, kx)` of the unfolded matrix starts at `col[row·ld]` and holds
/// `(oys.1 - oys.0)·ow` values.
///
/// `index` (from [`gather_index`], on narrow outputs) replaces the row loops by one lookup per
/// element.
#[allow(clippy::too_many_arguments)]
fn im2col<T: Real>(
    job: &Job<'_, T>,
    input: &[T],
    col: &mut [T],
    ld: usize,
    oys: (usize, usize),
    index: Option<&[u32]>,
    par: bool,
) {
    let g = &job.geo;
    let (h, w) = job.in_hw;
    let ow = job.out_hw.1;
    let (kh, kw) = (job.shape.kh, job.shape.kw);
    let depth = job.depth();
    let len = (oys.1 - oys.0) * ow;
    let body = |(row, dst): (usize, &mut [T])| {
        let dst = &mut dst[..len];
        let (c, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
        let plane = &input[c * h * w..(c + 1) * h * w];
        if let Some(index) = index {
            let taps = &index[(row % (kh * kw)) * job.pixels() + oys.0 * ow..][..len];
            for (d, &i) in dst.iter_mut().zip(taps) {
                *d = if i == u32::MAX { T::zero() } else { plane[i as usize] };
            }
            return;
        }
        let (x0, x1) = valid_range(ow, g.stride.1, kx * g.dilation.1, g.padding.left, w);
        let (y0, y1) = valid_range(job.out_hw.0, g.stride.0, ky * g.dilation.0, g.padding.top, h);
        for (oy, out_row) in (oys.0..oys.1).zip(dst.chunks_exact_mut(ow)) {
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
        col.par_chunks_mut(ld).take(depth).enumerate().for_each(body);
    } else {
        col.chunks_mut(ld).take(depth).enumerate().for_each(body);
    }
}

/// On narrow outputs (and planes below 2^32 elements): for every tap `t = ky·kw + kx` and
/// output pixel `p`, `index[t·pixels + p]` is the input pixel it reads, `u32::MAX` in the
/// padding.
fn gather_index<T: Real>(job: &Job<'_, T>) -> Option<Vec<u32>> {
    let g = &job.geo;
    let (h, w) = job.in_hw;
    let (oh, ow) = job.out_hw;
    let too_big = h.checked_mul(w).is_none_or(|n| n >= u32::MAX as usize) || job.shape.taps() * oh * ow > 1 << 22;
    if ow >= job.tuning.table_below || too_big {
        return None;
    }
    let mut index = Vec::with_capacity(job.shape.taps() * oh * ow);
    for ky in 0..job.shape.kh {
        for kx in 0..job.shape.kw {
            for oy in 0..oh {
                let iy = (oy * g.stride.0 + ky * g.dilation.0).checked_sub(g.padding.top).filter(|&y| y < h);
                for ox in 0..ow {
                    let ix = (ox * g.stride.1 + kx * g.dilation.1).checked_sub(g.padding.left).filter(|&x| x < w);
                    index.push(match (iy, ix) {
                        // Below u32::MAX: checked above.
                        (Some(y), Some(x)) => (y * w + x) as u32,
                        _ => u32::MAX,
                    });
                }
            }
        }
    }
    Some(index)
}

#[cfg(test)]
mod tests;
