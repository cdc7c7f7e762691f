//! The shipped reference networks (models/, data/, examples/paper/net.rs): the example's forward pass, the planner and the converters on them.

#[path = "../support/mod.rs"]
mod support;

mod fmnist;
mod paper;
mod plans;
