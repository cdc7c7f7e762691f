//! The singular values of every channel of a decomposed layer.

use crate::error::{Error, Result};
use crate::weights::ConvShape;

/// The singular values of every input channel's matrix, in `f64`: what rank policies read.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    pub(super) shape: ConvShape,
    pub(super) values: Vec<f64>,
}

impl Spectrum {
    /// Builds a spectrum from per-channel singular values (`shape.in_channels` rows of
    /// `shape.max_rank()` values each, descending). Used by backends and tests.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `values` has the wrong length.
    pub fn new(name: &str, shape: ConvShape, values: Vec<f64>) -> Result<Self> {
        let expected = shape.in_channels * shape.max_rank();
        if values.len() != expected {
            return Err(Error::LengthMismatch {
                layer: name.to_string(),
                what: "singular values",
                shape: vec![shape.in_channels, shape.max_rank()],
                expected,
                actual: values.len(),
            });
        }
        Ok(Self { shape, values })
    }
    /// The layer's shape.
    pub fn shape(&self) -> &ConvShape {
        &self.shape
    }
    /// Singular values of input channel `c`, descending.
    pub fn channel(&self, c: usize) -> &[f64] {
        let k = self.shape.max_rank();
        &self.values[c * k..(c + 1) * k]
    }
    /// Iterates over the channels' singular values.
    pub fn channels(&self) -> impl Iterator<Item = &[f64]> + '_ {
        self.values.chunks(self.shape.max_rank())
    }
    /// Sum of `s²` over the top `rank` values of every channel.
    pub fn kept_energy(&self, rank: usize) -> f64 {
        self.channels().map(|s| s.iter().take(rank).map(|v| v * v).sum::<f64>()).sum()
    }
    /// Fraction of the layer's `s²` kept at `rank` (1 for an all-zero layer).
    pub fn retained_energy(&self, rank: usize) -> f64 {
        let total = self.kept_energy(self.shape.max_rank());
        if total > 0.0 {
            (self.kept_energy(rank) / total).min(1.0)
        } else {
            1.0
        }
    }
    /// `sqrt(discarded s²) / ‖W‖`: the relative Frobenius error of the best rank-`rank`
    /// approximation (Eckart–Young), 0 for an all-zero layer.
    pub fn optimal_relative_error(&self, rank: usize) -> f64 {
        let total = self.kept_energy(self.shape.max_rank());
        if total > 0.0 {
            let discarded: f64 = self.channels().map(|s| s.iter().skip(rank).map(|v| v * v).sum::<f64>()).sum();
            (discarded / total).sqrt()
        } else {
            0.0
        }
    }
}
