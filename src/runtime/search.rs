//! The measured search: plan for a modeled target, time it, correct the modeled target.

use super::Runtime;
use crate::convert::{SkipReason, Summary};
use crate::error::Result;
use std::time::Duration;

/// The most plans [`search`] times for one target.
pub const MAX_TRIES: usize = 5;

/// A measured speed-up within this factor above the aim ends the search.
const CLOSE: f64 = 1.03;

/// The search aims this factor above the target: the plan it keeps is timed again in a fresh
/// pair for the claim (a plan kept *because* it measured fast enough measured, on average,
/// faster than it runs), and a plan that measured just at the target would fail that second
/// timing about half the time.
pub const AIM: f64 = 1.02;

/// One rewrite of a model: its bytes and its report.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The rewritten ONNX model.
    pub bytes: Vec<u8>,
    /// What the conversion did.
    pub summary: Summary,
}

/// One plan [`search`] timed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasuredTry {
    /// The modeled speed-up the plan was asked for (`None`: the options' own policy or target).
    pub modeled_target: Option<f64>,
    /// The plan's modeled speed-up (`None` where a size is unknown).
    pub modeled: Option<f64>,
    /// Whether the planner reached the modeled target.
    pub reachable: bool,
    /// Median time of the original, measured alongside this rewrite.
    pub before: Duration,
    /// Median time of this rewrite.
    pub after: Duration,
    /// With a target, for a plan [`search`] kept: `(before, after)` timed again in a fresh
    /// pair. The search kept the plan on its first timing, which that choice biases upwards;
    /// this second timing is what it claims.
    pub again: Option<(Duration, Duration)>,
}

impl MeasuredTry {
    /// Measured speed-up `before / after` (the first timing).
    pub fn speedup(&self) -> f64 {
        ratio(self.before, self.after)
    }
    /// The speed-up of the second timing, if the plan was timed again.
    pub fn speedup_again(&self) -> Option<f64> {
        self.again.map(|(b, a)| ratio(b, a))
    }
}

fn ratio(before: Duration, after: Duration) -> f64 {
    before.as_secs_f64() / after.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// What [`search`] measured, and which plan it kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// [`Runtime::describe`].
    pub runtime: String,
    /// The measured speed-up asked for (`None`: not a `--speedup` target; the one plan made is
    /// only timed).
    pub target: Option<f64>,
    /// Every plan timed, in order.
    pub tries: Vec<MeasuredTry>,
    /// The index in `tries` of the plan kept: the plan returned, unless
    /// [`original`](Self::original).
    pub chosen: usize,
    /// With a target, whether the kept plan's claim measured slower than the original
    /// (below 1x), so that [`search`] returned the original model unchanged instead.
    pub original: bool,
}

impl Measured {
    /// The plan returned.
    pub fn chosen(&self) -> &MeasuredTry {
        &self.tries[self.chosen]
    }
    /// The times `(before, after)` the claim rests on: the chosen plan's second timing where
    /// it has one ([`MeasuredTry::again`]), else its only one.
    pub fn claim(&self) -> (Duration, Duration) {
        let c = self.chosen();
        c.again.unwrap_or((c.before, c.after))
    }
    /// The claimed measured speed-up (of [`claim`](Self::claim)).
    pub fn speedup(&self) -> f64 {
        let (b, a) = self.claim();
        ratio(b, a)
    }
    /// Whether the measured speed-up reaches the target (`None` without one).
    pub fn met(&self) -> Option<bool> {
        self.target.map(|t| self.speedup() >= t)
    }
    /// As one JSON object (the `measured` member of `dac onnx --measure --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let one = |t: &MeasuredTry| {
            serde_json::json!({
                "modeled_target": t.modeled_target, "modeled_speedup": t.modeled, "reachable": t.reachable,
                "time_before_ms": ms(t.before), "time_after_ms": ms(t.after), "speedup": t.speedup(),
                "again": t.again.map(|(b, a)| serde_json::json!({
                    "time_before_ms": ms(b), "time_after_ms": ms(a), "speedup": ratio(b, a),
                })),
            })
        };
        let (b, a) = self.claim();
        serde_json::json!({
            "runtime": self.runtime, "target": self.target, "met": self.met(),
            "time_before_ms": ms(b), "time_after_ms": ms(a), "speedup": self.speedup(),
            "chosen": self.chosen, "wrote_original": self.original,
            "tries": self.tries.iter().map(one).collect::<Vec<_>>(),
        })
    }
}

/// Plans until the measured speed-up reaches `target`.
///
/// `rewrite(Some(x))` plans for a modeled speed-up `x` (`rewrite(None)`: the caller's own
/// policy, timed once: `target` is then `None`). The search aims at `target · `[`AIM`]: the
/// first plan asks for that modeled speed-up; after it, the last one times `aim / measured`,
/// then the secant through the last two plans' (modeled target, measured speed-up), stepping
/// up at least that proportional step and at most its cube, and kept between the largest
/// modeled target measured too slow and the smallest measured fast enough (else their
/// geometric mean). It stops planning when a plan measures within 3 % above the aim, when the
/// planner cannot reach a modeled target that measured too slow, when the bracket is narrower
/// than 3 %, or after [`MAX_TRIES`] plans. It keeps the plan with the smallest modeled target
/// that measured at least the aim (the least reduction, so the least error), else the fastest
/// one measured, and times it again in a fresh pair ([`MeasuredTry::again`], which the claim
/// and [`Measured::met`] rest on). Where that second timing falls below the target, the plan
/// counts as too slow at that speed and the search goes on from it while plans remain.
///
/// A rewrite must not run slower than what it replaces: where the kept plan's claim is
/// below 1x (the fastest plan measured slower than the original), the search returns the original
/// bytes instead, with the plan's summary turned into the original's (every layer dense,
/// [`SkipReason::MeasuredSlower`]) and [`Measured::original`] set. Without a target the one
/// plan is returned whatever it measured: the caller asked for that policy.
///
/// # Errors
/// What `rewrite` or [`Runtime::time_pair`] return.
pub fn search(
    target: Option<f64>,
    original: &[u8],
    runtime: &mut dyn Runtime,
    mut rewrite: impl FnMut(Option<f64>) -> Result<Rewrite>,
) -> Result<(Rewrite, Measured)> {
    let mut measured = Measured { runtime: runtime.describe(), target, tries: Vec::new(), chosen: 0, original: false };
    let Some(target) = target else {
        let r = rewrite(None)?;
        measured.tries.push(time(runtime, original, &r, None)?);
        return Ok((r, measured));
    };
    let aim = target * AIM;
    let mut kept: Option<(usize, Rewrite)> = None;
    let (mut next, mut prev) = (Some(aim), None);
    loop {
        while let Some(goal) = next.filter(|_| measured.tries.len() < MAX_TRIES) {
            let r = rewrite(Some(goal))?;
            measured.tries.push(time(runtime, original, &r, Some(goal))?);
            let (tries, i) = (&measured.tries, measured.tries.len() - 1);
            if kept.as_ref().is_none_or(|(j, _)| better(latest(&tries[i]), latest(&tries[*j]), aim)) {
                kept = Some((i, r));
            }
            next = next_goal(aim, latest(&tries[i]), prev, tries[i].reachable, &Bracket::of(tries, aim));
            prev = Some(latest(&tries[i]));
        }
        let (i, r) = kept.take().expect("MAX_TRIES > 0, so at least one plan was timed");
        let first = latest(&measured.tries[i]).1;
        if measured.tries[i].again.is_none() {
            measured.tries[i].again = Some(runtime.time_pair(original, &r.bytes)?);
        }
        let tries = &measured.tries;
        let refuted = first >= aim && latest(&tries[i]).1 < target;
        next = if refuted && tries.len() < MAX_TRIES {
            next_goal(aim, latest(&tries[i]), prev, tries[i].reachable, &Bracket::of(tries, aim))
        } else {
            None
        };
        if next.is_none() {
            measured.chosen = i;
            return Ok(never_slower(r, measured, original));
        }
        prev = Some(latest(&tries[i]));
        kept = Some((i, r));
    }
}

/// `r`, or the original unchanged where `r`'s claim measured slower than it.
fn never_slower(r: Rewrite, mut measured: Measured, original: &[u8]) -> (Rewrite, Measured) {
    if measured.speedup() >= 1.0 {
        return (r, measured);
    }
    measured.original = true;
    let summary = r.summary.unchanged(SkipReason::MeasuredSlower);
    (Rewrite { bytes: original.to_vec(), summary }, measured)
}

/// A timed plan's (modeled target, speed-up): its second timing once it has one, else its first.
fn latest(t: &MeasuredTry) -> (f64, f64) {
    (t.modeled_target.unwrap_or(1.0), t.speedup_again().unwrap_or(t.speedup()))
}

/// Whether plan `a` (modeled target, speed-up) is to be kept over `b`: a plan fast enough
/// (measured at least `aim`) over one that is not; of two fast enough, the smaller modeled
/// target (the least reduction); of two too slow, the faster.
fn better(a: (f64, f64), b: (f64, f64), aim: f64) -> bool {
    match (a.1 >= aim, b.1 >= aim) {
        (true, false) => true,
        (true, true) => a.0 < b.0,
        (false, false) => a.1 > b.1,
        (false, true) => false,
    }
}

/// The modeled targets measured so far.
struct Bracket {
    /// The largest modeled target whose plan measured below the aim.
    lo: Option<f64>,
    /// The smallest modeled target whose plan measured at or above it.
    hi: Option<f64>,
}

impl Bracket {
    /// Of the plans timed, by their [`latest`] timings.
    fn of(tries: &[MeasuredTry], aim: f64) -> Self {
        let goals = |fast: bool| tries.iter().map(latest).filter(move |(_, s)| (*s >= aim) == fast).map(|(g, _)| g);
        Self { lo: goals(false).reduce(f64::max), hi: goals(true).reduce(f64::min) }
    }
}

/// The modeled target to try next after `last` (modeled target asked, measured speed-up),
/// `None` to stop. The step is the secant through `last` and the try before it (`prev`) where
/// the two measured differently, else proportional (`goal · aim / measured`); a step up
/// from below the aim goes at least the proportional step and at most its cube (realised
/// speed-ups grow slower than modeled ones near a network's limit, and one noisy pair must
/// not throw the search far).
fn next_goal(aim: f64, last: (f64, f64), prev: Option<(f64, f64)>, reachable: bool, b: &Bracket) -> Option<f64> {
    let (goal, measured) = last;
    if !(measured.is_finite() && measured > 0.0) {
        return None;
    }
    if measured >= aim && measured <= aim * CLOSE {
        return None;
    }
    if measured < aim && !reachable {
        return None;
    }
    let proportional = goal * aim / measured;
    let secant = prev
        .map(|(g0, s0)| (measured - s0) / (goal - g0))
        .filter(|slope| slope.is_finite() && *slope > 0.0)
        .map(|slope| goal + (aim - measured) / slope);
    let next = match (b.lo, b.hi) {
        (Some(l), Some(h)) => {
            if h / l < CLOSE {
                return None;
            }
            secant.or(Some(proportional)).filter(|n| *n > l && *n < h).unwrap_or((l * h).sqrt())
        }
        (Some(l), None) => {
            let step = aim / measured;
            secant.unwrap_or(proportional).clamp(proportional, goal * step.powi(3)).max(l * 1.02)
        }
        _ => proportional,
    };
    let next = (next * 1000.0).round() / 1000.0;
    (next > 1.0 && (next / goal - 1.0).abs() > 1e-3).then_some(next)
}

fn time(runtime: &mut dyn Runtime, original: &[u8], r: &Rewrite, goal: Option<f64>) -> Result<MeasuredTry> {
    let (before, after) = runtime.time_pair(original, &r.bytes)?;
    Ok(MeasuredTry {
        modeled_target: goal,
        modeled: r.summary.speedup(),
        reachable: r.summary.plan.as_ref().is_none_or(|p| p.met),
        before,
        after,
        again: None,
    })
}
