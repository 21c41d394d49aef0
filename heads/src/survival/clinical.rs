//! The clinical table (CSV or Parquet, read with polars): slide, time, event, patient and
//! numeric covariates, with their standardisation.

use std::collections::HashSet;
use std::path::Path;

use polars::prelude::{CsvReadOptions, DataFrame, DataType, ParquetReader, SerReader};

use super::StudyError;

/// The clinical table's column names.
#[derive(Debug, Clone, PartialEq)]
pub struct ClinicalColumns {
    /// The slide id (the bag file names without extension).
    pub slide: String,
    /// The time (any unit; kept as is).
    pub time: String,
    /// The event (1 = event observed, 0 = censored).
    pub event: String,
    /// The patient id; `None`: `patient_id` if the table has it, else the slide id.
    pub patient: Option<String>,
    /// Numeric covariates joined to the slide embedding (e.g. age, stage).
    pub covariates: Vec<String>,
}

impl Default for ClinicalColumns {
    fn default() -> Self {
        ClinicalColumns {
            slide: "slide_id".into(),
            time: "time".into(),
            event: "event".into(),
            patient: None,
            covariates: Vec::new(),
        }
    }
}

/// Which of the [`ClinicalColumns`] a column was asked for as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRole {
    Slide,
    Time,
    Event,
    Patient,
    Covariate,
}

/// The rows of a clinical table, one per slide.
#[derive(Debug, Clone, PartialEq)]
pub struct Clinical {
    pub slide: Vec<String>,
    pub time: Vec<f64>,
    pub event: Vec<bool>,
    pub patient: Vec<String>,
    /// The covariate columns, in the order of each slide's values.
    pub covariate_names: Vec<String>,
    /// Per slide, the raw covariate values.
    pub covariates: Vec<Vec<f64>>,
}

/// A CSV or Parquet table, by its extension.
pub fn read_table(path: &Path) -> Result<DataFrame, StudyError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let df = match ext.as_str() {
        "parquet" | "pq" => {
            ParquetReader::new(
                std::fs::File::open(path).map_err(|source| StudyError::Open {
                    path: path.to_path_buf(),
                    source,
                })?,
            )
            .finish()
        }
        "csv" => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(None)
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .map_err(|source| StudyError::OpenCsv {
                path: path.to_path_buf(),
                source,
            })?
            .finish(),
        _ => {
            return Err(StudyError::TableFormat {
                path: path.to_path_buf(),
            })
        }
    };
    df.map_err(|source| StudyError::Table {
        path: path.to_path_buf(),
        source,
    })
}

impl Clinical {
    /// Read the table at `path` with the given columns: slide ids unique, times finite and not
    /// negative, events 0 or 1, covariates numeric.
    pub fn read(path: &Path, columns: &ClinicalColumns) -> Result<Clinical, StudyError> {
        let df = read_table(path)?;
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let column = |name: &str, role: ColumnRole| {
            df.column(name).map_err(|source| StudyError::NoColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                columns: names.clone(),
                role,
                source,
            })
        };
        let strings = |name: &str, role: ColumnRole| -> Result<Vec<String>, StudyError> {
            let c = column(name, role)?.cast(&DataType::String)?;
            let ca = c.str()?;
            (0..df.height())
                .map(|i| {
                    ca.get(i)
                        .map(str::to_string)
                        .ok_or_else(|| StudyError::EmptyCell {
                            path: path.to_path_buf(),
                            column: name.to_string(),
                            row: i + 1,
                        })
                })
                .collect()
        };
        let numbers =
            |name: &str, role: ColumnRole, slide: &[String]| -> Result<Vec<f64>, StudyError> {
                let c = column(name, role)?
                    .cast(&DataType::Float64)
                    .map_err(|source| StudyError::NotNumeric {
                        path: path.to_path_buf(),
                        column: name.to_string(),
                        source,
                    })?;
                let ca = c.f64()?;
                (0..df.height())
                    .map(|i| {
                        ca.get(i)
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| StudyError::NotANumber {
                                path: path.to_path_buf(),
                                column: name.to_string(),
                                slide: slide[i].clone(),
                            })
                    })
                    .collect()
            };
        let slide = strings(&columns.slide, ColumnRole::Slide)?;
        let mut seen = HashSet::new();
        let dup: Vec<String> = slide.iter().filter(|s| !seen.insert(*s)).cloned().collect();
        if !dup.is_empty() {
            return Err(StudyError::DuplicateSlides {
                path: path.to_path_buf(),
                slides: dup,
            });
        }
        let time = numbers(&columns.time, ColumnRole::Time, &slide)?;
        if let Some(i) = time.iter().position(|&t| t < 0.0) {
            return Err(StudyError::NegativeTime {
                path: path.to_path_buf(),
                slide: slide[i].clone(),
            });
        }
        let event: Vec<bool> = numbers(&columns.event, ColumnRole::Event, &slide)?
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                if e == 1.0 || e == 0.0 {
                    Ok(e == 1.0)
                } else {
                    Err(StudyError::EventValue {
                        path: path.to_path_buf(),
                        slide: slide[i].clone(),
                        value: e,
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        let patient = match &columns.patient {
            Some(p) => strings(p, ColumnRole::Patient)?,
            None if names.iter().any(|n| n == "patient_id") => {
                strings("patient_id", ColumnRole::Patient)?
            }
            None => slide.clone(),
        };
        let cov_columns: Vec<Vec<f64>> = columns
            .covariates
            .iter()
            .map(|c| numbers(c, ColumnRole::Covariate, &slide))
            .collect::<Result<_, _>>()?;
        let covariates = (0..slide.len())
            .map(|i| cov_columns.iter().map(|c| c[i]).collect())
            .collect();
        Ok(Clinical {
            slide,
            time,
            event,
            patient,
            covariate_names: columns.covariates.clone(),
            covariates,
        })
    }
}

/// The first few items of a list, for messages.
pub(crate) fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let mut s: Vec<String> = items.iter().take(10).map(|x| x.to_string()).collect();
    if items.len() > 10 {
        s.push(format!("… ({} in all)", items.len()));
    }
    s.join(", ")
}

/// Covariate standardisation (mean, std per covariate), fitted on the training cohort.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CovariateScale {
    pub names: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl CovariateScale {
    pub fn fit(names: &[String], rows: &[Vec<f64>]) -> Self {
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

    pub fn apply(&self, row: &[f64]) -> Vec<f32> {
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
        let a = ClinicalColumns {
            covariates: vec!["age".into()],
            ..ClinicalColumns::default()
        };
        let c = Clinical::read(&p, &a).unwrap();
        assert_eq!(c.slide, vec!["A", "B"]);
        assert_eq!(c.patient, c.slide);
        assert_eq!(c.time, vec![3.5, 2.0]);
        assert_eq!(c.event, vec![true, false]);
        assert_eq!(c.covariates, vec![vec![60.0], vec![70.0]]);
        std::fs::write(&p, "slide_id,time,event\nA,3.5,1\nB,,0\n").unwrap();
        let e = Clinical::read(&p, &a).err().unwrap().to_string();
        assert!(e.contains("slide B"), "{e}");
        std::fs::write(&p, "slide_id,time,event\nA,3.5,2\n").unwrap();
        let a2 = ClinicalColumns {
            covariates: vec![],
            ..a
        };
        let e = Clinical::read(&p, &a2).err().unwrap().to_string();
        assert!(e.contains("use 1 (event) or 0"), "{e}");
    }
}
