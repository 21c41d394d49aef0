//! The satellite part of `dinoadapt demo`: the sample 4-band raster (samples/, MIT) through
//! `recipes/canopy_height.sh` with the backbone an earlier demo trained (frozen): chips, a DPT
//! canopy-height head on heights derived from the raster's vegetation index
//! ([`crate::demo_inputs`]; no lidar is at hand), the stitched height map as a COG and its
//! error report.

use dinoadapt_datasets::demo::{var, DemoContext, DemoOutcome};
use dinoadapt_datasets::report::Section;
use dinoadapt_datasets::DomainError;

use crate::demo_inputs::ndvi_heights;
use crate::quicklook::write_quicklook;

const RASTER: &str = "inputs/rgbn.tif";
const SCRIPT: &str = include_str!("../../../recipes/canopy_height.sh");

/// Runs the satellite demo (see the module docs).
pub fn run(ctx: &mut DemoContext) -> Result<DemoOutcome, DomainError> {
    let files: [(&str, &[u8]); 2] = [
        (RASTER, include_bytes!("../../../samples/rgbn.tif")),
        ("recipes/canopy_height.sh", SCRIPT.as_bytes()),
    ];
    ctx.write_files(&files)?;
    let (raster, out) = (ctx.path(RASTER), ctx.path("satellite"));
    std::fs::create_dir_all(&out).map_err(DomainError::input)?;
    let heights = out.join("heights_ndvi.tif");
    ndvi_heights(&raster, 1, 4, 30.0, &heights).map_err(DomainError::input)?;
    let target_png = out.join("heights_ndvi.png");
    write_quicklook(&heights, 1, Some((0.0, 30.0)), &target_png).map_err(DomainError::input)?;
    let vars = [
        ("RASTER", var(&raster)),
        ("HEIGHTS", var(&heights)),
        ("OUT", var(&out)),
        ("MODEL_ARGS", ctx.model_args()),
        ("SIZE", "64".into()),
        ("MAX_HEIGHT", "30".into()),
        ("BINS", "32".into()),
        ("DPT_FEATURES", "32".into()),
        ("EPOCHS", "15".into()),
    ];
    ctx.run("satellite", SCRIPT, &vars)?;
    let errors = std::fs::read_to_string(out.join("errors.json")).unwrap_or_default();
    let section = Section::new("Remote sensing: canopy height")
        .text(
            "Chips of the 4-band sample raster (R, G, B used) through the backbone (frozen); a \
             DPT head learns canopy heights (derived here from the raster's NDVI, as no lidar \
             is at hand) and the stitched map is written as a COG on the raster's grid \
             (satellite/heights.tif; the quick look maps its 2nd–98th percentile onto viridis).",
        )
        .image("height map (m)", out.join("heights.png"))
        .image("target heights, 0–30 m", target_png)
        .image("errors (m), training chips", out.join("head/errors.png"))
        .image("training", out.join("head/training.png"))
        .parquet("metrics", &out.join("head/metrics.parquet"))
        .text(format!("heads eval: {}", errors.trim()));
    Ok(DemoOutcome {
        sections: vec![section],
        backbone: None,
    })
}
