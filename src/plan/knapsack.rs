//! The planner's solver: a multiple-choice knapsack over a savings axis rounded down (so a
//! solution found truly meets the budget), then a greedy pass that gives back over-spent
//! savings.

use super::{Budget, Candidate};

/// Savings-axis resolution of the knapsack.
const BUCKETS: u64 = 4096;

/// Minimum-score choice per layer whose savings reach `before - limit`, over a savings axis
/// rounded down (so any solution found truly meets the budget). `None` when the rounding hides
/// every solution.
pub(super) fn knapsack(candidates: &[Vec<Candidate>], budget: &Budget, before: &Candidate) -> Option<Vec<usize>> {
    let need = budget.of(before).checked_sub(budget.limit())?;
    if need == 0 {
        return Some(vec![0; candidates.len()]);
    }
    let cap = BUCKETS.min(need) as usize;
    // Savings of a candidate in whole buckets, rounded down, capped.
    let units = |c: &Candidate, dense: &Candidate| -> usize {
        let saved = budget.of(dense).saturating_sub(budget.of(c)) as u128;
        (saved * cap as u128 / need as u128).min(cap as u128) as usize
    };
    // best[t]: the lowest score whose (capped) savings total is t; back[i][t]: the candidate and
    // the previous total that reached it after layer i.
    let mut best = vec![f64::INFINITY; cap + 1];
    best[0] = 0.0;
    let mut back: Vec<Vec<(u32, u32)>> = Vec::with_capacity(candidates.len());
    for list in candidates {
        let mut next = vec![f64::INFINITY; cap + 1];
        let mut from = vec![(u32::MAX, u32::MAX); cap + 1];
        for (b, &s) in best.iter().enumerate() {
            if !s.is_finite() {
                continue;
            }
            for (k, c) in list.iter().enumerate() {
                let t = (b + units(c, &list[0])).min(cap);
                if s + c.score < next[t] {
                    next[t] = s + c.score;
                    from[t] = (k as u32, b as u32);
                }
            }
        }
        best = next;
        back.push(from);
    }
    if !best[cap].is_finite() {
        return None;
    }
    let mut pick = vec![0usize; candidates.len()];
    let mut t = cap;
    for i in (0..candidates.len()).rev() {
        let (k, b) = back[i][t];
        pick[i] = k as usize;
        t = b as usize;
    }
    Some(pick)
}

/// Gives back over-spent savings: while some layer can move to a lower-score candidate and the
/// plan still fits, take the move that lowers the score most (first layer, then highest rank,
/// on ties).
pub(super) fn refine(
    candidates: &[Vec<Candidate>],
    mut pick: Vec<usize>,
    fits: &dyn Fn(&[usize]) -> bool,
) -> Vec<usize> {
    loop {
        let mut best: Option<(usize, usize, f64)> = None;
        for (i, list) in candidates.iter().enumerate() {
            let current = list[pick[i]].score;
            for (k, c) in list.iter().enumerate() {
                let gain = current - c.score;
                if gain <= 0.0 || best.is_some_and(|(_, _, g)| gain <= g) {
                    continue;
                }
                let old = pick[i];
                pick[i] = k;
                if fits(&pick) {
                    best = Some((i, k, gain));
                }
                pick[i] = old;
            }
        }
        match best {
            Some((i, k, _)) => pick[i] = k,
            None => return pick,
        }
    }
}
