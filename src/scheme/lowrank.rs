//! The linear algebra the matrix schemes share ([`Spatial`](super::Spatial),
//! [`Channel`](super::Channel), [`Decoupled`](super::Decoupled)): a thin SVD `M = A Bᵀ` of
//! each block of a layer, its error table, and its energy under the correlated-input model.
//!
//! A block is one matrix per group (or per output channel). Its SVD comes from the `f64` Gram
//! matrix of its smaller side and nalgebra's symmetric eigensolver: `MᵀM = V S² Vᵀ` gives
//! `B = V` and `A = M V` (or `MMᵀ = U S² Uᵀ` gives `A = U`, `B = Mᵀ U`). One side is
//! orthonormal and the other carries the singular values, so `A Bᵀ = M` exactly at full rank
//! whatever the accuracy of the small singular values, and truncating to the first `r` columns
//! keeps the dominant rank-`r` subspace (Eckart–Young).

use super::{ErrorTable, Factor, Factored, SchemeKind, Workspace};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::weights::{Conv2dWeights, ConvShape};
use nalgebra::{DMatrix, SymmetricEigen};

/// One block's thin SVD: `M = A Bᵀ`, columns in descending singular value order.
#[derive(Debug, Clone)]
pub(crate) struct LowRank {
    /// Singular values, descending.
    pub s: Vec<f64>,
    /// `rows x k`.
    pub a: DMatrix<f64>,
    /// `cols x k`.
    pub b: DMatrix<f64>,
}

impl LowRank {
    /// The thin SVD of `m`; `layer` and `block` name a failure.
    pub fn of(m: &DMatrix<f64>, layer: &str, block: usize) -> Result<Self> {
        let (rows, cols) = m.shape();
        let by_cols = cols <= rows;
        let gram = if by_cols { m.transpose() * m } else { m * m.transpose() };
        let n = gram.nrows();
        let eig = SymmetricEigen::try_new(gram, f64::EPSILON, 1000 * n.max(1)).ok_or_else(|| Error::Svd {
            layer: layer.to_string(),
            channel: block,
            reason: format!("the {n}x{n} symmetric eigensolver did not converge"),
        })?;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
        let s = order.iter().map(|&i| eig.eigenvalues[i].max(0.0).sqrt()).collect();
        let vectors = DMatrix::from_fn(n, n, |r, c| eig.eigenvectors[(r, order[c])]);
        let (a, b) = if by_cols {
            (m * &vectors, vectors)
        } else {
            let b = m.transpose() * &vectors;
            (vectors, b)
        };
        Ok(Self { s, a, b })
    }

    /// The SVD of `m` in the norm whose row and column weights are `I ⊗ R` for the given
    /// [`Whitening`]s: `m' = (I⊗R_rows^{1/2}) m (I⊗R_cols^{1/2})` is factored and the factors
    /// mapped back by the inverse roots, so `A Bᵀ = m` at full rank and truncation is optimal in
    /// that norm (the singular values are the weighted ones).
    pub fn fitted(
        m: &DMatrix<f64>,
        rows: Option<&Whitening>,
        cols: Option<&Whitening>,
        layer: &str,
        block: usize,
    ) -> Result<Self> {
        if rows.is_none() && cols.is_none() {
            return Self::of(m, layer, block);
        }
        let mut w = m.clone();
        if let Some(r) = rows {
            w = apply_rows(&w, &r.half);
        }
        if let Some(c) = cols {
            w = apply_rows(&w.transpose(), &c.half).transpose();
        }
        let mut lr = Self::of(&w, layer, block)?;
        if let Some(r) = rows {
            lr.a = apply_rows(&lr.a, &r.inv);
        }
        if let Some(c) = cols {
            lr.b = apply_rows(&lr.b, &c.inv);
        }
        Ok(lr)
    }

    /// The number of components, `min(rows, cols)`.
    pub fn k(&self) -> usize {
        self.s.len()
    }

    /// Component `j` alone (zero beyond [`k`](Self::k)).
    fn column(&self, j: usize) -> Self {
        let pick =
            |m: &DMatrix<f64>| DMatrix::from_fn(m.nrows(), 1, |r, _| if j < m.ncols() { m[(r, j)] } else { 0.0 });
        Self { s: vec![self.s.get(j).copied().unwrap_or(0.0)], a: pick(&self.a), b: pick(&self.b) }
    }

    /// `Σ_{i,j ≥ r} (Aᵀ WA A)_ij (Bᵀ WB B)_ij` for every `r` in `0..=k`: the energy, in the
    /// norm `‖X‖² = tr(Xᵀ WA X WB)`, of the components a rank-`r` truncation discards (the
    /// cross terms included: the weighted components need not be orthogonal). `WA` / `WB` act
    /// on the rows / columns as `I ⊗ corr` (consecutive runs of `corr.nrows()` rows share
    /// `corr`, e.g. the taps of one channel); `None` is the identity.
    pub fn discarded_energy(&self, wa: Option<&DMatrix<f64>>, wb: Option<&DMatrix<f64>>) -> Vec<f64> {
        let (p, q) = (weighted_gram(&self.a, wa), weighted_gram(&self.b, wb));
        let k = self.k();
        let mut out = vec![0.0; k + 1];
        for r in (0..k).rev() {
            let cross: f64 = (r + 1..k).map(|j| p[(r, j)] * q[(r, j)]).sum();
            out[r] = out[r + 1] + p[(r, r)] * q[(r, r)] + 2.0 * cross;
        }
        out
    }
}

/// A layer factored block by block by one of the matrix schemes. The schemes differ only in how
/// they cut the weight into blocks (their `factor`) and lay the truncated blocks out as factor
/// weights (`layout`); errors, correlated losses, rank checks and factor building are shared.
pub(crate) struct Blocks<'a, T> {
    pub kind: SchemeKind,
    pub layer: &'a Conv2dWeights<T>,
    pub blocks: Vec<LowRank>,
    /// The correlated-input model on each block's rows and columns (`I ⊗ corr`, `None` for the
    /// identity), for [`Factored::correlated_loss`].
    pub corr: (Option<DMatrix<f64>>, Option<DMatrix<f64>>),
    /// The factor weights at a rank, each in its convolution's layout, in run order.
    pub layout: fn(&[LowRank], &ConvShape, usize) -> Vec<Vec<f64>>,
}

impl<T: Real> Factored<T> for Blocks<'_, T> {
    fn scheme(&self) -> SchemeKind {
        self.kind
    }
    fn layer(&self) -> &Conv2dWeights<T> {
        self.layer
    }
    fn errors(&self) -> ErrorTable {
        error_table(&self.blocks)
    }
    fn correlated_loss(&self) -> Vec<f64> {
        let (rows, cols) = (self.corr.0.as_ref(), self.corr.1.as_ref());
        let per_block: Vec<Vec<f64>> = self.blocks.iter().map(|b| b.discarded_energy(rows, cols)).collect();
        loss_fraction(&per_block)
    }
    fn factors(&self, rank: usize, workspace: &mut Workspace<T>) -> Result<Vec<Factor<T>>> {
        let max = Factored::max_rank(self);
        if rank == 0 || rank > max {
            return Err(Error::InvalidRank { layer: self.layer.name().to_string(), rank, max });
        }
        let values = (self.layout)(&self.blocks, &self.layer.shape(), rank);
        super::build_factors(self.layer, &Factored::factor_specs(self, rank), values, workspace)
    }
    fn component(&self, index: usize, workspace: &mut Workspace<T>) -> Option<Result<Vec<Factor<T>>>> {
        let max = Factored::max_rank(self);
        if index >= max {
            return Some(Err(Error::InvalidRank { layer: self.layer.name().to_string(), rank: index + 1, max }));
        }
        // Every block's column `index` alone, laid out at rank 1: the layouts are linear in
        // each column, so the rank-r factors compute the sum of these over the first r.
        let blocks: Vec<LowRank> = self.blocks.iter().map(|b| b.column(index)).collect();
        let values = (self.layout)(&blocks, &self.layer.shape(), 1);
        Some(super::build_factors(self.layer, &Factored::factor_specs(self, 1), values, workspace))
    }
}

/// The error table of a layer made of `blocks` truncated at the same rank: retained energy and
/// relative Frobenius error from the singular values of every block.
fn error_table(blocks: &[LowRank]) -> ErrorTable {
    let k = blocks.iter().map(LowRank::k).max().unwrap_or(0);
    let discarded: Vec<f64> =
        (0..=k).map(|r| blocks.iter().map(|b| b.s.iter().skip(r).map(|s| s * s).sum::<f64>()).sum()).collect();
    let total = discarded[0];
    let (retained, error) = discarded
        .iter()
        .map(|&d| if total > 0.0 { ((1.0 - d / total).clamp(0.0, 1.0), (d / total).sqrt()) } else { (1.0, 0.0) })
        .unzip();
    ErrorTable::new(retained, error)
}

/// The fraction of the correlated-input output energy lost at every rank, from each block's
/// [`discarded_energy`](LowRank::discarded_energy) (entry 0 is the whole signal).
fn loss_fraction(per_block: &[Vec<f64>]) -> Vec<f64> {
    let k = per_block.iter().map(Vec::len).max().unwrap_or(1);
    let at = |r: usize| per_block.iter().map(|e| e.get(r).copied().unwrap_or(0.0)).sum::<f64>();
    let total = at(0);
    (0..k).map(|r| if total > 0.0 { (at(r) / total).clamp(0.0, 1.0) } else { 0.0 }).collect()
}

/// The weight of `layer` as `f64`, checked finite.
pub(crate) fn weights_f64<T: Real>(layer: &crate::Conv2dWeights<T>) -> Result<Vec<f64>> {
    crate::weights::check_finite(layer.name(), "weight", layer.weight())?;
    Ok(layer.weight().iter().map(|v| v.to_f64_exact()).collect())
}

/// `values` converted to `T` into `out` (resized), checked finite after rounding.
pub(crate) fn write_as<T: Real>(layer: &str, what: &'static str, values: &[f64], out: &mut Vec<T>) -> Result<()> {
    out.clear();
    out.extend(values.iter().map(|&v| T::from_f64_lossy(v)));
    crate::weights::check_finite(layer, what, out)
}

/// A tap correlation `R` with its square root and inverse square root.
#[derive(Debug, Clone)]
pub(crate) struct Whitening {
    half: DMatrix<f64>,
    inv: DMatrix<f64>,
}

impl Whitening {
    /// The [`tap_correlation`](crate::fit::tap_correlation) of a `kh x kw` kernel.
    pub fn taps(kh: usize, kw: usize, dilation: (usize, usize), rho: f64) -> Self {
        let t = kh * kw;
        let (half, inv) = crate::fit::correlation_roots(kh, kw, dilation, rho);
        Self { half: DMatrix::from_row_slice(t, t, &half), inv: DMatrix::from_row_slice(t, t, &inv) }
    }
}

/// `(I ⊗ w) x`: `w` applied to every run of `w.nrows()` consecutive rows of `x`.
fn apply_rows(x: &DMatrix<f64>, w: &DMatrix<f64>) -> DMatrix<f64> {
    let t = w.nrows();
    let mut y = x.clone();
    for start in (0..x.nrows()).step_by(t) {
        y.rows_mut(start, t).copy_from(&(w * x.rows(start, t)));
    }
    y
}

/// `Xᵀ (I ⊗ corr) X` (`Xᵀ X` without `corr`), block by block.
fn weighted_gram(x: &DMatrix<f64>, corr: Option<&DMatrix<f64>>) -> DMatrix<f64> {
    match corr {
        Some(corr) => x.transpose() * apply_rows(x, corr),
        None => x.transpose() * x,
    }
}
