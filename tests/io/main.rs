//! The safetensors converter: round trips, bad input, whole-network plans.

#[path = "../support/mod.rs"]
mod support;

mod errors;
mod roundtrip;
mod speedup;
