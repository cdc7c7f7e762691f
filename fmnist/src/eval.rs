//! Accuracy of rank assignments on a fixed image set, computed from cached dense activations.

use crate::{argmax, batches, Dataset, Net, Pair, Res};
use dac::exec::Tensor4;
use dac::plan::{Plan, PlanOptions, Proxy, Target};
use dac::svd::NalgebraSvd;
use dac::{cost, Factorization, Fit, Options, Spectrum};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A rank per convolution, forward order; `None` = dense.
pub type Ranks = Vec<Option<usize>>;

/// Images per batch (batches run in parallel). The recorded experiments used 100: the executor
/// multiplies the images of a batch together on small feature maps, so keep it.
const BATCH: usize = 100;

/// A network, an image set, the dense activations entering every convolution, and every
/// rank's depthwise + pointwise pair for each fit.
///
/// A rank assignment that decomposes conv `i` first runs from the cached dense input of conv `i`
/// (everything before it is the dense network's), and its correct count is memoised.
pub struct Evaluator {
    /// The network.
    pub net: Net,
    /// Labels of the images, in order.
    pub labels: Vec<u8>,
    /// The dense network's prediction for every image.
    pub dense_preds: Vec<u8>,
    /// `cache[i][b]`: dense input of conv `i`, batch `b`.
    cache: Cache,
    /// The fits the pairs were computed with.
    fits: Vec<Fit>,
    /// Index in `fits` of the fit [`correct`](Self::correct) and [`plan`](Self::plan) use.
    fit: usize,
    /// `pairs[f][i][r - 1]`: conv `i` at rank `r` with fit `fits[f]`.
    pairs: Vec<Vec<Vec<Pair>>>,
    /// The Frobenius spectra, if the Frobenius fit is among the fits.
    pub spectra: Vec<Spectrum>,
    /// Whole-network MACs of the dense network.
    pub dense_macs: u64,
    memo: HashMap<(usize, Ranks), usize>,
    /// Forward evaluations run so far (memo hits not counted).
    pub evaluations: usize,
    /// Multiply-accumulates run so far over all images (convolutions and linear layers,
    /// counted as `dac::cost` counts them; the dense pass included).
    macs: AtomicU64,
}

impl Evaluator {
    /// Runs the dense network on `data` once, keeping the input of every convolution, and
    /// computes every rank's pair for each of `fits` (the first is the current fit).
    pub fn build(net: Net, data: &Dataset, fits: &[Fit]) -> Res<Self> {
        if fits.is_empty() {
            return Err("no fit given".into());
        }
        let (cache, dense_preds) = dense_pass(&net, &batches(data, BATCH)?)?;
        let svd = NalgebraSvd::default();
        let (mut pairs, mut spectra) = (Vec::new(), Vec::new());
        for &fit in fits {
            let mut by_layer = Vec::new();
            for l in &net.convs {
                let f = Factorization::compute_fitted(l, &svd, fit)?;
                let by_rank = (1..=l.shape().max_rank())
                    .map(|r| {
                        let d = f.truncate(&Options::new(r))?;
                        Ok(Pair { depthwise: d.depthwise, pointwise: d.pointwise })
                    })
                    .collect::<Res<Vec<_>>>()?;
                by_layer.push(by_rank);
                if fit == Fit::frobenius() {
                    spectra.push(f.spectrum());
                }
            }
            pairs.push(by_layer);
        }
        let dense_macs = net.cost(&[]).macs;
        let macs = AtomicU64::new(dense_macs * data.len() as u64);
        let dense_correct = dense_preds.iter().zip(&data.labels).filter(|(p, l)| p == l).count();
        let dense = vec![None; net.convs.len()];
        let memo = (0..fits.len()).map(|f| ((f, dense.clone()), dense_correct)).collect();
        Ok(Self {
            net,
            labels: data.labels.clone(),
            dense_preds,
            cache,
            fits: fits.to_vec(),
            fit: 0,
            pairs,
            spectra,
            dense_macs,
            memo,
            evaluations: 0,
            macs,
        })
    }

    /// The fits the evaluator holds pairs for.
    pub fn fits(&self) -> &[Fit] {
        &self.fits
    }
    /// The current fit.
    pub fn fit(&self) -> Fit {
        self.fits[self.fit]
    }
    /// Makes `fits()[index]` the current fit.
    pub fn set_fit(&mut self, index: usize) {
        assert!(index < self.fits.len(), "fit {index} of {}", self.fits.len());
        self.fit = index;
    }
    /// Number of convolutions.
    pub fn layers(&self) -> usize {
        self.net.convs.len()
    }
    /// Number of images.
    pub fn n(&self) -> usize {
        self.labels.len()
    }
    /// `correct` as a percentage of the images.
    pub fn pct(&self, correct: usize) -> f64 {
        100.0 * correct as f64 / self.n() as f64
    }
    /// Accuracy (%) of a rank assignment with the current fit.
    pub fn acc(&mut self, ranks: &[Option<usize>]) -> Res<f64> {
        let c = self.correct(ranks)?;
        Ok(self.pct(c))
    }
    /// Multiply-accumulates run so far over all images (the dense pass included).
    pub fn macs_run(&self) -> u64 {
        self.macs.load(Ordering::Relaxed)
    }
    fn count(&self, per_image: u64) {
        self.macs.fetch_add(per_image * self.n() as u64, Ordering::Relaxed);
    }

    /// Whole-network MAC reduction of a rank assignment.
    pub fn reduction(&self, ranks: &[Option<usize>]) -> f64 {
        self.dense_macs as f64 / self.net.cost(ranks).macs as f64
    }

    fn pairs_of(&self, ranks: &[Option<usize>]) -> Vec<Option<&Pair>> {
        ranks.iter().enumerate().map(|(i, r)| r.map(|r| &self.pairs[self.fit][i][r - 1])).collect()
    }

    /// Correct count with conv `i` at `ranks[i]`, run from the cached dense input of the first
    /// decomposed convolution; memoised.
    pub fn correct(&mut self, ranks: &[Option<usize>]) -> Res<usize> {
        if let Some(&c) = self.memo.get(&(self.fit, ranks.to_vec())) {
            return Ok(c);
        }
        let first = ranks.iter().position(Option::is_some).unwrap_or(0);
        let pairs = self.pairs_of(ranks);
        let (c, _) = crate::evaluate(&self.net, &self.cache[first], self.net.conv_ops[first], &pairs, &self.labels)?;
        self.count(self.net.macs_from(ranks, first));
        self.evaluations += 1;
        self.memo.insert((self.fit, ranks.to_vec()), c);
        Ok(c)
    }

    /// Correct count with conv `i` replaced by `chains[i]` (any scheme's factors), run from the
    /// cached dense input of the first replaced convolution; not memoised.
    pub fn correct_chains(&self, chains: &[Option<&crate::Chain>]) -> Res<usize> {
        let first = chains.iter().position(Option::is_some).unwrap_or(0);
        let (c, _) = crate::evaluate(&self.net, &self.cache[first], self.net.conv_ops[first], chains, &self.labels)?;
        self.count(self.net.macs_from_with(first, |i| match chains.get(i).copied().flatten() {
            Some(chain) => self.net.chain_macs(i, chain),
            None => self.net.conv_macs(i, None),
        }));
        Ok(c)
    }

    /// The planner choosing a (scheme, rank) or dense per layer among `schemes` (each with its
    /// fit) for a `target` whole-network MAC reduction with `proxy` (weights only) and `depth`
    /// weight (`None`: the converter's default, `dac::plan::default_depth_weight`), and the
    /// accuracy (%) of its plan, every chosen layer run as its chain of factors.
    pub fn plan_schemes(
        &self,
        target: f64,
        proxy: Proxy,
        schemes: &[(dac::scheme::SchemeKind, Fit)],
        depth: Option<f64>,
    ) -> Res<(Plan, f64)> {
        let layers = self.net.plan_layers_with(schemes)?;
        let depth = depth.unwrap_or_else(|| dac::plan::default_depth_weight(&layers));
        let options = PlanOptions::default().fixed(self.net.fixed_cost()).proxy(proxy).depth_weight(depth);
        let plan = dac::plan(&layers, &Target::MacReduction(target), &options)?;
        let accuracy = self.plan_accuracy(&plan, schemes)?;
        Ok((plan, accuracy))
    }

    /// The accuracy (%) of `plan`, every chosen layer run as its chain of factors (each scheme
    /// with its fit in `schemes`).
    pub fn plan_accuracy(&self, plan: &Plan, schemes: &[(dac::scheme::SchemeKind, Fit)]) -> Res<f64> {
        let fit_of = |k| schemes.iter().find(|(s, _)| *s == k).map(|(_, f)| *f).expect("a planned scheme");
        let chains: Vec<Option<crate::Chain>> = plan
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| match (l.scheme, l.rank) {
                (Some(k), Some(r)) => self.net.chain(i, k, fit_of(k), r).map(Some),
                _ => Ok(None),
            })
            .collect::<dac::Result<_>>()?;
        let refs: Vec<Option<&crate::Chain>> = chains.iter().map(Option::as_ref).collect();
        Ok(self.pct(self.correct_chains(&refs)?))
    }

    /// Evaluates the "first k layers at `rank`" assignments ([`masked`] over `0..k`) for
    /// k = 1..=L, sharing the work: the activations entering conv `k` with convs `0..k`
    /// decomposed are carried from one k to the next, so each k runs only from conv `k - 1`
    /// on, once. The counts go into the memo that [`acc`](Self::acc) reads.
    pub fn first_k_chain(&mut self, rank: usize) -> Res<()> {
        let mut carried: Option<Vec<Tensor4<f32>>> = None;
        for k in 1..=self.layers() {
            let ranks = masked(&self.net, 0..k, rank);
            let known = self.memo.contains_key(&(self.fit, ranks.clone()));
            let pairs = self.pairs_of(&ranks);
            let (from, to) =
                (self.net.conv_ops[k - 1], self.net.conv_ops.get(k).copied().unwrap_or(self.net.ops.len()));
            let input = carried.as_deref().unwrap_or(&self.cache[0]);
            // Per batch: the input of conv k (or the logits after the last conv) and, unless
            // memoised, the predictions.
            let out: Vec<(Tensor4<f32>, Vec<u8>)> = input
                .par_iter()
                .map(|b| -> Res<_> {
                    let y = self.net.run_range_ref(b, from, to, &pairs)?;
                    let preds = if known { Vec::new() } else { argmax(&self.net.run_from_ref(&y, to, &pairs)?) };
                    Ok((y, preds))
                })
                .collect::<Res<_>>()?;
            let rest = if known { 0 } else { self.net.macs_from(&ranks, k) };
            self.count(self.net.conv_macs(k - 1, ranks[k - 1]) + rest);
            if !known {
                let preds = out.iter().flat_map(|(_, p)| p);
                let correct = preds.zip(&self.labels).filter(|(p, l)| p == l).count();
                self.evaluations += 1;
                self.memo.insert((self.fit, ranks), correct);
            }
            carried = Some(out.into_iter().map(|(y, _)| y).collect());
        }
        Ok(())
    }

    /// The planner's plan for `target` whole-network MAC reduction with `proxy` and the current
    /// fit: `dac::plan` over [`Net::plan_layers`] (weights only).
    pub fn plan(&self, target: f64, proxy: Proxy) -> Res<Plan> {
        let layers = self.net.plan_layers(self.fit())?;
        let options = PlanOptions::default().fixed(self.net.fixed_cost()).proxy(proxy);
        Ok(dac::plan(&layers, &Target::MacReduction(target), &options)?)
    }
}

/// Rank `r` on the given convolutions where it is below their break-even rank, dense elsewhere.
pub fn masked(net: &Net, layers: std::ops::Range<usize>, r: usize) -> Ranks {
    (0..net.convs.len())
        .map(|i| (layers.contains(&i) && cost::is_beneficial(&net.convs[i].shape(), r)).then_some(r))
        .collect()
}

/// Activations per convolution and batch: `[conv][batch]`.
type Cache = Vec<Vec<Tensor4<f32>>>;

/// The dense inputs of every convolution and the dense predictions, in one pass over the
/// batches.
fn dense_pass(net: &Net, batches: &[Tensor4<f32>]) -> Res<(Cache, Vec<u8>)> {
    let per_batch: Vec<(Vec<Tensor4<f32>>, Vec<u8>)> = batches
        .par_iter()
        .map(|b| -> Res<_> {
            let mut inputs = Vec::with_capacity(net.convs.len());
            let mut x = b.clone();
            let mut from = 0;
            for &k in &net.conv_ops {
                x = net.run_range(x, from, k, crate::DENSE)?;
                inputs.push(x.clone());
                from = k;
            }
            let logits = net.run_range(x, from, net.ops.len(), crate::DENSE)?;
            Ok((inputs, argmax(&logits)))
        })
        .collect::<Res<_>>()?;
    let mut cache: Cache = (0..net.convs.len()).map(|_| Vec::new()).collect();
    let mut preds = Vec::new();
    for (inputs, p) in per_batch {
        for (i, t) in inputs.into_iter().enumerate() {
            cache[i].push(t);
        }
        preds.extend(p);
    }
    Ok((cache, preds))
}
