//! End-to-end tests of `dinoadapt embed`.

mod common;

use common::*;
use polars::prelude::{ParquetReader, SerReader};

#[test]
fn pixels_input_reproduces_the_reference_features() {
    let Some(fixtures) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.safetensors");
    let fx = fixtures.join("hf_dinov2_reg");
    ok(&[
        "embed",
        "--model",
        p(&fx),
        "--pixels",
        p(&fx.join("io.safetensors")),
        "--pixels-key",
        "pixel_values",
        "--output",
        p(&out),
        "--layers",
        "0,1",
        "--batch-size",
        "1",
        "--quiet",
    ]);
    let got = read_tensors(&out);
    let want = read_tensors(&fx.join("io.safetensors"));
    let (_, pooled) = &want["pooler_output"];
    assert!(max_abs_diff(&got["cls"].1, pooled) < 1e-4);
    let (shape, last) = &want["last_hidden_state"];
    let (b, t, d) = (shape[0], shape[1], shape[2]);
    let r = got["reg"].0[1];
    assert_eq!(got["reg"].0, [b, r, d]);
    assert_eq!(got["patch"].0, [b, t - 1 - r, d]);
    // Patch rows of the reference tokens.
    let mut patches = Vec::new();
    for i in 0..b {
        patches.extend_from_slice(&last[(i * t + 1 + r) * d..(i + 1) * t * d]);
    }
    assert!(max_abs_diff(&got["patch"].1, &patches) < 1e-4);
    // layer.{i} are the raw block outputs = hidden_states_{i+1}.
    for i in 0..2 {
        let (_, h) = &want[&format!("hidden_states_{}", i + 1)];
        assert!(max_abs_diff(&got[&format!("layer.{i}")].1, h) < 1e-4);
    }
    let manifest = ParquetReader::new(std::fs::File::open(out.with_extension("parquet")).unwrap())
        .finish()
        .unwrap();
    assert_eq!(manifest.height(), b);
    let sha = manifest
        .column("checkpoint_sha256")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_string();
    assert_eq!(sha.len(), 64);
}

#[test]
fn embeds_a_folder_of_real_images() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("feat.safetensors");
    let model = shared.join("fixtures/official_dinov2_reg/model.pth");
    // Three real images and one file no decoder reads: it is reported and skipped.
    let list = dir.path().join("inputs.txt");
    let data = shared.join("data/pathology");
    let listed: Vec<String> = [
        "he_tile_240.png",
        "unopenable.tiff",
        "ihc.png",
        "retina.jpg",
    ]
    .iter()
    .map(|n| data.join(n).display().to_string())
    .collect();
    std::fs::write(&list, listed.join("\n")).unwrap();
    ok(&[
        "embed",
        "--model",
        p(&model),
        "--num-heads",
        "4",
        p(&list),
        "--output",
        p(&out),
        "--crop-size",
        "56",
        "--resize",
        "64",
        "--layers",
        "last:1",
        "--norm-layers",
        "--batch-size",
        "2",
        "--quiet",
    ]);
    let got = read_tensors(&out);
    let images = ["he_tile_240.png", "ihc.png", "retina.jpg"];
    assert_eq!(got["cls"].0, [images.len(), 64]);
    assert_eq!(got["patch"].0, [images.len(), 16, 64]);
    assert_eq!(got["reg"].0, [images.len(), 4, 64]);
    assert_eq!(got["layer.1"].0, [images.len(), 21, 64]);
    // The normed last layer's class row is the class token.
    for i in 0..images.len() {
        let row = &got["layer.1"].1[i * 21 * 64..i * 21 * 64 + 64];
        assert!(max_abs_diff(row, &got["cls"].1[i * 64..(i + 1) * 64]) < 1e-5);
    }
    assert!(got["cls"].1.iter().all(|v| v.is_finite()));
    let m = ParquetReader::new(std::fs::File::open(dir.path().join("feat.parquet")).unwrap())
        .finish()
        .unwrap();
    let col = m.column("path").unwrap().str().unwrap().clone();
    let paths: Vec<String> = (0..m.height())
        .map(|i| col.get(i).unwrap().to_string())
        .collect();
    assert_eq!(paths, listed);
    let col = m.column("status").unwrap().str().unwrap().clone();
    let status: Vec<&str> = (0..m.height()).map(|i| col.get(i).unwrap()).collect();
    assert_eq!(status, ["ok", "failed", "ok", "ok"]);
    let col = m.column("index").unwrap().u32().unwrap().clone();
    let index: Vec<Option<u32>> = (0..m.height()).map(|i| col.get(i)).collect();
    assert_eq!(index, [Some(0), None, Some(1), Some(2)]);
    let col = m.column("width").unwrap().u32().unwrap().clone();
    let w: Vec<u32> = (0..m.height()).map(|i| col.get(i).unwrap()).collect();
    assert_eq!(w, [240, 0, 512, 1411]);
}

#[test]
fn embeds_generated_images_without_shared_data() {
    let dir = tempfile::tempdir().unwrap();
    // A random-weight ViT written as a native checkpoint by the program itself.
    let arch = dir.path().join("arch.json");
    std::fs::write(
        &arch,
        r#"{"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8, "pos_grid": 2,
            "pos_embed_prefix": "cls", "ffn": {"kind": "mlp", "hidden": 64},
            "interpolation": {"mode": "bicubic_antialias"}}"#,
    )
    .unwrap();
    let model = dir.path().join("model");
    ok(&[
        "export",
        "--random-init",
        "--arch-file",
        p(&arch),
        "--to",
        "native",
        "--out",
        p(&model),
    ]);
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for i in 0..5u8 {
        let img = image::RgbImage::from_fn(40 + i as u32, 30, |x, y| {
            image::Rgb([x as u8 * 5, y as u8 * 7, i * 40])
        });
        img.save(imgs.join(format!("{i}.png"))).unwrap();
    }
    let out = dir.path().join("f.safetensors");
    ok(&[
        "embed",
        "--model",
        p(&model),
        p(&imgs),
        "--output",
        p(&out),
        "--crop-size",
        "24x32",
        "--resize",
        "30",
        "--batch-size",
        "2",
        "--quiet",
    ]);
    let got = read_tensors(&out);
    assert_eq!(got["cls"].0, [5, 32]);
    assert_eq!(got["patch"].0, [5, 12, 32]);
    assert!(!got.contains_key("reg"));
    // Different images give different features.
    assert!(max_abs_diff(&got["cls"].1[..32], &got["cls"].1[32..64]) > 1e-4);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dinoadapt(&["embed", "--model", p(&dir.path().join("missing")), "x.png"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn every_embedding_command_records_one_provenance() {
    let Some(shared) = shared() else { return };
    let model = shared.join("fixtures/hf_dinov2_reg");
    let data = shared.join("data");
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name);
    let m = ["--model", p(&model), "--quiet"];
    let run = |args: &[&str]| ok(&[args, &m[..]].concat());
    run(&[
        "embed",
        "--output",
        p(&out("images.safetensors")),
        p(&data.join("pathology/he_tile_240.png")),
    ]);
    run(&[
        "pathology",
        "embed",
        "--out",
        p(&out("slides")),
        p(&data.join("pathology/CMU-1-Small-Region.svs")),
    ]);
    run(&[
        "radiology",
        "embed",
        "--size",
        "56",
        "--out",
        p(&out("volumes")),
        p(&data.join("nifti/anatomical.nii")),
    ]);
    run(&[
        "satellite",
        "embed",
        "--size",
        "56",
        "-o",
        p(&out("chips.safetensors")),
        p(&data.join("satellite/rmnp-rgb.tif")),
    ]);
    let mut files = vec![
        out("images.safetensors"),
        out("slides/features/CMU-1-Small-Region.safetensors"),
        out("volumes/volumes.safetensors"),
        out("chips.safetensors"),
    ];
    files.extend(
        std::fs::read_dir(out("volumes"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.extension().is_some_and(|x| x == "safetensors")),
    );
    let keys = [
        "model",
        "checkpoint_sha256",
        "layout",
        "architecture",
        "device",
        "matmul_precision",
        "dinoadapt_version",
    ];
    let first = safetensors_metadata(&files[0]);
    for f in &files {
        let meta = safetensors_metadata(f);
        for k in keys {
            assert_eq!(meta.get(k), first.get(k), "{}: {k}", f.display());
        }
        assert!(!meta.contains_key("dinoadapt.version"), "{}", f.display());
    }
    assert_eq!(first["layout"], "huggingface");
    assert_eq!(first["device"], "cpu");
    assert_eq!(first["dinoadapt_version"], env!("CARGO_PKG_VERSION"));
    // The .h5 bag carries the same record as file attributes.
    let h5 = hdf5_metno::File::open(out("slides/h5/CMU-1-Small-Region.h5")).unwrap();
    for k in keys {
        let v: hdf5_metno::types::VarLenUnicode = h5.attr(k).unwrap().read_scalar().unwrap();
        assert_eq!(Some(&serde_json::json!(v.as_str())), first.get(k), "h5 {k}");
    }
}
