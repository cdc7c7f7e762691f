//! The one support module of the integration tests, shared by every test crate
//! (`#[path = "../support/mod.rs"] mod support;` in each `tests/<layer>/main.rs`):
//!
//! - [`gen`]: the seeded generator ([`Rng`]) and the convolution geometry space ([`Case`]);
//! - [`measure`]: reconstruction of a pair's weight and error measures written from the
//!   definitions, independently of the crate;
//! - [`harness`]: the checks every SVD backend and every decomposition scheme runs through;
//! - `files`: safetensors fixtures; `onnx`: a tiny ONNX encoder and tract runner; `cli`: runs
//!   the `dac` binary; `net`: the paper example's network (models/ and data/).
#![allow(dead_code, unused_imports)]

pub mod gen;
pub mod harness;
pub mod measure;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "safetensors")]
pub mod files;
pub use dac_fmnist as net;
#[cfg(feature = "onnx")]
pub mod onnx;

pub use gen::{seeded, values, Case, Rng};

/// onnxruntime's shared library from ORT_DYLIB_PATH, or `None` (the test named `test` is
/// skipped, and says so) unless DAC_REQUIRE_ORT is set (`.ci/run` sets both).
pub fn ort_library(test: &str) -> Option<String> {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(l) if !l.is_empty() => Some(l),
        _ if std::env::var_os("DAC_REQUIRE_ORT").is_some() => {
            panic!("DAC_REQUIRE_ORT is set but ORT_DYLIB_PATH is not")
        }
        _ => {
            eprintln!("ORT_DYLIB_PATH not set: the onnxruntime {test} test is skipped");
            None
        }
    }
}
pub use measure::{reconstruct, relative_diff};
