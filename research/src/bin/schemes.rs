//! The schemes study: whole-network plans choosing a (scheme, rank) or dense per layer
//! (`--scheme auto`) against DAC-only plans, for every planner proxy and fit, on the shipped
//! networks, all 10,000 test images (data-free plans; the images only measure accuracy).
//!
//! ```text
//! cargo run --release -p dac-research --bin schemes                 # both networks
//! cargo run --release -p dac-research --bin schemes -- --images 2000
//! cargo run --release -p dac-research --bin schemes -- --depth 3
//! ```
//!
//! Every plan uses depth weight `--depth` (`PlanOptions::depth_weight`, default 0: this study
//! chose the fit and proxy before the depth weight existed).

use dac::plan::Proxy;
use dac::scheme::SchemeKind;
use dac::Fit;
use dac_fmnist::{Dataset, Evaluator, Net, Res};
use std::time::Instant;

const TARGETS: [f64; 3] = [1.5, 2.0, 3.0];

fn main() -> Res<()> {
    let (mut images, mut depth) = (None, 0.0);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--images" => images = Some(it.next().ok_or("--images needs a count")?.parse()?),
            "--depth" => depth = it.next().ok_or("--depth needs a weight")?.parse()?,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let root = dac_fmnist::repo_root();
    let all = Dataset::load_test(&root.join("data/fashion-mnist"))?;
    let data = images.map_or_else(|| all.clone(), |n| all.first(n));
    let start = Instant::now();
    println!("schemes study: {} test images", data.len());
    for stem in ["models/fmnist_vgg", "models/fmnist_alt"] {
        study(Net::load(&root.join(stem))?, &data, depth)?;
    }
    println!("\ntotal time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// One planner configuration: each scheme with its fit, and the proxy.
struct Variant {
    label: String,
    schemes: Vec<(SchemeKind, Fit)>,
    proxy: Proxy,
}

/// The variants named in `VARIANTS` (comma-separated `SCHEMES/FIT/PROXY`: SCHEMES `dac`,
/// `spatial`, `channel`, `decoupled` or `auto`; FIT `frob` or `corr<RHO>`; PROXY `energy`,
/// `sens` or `spatial`), or the default set.
fn variants() -> Res<Vec<Variant>> {
    let list = std::env::var("VARIANTS").unwrap_or_else(|_| {
        "dac/corr0.7/spatial,dac/frob/spatial,auto/frob/sens,auto/corr0.7/spatial,auto/corr0.2/spatial".into()
    });
    list.split(',').map(parse_variant).collect()
}

fn parse_variant(label: &str) -> Res<Variant> {
    let parts: Vec<&str> = label.split('/').collect();
    let [schemes, fit, proxy] = parts[..] else { return Err(format!("variant `{label}`: SCHEMES/FIT/PROXY").into()) };
    let fit = match fit.strip_prefix("corr") {
        Some(rho) => Fit::correlated(rho.parse()?)?,
        None if fit == "frob" => Fit::frobenius(),
        None => return Err(format!("variant `{label}`: fit `{fit}`").into()),
    };
    let kinds = match schemes {
        "auto" => SchemeKind::ALL.to_vec(),
        one => vec![SchemeKind::from_name(one).ok_or_else(|| format!("variant `{label}`: scheme `{one}`"))?],
    };
    let proxy = match proxy {
        "energy" => Proxy::Energy,
        "sens" => Proxy::Sensitivity,
        "spatial" => Proxy::Spatial,
        other => return Err(format!("variant `{label}`: proxy `{other}`").into()),
    };
    Ok(Variant { label: label.to_string(), schemes: kinds.into_iter().map(|k| (k, fit)).collect(), proxy })
}

fn study(net: Net, data: &Dataset, depth: f64) -> Res<()> {
    let ev = Evaluator::build(net, data, &[Fit::frobenius()])?;
    let dense = ev.pct(ev.correct_chains(&[])?);
    println!("\n== {} (dense {dense:.2} %)", ev.net.name);
    println!("{:<20} {:>6} {:>8} {:>9}  plan", "variant", "target", "reached", "accuracy");
    for v in variants()? {
        for target in TARGETS {
            let (plan, acc) = ev.plan_schemes(target, v.proxy, &v.schemes, Some(depth))?;
            println!(
                "{:<20} {target:>6} {:>7.2}x {acc:>8.2}%  {}",
                v.label,
                plan.reduction(),
                dac_fmnist::plan_summary(&plan)
            );
        }
    }
    Ok(())
}
