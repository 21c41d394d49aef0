//! The log-rank test of equal survival in two or more groups (as lifelines' `logrank_test` and
//! `multivariate_logrank_test`): observed minus expected events per group, summed over the
//! distinct event times, against their hypergeometric covariance; the statistic is
//! chi-square with `groups − 1` degrees of freedom.

use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::{check_samples, SurvivalError};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogRank {
    pub statistic: f64,
    pub dof: usize,
    pub p_value: f64,
    /// The group labels, ascending; `observed` and `expected` follow this order.
    pub groups: Vec<usize>,
    pub observed: Vec<f64>,
    pub expected: Vec<f64>,
}

/// Log-rank test of `time` / `event` split by `group` (any labels, two or more distinct).
pub fn logrank_test(
    time: &[f64],
    event: &[bool],
    group: &[usize],
) -> Result<LogRank, SurvivalError> {
    let n = group.len();
    check_samples(n, time, event)?;
    let mut labels: Vec<usize> = group.to_vec();
    labels.sort_unstable();
    labels.dedup();
    let g = labels.len();
    if g < 2 {
        return Err(SurvivalError::Groups(g));
    }
    let gi: Vec<usize> = group
        .iter()
        .map(|l| labels.binary_search(l).expect("label listed"))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| time[a].total_cmp(&time[b]));
    let mut at_risk = vec![0f64; g];
    for &k in &gi {
        at_risk[k] += 1.0;
    }
    let (mut observed, mut expected) = (vec![0f64; g], vec![0f64; g]);
    let mut v = vec![0f64; g * g];
    let mut deaths = vec![0f64; g];
    let mut leaving = vec![0f64; g];
    let mut i = 0;
    while i < n {
        let t = time[order[i]];
        deaths.iter_mut().for_each(|x| *x = 0.0);
        leaving.iter_mut().for_each(|x| *x = 0.0);
        while i < n && time[order[i]] == t {
            let k = gi[order[i]];
            leaving[k] += 1.0;
            if event[order[i]] {
                deaths[k] += 1.0;
            }
            i += 1;
        }
        let d: f64 = deaths.iter().sum();
        let r: f64 = at_risk.iter().sum();
        if d > 0.0 {
            for k in 0..g {
                observed[k] += deaths[k];
                expected[k] += d * at_risk[k] / r;
            }
            if r > 1.0 {
                let f = d * (r - d) / (r - 1.0) / (r * r);
                for a in 0..g {
                    for b in 0..g {
                        let delta = if a == b { r } else { 0.0 };
                        v[a * g + b] += f * at_risk[a] * (delta - at_risk[b]);
                    }
                }
            }
        }
        for k in 0..g {
            at_risk[k] -= leaving[k];
        }
    }
    // Z' V⁻¹ Z over the first g − 1 groups (the last is determined by the others).
    let m = g - 1;
    let z: Vec<f64> = (0..m).map(|k| observed[k] - expected[k]).collect();
    let mut a: Vec<f64> = (0..m)
        .flat_map(|r| v[r * g..r * g + m].iter().copied())
        .collect();
    let statistic = match solve(&mut a, &mut z.clone(), m) {
        Some(x) => x.iter().zip(&z).map(|(x, z)| x * z).sum::<f64>(),
        None => 0.0,
    };
    Ok(LogRank {
        statistic,
        dof: m,
        p_value: chi2_sf(statistic, m),
        groups: labels,
        observed,
        expected,
    })
}

/// `P(χ²_dof > x)`: the p-value of a chi-square statistic (NaN for 0 degrees of freedom).
pub fn chi2_sf(x: f64, dof: usize) -> f64 {
    ChiSquared::new(dof as f64).map_or(f64::NAN, |chi2| chi2.sf(x))
}

/// Solve `a x = b` (`a` is m×m, symmetric positive semi-definite) by Gaussian elimination with
/// partial pivoting; `None` when `a` is singular (no information, e.g. no events).
fn solve(a: &mut [f64], b: &mut [f64], m: usize) -> Option<Vec<f64>> {
    let scale = a.iter().fold(0.0f64, |s, x| s.max(x.abs()));
    if scale == 0.0 {
        return None;
    }
    for col in 0..m {
        let p = (col..m).max_by(|&x, &y| a[x * m + col].abs().total_cmp(&a[y * m + col].abs()))?;
        if a[p * m + col].abs() <= 1e-12 * scale {
            return None;
        }
        if p != col {
            for k in 0..m {
                a.swap(p * m + k, col * m + k);
            }
            b.swap(p, col);
        }
        for r in col + 1..m {
            let f = a[r * m + col] / a[col * m + col];
            for k in col..m {
                a[r * m + k] -= f * a[col * m + k];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0f64; m];
    for r in (0..m).rev() {
        let s: f64 = (r + 1..m).map(|k| a[r * m + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * m + r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::survival::reference::{bools, cases, f64s, reference, usizes};

    #[test]
    fn chi2_sf_equals_scipy() {
        let r = reference();
        let mut worst = 0.0f64;
        for case in cases(&r, "chi2_sf") {
            let (x, k, sf) = (
                case["x"].as_f64().unwrap(),
                case["dof"].as_u64().unwrap() as usize,
                case["sf"].as_f64().unwrap(),
            );
            let got = chi2_sf(x, k);
            let d = (got - sf).abs();
            worst = worst.max(d);
            assert!(
                d < 1e-12 && d <= 1e-9 * sf.max(1e-3),
                "chi2.sf({x}, {k}): {got} vs {sf}"
            );
        }
        eprintln!("chi2 sf: max |rust - scipy| = {worst:e}");
    }

    #[test]
    fn equals_lifelines() {
        let r = reference();
        let (mut worst_stat, mut worst_p) = (0.0f64, 0.0f64);
        for case in cases(&r, "logrank") {
            let lr = logrank_test(
                &f64s(&case["time"]),
                &bools(&case["event"]),
                &usizes(&case["group"]),
            )
            .unwrap();
            let (s, p) = (
                case["statistic"].as_f64().unwrap(),
                case["p_value"].as_f64().unwrap(),
            );
            worst_stat = worst_stat.max((lr.statistic - s).abs());
            worst_p = worst_p.max((lr.p_value - p).abs());
            assert!(
                (lr.statistic - s).abs() < 1e-9,
                "{}: {lr:?} vs {s}",
                case["name"]
            );
            assert!(
                (lr.p_value - p).abs() < 1e-9,
                "{}: {lr:?} vs {p}",
                case["name"]
            );
            assert_eq!(lr.dof, case["dof"].as_u64().unwrap() as usize);
            let (o, e): (f64, f64) = (lr.observed.iter().sum(), lr.expected.iter().sum());
            assert!((o - e).abs() < 1e-9);
        }
        eprintln!("log-rank: max |rust - lifelines| statistic {worst_stat:e}, p-value {worst_p:e}");
    }

    #[test]
    fn identical_groups_give_no_evidence_and_one_group_is_an_error() {
        let t = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0];
        let e = [true, true, false, true, true, false];
        let lr = logrank_test(&t, &e, &[0, 0, 0, 1, 1, 1]).unwrap();
        assert!(lr.statistic.abs() < 1e-12);
        assert!((lr.p_value - 1.0).abs() < 1e-12);
        assert_eq!(logrank_test(&t, &e, &[4; 6]), Err(SurvivalError::Groups(1)));
    }
}
