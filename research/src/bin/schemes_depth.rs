//! The planner's depth weight (`PlanOptions::depth_weight`): the default plans (`--scheme
//! auto`, every scheme fitted with `Fit::correlated(Fit::AUTO_RHO)`, `Proxy::Spatial`) with
//! layer `i` of `L` scored `1 + α·(L−1−i)/(L−1)` times its own, for each α of a scan, on both
//! shipped networks at 1.5x, 2x and 3x fewer MACs. Data-free plans; the images only score them.
//!
//! ```text
//! cargo run --release -p dac-research --bin schemes_depth                 # all 10,000 test images
//! cargo run --release -p dac-research --bin schemes_depth -- --train      # 10,000 training images
//! cargo run --release -p dac-research --bin schemes_depth -- --alphas 0,3
//! ```
//!
//! `--train` scores on the first 1,000 training images of each class (Debian's
//! `dataset-fashion-mnist`, `--train-dir DIR`, default `/usr/share/datasets/fashion-mnist`), the
//! set `AUTO_DEPTH_WEIGHT` was chosen on, so that the choice does not read the test set.

use dac::plan::{PlanOptions, Proxy};
use dac_fmnist::rescore::{auto_schemes, each_shipped, print_targets, TARGETS};
use dac_fmnist::{Dataset, Res};
use std::path::PathBuf;

struct Args {
    alphas: Vec<f64>,
    train: Option<PathBuf>,
}

fn parse_args() -> Res<Args> {
    let mut args = Args { alphas: vec![0.0, 1.0, 1.5, 2.0, 3.0, 4.0], train: None };
    let mut dir = PathBuf::from("/usr/share/datasets/fashion-mnist");
    let mut train = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--alphas" => args.alphas = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--train" => train = true,
            "--train-dir" => dir = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    args.train = train.then_some(dir);
    Ok(args)
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let root = dac_fmnist::repo_root();
    let images = match &args.train {
        Some(dir) => Dataset::load_split(dir, "train")?.stratified(1000),
        None => Dataset::load_test(&root.join("data/fashion-mnist"))?,
    };
    let what = if args.train.is_some() { "10,000 training images" } else { "all 10,000 test images" };
    println!("schemes_depth: plans scored on {what}");
    let auto = auto_schemes();
    let mut sums = vec![0.0; args.alphas.len()];
    each_shipped(&images, |net, ev| {
        let layers = net.plan_layers_with(&auto)?;
        for (k, &alpha) in args.alphas.iter().enumerate() {
            let options = PlanOptions::default().fixed(net.fixed_cost()).proxy(Proxy::Spatial).depth_weight(alpha);
            let accuracies = print_targets(ev, &layers, &options, &auto, &format!("alpha {alpha}"))?;
            sums[k] += accuracies.iter().sum::<f64>();
        }
        Ok(())
    })?;
    println!("\nmean over both networks and the three targets:");
    for (alpha, sum) in args.alphas.iter().zip(&sums) {
        println!("alpha {alpha:<4} {:.3} %", sum / (2 * TARGETS.len()) as f64);
    }
    Ok(())
}
