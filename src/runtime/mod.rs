//! Measured speed: timing a rewrite in the runtime that will run it, and planning until the
//! measured speed-up, not only the modeled one, reaches a `--speedup` target.
//!
//! The [time model](crate::time) plans from one table measured on one machine; on a machine
//! whose kernels run at other relative speeds a modeled 2x can run at 1.7x. Where the runtime is
//! at hand at conversion time, [`search`] closes the gap: it plans for a modeled target, times
//! the original and the rewrite in the [`Runtime`] (interleaved runs, medians), and re-plans for
//! a higher or lower modeled target until the measured speed-up reaches the asked one with the
//! least modeled reduction it can find (so the least approximation error), in a few tries.
//!
//! [`OnnxRuntime`] (feature `onnxruntime`) times models in onnxruntime's shared library, loaded
//! at run time; `dac onnx --measure` uses it. Any other runtime implements [`Runtime`].
//!
//! A runtime that can also run a model and hand back tensors it computes implements
//! [`Forward`]: [`synthetic_moments`](crate::io::onnx::synthetic_moments) measures each
//! convolution's input moments with it (`dac onnx --synthetic-moments`).

#[cfg(feature = "onnxruntime")]
mod onnxruntime;
mod search;

#[cfg(feature = "onnxruntime")]
pub use self::onnxruntime::OnnxRuntime;
pub use self::search::{search, Measured, MeasuredTry, Rewrite, AIM, MAX_TRIES};

use crate::error::Result;
use crate::exec::Tensor4;
use std::time::Duration;

/// A runtime that can time ONNX models (batch and input sizes as the models declare them).
pub trait Runtime {
    /// A short description for reports: the runtime, its version and its settings.
    fn describe(&self) -> String;
    /// Median time of one run of `before` and of `after` (ONNX model bytes, same inputs), from
    /// runs interleaved so that drift in the machine's speed affects both alike.
    ///
    /// # Errors
    /// [`Error::Runtime`](crate::Error::Runtime) when the runtime cannot load or run a model.
    fn time_pair(&mut self, before: &[u8], after: &[u8]) -> Result<(Duration, Duration)>;
}

/// A runtime that runs ONNX models and returns tensors they compute.
pub trait Forward {
    /// Loads `model` (ONNX bytes) for [`Loaded::run`].
    ///
    /// # Errors
    /// [`Error::Runtime`](crate::Error::Runtime) when the runtime cannot load the model.
    fn load(&mut self, model: &[u8]) -> Result<Box<dyn Loaded + '_>>;
}

/// A model loaded by a [`Forward`] runtime.
pub trait Loaded {
    /// Runs the model on `input`, fed to its graph input `input_name`; the values of its graph
    /// outputs `outputs`, in that order, each a 4-D float32 tensor.
    ///
    /// # Errors
    /// [`Error::Runtime`](crate::Error::Runtime) when the run fails or an output is missing,
    /// not float32 or not 4-D.
    fn run(&mut self, input_name: &str, input: &Tensor4<f32>, outputs: &[String]) -> Result<Vec<Tensor4<f32>>>;
}
