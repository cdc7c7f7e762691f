//! `dac-research`: the studies behind EXPERIMENTS.md, on the shipped Fashion-MNIST networks.
//!
//! ```text
//! cargo run --release -p dac-research                          # fmnist_vgg, all 10,000 test images
//! cargo run --release -p dac-research -- --quick               # the first 200 images of each class
//! cargo run --release -p dac-research -- --model both          # vgg | alt | both | PATH_STEM
//! cargo run --release -p dac-research -- --model both --oracle 50   # + the data-using greedy search
//! ```
//!
//! For each network, beyond what `examples/paper.rs` prints: how well each data-free score
//! (`Proxy::Energy`, `Sensitivity`, `Spatial`) orders Experiment 1's accuracy drops (Spearman);
//! every uniform rank; the planner at eight targets with each proxy; the planner comparison with
//! the alternative proxies beside it; the same comparison with every method using the
//! correlated-input fit (`Fit::correlated(0.7)`); and with `--oracle PER_CLASS` a greedy rank
//! search that measures accuracy on test images (NOT data-free): a reference for what any
//! per-layer rank choice can keep. The example's experiments and comparison are printed too, so
//! one run reproduces a whole block of EXPERIMENTS.md.

use dac::plan::{Plan, Proxy};
use dac::{cost, Fit};
use dac_fmnist::{masked, Dataset, Evaluator as Ctx, Net, Res};
use std::path::PathBuf;
use std::time::Instant;

/// The proxy of the planner compared with uniform ranks and last-k.
const PLANNER: Proxy = Proxy::Spatial;
/// Targets of the planner comparison.
const TARGETS: [f64; 3] = [1.5, 2.0, 3.0];
/// All planner targets printed.
const PLOT_TARGETS: [f64; 8] = [1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0];

struct Args {
    quick: bool,
    models: Vec<PathBuf>,
    images: Option<usize>,
    /// `--oracle N`: also run the data-using greedy search on N images per class.
    oracle: Option<usize>,
}

fn parse_args() -> Res<Args> {
    let root = dac_fmnist::repo_root();
    let mut args = Args { quick: false, models: Vec::new(), images: None, oracle: None };
    let mut model = "vgg".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--model" => model = it.next().ok_or("--model needs vgg | alt | both | PATH_STEM")?,
            "--images" => args.images = Some(it.next().ok_or("--images needs a count")?.parse()?),
            "--oracle" => args.oracle = Some(it.next().ok_or("--oracle needs images per class")?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: dac-research [--quick] [--model vgg|alt|both|PATH_STEM] [--images N] [--oracle PER_CLASS]"
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

fn main() -> Res<()> {
    let args = parse_args()?;
    let start = Instant::now();
    let root = dac_fmnist::repo_root();
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
    let dense_seconds = t0.elapsed().as_secs_f64();
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
    let dense_correct = ctx.correct(&vec![None; l])?;
    let preds = ctx.dense_preds.clone();
    println!(
        "dense accuracy (Rust forward pass): {:.2}% ({dense_correct}/{}); loading, dense pass and activation cache {dense_seconds:.2} s",
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
            let ranks = only(&ctx, i, r);
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
            for ranks in [masked(&ctx.net, 0..k, r), masked(&ctx.net, l - k..l, r)] {
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
    ctx.set_fit(1);
    let (corr_uniform, corr_lastk) = baselines(&mut ctx, false)?;
    let corr_planned = plan_rows(&mut ctx, PLANNER)?;
    ctx.set_fit(0);
    let rho = ctx.fits()[1].rho().unwrap_or(f64::NAN);
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
/// ranks 1, 3, 5 (Experiment 2's).
#[allow(clippy::type_complexity)]
fn baselines(ctx: &mut Ctx, all_k: bool) -> Res<(Vec<(usize, f64, f64)>, Vec<(usize, usize, f64, f64)>)> {
    let l = ctx.layers();
    let max_r =
        (1..=25).filter(|&r| ctx.net.convs.iter().any(|c| cost::is_beneficial(&c.shape(), r))).max().unwrap_or(1);
    let mut uniform = Vec::new();
    for r in 1..=max_r {
        let ranks = masked(&ctx.net, 0..l, r);
        let acc = ctx.acc(&ranks)?;
        uniform.push((r, ctx.reduction(&ranks), acc));
    }
    let mut lastk = Vec::new();
    for r in 1..=max_r {
        let mut ks: Vec<usize> = if all_k && [1, 3, 5].contains(&r) { (1..=l).collect() } else { Vec::new() };
        for &x in &TARGETS {
            if let Some(k) = (1..=l).find(|&k| ctx.reduction(&masked(&ctx.net, l - k..l, r)) >= x) {
                ks.push(k);
            }
        }
        ks.sort_unstable();
        ks.dedup();
        for k in ks {
            let ranks = masked(&ctx.net, l - k..l, r);
            let red = ctx.reduction(&ranks);
            let acc = ctx.acc(&ranks)?;
            lastk.push((k, r, red, acc));
        }
    }
    Ok((uniform, lastk))
}

/// The planner with `proxy` and the current fit at every target of `PLOT_TARGETS`, evaluated.
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
    rows.iter().find(|r| r.0 == x).expect("every comparison target is in PLOT_TARGETS")
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
    let mut search = Ctx::build(Net::load(stem)?, &data.stratified(per_class), ctx.fits())?;
    for (f, planned) in planned.iter().enumerate() {
        search.set_fit(f);
        ctx.set_fit(f);
        oracle_fit(&mut search, ctx, planned)?;
    }
    ctx.set_fit(0);
    Ok(())
}

/// [`oracle_report`] with the current fit of `search` and `ctx`.
fn oracle_fit(search: &mut Ctx, ctx: &mut Ctx, planned: &[Planned]) -> Res<()> {
    let t = Instant::now();
    let evaluations = search.evaluations;
    let until = TARGETS.iter().copied().fold(0.0, f64::max);
    let path = greedy(search, until)?;
    let fit = match ctx.fit().rho() {
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

/// Only conv `i` at rank `r`.
fn only(ctx: &Ctx, i: usize, r: usize) -> Vec<Option<usize>> {
    let mut v = vec![None; ctx.layers()];
    v[i] = Some(r);
    v
}

/// How well each data-free score orders Experiment 1's measured accuracy drops (Spearman).
fn proxy_check(ctx: &Ctx, exp1: &[(usize, usize, f64)], dense: f64) -> Res<()> {
    let drops: Vec<f64> = exp1.iter().map(|e| dense - e.2).collect();
    let (l, layers) = (ctx.layers(), ctx.net.plan_layers(dac::Fit::frobenius())?);
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
