//! Satellite features (`satellite embed --layers ...`): targets from a label raster warped onto
//! each source raster's grid; prediction over a whole raster into a GeoTIFF on its grid.

use anyhow::Context;
use dinoadapt_satellite::align::{chip_targets, LabelResampling};
use dinoadapt_satellite::{Normalization, Raster, Window};
use polars::prelude::{ParquetReader, SerReader};
use serde_json::json;

use super::folder::{HeadFolder, Preprocessing, SatelliteInput};
use super::targets::{Labelled, TargetArgs};
use super::DensePredictArgs;
use crate::commands::heads::{Common, Task};
use crate::commands::satellite::dense::predict_loaded;
use crate::commands::satellite::{predict_config, ChipArgs, HeadChoice};
use crate::model_args::ModelArgs;
use dinoadapt_heads::dense::features::Features;

/// The resampling of the label raster (default: nearest for classes, bilinear for heights).
pub fn resampling(name: Option<&str>, task: Task) -> anyhow::Result<LabelResampling> {
    let name = name.unwrap_or(match task {
        Task::Segment => "nearest",
        _ => "bilinear",
    });
    LabelResampling::parse(name).with_context(|| {
        format!("--target-resampling `{name}`: nearest, bilinear, average or mode")
    })
}

fn input(f: &Features) -> anyhow::Result<SatelliteInput> {
    let chip_size: usize = f.meta("chip_size")?.parse()?;
    Ok(SatelliteInput {
        normalization: serde_json::from_str::<Normalization>(f.meta("normalization")?)?,
        bands: serde_json::from_str(f.meta("bands")?)?,
        chip_size,
        chip_stride: f
            .meta
            .get("chip_stride")
            .and_then(|s| s.parse().ok())
            .unwrap_or(chip_size),
    })
}

/// Source raster and window of every feature row (the chips table beside the features).
fn regions(f: &Features) -> anyhow::Result<Vec<(String, Window)>> {
    let table = f.path.with_extension("parquet");
    let df =
        ParquetReader::new(std::fs::File::open(&table).with_context(|| {
            format!("{}: the chips table beside the features", table.display())
        })?)
        .finish()?;
    let (fr, src) = (
        df.column("feature_row")?.u64()?,
        df.column("source")?.str()?,
    );
    let (c, r) = (df.column("col")?.i64()?, df.column("row")?.i64()?);
    let (w, h) = (df.column("width")?.u64()?, df.column("height")?.u64()?);
    let mut regions: Vec<Option<(String, Window)>> = vec![None; f.n];
    for i in 0..df.height() {
        let row = fr.get(i).unwrap_or(u64::MAX) as usize;
        if row < f.n {
            regions[row] = Some((
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
    regions
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{}: no row for feature {i}", table.display())))
        .collect()
}

/// Target values of every chip, NaN where the label raster has no data.
pub fn labelled(f: &Features, t: &TargetArgs) -> anyhow::Result<Labelled> {
    let input = input(f)?;
    let res = resampling(t.resampling, t.task)?;
    let label = Raster::open(t.targets)?;
    let size = input.chip_size;
    let scratch = std::env::temp_dir().join(format!("dinoadapt-dense-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let out = chip_targets(&label, &regions(f)?, size, res, &scratch)?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Labelled {
        preprocessing: Preprocessing::Satellite(input),
        values: out,
        class_names: t.class_names.to_vec(),
        record: json!({
            "raster": t.targets.display().to_string(),
            "resampling": res,
            "units": if t.task == Task::Canopy { "m" } else { "class" },
        }),
    })
}

/// Backbone + head over a whole raster (as `satellite predict --head DIR`): a GeoTIFF on its
/// grid, class + probabilities (segment) or metres (canopy).
pub fn predict(
    head: HeadFolder,
    input: &SatelliteInput,
    args: &DensePredictArgs,
    model: &ModelArgs,
    common: &Common,
) -> anyhow::Result<()> {
    let raster_path = args
        .input
        .as_deref()
        .context("--input: the raster to predict")?;
    let out = common
        .out
        .as_deref()
        .context("--out: the GeoTIFF to write")?;
    let size = input.chip_size;
    let raster = Raster::open(raster_path)?;
    let chips = ChipArgs {
        size,
        stride: Some(args.stride.unwrap_or((size / 2).max(1))),
        bands: input.bands.clone(),
        max_nodata: 1.0,
    };
    let cfg = predict_config(&chips, &args.blend, args.predict_batch, None, args.cog)?;
    let dir = head.dir.to_string_lossy().into_owned();
    let s = predict_loaded(
        head,
        &Preprocessing::Satellite(input.clone()),
        &raster,
        out,
        &cfg,
        &HeadChoice {
            head: &dir,
            model,
            normalize: "none",
            device: common.device,
            tf32: false,
            quiet: common.quiet,
        },
    )?;
    eprintln!(
        "{} chips, {:.2} Mpx in {:.2} s -> {}",
        s.chips,
        s.megapixels,
        s.seconds,
        s.output.display()
    );
    Ok(())
}
