//! Dense heads on satellite features (`satellite embed --layers ...`): targets from a label
//! raster (classes, or heights in metres) warped onto each source raster's grid; prediction
//! over a whole raster into a GeoTIFF on its grid (class map + probabilities, or metres).

use std::path::{Path, PathBuf};

use dinoadapt_datasets::dense::{tagged_preprocessing, untagged_preprocessing};
use dinoadapt_datasets::embedding::Progress;
use dinoadapt_datasets::{
    DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, DenseValues, DomainError,
    FeatureFile,
};
use polars::prelude::{ParquetReader, SerReader};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::align::{chip_targets, LabelResampling};
use crate::predict::{class_map, predict_raster, ChipBatch, ChipModel, PredictConfig};
use crate::quicklook::write_prediction_report;
use crate::{Blend, Normalization, Raster, Window};

/// The domain's name in `head.json`'s `preprocessing`.
const DOMAIN: &str = "satellite";

/// How satellite chips became model inputs: bands, size, stride, and the per-band
/// normalisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChipInput {
    pub normalization: Normalization,
    pub bands: Vec<usize>,
    pub chip_size: usize,
    pub chip_stride: usize,
}

impl ChipInput {
    /// The chips of the feature file `f`, from its metadata.
    pub fn of(f: &FeatureFile) -> Result<Self, DomainError> {
        let chip_size: usize = f.meta_json("chip_size")?;
        Ok(ChipInput {
            normalization: f.meta_json("normalization")?,
            bands: f.meta_json("bands")?,
            chip_size,
            chip_stride: f
                .meta
                .get("chip_stride")
                .and_then(|s| s.parse().ok())
                .unwrap_or(chip_size),
        })
    }

    /// As `head.json` records it.
    pub fn to_preprocessing(&self) -> Result<Value, DomainError> {
        tagged_preprocessing(DOMAIN, self)
    }

    /// Read back from `head.json`.
    pub fn from_preprocessing(value: &Value) -> Result<Self, DomainError> {
        untagged_preprocessing(DOMAIN, value)
    }
}

/// The resampling of the label raster named `name` (default: nearest for classes, bilinear
/// for heights).
pub fn label_resampling(
    name: Option<&str>,
    values: DenseValues,
) -> Result<LabelResampling, DomainError> {
    let name = name.unwrap_or(match values {
        DenseValues::Classes => "nearest",
        DenseValues::Heights => "bilinear",
    });
    LabelResampling::parse(name).ok_or_else(|| {
        DomainError::Input(format!(
            "--target-resampling `{name}`: nearest, bilinear, average or mode"
        ))
    })
}

/// Source raster and window of every feature row (the chips table beside the features).
fn chip_windows(f: &FeatureFile) -> Result<Vec<(String, Window)>, DomainError> {
    let table = f.table_beside();
    let failed = |e: polars::error::PolarsError| {
        DomainError::Input(format!(
            "{}: the chips table beside the features: {e}",
            table.display()
        ))
    };
    let file = std::fs::File::open(&table).map_err(|e| {
        DomainError::Input(format!(
            "{}: the chips table beside the features: {e}",
            table.display()
        ))
    })?;
    let df = ParquetReader::new(file).finish().map_err(failed)?;
    let column = |name: &str| df.column(name).map_err(failed);
    let (fr, src) = (
        column("feature_row")?.u64().map_err(failed)?,
        column("source")?.str().map_err(failed)?,
    );
    let (c, r) = (
        column("col")?.i64().map_err(failed)?,
        column("row")?.i64().map_err(failed)?,
    );
    let (w, h) = (
        column("width")?.u64().map_err(failed)?,
        column("height")?.u64().map_err(failed)?,
    );
    let mut windows: Vec<Option<(String, Window)>> = vec![None; f.rows];
    for i in 0..df.height() {
        let row = fr.get(i).unwrap_or(u64::MAX) as usize;
        if row < f.rows {
            windows[row] = Some((
                src.get(i).unwrap_or_default().to_string(),
                Window {
                    col: c.get(i).unwrap_or(0),
                    row: r.get(i).unwrap_or(0),
                    width: w.get(i).unwrap_or(0) as usize,
                    height: h.get(i).unwrap_or(0) as usize,
                },
            ));
        }
    }
    windows
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            w.ok_or_else(|| {
                DomainError::Input(format!("{}: no row for feature {i}", table.display()))
            })
        })
        .collect()
}

/// Target values of every chip of `f`, NaN where the label raster has no data.
pub fn chip_labels(f: &FeatureFile, t: &DenseTargetOptions) -> Result<DenseLabels, DomainError> {
    let input = ChipInput::of(f)?;
    let resampling = label_resampling(t.resampling, t.values)?;
    let label = Raster::open(t.targets).map_err(DomainError::input)?;
    let size = input.chip_size;
    let scratch = std::env::temp_dir().join(format!("dinoadapt-dense-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(DomainError::input)?;
    let values = chip_targets(&label, &chip_windows(f)?, size, resampling, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(DenseLabels {
        preprocessing: input.to_preprocessing()?,
        input_size: size,
        values: values.map_err(DomainError::input)?,
        class_names: t.class_names.to_vec(),
        record: json!({
            "raster": t.targets.display().to_string(),
            "resampling": resampling,
            "units": if t.values == DenseValues::Heights { "m" } else { "class" },
        }),
    })
}

/// A dense model fed chips normalised as the features' chips were.
struct NormalizedChips<'a> {
    model: &'a mut dyn DenseModel,
    normalization: Normalization,
}

impl ChipModel for NormalizedChips<'_> {
    fn channels(&self) -> usize {
        self.model.channels()
    }

    fn predict(&mut self, batch: &ChipBatch) -> Result<Vec<f32>, String> {
        self.model.predict(
            batch.normalized(&self.normalization),
            batch.chips.len(),
            (batch.size, batch.size),
        )
    }
}

/// `path` with `suffix` appended to its name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// `model` over the whole raster `o.input` into the GeoTIFF `o.out` on its grid: heights in
/// metres (one band), or the class map and the class probabilities (band 1 the class, then one
/// band per class). Chips overlap by half unless `o.stride` says otherwise.
pub fn predict_chips(
    o: &DensePredictOptions,
    model: &mut dyn DenseModel,
    progress: &mut dyn Progress,
) -> Result<Value, DomainError> {
    let input = ChipInput::from_preprocessing(o.preprocessing)?;
    let raster = Raster::open(o.input).map_err(DomainError::input)?;
    let size = input.chip_size;
    let blend = Blend::parse(o.blend).ok_or_else(|| {
        DomainError::Input(format!(
            "--blend `{}`: cosine, gaussian or uniform",
            o.blend
        ))
    })?;
    let cfg = PredictConfig {
        bands: input.bands.clone(),
        chip_size: size,
        stride: o.stride.filter(|&s| s <= size).unwrap_or((size / 2).max(1)),
        blend,
        batch_size: o.batch.max(1),
        nodata: Some(o.nodata.unwrap_or(f64::NAN)),
        cog: o.cog && o.values == DenseValues::Heights,
    };
    let classes = model.channels();
    let target = match o.values {
        DenseValues::Heights => o.out.to_path_buf(),
        DenseValues::Classes => with_suffix(o.out, ".probabilities.tif"),
    };
    let mut chips = NormalizedChips {
        model,
        normalization: input.normalization,
    };
    let mut started = false;
    let summary = predict_raster(&raster, &target, &cfg, &mut chips, &mut |done, total| {
        if !started {
            progress.start(total, "chips");
            started = true;
        }
        progress.set(done);
    });
    progress.finish();
    let mut summary = summary.map_err(DomainError::input)?;
    let range = if o.values == DenseValues::Classes {
        summary.output = class_map(&target, o.out, classes, o.cog).map_err(DomainError::input)?;
        std::fs::remove_file(&target)
            .map_err(|e| DomainError::Input(format!("removing {}: {e}", target.display())))?;
        Some((0.0, classes.saturating_sub(1).max(1) as f32))
    } else {
        None
    };
    // A quick look beside the output (heights over their 2nd-98th percentiles, classes over
    // their ids) and the run report.
    let page = write_prediction_report(&summary, range).map_err(DomainError::input)?;
    let mut value = serde_json::to_value(&summary).map_err(DomainError::input)?;
    value["report"] = json!(page.display().to_string());
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_resampling_defaults_to_nearest_for_classes_and_bilinear_for_heights() {
        let classes = label_resampling(None, DenseValues::Classes).unwrap();
        let heights = label_resampling(None, DenseValues::Heights).unwrap();
        assert_eq!(classes, LabelResampling::Nearest);
        assert_eq!(heights, LabelResampling::Bilinear);
        let e = label_resampling(Some("cubic"), DenseValues::Classes).unwrap_err();
        assert!(e.to_string().contains("nearest, bilinear"), "{e}");
    }

    #[test]
    fn chip_input_is_read_from_the_metadata_and_round_trips_through_head_json() {
        let meta = std::collections::HashMap::from([
            ("chip_size".to_string(), "56".to_string()),
            ("bands".to_string(), "[1,2,3]".to_string()),
            (
                "normalization".to_string(),
                serde_json::to_string(&Normalization {
                    preset: "none".into(),
                    scale: crate::normalize::Scale::Identity,
                    mean: vec![0.0; 3],
                    std: vec![1.0; 3],
                })
                .unwrap(),
            ),
        ]);
        let f = FeatureFile {
            path: Path::new("chips.safetensors"),
            meta: &meta,
            rows: 0,
        };
        let input = ChipInput::of(&f).unwrap();
        assert_eq!((input.chip_size, input.chip_stride), (56, 56));
        let v = input.to_preprocessing().unwrap();
        assert_eq!(v["domain"], "satellite");
        assert_eq!(v["chip_size"], 56);
        let back = ChipInput::from_preprocessing(&v).unwrap();
        assert_eq!(back.bands, vec![1, 2, 3]);
    }
}
