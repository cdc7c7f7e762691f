//! Rank policies: choose `r` for one layer from its spectrum and the cost model.

use crate::decompose::Spectrum;
use crate::error::{Error, Result};
use crate::scheme::{ErrorTable, SchemeKind};
use crate::weights::ConvShape;

/// How to pick a layer's rank.
///
/// ```
/// use dac::{Conv2dWeights, Factorization, Rank, RankChoice, svd::NalgebraSvd};
/// let w: Vec<f64> = (0..64 * 16 * 9).map(|i| ((i * 7919) % 101) as f64 / 101.0 - 0.5).collect();
/// let layer = Conv2dWeights::new(w, [64, 16, 3, 3])?;
/// let spectrum = Factorization::compute(&layer, &NalgebraSvd::default())?.spectrum();
/// match Rank::Speedup(2.0).choose(layer.name(), &spectrum, false)? {
///     RankChoice::Decompose { rank } => assert_eq!(rank, 3), // 1/(3/64 + 3/9) = 2.63 >= 2; r = 4 gives 1.97
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), dac::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Rank {
    /// Exactly this rank.
    Fixed(usize),
    /// The smallest rank whose retained energy (kept `s²` / total, whole layer) is at least this
    /// fraction, in `(0, 1]`.
    Energy(f64),
    /// The largest rank whose MAC reduction `1 / (r/(N/g) + r/(kh·kw))` is at least this
    /// factor (`> 0`).
    Speedup(f64),
}

/// Why a policy left a layer dense.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum KeepDenseReason {
    /// The chosen rank is at or above the break-even rank: the pair would cost as much or more.
    NotBeneficial {
        /// The break-even rank `(N/g)·kh·kw / (N/g + kh·kw)`.
        break_even: f64,
    },
    /// Even rank 1 does not reach the requested speed-up.
    TargetUnreachable {
        /// The MAC reduction of rank 1.
        best: f64,
    },
}

impl std::fmt::Display for KeepDenseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotBeneficial { break_even } => {
                write!(f, "rank at or above break-even {break_even:.2}: the pair would not be cheaper")
            }
            Self::TargetUnreachable { best } => write!(f, "rank 1 reduces MACs only {best:.2}x"),
        }
    }
}

/// A policy's decision for one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum RankChoice {
    /// Decompose at this rank.
    Decompose {
        /// The rank.
        rank: usize,
    },
    /// Leave the layer dense.
    KeepDense {
        /// The rank the policy arrived at, if any.
        rank: Option<usize>,
        /// Why.
        reason: KeepDenseReason,
    },
}

impl Rank {
    /// Validates the policy's parameter.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an energy outside `(0, 1]` or a non-positive or
    /// non-finite speed-up; [`Error::InvalidRank`] is left to [`choose`](Self::choose), which
    /// knows the layer.
    pub fn validate(&self, context: &str) -> Result<()> {
        match *self {
            Rank::Energy(f) if !(f > 0.0 && f <= 1.0) => Err(Error::InvalidParameter {
                context: context.to_string(),
                what: "energy",
                value: f,
                expected: "a fraction in (0, 1]",
            }),
            Rank::Speedup(x) if !(x > 0.0 && x.is_finite()) => Err(Error::InvalidParameter {
                context: context.to_string(),
                what: "speed-up",
                value: x,
                expected: "a finite factor > 0",
            }),
            _ => Ok(()),
        }
    }

    /// Chooses the rank for the layer named `layer` with this spectrum.
    ///
    /// A rank at or above break-even is reported as [`RankChoice::KeepDense`] unless
    /// `allow_slower` is set.
    ///
    /// # Errors
    /// [`Error::InvalidRank`] for a fixed rank outside `1..=max`; [`Error::InvalidParameter`]
    /// as [`validate`](Self::validate).
    pub fn choose(&self, layer: &str, spectrum: &Spectrum, allow_slower: bool) -> Result<RankChoice> {
        self.choose_with(layer, SchemeKind::Dac, spectrum.shape(), Some(&|r| spectrum.retained_energy(r)), allow_slower)
    }

    /// [`choose`](Self::choose) for scheme `kind` from a layer's shape and, for
    /// [`Rank::Energy`], its [`ErrorTable`] (`None` only for the policies that need no
    /// spectrum).
    pub(crate) fn choose_from(
        &self,
        layer: &str,
        kind: SchemeKind,
        shape: &ConvShape,
        errors: Option<&ErrorTable>,
        allow_slower: bool,
    ) -> Result<RankChoice> {
        match errors {
            Some(e) => self.choose_with(layer, kind, shape, Some(&|r| e.retained_energy(r)), allow_slower),
            None => self.choose_with(layer, kind, shape, None, allow_slower),
        }
    }

    /// The choice, with `retained` the retained energy by rank (needed by [`Rank::Energy`] only).
    fn choose_with(
        &self,
        layer: &str,
        kind: SchemeKind,
        shape: &ConvShape,
        retained: Option<&dyn Fn(usize) -> f64>,
        allow_slower: bool,
    ) -> Result<RankChoice> {
        self.validate(layer)?;
        let max = kind.max_rank(shape);
        let rank = match *self {
            Rank::Fixed(r) => {
                if r == 0 || r > max {
                    return Err(Error::InvalidRank { layer: layer.to_string(), rank: r, max });
                }
                r
            }
            Rank::Energy(f) => {
                let retained = retained.ok_or_else(|| Error::InvalidParameter {
                    context: format!("layer `{layer}`"),
                    what: "energy",
                    value: f,
                    expected: "an energy policy needs the layer's spectrum (internal error: it was not computed)",
                })?;
                (1..=max).find(|&r| retained(r) >= f).unwrap_or(max)
            }
            Rank::Speedup(x) => match (1..=max).rev().find(|&r| kind.mac_reduction(shape, r) >= x) {
                Some(r) => r,
                None => {
                    return Ok(RankChoice::KeepDense {
                        rank: None,
                        reason: KeepDenseReason::TargetUnreachable { best: kind.mac_reduction(shape, 1) },
                    })
                }
            },
        };
        if allow_slower || kind.is_beneficial(shape, rank) {
            Ok(RankChoice::Decompose { rank })
        } else {
            Ok(RankChoice::KeepDense {
                rank: Some(rank),
                reason: KeepDenseReason::NotBeneficial { break_even: kind.break_even_rank(shape) },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spectrum(values: Vec<f64>, n: usize, c: usize) -> Spectrum {
        Spectrum::new("l", ConvShape { out_channels: n, in_channels: c, kh: 3, kw: 3, groups: 1 }, values).unwrap()
    }

    #[test]
    fn energy_picks_smallest_rank_reaching_fraction() {
        // One channel, 2 outputs: s = [3, 1] -> energy(1) = 0.9.
        let s = spectrum(vec![3.0, 1.0], 2, 1);
        let allow = true;
        assert_eq!(Rank::Energy(0.9).choose("l", &s, allow).unwrap(), RankChoice::Decompose { rank: 1 });
        assert_eq!(Rank::Energy(0.91).choose("l", &s, allow).unwrap(), RankChoice::Decompose { rank: 2 });
        assert_eq!(Rank::Energy(1.0).choose("l", &s, allow).unwrap(), RankChoice::Decompose { rank: 2 });
    }

    #[test]
    fn not_beneficial_is_reported_unless_allowed() {
        // N = 2, 3x3: break-even 18/11 = 1.64, so rank 2 saves nothing.
        let s = spectrum(vec![3.0, 1.0], 2, 1);
        assert!(matches!(
            Rank::Fixed(2).choose("l", &s, false).unwrap(),
            RankChoice::KeepDense { rank: Some(2), reason: KeepDenseReason::NotBeneficial { .. } }
        ));
        assert_eq!(Rank::Fixed(2).choose("l", &s, true).unwrap(), RankChoice::Decompose { rank: 2 });
    }

    #[test]
    fn speedup_picks_largest_rank_and_reports_unreachable() {
        let s = spectrum(vec![1.0; 64 * 9], 64, 64);
        // 1/(r/64 + r/9): r=1 -> 7.89, r=2 -> 3.95, r=3 -> 2.63.
        assert_eq!(Rank::Speedup(2.63).choose("l", &s, false).unwrap(), RankChoice::Decompose { rank: 3 });
        assert_eq!(Rank::Speedup(3.0).choose("l", &s, false).unwrap(), RankChoice::Decompose { rank: 2 });
        assert!(matches!(
            Rank::Speedup(8.0).choose("l", &s, false).unwrap(),
            RankChoice::KeepDense { reason: KeepDenseReason::TargetUnreachable { .. }, .. }
        ));
    }
}
