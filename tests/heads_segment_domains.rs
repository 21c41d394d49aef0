//! End-to-end: segmentation heads on volume slices and slide tiles, from real shared files to
//! predictions in the domain's own format, with a random-init ViT-S/14:
//! - radiology: a planted label volume (the brighter half of anatomical.nii's voxels) →
//!   `radiology embed` → `heads train|eval` → `heads predict` → NIfTI label map on the source
//!   grid and affine;
//! - pathology: the tissue contours `pathology tissue` finds on CMU-1-Small-Region as GeoJSON
//!   annotations → `pathology embed` → `heads train` → `heads predict` → slide mask PNG +
//!   GeoJSON polygons in level-0 pixels.

mod common;

use std::path::{Path, PathBuf};

use common::{dinoadapt, ok, p, shared};
use dinoadapt_radiology::nifti::{read_nifti, write_nifti, NiftiDatatype, NiftiWriteOptions};
use dinoadapt_radiology::Pseudonymizer;
use serde_json::Value;

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

#[test]
fn a_volume_segmentation_head_trains_on_a_label_volume_and_predicts_nifti_on_the_source_grid() {
    let Some(shared) = shared() else { return };
    let image = shared.join("data/nifti/anatomical.nii");
    let dir = tempfile::tempdir().unwrap();
    let pseudo = Pseudonymizer::new("dinoadapt");
    let source = read_nifti(&image, &pseudo).unwrap().volume;
    // Planted target: voxels above the median intensity are class 1.
    let label_path = dir.path().join("labels.nii.gz");
    median_labels(&image, &label_path);
    let labels = read_nifti(&label_path, &pseudo).unwrap().volume;

    let emb = dir.path().join("emb");
    let backbone = ["--random-init", "--preset", "vits14"];
    let mut args = vec!["radiology", "embed", p(&image)];
    args.extend(backbone);
    args.extend([
        "--size",
        "112",
        "--layers",
        "last:1",
        "--norm-layers",
        "-o",
        p(&emb),
        "--quiet",
    ]);
    ok(&args);
    let feats: Vec<PathBuf> = files_with(&emb, ".safetensors")
        .into_iter()
        .filter(|f| !f.ends_with("volumes.safetensors"))
        .collect();
    assert_eq!(feats.len(), 1, "{feats:?}");
    let id = feats[0].file_stem().unwrap().to_string_lossy().into_owned();

    // Without the image volume the features cannot be aligned with the labels.
    let head = dir.path().join("head");
    let train = |volume: Option<&Path>| {
        let mut a = vec![
            "heads",
            "train",
            "--task",
            "segment",
            "--embeddings",
            p(&feats[0]),
            "--targets",
            p(&label_path),
            "--class-names",
            "dark,bright",
            "--epochs",
            "30",
            "--lr",
            "1e-2",
            "-o",
            p(&head),
            "--quiet",
        ];
        if let Some(v) = volume {
            a.extend(["--volume", p(v)]);
        }
        dinoadapt(&a)
    };
    let refused = train(None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--volume"));

    let out = train(Some(&image));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["domain"], "radiology");
    let m = &report["metrics"]["train"];
    eprintln!("volume head, training slices: {m}");
    // Brightness is in random-init patch tokens: well above the 0.5 of a constant guess.
    assert!(m["pixel_accuracy"].as_f64().unwrap() > 0.75, "{m}");
    assert!(m["miou"].as_f64().unwrap() > 0.5, "{m}");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(head.join("head.json")).unwrap()).unwrap();
    assert_eq!(info["preprocessing"]["domain"], "radiology");
    assert_eq!(info["preprocessing"]["slices"]["input"]["size"], 112);
    assert_eq!(info["class_names"], serde_json::json!(["dark", "bright"]));
    // No input path is recorded for volumes.
    let text = std::fs::read_to_string(head.join("head.json")).unwrap();
    assert!(!text.contains("anatomical") && !text.contains("labels.nii"));

    let eval = ok(&[
        "heads",
        "eval",
        "--head",
        p(&head),
        "--embeddings",
        p(&feats[0]),
        "--volume",
        p(&image),
        "--targets",
        p(&label_path),
    ]);
    let e: Value = serde_json::from_str(&eval).unwrap();
    let (a, b) = (
        e["Segmentation"]["miou"].as_f64().or(e["miou"].as_f64()),
        m["miou"].as_f64(),
    );
    assert!((a.unwrap() - b.unwrap()).abs() < 1e-6, "{e} vs {m}");

    let pred = dir.path().join("pred");
    let mut args = vec!["heads", "predict", "--head", p(&head), "--input", p(&image)];
    args.extend(backbone);
    args.extend(["-o", p(&pred), "--quiet"]);
    ok(&args);
    let out = pred.join(format!("{id}_segment.nii.gz"));
    let predicted = read_nifti(&out, &pseudo).unwrap();
    let v = &predicted.volume;
    assert_eq!(v.dims, source.dims);
    assert_eq!(v.spacing, source.spacing);
    assert_eq!(v.direction, source.direction);
    assert_eq!(v.origin, source.origin);
    assert!(v.voxels.iter().all(|&x| x == 0.0 || x == 1.0));
    let agree = v
        .voxels
        .iter()
        .zip(&labels.voxels)
        .filter(|(a, b)| a == b)
        .count() as f64
        / v.voxels.len() as f64;
    eprintln!("prediction agrees with the planted labels on {agree:.3} of the voxels");
    assert!(agree > 0.75, "prediction agrees with the labels on {agree}");
    assert!(pred.join("volumes.parquet").is_file());
}

#[test]
fn a_slide_segmentation_head_trains_on_geojson_annotations_and_predicts_a_mask_and_polygons() {
    let Some(shared) = shared() else { return };
    let slide = shared.join("data/pathology/CMU-1-Small-Region.svs");
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("emb");
    let backbone = ["--random-init", "--preset", "vits14"];
    // Every tile (tissue or not) at 1 µm/px, 112 px; the embed run also writes the tissue
    // contours, the planted annotations here.
    let mut args = vec!["pathology", "embed", p(&slide)];
    args.extend(backbone);
    args.extend([
        "--target-mpp",
        "1",
        "--size",
        "112",
        "--min-tissue",
        "0",
        "--layers",
        "last:1",
        "--norm-layers",
        "--no-h5",
        "-o",
        p(&emb),
        "--quiet",
    ]);
    ok(&args);
    let feats = emb.join("features/CMU-1-Small-Region.safetensors");
    let annotations = emb.join("tissue/CMU-1-Small-Region.geojson");
    let head = dir.path().join("head");
    let report: Value = serde_json::from_str(&ok(&[
        "heads",
        "train",
        "--task",
        "segment",
        "--embeddings",
        p(&feats),
        "--targets",
        p(&annotations),
        "--epochs",
        "20",
        "--lr",
        "1e-2",
        "-o",
        p(&head),
        "--quiet",
    ]))
    .unwrap();
    assert_eq!(report["domain"], "pathology");
    let m = &report["metrics"]["train"];
    eprintln!("slide head, training tiles: {m}");
    assert!(m["miou"].as_f64().unwrap() > 0.8, "{m}");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(head.join("head.json")).unwrap()).unwrap();
    assert_eq!(
        info["class_names"],
        serde_json::json!(["background", "Tissue"])
    );
    assert_eq!(info["preprocessing"]["tiling"]["size"], 112);

    let eval: Value = serde_json::from_str(&ok(&[
        "heads",
        "eval",
        "--head",
        p(&head),
        "--embeddings",
        p(&feats),
        "--targets",
        p(&annotations),
    ]))
    .unwrap();
    let e = eval.get("Segmentation").unwrap_or(&eval);
    assert!((e["miou"].as_f64().unwrap() - m["miou"].as_f64().unwrap()).abs() < 1e-6);

    let pred = dir.path().join("pred");
    let mut args = vec!["heads", "predict", "--head", p(&head), "--input", p(&slide)];
    args.extend(backbone);
    args.extend(["-o", p(&pred), "--quiet"]);
    let summary: Value = serde_json::from_str(&ok(&args)).unwrap();
    let (w, h) = (
        summary["mask_width"].as_u64().unwrap() as usize,
        summary["mask_height"].as_u64().unwrap() as usize,
    );
    let ds = summary["mask_downsample"].as_f64().unwrap();
    assert!((w as f64 * ds - 2220.0).abs() <= ds && (h as f64 * ds - 2967.0).abs() <= ds);
    let mask = image::open(pred.join("CMU-1-Small-Region.mask.png"))
        .unwrap()
        .into_luma8();
    assert_eq!((mask.width() as usize, mask.height() as usize), (w, h));
    assert!(mask.pixels().all(|px| matches!(px.0[0], 0 | 1 | 255)));
    // The mask against the annotations on the mask grid, where tiles were predicted.
    let classes = ["background".to_string(), "Tissue".to_string()];
    let truth = dinoadapt_pathology::Annotations::read(&annotations, "x")
        .unwrap()
        .rasterise(
            &classes,
            0,
            (0.0, 0.0),
            (w as f64 * ds, h as f64 * ds),
            (w, h),
        );
    let (mut agree, mut predicted) = (0usize, 0usize);
    for (px, t) in mask.pixels().zip(&truth) {
        if px.0[0] != 255 {
            predicted += 1;
            agree += usize::from(px.0[0] == *t);
        }
    }
    let agreement = agree as f64 / predicted as f64;
    eprintln!("slide mask agrees with the annotations on {agreement:.3} of its pixels");
    assert!(predicted > w * h / 2 && agreement > 0.85, "{agreement}");
    // The GeoJSON polygons (level-0 pixels) redraw the mask's tissue.
    let polygons =
        dinoadapt_pathology::Annotations::read(&pred.join("CMU-1-Small-Region.geojson"), "x")
            .unwrap();
    assert_eq!(polygons.classes(), vec!["Tissue".to_string()]);
    let redrawn = polygons.rasterise(
        &classes,
        0,
        (0.0, 0.0),
        (w as f64 * ds, h as f64 * ds),
        (w, h),
    );
    let same = mask
        .pixels()
        .zip(&redrawn)
        .filter(|(px, r)| (px.0[0] == 1) == (**r == 1))
        .count() as f64
        / (w * h) as f64;
    assert!(same > 0.99, "polygons redraw {same} of the mask");
}

/// A label volume next to `image`: voxels above its median intensity are class 1.
fn median_labels(image: &Path, out: &Path) -> String {
    let pseudo = Pseudonymizer::new("dinoadapt");
    let source = read_nifti(image, &pseudo).unwrap().volume;
    let mut sorted = source.voxels.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut labels = source.clone();
    for v in labels.voxels.iter_mut() {
        *v = if *v > median { 1.0 } else { 0.0 };
    }
    let options = NiftiWriteOptions {
        datatype: NiftiDatatype::U8,
        ..NiftiWriteOptions::default()
    };
    write_nifti(&labels, out, &options).unwrap();
    source.id
}

#[test]
fn a_volume_head_trains_on_several_volumes_at_once() {
    let Some(shared) = shared() else { return };
    let images = [
        shared.join("data/nifti/anatomical.nii"),
        shared.join("data/nifti/reoriented_anat_moved.nii"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("labels{i}.nii.gz")))
        .collect();
    let ids: Vec<String> = (0..2)
        .map(|i| median_labels(&images[i], &labels[i]))
        .collect();
    let emb = dir.path().join("emb");
    ok(&[
        "radiology",
        "embed",
        p(&images[0]),
        p(&images[1]),
        "--random-init",
        "--preset",
        "vits14",
        "--size",
        "56",
        "--layers",
        "last:1",
        "-o",
        p(&emb),
        "--quiet",
    ]);
    let feats: Vec<PathBuf> = ids
        .iter()
        .map(|id| emb.join(format!("{id}.safetensors")))
        .collect();
    let list = |v: &[PathBuf]| {
        v.iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (f, v, l) = (list(&feats), list(&images), list(&labels));
    let head = dir.path().join("head");
    let train = |volumes: &str| {
        dinoadapt(&[
            "heads",
            "train",
            "--task",
            "segment",
            "--embeddings",
            &f,
            "--volume",
            volumes,
            "--targets",
            &l,
            "--epochs",
            "2",
            "-o",
            p(&head),
            "--quiet",
        ])
    };
    // One image volume per feature file.
    let refused = train(p(&images[0]));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("one volume per file"));
    let out = train(&v);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let slices: usize = feats
        .iter()
        .map(|f| common::read_tensors(f)["cls"].0[0])
        .sum();
    assert_eq!(report["samples"]["train"], slices, "{report}");
    // Swapped volumes are refused: the features are of the other volume.
    let swapped = format!("{},{}", images[1].display(), images[0].display());
    let refused = train(&swapped);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("the features are of volume"));
}
