//! Embedding on several devices at once (issue 20, point 6): `embed`, `pathology embed`,
//! `radiology embed` and `satellite embed` with `--devices`, one copy of the backbone per
//! device and the batches of each input shared among them, write what one device writes, in
//! the same order. On the CPU the two "devices" share the host (no speed-up; the point is that
//! sharing the work changes nothing); on CUDA each copy runs on its own GPU.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Every safetensors file under `dir`, relative to it, in a fixed order.
fn feature_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
        .collect()
}

/// The `device` a feature file records.
fn recorded_device(path: &Path) -> String {
    safetensors_metadata(path)["device"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs `command` (whose output goes under `out`, written into it by `args(out)`) on one
/// device and on two, and checks that both wrote the same features.
fn same_on_two_devices(dir: &Path, name: &str, args: impl Fn(&Path) -> Vec<String>) {
    let one = dir.join(format!("{name}-one"));
    let two = dir.join(format!("{name}-two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let run = |out: &Path, devices: &[&str]| {
        let mut a = args(out);
        a.extend(devices.iter().map(|s| s.to_string()));
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    run(&one, &["--device", "cpu"]);
    run(&two, &["--devices", "cpu,cpu"]);
    let files = feature_files(&one);
    assert!(!files.is_empty(), "{name}: no feature file");
    assert_eq!(files, feature_files(&two), "{name}: other files");
    for f in &files {
        let (a, b) = (read_tensors(&one.join(f)), read_tensors(&two.join(f)));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{name} {}",
            f.display()
        );
        for (k, (shape, v)) in &a {
            assert_eq!(shape, &b[k].0, "{name} {} {k}", f.display());
            // Bit for bit: every batch is the same batch through the same model, wherever it ran.
            let worst = max_abs_diff(v, &b[k].1);
            assert!(worst == 0.0, "{name} {} {k}: {worst}", f.display());
        }
        assert_eq!(recorded_device(&one.join(f)), "cpu");
        assert_eq!(recorded_device(&two.join(f)), "cpu,cpu");
    }
}

#[test]
fn every_embedding_command_shares_its_batches_among_devices_and_writes_what_one_device_writes() {
    let Some(shared) = shared() else { return };
    let model = shared.join("fixtures/hf_dinov2_reg");
    let data = shared.join("data");
    let dir = tempfile::tempdir().unwrap();
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let m = owned(&["--model", p(&model), "--quiet", "--batch-size", "2"]);
    // Images: 5 inputs in batches of 2 (the last one short), one features file.
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for i in 0..5u8 {
        let img = image::RgbImage::from_fn(40, 36 + i as u32, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 7) as u8, i * 40])
        });
        img.save(imgs.join(format!("{i}.png"))).unwrap();
    }
    same_on_two_devices(dir.path(), "embed", |out| {
        let mut a = owned(&["embed", "--crop-size", "28", "--resize", "32"]);
        a.extend(owned(&[
            "--output",
            p(&out.join("images.safetensors")),
            p(&imgs),
        ]));
        a.extend(m.clone());
        a
    });
    same_on_two_devices(dir.path(), "pathology", |out| {
        let mut a = owned(&["pathology", "embed", "--out", p(out)]);
        a.extend(owned(&[p(&data.join("pathology/CMU-1-Small-Region.svs"))]));
        a.extend(m.clone());
        a
    });
    same_on_two_devices(dir.path(), "radiology", |out| {
        let mut a = owned(&["radiology", "embed", "--size", "28", "--out", p(out)]);
        a.extend(owned(&[p(&data.join("nifti/anatomical.nii"))]));
        a.extend(m.clone());
        a
    });
    same_on_two_devices(dir.path(), "satellite", |out| {
        let mut a = owned(&["satellite", "embed", "--size", "28"]);
        a.extend(owned(&["-o", p(&out.join("chips.safetensors"))]));
        a.extend(owned(&[p(&data.join("satellite/rmnp-rgb.tif"))]));
        a.extend(m.clone());
        a
    });
}

#[test]
fn devices_of_several_kinds_or_unbuilt_backends_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.png");
    image::RgbImage::new(28, 28).save(&img).unwrap();
    let run = |devices: &str| {
        dinoadapt(&[
            "embed",
            "--random-init",
            "--preset",
            "vits14",
            "--devices",
            devices,
            "--output",
            p(&dir.path().join("f.safetensors")),
            p(&img),
        ])
    };
    let mixed = run("cpu,cuda:0");
    assert_eq!(mixed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&mixed.stderr).contains("one kind"));
    let unknown = run("tpu:0");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown device"));
    if !cfg!(feature = "cuda") {
        let cuda = run("cuda:0,cuda:1");
        assert_eq!(cuda.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&cuda.stderr).contains("without CUDA"));
    }
}
