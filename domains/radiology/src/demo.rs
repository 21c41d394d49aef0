//! The radiology part of `dinoadapt demo`: the sample MR volume (samples/, MIT) through
//! `recipes/radiology_frozen_eval.sh` with the backbone an earlier demo trained (frozen): slice
//! features, a probe of each slice's position and a segmentation head on intensity classes, both
//! derived from the volume ([`crate::demo_inputs`]), predicted back as NIfTI on its grid.

use dinoadapt_datasets::demo::{var, DemoContext, DemoOutcome};
use dinoadapt_datasets::report::Section;
use dinoadapt_datasets::DomainError;

use crate::demo_inputs::{slice_position_labels, write_intensity_labels};

const VOLUME: &str = "inputs/anatomical.nii";
const SCRIPT: &str = include_str!("../../../recipes/radiology_frozen_eval.sh");
/// The id salt of the demo's volume ids (the labels CSV names slices by them).
const SALT: &str = "demo";

/// Runs the radiology demo (see the module docs).
pub fn run(ctx: &mut DemoContext) -> Result<DemoOutcome, DomainError> {
    let files: [(&str, &[u8]); 2] = [
        (VOLUME, include_bytes!("../../../samples/anatomical.nii")),
        ("recipes/radiology_frozen_eval.sh", SCRIPT.as_bytes()),
    ];
    ctx.write_files(&files)?;
    let (volume, out) = (ctx.path(VOLUME), ctx.path("radiology"));
    std::fs::create_dir_all(&out).map_err(DomainError::input)?;
    let (labels, segmentation) = (
        out.join("slice_labels.csv"),
        out.join("segmentation.nii.gz"),
    );
    slice_position_labels(&volume, SALT, 1, &labels).map_err(DomainError::input)?;
    write_intensity_labels(&volume, 3, &segmentation).map_err(DomainError::input)?;
    let vars = [
        ("VOLUMES", var(&volume)),
        ("LABELS", var(&labels)),
        ("SEGMENTATION", var(&segmentation)),
        ("OUT", var(&out)),
        ("MODEL_ARGS", ctx.model_args()),
        ("SIZE", "64".into()),
        ("ID_SALT", SALT.into()),
        ("EPOCHS", "30".into()),
        ("K", "5".into()),
    ];
    ctx.run("radiology", SCRIPT, &vars)?;
    let section = Section::new("Radiology: frozen features of a volume's slices")
        .text(
            "The MR volume's axial slices through the backbone (frozen); a probe classifies \
             each slice's position (inferior, middle or superior third; even slices train, odd \
             ones validate) and a segmentation head learns three intensity classes derived \
             from the volume (Otsu foreground, split at its intensity terciles), predicted back \
             as NIfTI on the source grid (radiology/labels/).",
        )
        .parquet("probe metrics", &out.join("probe/metrics.parquet"))
        .parquet(
            "probe confusion (linear, val)",
            &out.join("probe/confusion.parquet"),
        )
        .image("segmentation training", out.join("segment/training.png"))
        .parquet("segmentation metrics", &out.join("segment/metrics.parquet"));
    Ok(DemoOutcome {
        sections: vec![section],
        backbone: None,
    })
}
