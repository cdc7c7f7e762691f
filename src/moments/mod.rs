//! The planner's score from the second moments of each layer's input.
//!
//! The planner ranks candidates by the fraction of a layer's output energy each loses,
//! [`Factored::correlated_loss`], under a model of the layer's input (neighbouring pixels
//! correlating as `ρ`, channels independent). A layer's real inputs have more structure than
//! that, and on the shipped networks the model ranks candidates against what the data says
//! (EXPERIMENTS.md, "Why the score puts channel SVD above DAC"). Given the second moments
//! `S = E[p pᵀ]` of the layer's input patches `p` (`C·kh·kw` entries each, in the order of
//! [`DenseKernel`]), a candidate at rank `r` loses exactly
//! `e(r) = tr(ΔW S ΔWᵀ) / tr(W S Wᵀ)` of the output energy, `ΔW` the layer's kernel less the
//! kernel its factors compute ([`DenseKernel::of_chain`]).
//!
//! [`Scored`] puts that `e` in place of a factorisation's own. Where `S` comes from is the
//! caller's: [`Synthetic`] samples it from what the dense network computes on smooth synthetic
//! images (no data; `dac onnx --synthetic-moments` runs the network in onnxruntime,
//! `scripts/synthetic_moments.py` does the same in Python), [`InputMoments::of_input`] takes it
//! from any batch of inputs.
//!
//! ```
//! use dac::moments::{InputMoments, Scored};
//! use dac::scheme::{Dac, Factored, Scheme};
//! use dac::{svd::GramSvd, Conv2dWeights};
//! let w: Vec<f32> = (0..4 * 2 * 9).map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0).collect();
//! let layer = Conv2dWeights::new(w, [4, 2, 3, 3])?;
//! let svd = GramSvd::default();
//! let factored = Dac::new(&svd).factor(&layer)?;
//! // White inputs: S = I, and e is the relative squared Frobenius error of the kernel.
//! let white = InputMoments::identity(2 * 9);
//! let scored = Scored::new(&*factored, &white)?;
//! assert!((scored.correlated_loss()[2] - factored.errors().relative_error(2).powi(2)).abs() < 1e-5);
//! # Ok::<(), dac::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::exec::reference::source;
use crate::exec::Tensor4;
use crate::scalar::Real;
use crate::scheme::{DenseKernel, ErrorTable, Factor, Factored, LowRankKernel, SchemeKind, Workspace};
use crate::weights::Conv2dWeights;
use nalgebra::DMatrix;
use rayon::prelude::*;

mod synthetic;

pub use self::synthetic::{PatchSum, Prior, Synthetic};

/// `S = E[p pᵀ]` over a layer's input patches, `C·kh·kw` square, symmetric, finite; for a
/// grouped layer, only its diagonal blocks, one per channel group (a group's outputs see only
/// its own input channels, so no other entry of `S` enters a loss).
#[derive(Debug, Clone, PartialEq)]
pub struct InputMoments {
    /// The diagonal blocks, one per group (one block: the whole matrix).
    blocks: Vec<DMatrix<f64>>,
}

impl InputMoments {
    /// The moments of `layer` (a name for errors) from `values`, `dim x dim` row-major.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `values` is not `dim²` long, [`Error::NonFinite`] for a
    /// value that is not finite, [`Error::InvalidParameter`] for a negative diagonal entry or a
    /// matrix that is not symmetric (to `1e-3` of its largest diagonal entry).
    pub fn new(layer: &str, dim: usize, values: Vec<f64>) -> Result<Self> {
        Self::grouped(layer, 1, dim, values)
    }

    /// The moments of a layer of `groups` channel groups from the diagonal blocks of `S`, each
    /// `dim x dim` row-major, one after another in `values` (the patch length is
    /// `groups · dim`).
    ///
    /// # Errors
    /// As [`new`](Self::new), for `groups · dim²` values; [`Error::InvalidParameter`] for 0
    /// groups.
    pub fn grouped(layer: &str, groups: usize, dim: usize, values: Vec<f64>) -> Result<Self> {
        let expected = groups.saturating_mul(dim).saturating_mul(dim);
        if values.len() != expected || groups == 0 {
            let (shape, actual) = (vec![groups, dim, dim], values.len());
            return Err(Error::LengthMismatch {
                layer: layer.to_string(),
                what: "input moments",
                shape,
                expected,
                actual,
            });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite { layer: layer.to_string(), what: "input moments", index, value });
        }
        let blocks = values.chunks_exact(dim * dim).map(|v| symmetric(layer, dim, v)).collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    /// White inputs: `S = I` of size `dim`.
    pub fn identity(dim: usize) -> Self {
        Self { blocks: vec![DMatrix::identity(dim, dim)] }
    }

    /// The moments of `layer`'s input patches over every output position of every image of
    /// `input` (zero padding counted as zeros, as the convolution sees it); for a grouped
    /// layer, the diagonal block of each group.
    ///
    /// # Errors
    /// [`Error::ChannelMismatch`] when `input` does not have the layer's input channels, and
    /// [`Error::EmptyOutput`] when it is too small for the kernel.
    pub fn of_input<T: Real>(layer: &Conv2dWeights<T>, input: &Tensor4<T>) -> Result<Self> {
        let [n, _, ho, wo] = crate::exec::reference::output_dims(input, layer)?;
        let (groups, dim) = (layer.shape().groups, patch_len(layer));
        let mut patches = DMatrix::<f64>::zeros(dim, n * ho * wo);
        for (col, (img, oy, ox)) in
            (0..n).flat_map(|i| (0..ho).flat_map(move |y| (0..wo).map(move |x| (i, y, x)))).enumerate()
        {
            patch(layer, input, (img, oy, ox), patches.column_mut(col).as_mut_slice());
        }
        let (count, dg) = (patches.ncols() as f64, dim / groups);
        let block = |g: usize| {
            let p = patches.rows(g * dg, dg);
            p * p.transpose() / count
        };
        Ok(Self { blocks: (0..groups).map(block).collect() })
    }

    /// The blocks' values, row-major (each is symmetric: column-major too), one block after
    /// another: `dim²` values, or `groups · (dim/groups)²` for a grouped layer's.
    pub fn values(&self) -> Vec<f64> {
        self.blocks.iter().flat_map(|b| b.as_slice().iter().copied()).collect()
    }

    /// The patch length, `C·kh·kw` (all groups).
    pub fn dim(&self) -> usize {
        self.blocks.iter().map(DMatrix::nrows).sum()
    }

    /// The number of diagonal blocks: 1, or the layer's channel groups.
    pub fn groups(&self) -> usize {
        self.blocks.len()
    }

    /// `tr(K S Kᵀ)`: the output energy of kernel `k` (bias aside) for these inputs. With
    /// grouped moments, output channel `n` of `k` is taken to see only its group's inputs (as
    /// every factorisation of a grouped layer computes).
    ///
    /// # Panics
    /// When `k.patch_len()` is not [`dim`](Self::dim), `k.out_channels` is not a multiple of
    /// the groups, or `k.weight` is not `out_channels · patch_len` long (callers check first).
    pub fn energy(&self, k: &DenseKernel) -> f64 {
        let (n, d, g) = (k.out_channels, self.dim(), self.groups());
        assert!(k.patch_len() == d && n % g == 0, "kernel and moments of different sizes");
        if let [s] = &self.blocks[..] {
            // S is symmetric, so its column-major storage is its row-major one.
            let mut ks = vec![0.0; n * d];
            crate::exec::fast::gemm(n, d, d, &k.weight, d, s.as_slice(), d, &mut ks, d);
            return dot(&ks, &k.weight);
        }
        let (ng, dg) = (n / g, d / g);
        let mut ks = vec![0.0; ng * dg];
        let mut total = 0.0;
        for (gi, s) in self.blocks.iter().enumerate() {
            let rows = &k.weight[gi * ng * d + gi * dg..];
            crate::exec::fast::gemm(ng, dg, dg, rows, d, s.as_slice(), dg, &mut ks, dg);
            total += (0..ng).map(|r| dot(&ks[r * dg..][..dg], &rows[r * d..][..dg])).sum::<f64>();
        }
        total
    }

    /// `e(r)` of `f` at every rank `0..=max_rank` (module docs): [`lost_fractions`] with the
    /// energy of these moments.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when [`dim`](Self::dim) is not the layer's `C·kh·kw`, and
    /// those of [`lost_fractions`].
    pub fn lost_energy<T: Real>(&self, f: &dyn Factored<T>) -> Result<Vec<f64>> {
        let invalid = |what, value: usize, expected| Error::InvalidParameter {
            context: format!("input moments of `{}`", f.layer().name()),
            what,
            value: value as f64,
            expected,
        };
        if patch_len(f.layer()) != self.dim() {
            return Err(invalid("dimension", self.dim(), "the layer's input channels x kernel height x kernel width"));
        }
        if self.groups() != 1 && self.groups() != f.layer().shape().groups {
            return Err(invalid("groups", self.groups(), "1 (the whole matrix) or the layer's channel groups"));
        }
        match self.lost_by_components(f)? {
            Some(loss) => Ok(loss),
            None => lost_fractions(f, |k| self.energy(k)),
        }
    }

    /// [`lost_energy`](Self::lost_energy) from the components, for a factorisation with
    /// [`Factored::component`]s of few inner dimensions (`q ≤ out/2` each): with the kernel at
    /// rank `r` the sum of components `T_j = A_j B_j`, `j < r`,
    /// `tr(ΔW S ΔWᵀ) = tr(W S Wᵀ) − 2 Σ_j ⟨W S, T_j⟩ + Σ_{i,j} ⟨A_iᵀA_j, B_i S B_jᵀ⟩`, every
    /// term from one product of all components' `B` with `S` (`Q·D²`, `Q` their inner
    /// dimensions together, instead of `N·D²` per rank). `None` where that does not apply.
    fn lost_by_components<T: Real>(&self, f: &dyn Factored<T>) -> Result<Option<Vec<f64>>> {
        let ws = &mut Workspace::new();
        let (true, Some(first)) = (self.groups() == 1, f.component(0, ws)) else { return Ok(None) };
        let dense = DenseKernel::of(f.layer());
        let (n, d) = (dense.out_channels, self.dim());
        let first = DenseKernel::product_of_chain(&first?)?;
        if 2 * first.inner > n {
            return Ok(None);
        }
        let (max, top) = (f.max_rank(), scored_ranks(f));
        let mut parts = vec![first];
        for index in 1..top {
            let Some(factors) = f.component(index, ws) else { return Ok(None) };
            parts.push(DenseKernel::product_of_chain(&factors?)?);
        }
        if let Some((index, t)) = parts.iter().enumerate().find(|(_, t)| (t.out_channels, t.patch_len) != (n, d)) {
            return Err(Error::InvalidParameter {
                context: format!("component {index} of `{}`", f.layer().name()),
                what: "composed kernel entries per output",
                value: t.patch_len as f64,
                expected: "the layer's input channels x kernel height x kernel width",
            });
        }
        let g = Grams::of(&dense, &parts, self.blocks[0].as_slice());
        if g.signal <= 0.0 {
            return Ok(Some(vec![0.0; max + 1]));
        }
        let mut loss = g.lost_fractions();
        loss.resize(max + 1, loss[top]);
        Ok(Some(loss))
    }
}

/// The inner products [`InputMoments::lost_energy`] needs of a layer's kernel `W` and its
/// components `T_j = A_j B_j`, stacked as `A` (`N x Q`) and `B` (`Q x D`) (`Q = Σ q_j`).
struct Grams {
    /// `tr(W S Wᵀ)`.
    signal: f64,
    /// `AᵀA`, `Q x Q`.
    ga: Vec<f64>,
    /// `B S Bᵀ`, `Q x Q`.
    gb: Vec<f64>,
    /// `⟨W S, T_j⟩` per component.
    cross: Vec<f64>,
    /// Each component's columns of `A`.
    starts: Vec<std::ops::Range<usize>>,
    /// `Q`.
    q: usize,
}

impl Grams {
    fn of(dense: &DenseKernel, parts: &[LowRankKernel], s: &[f64]) -> Self {
        let gemm = crate::exec::fast::gemm;
        let (n, d) = (dense.out_channels, dense.patch_len());
        let q: usize = parts.iter().map(|t| t.inner).sum();
        // A (N x Q) and B (Q x D): the components side by side.
        let (mut a, mut b) = (vec![0.0; n * q], Vec::with_capacity(q * d));
        let mut col = 0;
        for t in parts {
            for (dst, src) in a.chunks_exact_mut(q).zip(t.a.chunks_exact(t.inner)) {
                dst[col..col + t.inner].copy_from_slice(src);
            }
            b.extend_from_slice(&t.b);
            col += t.inner;
        }
        let bt = transpose(&b, q, d);
        let mut ws = vec![0.0; n * d];
        gemm(n, d, d, &dense.weight, d, s, d, &mut ws, d);
        let signal = dot(&ws, &dense.weight);
        let (mut bs, mut gb, mut ga, mut wsb) =
            (vec![0.0; q * d], vec![0.0; q * q], vec![0.0; q * q], vec![0.0; n * q]);
        gemm(q, d, d, &b, d, s, d, &mut bs, d); // B S
        gemm(q, d, q, &bs, d, &bt, q, &mut gb, q); // B S Bᵀ
        gemm(q, n, q, &transpose(&a, n, q), n, &a, q, &mut ga, q); // Aᵀ A
        gemm(n, d, q, &ws, d, &bt, q, &mut wsb, q); // W S Bᵀ
        let mut cross = Vec::with_capacity(parts.len());
        let mut col = 0;
        for t in parts {
            cross.push((0..n).map(|r| dot(&wsb[r * q + col..][..t.inner], &a[r * q + col..][..t.inner])).sum());
            col += t.inner;
        }
        Self { signal, ga, gb, cross, starts: starts(parts), q }
    }

    /// The lost fraction at ranks `0..=` the number of components.
    fn lost_fractions(&self) -> Vec<f64> {
        // ⟨T_i S, T_j⟩: the products of the two Grams over the blocks of components i and j.
        let pair = |i: usize, j: usize| -> f64 {
            let (ri, rj) = (self.starts[i].clone(), self.starts[j].clone());
            ri.flat_map(|k| rj.clone().map(move |l| k * self.q + l)).map(|kl| self.ga[kl] * self.gb[kl]).sum()
        };
        let (mut kept, mut crossed, mut loss) = (0.0, 0.0, vec![1.0]);
        for j in 0..self.cross.len() {
            kept += pair(j, j) + 2.0 * (0..j).map(|i| pair(i, j)).sum::<f64>();
            crossed += self.cross[j];
            loss.push(((self.signal - 2.0 * crossed + kept) / self.signal).clamp(0.0, 1.0));
        }
        loss
    }
}

/// Each component's columns of `A` (rows of `B`).
fn starts(parts: &[LowRankKernel]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::with_capacity(parts.len());
    let mut at = 0;
    for t in parts {
        out.push(at..at + t.inner);
        at += t.inner;
    }
    out
}

/// The transpose of a row-major `rows x cols` matrix.
fn transpose(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The highest rank [`lost_fractions`] computes: the scheme's break-even rank in MACs (rounded
/// up), at least 1 and at most the layer's maximum rank.
pub fn scored_ranks<T: Real>(f: &dyn Factored<T>) -> usize {
    (f.scheme().break_even_rank(&f.layer().shape()).ceil() as usize).clamp(1, f.max_rank())
}

/// The fraction of a layer's output energy `f` loses at every rank `0..=max_rank`, a kernel's
/// energy measured by `energy` (for example [`InputMoments::energy`]):
/// `energy(W − Ŵ_r) / energy(W)`, clamped to `[0, 1]`, `Ŵ_r` the kernel of the factors at rank
/// `r` ([`DenseKernel::of_chain`]). Rank 0 loses everything; above [`scored_ranks`] (where a
/// factorisation costs more MACs than the layer) the value there repeats; a layer whose
/// kernel carries no energy loses 0.
///
/// # Errors
/// The scheme's failures from [`Factored::factors`], and [`Error::InvalidParameter`] when the
/// factors compose to a kernel of another size than the layer's.
pub fn lost_fractions<T: Real>(f: &dyn Factored<T>, energy: impl Fn(&DenseKernel) -> f64 + Sync) -> Result<Vec<f64>> {
    let dense = DenseKernel::of(f.layer());
    let signal = energy(&dense);
    let (max, top) = (f.max_rank(), scored_ranks(f));
    if signal <= 0.0 {
        return Ok(vec![0.0; max + 1]);
    }
    let lost_at = |rank: usize| -> Result<f64> {
        if rank == 0 {
            return Ok(1.0);
        }
        let mut diff = DenseKernel::of_chain(&f.factors(rank, &mut Workspace::new())?)?;
        if (diff.out_channels, diff.patch_len()) != (dense.out_channels, dense.patch_len()) {
            return Err(Error::InvalidParameter {
                context: format!("factors of `{}` at rank {rank}", f.layer().name()),
                what: "composed kernel entries per output",
                value: diff.patch_len() as f64,
                expected: "the layer's input channels x kernel height x kernel width",
            });
        }
        diff.weight.iter_mut().zip(&dense.weight).for_each(|(x, w)| *x = w - *x);
        Ok((energy(&diff) / signal).clamp(0.0, 1.0))
    };
    let mut loss = (0..=top).into_par_iter().map(lost_at).collect::<Result<Vec<f64>>>()?;
    loss.resize(max + 1, loss[top]);
    Ok(loss)
}

/// `C·kh·kw` of `layer` (all input channels).
fn patch_len<T: Real>(layer: &Conv2dWeights<T>) -> usize {
    let s = layer.shape();
    s.in_channels * s.kh * s.kw
}

/// `dim x dim` row-major `values` as a symmetric matrix, checked: no negative diagonal entry,
/// symmetric to `1e-3` of the largest diagonal entry (then made exactly symmetric).
fn symmetric(layer: &str, dim: usize, values: &[f64]) -> Result<DMatrix<f64>> {
    let s = DMatrix::from_row_slice(dim, dim, values);
    let invalid = |what, value, expected| Error::InvalidParameter {
        context: format!("input moments of `{layer}`"),
        what,
        value,
        expected,
    };
    if let Some(&d) = s.diagonal().iter().find(|d| **d < 0.0) {
        return Err(invalid("a diagonal entry", d, "at least 0 (a second moment)"));
    }
    let scale = s.diagonal().max().max(f64::MIN_POSITIVE);
    let asym = (&s - s.transpose()).abs().max() / scale;
    if asym > 1e-3 {
        return Err(invalid("asymmetry", asym, "at most 1e-3 of the largest diagonal entry"));
    }
    Ok((&s + s.transpose()) * 0.5)
}

/// Writes the input patch of output position `(img, oy, ox)` into `out` (`C·kh·kw`; taps in
/// the padding are 0).
fn patch<T: Real>(layer: &Conv2dWeights<T>, input: &Tensor4<T>, at: (usize, usize, usize), out: &mut [f64]) {
    patch_of(layer, input, at, 0..input.dims()[1], out);
}

/// [`patch`] of the input channels `channels` only, into `out` (`channels.len()·kh·kw`).
fn patch_of<T: Real>(
    layer: &Conv2dWeights<T>,
    input: &Tensor4<T>,
    (img, oy, ox): (usize, usize, usize),
    channels: std::ops::Range<usize>,
    out: &mut [f64],
) {
    let (s, g) = (layer.shape(), layer.geometry());
    let [_, _, h, w] = input.dims();
    let first = channels.start;
    for (ch, a, b) in channels.flat_map(|ch| (0..s.kh).flat_map(move |a| (0..s.kw).map(move |b| (ch, a, b)))) {
        let y = source(oy, a, g.stride.0, g.dilation.0, g.padding.top, h);
        let x = source(ox, b, g.stride.1, g.dilation.1, g.padding.left, w);
        out[((ch - first) * s.kh + a) * s.kw + b] = match (y, x) {
            (Some(y), Some(x)) => input.get(img, ch, y, x).to_f64().unwrap_or(f64::NAN),
            _ => 0.0,
        };
    }
}

/// A factorisation whose [`correlated_loss`](Factored::correlated_loss), the `e` the planner
/// scores, is [`InputMoments::lost_energy`]; everything else is the factorisation's own.
pub struct Scored<'a, T: Real> {
    inner: &'a dyn Factored<T>,
    loss: Vec<f64>,
}

impl<'a, T: Real> Scored<'a, T> {
    /// `inner` scored under `moments`.
    ///
    /// # Errors
    /// Those of [`InputMoments::lost_energy`].
    pub fn new(inner: &'a dyn Factored<T>, moments: &InputMoments) -> Result<Self> {
        Ok(Self { inner, loss: moments.lost_energy(inner)? })
    }

    /// `inner` scored by `loss`, the lost fraction at every rank `0..=max_rank` (a study's own
    /// measure of damage).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `loss` does not have `max_rank + 1` entries,
    /// [`Error::InvalidParameter`] for an entry outside `[0, 1]`.
    pub fn with_loss(inner: &'a dyn Factored<T>, loss: Vec<f64>) -> Result<Self> {
        let layer = inner.layer().name();
        if loss.len() != inner.max_rank() + 1 {
            let (shape, expected, actual) = (vec![inner.max_rank() + 1], inner.max_rank() + 1, loss.len());
            return Err(Error::LengthMismatch {
                layer: layer.to_string(),
                what: "lost fractions",
                shape,
                expected,
                actual,
            });
        }
        if let Some(&e) = loss.iter().find(|e| !(0.0..=1.0).contains(*e)) {
            return Err(Error::InvalidParameter {
                context: format!("score of `{layer}`"),
                what: "lost fraction",
                value: e,
                expected: "in [0, 1]",
            });
        }
        Ok(Self { inner, loss })
    }
}

impl<T: Real> Factored<T> for Scored<'_, T> {
    fn scheme(&self) -> SchemeKind {
        self.inner.scheme()
    }
    fn layer(&self) -> &Conv2dWeights<T> {
        self.inner.layer()
    }
    fn errors(&self) -> ErrorTable {
        self.inner.errors()
    }
    fn correlated_loss(&self) -> Vec<f64> {
        self.loss.clone()
    }
    fn factors(&self, rank: usize, workspace: &mut Workspace<T>) -> Result<Vec<Factor<T>>> {
        self.inner.factors(rank, workspace)
    }
    fn component(&self, index: usize, workspace: &mut Workspace<T>) -> Option<Result<Vec<Factor<T>>>> {
        self.inner.component(index, workspace)
    }
}
