//! Harrell's concordance index, counted as scikit-survival's `concordance_index_censored` (and
//! equal to lifelines' `concordance_index` given the negated risk):
//!
//! - a pair (i, j) is comparable when i has an event and `T_i < T_j`, or `T_i == T_j` and j is
//!   censored (a censoring at the time of an event is taken as surviving past it); two events
//!   at the same time are not comparable;
//! - it is concordant when the earlier one has the higher risk, and counts 0.5 when the risks
//!   are tied (within 1e-8, sksurv's `tied_tol`).

use super::{check_samples, finite, SurvivalError};

/// Risks closer than this are tied (scikit-survival's default `tied_tol`).
pub const TIED_TOL: f64 = 1e-8;

/// The C-index and the pair counts behind it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Concordance {
    pub c_index: f64,
    pub concordant: u64,
    pub discordant: u64,
    /// Comparable pairs with tied risks (counted 0.5).
    pub tied_risk: u64,
    /// Pairs of an event and a censoring at the same time (comparable).
    pub tied_time: u64,
}

impl Concordance {
    pub fn comparable(&self) -> u64 {
        self.concordant + self.discordant + self.tied_risk
    }
}

/// Harrell's C of `risk` (higher = earlier event) against `time` and `event`.
pub fn concordance_index(
    time: &[f64],
    event: &[bool],
    risk: &[f64],
) -> Result<Concordance, SurvivalError> {
    let n = risk.len();
    check_samples(n, time, event)?;
    finite("risk", risk)?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| time[a].total_cmp(&time[b]));
    let (mut concordant, mut discordant, mut tied_risk, mut tied_time) = (0u64, 0u64, 0u64, 0u64);
    let mut i = 0;
    while i < n {
        // order[i..end]: the samples with the same time.
        let t = time[order[i]];
        let mut end = i + 1;
        while end < n && time[order[end]] == t {
            end += 1;
        }
        let censored_here = order[i..end].iter().filter(|&&k| !event[k]).count() as u64;
        for &a in order[i..end].iter().filter(|&&k| event[k]) {
            let ra = risk[a];
            let later = order[end..].iter();
            let censored_at_t = order[i..end].iter().filter(|&&k| !event[k]);
            for &b in later.chain(censored_at_t) {
                let rb = risk[b];
                if (rb - ra).abs() <= TIED_TOL {
                    tied_risk += 1;
                } else if rb < ra {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
            tied_time += censored_here;
        }
        i = end;
    }
    let comparable = concordant + discordant + tied_risk;
    if comparable == 0 {
        return Err(SurvivalError::NoComparablePairs);
    }
    Ok(Concordance {
        c_index: (concordant as f64 + 0.5 * tied_risk as f64) / comparable as f64,
        concordant,
        discordant,
        tied_risk,
        tied_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::survival::reference::{bools, cases, f64s, reference};

    #[test]
    fn equals_sksurv_and_lifelines() {
        let r = reference();
        let mut worst = 0.0f64;
        for case in cases(&r, "concordance") {
            let (t, e, risk) = (
                f64s(&case["time"]),
                bools(&case["event"]),
                f64s(&case["risk"]),
            );
            let c = concordance_index(&t, &e, &risk).unwrap();
            let name = &case["name"];
            for key in ["sksurv", "lifelines"] {
                let d = (c.c_index - case[key].as_f64().unwrap()).abs();
                worst = worst.max(d);
                assert!(d < 1e-9, "{name} vs {key}: {c:?} {}", case[key]);
            }
            assert_eq!(c.concordant, case["concordant"].as_u64().unwrap(), "{name}");
            assert_eq!(c.discordant, case["discordant"].as_u64().unwrap(), "{name}");
            assert_eq!(c.tied_risk, case["tied_risk"].as_u64().unwrap(), "{name}");
            assert_eq!(c.tied_time, case["tied_time"].as_u64().unwrap(), "{name}");
        }
        eprintln!("C-index: max |rust - reference| = {worst:e}");
    }

    #[test]
    fn perfect_inverse_and_tied_rankings() {
        let t = [1.0, 2.0, 3.0, 4.0];
        let e = [true, true, false, true];
        let c = |r: &[f64]| concordance_index(&t, &e, r).unwrap().c_index;
        assert_eq!(c(&[4.0, 3.0, 2.0, 1.0]), 1.0);
        assert_eq!(c(&[1.0, 2.0, 3.0, 4.0]), 0.0);
        assert_eq!(c(&[1.0, 1.0, 1.0, 1.0]), 0.5);
        // Two events at the same time are not comparable; an event and a censoring are.
        let r = concordance_index(&[1.0, 1.0, 1.0], &[true, true, false], &[2.0, 1.0, 0.0]);
        assert_eq!(r.unwrap().comparable(), 2);
    }

    #[test]
    fn rejects_what_it_cannot_rank() {
        assert_eq!(
            concordance_index(&[1.0, 2.0], &[false, false], &[0.0, 1.0]),
            Err(SurvivalError::NoComparablePairs)
        );
        assert!(matches!(
            concordance_index(&[1.0], &[true, false], &[0.0, 1.0]),
            Err(SurvivalError::Length { .. })
        ));
        assert!(matches!(
            concordance_index(&[1.0, 2.0], &[true, false], &[f64::NAN, 1.0]),
            Err(SurvivalError::NonFinite { what: "risk", .. })
        ));
    }
}
