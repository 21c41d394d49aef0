//! What a survival study reports: C-index, risk groups, Kaplan–Meier curves with the log-rank
//! test, attention per tile, and JSON helpers.

use std::collections::HashMap;
use std::path::Path;

use dinoadapt_datasets::column as col;
use dinoadapt_datasets::plot::{panels_png, Panel, Style};
use dinoadapt_datasets::write_parquet;
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, Series};
use serde_json::{json, Value};

use super::bag_files::Coords;
use super::{concordance_index, logrank_test, KaplanMeier, LogRank, StudyError, SurvivalError};

/// The C-index, or NaN (with a warning) when the slides have no comparable pair.
pub fn c_index_or_nan(
    time: &[f64],
    event: &[bool],
    risk: &[f64],
    what: &str,
) -> Result<f64, SurvivalError> {
    match concordance_index(time, event, risk) {
        Ok(c) => Ok(c.c_index),
        Err(SurvivalError::NoComparablePairs) => {
            tracing::warn!("{what}: no comparable pair of slides, C-index undefined");
            Ok(f64::NAN)
        }
        Err(e) => Err(e),
    }
}

/// High risk (1) when above the median of its group (`group[i]`), else low (0).
pub fn median_split(risk: &[f64], group: &[usize]) -> Vec<usize> {
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

/// Log-rank of the two risk groups (None when one group is empty) and, with `path`, the
/// Kaplan–Meier plot of both.
pub fn km_and_logrank(
    path: Option<&Path>,
    time: &[f64],
    event: &[bool],
    high: &[usize],
    title: &str,
) -> Result<Option<LogRank>, StudyError> {
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

/// `{dir}/{slide}.parquet`: tile (feature row), x, y (level-0 px; null when the bag has no
/// coordinates) and attention (sums to 1 over the slide).
pub fn write_attention(
    dir: &Path,
    id: &str,
    attention: &[f32],
    coords: &Coords,
) -> Result<(), StudyError> {
    let n = attention.len();
    let xy = |k: usize| -> Vec<Option<i64>> {
        (0..n).map(|i| coords.as_ref().map(|c| c[i][k])).collect()
    };
    let mut df = DataFrame::new(
        n,
        vec![
            col::<u64>("tile", (0..n as u64).collect()),
            Series::new("x".into(), xy(0)).into_column(),
            Series::new("y".into(), xy(1)).into_column(),
            col::<f32>("attention", attention.to_vec()),
        ],
    )?;
    write_parquet(&dir.join(format!("{id}.parquet")), &mut df)?;
    Ok(())
}

/// Mean and standard deviation of the finite values (NaN when there are none).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let ok: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if ok.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = ok.iter().sum::<f64>() / ok.len() as f64;
    let var = ok.iter().map(|x| (x - m).powi(2)).sum::<f64>() / ok.len() as f64;
    (m, var.sqrt())
}

/// JSON number or null.
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

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
