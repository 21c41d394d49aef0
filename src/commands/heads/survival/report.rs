//! C-index, risk groups, Kaplan–Meier curves with the log-rank test, and reporting helpers.

use std::collections::HashMap;
use std::path::Path;

use dinoadapt_datasets::plot::{panels_png, Panel, Style};
use dinoadapt_heads::survival::{concordance_index, logrank_test, KaplanMeier, SurvivalError};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// The C-index, or NaN (with a warning) when the slides have no comparable pair.
pub(super) fn c_index_or_nan(
    time: &[f64],
    event: &[bool],
    risk: &[f64],
    what: &str,
) -> anyhow::Result<f64> {
    match concordance_index(time, event, risk) {
        Ok(c) => Ok(c.c_index),
        Err(SurvivalError::NoComparablePairs) => {
            tracing::warn!("{what}: no comparable pair of slides, C-index undefined");
            Ok(f64::NAN)
        }
        Err(e) => Err(e.into()),
    }
}

/// High risk (1) when above the median of its group (`group[i]`), else low (0).
pub(super) fn median_split(risk: &[f64], group: &[usize]) -> Vec<usize> {
    let mut medians: HashMap<usize, f64> = HashMap::new();
    for &g in group {
        medians.entry(g).or_insert_with(|| {
            let mut r: Vec<f64> = risk
                .iter()
                .zip(group)
                .filter(|(_, &h)| h == g)
                .map(|(r, _)| *r)
                .collect();
            r.sort_by(f64::total_cmp);
            let m = r.len() / 2;
            if r.len() % 2 == 1 {
                r[m]
            } else {
                0.5 * (r[m - 1] + r[m])
            }
        });
    }
    risk.iter()
        .zip(group)
        .map(|(r, g)| (*r > medians[g]) as usize)
        .collect()
}

/// Log-rank of the two risk groups (None when one group is empty) and the KM plot.
pub(super) fn km_and_logrank(
    path: Option<&Path>,
    time: &[f64],
    event: &[bool],
    high: &[usize],
    title: &str,
) -> anyhow::Result<Option<dinoadapt_heads::survival::LogRank>> {
    let both = high.contains(&0) && high.contains(&1);
    let lr = if both {
        Some(logrank_test(time, event, high)?)
    } else {
        None
    };
    if let Some(path) = path {
        let p = lr
            .as_ref()
            .map_or("n/a".to_string(), |l| format!("{:.3e}", l.p_value));
        let mut panel = Panel::new(format!("{title}, log-rank p = {p}"))
            .x_label("time")
            .y_label("survival")
            .style(Style::Step);
        for (g, name) in [(0usize, "low risk"), (1, "high risk")] {
            let idx: Vec<usize> = (0..time.len()).filter(|&i| high[i] == g).collect();
            if idx.is_empty() {
                continue;
            }
            let t: Vec<f64> = idx.iter().map(|&i| time[i]).collect();
            let e: Vec<bool> = idx.iter().map(|&i| event[i]).collect();
            let km = KaplanMeier::fit(&t, &e)?;
            panel = panel.series(format!("{name} (n={})", idx.len()), km.step_points(0.0));
        }
        panels_png(path, &[panel], 1)?;
    }
    Ok(lr)
}

pub(super) fn progress(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

pub(super) fn mean_std(v: &[f64]) -> (f64, f64) {
    let ok: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if ok.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = ok.iter().sum::<f64>() / ok.len() as f64;
    let var = ok.iter().map(|x| (x - m).powi(2)).sum::<f64>() / ok.len() as f64;
    (m, var.sqrt())
}

/// JSON number or null.
pub(super) fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

// ---------------------------------------------------------------------------------------------
// train

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_split_is_per_group() {
        let risk = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 40.0];
        let group = [0, 0, 0, 1, 1, 1, 1];
        assert_eq!(median_split(&risk, &group), vec![0, 0, 1, 0, 0, 1, 1]);
    }
}
