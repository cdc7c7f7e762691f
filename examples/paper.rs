//! The paper's two experiments on the shipped Fashion-MNIST network, and the data-free planner
//! against uniform ranks and "last k layers" choices.
//!
//! ```text
//! cargo run --release --example paper                  # fmnist_vgg, all 10,000 test images
//! cargo run --release --example paper -- --quick       # the first 200 images of each class
//! cargo run --release --example paper -- --model alt   # the other network (vgg | alt | both)
//! cargo run --release --example paper -- --out DIR     # where the SVG plot goes (default target/paper)
//! ```
//!
//! For each network: the dense accuracy (checked against the training script's, image for
//! image); Experiment 1, each layer alone decomposed at ranks 1-5; Experiment 2, the first k or
//! the last k layers decomposed at ranks 1, 3, 5; the planner (`dac::plan`, weights only) at
//! 1.5x, 2x and 3x whole-network MAC reduction against the best uniform rank and the best
//! last-k choice reaching the same reduction; the planner choosing among every factorization
//! scheme (`--scheme auto`) beside DAC-only plans; an SVG plot of accuracy against MAC
//! reduction.
//! Every convolution runs through `dac`'s executor, a decomposed layer as its depthwise +
//! pointwise pair.
//!
//! Speed: the dense network runs once, keeping the activations entering every convolution;
//! a variant then runs only from its first decomposed layer (`dac_fmnist::Evaluator`), and only
//! the variants printed here are evaluated. The studies behind EXPERIMENTS.md (other proxies,
//! the correlated-input fit, the data-using oracle, rank correlations) are in `research/`.

use dac::plan::{Plan, Proxy};
use dac::scheme::SchemeKind;
use dac::{cost, Fit};
use dac_fmnist::{masked, Dataset, Evaluator, Net, Ranks, Res};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Whole-network MAC reductions at which the planner is compared with the baselines.
const TARGETS: [f64; 3] = [1.5, 2.0, 3.0];
/// Experiment 1's ranks.
const EXP1_RANKS: [usize; 5] = [1, 2, 3, 4, 5];
/// Experiment 2's ranks.
const EXP2_RANKS: [usize; 3] = [1, 3, 5];

struct Args {
    quick: bool,
    models: Vec<&'static str>,
    out: PathBuf,
}

fn parse_args() -> Res<Args> {
    let mut args = Args { quick: false, models: vec!["fmnist_vgg"], out: dac_fmnist::repo_root().join("target/paper") };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--out" => args.out = PathBuf::from(it.next().ok_or("--out needs a directory")?),
            "--model" => {
                args.models = match it.next().as_deref() {
                    Some("vgg") => vec!["fmnist_vgg"],
                    Some("alt") => vec!["fmnist_alt"],
                    Some("both") => vec!["fmnist_vgg", "fmnist_alt"],
                    _ => return Err("--model needs vgg | alt | both".into()),
                }
            }
            "-h" | "--help" => {
                println!("usage: paper [--quick] [--model vgg|alt|both] [--out DIR]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)").into()),
        }
    }
    Ok(args)
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let start = Instant::now();
    let root = dac_fmnist::repo_root();
    let all = Dataset::load_test(&root.join("data/fashion-mnist"))?;
    let data = if args.quick { all.stratified(200) } else { all };
    let what = if args.quick { "--quick: the first 200 of each class" } else { "the whole Fashion-MNIST test set" };
    println!(
        "dac paper experiments: {} test images ({what}), {} rayon threads",
        data.len(),
        rayon::current_num_threads()
    );
    std::fs::create_dir_all(&args.out)?;
    for model in &args.models {
        run_model(&root.join("models").join(model), &data, !args.quick, &args.out)?;
    }
    println!("\ntotal time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn run_model(stem: &Path, data: &Dataset, full: bool, out: &Path) -> Res<()> {
    let t0 = Instant::now();
    let net = Net::load(stem)?;
    let name = net.name.clone();
    println!("\n==================== {name} ====================");
    print_network(&net)?;
    let mut ev = Evaluator::build(net, data, &[Fit::frobenius()])?;
    let dense = dense_accuracy(&mut ev, stem, data, full, t0)?;
    let t = Instant::now();
    experiment_1(&mut ev)?;
    println!("[experiment 1: {:.1} s]", t.elapsed().as_secs_f64());
    let t = Instant::now();
    experiment_2(&mut ev)?;
    println!("[experiment 2: {:.1} s]", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let mut curves = planner_comparison(&mut ev, dense)?;
    println!("[planner comparison: {:.1} s]", t.elapsed().as_secs_f64());
    let t = Instant::now();
    curves.auto = schemes_comparison(&ev, dense)?;
    println!("[schemes comparison: {:.1} s]", t.elapsed().as_secs_f64());
    let svg = out.join(format!("{name}_accuracy_vs_macs.svg"));
    plot(&svg, &name, dense, &curves)?;
    println!("plot: {}", svg.display());
    let seconds = t0.elapsed().as_secs_f64();
    let gmac = ev.macs_run() as f64 / 1e9;
    println!(
        "[{name}: {} forward evaluations of {} images, {gmac:.0} GMAC run, {seconds:.1} s, {:.1} GMAC/s]",
        ev.evaluations,
        ev.n(),
        gmac / seconds
    );
    Ok(())
}

/// One line per convolution: shape, stride, input size, MACs, maximum rank.
fn print_network(net: &Net) -> Res<()> {
    println!("{:<12} {:>14} {:>8} {:>10} {:>12} {:>9}", "conv", "shape", "stride", "input", "MACs", "max rank");
    for (c, &(h, w)) in net.convs.iter().zip(&net.conv_inputs) {
        let s = c.shape();
        let macs = cost::dense(c.name(), &s, true, c.output_size(h, w)?)?.macs;
        let shape = format!("{}x{}x{}x{}/g{}", s.out_channels, s.in_per_group(), s.kh, s.kw, s.groups);
        let (stride, input) = (c.geometry().stride.0.to_string(), format!("{h}x{w}"));
        println!("{:<12} {shape:>14} {stride:>8} {input:>10} {macs:>12} {:>9}", c.name(), s.max_rank());
    }
    let (total, linear) = (net.cost(&[]).macs, net.fixed_cost().macs);
    println!("whole network: {total} MACs per image (convolutions + {linear} in linear layers)");
    Ok(())
}

/// The dense accuracy, checked against the training script's predictions (`S.preds`).
fn dense_accuracy(ev: &mut Evaluator, stem: &Path, data: &Dataset, full: bool, t0: Instant) -> Res<f64> {
    let correct = ev.correct(&vec![None; ev.layers()])?;
    println!(
        "dense accuracy (Rust forward pass): {:.2}% ({correct}/{}); loading, dense pass and activation cache {:.2} s",
        ev.pct(correct),
        ev.n(),
        t0.elapsed().as_secs_f64()
    );
    let preds_path = stem.with_extension("preds");
    match std::fs::read(&preds_path) {
        Ok(expected) => {
            let pairs = data.index.iter().zip(&ev.dense_preds).filter_map(|(&i, &p)| expected.get(i).map(|&e| (e, p)));
            let (n, differ) = pairs.fold((0, 0), |(n, d), (e, p)| (n + 1, d + usize::from(e != p)));
            println!("predictions compared image for image with {}: {n}, differing: {differ}", preds_path.display());
        }
        Err(_) => println!("no {} to compare predictions with", preds_path.display()),
    }
    if full {
        let recorded = ev.net.recorded_correct().map_or("?".to_string(), |r| r.to_string());
        println!("training script's count: {recorded}");
    }
    Ok(ev.pct(correct))
}

/// Experiment 1: each layer alone decomposed at each rank.
fn experiment_1(ev: &mut Evaluator) -> Res<()> {
    println!("\nExperiment 1: accuracy (%) with exactly one layer decomposed; (x) = whole-network MAC reduction");
    print!("{:<12}", "layer");
    EXP1_RANKS.iter().for_each(|r| print!(" {:>16}", format!("rank {r}")));
    println!();
    for i in 0..ev.layers() {
        print!("{:<12}", ev.net.convs[i].name());
        for r in EXP1_RANKS {
            if r > ev.net.convs[i].shape().max_rank() {
                print!(" {:>16}", "-");
                continue;
            }
            let mut ranks = vec![None; ev.layers()];
            ranks[i] = Some(r);
            print!(" {:>16}", format!("{:.2} ({:.3}x)", ev.acc(&ranks)?, ev.reduction(&ranks)));
        }
        println!();
    }
    Ok(())
}

/// Experiment 2: the first k or the last k layers decomposed, k = 1..=L.
fn experiment_2(ev: &mut Evaluator) -> Res<()> {
    println!("\nExperiment 2: accuracy (%) with the first k or the last k layers decomposed; (x) = MAC reduction");
    print!("{:<4}", "k");
    EXP2_RANKS.iter().for_each(|r| print!(" {:>16} {:>16}", format!("first k, r={r}"), format!("last k, r={r}")));
    println!();
    for r in EXP2_RANKS {
        ev.first_k_chain(r)?;
    }
    let l = ev.layers();
    for k in 1..=l {
        print!("{k:<4}");
        for r in EXP2_RANKS {
            for ranks in [masked(&ev.net, 0..k, r), masked(&ev.net, l - k..l, r)] {
                print!(" {:>16}", format!("{:.2} ({:.2}x)", ev.acc(&ranks)?, ev.reduction(&ranks)));
            }
        }
        println!();
    }
    println!("(a layer whose break-even rank is at or below r stays dense)");
    Ok(())
}

/// An evaluated choice: its label, its MAC reduction, its accuracy (%).
struct Point {
    label: String,
    reduction: f64,
    accuracy: f64,
}

/// What the plot draws: the baselines and the planner's plans.
struct Curves {
    uniform: Vec<Point>,
    /// `(rank, points)` for Experiment 2's ranks, every k.
    last_k: Vec<(usize, Vec<Point>)>,
    planner: Vec<Point>,
    /// The planner choosing among every scheme (`--scheme auto`, the default of `--speedup`).
    auto: Vec<Point>,
}

fn point(ev: &mut Evaluator, label: String, ranks: &[Option<usize>]) -> Res<Point> {
    Ok(Point { label, reduction: ev.reduction(ranks), accuracy: ev.acc(ranks)? })
}

/// The best of `points` reaching reduction `x` (the last one on ties).
fn best(points: &[Point], x: f64) -> Option<&Point> {
    points.iter().filter(|p| p.reduction >= x).max_by(|a, b| a.accuracy.total_cmp(&b.accuracy))
}

/// The planner at each target against every uniform rank and every last-k choice reaching it.
fn planner_comparison(ev: &mut Evaluator, dense: f64) -> Res<Curves> {
    let (uniform, last_k) = baselines(ev)?;
    let plans = TARGETS.iter().map(|&x| ev.plan(x, Proxy::Spatial)).collect::<Res<Vec<Plan>>>()?;
    print_plans(ev, &plans)?;
    println!("\nPlanner comparison at equal whole-network MAC reduction (accuracy %, dense {dense:.2}%):");
    let head = ["planner (reduction)", "best uniform (rank)", "best last-k (k, rank)"];
    println!("{:>7} | {:>22} | {:>24} | {:>24} | verdict", "target", head[0], head[1], head[2]);
    let mut planner = Vec::new();
    for (&x, p) in TARGETS.iter().zip(&plans) {
        let ranks: Ranks = p.layers.iter().map(|lp| lp.rank).collect();
        let planned = point(ev, format!("{x}x"), &ranks)?;
        let cell = |b: Option<&Point>| {
            b.map_or("none reaches it".into(), |b| format!("{:.2} ({}, {:.2}x)", b.accuracy, b.label, b.reduction))
        };
        let (bu, bl) = (best(&uniform, x), best(&last_k, x));
        let top = bu.iter().chain(&bl).map(|b| b.accuracy).fold(f64::NEG_INFINITY, f64::max);
        let verdict = if planned.accuracy > top {
            format!("planner wins by {:+.2}", planned.accuracy - top)
        } else {
            format!("planner LOSES by {:.2}", top - planned.accuracy)
        };
        let mine = format!("{:.2} ({:.2}x)", planned.accuracy, planned.reduction);
        println!("{x:>7.2} | {mine:>22} | {:>24} | {:>24} | {verdict}", cell(bu), cell(bl));
        planner.push(planned);
    }
    // Experiment 2's last-k rows (memoised) for the plot.
    let l = ev.layers();
    let mut last_k_curves = Vec::new();
    for r in EXP2_RANKS {
        let points = (1..=l).map(|k| point(ev, String::new(), &masked(&ev.net, l - k..l, r))).collect::<Res<_>>()?;
        last_k_curves.push((r, points));
    }
    Ok(Curves { uniform, last_k: last_k_curves, planner, auto: Vec::new() })
}

/// The planner choosing a (scheme, rank) per layer among every scheme with its default fit and
/// depth weight (`--scheme auto`, `Fit::AUTO_RHO`, `AUTO_DEPTH_WEIGHT`) beside DAC-only plans
/// with either fit (depth weight 0, as the converter plans them), at each target.
fn schemes_comparison(ev: &Evaluator, dense: f64) -> Res<Vec<Point>> {
    let all = |fit: Fit| SchemeKind::ALL.iter().map(|&k| (k, fit)).collect::<Vec<_>>();
    let (frob, corr, auto) = (Fit::frobenius(), Fit::correlated(Fit::DEFAULT_RHO)?, Fit::correlated(Fit::AUTO_RHO)?);
    println!(
        "\nSchemes: the planner among every scheme (--scheme auto, fit correlated={}, depth weight {}) beside DAC-only plans",
        Fit::AUTO_RHO,
        dac::plan::AUTO_DEPTH_WEIGHT
    );
    println!("(accuracy %, dense {dense:.2}%; per layer s = spatial, c = channel, n = decoupled, d = dac, - = dense):");
    println!("{:>7} | {:>15} | {:>17} | {:>15} | auto plan", "target", "dac (frobenius)", "dac (correlated)", "auto");
    let mut points = Vec::new();
    for x in TARGETS {
        let (_, a) = ev.plan_schemes(x, Proxy::Spatial, &[(SchemeKind::Dac, frob)], None)?;
        let (_, b) = ev.plan_schemes(x, Proxy::Spatial, &[(SchemeKind::Dac, corr)], None)?;
        let (plan, c) = ev.plan_schemes(x, Proxy::Spatial, &all(auto), None)?;
        let verdict = if c >= a.max(b) { "auto wins" } else { "auto LOSES" };
        println!(
            "{x:>7.2} | {a:>15.2} | {b:>17.2} | {c:>8.2} ({:.2}x) | {} ({verdict})",
            plan.reduction(),
            dac_fmnist::plan_summary(&plan)
        );
        points.push(Point { label: format!("{x}x"), reduction: plan.reduction(), accuracy: c });
    }
    Ok(points)
}

/// Every uniform rank and every last-k choice that reaches the lowest target, evaluated. Last k:
/// at every rank the smallest k reaching each target, and every k at Experiment 2's ranks. In
/// rank order, then k order: ties go to the same choice as in the recorded runs.
fn baselines(ev: &mut Evaluator) -> Res<(Vec<Point>, Vec<Point>)> {
    let l = ev.layers();
    let beneficial = |r: usize| ev.net.convs.iter().any(|c| cost::is_beneficial(&c.shape(), r));
    let max_r = (1..=25).filter(|&r| beneficial(r)).max().unwrap_or(1);
    let (mut uniform, mut last_k) = (Vec::new(), Vec::new());
    for r in 1..=max_r {
        let ranks = masked(&ev.net, 0..l, r);
        if ev.reduction(&ranks) >= TARGETS[0] {
            uniform.push(point(ev, format!("r={r}"), &ranks)?);
        }
        let reaching = |x: f64| (1..=l).find(|&k| ev.reduction(&masked(&ev.net, l - k..l, r)) >= x);
        let mut ks: Vec<usize> = TARGETS.iter().filter_map(|&x| reaching(x)).collect();
        if EXP2_RANKS.contains(&r) {
            ks.extend(1..=l);
        }
        ks.sort_unstable();
        ks.dedup();
        for k in ks {
            let ranks = masked(&ev.net, l - k..l, r);
            if ev.reduction(&ranks) >= TARGETS[0] {
                last_k.push(point(ev, format!("k={k}, r={r}"), &ranks)?);
            }
        }
    }
    Ok((uniform, last_k))
}

/// The planner's per-layer ranks and the accuracy of its plans.
fn print_plans(ev: &mut Evaluator, plans: &[Plan]) -> Res<()> {
    println!(
        "\nPlanner (dac::plan, Proxy::Spatial, the planner compared below; weights only) per-layer ranks, '-' = dense:"
    );
    print!("{:>7}", "target");
    ev.net.convs.iter().for_each(|c| print!(" {:>4}", c.name().trim_start_matches("features.")));
    println!(" {:>9} {:>9}", "MACs x", "accuracy");
    for (x, p) in TARGETS.iter().zip(plans) {
        let ranks: Ranks = p.layers.iter().map(|lp| lp.rank).collect();
        print!("{x:>7.2}");
        ranks.iter().for_each(|r| print!(" {:>4}", r.map_or("-".to_string(), |r| r.to_string())));
        println!(" {:>9.3} {:>9.2}", ev.reduction(&ranks), ev.acc(&ranks)?);
    }
    Ok(())
}

/// Accuracy against whole-network MAC reduction: uniform ranks, last k layers, the planner.
fn plot(path: &Path, name: &str, dense: f64, curves: &Curves) -> Res<()> {
    use plotters::prelude::*;
    let all = curves
        .uniform
        .iter()
        .chain(&curves.planner)
        .chain(&curves.auto)
        .chain(curves.last_k.iter().flat_map(|(_, p)| p));
    let xmax = all.map(|p| p.reduction).fold(1.0f64, f64::max).min(8.0) * 1.05;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{name}: accuracy vs whole-network MAC reduction (no retraining)"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(1.0f64..xmax, 0.0f64..100.0)?;
    chart.configure_mesh().x_desc("MAC reduction (x)").y_desc("test accuracy (%)").draw()?;
    let mut line = |points: &[Point], label: String, style: ShapeStyle, size: u32| -> Res<()> {
        let mut xy: Vec<(f64, f64)> =
            points.iter().map(|p| (p.reduction, p.accuracy)).filter(|p| p.0 <= xmax).collect();
        xy.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(xy, style).point_size(size))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        Ok(())
    };
    let flat = [(1.0, dense), (xmax, dense)].map(|(x, y)| Point { label: String::new(), reduction: x, accuracy: y });
    line(&flat, format!("dense {dense:.2}%"), BLACK.mix(0.4).into(), 0)?;
    line(&curves.uniform, "uniform rank r (all layers)".into(), BLUE.stroke_width(2), 3)?;
    let colors = [RGBColor(230, 120, 0), RGBColor(0, 150, 70), RGBColor(150, 0, 150)];
    for ((r, points), c) in curves.last_k.iter().zip(colors) {
        line(points, format!("last k layers at rank {r}"), c.stroke_width(1), 2)?;
    }
    line(&curves.planner, "dac::plan, DAC only (Spatial proxy)".into(), RED.stroke_width(3), 4)?;
    line(&curves.auto, "dac::plan, every scheme (--scheme auto)".into(), BLACK.stroke_width(3), 4)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
