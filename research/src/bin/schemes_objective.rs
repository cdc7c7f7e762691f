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

use dac::plan::{PlanLayer, PlanOptions, Proxy, Target};
use dac::scheme::{ErrorTable, Factor, Factored, SchemeKind, Workspace};
use dac::{Conv2dWeights, Fit};
use dac_fmnist::{Chain, Dataset, Evaluator, Net, Res};

const TARGETS: [f64; 3] = [1.5, 2.0, 3.0];

/// What an objective gives a lost fraction `e`.
type Objective = fn(f64) -> f64;

/// The objectives, named.
const OBJECTIVES: [(&str, Objective); 3] =
    [("nsr", |e| e / (1.0 - e).max(1e-9)), ("log", |e| -(1.0 - e).max(1e-300).ln()), ("linear", |e| e)];

/// A factored layer whose `correlated_loss` is remapped so that the planner's `e/(1-e)` of it
/// is `objective(e)`.
struct Rescored<'a> {
    inner: Box<dyn Factored<f32> + 'a>,
    objective: Objective,
}

impl Factored<f32> for Rescored<'_> {
    fn scheme(&self) -> SchemeKind {
        self.inner.scheme()
    }
    fn layer(&self) -> &Conv2dWeights<f32> {
        self.inner.layer()
    }
    fn errors(&self) -> ErrorTable {
        self.inner.errors()
    }
    fn correlated_loss(&self) -> Vec<f64> {
        let to_e = |s: f64| if s.is_finite() { s / (1.0 + s) } else { 1.0 };
        self.inner.correlated_loss().into_iter().map(|e| to_e((self.objective)(e.clamp(0.0, 1.0)))).collect()
    }
    fn factors(&self, rank: usize, workspace: &mut Workspace<f32>) -> dac::Result<Vec<Factor<f32>>> {
        self.inner.factors(rank, workspace)
    }
}

fn main() -> Res<()> {
    let root = dac_fmnist::repo_root();
    let test = Dataset::load_test(&root.join("data/fashion-mnist"))?;
    for stem in ["fmnist_vgg", "fmnist_alt"] {
        let net = Net::load(&root.join("models").join(stem))?;
        let ev = Evaluator::build(net.clone(), &test, &[Fit::frobenius()])?;
        println!("\n== {stem} (dense {:.2} %)", ev.pct(ev.correct_chains(&[])?));
        for (name, objective) in OBJECTIVES {
            for x in TARGETS {
                let (acc, reached, plan) = run(&net, &ev, objective, x)?;
                println!("{name:<7} {x:>4} {reached:>6.2}x {acc:>6.2}%  {plan}");
            }
        }
    }
    Ok(())
}

/// The plan for `x` times fewer MACs under `objective`: its test accuracy, reduction and summary.
fn run(net: &Net, ev: &Evaluator, objective: Objective, x: f64) -> Res<(f64, f64, String)> {
    let svd = dac::svd::NalgebraSvd::default();
    let fit = Fit::correlated(Fit::AUTO_RHO)?;
    let mut layers = Vec::new();
    let mut factored = Vec::new();
    for (l, &hw) in net.convs.iter().zip(&net.conv_inputs) {
        let each: Vec<Rescored> = SchemeKind::ALL
            .iter()
            .map(|&k| Ok(Rescored { inner: dac_fmnist::scheme_of(k, fit, &svd).factor(l)?, objective }))
            .collect::<dac::Result<_>>()?;
        let refs: Vec<&dyn Factored<f32>> = each.iter().map(|f| f as &dyn Factored<f32>).collect();
        layers.push(PlanLayer::with_schemes(&refs, hw)?);
        factored.push(each);
    }
    let options = PlanOptions::default().fixed(net.fixed_cost()).proxy(Proxy::Spatial);
    let plan = dac::plan(&layers, &Target::MacReduction(x), &options)?;
    let mut chains = Vec::new();
    let mut summary = Vec::new();
    for (i, l) in plan.layers.iter().enumerate() {
        let chain = match (l.scheme, l.rank) {
            (Some(k), Some(r)) => {
                let s = SchemeKind::ALL.iter().position(|&a| a == k).expect("a planned scheme");
                let factors = factored[i][s].factors(r, &mut Workspace::new())?;
                summary.push(format!("{}{r}", dac_fmnist::scheme_letter(k)));
                Some(Chain(factors.into_iter().map(|f| f.conv).collect()))
            }
            _ => {
                summary.push("-".to_string());
                None
            }
        };
        chains.push(chain);
    }
    let refs: Vec<Option<&Chain>> = chains.iter().map(Option::as_ref).collect();
    Ok((ev.pct(ev.correct_chains(&refs)?), plan.reduction(), summary.join(" ")))
}
