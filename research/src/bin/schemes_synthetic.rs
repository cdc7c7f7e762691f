//! The planner's score with each layer's input second moments taken from synthetic images: the
//! default plans (`--scheme auto`, every scheme fitted with `Fit::correlated(Fit::AUTO_RHO)`)
//! with each candidate's lost output energy `e` measured for the inputs the layer sees when the
//! network runs on smooth random fields, not on the separable tap model. No real image enters a
//! plan; the 10,000 test images only score them.
//!
//! ```text
//! cargo run --release -p dac-research --bin schemes_synthetic
//! cargo run --release -p dac-research --bin schemes_synthetic -- --prior 0.95,0.5,0.25 --depths 0,3
//! cargo run --release -p dac-research --bin schemes_synthetic -- --depths 3 --speedup VGG_MS,ALT_MS \
//!     --targets 1.1,1.15,1.2,1.25,1.5,1.75,2,2.5,3
//! ```
//!
//! `--speedup VGG_MS,ALT_MS` plans modeled time as `dac onnx --speedup` does (the shipped time
//! table of this CPU, the break-even guard in time), the targets being speed-ups; each network's
//! time outside its planned convolutions is given in milliseconds (a `dac onnx --json` plan's
//! `time_before_ms` less its layers' `time_before_ms`).
//!
//! A synthetic image is a separable first-order autoregressive Gaussian field (lag-1
//! correlation ρ₀ along each axis, unit variance) scaled to a mean and standard deviation:
//! `--prior ρ₀,MEAN,STD` (default 0.9,0.3,0.3: smooth images in [0, 1]; a prior, not a
//! statistic of the data set). `--images` of them (default 256, seeded) run through the dense
//! network; at every convolution `--patches` of its input patches (default 8192, seeded) give
//! `S = E[p pᵀ]` over the `C·kh·kw` patch entries. A candidate's `e` at a rank is then
//! `tr(ΔW S ΔWᵀ) / tr(W S Wᵀ)`, `ΔW` the dense kernel minus the composed kernel of its factor
//! chain; it goes through the planner unchanged (`e/(1−e)`, DAC's bottleneck factor, the depth
//! weight). Rows: `planner` (the planner's own `e`, the separable model at ρ = 0.2) and
//! `synthetic`, at every depth weight of `--depths` and every MAC target of `--targets`.

use dac::exec::Tensor4;
use dac::moments::{scored_ranks, PatchSum, Prior, Synthetic};
use dac::plan::{PlanOptions, Target};
use dac_fmnist::rescore::{auto_schemes, each_factored, print_plans, rescored_layers, Factorings};
use dac_fmnist::{Net, Op, Pair, Res};
use std::time::Duration;

struct Args {
    prior: (f64, f64, f64),
    images: usize,
    patches: usize,
    depths: Vec<f64>,
    targets: Vec<f64>,
    /// `--speedup VGG_MS,ALT_MS`: plan modeled time (targets are speed-ups), each network's
    /// modeled time outside its planned convolutions being these milliseconds.
    fixed_ms: Option<(f64, f64)>,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        prior: (0.9, 0.3, 0.3),
        images: 256,
        patches: 8192,
        depths: vec![0.0, 3.0],
        targets: vec![1.1, 1.25, 1.5, 2.0, 3.0],
        fixed_ms: None,
    };
    let list = |v: String| -> Res<Vec<f64>> { Ok(v.split(',').map(str::parse).collect::<Result<_, _>>()?) };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--prior" => match list(value()?)?[..] {
                [r, m, s] => a.prior = (r, m, s),
                _ => return Err("--prior RHO,MEAN,STD".into()),
            },
            "--images" => a.images = value()?.parse()?,
            "--patches" => a.patches = value()?.parse()?,
            "--depths" => a.depths = list(value()?)?,
            "--targets" => a.targets = list(value()?)?,
            "--speedup" => match list(value()?)?[..] {
                [vgg, alt] => a.fixed_ms = Some((vgg, alt)),
                _ => return Err("--speedup VGG_MS,ALT_MS".into()),
            },
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// Every convolution's input when the dense network runs on `x`.
fn conv_inputs(net: &Net, mut x: Tensor4<f32>) -> Res<Vec<Tensor4<f32>>> {
    let mut inputs = Vec::new();
    for (k, op) in net.ops.iter().enumerate() {
        if matches!(op, Op::Conv(_)) {
            inputs.push(x.clone());
        }
        x = net.run_range::<Pair>(x, k, k + 1, &[])?;
    }
    Ok(inputs)
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let auto = auto_schemes();
    println!(
        "schemes_synthetic: prior rho0 {}, mean {}, std {}; {} synthetic images, {} patches per layer",
        args.prior.0, args.prior.1, args.prior.2, args.images, args.patches
    );
    each_factored(|net, ev, factored, options| {
        let (rho, mean, std) = args.prior;
        let mut synth = Synthetic::new(Prior::new(rho, mean, std)?, 0);
        let [c, h, w] = net.input;
        let inputs = conv_inputs(net, synth.images([args.images, c, h, w])?)?;
        let table: Vec<Vec<Vec<f64>>> = factored
            .iter()
            .zip(&net.convs)
            .zip(&inputs)
            .map(|((each, layer), x)| -> Res<_> {
                let shape = layer.shape();
                let mut sum = PatchSum::new(shape.in_channels * shape.kh * shape.kw);
                synth.sample_patches(layer, x, args.patches, &mut sum)?;
                let s = sum.moments(layer.name())?;
                Ok(each.iter().map(|f| s.lost_energy(&**f)).collect::<dac::Result<_>>()?)
            })
            .collect::<Res<_>>()?;
        let planner = rescored_layers(net, factored, |_, _, f| f.correlated_loss())?;
        let synth = rescored_layers(net, factored, |i, k, _| table[i][k].clone())?;
        let (options, targets) = goal(&args, net, options);
        for &depth in &args.depths {
            let options = options.clone().depth_weight(depth);
            for (name, layers) in [("planner", &planner), ("synthetic", &synth)] {
                print_plans(ev, layers, &options, &auto, &format!("{name} A={depth}"), &targets)?;
            }
        }
        print_scores(factored, &table);
        Ok(())
    })
}

/// The planner's options and targets: MAC reductions, or with `--speedup` modeled speed-ups
/// with the network's fixed time (the converter's: what is not a planned convolution) and the
/// break-even guard in time.
fn goal(args: &Args, net: &Net, options: &PlanOptions) -> (PlanOptions, Vec<Target>) {
    match args.fixed_ms {
        None => (options.clone(), args.targets.iter().map(|&x| Target::MacReduction(x)).collect()),
        Some((vgg, alt)) => {
            let ms = if net.name.contains("alt") { alt } else { vgg };
            let options = options.clone().fixed_time(Duration::from_secs_f64(ms / 1e3)).time_guard(true);
            (options, args.targets.iter().map(|&x| Target::TimeReduction(x)).collect())
        }
    }
}

/// Per layer and scheme, the planner's `e` against the synthetic one at half the break-even rank.
fn print_scores(factored: &[Factorings], table: &[Vec<Vec<f64>>]) {
    for (i, each) in factored.iter().enumerate() {
        let cells: Vec<String> = each
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let r = (scored_ranks(&**f) / 2).max(1);
                format!("{} r{r} {:.3}/{:.3}", f.scheme().name(), f.correlated_loss()[r], table[i][k][r])
            })
            .collect();
        println!("  {} planner/synthetic e: {}", each[0].layer().name(), cells.join("  "));
    }
}
