//! Time bins of the discrete-time survival model, as MCAT / PORPOISE make them: the quantiles of
//! the event (uncensored) times (`pd.qcut(..., q=n_bins, retbins=True)`, linear interpolation),
//! with the outer edges moved to the smallest and largest time of all samples ± 1e-6; a time
//! falls in bin `i` when `edges[i] ≤ t < edges[i + 1]` (`pd.cut(..., right=False)`).

use serde::{Deserialize, Serialize};

use super::{check_samples, SurvivalError};

/// MCAT's margin around the smallest and largest time.
pub const EDGE_EPS: f64 = 1e-6;

/// `n_bins + 1` increasing edges, in the time unit of the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeBins {
    pub edges: Vec<f64>,
}

/// numpy's `quantile(sorted, q)` with its default linear interpolation (and numpy's `_lerp`).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let (a, b, t) = (sorted[lo], sorted[hi], h - lo as f64);
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

impl TimeBins {
    /// Quantile bins of the event times; `time` and `event` are one row per patient (MCAT
    /// drops duplicate patients first).
    pub fn quantiles(time: &[f64], event: &[bool], n_bins: usize) -> Result<Self, SurvivalError> {
        check_samples(time.len(), time, event)?;
        let err = |reason: String| SurvivalError::Bins {
            bins: n_bins,
            reason,
        };
        if n_bins == 0 {
            return Err(err("ask for one bin or more".into()));
        }
        let mut events: Vec<f64> = time
            .iter()
            .zip(event)
            .filter(|(_, &e)| e)
            .map(|(t, _)| *t)
            .collect();
        if events.is_empty() {
            return Err(err("there is no event".into()));
        }
        events.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (0..=n_bins)
            .map(|i| quantile(&events, i as f64 / n_bins as f64))
            .collect();
        if let Some(w) = edges.windows(2).position(|w| w[0] >= w[1]) {
            return Err(err(format!(
                "quantiles {w} and {} of the {} event times are both {} (too few distinct \
                 event times: use fewer bins)",
                w + 1,
                events.len(),
                edges[w]
            )));
        }
        let (lo, hi) = time
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &t| {
                (a.min(t), b.max(t))
            });
        edges[0] = lo - EDGE_EPS;
        edges[n_bins] = hi + EDGE_EPS;
        if edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(err(
                "the inner quantiles reach the smallest or largest time".into(),
            ));
        }
        Ok(TimeBins { edges })
    }

    pub fn n_bins(&self) -> usize {
        self.edges.len() - 1
    }

    /// The bin of `t`; times outside the edges go to the first or last bin.
    pub fn bin(&self, t: f64) -> usize {
        let k = self.edges.partition_point(|&e| e <= t);
        k.saturating_sub(1).min(self.n_bins() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::survival::reference::{bools, cases, f64s, reference, usizes};

    #[test]
    fn equals_pandas_qcut_and_cut_as_mcat_uses_them() {
        let r = reference();
        let mut worst = 0.0f64;
        for case in cases(&r, "bins") {
            let (t, e) = (f64s(&case["time"]), bools(&case["event"]));
            let n = case["n_bins"].as_u64().unwrap() as usize;
            let bins = TimeBins::quantiles(&t, &e, n).unwrap();
            let expected = f64s(&case["edges"]);
            assert_eq!(bins.edges.len(), expected.len());
            for (a, b) in bins.edges.iter().zip(&expected) {
                worst = worst.max((a - b).abs());
                assert!(
                    (a - b).abs() < 1e-9,
                    "{}: {:?} vs {expected:?}",
                    case["name"],
                    bins
                );
            }
            let labels: Vec<usize> = t.iter().map(|&x| bins.bin(x)).collect();
            assert_eq!(labels, usizes(&case["labels"]), "{}", case["name"]);
        }
        eprintln!("bins: max |rust - pandas| edge = {worst:e}");
    }

    #[test]
    fn too_few_event_times_and_out_of_range_times() {
        let t = [1.0, 1.0, 1.0, 2.0, 5.0];
        let e = [true, true, true, true, false];
        assert!(matches!(
            TimeBins::quantiles(&t, &e, 4),
            Err(SurvivalError::Bins { .. })
        ));
        let b = TimeBins::quantiles(&[1.0, 2.0, 3.0, 4.0, 9.0], &[true; 5], 2).unwrap();
        assert_eq!(b.bin(-5.0), 0);
        assert_eq!(b.bin(100.0), 1);
        assert_eq!(b.bin(3.0), 1);
        assert_eq!(b.bin(2.999), 0);
    }
}
