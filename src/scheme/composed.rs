//! The dense kernel a chain of factor convolutions computes.

use super::Factor;
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::weights::Conv2dWeights;

/// A kernel as a dense `[out][in][kh][kw]` array in `f64`, groups expanded with zeros: what a
/// layer or a chain of factors computes at each output position, as one matrix of
/// `out x (in·kh·kw)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseKernel {
    /// Output channels.
    pub out_channels: usize,
    /// Input channels (all groups).
    pub in_channels: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// The weights, `[out][in][kh][kw]`.
    pub weight: Vec<f64>,
}

impl DenseKernel {
    /// The dense form of `conv` (a grouped kernel's other groups' entries are 0).
    pub fn of<T: Real>(conv: &Conv2dWeights<T>) -> Self {
        let s = conv.shape();
        let (ng, cg, taps) = (s.out_per_group(), s.in_per_group(), s.kh * s.kw);
        let mut weight = vec![0.0; s.out_channels * s.in_channels * taps];
        for n in 0..s.out_channels {
            let first = n / ng * cg;
            for ci in 0..cg {
                let from = &conv.weight()[(n * cg + ci) * taps..][..taps];
                let to = &mut weight[(n * s.in_channels + first + ci) * taps..][..taps];
                to.iter_mut().zip(from).for_each(|(t, f)| *t = f.to_f64().unwrap_or(f64::NAN));
            }
        }
        Self { out_channels: s.out_channels, in_channels: s.in_channels, kh: s.kh, kw: s.kw, weight }
    }

    /// Taps per kernel, `kh·kw`.
    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// Entries per output channel, `in·kh·kw`: the length of an input patch.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.taps()
    }

    /// The kernel of a chain of factors applied in order (what [`Factored::factors`]
    /// returns): each factor after the first reads the previous one's output, and at most one
    /// factor of the chain has a height above 1 and at most one a width above 1, as in every
    /// scheme here. Strides and dilations sit on the factor that has the extent, so the chain
    /// computes this kernel with the layer's geometry.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an empty chain, a chain with two factors of height (or
    /// width) above 1, or channel counts that do not chain.
    ///
    /// [`Factored::factors`]: super::Factored::factors
    pub fn of_chain<T: Real>(factors: &[Factor<T>]) -> Result<Self> {
        let Some((first, rest)) = factors.split_first() else {
            return Err(chain_error("", "number of factors", 0.0, "at least one"));
        };
        rest.iter().try_fold(Self::of(&first.conv), |acc, f| Self::of(&f.conv).after(&acc, f.conv.name()))
    }

    /// The kernel of a chain of two or more factors as a product `A·B` of an `out x q` and a
    /// `q x patch_len` matrix (row-major): for each tap of the last factor, its `out x in`
    /// matrix there is a block of columns of `A`, and the kernel of the factors before it,
    /// placed at that tap, the matching block of rows of `B` (`q` = the last factor's inputs
    /// times its taps). What [`of_chain`](Self::of_chain) computes is `A·B`.
    ///
    /// # Errors
    /// Those of [`of_chain`](Self::of_chain), and for a chain of one factor.
    pub fn product_of_chain<T: Real>(factors: &[Factor<T>]) -> Result<LowRankKernel> {
        let Some((last, rest)) = factors.split_last().filter(|(_, rest)| !rest.is_empty()) else {
            return Err(chain_error("", "number of factors", factors.len() as f64, "at least two"));
        };
        let (last, first) = (Self::of(&last.conv), Self::of_chain(rest)?);
        let out = last.shape_after(&first, last_name(factors))?;
        let (n, m, taps) = (last.out_channels, last.in_channels, last.taps());
        let (q, d) = (m * taps, out.patch_len());
        let mut a = vec![0.0; n * q];
        let mut b = vec![0.0; q * d];
        for (a_, b_) in (0..last.kh).flat_map(|a_| (0..last.kw).map(move |b_| (a_, b_))) {
            let tap = a_ * last.kw + b_;
            for (row, dst) in a.chunks_exact_mut(q).enumerate() {
                for c in 0..m {
                    dst[tap * m + c] = last.weight[(row * m + c) * taps + tap];
                }
            }
            let mut placed = Self { out_channels: m, weight: vec![0.0; m * d], ..out.clone() };
            placed.place(&first.weight, &first, (a_, b_), (last.kh > 1, last.kw > 1));
            b[tap * m * d..][..m * d].copy_from_slice(&placed.weight);
        }
        Ok(LowRankKernel { out_channels: n, inner: q, patch_len: d, a, b })
    }

    /// The empty kernel `self` applied to `first`'s output has, checked: at most one of the two
    /// with an extent on each axis, and channels that chain.
    fn shape_after(&self, first: &Self, name: &str) -> Result<Self> {
        if self.kh > 1 && first.kh > 1 || self.kw > 1 && first.kw > 1 {
            return Err(chain_error(name, "factors with a kernel extent on one axis", 2.0, "at most one per axis"));
        }
        if self.in_channels != first.out_channels {
            return Err(chain_error(name, "input channels", self.in_channels as f64, "the previous factor's outputs"));
        }
        let (kh, kw) = (self.kh.max(first.kh), self.kw.max(first.kw));
        Ok(Self { out_channels: self.out_channels, in_channels: first.in_channels, kh, kw, weight: vec![] })
    }

    /// `self` applied to `first`'s output: for each of `self`'s taps, one product of its
    /// `out x in` matrix there with `first`'s `in x (C·taps)` kernel, placed at that tap.
    fn after(&self, first: &Self, name: &str) -> Result<Self> {
        let mut out = self.shape_after(first, name)?;
        let (n, m, d1) = (self.out_channels, self.in_channels, first.patch_len());
        out.weight = vec![0.0; n * out.patch_len()];
        let (mut at_tap, mut product) = (vec![0.0; n * m], vec![0.0; n * d1]);
        for (a, b) in (0..self.kh).flat_map(|a| (0..self.kw).map(move |b| (a, b))) {
            let tap = a * self.kw + b;
            at_tap.iter_mut().enumerate().for_each(|(i, v)| *v = self.weight[i * self.taps() + tap]);
            crate::exec::fast::gemm(n, m, d1, &at_tap, m, &first.weight, d1, &mut product, d1);
            out.place(&product, first, (a, b), (self.kh > 1, self.kw > 1));
        }
        Ok(out)
    }

    /// Adds `product` (`out x (C·taps of first)`) to `self`, each of `first`'s taps `(i, j)`
    /// going to row `a` (if the second factor has the height) else `i`, and likewise columns.
    fn place(&mut self, product: &[f64], first: &Self, (a, b): (usize, usize), second_has: (bool, bool)) {
        let (kw, taps, t1) = (self.kw, self.taps(), first.taps());
        for (dst, src) in self.weight.chunks_exact_mut(taps).zip(product.chunks_exact(t1)) {
            for i in 0..first.kh {
                for j in 0..first.kw {
                    let (y, x) = (if second_has.0 { a } else { i }, if second_has.1 { b } else { j });
                    dst[y * kw + x] += src[i * first.kw + j];
                }
            }
        }
    }
}

/// A kernel as a product `A·B` ([`DenseKernel::product_of_chain`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LowRankKernel {
    /// Rows of `A`: the output channels.
    pub out_channels: usize,
    /// Columns of `A`, rows of `B`.
    pub inner: usize,
    /// Columns of `B`: the patch length `in·kh·kw`.
    pub patch_len: usize,
    /// `A`, `out_channels x inner`, row-major.
    pub a: Vec<f64>,
    /// `B`, `inner x patch_len`, row-major.
    pub b: Vec<f64>,
}

fn last_name<T: Real>(factors: &[Factor<T>]) -> &str {
    factors.last().map_or("", |f| f.conv.name())
}

fn chain_error(name: &str, what: &'static str, value: f64, expected: &'static str) -> Error {
    Error::InvalidParameter { context: format!("factor chain `{name}`"), what, value, expected }
}
