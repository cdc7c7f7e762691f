//! The paper's experiments on the shipped Fashion-MNIST networks, and the data-free planner
//! against uniform ranks and "last k layers" choices.
//!
//! ```text
//! cargo run --release --example paper                  # fmnist_vgg, all 10,000 test images
//! cargo run --release --example paper -- --quick       # stratified 2,000-image subset
//! cargo run --release --example paper -- --model alt   # the other network (vgg | alt | both | PATH_STEM)
//! cargo run --release --example paper -- --out DIR     # where the SVG plots go (default target/paper)
//! cargo run --release --example paper -- --oracle 50   # + a data-using greedy rank search (50 images per class)
//! ```
//!
//! For each network: the dense accuracy (checked against the training script's, image for
//! image), Experiment 1 (one layer decomposed, each layer x ranks 1-5), Experiment 2 (first k
//! versus last k layers at ranks 1, 3, 5), then the planner (`dac::plan`) at 1.5x, 2x and 3x
//! whole-network MAC reduction against every uniform rank and every last-k choice reaching the
//! same reduction — once with the paper's fit (`Fit::frobenius()`) for every method, once with
//! the data-free correlated-input fit (`Fit::correlated(0.7)`) for every method — and an SVG
//! plot of accuracy against MAC reduction. `--oracle` adds a greedy rank search that measures
//! accuracy on test images (not data-free): a reference for what any per-layer rank choice can
//! keep. Every convolution runs through `dac`'s executor; a decomposed layer runs as its
//! depthwise + pointwise pair.

#[path = "paper/net.rs"]
mod net;

use dac::plan::{Plan, PlanLayer, PlanOptions, Proxy, Target};
use dac::svd::NalgebraSvd;
use dac::{cost, Factorization, Fit, Options, Spectrum};
use net::{Dataset, Net, Pair, Res};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// The proxy of the planner compared with uniform ranks and last-k.
const PLANNER: Proxy = Proxy::Spatial;
/// Targets of the planner comparison.
const TARGETS: [f64; 3] = [1.5, 2.0, 3.0];
/// Extra planner targets for the plot.
const PLOT_TARGETS: [f64; 8] = [1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0];
/// Images per batch (batches run in parallel).
const BATCH: usize = 100;

struct Args {
    quick: bool,
    models: Vec<PathBuf>,
    out: PathBuf,
    images: Option<usize>,
    /// `--oracle N`: also run the data-using greedy search on N images per class.
    oracle: Option<usize>,
}

fn parse_args() -> Res<Args> {
    let root = net::repo_root();
    let mut args =
        Args { quick: false, models: Vec::new(), out: root.join("target/paper"), images: None, oracle: None };
    let mut model = "vgg".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--model" => model = it.next().ok_or("--model needs vgg | alt | both | PATH_STEM")?,
            "--out" => args.out = PathBuf::from(it.next().ok_or("--out needs a directory")?),
            "--images" => args.images = Some(it.next().ok_or("--images needs a count")?.parse()?),
            "--oracle" => args.oracle = Some(it.next().ok_or("--oracle needs images per class")?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: paper [--quick] [--model vgg|alt|both|PATH_STEM] [--out DIR] [--images N] [--oracle PER_CLASS]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)").into()),
        }
    }
    args.models = match model.as_str() {
        "both" => vec![root.join("models/fmnist_vgg"), root.join("models/fmnist_alt")],
        "vgg" => vec![root.join("models/fmnist_vgg")],
        "alt" => vec![root.join("models/fmnist_alt")],
        path => vec![PathBuf::from(path)],
    };
    Ok(args)
}

/// A network with its cached activations and every rank's pair.
struct Ctx {
    net: Net,
    labels: Vec<u8>,
    /// `cache[i][b]`: dense input of conv `i`, batch `b`.
    cache: Vec<Vec<dac::exec::Tensor4<f32>>>,
    /// The fits the pairs were computed with; `fits[0]` is the paper's (Frobenius).
    fits: Vec<Fit>,
    /// Index in `fits` of the fit [`acc`](Self::acc) and [`plan`](Self::plan) use.
    fit: usize,
    /// `pairs[f][i][r - 1]`: conv `i` at rank `r` with fit `fits[f]`.
    pairs: Vec<Vec<Vec<Pair>>>,
    /// Frobenius spectra (Experiment 1's proxy check).
    #[allow(dead_code)]
    spectra: Vec<Spectrum>,
    dense_macs: u64,
    memo: HashMap<(usize, Vec<Option<usize>>), usize>,
    evaluations: usize,
}

impl Ctx {
    /// Caches the dense input of every convolution for `data` and every rank's pair with each
    /// fit (the first must be Frobenius).
    fn build(net: Net, data: &Dataset, fits: &[Fit]) -> Res<Ctx> {
        if fits.first() != Some(&Fit::frobenius()) {
            return Err("the first fit must be Frobenius".into());
        }
        let batches = net::batches(data, BATCH)?;
        let cache = net.conv_input_cache(&batches)?;
        drop(batches);
        let svd = NalgebraSvd::default();
        let mut pairs = Vec::new();
        let mut spectra = Vec::new();
        for &fit in fits {
            let mut by_layer = Vec::new();
            for l in &net.convs {
                let f = Factorization::compute_fitted(l, &svd, fit)?;
                let mut by_rank = Vec::new();
                for r in 1..=l.shape().max_rank() {
                    let d = f.truncate(&Options::new(r))?;
                    by_rank.push(Pair { depthwise: d.depthwise, pointwise: d.pointwise });
                }
                by_layer.push(by_rank);
                if fit == Fit::frobenius() {
                    spectra.push(f.spectrum());
                }
            }
            pairs.push(by_layer);
        }
        let dense_macs = net.cost(&[]).macs;
        Ok(Ctx {
            net,
            labels: data.labels.clone(),
            cache,
            fits: fits.to_vec(),
            fit: 0,
            pairs,
            spectra,
            dense_macs,
            memo: HashMap::new(),
            evaluations: 0,
        })
    }
    fn layers(&self) -> usize {
        self.net.convs.len()
    }
    fn n(&self) -> usize {
        self.labels.len()
    }
    fn pct(&self, correct: usize) -> f64 {
        100.0 * correct as f64 / self.n() as f64
    }
    /// Accuracy (%) of a rank assignment.
    fn acc(&mut self, ranks: &[Option<usize>]) -> Res<f64> {
        let c = self.correct(ranks)?;
        Ok(self.pct(c))
    }
    /// Whole-network MAC reduction of a rank assignment.
    fn reduction(&self, ranks: &[Option<usize>]) -> f64 {
        self.dense_macs as f64 / self.net.cost(ranks).macs as f64
    }
    /// Correct count with conv `i` at `ranks[i]` (None = dense), memoised.
    fn correct(&mut self, ranks: &[Option<usize>]) -> Res<usize> {
        if let Some(&c) = self.memo.get(&(self.fit, ranks.to_vec())) {
            return Ok(c);
        }
        let first = ranks.iter().position(Option::is_some).unwrap_or(0);
        let pairs: Vec<Option<&Pair>> =
            ranks.iter().enumerate().map(|(i, r)| r.map(|r| &self.pairs[self.fit][i][r - 1])).collect();
        let (c, _) = net::evaluate(&self.net, &self.cache[first], self.net.conv_ops[first], &pairs, &self.labels)?;
        self.evaluations += 1;
        self.memo.insert((self.fit, ranks.to_vec()), c);
        Ok(c)
    }
    /// Experiment 2's "first k" rows at `rank`, k = 1..=L, sharing the work between them: the
    /// activations entering conv `k - 1` with convs `0..k-1` decomposed are carried from one k
    /// to the next, so each row runs only conv `k - 1` onwards instead of the whole network.
    /// The counts go into the memo that [`acc`](Self::acc) reads.
    fn first_k_chain(&mut self, rank: usize) -> Res<()> {
        use rayon::prelude::*;
        let mut x = self.cache[0].clone();
        for k in 1..=self.layers() {
            let ranks = first_k(self, k, rank);
            let pairs: Vec<Option<&Pair>> =
                ranks.iter().enumerate().map(|(i, r)| r.map(|r| &self.pairs[self.fit][i][r - 1])).collect();
            let (from, next) = (self.net.conv_ops[k - 1], self.net.conv_ops.get(k).copied());
            let counted = if self.memo.contains_key(&(self.fit, ranks.clone())) {
                None
            } else {
                Some(net::evaluate(&self.net, &x, from, &pairs, &self.labels)?.0)
            };
            if let Some(to) = next {
                x = x.into_par_iter().map(|b| self.net.run_range(b, from, to, &pairs)).collect::<Res<_>>()?;
            }
            if let Some(c) = counted {
                self.evaluations += 1;
                self.memo.insert((self.fit, ranks), c);
            }
        }
        Ok(())
    }
    fn only(&self, layers: impl Iterator<Item = usize>, rank: usize) -> Vec<Option<usize>> {
        let mut v = vec![None; self.layers()];
        for i in layers {
            v[i] = Some(rank);
        }
        v
    }
    /// The planner's view of every convolution with the Frobenius fit.
    fn plan_layers(&self) -> Res<Vec<PlanLayer>> {
        Ok(self.net.plan_layers(Fit::frobenius())?)
    }
    /// The planner's plan for the current fit.
    fn plan(&self, target: f64, proxy: Proxy) -> Res<Plan> {
        let layers = self.net.plan_layers(self.fits[self.fit])?;
        let options = PlanOptions::default().fixed(self.net.fixed_cost()).proxy(proxy);
        Ok(dac::plan(&layers, &Target::MacReduction(target), &options)?)
    }
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let start = Instant::now();
    let root = net::repo_root();
    let all = Dataset::load_test(&root.join("data/fashion-mnist"))?;
    let data = match (args.images, args.quick) {
        (Some(n), _) => all.first(n),
        (None, true) => all.stratified(200),
        (None, false) => all.clone(),
    };
    let full = data.len() == all.len();
    println!(
        "dac paper experiments: {} test images ({}), {} rayon threads",
        data.len(),
        if full {
            "the whole Fashion-MNIST test set"
        } else if args.quick {
            "--quick: the first 200 of each class"
        } else {
            "first images"
        },
        rayon::current_num_threads()
    );
    std::fs::create_dir_all(&args.out)?;
    for stem in &args.models {
        run_model(stem, &data, full, &args)?;
    }
    println!("\ntotal time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn run_model(stem: &std::path::Path, data: &Dataset, full: bool, args: &Args) -> Res<()> {
    let t0 = Instant::now();
    let net = Net::load(stem)?;
    let name = net.name.clone();
    println!("\n==================== {name} ====================");
    let mut ctx = Ctx::build(net, data, &[Fit::frobenius(), Fit::correlated(Fit::DEFAULT_RHO)?])?;
    let l = ctx.layers();

    // ---- the network and its dense accuracy ----
    println!("{:<12} {:>14} {:>8} {:>10} {:>12} {:>9}", "conv", "shape", "stride", "input", "MACs", "max rank");
    for (i, c) in ctx.net.convs.iter().enumerate() {
        let s = c.shape();
        let (h, w) = ctx.net.conv_inputs[i];
        let macs = cost::dense(c.name(), &s, true, c.output_size(h, w)?)?.macs;
        println!(
            "{:<12} {:>14} {:>8} {:>10} {:>12} {:>9}",
            c.name(),
            format!("{}x{}x{}x{}/g{}", s.out_channels, s.in_per_group(), s.kh, s.kw, s.groups),
            format!("{}", c.geometry().stride.0),
            format!("{h}x{w}"),
            macs,
            s.max_rank()
        );
    }
    println!(
        "whole network: {} MACs per image (convolutions + {} in linear layers)",
        ctx.dense_macs,
        ctx.net.fixed_cost().macs
    );
    let dense = vec![None; l];
    let first = ctx.net.conv_ops[0];
    let dense_labels = ctx.labels.clone();
    let td = Instant::now();
    let (dense_correct, preds) = net::evaluate(&ctx.net, &ctx.cache[0], first, &[], &dense_labels)?;
    let dense_seconds = td.elapsed().as_secs_f64();
    for f in 0..ctx.fits.len() {
        ctx.memo.insert((f, dense.clone()), dense_correct);
    }
    println!(
        "dense accuracy (Rust forward pass): {:.2}% ({dense_correct}/{}); one dense pass {dense_seconds:.2} s",
        ctx.pct(dense_correct),
        ctx.n()
    );
    let expected = std::fs::read(stem.with_extension("preds")).ok();
    let compared = expected.as_ref().map(|e| {
        let pairs: Vec<(u8, u8)> =
            data.index.iter().zip(&preds).filter_map(|(&i, &p)| e.get(i).map(|&x| (x, p))).collect();
        (pairs.len(), pairs.iter().filter(|(a, b)| a != b).count())
    });
    match compared {
        Some((n, d)) => println!(
            "predictions compared image for image with {}: {n}, differing: {d}",
            stem.with_extension("preds").display()
        ),
        None => println!("no {} to compare predictions with", stem.with_extension("preds").display()),
    }
    if full {
        println!("training script's count: {}", ctx.net.recorded_correct().map_or("?".to_string(), |r| r.to_string()));
    }
    let dense_pct = ctx.pct(dense_correct);

    // ---- Experiment 1 ----
    let t1 = Instant::now();
    println!("\nExperiment 1: accuracy (%) with exactly one layer decomposed; (x) = whole-network MAC reduction");
    print!("{:<12}", "layer");
    for r in 1..=5 {
        print!(" {:>16}", format!("rank {r}"));
    }
    println!();
    let mut exp1 = Vec::new();
    for i in 0..l {
        print!("{:<12}", ctx.net.convs[i].name());
        for r in 1..=5 {
            if r > ctx.net.convs[i].shape().max_rank() {
                print!(" {:>16}", "-");
                continue;
            }
            let ranks = ctx.only(std::iter::once(i), r);
            let acc = ctx.acc(&ranks)?;
            let red = ctx.reduction(&ranks);
            print!(" {:>16}", format!("{acc:.2} ({red:.3}x)"));
            flush();
            exp1.push((i, r, acc));
        }
        println!();
    }
    proxy_check(&ctx, &exp1, dense_pct)?;
    println!("[experiment 1: {:.1} s]", t1.elapsed().as_secs_f64());

    // ---- Experiment 2 ----
    let t2 = Instant::now();
    println!("\nExperiment 2: accuracy (%) with the first k or the last k layers decomposed; (x) = MAC reduction");
    print!("{:<4}", "k");
    for r in [1, 3, 5] {
        print!(" {:>16} {:>16}", format!("first k, r={r}"), format!("last k, r={r}"));
    }
    println!();
    for r in [1, 3, 5] {
        ctx.first_k_chain(r)?;
    }
    for k in 1..=l {
        print!("{k:<4}");
        for r in [1, 3, 5] {
            for ranks in [first_k(&ctx, k, r), last_k(&ctx, k, r)] {
                let acc = ctx.acc(&ranks)?;
                print!(" {:>16}", format!("{acc:.2} ({:.2}x)", ctx.reduction(&ranks)));
                flush();
            }
        }
        println!();
    }
    println!("(a layer whose break-even rank is at or below r stays dense)");
    println!("[experiment 2: {:.1} s]", t2.elapsed().as_secs_f64());

    // ---- Planner against uniform ranks and last-k ----
    let t3 = Instant::now();
    let (uniform, lastk) = baselines(&mut ctx, true)?;
    println!("\nUniform ranks (every layer at rank r where r is below its break-even, else dense):");
    println!("{:>6} {:>10} {:>10}", "rank", "MACs x", "accuracy");
    for &(r, red, acc) in &uniform {
        println!("{r:>6} {red:>10.3} {acc:>10.2}");
    }
    let planned = plan_rows(&mut ctx, PLANNER)?;
    let sens_planned = plan_rows(&mut ctx, Proxy::Sensitivity)?;
    let energy_planned = plan_rows(&mut ctx, Proxy::Energy)?;
    print_plans(&ctx, "Proxy::Spatial, the planner compared below", &planned);
    print_plans(&ctx, "Proxy::Sensitivity", &sens_planned);
    println!("\nPlanner comparison at equal whole-network MAC reduction (accuracy %, dense {dense_pct:.2}%):");
    println!(
        "{:>7} | {:>22} | {:>24} | {:>24} | {:>18} | {:>18} | verdict",
        "target",
        "planner (reduction)",
        "best uniform (rank)",
        "best last-k (k, rank)",
        "Sensitivity proxy",
        "energy-only proxy"
    );
    for &x in &TARGETS {
        let (_, _, sred, sacc) = at_target(&sens_planned, x);
        let (_, _, ered, eacc) = at_target(&energy_planned, x);
        let [planner, bu, bl, verdict] = comparison(x, &planned, &uniform, &lastk);
        println!(
            "{x:>7.2} | {planner:>22} | {bu:>24} | {bl:>24} | {:>18} | {:>18} | {verdict}",
            format!("{sacc:.2} ({sred:.2}x)"),
            format!("{eacc:.2} ({ered:.2}x)"),
        );
    }

    // ---- The same comparison with the correlated-input fit ----
    ctx.fit = 1;
    let (corr_uniform, corr_lastk) = baselines(&mut ctx, false)?;
    let corr_planned = plan_rows(&mut ctx, PLANNER)?;
    ctx.fit = 0;
    let rho = ctx.fits[1].rho().unwrap_or(f64::NAN);
    println!(
        "\nWith the correlated-input fit (dac::Fit::correlated({rho}), weights only; everything above uses the \
         paper's Frobenius fit):"
    );
    print!("uniform ranks (rank: MACs x, accuracy):");
    for &(r, red, acc) in &corr_uniform {
        print!("  {r}: {red:.2}x {acc:.2}");
    }
    println!();
    print_plans(&ctx, "Proxy::Spatial, Fit::correlated", &corr_planned);
    println!("\nPlanner comparison, every method with the correlated-input fit (accuracy %, dense {dense_pct:.2}%):");
    println!(
        "{:>7} | {:>22} | {:>24} | {:>24} | {:<29} | {:>28}",
        "target",
        "planner (reduction)",
        "best uniform (rank)",
        "best last-k (k, rank)",
        "verdict",
        "planner, Frobenius fit"
    );
    for &x in &TARGETS {
        let [planner, bu, bl, verdict] = comparison(x, &corr_planned, &corr_uniform, &corr_lastk);
        let (_, _, fred, facc) = at_target(&planned, x);
        println!(
            "{x:>7.2} | {planner:>22} | {bu:>24} | {bl:>24} | {verdict:<29} | {:>28}",
            format!("{facc:.2} ({fred:.2}x)")
        );
    }
    println!("[planner comparison: {:.1} s]", t3.elapsed().as_secs_f64());
    if let Some(per_class) = args.oracle {
        oracle_report(stem, data, per_class, &mut ctx, &[&planned, &corr_planned])?;
    }

    let svg = args.out.join(format!("{name}_accuracy_vs_macs.svg"));
    let curves = Curves {
        uniform: &uniform,
        lastk: &lastk,
        planned: &planned,
        sensitivity: &sens_planned,
        energy: &energy_planned,
        corr_uniform: &corr_uniform,
        corr_planned: &corr_planned,
    };
    plot(&svg, &name, dense_pct, &curves, l)?;
    println!("plot: {}", svg.display());
    println!(
        "[{name}: {} forward evaluations of {} images, {:.1} s]",
        ctx.evaluations,
        ctx.n(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A planned row: target, plan, its MAC reduction, its accuracy (%).
type Planned = (f64, Plan, f64, f64);

/// Every uniform rank (rank, reduction, accuracy) and last-k choice (k, rank, reduction,
/// accuracy) with the current fit. Last k: at every rank the smallest k reaching each target
/// (decomposing more layers at the same rank only adds error) and, with `all_k`, every k at
/// ranks 1, 3, 5 (Experiment 2's, for the plot).
#[allow(clippy::type_complexity)]
fn baselines(ctx: &mut Ctx, all_k: bool) -> Res<(Vec<(usize, f64, f64)>, Vec<(usize, usize, f64, f64)>)> {
    let l = ctx.layers();
    let max_r =
        (1..=25).filter(|&r| ctx.net.convs.iter().any(|c| cost::is_beneficial(&c.shape(), r))).max().unwrap_or(1);
    let mut uniform = Vec::new();
    for r in 1..=max_r {
        let ranks = uniform_ranks(ctx, r);
        let acc = ctx.acc(&ranks)?;
        uniform.push((r, ctx.reduction(&ranks), acc));
    }
    let mut lastk = Vec::new();
    for r in 1..=max_r {
        let mut ks: Vec<usize> = if all_k && [1, 3, 5].contains(&r) { (1..=l).collect() } else { Vec::new() };
        for &x in &TARGETS {
            if let Some(k) = (1..=l).find(|&k| ctx.reduction(&last_k(ctx, k, r)) >= x) {
                ks.push(k);
            }
        }
        ks.sort_unstable();
        ks.dedup();
        for k in ks {
            let ranks = last_k(ctx, k, r);
            let red = ctx.reduction(&ranks);
            let acc = ctx.acc(&ranks)?;
            lastk.push((k, r, red, acc));
        }
    }
    Ok((uniform, lastk))
}

/// The planner with `proxy` and the current fit at every plot target, evaluated.
fn plan_rows(ctx: &mut Ctx, proxy: Proxy) -> Res<Vec<Planned>> {
    let mut rows = Vec::new();
    for &x in &PLOT_TARGETS {
        let p = ctx.plan(x, proxy)?;
        let ranks: Vec<Option<usize>> = p.layers.iter().map(|lp| lp.rank).collect();
        let acc = ctx.acc(&ranks)?;
        let red = ctx.reduction(&ranks);
        assert!((red - p.reduction()).abs() < 1e-9 * red, "planner's cost model disagrees with the network's");
        rows.push((x, p, red, acc));
    }
    Ok(rows)
}

fn print_plans(ctx: &Ctx, what: &str, rows: &[Planned]) {
    println!("\nPlanner (dac::plan, {what}; weights only) per-layer ranks, '-' = dense:");
    print!("{:>7}", "target");
    for c in &ctx.net.convs {
        print!(" {:>4}", c.name().trim_start_matches("features."));
    }
    println!(" {:>9} {:>9}", "MACs x", "accuracy");
    for (x, p, red, acc) in rows {
        print!("{x:>7.2}");
        for lp in &p.layers {
            print!(" {:>4}", lp.rank.map_or("-".to_string(), |r| r.to_string()));
        }
        println!(" {red:>9.3} {acc:>9.2}");
    }
}

fn at_target(rows: &[Planned], x: f64) -> &Planned {
    rows.iter().find(|r| r.0 == x).expect("every comparison target is a plot target")
}

/// The cells of one comparison row at target `x`: the planner, the best uniform rank and the
/// best last-k choice reaching `x`, and the verdict.
fn comparison(
    x: f64,
    planned: &[Planned],
    uniform: &[(usize, f64, f64)],
    lastk: &[(usize, usize, f64, f64)],
) -> [String; 4] {
    let (_, _, pred, pacc) = at_target(planned, x);
    let bu = uniform.iter().filter(|u| u.1 >= x).max_by(|a, b| a.2.total_cmp(&b.2));
    let bl = lastk.iter().filter(|u| u.2 >= x).max_by(|a, b| a.3.total_cmp(&b.3));
    let best = bu.map(|u| u.2).into_iter().chain(bl.map(|u| u.3)).fold(f64::NEG_INFINITY, f64::max);
    let verdict = if *pacc > best {
        format!("planner wins by {:+.2}", pacc - best)
    } else {
        format!("planner LOSES by {:.2}", best - pacc)
    };
    [
        format!("{pacc:.2} ({pred:.2}x)"),
        bu.map_or("none reaches it".into(), |u| format!("{:.2} (r={}, {:.2}x)", u.2, u.0, u.1)),
        bl.map_or("none reaches it".into(), |u| format!("{:.2} (k={}, r={}, {:.2}x)", u.3, u.0, u.1, u.2)),
        verdict,
    ]
}

/// `--oracle`: what a rank choice of the planner's kind can keep at each target when it may
/// measure accuracy. **Not data-free**, and not a competitor of the planner: a reference.
///
/// A greedy search on a search set (the first `per_class` images of each class of the
/// experiment's images): from the dense network, repeatedly take the one step (a dense layer to
/// its largest rank below break-even, or rank `r` to `r - 1`) that loses the least measured
/// accuracy per MAC saved, until the largest target is reached. Its plan at each target (the
/// first step reaching it) is then evaluated on all the experiment's images.
fn oracle_report(
    stem: &std::path::Path,
    data: &Dataset,
    per_class: usize,
    ctx: &mut Ctx,
    planned: &[&[Planned]],
) -> Res<()> {
    let mut search = Ctx::build(Net::load(stem)?, &data.stratified(per_class), &ctx.fits)?;
    for (f, planned) in planned.iter().enumerate() {
        (search.fit, ctx.fit) = (f, f);
        oracle_fit(&mut search, ctx, planned)?;
    }
    ctx.fit = 0;
    Ok(())
}

/// [`oracle_report`] with the current fit of `search` and `ctx`.
fn oracle_fit(search: &mut Ctx, ctx: &mut Ctx, planned: &[Planned]) -> Res<()> {
    let t = Instant::now();
    let evaluations = search.evaluations;
    let until = TARGETS.iter().copied().fold(0.0, f64::max);
    let path = greedy(search, until)?;
    let fit = match ctx.fits[ctx.fit].rho() {
        Some(rho) => format!("correlated-input fit, rho {rho}"),
        None => "Frobenius fit".to_string(),
    };
    println!(
        "\nOracle, {fit} (NOT data-free): greedy steps on the measured accuracy of {} of these images, \
         least accuracy lost per MAC saved; its plan at each target evaluated on all {}:",
        search.n(),
        ctx.n()
    );
    print!("{:>7}", "target");
    for c in &ctx.net.convs {
        print!(" {:>4}", c.name().trim_start_matches("features."));
    }
    println!(" {:>9} {:>12} {:>9} {:>20}", "MACs x", "search set", "accuracy", "planner (data-free)");
    for &x in &TARGETS {
        let Some(ranks) = path.iter().find(|r| ctx.reduction(r) >= x) else {
            println!("{x:>7.2} the search did not reach this target");
            continue;
        };
        print!("{x:>7.2}");
        for r in ranks {
            print!(" {:>4}", r.map_or("-".to_string(), |r| r.to_string()));
        }
        let (red, sacc, acc) = (ctx.reduction(ranks), search.acc(ranks)?, ctx.acc(ranks)?);
        let planner = at_target(planned, x).3;
        println!(" {red:>9.3} {sacc:>12.2} {acc:>9.2} {planner:>20.2}");
    }
    println!(
        "[oracle search: {} steps, {} evaluations of {} images, {:.1} s]",
        path.len() - 1,
        search.evaluations - evaluations,
        search.n(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The greedy search of [`oracle_report`]: every plan it passes through, dense first.
fn greedy(s: &mut Ctx, until: f64) -> Res<Vec<Vec<Option<usize>>>> {
    let mut ranks = vec![None; s.layers()];
    let mut acc = s.acc(&ranks)?;
    let mut path = vec![ranks.clone()];
    while s.reduction(&ranks) < until {
        let macs = s.net.cost(&ranks).macs;
        let mut best: Option<(f64, Vec<Option<usize>>, f64)> = None;
        for i in 0..s.layers() {
            let shape = s.net.convs[i].shape();
            let next = match ranks[i] {
                None => (1..=shape.max_rank()).rev().find(|&r| cost::is_beneficial(&shape, r)),
                Some(r) => r.checked_sub(1).filter(|&r| r > 0),
            };
            let Some(next) = next else { continue };
            let mut step = ranks.clone();
            step[i] = Some(next);
            let saved = macs.saturating_sub(s.net.cost(&step).macs);
            if saved == 0 {
                continue;
            }
            let a = s.acc(&step)?;
            let score = (acc - a) / saved as f64;
            if best.as_ref().is_none_or(|b| score < b.0) {
                best = Some((score, step, a));
            }
        }
        let Some((_, step, a)) = best else { break };
        ranks = step;
        acc = a;
        path.push(ranks.clone());
    }
    Ok(path)
}

fn flush() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn first_k(ctx: &Ctx, k: usize, r: usize) -> Vec<Option<usize>> {
    masked(ctx, 0..k, r)
}

fn last_k(ctx: &Ctx, k: usize, r: usize) -> Vec<Option<usize>> {
    masked(ctx, ctx.layers() - k..ctx.layers(), r)
}

fn uniform_ranks(ctx: &Ctx, r: usize) -> Vec<Option<usize>> {
    masked(ctx, 0..ctx.layers(), r)
}

/// Rank `r` on the given layers where it is below break-even.
fn masked(ctx: &Ctx, layers: std::ops::Range<usize>, r: usize) -> Vec<Option<usize>> {
    let mut v = ctx.only(layers, r);
    for (i, c) in ctx.net.convs.iter().enumerate() {
        if v[i].is_some() && !cost::is_beneficial(&c.shape(), r) {
            v[i] = None;
        }
    }
    v
}

/// How well each data-free score orders Experiment 1's measured accuracy drops (Spearman).
fn proxy_check(ctx: &Ctx, exp1: &[(usize, usize, f64)], dense: f64) -> Res<()> {
    let drops: Vec<f64> = exp1.iter().map(|e| dense - e.2).collect();
    let (l, layers) = (ctx.layers(), ctx.plan_layers()?);
    print!("Spearman correlation of data-free scores with these accuracy drops:");
    for (name, proxy) in
        [("energy e(r)", Proxy::Energy), ("Sensitivity", Proxy::Sensitivity), ("Spatial", Proxy::Spatial)]
    {
        let scores: Vec<f64> = exp1.iter().map(|&(i, r, _)| layers[i].score(proxy, r, i, l)).collect();
        print!("  {name}: {:.3}", spearman(&scores, &drops));
    }
    println!();
    Ok(())
}

fn ranks_of(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            out[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    out
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks_of(a), ranks_of(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma) * (x - ma)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb) * (y - mb)).sum();
    cov / (va * vb).sqrt()
}

/// The plot's curves (see `run_model`).
struct Curves<'a> {
    uniform: &'a [(usize, f64, f64)],
    lastk: &'a [(usize, usize, f64, f64)],
    planned: &'a [Planned],
    sensitivity: &'a [Planned],
    energy: &'a [Planned],
    corr_uniform: &'a [(usize, f64, f64)],
    corr_planned: &'a [Planned],
}

fn plot(path: &std::path::Path, name: &str, dense: f64, curves: &Curves<'_>, layers: usize) -> Res<()> {
    use plotters::prelude::*;
    let Curves { uniform, lastk, planned, sensitivity, energy, corr_uniform, corr_planned } = *curves;
    let xmax = uniform.iter().map(|u| u.1).chain(planned.iter().map(|p| p.2)).fold(1.0f64, f64::max).min(8.0) * 1.05;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{name}: accuracy vs whole-network MAC reduction (no retraining)"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(1.0f64..xmax, 0.0f64..100.0)?;
    chart.configure_mesh().x_desc("MAC reduction (x)").y_desc("test accuracy (%)").draw()?;
    chart
        .draw_series(LineSeries::new([(1.0, dense), (xmax, dense)], BLACK.mix(0.4)))?
        .label(format!("dense {dense:.2}%"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
    let mut u: Vec<(f64, f64)> = uniform.iter().map(|u| (u.1, u.2)).filter(|p| p.0 <= xmax).collect();
    u.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(LineSeries::new(u.clone(), BLUE.stroke_width(2)).point_size(3))?
        .label("uniform rank r (all layers)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let colors = [RGBColor(230, 120, 0), RGBColor(0, 150, 70), RGBColor(150, 0, 150)];
    for (ci, r) in [1usize, 3, 5].into_iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = lastk.iter().filter(|l| l.1 == r && l.2 <= xmax).map(|l| (l.2, l.3)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = colors[ci];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(1)).point_size(2))?
            .label(format!("last k of {layers} layers at rank {r}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(1)));
    }
    let mut p: Vec<(f64, f64)> = planned.iter().map(|p| (p.2, p.3)).filter(|p| p.0 <= xmax).collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(LineSeries::new(p, RED.stroke_width(3)).point_size(4))?
        .label("dac::plan (Spatial proxy)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(3)));
    for (rows, label, style) in [
        (sensitivity, "planner, Sensitivity proxy", RED.mix(0.6).stroke_width(1)),
        (energy, "planner, energy-only proxy", RED.mix(0.3).stroke_width(1)),
    ] {
        let mut e: Vec<(f64, f64)> = rows.iter().map(|p| (p.2, p.3)).filter(|p| p.0 <= xmax).collect();
        e.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(e, style).point_size(2))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    let mut cu: Vec<(f64, f64)> = corr_uniform.iter().map(|u| (u.1, u.2)).filter(|p| p.0 <= xmax).collect();
    cu.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cu_style = BLUE.mix(0.5).stroke_width(1);
    chart
        .draw_series(LineSeries::new(cu, cu_style).point_size(2))?
        .label("uniform rank r, correlated-input fit")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], cu_style));
    let mut cp: Vec<(f64, f64)> = corr_planned.iter().map(|p| (p.2, p.3)).filter(|p| p.0 <= xmax).collect();
    cp.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cp_style = RGBColor(120, 0, 0).stroke_width(3);
    chart
        .draw_series(LineSeries::new(cp, cp_style).point_size(4))?
        .label("dac::plan (Spatial proxy), correlated-input fit")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], cp_style));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
