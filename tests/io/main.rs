//! The safetensors converter: round trips, bad input, whole-network plans.

#[path = "../support/mod.rs"]
mod support;

mod dtypes;
mod errors;
mod geometry;
mod roundtrip;
mod speedup;
