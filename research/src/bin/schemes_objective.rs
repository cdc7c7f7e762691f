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
use dac_fmnist::{Dataset, Evaluator, Net, Res};

const TARGETS: [f64; 3] = [1.5, 2.0, 3.0];

/// What an objective gives a lost fraction `e`.
type Objective = fn(f64) -> f64;

/// The objectives, named.
const OBJECTIVES: [(&str, Objective); 3] =
    [("nsr", |e| e / (1.0 - e).max(1e-9)), ("log", |e| -(1.0 - e).max(1e-300).ln()), ("linear", |e| e)];

/// A view of a factored layer whose `correlated_loss` is remapped so that the planner's
/// `e/(1-e)` of it is `objective(e)`.
struct Rescored<'a> {
    inner: &'a dyn Factored<f32>,
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
    let fit = Fit::correlated(Fit::AUTO_RHO)?;
    let auto: Vec<(SchemeKind, Fit)> = SchemeKind::ALL.iter().map(|&k| (k, fit)).collect();
    let svd = dac::svd::NalgebraSvd::default();
    for stem in ["fmnist_vgg", "fmnist_alt"] {
        let net = Net::load(&root.join("models").join(stem))?;
        let ev = Evaluator::build(net.clone(), &test, &[Fit::frobenius()])?;
        println!("\n== {stem} (dense {:.2} %)", ev.pct(ev.correct_chains(&[])?));
        // Every layer factored once by every scheme; each objective only rescores them.
        let factored = net
            .convs
            .iter()
            .map(|l| auto.iter().map(|&(k, fit)| dac_fmnist::scheme_of(k, fit, &svd).factor(l)).collect())
            .collect::<dac::Result<Vec<Factorings>>>()?;
        let options = PlanOptions::default().fixed(net.fixed_cost()).proxy(Proxy::Spatial);
        for (name, objective) in OBJECTIVES {
            let layers = plan_layers(&net, &factored, objective)?;
            for x in TARGETS {
                let plan = dac::plan(&layers, &Target::MacReduction(x), &options)?;
                let acc = ev.plan_accuracy(&plan, &auto)?;
                let summary = dac_fmnist::plan_summary(&plan);
                println!("{name:<7} {x:>4} {:>6.2}x {acc:>6.2}%  {summary}", plan.reduction());
            }
        }
    }
    Ok(())
}

/// One layer factored by every scheme.
type Factorings<'a> = Vec<Box<dyn Factored<f32> + 'a>>;

/// The planner's view of every layer, each scheme's `factored` rescored by `objective`.
fn plan_layers(net: &Net, factored: &[Factorings], objective: Objective) -> Res<Vec<PlanLayer>> {
    let mut layers = Vec::new();
    for (each, &hw) in factored.iter().zip(&net.conv_inputs) {
        let views: Vec<Rescored> = each.iter().map(|f| Rescored { inner: &**f, objective }).collect();
        let refs: Vec<&dyn Factored<f32>> = views.iter().map(|v| v as &dyn Factored<f32>).collect();
        layers.push(PlanLayer::with_schemes(&refs, hw)?);
    }
    Ok(layers)
}
