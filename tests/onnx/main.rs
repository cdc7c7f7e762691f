//! ONNX rewriting: wire-level preservation, naming, shared weights, bad input, the correlated fit, checked in tract.

#[path = "../support/mod.rs"]
mod support;

mod dtypes;
mod errors;
mod external;
mod fit;
mod inspect;
mod measure;
mod moments;
mod pipeline;
mod reference;
mod rewrite;
mod shapes;
mod zoo;
