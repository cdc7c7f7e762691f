//! The measured search (`dac::runtime::search`) against runtimes whose speed-ups are known
//! functions of the modeled target asked for: it stops at a measured target, keeps the plan
//! with the least modeled reduction that measured fast enough, says when none did, and claims
//! the kept plan's second timing.
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::{ConvertOptions, Summary};
use dac::io::onnx::rewrite_model;
use dac::runtime::{search, Measured, Rewrite, Runtime, AIM, MAX_TRIES};
use proptest::prelude::*;
use std::time::Duration;

/// A runtime whose rewrite of modeled target `g` (the 8 bytes of the fake model) runs
/// `realize(g)` times faster than the original's 10 ms (called once per timing).
struct Fake<F: FnMut(f64) -> f64> {
    realize: F,
    calls: usize,
}

impl<F: FnMut(f64) -> f64> Runtime for Fake<F> {
    fn describe(&self) -> String {
        "fake".into()
    }
    fn time_pair(&mut self, before: &[u8], after: &[u8]) -> dac::Result<(Duration, Duration)> {
        assert_eq!(before, b"original");
        self.calls += 1;
        let goal = f64::from_le_bytes(after.try_into().unwrap());
        let base = Duration::from_millis(10);
        Ok((base, base.div_f64((self.realize)(goal))))
    }
}

/// Two 3x3 convolutions of 16 channels on 16x16.
fn net() -> Vec<u8> {
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[16, 3, 3, 3], &values(1, 16 * 27)));
    g.inits.push(tensor("b.weight", &[16, 16, 3, 3], &values(2, 16 * 16 * 9)));
    let pads = || vec![attr_ints("pads", &[1, 1, 1, 1])];
    g.nodes.push(node("Conv", "a", &["input", "a.weight"], &["ya"], &pads(), &[]));
    g.nodes.push(node("Conv", "b", &["ya", "b.weight"], &["y"], &pads(), &[]));
    g.inputs.push(value_info("input", &[Some(1), Some(3), Some(16), Some(16)]));
    g.outputs.push(value_info("y", &[Some(1), Some(16), Some(16), Some(16)]));
    model(&g, 13, &[])
}

/// A real report whose plan met its target (`true`) or could not (`false`).
fn summary(reachable: bool) -> Summary {
    let options =
        if reachable { ConvertOptions::macs(1.2).allow_slower(true) } else { ConvertOptions::speedup(1000.0) };
    let (_, s) = rewrite_model(&net(), &options).unwrap();
    assert_eq!(s.plan.as_ref().unwrap().met, reachable);
    s
}

/// Runs the search with `realize`; every rewrite reports `reachable`.
fn run(target: Option<f64>, reachable: bool, realize: impl FnMut(f64) -> f64) -> (Rewrite, Measured, Vec<Option<f64>>) {
    let s = summary(reachable);
    let mut fake = Fake { realize, calls: 0 };
    let mut asked = Vec::new();
    let (r, m) = search(target, b"original", &mut fake, |goal| {
        asked.push(goal);
        Ok(Rewrite { bytes: goal.unwrap_or(1.0).to_le_bytes().to_vec(), summary: s.clone() })
    })
    .unwrap();
    // With a target, the kept plan is timed once more (and not planned again); so is each plan
    // kept before it whose second timing fell short.
    assert_eq!(m.chosen().again.is_some(), target.is_some());
    let again = m.tries.iter().filter(|t| t.again.is_some()).count();
    assert_eq!(fake.calls, m.tries.len() + again);
    assert_eq!(asked.len(), m.tries.len());
    if m.original {
        // Slower than the original: the original is returned, with nothing converted.
        assert!(target.is_some() && m.speedup() < 1.0, "{:?}", m.tries);
        assert_eq!(r.bytes, b"original");
        assert!(r.summary.converted.is_empty() && r.summary.plan.is_none());
    } else {
        assert!(target.is_none() || m.speedup() >= 1.0, "{:?}", m.tries);
        assert_eq!(goal_of(&r), m.chosen().modeled_target.unwrap_or(1.0));
    }
    (r, m, asked)
}

fn goal_of(r: &Rewrite) -> f64 {
    f64::from_le_bytes(r.bytes.as_slice().try_into().unwrap())
}

#[test]
fn an_optimistic_model_is_corrected_upwards() {
    // The runtime realises 85 % of every modeled speed-up (and a hair more, so that the
    // proportional step does not land exactly on the aim): 2x, aimed at 2.04x, needs a modeled
    // 2.04/0.85.
    assert_eq!(AIM, 1.02);
    let (r, m, asked) = run(Some(2.0), true, |g| 0.85 * g + 1e-4);
    assert_eq!(asked[0], Some(2.04));
    assert!((m.tries[0].speedup() - 1.7341).abs() < 1e-6);
    assert_eq!(m.met(), Some(true));
    assert!(m.speedup() >= 2.04 - 1e-9 && m.speedup() < 2.04 * 1.03, "{}", m.speedup());
    assert!((goal_of(&r) - 2.04 / 0.85).abs() < 2e-3, "{}", goal_of(&r));
    assert_eq!(m.chosen().modeled_target, Some(goal_of(&r)));
}

#[test]
fn gains_that_flatten_are_reached_by_the_secant() {
    // Measured speed-ups that grow at 0.28 per unit of modeled speed-up (as mnasnet1_0's did
    // at 2x on the Intel machine): proportional steps alone crawl (2.00, 2.18, 2.34, ... all
    // below 2x after 5 plans); the secant through the first two reaches 2x at the third.
    let (_, m, _) = run(Some(2.0), true, |g| 1.832 + 0.28 * (g - 2.0));
    assert_eq!(m.met(), Some(true), "{:?}", m.tries);
    assert_eq!(m.tries.len(), 3, "{:?}", m.tries);
}

#[test]
fn a_pessimistic_model_is_corrected_downwards_to_the_least_reduction() {
    // The runtime realises 125 %: the first plan over-shoots, a plan for a modeled 2.04/1.25x
    // suffices.
    let (r, m, _) = run(Some(2.0), true, |g| 1.25 * g + 1e-4);
    assert_eq!(m.tries.len(), 2);
    assert_eq!(m.met(), Some(true));
    assert!((goal_of(&r) - 1.632).abs() < 1e-9, "{}", goal_of(&r));
    assert_eq!(m.chosen, 1);
}

#[test]
fn a_target_the_runtime_cannot_reach_is_reported_with_the_fastest_plan() {
    // No plan runs more than 1.5x faster, however much the model promises.
    let (r, m, asked) = run(Some(2.0), true, |g| (0.85 * g).min(1.5) - 1e-3 * g);
    assert_eq!(m.met(), Some(false));
    assert_eq!(m.tries.len(), MAX_TRIES);
    let fastest = m.tries.iter().map(|t| t.speedup()).fold(0.0, f64::max);
    assert_eq!(m.speedup(), fastest);
    assert_eq!(Some(goal_of(&r)), asked[m.chosen]);
    // Each retry asks for more than every plan that measured too slow.
    assert!(asked.windows(2).all(|w| w[1] > w[0]), "{asked:?}");
}

#[test]
fn a_plan_the_planner_cannot_reach_ends_the_search() {
    let (_, m, _) = run(Some(2.0), false, |g| 0.5 * g);
    assert_eq!(m.tries.len(), 1);
    assert_eq!(m.met(), Some(false));
    assert!(!m.tries[0].reachable);
}

#[test]
fn without_a_time_target_the_one_plan_is_only_timed() {
    let (_, m, asked) = run(None, true, |_| 1.3);
    assert_eq!(asked, vec![None]);
    assert_eq!(m.met(), None);
    assert!((m.speedup() - 1.3).abs() < 1e-6);
    assert_eq!(m.to_json()["tries"].as_array().unwrap().len(), 1);
}

#[test]
fn a_lucky_first_timing_is_caught_by_the_second_and_the_search_goes_on() {
    // The runtime realises 98 % of the modeled speed-up, but times the first pair 5 % fast:
    // the first plan (2.04x modeled) measures 2.10x, within 3 % above the aim of 2.04x. Timed
    // again it runs 2.00x minus a hair, below 2x: the search goes on from there and keeps the
    // next plan, whose second timing holds.
    let mut n = 0;
    let (_, m, asked) = run(Some(2.0), true, move |g| {
        n += 1;
        0.98 * g * if n == 1 { 1.05 } else { 1.0 }
    });
    assert_eq!(asked.len(), 2, "{:?}", m.tries);
    assert!(m.tries[0].speedup() >= 2.04 && m.tries[0].speedup_again().unwrap() < 2.0, "{:?}", m.tries);
    assert_eq!(m.chosen, 1);
    assert_eq!(m.met(), Some(true));
    assert_eq!(Some(m.speedup()), m.tries[1].speedup_again());
}

#[test]
fn the_claim_is_the_kept_plans_second_timing() {
    // The first timing is lucky (2.08x, within 3 % above the aim: the search stops); timed again
    // the plan runs 1.95x, and the planner cannot reach a higher modeled target: 1.95x is the
    // claim and 2x is not met.
    let mut n = 0;
    let (_, m, _) = run(Some(2.0), false, move |_| {
        n += 1;
        if n == 1 {
            2.08
        } else {
            1.95
        }
    });
    assert_eq!(m.tries.len(), 1);
    assert!((m.chosen().speedup() - 2.08).abs() < 1e-6);
    assert!((m.speedup() - 1.95).abs() < 1e-6, "{}", m.speedup());
    assert_eq!(m.met(), Some(false));
    let json = m.to_json();
    assert!((json["speedup"].as_f64().unwrap() - 1.95).abs() < 1e-6);
    assert!((json["tries"][0]["again"]["speedup"].as_f64().unwrap() - 1.95).abs() < 1e-6);
    assert_eq!(json["met"], false);
}

#[test]
fn a_rewrite_slower_than_the_original_is_not_returned() {
    // Every plan runs at 0.8x the original's speed, however much the model promises: the
    // original comes back unchanged, its report that of the dense network.
    let (r, m, _) = run(Some(1.5), true, |_| 0.8);
    assert!(m.original);
    assert_eq!(m.met(), Some(false));
    assert!((m.speedup() - 0.8).abs() < 1e-6);
    assert_eq!(r.summary.speedup(), Some(1.0));
    assert_eq!(r.summary.reduction(), Some(1.0));
    let dense = summary(true);
    assert!(!dense.converted.is_empty());
    assert_eq!(r.summary.macs_before(), dense.macs_before());
    assert_eq!(r.summary.time_before(), dense.time_before());
    assert_eq!(r.summary.skipped.len(), dense.skipped.len() + dense.converted.len());
    assert!(r.summary.skipped.iter().any(|s| s.reason == dac::convert::SkipReason::MeasuredSlower));
    assert!(r.summary.removed.is_empty());
    assert_eq!(m.to_json()["wrote_original"], true);
}

#[test]
fn without_a_target_a_slower_plan_is_still_the_one_asked_for() {
    let (r, m, _) = run(None, true, |_| 0.8);
    assert!(!m.original);
    assert_eq!(goal_of(&r), 1.0);
    assert_eq!(m.to_json()["wrote_original"], false);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// For runtimes realising `a·g^b` of a modeled `g` (the same at every timing): the target
    /// is reported met exactly when some plan measured at least it; where some plan measured
    /// at least the aim, the kept one is the one of those with the smallest modeled target.
    #[test]
    fn the_kept_plan_is_the_least_reduction_that_measured_fast_enough(
        a in 0.5f64..1.5, b in 0.5f64..1.5, target in 1.1f64..4.0
    ) {
        let (r, m, _) = run(Some(target), true, |g| a * g.powf(b));
        prop_assert!(m.tries.len() <= MAX_TRIES);
        let fastest = m.tries.iter().map(|t| t.speedup()).fold(0.0, f64::max);
        prop_assert_eq!(m.met(), Some(fastest >= target));
        let aimed: Vec<f64> =
            m.tries.iter().filter(|t| t.speedup() >= target * AIM).map(|t| t.modeled_target.unwrap()).collect();
        if !aimed.is_empty() {
            prop_assert_eq!(goal_of(&r), aimed.iter().copied().fold(f64::INFINITY, f64::min));
        } else {
            prop_assert_eq!(m.chosen().speedup(), fastest);
        }
    }

    /// For runtimes realising `a·g^b` with each timing off by up to ±`noise` (a fixed
    /// pseudo-random sequence): at most [`MAX_TRIES`] plans; the file is the plan reported
    /// (`run` checks), the claim is its second timing, and "met" says whether that reaches the
    /// target.
    #[test]
    fn with_noisy_timings_the_claim_is_the_second_timing(
        a in 0.7f64..1.3, b in 0.7f64..1.3, target in 1.1f64..3.0, noise in 0.0f64..0.08, seed in 0u64..1000
    ) {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (_, m, _) = run(Some(target), true, move |g| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            a * g.powf(b) * (1.0 + noise * (2.0 * u - 1.0))
        });
        prop_assert!(m.tries.len() <= MAX_TRIES);
        let again = m.chosen().speedup_again().unwrap();
        prop_assert_eq!(m.speedup(), again);
        prop_assert_eq!(m.met(), Some(again >= target));
    }
}

/// A runtime in which every rewrite runs at half the original's speed.
struct Slower;

impl Runtime for Slower {
    fn describe(&self) -> String {
        "slower".into()
    }
    fn time_pair(&mut self, _: &[u8], _: &[u8]) -> dac::Result<(Duration, Duration)> {
        Ok((Duration::from_millis(10), Duration::from_millis(20)))
    }
}

#[test]
fn a_file_whose_plans_all_run_slower_is_written_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("net.onnx"), dir.path().join("net-2x.onnx"));
    std::fs::write(&input, net()).unwrap();
    let options = ConvertOptions::speedup(2.0);
    let (s, m) = dac::io::onnx::rewrite_file_measured(&input, &output, &options, &mut Slower).unwrap();
    assert!(m.original && m.met() == Some(false), "{m:?}");
    assert_eq!(std::fs::read(&output).unwrap(), net());
    assert!(s.converted.is_empty() && s.skipped.len() == 2, "{s:?}");
    assert_eq!(s.output, output);
    // With --require-target, nothing is written.
    std::fs::remove_file(&output).unwrap();
    let e = dac::io::onnx::rewrite_file_measured(&input, &output, &options.require_target(true), &mut Slower);
    assert!(matches!(e, Err(dac::Error::MeasuredTargetNotMet { .. })), "{e:?}");
    assert!(!output.exists());
}
