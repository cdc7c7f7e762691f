//! Decomposition schemes: every scheme (DAC with every backend, fit and split) through the shared harness, and the correlated-input fit.

#[path = "../support/mod.rs"]
mod support;

mod fit;
mod harness;
mod matrix;
mod moments;
