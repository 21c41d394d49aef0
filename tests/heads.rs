//! End-to-end: `embed` MNIST digits (ImageFolder layout) with a random-weight ViT, then
//! `heads train --task classify` (kNN, linear sweep, few-shot), `heads eval` and
//! `heads predict` on the saved head.

mod common;

use std::path::{Path, PathBuf};

use common::{dinoadapt, ok, shared};
use serde_json::Value;

fn list(dir: &Path, per_class: usize, out: &Path) {
    let mut files: Vec<PathBuf> = Vec::new();
    for d in 0..10 {
        let mut f: Vec<PathBuf> = std::fs::read_dir(dir.join(d.to_string()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        files.extend(f.into_iter().take(per_class));
    }
    let text: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    std::fs::write(out, text.join("\n")).unwrap();
}

fn embed(list: &Path, out: &Path) {
    embed_seeded(list, out, "0");
}

/// `list` embedded by the random-init ViT-S/14 of `seed`.
fn embed_seeded(list: &Path, out: &Path, seed: &str) {
    ok(&[
        "embed",
        "--random-init",
        "--preset",
        "vits14",
        "--seed",
        seed,
        "--resize",
        "56",
        "--crop-size",
        "56",
        "--quiet",
        "--output",
        out.to_str().unwrap(),
        list.to_str().unwrap(),
    ]);
}

#[test]
fn probes_classify_digits_and_the_saved_head_reproduces_its_metrics() {
    let Some(shared) = shared() else { return };
    let mnist = shared.join("data/mnist5k");
    let tmp = tempfile::tempdir().unwrap();
    let t = |n: &str| tmp.path().join(n);
    list(&mnist.join("train"), 20, &t("train.txt"));
    list(&mnist.join("val"), 10, &t("val.txt"));
    embed(&t("train.txt"), &t("train.safetensors"));
    embed(&t("val.txt"), &t("val.safetensors"));
    let out = t("head");
    let stdout = ok(&[
        "heads",
        "train",
        "--task",
        "classify",
        "--train",
        t("train.safetensors").to_str().unwrap(),
        "--val",
        t("val.safetensors").to_str().unwrap(),
        "--lrs",
        "0.01,0.1",
        "--wds",
        "0,0.001",
        "--epochs",
        "100",
        "--few-shot",
        "5",
        "-o",
        out.to_str().unwrap(),
    ]);
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["classes"].as_array().unwrap().len(), 10);
    let acc = |method: &str| {
        summary["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == method && r["split"] == "val")
            .unwrap()["accuracy"]
            .as_f64()
            .unwrap()
    };
    // Chance is 0.1; even random-weight ViT features separate digits well above it.
    assert!(acc("knn20") > 0.3, "knn {}", acc("knn20"));
    assert!(acc("linear") > 0.3, "linear {}", acc("linear"));
    assert!(acc("linear_5shot") > 0.15);
    for f in [
        "metrics.parquet",
        "training.parquet",
        "head.safetensors",
        "head.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The saved head gives the same validation accuracy.
    let m: Value = serde_json::from_str(&ok(&[
        "heads",
        "eval",
        "--head",
        out.to_str().unwrap(),
        "--features",
        t("val.safetensors").to_str().unwrap(),
    ]))
    .unwrap();
    assert!((m["accuracy"].as_f64().unwrap() - acc("linear")).abs() < 1e-12);
    assert!(m["auroc"].as_f64().unwrap() > 0.5);
    ok(&[
        "heads",
        "predict",
        "--head",
        out.to_str().unwrap(),
        "--features",
        t("val.safetensors").to_str().unwrap(),
        "-o",
        t("pred.parquet").to_str().unwrap(),
    ]);
    assert!(t("pred.parquet").is_file());

    // Features of another backbone, and a head of another task, are refused.
    embed_seeded(&t("val.txt"), &t("other.safetensors"), "1");
    let head = out.to_str().unwrap();
    let refused = |args: &[&str]| {
        let o = dinoadapt(args);
        assert!(!o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let other = t("other.safetensors");
    let e = refused(&[
        "heads",
        "eval",
        "--head",
        head,
        "--features",
        other.to_str().unwrap(),
    ]);
    assert!(
        e.contains("random-init-seed-0") && e.contains("random-init-seed-1"),
        "{e}"
    );
    let val = t("val.safetensors");
    let e = refused(&[
        "heads",
        "eval",
        "--task",
        "survival",
        "--head",
        head,
        "--bags",
        val.to_str().unwrap(),
    ]);
    assert!(e.contains("holds a classify head, not survival"), "{e}");
    let e = refused(&["heads", "predict", "--head", tmp.path().to_str().unwrap()]);
    assert!(e.contains("not a head folder"), "{e}");
}
