//! A dense NCHW tensor.

use crate::error::{Error, Result};
use crate::scalar::Real;

/// A batch of images in NCHW order (batch, channels, height, width), row-major.
///
/// ```
/// use dac::exec::Tensor4;
/// let x = Tensor4::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2])?;
/// assert_eq!(x.get(0, 0, 1, 0), 3.0);
/// # Ok::<(), dac::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor4<T> {
    data: Vec<T>,
    dims: [usize; 4],
}

impl<T: Real> Tensor4<T> {
    /// Wraps `data` as a tensor of shape `[n, c, h, w]`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for a zero dimension, [`Error::Overflow`] when the element count
    /// overflows, [`Error::LengthMismatch`] when `data` has the wrong length.
    pub fn new(data: Vec<T>, dims: [usize; 4]) -> Result<Self> {
        for (d, what) in dims.iter().zip(["batch", "channels", "height", "width"]) {
            if *d == 0 {
                return Err(Error::ZeroSize { layer: "input tensor".into(), what });
            }
        }
        let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| Error::Overflow {
            layer: "input tensor".into(),
            what: "element count",
            detail: format!("shape {dims:?}"),
        })?;
        if data.len() != expected {
            return Err(Error::LengthMismatch {
                layer: "input tensor".into(),
                what: "data",
                shape: dims.to_vec(),
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { data, dims })
    }

    /// A tensor of zeros.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn zeros(dims: [usize; 4]) -> Result<Self> {
        match dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
            Some(len) => Self::new(vec![T::zero(); len], dims),
            None => Err(Error::Overflow {
                layer: "input tensor".into(),
                what: "element count",
                detail: format!("shape {dims:?}"),
            }),
        }
    }

    /// `[n, c, h, w]`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }
    /// The elements, NCHW row-major.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }
    /// The elements, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }
    /// Consumes the tensor, returning its elements.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
    /// Element `[n, c, y, x]`. Panics when out of bounds, like slice indexing.
    #[inline]
    pub fn get(&self, n: usize, c: usize, y: usize, x: usize) -> T {
        let [_, cs, h, w] = self.dims;
        self.data[((n * cs + c) * h + y) * w + x]
    }
    /// The largest absolute value (0 for an all-zero tensor).
    pub fn max_abs(&self) -> T {
        self.data.iter().fold(T::zero(), |m, v| num_traits::Float::max(m, num_traits::Float::abs(*v)))
    }
    /// The largest absolute element-wise difference to `other` (`None` when shapes differ).
    pub fn max_abs_diff(&self, other: &Self) -> Option<T> {
        (self.dims == other.dims).then(|| {
            self.data
                .iter()
                .zip(&other.data)
                .fold(T::zero(), |m, (a, b)| num_traits::Float::max(m, num_traits::Float::abs(*a - *b)))
        })
    }
}
