//! The `dac` binary: convert, inspect, --speedup, --fit and the onnx subcommand.

#[path = "../support/mod.rs"]
mod support;

mod convert;
mod fit;
mod measure;
mod moments;
mod onnx;
mod speedup;
