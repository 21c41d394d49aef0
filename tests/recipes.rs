//! Every pre-training recipe of `recipes/` (issue 19), run at tiny scale by changing sizes only:
//! the shared fixtures stand in for the released weights, the shared samples for the slides,
//! volumes and rasters, and every size (model width aside, which the checkpoint fixes) shrinks.
//! `pathology_curated_tiles.toml` needs a curated tile manifest first: `tests/curate_tiles.rs`
//! runs it after the `pathology embed` and `curate` it takes.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, quoted, read_tensors, shared, tiny_pretrain_args};

fn recipe(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(name)
        .display()
        .to_string()
}

/// `pretrain` of `name` into `out` with the tiny-scale overrides and `extra`.
fn run(name: &str, out: &Path, extra: &[String]) -> serde_json::Value {
    let args = tiny_pretrain_args(Path::new(&recipe(name)), out, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args);
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn pos_rows(model: &Path) -> usize {
    let t = read_tensors(&model.join("model.safetensors"));
    t.iter()
        .find(|(k, _)| k.ends_with("pos_embed"))
        .map(|(_, (shape, _))| shape[1])
        .unwrap()
}

#[test]
fn every_recipe_runs_at_tiny_scale() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let uni = shared.join("fixtures/timm_uni/model.safetensors");
    let dinov2 = shared.join("fixtures/hf_dinov2_reg");
    let slide = shared.join("data/pathology/CMU-1-Small-Region.svs");
    let slides = |extra: &mut Vec<String>| {
        extra.extend([
            format!("data.source.paths=[{}]", quoted(&slide)),
            "data.source.tile_size=64".into(),
            "data.source.tiles_per_epoch=8".into(),
        ]);
    };

    // UNI-style continued pre-training with a head warm-up and a high-resolution stage
    // (patch 16: 32 px, then 64 px).
    let uni_run = tmp.path().join("uni");
    let mut extra = vec![
        format!("model.checkpoint={}", quoted(&uni)),
        "crops.global_size=32".into(),
        "crops.local_size=16".into(),
        "train.head_warmup_iterations=1".into(),
        "stages=[{name = \"high-res\", iterations = 2, crops = {global_size = 64}, data = {batch_size = 2}}]".into(),
    ];
    slides(&mut extra);
    let s = run("pathology_uni_continue.toml", &uni_run, &extra);
    assert_eq!(s["steps"], 4);
    // 64 px / 16 = 4 patches a side: the stage stored its table at that grid.
    assert_eq!(pos_rows(&uni_run.join("teacher")), 1 + 4 * 4);

    // Distillation of that run into a smaller student of the same patch size.
    let student: PathBuf = tmp.path().join("distilled");
    let mut extra = vec![
        format!("distillation.teacher={}", quoted(&uni_run)),
        "model.patch_size=16".into(),
        "model.embed_dim=32".into(),
        "model.depth=1".into(),
        "model.num_heads=2".into(),
        "crops.global_size=32".into(),
        "crops.local_size=16".into(),
    ];
    slides(&mut extra);
    let s = run("distill_vitl_to_vits.toml", &student, &extra);
    assert_eq!(s["steps"], 2);
    assert!(student.join("student/model.safetensors").is_file());

    // Gram anchoring on a run continued from the UNI-style run (its heads and optimizer state).
    let gram = tmp.path().join("gram");
    let mut extra = vec![
        format!("model.checkpoint={}", quoted(&uni_run)),
        "crops.global_size=32".into(),
        "crops.local_size=16".into(),
    ];
    slides(&mut extra);
    let s = run("gram_long_run.toml", &gram, &extra);
    assert_eq!(s["steps"], 2);
    let metrics = common::table(&gram.join("metrics.parquet"));
    let g = metrics.column("gram_loss").unwrap().f64().unwrap().clone();
    assert!((0..g.len()).all(|i| g.get(i).unwrap() > 0.0), "{g:?}");

    // Grayscale slices of a volume into a one-channel model.
    let gray = tmp.path().join("gray");
    let s = run(
        "radiology_gray_continue.toml",
        &gray,
        &[
            format!("model.checkpoint={}", quoted(&dinov2)),
            format!(
                "data.source.paths=[{}]",
                quoted(&shared.join("data/nifti/anatomical.nii"))
            ),
            "data.source.size=56".into(),
            "crops.global_size=28".into(),
            "crops.local_size=14".into(),
            "train.head_warmup_iterations=1".into(),
        ],
    );
    assert_eq!(s["steps"], 2);

    // Four bands of an RGB + near-infrared raster into a four-channel model.
    let bands = tmp.path().join("bands");
    let s = run(
        "satellite_multispectral.toml",
        &bands,
        &[
            format!("model.checkpoint={}", quoted(&dinov2)),
            format!(
                "data.source.paths=[{}]",
                quoted(&shared.join("data/satellite/rgbn.tif"))
            ),
            "data.source.chip_size=56".into(),
            "data.source.chips_per_epoch=8".into(),
            "crops.global_size=28".into(),
            "crops.local_size=14".into(),
            "train.head_warmup_iterations=1".into(),
        ],
    );
    assert_eq!(s["steps"], 2);
}
