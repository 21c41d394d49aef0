//! `radiology embed` as a batch of inputs for the shared runner (`dinoadapt_datasets::batch`):
//! one item per input (a NIfTI file, or a DICOM file or folder with all its series), whose
//! status holds its rows of `volumes.parquet` and the pooled feature of each volume embedded;
//! the manifest is `volumes.parquet` + `volumes.safetensors` of every input with a status, in
//! input order. Each volume's slices are embedded into `<id>.safetensors` with their slice
//! table `<id>.parquet` (feature row n = slice record n).

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::backend::Backend;
use dinoadapt_datasets::batch::BatchJob;
use dinoadapt_datasets::embedding::{EmbedError, Progress, RegionEmbedder};
use dinoadapt_datasets::{write_parquet, FeatureWriter, ManifestError, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::error_chain;
use crate::source::SliceOptions;
use crate::volume_inputs::{for_each_sliced_volume_of, input_id, scrub, VolumeRow};
use crate::volume_table::{slice_table, volumes_table};
use crate::Pseudonymizer;

/// Why an input of the batch could not be embedded, or its tables written.
#[derive(Debug, thiserror::Error)]
pub enum EmbedBatchError {
    #[error(transparent)]
    Volume(#[from] crate::RadiologyError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Table(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Polars(#[from] polars::prelude::PolarsError),
}

/// What one input gave (`status/input-<id>.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InputStatus {
    /// The input's rows of volumes.parquet, in the order met.
    pub volumes: Vec<VolumeRow>,
    /// The pooled feature (mean class token over the slices) of each row, empty where the
    /// volume was not embedded; f32 values held as f64, so they read back exactly.
    pub cls_mean: Vec<Vec<f64>>,
}

/// The inputs of `radiology embed` through one backbone.
pub struct VolumeEmbedBatch<'a, B: Backend> {
    pub out: PathBuf,
    pub pseudo: Pseudonymizer,
    pub options: SliceOptions,
    pub embedder: &'a RegionEmbedder<B>,
    /// Recorded in volumes.safetensors.
    pub metadata: HashMap<String, String>,
    /// Reports each volume's slices as they are embedded.
    pub progress: &'a mut dyn Progress,
    /// The rows of the last manifest written (every volume of every input with a status).
    pub rows: Vec<VolumeRow>,
}

impl<B: Backend> BatchJob for VolumeEmbedBatch<'_, B> {
    /// The input's position on the command line and its path.
    type Item = (usize, PathBuf);
    type Status = InputStatus;
    type Error = EmbedBatchError;

    fn id(&self, (_, path): &(usize, PathBuf)) -> String {
        input_id(&self.pseudo, path)
    }

    fn run(&mut self, (index, path): &(usize, PathBuf)) -> Result<InputStatus, EmbedBatchError> {
        let mut rows = Vec::new();
        let mut means: Vec<(String, Vec<f64>)> = Vec::new();
        let (out, embedder) = (&self.out, self.embedder);
        let progress = &mut *self.progress;
        for_each_sliced_volume_of(
            &self.pseudo,
            *index,
            path,
            self.options,
            &mut rows,
            |volume, source, row: &mut VolumeRow| -> Result<(), EmbedBatchError> {
                let records = source.records().to_vec();
                let name = format!("{}.safetensors", volume.id);
                match embedder.embed(source, &out.join(&name), progress) {
                    Ok(e) => {
                        write_parquet(
                            &out.join(format!("{}.parquet", volume.id)),
                            &mut slice_table(&records[..e.regions.len()])?,
                        )?;
                        // The pooled volume feature: the mean class token over its slices.
                        let n = e.regions.len();
                        let dim = e.cls.len() / n;
                        let mut mean = vec![0f32; dim];
                        for r in e.cls.chunks(dim) {
                            for (m, v) in mean.iter_mut().zip(r) {
                                *m += v / n as f32;
                            }
                        }
                        means.push((volume.id.clone(), mean.into_iter().map(f64::from).collect()));
                        row.output = name;
                        row.regions = e.regions.len();
                    }
                    Err(e) => row.fail(error_chain(&e)),
                }
                Ok(())
            },
        )?;
        let cls_mean = rows
            .iter()
            .map(|r| {
                let embedded = r.status == "ok" && !r.output.is_empty();
                means
                    .iter()
                    .find(|(id, _)| embedded && *id == r.id)
                    .map(|(_, m)| m.clone())
                    .unwrap_or_default()
            })
            .collect();
        Ok(InputStatus {
            volumes: rows,
            cls_mean,
        })
    }

    fn failed(&self, (index, path): &(usize, PathBuf), error: &EmbedBatchError) -> InputStatus {
        let label = format!("input #{index}");
        InputStatus {
            volumes: vec![VolumeRow {
                input_index: *index,
                status: "failed".into(),
                error: scrub(&error_chain(error), path, &label),
                ..Default::default()
            }],
            cls_mean: vec![Vec::new()],
        }
    }

    /// An input is finished when at least one of its volumes was embedded.
    fn finished(&self, s: &InputStatus) -> bool {
        s.cls_mean.iter().any(|m| !m.is_empty())
    }

    fn outputs(&self, s: &InputStatus) -> Vec<String> {
        s.volumes
            .iter()
            .zip(&s.cls_mean)
            .filter(|(_, m)| !m.is_empty())
            .flat_map(|(r, _)| [r.output.clone(), format!("{}.parquet", r.id)])
            .collect()
    }

    /// volumes.safetensors (the pooled features, one row per volume embedded) and
    /// volumes.parquet (every row, with its feature row), in input order.
    fn write_manifest(&mut self, statuses: &[&InputStatus]) -> Result<PathBuf, EmbedBatchError> {
        let mut rows = Vec::new();
        let mut pooled: Vec<f32> = Vec::new();
        let mut dim = 0;
        for s in statuses {
            for (row, mean) in s.volumes.iter().zip(&s.cls_mean) {
                let mut row = row.clone();
                row.feature_row = None;
                if !mean.is_empty() {
                    dim = mean.len();
                    row.feature_row = Some((pooled.len() / dim) as u64);
                    pooled.extend(mean.iter().map(|&v| v as f32));
                }
                rows.push(row);
            }
        }
        if let Some(n) = pooled.len().checked_div(dim) {
            let mut w = FeatureWriter::create(
                &self.out.join("volumes.safetensors"),
                &[("cls_mean".to_string(), vec![n, dim])],
                &self.metadata,
            )?;
            w.append("cls_mean", &pooled)?;
            w.finish()?;
        }
        let table = self.out.join("volumes.parquet");
        write_parquet(&table, &mut volumes_table(&rows))?;
        self.rows = rows;
        Ok(table)
    }
}
