//! The pathology part of `dinoadapt demo`: the sample H&E slide (samples/, CC0) through
//! `recipes/pathology_slide_features.sh` (tissue, tiles, tile pool, curation, a tiny ViT
//! pre-trained on the kept tiles, slide features with its teacher), then a survival cohort made
//! from the slide's tiles ([`crate::demo_cohort`]) through `recipes/pathology_survival.sh`. The
//! teacher is handed on as the backbone of the other domains' frozen-feature jobs.

use dinoadapt_datasets::demo::{var, DemoContext, DemoOutcome};
use dinoadapt_datasets::report::Section;
use dinoadapt_datasets::DomainError;

use crate::demo_cohort::{demo_cohort, DemoCohortConfig};

const SLIDE: &str = "inputs/CMU-1-Small-Region.svs";
const FEATURES: &str = include_str!("../../../recipes/pathology_slide_features.sh");
const SURVIVAL: &str = include_str!("../../../recipes/pathology_survival.sh");

/// Runs the pathology demo (see the module docs).
pub fn run(ctx: &mut DemoContext) -> Result<DemoOutcome, DomainError> {
    let files: [(&str, &[u8]); 5] = [
        (
            SLIDE,
            include_bytes!("../../../samples/CMU-1-Small-Region.svs"),
        ),
        (
            "inputs/MANIFEST.tsv",
            include_bytes!("../../../samples/MANIFEST.tsv"),
        ),
        ("recipes/pathology_slide_features.sh", FEATURES.as_bytes()),
        ("recipes/pathology_survival.sh", SURVIVAL.as_bytes()),
        (
            "recipes/demo_pathology_pretrain.toml",
            include_bytes!("../../../recipes/demo_pathology_pretrain.toml"),
        ),
    ];
    ctx.write_files(&files)?;
    let p = |n: &str| ctx.path(&format!("pathology/{n}"));
    let vars = [
        ("SLIDES", var(&ctx.path(SLIDE))),
        ("OUT", var(&ctx.path("pathology"))),
        (
            "RECIPE",
            var(&ctx.path("recipes/demo_pathology_pretrain.toml")),
        ),
        ("MODEL_ARGS", "--random-init --preset vits14".into()),
        ("TILE_MPP", "1".into()),
        ("TILE_SIZE", "64".into()),
        ("TILE_STRIDE", "32".into()),
    ];
    let (slides, cohort_dir, survival_out) = (p("slides"), p("cohort"), p("survival"));
    ctx.run("pathology", FEATURES, &vars)?;
    let cohort = demo_cohort(
        &slides,
        &["CMU-1-Small-Region".to_string()],
        &cohort_dir,
        &DemoCohortConfig::default(),
    )?;
    let survival = [
        ("BAGS", var(&cohort.bags)),
        ("CLINICAL", var(&cohort.clinical)),
        ("OUT", var(&survival_out)),
        ("FOLDS", "3".into()),
    ];
    ctx.run("survival", SURVIVAL, &survival)?;
    let p = |n: &str| ctx.path(&format!("pathology/{n}"));
    let sections = vec![
        Section::new("Pathology: slide, tissue, tiles, curation, pre-training")
            .text(
                "Tissue found on the sample H&E slide (QC thumbnail: the tissue outline in \
                 green), tiles at 1 µm/px, the tile pool embedded and near-duplicate tiles \
                 removed, then a tiny ViT pre-trained from scratch on the kept tiles for 200 \
                 iterations (DINO + iBOT + KoLeo) and the slide embedded with its teacher.",
            )
            .images_in(&p("tiles/tissue"), 4)
            .image("curation: nearest-neighbour similarities", p("curated.png"))
            .image(
                "pre-training: losses, schedules, teacher",
                p("pretrain/metrics.png"),
            )
            .parquet("slides tiled", &p("tiles/manifest.parquet")),
        Section::new("Pathology: survival from slide feature bags")
            .text(format!(
                "A cohort made by the demo: {} pseudo-patients (blocks of the sample slide's \
                 tiles, written as CLAM / TRIDENT .h5 bags), {} events, times drawn from a \
                 planted hazard on the tiles' first principal direction (not clinical data). \
                 The ABMIL head is cross-validated by patient.",
                cohort.patients, cohort.events
            ))
            .image("Kaplan–Meier by predicted risk", p("survival/head/km.png"))
            .image("training", p("survival/head/training.png"))
            .parquet(
                "metrics (C-index per fold)",
                &p("survival/head/metrics.parquet"),
            )
            .parquet("risk per slide", &p("survival/risk.parquet")),
    ];
    Ok(DemoOutcome {
        sections,
        backbone: Some(p("pretrain/teacher")),
    })
}
