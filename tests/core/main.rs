//! Core: weights and their errors, the executors, the decomposition of one layer.

#[path = "../support/mod.rs"]
mod support;

mod channel_order;
mod decompose;
mod errors;
mod exec;
