//! [`InputsBatch`]: the inputs of any domain's [`EmbeddingInputs`] through one backbone, as a
//! job of the shared batch runner (`dinoadapt embed --source`). Each region source becomes
//! `features/<id>.safetensors` with its region table `regions/<id>.parquet` (feature row n =
//! table row n); each input's status (`status/<input>.json`) is written last; the manifest
//! `manifest.parquet` has one row per region source (or per input that gave none).

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::Backend;
use polars::prelude::{DataFrame, PolarsError};
use serde::{Deserialize, Serialize};

use super::{EmbedError, Progress, RegionEmbedder};
use crate::batch::BatchJob;
use crate::domain::{DomainError, EmbeddingInput, EmbeddingInputs};
use crate::manifest::{column as col, write_parquet, ManifestError};
use crate::regions::{regions_table, RegionSource};

/// Why an input could not be embedded, or the manifest written.
#[derive(Debug, thiserror::Error)]
pub enum InputsBatchError {
    #[error(transparent)]
    Input(#[from] DomainError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Table(#[from] ManifestError),
    #[error("building the manifest: {0}")]
    Polars(#[from] PolarsError),
}

/// What one region source of an input gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Names its files: `features/<id>.safetensors`, `regions/<id>.parquet`.
    pub id: String,
    /// "ok" or "failed".
    pub status: String,
    pub error: String,
    pub regions: usize,
    /// Regions the source skipped (unreadable, all nodata).
    pub skipped: usize,
    pub seconds: f64,
}

/// What happened to one input (`status/<input id>.json`, the last thing written for it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputStatus {
    pub input_id: String,
    /// "done" (the input was read; its sources may still have failed) or "failed".
    pub status: String,
    pub error: String,
    pub sources: Vec<SourceStatus>,
    /// Files written for the input, relative to the output folder.
    pub outputs: Vec<String>,
}

/// The inputs of a domain through one backbone, for [`crate::run_batch`].
pub struct InputsBatch<'a, B: Backend> {
    pub inputs: &'a dyn EmbeddingInputs,
    pub embedder: &'a RegionEmbedder<B>,
    /// The output folder.
    pub out: PathBuf,
    /// Hears each source's regions as they are embedded.
    pub progress: &'a mut dyn Progress,
}

impl<B: Backend> BatchJob for InputsBatch<'_, B> {
    type Item = EmbeddingInput;
    type Status = InputStatus;
    type Error = InputsBatchError;

    fn id(&self, input: &EmbeddingInput) -> String {
        input.id.clone()
    }

    fn run(&mut self, input: &EmbeddingInput) -> Result<InputStatus, InputsBatchError> {
        for dir in ["features", "regions"] {
            let path = self.out.join(dir);
            std::fs::create_dir_all(&path)
                .map_err(|source| InputsBatchError::Io { path, source })?;
        }
        let (out, embedder) = (&self.out, self.embedder);
        let progress = &mut *self.progress;
        let mut sources = Vec::new();
        let mut outputs = Vec::new();
        self.inputs.for_each_source(
            input,
            &mut |id, source: Result<Box<dyn RegionSource>, _>| {
                let t0 = Instant::now();
                let features = format!("features/{id}.safetensors");
                let table = format!("regions/{id}.parquet");
                let mut status = SourceStatus {
                    id,
                    ..Default::default()
                };
                let embedded = source
                    .map_err(|e| EmbedError::Source(e.to_string()))
                    .and_then(|source| embedder.embed(source, &out.join(&features), progress))
                    .and_then(|e| {
                        write_parquet(&out.join(&table), &mut regions_table(&e.regions))
                            .map_err(|m| EmbedError::Source(m.to_string()))?;
                        Ok(e)
                    });
                match embedded {
                    Ok(e) => {
                        status.status = "ok".into();
                        status.regions = e.regions.len();
                        status.skipped = e.skipped.len();
                        outputs.extend([features, table]);
                    }
                    Err(e) => {
                        status.status = "failed".into();
                        status.error = scrub(&e.to_string(), input);
                    }
                }
                status.seconds = t0.elapsed().as_secs_f64();
                sources.push(status);
            },
        )?;
        Ok(InputStatus {
            input_id: input.id.clone(),
            status: "done".into(),
            error: String::new(),
            sources,
            outputs,
        })
    }

    fn failed(&self, input: &EmbeddingInput, error: &InputsBatchError) -> InputStatus {
        InputStatus {
            input_id: input.id.clone(),
            status: "failed".into(),
            error: scrub(&error.to_string(), input),
            ..Default::default()
        }
    }

    /// Read, with at least one source embedded (an input whose every source failed, or that
    /// gave none, is redone on resume and counts as failed).
    fn finished(&self, s: &InputStatus) -> bool {
        s.status == "done" && s.sources.iter().any(|x| x.status == "ok")
    }

    fn outputs(&self, s: &InputStatus) -> Vec<String> {
        s.outputs.clone()
    }

    /// `manifest.parquet` of every input with a status (this run's, earlier runs', other
    /// shards'), in input order.
    fn write_manifest(&mut self, statuses: &[&InputStatus]) -> Result<PathBuf, InputsBatchError> {
        let path = self.out.join("manifest.parquet");
        write_parquet(&path, &mut manifest_table(statuses)?)?;
        Ok(path)
    }
}

/// One row per region source (its input's columns repeated), or per input that gave none.
fn manifest_table(rows: &[&InputStatus]) -> Result<DataFrame, PolarsError> {
    let empty = [SourceStatus::default()];
    let flat: Vec<(&InputStatus, &SourceStatus)> = rows
        .iter()
        .flat_map(|&r| {
            let sources = if r.sources.is_empty() {
                &empty[..]
            } else {
                &r.sources[..]
            };
            sources.iter().map(move |s| (r, s))
        })
        .collect();
    let text = |f: fn(&(&InputStatus, &SourceStatus)) -> String| {
        flat.iter().map(f).collect::<Vec<String>>()
    };
    let file = |dir: &str, ext: &str| -> Vec<String> {
        flat.iter()
            .map(|(_, s)| match s.status.as_str() {
                "ok" => format!("{dir}/{}.{ext}", s.id),
                _ => String::new(),
            })
            .collect()
    };
    DataFrame::new(
        flat.len(),
        vec![
            col::<String>("input_id", text(|(r, _)| r.input_id.clone())),
            col::<String>("input_status", text(|(r, _)| r.status.clone())),
            col::<String>("source_id", text(|(_, s)| s.id.clone())),
            col::<String>(
                "status",
                text(|(r, s)| match (r.status.as_str(), s.status.as_str()) {
                    ("failed", _) => "failed".into(),
                    (_, "") => "failed".into(),
                    (_, st) => st.into(),
                }),
            ),
            col::<String>(
                "error",
                text(|(r, s)| match (r.error.as_str(), s.status.as_str()) {
                    ("", "") => "no regions to embed in this input".into(),
                    ("", _) => s.error.clone(),
                    (e, _) => e.into(),
                }),
            ),
            col::<u64>(
                "regions",
                flat.iter().map(|(_, s)| s.regions as u64).collect(),
            ),
            col::<u64>(
                "skipped_regions",
                flat.iter().map(|(_, s)| s.skipped as u64).collect(),
            ),
            col::<f64>("seconds", flat.iter().map(|(_, s)| s.seconds).collect()),
            col::<String>("features", file("features", "safetensors")),
            col::<String>("regions_table", file("regions", "parquet")),
        ],
    )
}

/// An error message with the input's path replaced by its id (file and folder names can
/// carry patient names; outputs are keyed by the id).
fn scrub(message: &str, input: &EmbeddingInput) -> String {
    let id = format!("input {}", input.id);
    let mut m = message.replace(&input.path.display().to_string(), &id);
    if let Ok(abs) = std::fs::canonicalize(&input.path) {
        m = m.replace(&abs.display().to_string(), &id);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_has_a_row_per_source_and_one_for_an_input_without_any() {
        let ok = SourceStatus {
            id: "a_1".into(),
            status: "ok".into(),
            regions: 4,
            ..Default::default()
        };
        let bad = SourceStatus {
            id: "a_2".into(),
            status: "failed".into(),
            error: "every region was skipped".into(),
            ..Default::default()
        };
        let rows = [
            InputStatus {
                input_id: "a".into(),
                status: "done".into(),
                sources: vec![ok, bad],
                ..Default::default()
            },
            InputStatus {
                input_id: "b".into(),
                status: "failed".into(),
                error: "input b: not a slide".into(),
                ..Default::default()
            },
            InputStatus {
                input_id: "c".into(),
                status: "done".into(),
                ..Default::default()
            },
        ];
        let df = manifest_table(&rows.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(df.height(), 4);
        let strings = |name: &str| -> Vec<String> {
            let c = df.column(name).unwrap().str().unwrap();
            (0..c.len())
                .map(|i| c.get(i).unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(strings("status"), ["ok", "failed", "failed", "failed"]);
        assert_eq!(strings("features")[0], "features/a_1.safetensors");
        assert_eq!(strings("features")[1], "");
        assert_eq!(strings("error")[2], "input b: not a slide");
        assert_eq!(strings("error")[3], "no regions to embed in this input");
    }

    #[test]
    fn paths_in_messages_become_the_input_id() {
        let input = EmbeddingInput {
            id: "case7".into(),
            path: "/data/DOE^JOHN/scan.nii.gz".into(),
        };
        assert_eq!(
            scrub("/data/DOE^JOHN/scan.nii.gz: truncated", &input),
            "input case7: truncated"
        );
    }
}
