//! Studies of the planner's score: every layer factored once by every scheme, then planned with
//! each scheme's lost output energy `e` (its `correlated_loss`) replaced.

use crate::{Net, Res};
use dac::moments::Scored;
use dac::plan::{PlanLayer, PlanOptions, Proxy, Target};
use dac::scheme::{Factored, SchemeKind};
use dac::Fit;

/// One layer factored by every scheme.
pub type Factorings<'a> = Vec<Box<dyn Factored<f32> + 'a>>;

/// Every convolution of `net` factored by each of `schemes` (each with its fit; DAC through
/// `svd`).
pub fn factor_all<'a>(
    net: &'a Net,
    schemes: &[(SchemeKind, Fit)],
    svd: &'a dac::svd::NalgebraSvd,
) -> dac::Result<Vec<Factorings<'a>>> {
    net.convs
        .iter()
        .map(|l| schemes.iter().map(|&(k, fit)| crate::scheme_of(k, fit, svd).factor(l)).collect())
        .collect()
}

/// The planner's view of every layer, scheme `k` of layer `i` scored with `loss(i, k, f)`.
pub fn rescored_layers(
    net: &Net,
    factored: &[Factorings],
    loss: impl Fn(usize, usize, &dyn Factored<f32>) -> Vec<f64>,
) -> Res<Vec<PlanLayer>> {
    let mut layers = Vec::new();
    for (i, (each, &hw)) in factored.iter().zip(&net.conv_inputs).enumerate() {
        let views: Vec<Scored<f32>> = each
            .iter()
            .enumerate()
            .map(|(k, f)| Scored::with_loss(&**f, loss(i, k, &**f)))
            .collect::<dac::Result<_>>()?;
        let refs: Vec<&dyn Factored<f32>> = views.iter().map(|v| v as &dyn Factored<f32>).collect();
        layers.push(PlanLayer::with_schemes(&refs, hw)?);
    }
    Ok(layers)
}

/// Every scheme with the fit `--scheme auto` gives it (`Fit::correlated(Fit::AUTO_RHO)`).
pub fn auto_schemes() -> Vec<(SchemeKind, Fit)> {
    let fit = Fit::correlated(Fit::AUTO_RHO).expect("AUTO_RHO is a valid correlation");
    SchemeKind::ALL.iter().map(|&k| (k, fit)).collect()
}

/// Runs `study` on each shipped network (`fmnist_vgg`, then `fmnist_alt`) with an evaluator on
/// `data`, after a `== <stem> (dense <accuracy> %)` line.
pub fn each_shipped(data: &crate::Dataset, mut study: impl FnMut(&Net, &crate::Evaluator) -> Res<()>) -> Res<()> {
    let root = crate::repo_root();
    for stem in ["fmnist_vgg", "fmnist_alt"] {
        let net = Net::load(&root.join("models").join(stem))?;
        let ev = crate::Evaluator::build(net.clone(), data, &[Fit::frobenius()])?;
        println!("\n== {stem} (dense {:.2} %)", ev.pct(ev.correct_chains(&[])?));
        study(&net, &ev)?;
    }
    Ok(())
}

/// Runs `study` on each shipped network, scored on all 10,000 test images, with every
/// convolution factored once by every scheme of [`auto_schemes`] ([`factor_all`]) and the
/// planner's default options for the network (`Proxy::Spatial`, its fixed cost, depth weight 0).
pub fn each_factored(
    mut study: impl FnMut(&Net, &crate::Evaluator, &[Factorings<'_>], &PlanOptions) -> Res<()>,
) -> Res<()> {
    let test = crate::Dataset::load_test(&crate::repo_root().join("data/fashion-mnist"))?;
    let auto = auto_schemes();
    let svd = dac::svd::NalgebraSvd::default();
    each_shipped(&test, |net, ev| {
        let factored = factor_all(net, &auto, &svd)?;
        let options = PlanOptions::default().fixed(net.fixed_cost()).proxy(Proxy::Spatial);
        study(net, ev, &factored, &options)
    })
}

/// The targets the studies plan for: 1.5x, 2x and 3x fewer MACs.
pub const TARGETS: [f64; 3] = [1.5, 2.0, 3.0];

/// Plans `layers` for each of [`TARGETS`] with `options`, scores each plan with `ev` (every
/// chosen layer run as its chain, `schemes` giving each scheme's fit), prints one line per
/// target (`label`, target, reduction, accuracy, plan) and returns the accuracies.
pub fn print_targets(
    ev: &crate::Evaluator,
    layers: &[PlanLayer],
    options: &PlanOptions,
    schemes: &[(SchemeKind, Fit)],
    label: &str,
) -> Res<Vec<f64>> {
    let targets = TARGETS.map(Target::MacReduction);
    print_plans(ev, layers, options, schemes, label, &targets)
}

/// Plans `layers` for each of `targets` with `options`, scores each plan with `ev`, prints one
/// line per target (`label`, target, MAC reduction, modeled speed-up, accuracy, plan) and returns
/// the accuracies.
pub fn print_plans(
    ev: &crate::Evaluator,
    layers: &[PlanLayer],
    options: &PlanOptions,
    schemes: &[(SchemeKind, Fit)],
    label: &str,
    targets: &[Target],
) -> Res<Vec<f64>> {
    let mut accuracies = Vec::new();
    for target in targets {
        let plan = dac::plan(layers, target, options)?;
        let acc = ev.plan_accuracy(&plan, schemes)?;
        let summary = crate::plan_summary(&plan);
        let (x, time) = match *target {
            Target::TimeReduction(x) => (x, format!(" {:>5.2}x time", plan.speedup())),
            Target::MacReduction(x) => (x, String::new()),
            _ => return Err(format!("no study plans for {target}").into()),
        };
        println!("{label:<10} {x:>4} {:>6.2}x{time} {acc:>6.2}%  {summary}", plan.reduction());
        accuracies.push(acc);
    }
    Ok(accuracies)
}
