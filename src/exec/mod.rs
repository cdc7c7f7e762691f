//! Executing convolutions: the reference loop nest every other path is tested against.
//!
//! [`reference`](mod@reference) is deliberately naive: seven nested loops, no reordering, no blocking. It is
//! the truth. Faster paths live beside it and are property-tested against it.

pub mod fast;
pub mod reference;
mod tensor;

pub use reference::{conv2d, depthwise, pair, pointwise};
pub use tensor::Tensor4;
