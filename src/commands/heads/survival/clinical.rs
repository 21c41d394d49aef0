//! The clinical table (CSV or Parquet, read with polars): slide, time, event, patient and
//! numeric covariates, with their standardisation.

use std::collections::HashSet;
use std::path::Path;

use super::CohortArgs;
use anyhow::{bail, ensure, Context};
use polars::prelude::{CsvReadOptions, DataFrame, DataType, ParquetReader, SerReader};

pub(super) struct Clinical {
    pub(super) slide: Vec<String>,
    pub(super) time: Vec<f64>,
    pub(super) event: Vec<bool>,
    pub(super) patient: Vec<String>,
    /// Per slide, the raw covariate values.
    pub(super) covariates: Vec<Vec<f64>>,
}

pub(super) fn read_table(path: &Path) -> anyhow::Result<DataFrame> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let df = match ext.as_str() {
        "parquet" | "pq" => ParquetReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )
        .finish(),
        "csv" => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(None)
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .with_context(|| format!("opening {}", path.display()))?
            .finish(),
        _ => bail!(
            "{}: the clinical table must be .csv or .parquet",
            path.display()
        ),
    };
    df.with_context(|| format!("{}: not a readable table", path.display()))
}

pub(super) fn read_clinical(path: &Path, a: &CohortArgs) -> anyhow::Result<Clinical> {
    let df = read_table(path)?;
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let column = |name: &str, flag: &str| {
        df.column(name).with_context(|| {
            format!(
                "{}: no column `{name}` (columns: {}); name it with {flag}",
                path.display(),
                names.join(", ")
            )
        })
    };
    let strings = |name: &str, flag: &str| -> anyhow::Result<Vec<String>> {
        let c = column(name, flag)?.cast(&DataType::String)?;
        let ca = c.str()?;
        (0..df.height())
            .map(|i| {
                ca.get(i).map(str::to_string).with_context(|| {
                    format!("{}: `{name}` is empty in row {}", path.display(), i + 1)
                })
            })
            .collect()
    };
    let numbers = |name: &str, flag: &str, slide: &[String]| -> anyhow::Result<Vec<f64>> {
        let c = column(name, flag)?
            .cast(&DataType::Float64)
            .with_context(|| format!("{}: `{name}` is not numeric", path.display()))?;
        let ca = c.f64()?;
        (0..df.height())
            .map(|i| {
                ca.get(i).filter(|v| v.is_finite()).with_context(|| {
                    format!(
                        "{}: `{name}` is missing or not a number for slide {}",
                        path.display(),
                        slide[i]
                    )
                })
            })
            .collect()
    };
    let slide = strings(&a.slide_col, "--slide-col")?;
    let mut seen = HashSet::new();
    let dup: Vec<&String> = slide.iter().filter(|s| !seen.insert(*s)).collect();
    ensure!(
        dup.is_empty(),
        "{}: slides listed more than once: {}",
        path.display(),
        list(&dup)
    );
    let time = numbers(&a.time_col, "--time-col", &slide)?;
    if let Some(i) = time.iter().position(|&t| t < 0.0) {
        bail!("{}: negative time for slide {}", path.display(), slide[i]);
    }
    let event: Vec<bool> = numbers(&a.event_col, "--event-col", &slide)?
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            ensure!(
                e == 1.0 || e == 0.0,
                "{}: event {e} for slide {}: use 1 (event) or 0 (censored)",
                path.display(),
                slide[i]
            );
            Ok(e == 1.0)
        })
        .collect::<anyhow::Result<_>>()?;
    let patient = match &a.patient_col {
        Some(p) => strings(p, "--patient-col")?,
        None if names.iter().any(|n| n == "patient_id") => strings("patient_id", "--patient-col")?,
        None => slide.clone(),
    };
    let cov_columns: Vec<Vec<f64>> = a
        .covariates
        .iter()
        .map(|c| numbers(c, "--covariates", &slide))
        .collect::<anyhow::Result<_>>()?;
    let covariates = (0..slide.len())
        .map(|i| cov_columns.iter().map(|c| c[i]).collect())
        .collect();
    Ok(Clinical {
        slide,
        time,
        event,
        patient,
        covariates,
    })
}

/// The first few items of a list, for messages.
pub(super) fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let mut s: Vec<String> = items.iter().take(10).map(|x| x.to_string()).collect();
    if items.len() > 10 {
        s.push(format!("… ({} in all)", items.len()));
    }
    s.join(", ")
}

/// Covariate standardisation (mean, std per covariate), fitted on the training cohort.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct CovariateScale {
    pub(super) names: Vec<String>,
    pub(super) mean: Vec<f64>,
    pub(super) std: Vec<f64>,
}

impl CovariateScale {
    pub(super) fn fit(names: &[String], rows: &[Vec<f64>]) -> Self {
        let n = rows.len().max(1) as f64;
        let k = names.len();
        let mean: Vec<f64> = (0..k)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let std = (0..k)
            .map(|j| {
                let v = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
                v.sqrt().max(1e-12)
            })
            .collect();
        CovariateScale {
            names: names.to_vec(),
            mean,
            std,
        }
    }

    pub(super) fn apply(&self, row: &[f64]) -> Vec<f32> {
        row.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| ((v - m) / s) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinical_csv_with_defaults_and_errors_that_name_the_slide() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.csv");
        std::fs::write(&p, "slide_id,time,event,age\nA,3.5,1,60\nB,2,0,70\n").unwrap();
        let a = CohortArgs {
            bags: None,
            clinical: Some(p.clone()),
            slide_col: "slide_id".into(),
            time_col: "time".into(),
            event_col: "event".into(),
            patient_col: None,
            covariates: vec!["age".into()],
        };
        let c = read_clinical(&p, &a).unwrap();
        assert_eq!(c.slide, vec!["A", "B"]);
        assert_eq!(c.patient, c.slide);
        assert_eq!(c.time, vec![3.5, 2.0]);
        assert_eq!(c.event, vec![true, false]);
        assert_eq!(c.covariates, vec![vec![60.0], vec![70.0]]);
        std::fs::write(&p, "slide_id,time,event\nA,3.5,1\nB,,0\n").unwrap();
        let e = read_clinical(&p, &a).err().unwrap().to_string();
        assert!(e.contains("slide B"), "{e}");
        std::fs::write(&p, "slide_id,time,event\nA,3.5,2\n").unwrap();
        let a2 = CohortArgs {
            covariates: vec![],
            ..a
        };
        let e = read_clinical(&p, &a2).err().unwrap().to_string();
        assert!(e.contains("use 1 (event) or 0"), "{e}");
    }
}
