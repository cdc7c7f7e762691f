//! SVD backends: every backend through the shared contract, and the Gram + Jacobi backend's accuracy.

#[path = "../support/mod.rs"]
mod support;

mod backends;
mod gram;
