//! Runs the `dac` binary.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// Runs `dac` with `args`; returns its output.
pub fn dac<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dac")).args(args).output().expect("run dac")
}
