//! Input moments without data: smooth random images, and the second moments of the patches a
//! network's layers see when it runs on them.
//!
//! A synthetic image is, per channel, a separable first-order autoregressive Gaussian field
//! (lag-1 correlation `ρ` along each axis, unit variance) scaled to `mean + std · field`
//! ([`Prior`]), then optionally normalised as the model's own preprocessing would
//! ([`Synthetic::normalize`]). [`Synthetic::sample_patches`] adds the outer products of
//! randomly drawn input patches of a layer to a [`PatchSum`]; its [`moments`](PatchSum::moments)
//! are the layer's [`InputMoments`]. Both draw from one seeded stream, so a run is reproducible
//! from its seed and the order of its calls.
//!
//! ```
//! use dac::moments::{PatchSum, Prior, Synthetic};
//! use dac::Conv2dWeights;
//! let layer = Conv2dWeights::new(vec![0.5f32; 4 * 3 * 9], [4, 3, 3, 3])?;
//! let mut synth = Synthetic::new(Prior::default(), 0);
//! let images = synth.images([8, 3, 16, 16])?;
//! let mut sum = PatchSum::new(3 * 9);
//! synth.sample_patches(&layer, &images, 512, &mut sum)?;
//! let moments = sum.moments("conv")?;
//! assert_eq!(moments.dim(), 27);
//! # Ok::<(), dac::Error>(())
//! ```

use super::{patch_len, patch_of, InputMoments};
use crate::error::{Error, Result};
use crate::exec::Tensor4;
use crate::scalar::Real;
use crate::weights::Conv2dWeights;
use nalgebra::DMatrix;

/// The distribution of a synthetic image's pixels: lag-1 correlation `rho` along each axis,
/// mean `mean`, standard deviation `std` (the same for every channel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prior {
    rho: f64,
    mean: f64,
    std: f64,
}

impl Prior {
    /// A prior, validated: `rho` in `[0, 1)`, `mean` finite, `std` finite and positive.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the value out of range.
    pub fn new(rho: f64, mean: f64, std: f64) -> Result<Self> {
        let invalid = |what, value, expected| Error::InvalidParameter {
            context: "synthetic image prior".into(),
            what,
            value,
            expected,
        };
        if !(0.0..1.0).contains(&rho) {
            return Err(invalid("rho", rho, "in [0, 1)"));
        }
        if !mean.is_finite() {
            return Err(invalid("mean", mean, "finite"));
        }
        if !(std.is_finite() && std > 0.0) {
            return Err(invalid("std", std, "finite and above 0"));
        }
        Ok(Self { rho, mean, std })
    }

    /// `(rho, mean, std)`.
    pub fn values(&self) -> (f64, f64, f64) {
        (self.rho, self.mean, self.std)
    }
}

impl Default for Prior {
    /// `ρ = 0.95`, mean 0.5, standard deviation 0.25: smooth images with pixels mostly in
    /// `[0, 1]`.
    fn default() -> Self {
        Self { rho: 0.95, mean: 0.5, std: 0.25 }
    }
}

/// A seeded source of synthetic images and of the patch positions sampled from what a network
/// computes on them (module docs).
#[derive(Debug, Clone)]
pub struct Synthetic {
    prior: Prior,
    normalize: Option<(Vec<f64>, Vec<f64>)>,
    rng: Rng,
}

impl Synthetic {
    /// Images of `prior`, drawn from the stream of `seed`.
    pub fn new(prior: Prior, seed: u64) -> Self {
        Self { prior, normalize: None, rng: Rng::new(seed) }
    }

    /// Images normalised as `(pixel − mean[c]) / std[c]` (a model's input preprocessing; one
    /// value, or one per channel).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an empty list, a value that is not finite or a
    /// standard deviation that is not positive.
    pub fn normalize(mut self, mean: Vec<f64>, std: Vec<f64>) -> Result<Self> {
        let invalid = |what, value, expected| Error::InvalidParameter {
            context: "synthetic image normalisation".into(),
            what,
            value,
            expected,
        };
        if mean.is_empty() || std.is_empty() {
            return Err(invalid("number of values", 0.0, "at least one mean and one standard deviation"));
        }
        if let Some(&m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(invalid("mean", m, "finite"));
        }
        if let Some(&s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(invalid("std", s, "finite and above 0"));
        }
        self.normalize = Some((mean, std));
        Ok(self)
    }

    /// `n` images of `c` channels, `h x w` (module docs).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the normalisation has neither one value nor `c`, and
    /// the errors of [`Tensor4::new`] for an empty shape.
    pub fn images(&mut self, [n, c, h, w]: [usize; 4]) -> Result<Tensor4<f32>> {
        let per_channel = |values: &[f64]| -> Result<Vec<f64>> {
            match values.len() {
                1 => Ok(vec![values[0]; c]),
                len if len == c => Ok(values.to_vec()),
                len => Err(Error::InvalidParameter {
                    context: "synthetic image normalisation".into(),
                    what: "number of values",
                    value: len as f64,
                    expected: "one, or one per input channel",
                }),
            }
        };
        let (shift, scale) = match &self.normalize {
            Some((m, s)) => (per_channel(m)?, per_channel(s)?),
            None => (vec![0.0; c], vec![1.0; c]),
        };
        let (rho, mean, std) = self.prior.values();
        let mut data = Vec::with_capacity(n * c * h * w);
        for k in 0..n * c {
            let field = self.rng.field(h, w, rho);
            let ch = k % c;
            data.extend(field.iter().map(|v| ((mean + std * v - shift[ch]) / scale[ch]) as f32));
        }
        Tensor4::new(data, [n, c, h, w])
    }

    /// Adds the outer products `p pᵀ` of `count` input patches of `layer` to `sum`, each at an
    /// image and output position of `input` drawn uniformly (taps in the padding are 0); for a
    /// grouped sum, each group's block only.
    ///
    /// # Errors
    /// [`Error::ChannelMismatch`] and [`Error::EmptyOutput`] as the layer's executors give
    /// them, and [`Error::InvalidParameter`] when `sum` is not of the layer's `C·kh·kw` or has
    /// neither 1 block nor the layer's groups.
    pub fn sample_patches<T: Real>(
        &mut self,
        layer: &Conv2dWeights<T>,
        input: &Tensor4<T>,
        count: usize,
        sum: &mut PatchSum,
    ) -> Result<()> {
        let [n, _, ho, wo] = crate::exec::reference::output_dims(input, layer)?;
        let groups = sum.blocks.len();
        let invalid = |what, value: usize, expected| Error::InvalidParameter {
            context: format!("patch moments of `{}`", layer.name()),
            what,
            value: value as f64,
            expected,
        };
        if patch_len(layer) != sum.dim() {
            return Err(invalid("dimension", sum.dim(), "the layer's input channels x kernel height x kernel width"));
        }
        if groups != 1 && groups != layer.shape().groups {
            return Err(invalid("groups", groups, "1 (the whole matrix) or the layer's channel groups"));
        }
        let at: Vec<_> = (0..count).map(|_| (self.rng.below(n), self.rng.below(ho), self.rng.below(wo))).collect();
        let channels = input.dims()[1] / groups;
        for (g, block) in sum.blocks.iter_mut().enumerate() {
            let dim = block.nrows();
            let mut p = DMatrix::<f64>::zeros(count, dim);
            let mut row = vec![0.0; dim];
            for (r, &at) in at.iter().enumerate() {
                patch_of(layer, input, at, g * channels..(g + 1) * channels, &mut row);
                p.row_mut(r).iter_mut().zip(&row).for_each(|(o, v)| *o = *v);
            }
            *block += p.transpose() * &p;
        }
        sum.count += count;
        Ok(())
    }
}

/// `Σ p pᵀ` over the patches added so far (for a grouped layer, its diagonal blocks), and how
/// many.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchSum {
    blocks: Vec<DMatrix<f64>>,
    count: usize,
}

impl PatchSum {
    /// An empty sum of patches of `dim` entries.
    pub fn new(dim: usize) -> Self {
        Self::grouped(1, dim)
    }

    /// An empty sum of the `groups` diagonal blocks, `dim` square each, of patches of
    /// `groups · dim` entries (a grouped layer's: no other block enters its losses).
    pub fn grouped(groups: usize, dim: usize) -> Self {
        Self { blocks: vec![DMatrix::zeros(dim, dim); groups], count: 0 }
    }

    /// The patch length.
    pub fn dim(&self) -> usize {
        self.blocks.iter().map(DMatrix::nrows).sum()
    }

    /// Patches added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// `S = Σ p pᵀ / count` (its blocks): the moments of `layer` (a name for errors).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when no patch was added, and those of
    /// [`InputMoments::grouped`] (a patch value that was not finite, no group).
    pub fn moments(&self, layer: &str) -> Result<InputMoments> {
        if self.count == 0 {
            return Err(Error::InvalidParameter {
                context: format!("patch moments of `{layer}`"),
                what: "patches",
                value: 0.0,
                expected: "at least one",
            });
        }
        let dim = self.blocks.first().map_or(0, DMatrix::nrows);
        // Symmetric: the column-major storage is the row-major one.
        let values = self.blocks.iter().flat_map(|b| (b / self.count as f64).as_slice().to_vec()).collect();
        InputMoments::grouped(layer, self.blocks.len(), dim, values)
    }
}

/// A small seeded generator (xorshift64*): uniform and standard normal draws.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// The stream of `seed` (seed 0 starts at the golden-ratio constant; the state is never 0).
    fn new(seed: u64) -> Self {
        match seed ^ 0x9e37_79b9_7f4a_7c15 {
            0 => Self(1),
            s => Self(s),
        }
    }
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }
    /// One unit-variance separable AR(1) field of `h x w`, row-major.
    fn field(&mut self, h: usize, w: usize, rho: f64) -> Vec<f64> {
        let innov = (1.0 - rho * rho).sqrt();
        let mut f: Vec<f64> = (0..h * w).map(|_| self.normal()).collect();
        for y in 0..h {
            for x in 1..w {
                f[y * w + x] = rho * f[y * w + x - 1] + innov * f[y * w + x];
            }
        }
        for y in 1..h {
            for x in 0..w {
                f[y * w + x] = rho * f[(y - 1) * w + x] + innov * f[y * w + x];
            }
        }
        f
    }
}
