//! Dense heads on radiology features (`radiology embed --layers ...`, one file per volume):
//! targets from a label volume (NIfTI or DICOM) rendered slice by slice exactly as the inputs
//! were; prediction of every slice of a volume, written as a label map in NIfTI on the source
//! grid and affine, with `volumes.parquet`.
//!
//! As in the radiology commands, no input path is written: features and predictions are keyed
//! by the volume's pseudonymous id.

use std::path::{Path, PathBuf};

use dinoadapt_datasets::class_planes::argmax_at;
use dinoadapt_datasets::dense::{tagged_preprocessing, untagged_preprocessing};
use dinoadapt_datasets::embedding::Progress;
use dinoadapt_datasets::{
    write_parquet, DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, DenseValues,
    DomainError, FeatureFile, RegionSource,
};
use polars::prelude::{ParquetReader, SerReader};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::labels::label_targets;
use crate::predictions::{SlicePrediction, SliceValues};
use crate::source::{SliceOptions, SliceSource};
use crate::volume_inputs::{
    for_each_sliced_volume, for_each_volume, write_label_map, InputVolumes, VolumeItem, VolumeRow,
};
use crate::volume_table::volumes_table;
use crate::{RadiologyError, Volume};

/// The domain's name in `head.json`'s `preprocessing`.
const DOMAIN: &str = "radiology";

impl From<RadiologyError> for DomainError {
    fn from(e: RadiologyError) -> Self {
        DomainError::input(e)
    }
}

/// How volume slices became model inputs (axis, intensity mapping, channels, size, aspect,
/// step), as `head.json` records it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SliceInput {
    pub slices: SliceOptions,
}

impl SliceInput {
    /// As `head.json` records it.
    pub fn to_preprocessing(&self) -> Result<Value, DomainError> {
        tagged_preprocessing(DOMAIN, self)
    }

    /// Read back from `head.json`.
    pub fn from_preprocessing(value: &Value) -> Result<Self, DomainError> {
        untagged_preprocessing(DOMAIN, value)
    }
}

/// The volumes of `path` (a NIfTI file, or a DICOM file or folder), ids made as the radiology
/// commands make them.
fn inputs(path: &Path) -> InputVolumes {
    InputVolumes {
        paths: vec![path.to_path_buf()],
        id_salt: None,
        id_map: None,
    }
}

/// The one volume of `path` (a NIfTI file, or a DICOM series); `what` names it in errors.
fn one_volume(path: &Path, what: &str) -> Result<Volume, DomainError> {
    let mut volumes = Vec::new();
    let mut errors = Vec::new();
    for_each_volume::<DomainError>(&inputs(path), |item| {
        match item {
            VolumeItem::Volume(v, _) => volumes.push(*v),
            VolumeItem::Failed(row) => errors.push(row.error),
        }
        Ok(())
    })?;
    let message = match (volumes.len(), errors.first()) {
        (1, _) => return Ok(volumes.pop().expect("one volume")),
        (0, Some(e)) => format!("{what}: {e}"),
        (0, None) => format!("{what}: no volume found"),
        (n, _) => format!("{what}: {n} series; give one volume (a NIfTI file or one series)"),
    };
    Err(DomainError::Input(message))
}

/// Slice index of every feature row (the slice table beside the features).
fn slice_indices(f: &FeatureFile) -> Result<Vec<usize>, DomainError> {
    let table = f.table_beside();
    let failed = |e: String| {
        DomainError::Input(format!(
            "{}: the slice table beside the features: {e}",
            table.display()
        ))
    };
    let file = std::fs::File::open(&table).map_err(|e| failed(e.to_string()))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| failed(e.to_string()))?;
    let column = |name: &str| {
        df.column(name)
            .and_then(|c| c.u64().cloned())
            .map_err(|e| failed(e.to_string()))
    };
    let (rows, index) = (column("feature_row")?, column("slice_index")?);
    let mut out = vec![usize::MAX; f.rows];
    for i in 0..df.height() {
        if let (Some(r), Some(s)) = (rows.get(i), index.get(i)) {
            if (r as usize) < f.rows {
                out[r as usize] = s as usize;
            }
        }
    }
    Ok(out)
}

/// Per-slice class targets of `f`: `t.targets` (a label volume on the image's grid, or
/// resampled onto it) through the same reorientation, slices and canvas as the features'
/// inputs. `t.volume` is the image volume the features were made from.
pub fn slice_labels(f: &FeatureFile, t: &DenseTargetOptions) -> Result<DenseLabels, DomainError> {
    if t.values == DenseValues::Heights {
        return Err(DomainError::Input(format!(
            "{}: canopy heads train on heights; radiology features have class labels only \
             (--task segment)",
            f.path.display()
        )));
    }
    let slices: SliceOptions = f.meta_json("slice_options")?;
    let image_path = t.volume.ok_or_else(|| {
        DomainError::Input(format!(
            "{}: radiology features need --volume, the image volume they were made from",
            f.path.display()
        ))
    })?;
    let image = one_volume(image_path, "--volume")?;
    let id = f.meta("volume_id")?;
    if image.id != id {
        return Err(DomainError::Input(format!(
            "{}: the features are of volume {id}; --volume is volume {} (a different image, or \
             another id salt: give the DINOADAPT_ID_SALT the features were made with)",
            f.path.display(),
            image.id
        )));
    }
    let source = SliceSource::new(&image, slices)?;
    let records = source.records();
    let indices = slice_indices(f)?;
    if records.len() != f.rows
        || records
            .iter()
            .zip(&indices)
            .any(|(r, &i)| r.slice_index != i)
    {
        return Err(DomainError::Input(format!(
            "{}: the features' {} slices are not the {} slices the volume gives with the \
             recorded slice options",
            f.path.display(),
            f.rows,
            records.len()
        )));
    }
    let labels = one_volume(t.targets, "--targets")?;
    let ignore = t.ignore_index.min(255) as u8;
    let values = label_targets(&source, &image, &labels, ignore)?;
    Ok(DenseLabels {
        preprocessing: SliceInput { slices }.to_preprocessing()?,
        input_size: slices.input.size,
        values,
        class_names: t.class_names.to_vec(),
        record: json!({
            "volume_id": id,
            "labels": "label volume (path not recorded)",
            "units": "class",
            "ignore_index": ignore,
        }),
    })
}

/// The class label maps of the slices of `source` through `model`.
fn predict_slices(
    source: &mut SliceSource,
    model: &mut dyn DenseModel,
    batch: usize,
    progress: &mut dyn Progress,
) -> Result<Vec<SlicePrediction>, DomainError> {
    let classes = model.channels();
    let size = source.options().input.size;
    let plane = size * size;
    let indices: Vec<usize> = source.records().iter().map(|r| r.slice_index).collect();
    let mut predictions = Vec::with_capacity(indices.len());
    progress.start(indices.len(), "slices");
    while let Some(b) = source
        .next_batch(batch.max(1))
        .map_err(DomainError::Input)?
    {
        let n = b.regions.len();
        let probs = model
            .predict(b.pixels, n, (size, size))
            .map_err(DomainError::Input)?;
        for one in probs.chunks(classes * plane).take(n) {
            let labels = (0..plane)
                .map(|q| argmax_at(one, classes, plane, q) as u8)
                .collect();
            predictions.push(SlicePrediction {
                index: indices[predictions.len()],
                values: SliceValues::U8(labels),
            });
        }
        progress.set(predictions.len());
    }
    progress.finish();
    Ok(predictions)
}

/// Every slice of the volume(s) of `o.input` through `model`: `<id>_segment.nii.gz` (class
/// ids, uint8, on the source grid and affine) in the folder `o.out`, with `volumes.parquet`.
pub fn predict_volumes(
    o: &DensePredictOptions,
    model: &mut dyn DenseModel,
    progress: &mut dyn Progress,
) -> Result<Value, DomainError> {
    if o.values == DenseValues::Heights {
        return Err(DomainError::Input(
            "a radiology head predicts classes, not heights".into(),
        ));
    }
    if model.channels() > 255 {
        return Err(DomainError::Input(
            "a label map of more than 255 classes".into(),
        ));
    }
    let slices = SliceInput::from_preprocessing(o.preprocessing)?.slices;
    std::fs::create_dir_all(o.out)
        .map_err(|e| DomainError::Input(format!("{}: {e}", o.out.display())))?;
    let mut rows = Vec::new();
    for_each_sliced_volume::<DomainError>(
        &inputs(o.input),
        slices,
        &mut rows,
        |volume, mut source, row| {
            let predictions = predict_slices(&mut source, model, o.batch, progress)?;
            let name = format!("{}_segment.nii.gz", volume.id);
            write_label_map(o.out, name, volume, &slices, &predictions, row);
            Ok(())
        },
    )?;
    let table: PathBuf = o.out.join("volumes.parquet");
    write_parquet(&table, &mut volumes_table(&rows)).map_err(DomainError::input)?;
    let volume = |r: &VolumeRow| {
        json!({
            "volume_id": r.id,
            "status": r.status,
            "error": r.error,
            "output": r.output,
            "slices": r.regions,
        })
    };
    Ok(json!({
        "volumes_ok": rows.iter().filter(|r| r.status == "ok").count(),
        "volumes_failed": rows.iter().filter(|r| r.status != "ok").count(),
        "table": table.file_name().map(|n| n.to_string_lossy().into_owned()),
        "volumes": rows.iter().map(volume).collect::<Vec<_>>(),
    }))
}
