//! The Kaplan–Meier estimator of the survival function, `S(t) = Π_{t_i ≤ t} (1 − d_i / n_i)`
//! over the distinct observed times (as lifelines' `KaplanMeierFitter.survival_function_`).

use super::{check_samples, SurvivalError};

/// The fitted step function: one row per distinct observed time (events and censorings).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KaplanMeier {
    pub times: Vec<f64>,
    /// Samples still at risk just before each time.
    pub at_risk: Vec<usize>,
    pub events: Vec<usize>,
    pub censored: Vec<usize>,
    /// S(t) at each time (right-continuous: after that time's events).
    pub survival: Vec<f64>,
}

impl KaplanMeier {
    pub fn fit(time: &[f64], event: &[bool]) -> Result<Self, SurvivalError> {
        check_samples(time.len(), time, event)?;
        let mut order: Vec<usize> = (0..time.len()).collect();
        order.sort_by(|&a, &b| time[a].total_cmp(&time[b]));
        let mut km = KaplanMeier {
            times: Vec::new(),
            at_risk: Vec::new(),
            events: Vec::new(),
            censored: Vec::new(),
            survival: Vec::new(),
        };
        let (mut remaining, mut s) = (time.len(), 1.0f64);
        let mut i = 0;
        while i < order.len() {
            let t = time[order[i]];
            let (mut d, mut c) = (0, 0);
            while i < order.len() && time[order[i]] == t {
                if event[order[i]] {
                    d += 1;
                } else {
                    c += 1;
                }
                i += 1;
            }
            s *= 1.0 - d as f64 / remaining as f64;
            km.times.push(t);
            km.at_risk.push(remaining);
            km.events.push(d);
            km.censored.push(c);
            km.survival.push(s);
            remaining -= d + c;
        }
        Ok(km)
    }

    /// S(t): 1 before the first time, the step value at and after each time.
    pub fn at(&self, t: f64) -> f64 {
        match self.times.partition_point(|&x| x <= t) {
            0 => 1.0,
            k => self.survival[k - 1],
        }
    }

    /// The first time where S drops to 0.5 or below (lifelines' `median_survival_time_`);
    /// `None` (lifelines: inf) when it never does.
    pub fn median(&self) -> Option<f64> {
        self.survival
            .iter()
            .position(|&s| s <= 0.5)
            .map(|k| self.times[k])
    }

    /// The curve as points for a step plot, starting at (`start`, 1).
    pub fn step_points(&self, start: f64) -> Vec<(f64, f64)> {
        std::iter::once((start.min(self.times.first().copied().unwrap_or(start)), 1.0))
            .chain(
                self.times
                    .iter()
                    .copied()
                    .zip(self.survival.iter().copied()),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::survival::reference::{bools, cases, f64s, reference};

    #[test]
    fn equals_lifelines_at_every_time() {
        let r = reference();
        let mut worst = 0.0f64;
        for case in cases(&r, "kaplan_meier") {
            let km = KaplanMeier::fit(&f64s(&case["time"]), &bools(&case["event"])).unwrap();
            let timeline = f64s(&case["timeline"]);
            let expected = f64s(&case["survival"]);
            // lifelines' timeline is 0 followed by the distinct times.
            assert_eq!(timeline.len(), km.times.len() + 1, "{}", case["name"]);
            for (t, s) in timeline.iter().zip(&expected) {
                let d = (km.at(*t) - s).abs();
                worst = worst.max(d);
                assert!(d < 1e-12, "{} at {t}: {} vs {s}", case["name"], km.at(*t));
            }
            assert_eq!(&timeline[1..], &km.times[..]);
            let median = case["median"].as_f64().unwrap();
            assert_eq!(km.median().unwrap_or(f64::INFINITY), median);
        }
        eprintln!("Kaplan-Meier: max |rust - lifelines| = {worst:e}");
    }

    #[test]
    fn by_hand() {
        // 5 samples: events at 1, 3, 3; censored at 2 and 4.
        let km = KaplanMeier::fit(
            &[3.0, 1.0, 2.0, 3.0, 4.0],
            &[true, true, false, true, false],
        )
        .unwrap();
        assert_eq!(km.times, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(km.at_risk, vec![5, 4, 3, 1]);
        let s3 = 0.8 * (1.0 - 2.0 / 3.0);
        assert!((km.at(3.5) - s3).abs() < 1e-15);
        assert_eq!(km.at(0.5), 1.0);
        assert_eq!(km.median(), Some(3.0));
        assert_eq!(km.step_points(0.0)[0], (0.0, 1.0));
    }
}
