//! Dense heads on pathology features (`pathology embed --layers ...`, a bag per slide): targets
//! from GeoJSON annotations (QuPath's export, or the tissue contours `pathology tissue` writes)
//! rasterised onto every tile; prediction over a slide's tissue tiles, stitched into a slide
//! mask written as an 8-bit PNG and as GeoJSON polygons in level-0 pixels (QuPath: File >
//! Import objects).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dinoadapt_datasets::dense::{tagged_preprocessing, untagged_preprocessing};
use dinoadapt_datasets::embedding::Progress;
use dinoadapt_datasets::{
    DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, DenseValues, DomainError,
    FeatureFile,
};
use polars::prelude::{ParquetReader, SerReader};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::stitch::mask_geojson;
use crate::{
    detect_tissue, plan_tiles, Annotations, OpenOptions, PathologyError, Slide, Stitcher,
    TileSource, TilingConfig, TissueConfig, NOT_PREDICTED,
};

/// The domain's name in `head.json`'s `preprocessing`.
const DOMAIN: &str = "pathology";

/// Class 0 of a slide head: no annotation polygon.
const BACKGROUND: &str = "background";

impl From<PathologyError> for DomainError {
    fn from(e: PathologyError) -> Self {
        DomainError::input(e)
    }
}

/// How slide tiles became model inputs: pixel size, side and stride, and the RGB
/// normalisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TileInput {
    pub tiling: TilingConfig,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl TileInput {
    /// The tiles of the feature file `f`, from its metadata.
    pub fn of(f: &FeatureFile) -> Result<Self, DomainError> {
        Ok(TileInput {
            tiling: f.meta_json("tiling")?,
            mean: f.meta_json("normalization_mean")?,
            std: f.meta_json("normalization_std")?,
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

/// The tile table of a bag: `tiles/<slide>.parquet` beside the `features/` folder (as
/// `pathology embed` writes them), or `<features>.parquet`.
fn tile_table(f: &FeatureFile) -> PathBuf {
    let stem = f.path.file_stem().unwrap_or_default();
    let mut name = stem.to_os_string();
    name.push(".parquet");
    match f.path.parent().and_then(Path::parent) {
        Some(root) if root.join("tiles").join(&name).is_file() => root.join("tiles").join(name),
        _ => f.table_beside(),
    }
}

/// Level-0 rectangle (x, y, w, h) of every feature row.
fn tile_rects(f: &FeatureFile) -> Result<Vec<[f64; 4]>, DomainError> {
    let table = tile_table(f);
    let failed = |e: String| {
        DomainError::Input(format!(
            "{}: the tile table of the features: {e}",
            table.display()
        ))
    };
    let file = std::fs::File::open(&table).map_err(|e| failed(e.to_string()))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| failed(e.to_string()))?;
    let column = |name: &str| df.column(name).map_err(|e| failed(e.to_string()));
    let polars_failed = |e: polars::error::PolarsError| failed(e.to_string());
    let rows = column("feature_row")?.u64().map_err(polars_failed)?;
    let (x, y) = (
        column("x")?.i64().map_err(polars_failed)?,
        column("y")?.i64().map_err(polars_failed)?,
    );
    let (w, h) = (
        column("width")?.f64().map_err(polars_failed)?,
        column("height")?.f64().map_err(polars_failed)?,
    );
    let mut out = vec![None; f.rows];
    for i in 0..df.height() {
        if let Some(r) = rows.get(i).map(|r| r as usize).filter(|&r| r < f.rows) {
            out[r] = Some([
                x.get(i).unwrap_or(0) as f64,
                y.get(i).unwrap_or(0) as f64,
                w.get(i).unwrap_or(0.0),
                h.get(i).unwrap_or(0.0),
            ]);
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| failed(format!("no row for feature {i}"))))
        .collect()
}

/// The classes of annotation files: the background, then every annotation class in first-seen
/// order over the files.
pub fn annotation_classes(files: &[PathBuf]) -> Result<Vec<String>, DomainError> {
    Ok(Annotations::class_names_of(files, BACKGROUND)?)
}

/// Per-tile class maps of `f` from the GeoJSON annotations `t.targets`: class 0 the background
/// (no polygon), then the annotation classes (`t.class_names` order when given, else first
/// seen in the file).
pub fn tile_labels(f: &FeatureFile, t: &DenseTargetOptions) -> Result<DenseLabels, DomainError> {
    if t.values == DenseValues::Heights {
        return Err(DomainError::Input(format!(
            "{}: canopy heads train on heights; pathology features have class annotations only \
             (--task segment)",
            f.path.display()
        )));
    }
    let input = TileInput::of(f)?;
    let annotations = Annotations::read(t.targets, "annotation")?;
    let classes: Vec<String> = if t.class_names.is_empty() {
        std::iter::once(BACKGROUND.to_string())
            .chain(annotations.classes())
            .collect()
    } else {
        t.class_names.to_vec()
    };
    if classes.len() < 2 {
        return Err(DomainError::Input(
            "--class-names: the background and at least one annotation class".into(),
        ));
    }
    let size = input.tiling.size as usize;
    let values = annotations.rasterise_tiles(&classes, &tile_rects(f)?, size);
    let name = t
        .targets
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    Ok(DenseLabels {
        preprocessing: input.to_preprocessing()?,
        input_size: size,
        values,
        record: json!({
            "annotations": name,
            "slide_id": f.meta.get("slide_id"),
            "units": "class",
            "classes": classes,
        }),
        class_names: classes,
    })
}

/// The slide `o.input` through `model` over its tissue tiles: `<slide>.mask.png` (class ids,
/// 255 where no tile was predicted, one pixel per `mask_downsample` level-0 pixels),
/// `<slide>.geojson` and `<slide>.mask.json` (the summary returned) in the folder `o.out`.
pub fn predict_slide(
    o: &DensePredictOptions,
    model: &mut dyn DenseModel,
    progress: &mut dyn Progress,
) -> Result<Value, DomainError> {
    let classes = model.channels();
    if o.values == DenseValues::Heights {
        return Err(DomainError::Input(
            "a pathology head predicts classes, not heights".into(),
        ));
    }
    if classes >= NOT_PREDICTED as usize {
        return Err(DomainError::Input(
            "a slide mask of more than 254 classes".into(),
        ));
    }
    let input = TileInput::from_preprocessing(o.preprocessing)?;
    let id = o
        .input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "slide".into());
    let slide = Slide::open_with(
        o.input,
        &OpenOptions {
            mpp_override: o.mpp,
        },
    )?;
    let tiling = TilingConfig {
        stride: o.stride.map(|s| s as u32).unwrap_or(input.tiling.stride),
        ..input.tiling.clone()
    };
    let tissue = detect_tissue(&slide, &TissueConfig::default())?;
    let plan = plan_tiles(&slide, Some(&tissue.mask), &tiling)?;
    if plan.tiles.is_empty() {
        return Err(DomainError::Input(format!(
            "{id}: no tile reaches the tissue threshold; nothing to predict"
        )));
    }
    let (sw, sh) = (slide.info().width, slide.info().height);
    let size = tiling.size as usize;
    let mut stitcher = Stitcher::new(sw, sh, plan.tiles[0].width / size as f64, classes);
    let tiles = plan.tiles.clone();
    let mut source = TileSource::new(Arc::new(slide), id.clone(), plan)
        .with_normalization(input.mean, input.std);
    progress.start(tiles.len(), "tiles");
    let mut done = 0;
    let per = classes * size * size;
    let stitched = (|| -> Result<(), DomainError> {
        while let Some(b) = source.read_batch(o.batch.max(1))? {
            let n = b.regions.len();
            let probs = model
                .predict(b.pixels, n, (size, size))
                .map_err(DomainError::Input)?;
            for (i, tile) in tiles[done..done + n].iter().enumerate() {
                stitcher.add(tile, &probs[i * per..(i + 1) * per], size);
            }
            done += n;
            progress.set(done);
        }
        Ok(())
    })();
    progress.finish();
    stitched?;
    let (w, h, ds) = (stitcher.width, stitcher.height, stitcher.downsample);
    let labels = stitcher.labels();
    let io =
        |path: &Path, e: String| DomainError::Input(format!("writing {}: {e}", path.display()));
    std::fs::create_dir_all(o.out).map_err(|e| io(o.out, e.to_string()))?;
    let png = o.out.join(format!("{id}.mask.png"));
    image::GrayImage::from_raw(w as u32, h as u32, labels.clone())
        .ok_or_else(|| DomainError::Input("mask image".into()))?
        .save(&png)
        .map_err(|e| io(&png, e.to_string()))?;
    let gj = o.out.join(format!("{id}.geojson"));
    let polygons = mask_geojson(&labels, w, h, ds, classes, |k| o.class_name(k));
    std::fs::write(&gj, polygons.to_string()).map_err(|e| io(&gj, e.to_string()))?;
    let mut counts = vec![0u64; classes];
    for &l in labels.iter().filter(|&&l| l != NOT_PREDICTED) {
        counts[l as usize] += 1;
    }
    let summary = json!({
        "slide_id": id,
        "tiles": tiles.len(),
        "mask": png.file_name().map(|n| n.to_string_lossy().into_owned()),
        "geojson": gj.file_name().map(|n| n.to_string_lossy().into_owned()),
        "mask_width": w,
        "mask_height": h,
        "mask_downsample": ds,
        "not_predicted": NOT_PREDICTED,
        "classes": (0..classes).map(|k| o.class_name(k)).collect::<Vec<_>>(),
        "mask_pixels_per_class": counts,
    });
    let json_path = o.out.join(format!("{id}.mask.json"));
    let text = serde_json::to_string_pretty(&summary).map_err(DomainError::input)?;
    std::fs::write(&json_path, text).map_err(|e| io(&json_path, e.to_string()))?;
    Ok(summary)
}
