//! `dinoadapt curate` end to end on the shared digits: embed a pool with planted duplicates, a
//! seed set and an evaluation set, curate, check the manifest's decisions, and pre-train from it.

mod common;

use std::path::Path;

use common::{ok, shared};
use polars::prelude::{ParquetReader, SerReader};

fn embed(model: &Path, list: &Path, out: &Path) {
    ok(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--resize",
        "0",
        "--crop-size",
        "0",
        "--quiet",
        "-o",
        out.to_str().unwrap(),
        list.to_str().unwrap(),
    ]);
}

fn write_list(path: &Path, files: &[std::path::PathBuf]) {
    let text: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    std::fs::write(path, text.join("\n")).unwrap();
}

fn digits(dir: &Path, n: usize) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.truncate(n);
    v
}

#[test]
fn curated_manifest_drops_duplicates_and_feeds_pretraining() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = shared.join("fixtures/hf_dinov2");
    let val = shared.join("data/mnist5k/val");
    // Pool: 20 digits of each of 0, 1, 7, plus three exact repeats (planted duplicates).
    let mut pool = Vec::new();
    for d in ["0", "1", "7"] {
        pool.extend(digits(&val.join(d), 20));
    }
    let repeats = [pool[3].clone(), pool[25].clone(), pool[47].clone()];
    pool.extend(repeats.iter().cloned());
    write_list(&t.join("pool.txt"), &pool);
    embed(&model, &t.join("pool.txt"), &t.join("pool.safetensors"));
    // Seeds: five other 7s. Evaluation set: two of the pool's 1s.
    let seeds: Vec<_> = digits(&shared.join("data/mnist5k/train/7"), 5);
    write_list(&t.join("seeds.txt"), &seeds);
    embed(&model, &t.join("seeds.txt"), &t.join("seeds.safetensors"));
    write_list(&t.join("eval.txt"), &[pool[30].clone(), pool[31].clone()]);
    embed(&model, &t.join("eval.txt"), &t.join("eval.safetensors"));

    let out = t.join("curated.parquet");
    let summary = ok(&[
        "curate",
        "--pool",
        t.join("pool.safetensors").to_str().unwrap(),
        "--seeds",
        t.join("seeds.safetensors").to_str().unwrap(),
        "--eval",
        t.join("eval.safetensors").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dedup-threshold",
        "0.9999",
        "--eval-threshold",
        "0.9999",
        "--clusters",
        "3",
    ]);
    let s: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(s["pool"], 63);
    assert_eq!(s["seeds"], 5);
    assert!(out.with_extension("png").is_file());

    let df = ParquetReader::new(std::fs::File::open(&out).unwrap())
        .finish()
        .unwrap();
    assert_eq!(df.height(), 63);
    let reason = df.column("reason").unwrap().str().unwrap().clone();
    let kept = df.column("kept").unwrap().bool().unwrap().clone();
    // Each repeat is a duplicate of its first occurrence, which stays eligible.
    for (row, first) in [(60, 3), (61, 25), (62, 47)] {
        assert_eq!(
            reason.get(row),
            Some(format!("duplicate of {first}").as_str())
        );
        assert_eq!(kept.get(row), Some(false));
    }
    assert!(reason.get(30).unwrap().starts_with("near evaluation item"));
    assert!(reason.get(31).unwrap().starts_with("near evaluation item"));
    // Retrieval keeps at most 4 per seed, and nothing removed is kept.
    let n_kept = (0..63).filter(|i| kept.get(*i) == Some(true)).count();
    assert!((1..=20).contains(&n_kept), "{n_kept}");
    assert_eq!(s["kept"], n_kept);

    // A recipe takes the manifest as its data.
    let recipe = t.join("recipe.toml");
    std::fs::write(
        &recipe,
        r#"
[model]
arch = "vits14"
embed_dim = 32
depth = 2
num_heads = 2
patch_size = 4
img_size = 28
[heads]
prototypes = 64
hidden_dim = 64
bottleneck_dim = 32
[data]
manifest = "curated.parquet"
batch_size = 4
[crops]
global_size = 28
local_size = 12
local_crops = 2
[optim]
epochs = 1
epoch_length = 2
warmup_epochs = 0
[train]
output_dir = "run"
"#,
    )
    .unwrap();
    let json = ok(&["pretrain", "--recipe", recipe.to_str().unwrap()]);
    assert!(json.contains("\"steps\":2"), "{json}");

    // Hierarchical balanced sampling (its k-means reads each cluster's rows from the file):
    // the budget is met from the rows that survived deduplication.
    let hier = t.join("hierarchical.parquet");
    let summary = ok(&[
        "curate",
        "--pool",
        t.join("pool.safetensors").to_str().unwrap(),
        "--mode",
        "hierarchical",
        "--levels",
        "3,2",
        "--budget",
        "12",
        "--dedup-threshold",
        "0.9999",
        "--out",
        hier.to_str().unwrap(),
    ]);
    let s: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(s["kept"], 12);
    let df = ParquetReader::new(std::fs::File::open(&hier).unwrap())
        .finish()
        .unwrap();
    let kept = df.column("kept").unwrap().bool().unwrap().clone();
    let reason = df.column("reason").unwrap().str().unwrap().clone();
    let cluster = df.column("cluster").unwrap().i64().unwrap().clone();
    for row in 0..63 {
        if kept.get(row) == Some(true) {
            assert!(reason.get(row).unwrap().starts_with("sampled from cluster"));
        }
    }
    for row in [60, 61, 62] {
        assert_eq!(kept.get(row), Some(false), "duplicates are never sampled");
    }
    // Every top-level cluster gives rows (evenly, as far as the clusters allow).
    let mut top: Vec<i64> = (0..63)
        .filter(|&r| kept.get(r) == Some(true))
        .map(|r| cluster.get(r).unwrap())
        .collect();
    top.sort();
    top.dedup();
    assert_eq!(top.len(), 3, "{top:?}");
}
