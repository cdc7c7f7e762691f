//! The floating-point element types `dac` computes in.

use std::fmt::{Debug, Display};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: implemented for `f32` and `f64` only.
///
/// The trait is sealed; it gathers the bounds the SVD backends and the executor need
/// ([`num_traits::Float`], [`nalgebra::RealField`], thread safety) so that generic code
/// over weights can write `T: dac::Real` alone.
pub trait Real:
    num_traits::Float + nalgebra::RealField + Copy + Default + Debug + Display + Send + Sync + 'static + sealed::Sealed
{
    /// Converts from `f64`, rounding to nearest.
    fn from_f64_lossy(value: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64_exact(self) -> f64;
    /// The type's name, for messages (`"f32"` or `"f64"`).
    const NAME: &'static str;
}

impl Real for f32 {
    #[inline]
    fn from_f64_lossy(value: f64) -> Self {
        value as f32
    }
    #[inline]
    fn to_f64_exact(self) -> f64 {
        f64::from(self)
    }
    const NAME: &'static str = "f32";
}

impl Real for f64 {
    #[inline]
    fn from_f64_lossy(value: f64) -> Self {
        value
    }
    #[inline]
    fn to_f64_exact(self) -> f64 {
        self
    }
    const NAME: &'static str = "f64";
}
