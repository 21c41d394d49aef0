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

/// `src`'s tensors (f32) and metadata written to `dst` with `edit` applied to `cls` and
/// `patch`, and `src`'s manifest copied beside it.
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>)) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut shape = view.shape().to_vec();
        let mut data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        edit(&name, &mut shape, &mut data);
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name, shape, raw));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d);
            (n.clone(), v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, meta.metadata().clone(), dst).unwrap();
    std::fs::copy(src.with_extension("parquet"), dst.with_extension("parquet")).unwrap();
}

/// Issue 18, defect 3: `heads train --task classify` refuses feature files that are not what
/// `embed` writes (0-D/1-D/3-D `cls`, `patch` rows that do not match, NaN/Inf values, a
/// validation split of another width, a manifest without its columns), naming the file, where
/// it panicked or reported nonsense (AUROC 6.21 on a 3-D `cls`; a probe that fell from 0.625
/// to 0.100 on three NaN among 5,120 values).
#[test]
fn classify_refuses_feature_files_that_are_not_what_embed_writes() {
    let Some(shared) = shared() else { return };
    let mnist = shared.join("data/mnist5k");
    let tmp = tempfile::tempdir().unwrap();
    let t = |n: &str| tmp.path().join(n);
    list(&mnist.join("train"), 2, &t("train.txt"));
    list(&mnist.join("val"), 1, &t("val.txt"));
    embed(&t("train.txt"), &t("train.safetensors"));
    embed(&t("val.txt"), &t("val.safetensors"));
    let train = |train: &Path, val: &Path, features: &str| {
        let out = dinoadapt(&[
            "heads",
            "train",
            "--task",
            "classify",
            "--train",
            train.to_str().unwrap(),
            "--val",
            val.to_str().unwrap(),
            "--features",
            features,
            "--lrs",
            "0.1",
            "--wds",
            "0",
            "--epochs",
            "2",
            "-o",
            t("head").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code(), err)
    };
    let refused = |file: &Path, val: &Path, features: &str, needle: &str| {
        let (code, err) = train(file, val, features);
        assert_eq!(code, Some(2), "{err}");
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(name) && err.contains(needle),
            "`{name}`, `{needle}`: {err}"
        );
    };
    let (tr, va) = (t("train.safetensors"), t("val.safetensors"));
    // The untouched files train.
    assert_eq!(train(&tr, &va, "cls+avgpool").0, Some(0));
    rewrite(&tr, &t("flat.safetensors"), |n, s, _| {
        if n == "cls" {
            *s = vec![s[0] * s[1]];
        }
    });
    refused(
        &t("flat.safetensors"),
        &va,
        "cls",
        "class tokens are [rows, dim]",
    );
    rewrite(&tr, &t("cube.safetensors"), |n, s, _| {
        if n == "cls" {
            *s = vec![s[0], s[1] / 2, 2];
        }
    });
    refused(
        &t("cube.safetensors"),
        &va,
        "cls",
        "class tokens are [rows, dim]",
    );
    rewrite(&tr, &t("short.safetensors"), |n, s, d| {
        if n == "patch" {
            let per = s[1] * s[2];
            s[0] -= 1;
            d.truncate(s[0] * per);
        }
    });
    refused(
        &t("short.safetensors"),
        &va,
        "cls+avgpool",
        "`patch` has shape",
    );
    rewrite(&tr, &t("nan.safetensors"), |n, _, d| {
        if n == "cls" {
            d[5] = f32::NAN;
            d[700] = f32::INFINITY;
            d[1000] = f32::NEG_INFINITY;
        }
    });
    refused(&t("nan.safetensors"), &va, "cls", "3 non-finite value(s)");
    rewrite(&va, &t("wide.safetensors"), |n, s, d| {
        if n == "cls" {
            let (rows, dim) = (s[0], s[1]);
            *d = d
                .chunks(dim)
                .flat_map(|r| r.iter().copied().chain([0.0; 8]))
                .collect();
            *s = vec![rows, dim + 8];
        }
    });
    let (code, err) = train(&tr, &t("wide.safetensors"), "cls");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("wide.safetensors: 392-wide features"), "{err}");
    // A manifest without the `index` column embed writes.
    std::fs::copy(&tr, t("noindex.safetensors")).unwrap();
    let mut df = polars::prelude::df!("path" => ["a/0/x.png"]).unwrap();
    let file = std::fs::File::create(t("noindex.parquet")).unwrap();
    polars::prelude::ParquetWriter::new(file)
        .finish(&mut df)
        .unwrap();
    let (code, err) = train(&t("noindex.safetensors"), &va, "cls");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("noindex.parquet: no `index` column"), "{err}");
}
