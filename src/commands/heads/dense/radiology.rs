//! Radiology features (`radiology embed --layers ...`, one file per volume): targets from a
//! label volume (NIfTI or DICOM) rendered slice by slice exactly as the inputs were; prediction
//! of every slice of a volume, written as a label map in NIfTI on the source grid and affine.
//!
//! As in the radiology commands, no input path is written: features and predictions are keyed
//! by the volume's pseudonymous id.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use dinoadapt_datasets::RegionSource;
use dinoadapt_heads::dense::argmax_at;
use dinoadapt_radiology::labels::label_targets;
use dinoadapt_radiology::predictions::{SlicePrediction, SliceValues};
use dinoadapt_radiology::source::{SliceOptions, SliceSource};
use dinoadapt_radiology::volume::Volume;
use polars::prelude::{ParquetReader, SerReader};
use serde_json::json;

use super::folder::{predictor, HeadFolder, Preprocessing};
use super::targets::{Labelled, TargetArgs};
use super::DensePredictArgs;
use crate::commands::heads::Common;
use crate::commands::radiology::volumes::{
    for_each_sliced_volume, for_each_volume, write_label_map, VolumeItem, VolumeRow,
};
use crate::commands::radiology::{finish, VolumeInputs};
use crate::device::{on_device, BackendJob};
use crate::model_args::ModelArgs;
use dinoadapt_heads::dense::features::Features;

fn inputs(path: &Path) -> VolumeInputs {
    VolumeInputs {
        inputs: vec![path.to_path_buf()],
        id_salt: None,
        id_map: None,
    }
}

/// The one volume of `path` (a NIfTI file, or a DICOM series).
fn one_volume(path: &Path, what: &str) -> anyhow::Result<Volume> {
    let mut volumes = Vec::new();
    let mut errors = Vec::new();
    for_each_volume(&inputs(path), |item| {
        match item {
            VolumeItem::Volume(v, _) => volumes.push(*v),
            VolumeItem::Failed(row) => errors.push(row.error),
        }
        Ok(())
    })?;
    match (volumes.len(), errors.first()) {
        (1, _) => Ok(volumes.pop().expect("one volume")),
        (0, Some(e)) => bail!("{what}: {e}"),
        (0, None) => bail!("{what}: no volume found"),
        (n, _) => bail!("{what}: {n} series; give one volume (a NIfTI file or one series)"),
    }
}

/// Slice index of every feature row (the slice table beside the features).
fn slice_indices(f: &Features) -> anyhow::Result<Vec<usize>> {
    let table = f.path.with_extension("parquet");
    let df =
        ParquetReader::new(std::fs::File::open(&table).with_context(|| {
            format!("{}: the slice table beside the features", table.display())
        })?)
        .finish()?;
    let (rows, index) = (
        df.column("feature_row")?.u64()?,
        df.column("slice_index")?.u64()?,
    );
    let mut out = vec![usize::MAX; f.n];
    for i in 0..df.height() {
        if let (Some(r), Some(s)) = (rows.get(i), index.get(i)) {
            if (r as usize) < f.n {
                out[r as usize] = s as usize;
            }
        }
    }
    Ok(out)
}

/// Per-slice class targets: `--targets` (a label volume on the image's grid, or resampled onto
/// it) through the same reorientation, slices and canvas as the features' inputs.
pub fn labelled(f: &Features, t: &TargetArgs) -> anyhow::Result<Labelled> {
    let slices: SliceOptions = serde_json::from_str(f.meta("slice_options")?)
        .with_context(|| format!("{}: `slice_options` metadata", f.path.display()))?;
    let image_path = t.volume.with_context(|| {
        format!(
            "{}: radiology features need --volume, the image volume they were made from",
            f.path.display()
        )
    })?;
    let image = one_volume(image_path, "--volume")?;
    let id = f.meta("volume_id")?;
    if image.id != id {
        bail!(
            "{}: the features are of volume {id}; --volume is volume {} (a different image, or \
             another id salt: give the DINOADAPT_ID_SALT the features were made with)",
            f.path.display(),
            image.id
        );
    }
    let source = SliceSource::new(&image, slices)?;
    let records = source.records();
    let indices = slice_indices(f)?;
    if records.len() != f.n
        || records
            .iter()
            .zip(&indices)
            .any(|(r, &i)| r.slice_index != i)
    {
        bail!(
            "{}: the features' {} slices are not the {} slices the volume gives with the \
             recorded slice options",
            f.path.display(),
            f.n,
            records.len()
        );
    }
    let labels = one_volume(t.targets, "--targets")?;
    let ignore = t.ignore_index.min(255) as u8;
    let values = label_targets(&source, &image, &labels, ignore)?;
    Ok(Labelled {
        preprocessing: Preprocessing::Radiology { slices },
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

struct PredictJob<'a> {
    head: &'a HeadFolder,
    slices: SliceOptions,
    args: &'a DensePredictArgs,
    model: ModelArgs,
    common: &'a Common,
}

impl BackendJob for PredictJob<'_> {
    type Output = Vec<VolumeRow>;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Vec<VolumeRow>> {
        let (args, common) = (self.args, self.common);
        let out = common.out.as_deref().context("--out: the output folder")?;
        let input = args.input.as_deref().context("--input: the volume")?;
        let p = predictor::<B>(self.head, &self.model, common.device, false, device)?;
        let classes = p.channels();
        let size = self.slices.input.size;
        let plane = size * size;
        std::fs::create_dir_all(out)?;
        let mut rows = Vec::new();
        for_each_sliced_volume(
            &inputs(input),
            self.slices,
            &mut rows,
            |volume, mut source, row| {
                let indices: Vec<usize> = source.records().iter().map(|r| r.slice_index).collect();
                let mut predictions = Vec::with_capacity(indices.len());
                while let Some(b) = source
                    .next_batch(args.predict_batch.max(1))
                    .map_err(anyhow::Error::msg)?
                {
                    let n = b.regions.len();
                    let probs = p.predict(b.pixels, n, (size, size))?;
                    for s in 0..n {
                        let one = &probs[s * classes * plane..(s + 1) * classes * plane];
                        let labels = (0..plane)
                            .map(|q| argmax_at(one, classes, plane, q) as u8)
                            .collect();
                        predictions.push(SlicePrediction {
                            index: indices[predictions.len()],
                            values: SliceValues::U8(labels),
                        });
                    }
                }
                let name = format!("{}_segment.nii.gz", volume.id);
                write_label_map(out, name, volume, &self.slices, &predictions, row);
                if !common.quiet {
                    eprintln!(
                        "{}: {} slices -> {}",
                        volume.id,
                        predictions.len(),
                        row.output
                    );
                }
                Ok(())
            },
        )?;
        Ok(rows)
    }
}

/// Every slice of the volume(s) of `--input` through backbone + head: `<id>_segment.nii.gz`
/// (class ids, uint8, on the source grid and affine) in `--out`, with volumes.parquet.
pub fn predict(
    head: &HeadFolder,
    slices: &SliceOptions,
    args: &DensePredictArgs,
    model: &ModelArgs,
    common: &Common,
) -> anyhow::Result<ExitCode> {
    if head.info.head.output_channels() > 255 {
        bail!("a label map of more than 255 classes");
    }
    let rows = on_device(
        common.device,
        PredictJob {
            head,
            slices: *slices,
            args,
            model: model.clone(),
            common,
        },
    )?;
    finish(
        common.out.as_deref().context("--out")?,
        &rows,
        "heads predict",
    )
}
