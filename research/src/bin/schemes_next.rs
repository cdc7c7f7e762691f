//! The error a layer's factors make, seen by the layer that reads it: the default plans
//! (`--scheme auto`, every scheme fitted with `Fit::correlated(Fit::AUTO_RHO)`) with each
//! candidate's lost output energy `e` measured in the metric of the next layer's weights, all
//! data-free, on both shipped networks, all 10,000 test images.
//!
//! ```text
//! cargo run --release -p dac-research --bin schemes_next
//! ```
//!
//! For a candidate (scheme, rank) of layer `i`, `ΔW = W − Ŵ` is the difference between the dense
//! kernel and the composed kernel of the candidate's factor chain. With input channels
//! independent and the taps of one channel correlated as `R[a][b] = ρ^(|Δy|·dh + |Δx|·dw)`
//! (ρ = `Fit::AUTO_RHO`, the correlated-input model), the output error's channel covariance is
//! `ΔW R ΔWᵀ` and the signal's `W R Wᵀ`. The rows score `e` as
//!
//! - `white`: `tr(ΔW R ΔWᵀ) / tr(W R Wᵀ)`, every output channel alike (a check: its plans
//!   should be the planner's, whose `correlated_loss` is this quantity);
//! - `next`: `tr(G ΔW R ΔWᵀ) / tr(G W R Wᵀ)`, `G` the Gram matrix of the weights that read
//!   layer `i`'s output: the next convolution's `Σ_{n', taps} W'[n', a, t]·W'[n', b, t]`, or,
//!   for the last convolution, the first linear layer's `Σ_{o, position} L[o, (a, p)]·L[o, (b, p)]`.
//!   An error in a direction the next weights do not read is not counted (exact where no ReLU or
//!   pooling intervenes, which is nowhere here: a model of it).
//! - `head`: `white` for every layer but the last convolution, which is scored as in `next`.
//!
//! Each `e` then goes through the planner unchanged (`e/(1−e)`, DAC's bottleneck factor).

use dac::moments::lost_fractions;
use dac::plan::PlanLayer;
use dac::scheme::DenseKernel;
use dac::scheme::Factored;
use dac::{Conv2dWeights, Fit};
use dac_fmnist::rescore::{auto_schemes, each_factored, print_targets, rescored_layers, Factorings};
use dac_fmnist::{Net, Op, Res};
use rayon::prelude::*;

/// The taps' correlation `ρ^(|Δy|·dh + |Δx|·dw)`.
fn tap_correlation(layer: &Conv2dWeights<f32>, rho: f64) -> Vec<f64> {
    let s = layer.shape();
    let (dh, dw) = layer.geometry().dilation;
    let t = s.kh * s.kw;
    let mut r = vec![0.0; t * t];
    for a in 0..t {
        for b in 0..t {
            let dy = (a / s.kw).abs_diff(b / s.kw) * dh;
            let dx = (a % s.kw).abs_diff(b % s.kw) * dw;
            r[a * t + b] = rho.powi((dy + dx) as i32);
        }
    }
    r
}

/// `tr(G D R Dᵀ)` for `D` a `[n][c][t]` kernel (`G = None`: the identity).
fn seen(d: &DenseKernel, r: &[f64], g: Option<&[f64]>) -> f64 {
    let (n, c, t) = (d.out_channels, d.in_channels, d.taps());
    let row = c * t;
    // A = D (I ⊗ R), row by row.
    let mut a = vec![0.0; n * row];
    for (dst, src) in a.chunks_mut(t).zip(d.weight.chunks(t)) {
        for (k, v) in dst.iter_mut().enumerate() {
            *v = (0..t).map(|l| src[l] * r[l * t + k]).sum();
        }
    }
    let dot = |x: usize, y: usize| -> f64 {
        d.weight[x * row..][..row].iter().zip(&a[y * row..][..row]).map(|(p, q)| p * q).sum()
    };
    match g {
        None => (0..n).map(|x| dot(x, x)).sum(),
        Some(g) => (0..n)
            .into_par_iter()
            .map(|x| (0..n).filter(|&y| g[x * n + y] != 0.0).map(|y| g[x * n + y] * dot(x, y)).sum::<f64>())
            .sum(),
    }
}

/// The Gram matrix (over its outputs and positions) of the weights that read conv `i`'s output.
fn reader_gram(net: &Net, i: usize) -> Vec<f64> {
    let n = net.convs[i].shape().out_channels;
    let mut g = vec![0.0; n * n];
    let next = net.ops[net.conv_ops[i] + 1..].iter().find(|op| matches!(op, Op::Conv(_) | Op::Linear(_)));
    match next {
        Some(&Op::Conv(j)) => {
            let f = DenseKernel::of(&net.convs[j]);
            for o in 0..f.out_channels {
                let w = &f.weight[o * f.patch_len()..][..f.patch_len()];
                for a in 0..n {
                    for b in 0..n {
                        g[a * n + b] += (0..f.taps()).map(|t| w[a * f.taps() + t] * w[b * f.taps() + t]).sum::<f64>();
                    }
                }
            }
        }
        Some(&Op::Linear(j)) => {
            let l = &net.linears[j];
            let p = l.in_features / n;
            for o in 0..l.out_features {
                let w = &l.weight[o * l.in_features..][..l.in_features];
                for a in 0..n {
                    for b in 0..n {
                        g[a * n + b] += (0..p).map(|q| w[a * p + q] as f64 * w[b * p + q] as f64).sum::<f64>();
                    }
                }
            }
        }
        _ => (0..n).for_each(|a| g[a * n + a] = 1.0),
    }
    g
}

/// `e(rank)` of `f` in the metric `g` ([`lost_fractions`] with `tr(G D R Dᵀ)`).
fn loss_in(f: &dyn Factored<f32>, g: Option<&[f64]>) -> Res<Vec<f64>> {
    let r = tap_correlation(f.layer(), Fit::AUTO_RHO);
    Ok(lost_fractions(f, |d| seen(d, &r, g))?)
}

fn main() -> Res<()> {
    let auto = auto_schemes();
    each_factored(|net, ev, factored, options| {
        let grams: Vec<Vec<f64>> = (0..net.convs.len()).map(|i| reader_gram(net, i)).collect();
        let last = net.convs.len() - 1;
        let white = losses(factored, |_| None)?;
        let next = losses(factored, |i| Some(&grams[i]))?;
        let head = losses(factored, |i| (i == last).then(|| &grams[i][..]))?;
        print_layers(factored, &white, &next);
        let tables = [("planner", None), ("white", Some(&white)), ("next", Some(&next)), ("head", Some(&head))];
        for (name, table) in tables {
            print_targets(ev, &plan_layers(net, factored, table)?, options, &auto, name)?;
        }
        Ok(())
    })
}

/// Per layer, per scheme, `e` at every rank.
type Losses = Vec<Vec<Vec<f64>>>;

fn losses<'g>(factored: &[Factorings], gram: impl Fn(usize) -> Option<&'g [f64]>) -> Res<Losses> {
    factored.iter().enumerate().map(|(i, each)| each.iter().map(|f| loss_in(&**f, gram(i))).collect()).collect()
}

/// Per layer and scheme: the planner's `e` against `white` (should agree) and `next` at a few
/// ranks.
fn print_layers(factored: &[Factorings], white: &Losses, next: &Losses) {
    for (i, each) in factored.iter().enumerate() {
        for (k, f) in each.iter().enumerate() {
            let planner = f.correlated_loss();
            let top = white[i][k].iter().position(|&e| e == *white[i][k].last().unwrap_or(&0.0)).unwrap_or(1);
            let ranks = [top / 4, top / 2, 3 * top / 4].map(|r| r.max(1));
            let cells: Vec<String> = ranks
                .iter()
                .map(|&r| format!("r{r} {:.3}/{:.3}/{:.3}", planner[r], white[i][k][r], next[i][k][r]))
                .collect();
            println!("  {} {:<10} planner/white/next: {}", f.layer().name(), f.scheme().name(), cells.join("  "));
        }
    }
}

/// The planner's view of every layer, each scheme's `e` from `table` (`None`: the planner's own).
fn plan_layers(net: &Net, factored: &[Factorings], table: Option<&Losses>) -> Res<Vec<PlanLayer>> {
    rescored_layers(net, factored, |i, k, f| table.map_or_else(|| f.correlated_loss(), |t| t[i][k].clone()))
}
