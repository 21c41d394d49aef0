//! Curation of a tile pool (issue 21), end to end on a shared slide: `pathology embed` of the
//! slide twice under two ids (a cohort that holds the same slide twice), `curate --pool` of the
//! embed folder with dedup, then `recipes/pathology_curated_tiles.toml` at tiny scale: the run's
//! pool is exactly the kept tiles, read back from the slide at their recorded regions.

mod common;

use std::path::Path;

use common::{dinoadapt, ok, p, quoted, shared, table, tiny_pretrain_args};
use dinoadapt_datasets::write_parquet;

/// `pretrain` of the curated-tiles recipe at tiny scale (sizes changed only) with `extra`.
fn pretrain_args(out: &Path, extra: &[String]) -> Vec<String> {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/pathology_curated_tiles.toml");
    let mut sets: Vec<String> = [
        "train.head_warmup_iterations=1",
        "crops.global_size=28",
        "crops.local_size=14",
        "data.source.tile_size=56",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().cloned());
    tiny_pretrain_args(&recipe, out, &sets)
}

#[test]
fn a_curated_tile_pool_feeds_pretraining_with_only_its_kept_tiles() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = shared.join("fixtures/hf_dinov2");
    let slide = shared.join("data/pathology/CMU-1-Small-Region.svs");
    // The same slide twice: `a_cmu`, and `b_copy` whose every tile duplicates one of a_cmu's.
    let list = t.join("slides.csv");
    std::fs::write(
        &list,
        format!(
            "path,slide_id\n{},a_cmu\n{},b_copy\n",
            slide.display(),
            slide.display()
        ),
    )
    .unwrap();
    let pool = t.join("tile_pool");
    ok(&[
        "pathology",
        "embed",
        "--model",
        p(&model),
        "--target-mpp",
        "2",
        "--size",
        "56",
        "--no-h5",
        "--quiet",
        "-o",
        p(&pool),
        p(&list),
    ]);
    let tiles_a = table(&pool.join("tiles/a_cmu.parquet"));
    let n = tiles_a.height();
    assert!(n >= 4, "{n} tiles");
    assert_eq!(table(&pool.join("tiles/b_copy.parquet")).height(), n);

    // Dedup over the embed folder: the rows of both feature files end to end (a_cmu first).
    // The threshold takes identical features only, so every b_copy tile goes.
    let curated = t.join("curated.parquet");
    let summary = ok(&[
        "curate",
        "--pool",
        p(&pool),
        "--mode",
        "dedup",
        "--dedup-threshold",
        "0.99999",
        "--block-rows",
        "7",
        "-o",
        p(&curated),
    ]);
    let s: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(s["pool"], 2 * n);
    let df = table(&curated);
    assert_eq!(df.height(), 2 * n);
    for c in [
        "index",
        "path",
        "kept",
        "reason",
        "similarity",
        "seed",
        "cluster",
        "slide",
        "x",
        "y",
        "width",
        "height",
        "level",
    ] {
        assert!(df.column(c).is_ok(), "no column {c}");
    }
    let path = df.column("path").unwrap().str().unwrap().clone();
    let kept = df.column("kept").unwrap().bool().unwrap().clone();
    let reason = df.column("reason").unwrap().str().unwrap().clone();
    let slide_col = df.column("slide").unwrap().str().unwrap().clone();
    let x = df.column("x").unwrap().i64().unwrap().clone();
    let tile_index = tiles_a.column("tile_index").unwrap().u64().unwrap().clone();
    let tile_x = tiles_a.column("x").unwrap().i64().unwrap().clone();
    for i in 0..n {
        // Rows of a_cmu: named slide:tile_index, at the tile's level-0 place.
        assert_eq!(
            path.get(i),
            Some(format!("a_cmu:{}", tile_index.get(i).unwrap()).as_str())
        );
        assert_eq!(slide_col.get(i), Some("a_cmu"));
        assert_eq!(x.get(i), tile_x.get(i));
        // Its copy in b_copy is removed as a duplicate of an a_cmu row.
        let j = n + i;
        assert_eq!(slide_col.get(j), Some("b_copy"));
        assert_eq!(kept.get(j), Some(false), "{:?}", reason.get(j));
        let of: usize = reason
            .get(j)
            .unwrap()
            .strip_prefix("duplicate of ")
            .unwrap()
            .parse()
            .unwrap();
        assert!(of < n, "{of}");
    }
    let n_kept = (0..2 * n).filter(|&i| kept.get(i) == Some(true)).count();
    let removed = s["duplicates_removed"].as_u64().unwrap() as usize;
    assert!(removed >= n, "{removed}");
    assert_eq!(n_kept, 2 * n - removed);
    assert_eq!(s["kept"], n_kept);
    eprintln!(
        "curation kept {n_kept} of {} tiles ({removed} duplicates)",
        2 * n
    );

    // Pre-training on the kept tiles: slides found by id among the embedded list.
    let run = t.join("run");
    let sources = [
        format!("model.checkpoint={}", quoted(&model)),
        format!("data.source.tiles={}", quoted(&curated)),
        format!("data.source.paths=[{}]", quoted(&list)),
    ];
    let args = pretrain_args(&run, &sources);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 2, "{summary}");
    assert_eq!(summary["pool_images"], n_kept, "{summary}");
    let described = summary["pool"].as_str().unwrap();
    assert!(
        described.starts_with(&format!("{n_kept} curated tiles of 1 slides")),
        "{described}"
    );
    eprintln!("pre-training pool: {described}");

    // A manifest without the tile columns is refused, naming the file and what it lacks.
    let mut bare = df.drop("x").unwrap().drop("y").unwrap();
    let bare_path = t.join("bare.parquet");
    write_parquet(&bare_path, &mut bare).unwrap();
    let sources = [
        format!("model.checkpoint={}", quoted(&model)),
        format!("data.source.tiles={}", quoted(&bare_path)),
        format!("data.source.paths=[{}]", quoted(&list)),
    ];
    let args = pretrain_args(&t.join("bare_run"), &sources);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = dinoadapt(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bare_path.display().to_string()) && err.contains("lacks the column(s) x, y"),
        "{err}"
    );
}
