//! What the planner sums: the default plans (`--scheme auto`, every scheme fitted with
//! `Fit::correlated(Fit::AUTO_RHO)`, `Proxy::Spatial`) with each layer's lost output energy `e`
//! scored three ways, all data-free, on both shipped networks, all 10,000 test images:
//!
//! - `nsr`: `e / (1 - e)`, the planner's (this row reproduces the recorded plans);
//! - `log`: `-ln(1 - e)`, so that the sum is minus the log of the product of the layers'
//!   retained output energies (independent errors compounding through the network);
//! - `linear`: `e`, no convexity.
//!
//! ```text
//! cargo run --release -p dac-research --bin schemes_objective
//! ```
//!
//! Each objective is put through the planner unchanged: the layer's `correlated_loss` is mapped
//! to the `e'` whose `e' / (1 - e')` equals the objective (DAC's bottleneck factor still
//! multiplies it).

use dac_fmnist::rescore::{auto_schemes, each_factored, print_targets, rescored_layers};
use dac_fmnist::Res;

/// What an objective gives a lost fraction `e`.
type Objective = fn(f64) -> f64;

/// The objectives, named.
const OBJECTIVES: [(&str, Objective); 3] =
    [("nsr", |e| e / (1.0 - e).max(1e-9)), ("log", |e| -(1.0 - e).max(1e-300).ln()), ("linear", |e| e)];

/// `objective(e)` as the `e'` whose `e'/(1-e')` the planner scores equals it.
fn remapped(loss: Vec<f64>, objective: Objective) -> Vec<f64> {
    let to_e = |s: f64| if s.is_finite() { s / (1.0 + s) } else { 1.0 };
    loss.into_iter().map(|e| to_e(objective(e.clamp(0.0, 1.0)))).collect()
}

fn main() -> Res<()> {
    let auto = auto_schemes();
    each_factored(|net, ev, factored, options| {
        for (name, objective) in OBJECTIVES {
            let layers = rescored_layers(net, factored, |_, _, f| remapped(f.correlated_loss(), objective))?;
            print_targets(ev, &layers, options, &auto, name)?;
        }
        Ok(())
    })
}
