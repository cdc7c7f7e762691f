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

/// `values` as a slice of `U` when `T` is `U` (the type-level equivalent of a downcast, for
/// slices): lets generic code hand f32 data to f32-only kernels.
pub(crate) fn slice_as<T: 'static, U: 'static>(values: &[T]) -> Option<&[U]> {
    // SAFETY: when the type ids agree, `T` and `U` are the same type, so the layout is the same.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>())
        .then(|| unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<U>(), values.len()) })
}

/// [`slice_as`] for a mutable slice.
pub(crate) fn slice_as_mut<T: 'static, U: 'static>(values: &mut [T]) -> Option<&mut [U]> {
    // SAFETY: as in `slice_as`.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<U>(), values.len()) })
}
