//! Pathology features (`pathology embed --layers ...`, a bag per slide): targets from GeoJSON
//! annotations (QuPath's export, or the tissue contours `pathology tissue` writes) rasterised
//! onto every tile; prediction over a slide's tissue tiles, stitched into a slide mask written
//! as an 8-bit PNG and as GeoJSON polygons in level-0 pixels (QuPath: File > Import objects).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use dinoadapt_pathology::stitch::mask_geojson;
use dinoadapt_pathology::{
    detect_tissue, plan_tiles, Annotations, OpenOptions, Slide, Stitcher, TileSource, TilingConfig,
    TissueConfig, NOT_PREDICTED,
};
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::{ParquetReader, SerReader};
use serde_json::{json, Value};

use super::folder::{predictor, HeadFolder, PathologyInput, Preprocessing};
use super::targets::{Labelled, TargetArgs};
use super::DensePredictArgs;
use crate::commands::heads::Common;
use crate::device::{on_device, BackendJob};
use crate::model_args::ModelArgs;
use dinoadapt_heads::dense::features::Features;

fn input(f: &Features) -> anyhow::Result<PathologyInput> {
    let parse = |key: &str| -> anyhow::Result<[f32; 3]> {
        serde_json::from_str(f.meta(key)?)
            .with_context(|| format!("{}: `{key}` metadata", f.path.display()))
    };
    Ok(PathologyInput {
        tiling: serde_json::from_str(f.meta("tiling")?)
            .with_context(|| format!("{}: `tiling` metadata", f.path.display()))?,
        mean: parse("normalization_mean")?,
        std: parse("normalization_std")?,
    })
}

/// The tile table of a bag: `tiles/<slide>.parquet` beside the `features/` folder (as
/// `pathology embed` writes them), or `<features>.parquet`.
fn tile_table(f: &Features) -> PathBuf {
    let stem = f.path.file_stem().unwrap_or_default();
    let mut name = stem.to_os_string();
    name.push(".parquet");
    match f.path.parent().and_then(Path::parent) {
        Some(root) if root.join("tiles").join(&name).is_file() => root.join("tiles").join(name),
        _ => f.path.with_extension("parquet"),
    }
}

/// Level-0 rectangle (x, y, w, h) of every feature row.
fn tile_rects(f: &Features) -> anyhow::Result<Vec<[f64; 4]>> {
    let table = tile_table(f);
    let df = ParquetReader::new(
        std::fs::File::open(&table)
            .with_context(|| format!("{}: the tile table of the features", table.display()))?,
    )
    .finish()?;
    let rows = df.column("feature_row")?.u64()?;
    let (x, y) = (df.column("x")?.i64()?, df.column("y")?.i64()?);
    let (w, h) = (df.column("width")?.f64()?, df.column("height")?.f64()?);
    let mut out = vec![None; f.n];
    for i in 0..df.height() {
        if let Some(r) = rows.get(i).map(|r| r as usize).filter(|&r| r < f.n) {
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
        .map(|(i, r)| r.with_context(|| format!("{}: no row for feature {i}", table.display())))
        .collect()
}

/// The classes of annotation files: the background, then every annotation class in first-seen
/// order over the files.
pub fn class_names(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    Ok(Annotations::class_names_of(files, "background")?)
}

/// Per-tile class maps from GeoJSON annotations: class 0 the background (no polygon), then the
/// annotation classes (`--class-names` order when given, else first seen in the file).
pub fn labelled(f: &Features, t: &TargetArgs) -> anyhow::Result<Labelled> {
    let input = input(f)?;
    let annotations = Annotations::read(t.targets, "annotation")?;
    let classes: Vec<String> = if t.class_names.is_empty() {
        std::iter::once("background".to_string())
            .chain(annotations.classes())
            .collect()
    } else {
        t.class_names.to_vec()
    };
    if classes.len() < 2 {
        bail!("--class-names: the background and at least one annotation class");
    }
    let size = input.tiling.size as usize;
    let values = annotations.rasterise_tiles(&classes, &tile_rects(f)?, size);
    let name = t
        .targets
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    Ok(Labelled {
        preprocessing: Preprocessing::Pathology(input),
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

struct PredictJob<'a> {
    head: &'a HeadFolder,
    input: &'a PathologyInput,
    args: &'a DensePredictArgs,
    model: ModelArgs,
    common: &'a Common,
}

impl BackendJob for PredictJob<'_> {
    type Output = Value;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Value> {
        let (args, common) = (self.args, self.common);
        let out = common.out.as_deref().context("--out: the output folder")?;
        let path = args.input.as_deref().context("--input: the slide")?;
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "slide".into());
        let p = predictor::<B>(self.head, &self.model, common.device, false, device)?;
        let slide = Slide::open_with(
            path,
            &OpenOptions {
                mpp_override: args.mpp,
            },
        )?;
        let tiling = TilingConfig {
            stride: args
                .stride
                .map(|s| s as u32)
                .unwrap_or(self.input.tiling.stride),
            ..self.input.tiling.clone()
        };
        let tissue = detect_tissue(&slide, &TissueConfig::default())?;
        let plan = plan_tiles(&slide, Some(&tissue.mask), &tiling)?;
        if plan.tiles.is_empty() {
            bail!("{id}: no tile reaches the tissue threshold; nothing to predict");
        }
        let (sw, sh) = (slide.info().width, slide.info().height);
        let size = tiling.size as usize;
        let classes = p.channels();
        let mut stitcher = Stitcher::new(sw, sh, plan.tiles[0].width / size as f64, classes);
        let tiles = plan.tiles.clone();
        let mut source = TileSource::new(Arc::new(slide), id.clone(), plan)
            .with_normalization(self.input.mean, self.input.std);
        let bar = if common.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(tiles.len() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} predict [{bar:40}] {pos}/{len} tiles eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        let mut done = 0;
        while let Some(b) = source.read_batch(args.predict_batch.max(1))? {
            let n = b.regions.len();
            let probs = p.predict(b.pixels, n, (size, size))?;
            let per = classes * size * size;
            for (i, tile) in tiles[done..done + n].iter().enumerate() {
                stitcher.add(tile, &probs[i * per..(i + 1) * per], size);
            }
            done += n;
            bar.set_position(done as u64);
        }
        bar.finish_and_clear();
        let (w, h, ds) = (stitcher.width, stitcher.height, stitcher.downsample);
        let labels = stitcher.labels();
        std::fs::create_dir_all(out)?;
        let png = out.join(format!("{id}.mask.png"));
        image::GrayImage::from_raw(w as u32, h as u32, labels.clone())
            .context("mask image")?
            .save(&png)
            .with_context(|| format!("writing {}", png.display()))?;
        let gj = out.join(format!("{id}.geojson"));
        std::fs::write(
            &gj,
            serde_json::to_string(&mask_geojson(
                &labels,
                w,
                h,
                ds,
                self.head.info.head.output_channels(),
                |k| self.head.class_name(k),
            ))?,
        )?;
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
            "classes": (0..classes).map(|k| self.head.class_name(k)).collect::<Vec<_>>(),
            "mask_pixels_per_class": counts,
        });
        std::fs::write(
            out.join(format!("{id}.mask.json")),
            serde_json::to_string_pretty(&summary)?,
        )?;
        Ok(summary)
    }
}

/// The slide of `--input` through backbone + head: `<slide>.mask.png` (class ids, 255 where no
/// tile was predicted, one pixel per `mask_downsample` level-0 pixels), `<slide>.geojson` and
/// `<slide>.mask.json` in `--out`.
pub fn predict(
    head: &HeadFolder,
    input: &PathologyInput,
    args: &DensePredictArgs,
    model: &ModelArgs,
    common: &Common,
) -> anyhow::Result<ExitCode> {
    if head.info.head.output_channels() >= NOT_PREDICTED as usize {
        bail!("a slide mask of more than 254 classes");
    }
    let summary = on_device(
        common.device,
        PredictJob {
            head,
            input,
            args,
            model: model.clone(),
            common,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}
