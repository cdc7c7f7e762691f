//! The schemes oracle: what a plan of the default planner's kind (dense or a (scheme, rank) per
//! layer, every scheme fitted as `--scheme auto` fits it, `Fit::correlated(Fit::AUTO_RHO)`) can
//! keep when it may **measure** on data. **Not data-free**: a reference for issue #15's goal
//! table, not a competitor of the planner.
//!
//! ```text
//! cargo run --release -p dac-research --bin schemes_oracle                    # both networks
//! cargo run --release -p dac-research --bin schemes_oracle -- --per-class 100 --step 0.1 --model vgg
//! cargo run --release -p dac-research --bin schemes_oracle -- --synthetic 0.9   # generated images
//! ```
//!
//! A greedy search on *training* images (the first `--per-class` of each class of
//! `--train DIR`, default `/usr/share/datasets/fashion-mnist`, Debian's `dataset-fashion-mnist`):
//! from the dense network it repeatedly takes the one step that raises the search set's mean
//! cross-entropy the least per MAC saved. A step moves one layer, by any scheme, to that scheme's
//! largest rank whose MACs are at most `1 - step` of the layer's current MACs. Its plan at each
//! target (the first step reaching it; MACs counted as the planner counts them, every factor at
//! its real input size, the linear layers included) is then run on all 10,000 *test* images,
//! which the search never saw.
//!
//! With `--synthetic RHO` the search runs on `10 x --per-class` generated images instead
//! (correlated Gaussian fields, see `synthetic`) and measures the KL divergence from the dense
//! network's own outputs, the "search set" column then being the agreement with the dense
//! network's predictions: no data at all, so what such a measurement would give a data-free
//! planner.

use dac::plan::Proxy;
use dac::scheme::{Factored, SchemeKind, Workspace};
use dac::Fit;
use dac_fmnist::{argmax, batches, Chain, Dataset, Evaluator, Net, Res};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

const TARGETS: [f64; 3] = [1.5, 2.0, 3.0];
const BATCH: usize = 100;

struct Args {
    models: Vec<&'static str>,
    per_class: usize,
    step: f64,
    train: PathBuf,
    /// `--synthetic RHO`: search on generated images instead (see [`synthetic`]).
    synthetic: Option<f64>,
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        models: vec!["fmnist_vgg", "fmnist_alt"],
        per_class: 100,
        step: 0.1,
        train: PathBuf::from("/usr/share/datasets/fashion-mnist"),
        synthetic: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--per-class" => args.per_class = value()?.parse()?,
            "--step" => args.step = value()?.parse()?,
            "--train" => args.train = PathBuf::from(value()?),
            "--synthetic" => args.synthetic = Some(value()?.parse()?),
            "--model" => {
                args.models = match value()?.as_str() {
                    "vgg" => vec!["fmnist_vgg"],
                    "alt" => vec!["fmnist_alt"],
                    "both" => vec!["fmnist_vgg", "fmnist_alt"],
                    other => return Err(format!("--model {other}: vgg | alt | both").into()),
                }
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if !(args.step > 0.0 && args.step < 1.0) {
        return Err(format!("--step {}: must be in (0, 1)", args.step).into());
    }
    Ok(args)
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let root = dac_fmnist::repo_root();
    let test = Dataset::load_test(&root.join("data/fashion-mnist"))?;
    let (search, what) = match args.synthetic {
        Some(rho) => (synthetic(10 * args.per_class, rho)?, format!("generated images (rho {rho})")),
        None => (Dataset::load_split(&args.train, "train")?.stratified(args.per_class), "training images".into()),
    };
    println!(
        "schemes oracle: search on {} {what}, step {}, evaluation on {} test images",
        search.len(),
        args.step,
        test.len()
    );
    for stem in &args.models {
        let t = Instant::now();
        let synthetic = args.synthetic.is_some();
        study(Net::load(&root.join("models").join(stem))?, &search, &test, args.step, synthetic)?;
        println!("[{stem}: {:.1} s]", t.elapsed().as_secs_f64());
    }
    Ok(())
}

/// A layer's choice: `None` dense, else (index into [`SchemeKind::ALL`], rank).
type Choice = Option<(usize, usize)>;

/// Every layer factored by every scheme, with each (scheme, rank)'s MACs at the real input size.
struct Candidates<'a> {
    factored: Vec<Vec<Box<dyn Factored<f32> + 'a>>>,
    /// `macs[i][s][r - 1]`.
    macs: Vec<Vec<Vec<u64>>>,
    dense: Vec<u64>,
    chains: HashMap<(usize, usize, usize), Chain>,
}

impl<'a> Candidates<'a> {
    fn new(net: &'a Net, svd: &'a dac::svd::NalgebraSvd) -> Res<Self> {
        let fit = Fit::correlated(Fit::AUTO_RHO)?;
        let (mut factored, mut macs) = (Vec::new(), Vec::new());
        for (l, &hw) in net.convs.iter().zip(&net.conv_inputs) {
            let (shape, bias) = (l.shape(), l.bias().is_some());
            let mut by_scheme = Vec::new();
            let mut costs = Vec::new();
            for kind in SchemeKind::ALL {
                by_scheme.push(dac_fmnist::scheme_of(kind, fit, svd).factor(l)?);
                let per_rank = (1..=kind.max_rank(&shape))
                    .map(|r| Ok(kind.cost(l.name(), &shape, l.geometry(), bias, r, Some(hw))?.macs))
                    .collect::<Res<Vec<u64>>>()?;
                costs.push(per_rank);
            }
            factored.push(by_scheme);
            macs.push(costs);
        }
        let dense = (0..net.convs.len()).map(|i| net.conv_macs(i, None)).collect();
        Ok(Self { factored, macs, dense, chains: HashMap::new() })
    }

    fn layer_macs(&self, i: usize, c: Choice) -> u64 {
        c.map_or(self.dense[i], |(s, r)| self.macs[i][s][r - 1])
    }

    /// Layer `i`'s possible steps from `c`: per scheme, its largest rank at most `budget` MACs.
    fn steps(&self, i: usize, c: Choice, step: f64) -> Vec<(usize, usize)> {
        let budget = (self.layer_macs(i, c) as f64 * (1.0 - step)) as u64;
        (0..SchemeKind::ALL.len())
            .filter_map(|s| {
                let r = self.macs[i][s].iter().rposition(|&m| m <= budget)? + 1;
                Some((s, r))
            })
            .collect()
    }

    /// Computes layer `i`'s chain of scheme `s` at rank `r` unless it is held already.
    fn prepare(&mut self, i: usize, s: usize, r: usize) -> Res<()> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.chains.entry((i, s, r)) {
            let factors = self.factored[i][s].factors(r, &mut Workspace::new())?;
            e.insert(Chain(factors.into_iter().map(|f| f.conv).collect()));
        }
        Ok(())
    }
}

/// The search set's activations entering every convolution under the current plan.
struct Search {
    reference: Reference,
    /// `inputs[i][b]`.
    inputs: Vec<Vec<dac::exec::Tensor4<f32>>>,
}

/// What the search measures a plan against.
enum Reference {
    /// The true labels: mean cross-entropy, accuracy.
    Labels(Vec<u8>),
    /// The dense network's outputs (generated images have no labels): mean KL divergence from
    /// its softmax, agreement with its predictions. Per image, in order.
    Dense { log_probs: Vec<Vec<f64>>, preds: Vec<u8> },
}

impl Reference {
    /// The dense network's `logits` batches as a reference.
    fn dense(logits: &[dac::exec::Tensor4<f32>]) -> Self {
        let log_probs = logits.iter().flat_map(|l| l.as_slice().chunks(l.dims()[1]).map(log_softmax)).collect();
        Self::Dense { log_probs, preds: logits.iter().flat_map(argmax).collect() }
    }
}

/// `log softmax` of one row of logits.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// Mean loss and accuracy (or agreement, %) of `logits` batches against `reference`.
fn score(logits: &[dac::exec::Tensor4<f32>], reference: &Reference) -> (f64, f64) {
    let (mut loss, mut correct, mut n) = (0.0, 0, 0);
    let rows = logits.iter().flat_map(|l| l.as_slice().chunks(l.dims()[1]).zip(argmax(l)));
    for (k, (row, p)) in rows.enumerate() {
        let lp = log_softmax(row);
        let (term, truth) = match reference {
            Reference::Labels(labels) => (-lp[labels[k] as usize], labels[k]),
            Reference::Dense { log_probs, preds } => {
                (log_probs[k].iter().zip(&lp).map(|(a, b)| a.exp() * (a - b)).sum::<f64>(), preds[k])
            }
        };
        loss += term;
        correct += usize::from(p == truth);
        n += 1;
    }
    (loss / n as f64, 100.0 * correct as f64 / n as f64)
}

/// `n` generated 28x28 images, zero-padded to 32x32 as the networks' inputs are: a Gaussian
/// field whose neighbouring pixels correlate as `rho` per pixel of distance (separable AR(1),
/// the crate's correlated-input model), mapped to `0.5 + 0.25·g` and clipped to `[0, 1]`.
/// Seeded (splitmix64), so every run searches the same images.
fn synthetic(n: usize, rho: f64) -> Res<Dataset> {
    if !(0.0..1.0).contains(&rho) {
        return Err(format!("--synthetic {rho}: must be in [0, 1)").into());
    }
    let mut state = 0x5eed_u64;
    let mut uniform = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut normal = move || (-2.0 * (1.0 - uniform()).ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
    let c = (1.0 - rho * rho).sqrt();
    let mut images = vec![0f32; n * 1024];
    for img in images.chunks_mut(1024) {
        let mut g = [[0f64; 28]; 28];
        for row in g.iter_mut() {
            row[0] = normal();
            for x in 1..28 {
                row[x] = rho * row[x - 1] + c * normal();
            }
        }
        for y in 1..28 {
            let (above, below) = g.split_at_mut(y);
            for (v, a) in below[0].iter_mut().zip(&above[y - 1]) {
                *v = rho * a + c * *v;
            }
        }
        for (y, row) in g.iter().enumerate() {
            for (x, v) in row.iter().enumerate() {
                img[(y + 2) * 32 + x + 2] = (0.5 + 0.25 * v).clamp(0.0, 1.0) as f32;
            }
        }
    }
    Ok(Dataset { images, labels: vec![0; n], index: (0..n).collect() })
}

impl Search {
    /// `synthetic`: measure against the dense network's outputs, not the labels.
    fn new(net: &Net, data: &Dataset, synthetic: bool) -> Res<Self> {
        let first = batches(data, BATCH)?
            .into_par_iter()
            .map(|x| net.run_range(x, 0, net.conv_ops[0], dac_fmnist::DENSE))
            .collect::<Res<_>>()?;
        let mut s = Self { reference: Reference::Labels(data.labels.clone()), inputs: vec![first] };
        s.inputs.resize(net.convs.len(), Vec::new());
        s.refresh(net, 0, &[])?;
        if synthetic {
            let logits: Vec<_> = s.inputs[0]
                .par_iter()
                .map(|x| net.run_from_ref(x, net.conv_ops[0], dac_fmnist::DENSE))
                .collect::<Res<_>>()?;
            s.reference = Reference::dense(&logits);
        }
        Ok(s)
    }

    /// Recomputes the inputs of convolutions `from + 1..` under `chains`, from conv `from`'s.
    fn refresh(&mut self, net: &Net, from: usize, chains: &[Option<&Chain>]) -> Res<()> {
        for k in from + 1..net.convs.len() {
            let (a, b) = (net.conv_ops[k - 1], net.conv_ops[k]);
            let next = self.inputs[k - 1].par_iter().map(|x| net.run_range_ref(x, a, b, chains)).collect::<Res<_>>()?;
            self.inputs[k] = next;
        }
        Ok(())
    }

    /// (mean loss, accuracy or agreement %) against the reference (see [`Reference`]) with
    /// `chains`, run from conv `i`'s current input.
    fn eval(&self, net: &Net, i: usize, chains: &[Option<&Chain>]) -> Res<(f64, f64)> {
        let logits: Vec<_> =
            self.inputs[i].par_iter().map(|x| net.run_from_ref(x, net.conv_ops[i], chains)).collect::<Res<_>>()?;
        Ok(score(&logits, &self.reference))
    }
}

fn refs<'c>(cand: &'c Candidates, plan: &[Choice]) -> Vec<Option<&'c Chain>> {
    plan.iter().enumerate().map(|(i, c)| c.map(|(s, r)| &cand.chains[&(i, s, r)])).collect()
}

/// One candidate step of the greedy search: layer `layer` to `choice`.
struct Step {
    /// Loss added per MAC saved.
    per_mac: f64,
    layer: usize,
    choice: (usize, usize),
    loss: f64,
    saved: u64,
}

/// The greedy path: every plan it passes through with its total MACs, dense first.
fn greedy(
    net: &Net,
    cand: &mut Candidates,
    search: &mut Search,
    step: f64,
    until: f64,
) -> Res<Vec<(Vec<Choice>, u64)>> {
    let total_dense = net.cost(&[]).macs;
    let mut plan: Vec<Choice> = vec![None; net.convs.len()];
    let (mut total, mut evals) = (total_dense, 0usize);
    let (mut loss, _) = search.eval(net, 0, &refs(cand, &plan))?;
    let mut path = vec![(plan.clone(), total)];
    while (total_dense as f64) < until * total as f64 {
        let mut best: Option<Step> = None;
        for i in 0..plan.len() {
            for (s, r) in cand.steps(i, plan[i], step) {
                cand.prepare(i, s, r)?;
                let mut trial = plan.clone();
                trial[i] = Some((s, r));
                let saved = cand.layer_macs(i, plan[i]) - cand.layer_macs(i, trial[i]);
                let (l, _) = search.eval(net, i, &refs(cand, &trial))?;
                evals += 1;
                let per_mac = (l - loss) / saved as f64;
                if best.as_ref().is_none_or(|b| per_mac < b.per_mac) {
                    best = Some(Step { per_mac, layer: i, choice: (s, r), loss: l, saved });
                }
            }
        }
        let Some(Step { layer: i, choice, loss: l, saved, .. }) = best else { break };
        plan[i] = Some(choice);
        (loss, total) = (l, total - saved);
        search.refresh(net, i, &refs(cand, &plan))?;
        eprintln!("step {}: {:.3}x, loss {loss:.4}, {}", path.len(), total_dense as f64 / total as f64, summary(&plan));
        path.push((plan.clone(), total));
    }
    println!("[search: {} steps, {evals} evaluations]", path.len() - 1);
    Ok(path)
}

fn study(net: Net, search: &Dataset, test: &Dataset, step: f64, synthetic: bool) -> Res<()> {
    let mut s = Search::new(&net, search, synthetic)?;
    print_correlations(&net, &s);
    let svd = dac::svd::NalgebraSvd::default();
    let mut cand = Candidates::new(&net, &svd)?;
    let until = TARGETS.iter().copied().fold(0.0, f64::max);
    let path = greedy(&net, &mut cand, &mut s, step, until)?;
    let ev = Evaluator::build(net.clone(), test, &[Fit::frobenius()])?;
    let dense = ev.pct(ev.correct_chains(&[])?);
    println!("\n== {} (dense {dense:.2} % on the test images)", net.name);
    println!("{:>6} {:>8} {:>12} {:>14}  plan", "target", "reached", "search set", "test accuracy");
    let total_dense = net.cost(&[]).macs as f64;
    let mut chosen = Vec::new();
    for x in TARGETS {
        let Some((plan, total)) = path.iter().find(|(_, t)| total_dense >= x * *t as f64) else {
            println!("{x:>6} the search did not reach this target");
            continue;
        };
        let chains = refs(&cand, plan);
        s.refresh(&net, 0, &chains)?;
        let (_, search_acc) = s.eval(&net, 0, &chains)?;
        let acc = ev.pct(ev.correct_chains(&chains)?);
        let reached = total_dense / *total as f64;
        println!("{x:>6} {reached:>7.2}x {search_acc:>11.2}% {acc:>13.2}%  {}", summary(plan));
        chosen.push((x, plan.clone()));
    }
    for (x, plan) in chosen {
        against_planner(&ev, &cand, x, &plan)?;
    }
    Ok(())
}

/// Prints the data-free planner's plan for `x` (depth weight 0, the planner the search was
/// compared with before `AUTO_DEPTH_WEIGHT`) beside the search's `plan`, with each layer's lost
/// output energy `e` (the planner's measure, `correlated_loss`) under both.
fn against_planner(ev: &Evaluator, cand: &Candidates, x: f64, plan: &[Choice]) -> Res<()> {
    let fit = Fit::correlated(Fit::AUTO_RHO)?;
    let auto: Vec<(SchemeKind, Fit)> = SchemeKind::ALL.iter().map(|&k| (k, fit)).collect();
    let (planned, acc) = ev.plan_schemes(x, Proxy::Spatial, &auto, Some(0.0))?;
    let index = |k: SchemeKind| SchemeKind::ALL.iter().position(|&a| a == k).expect("a scheme");
    let data_free: Vec<Choice> = planned
        .layers
        .iter()
        .map(|l| match (l.scheme, l.rank) {
            (Some(k), Some(r)) => Some((index(k), r)),
            _ => None,
        })
        .collect();
    println!("\n{x}x: the data-free planner ({acc:.2} %, {:.2}x) against the search, per layer:", planned.reduction());
    println!("  {:<12} {:>8} {:>7} {:>8} {:>7}", "layer", "planner", "e", "search", "e");
    let lost = |i: usize, c: Choice| c.map_or(0.0, |(s, r)| cand.factored[i][s].correlated_loss()[r]);
    for (i, (p, o)) in data_free.iter().zip(plan).enumerate() {
        let name = ev.net.convs[i].name();
        let (sp, so) = (summary(&[*p]), summary(&[*o]));
        println!("  {name:<12} {sp:>8} {:>7.3} {so:>8} {:>7.3}", lost(i, *p), lost(i, *o));
    }
    Ok(())
}

/// A plan as the schemes study prints it (`-` dense, else the scheme's letter and the rank).
fn summary(plan: &[Choice]) -> String {
    let each: Vec<String> = plan
        .iter()
        .map(|c| c.map_or("-".to_string(), |(s, r)| format!("{}{r}", dac_fmnist::scheme_letter(SchemeKind::ALL[s]))))
        .collect();
    each.join(" ")
}

/// Prints each convolution's input's measured neighbour correlation on the search set (the
/// dense network's activations): `E[x(h,w)·x(h,w+1)] / E[x²]` and the same vertically,
/// uncentred, the second moment an output error's energy depends on. What the data-free
/// correlated-input model assumes is one ρ per pixel of distance for every layer.
fn print_correlations(net: &Net, dense: &Search) {
    println!("\n{} inputs, measured neighbour correlation (horizontal, vertical):", net.name);
    for (i, batches) in dense.inputs.iter().enumerate() {
        let [_, c, h, w] = batches[0].dims();
        let planes = batches.iter().flat_map(|b| b.as_slice().chunks(h * w));
        let [xx, right, down] = planes.fold([0.0; 3], |acc, p| {
            let s = neighbour_sums(p, w);
            [acc[0] + s[0], acc[1] + s[1], acc[2] + s[2]]
        });
        let planes = batches.iter().map(|b| b.dims()[0] * c).sum::<usize>() as f64;
        let m = xx / (planes * (h * w) as f64);
        let rh = right / (planes * (h * (w - 1)).max(1) as f64) / m;
        let rv = down / (planes * ((h - 1) * w).max(1) as f64) / m;
        println!("  {:<10} {c:>4} x {h:>2}x{w:<2}  {rh:.3}  {rv:.3}", net.convs[i].name());
    }
}

/// Over one `? x w` plane: the sums of `x²`, of `x(h,w)·x(h,w+1)` and of `x(h,w)·x(h+1,w)`.
fn neighbour_sums(plane: &[f32], w: usize) -> [f64; 3] {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
    let rows: Vec<&[f32]> = plane.chunks(w).collect();
    let right = rows.iter().map(|r| dot(r, &r[1..])).sum();
    let down = rows.windows(2).map(|p| dot(p[0], p[1])).sum();
    [dot(plane, plane), right, down]
}
