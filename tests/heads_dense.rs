//! End-to-end: `heads train|eval|predict --task canopy|segment` on the shared rasters with a
//! random-init ViT-S/14 at 56-px chips: canopy heights from the Rocky Mountain DEM (another grid,
//! nodata 65535) for the RGB image; vegetation classes from the NIR and red bands of rgbn.tif.

mod common;

use std::path::Path;

use common::{dinoadapt, ok, p, shared, table, vegetation_classes, whole};
use dinoadapt_satellite::Raster;
use serde_json::Value;

fn embed(src: &Path, out: &Path, layers: Option<&str>) {
    let mut args = vec![
        "satellite",
        "embed",
        "--random-init",
        "--preset",
        "vits14",
        p(src),
        "--size",
        "56",
        "--max-nodata",
        "0.9",
        "-o",
        p(out),
        "--quiet",
    ];
    if let Some(l) = layers {
        args.extend(["--layers", l, "--norm-layers"]);
    }
    ok(&args);
}

fn same_grid(a: &Raster, b: &Raster) {
    let (a, b) = (a.info(), b.info());
    assert_eq!((a.width, a.height), (b.width, b.height));
    assert_eq!(a.geotransform, b.geotransform);
    assert_eq!(
        a.crs.as_ref().unwrap().epsg,
        b.crs.as_ref().unwrap().epsg,
        "CRS"
    );
}

#[test]
fn canopy_dpt_head_trains_on_a_dem_on_another_grid_and_predicts_metres_on_the_source_grid() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data/satellite");
    let (rgb, dem) = (data.join("rmnp-rgb.tif"), data.join("rmnp-dem.tif"));
    let dir = tempfile::tempdir().unwrap();
    let feats = dir.path().join("feats.safetensors");
    let head = dir.path().join("head");

    // Without layer tensors the DPT head is refused with what to do.
    let plain = dir.path().join("plain.safetensors");
    embed(&rgb, &plain, None);
    let out = dinoadapt(&[
        "heads",
        "train",
        "--task",
        "canopy",
        "--embeddings",
        p(&plain),
        "--targets",
        p(&dem),
        "-o",
        p(&head),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--layers last:4"));

    embed(&rgb, &feats, Some("last:4"));
    let stdout = ok(&[
        "heads",
        "train",
        "--task",
        "canopy",
        "--embeddings",
        p(&feats),
        "--targets",
        p(&dem),
        "--val-embeddings",
        p(&feats),
        "--bins",
        "32",
        "--min-height",
        "2000",
        "--max-height",
        "4500",
        "--dpt-features",
        "16",
        "--epochs",
        "3",
        "--lr",
        "3e-3",
        "-o",
        p(&head),
        "--quiet",
    ]);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let train = &report["metrics"]["train"];
    for k in ["mae", "rmse", "r2", "bias", "block_r2"] {
        assert!(train[k].as_f64().unwrap().is_finite(), "{k}: {train}");
    }
    // Heights only where the DEM covers the image (nodata 65535 ignored).
    let pixels = train["pixels"].as_u64().unwrap();
    assert!(pixels > 10_000 && pixels < 63 * 56 * 56, "{pixels}");
    assert!(train["mae"].as_f64().unwrap() < 1000.0);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(head.join("head.json")).unwrap()).unwrap();
    assert_eq!(info["task"], "canopy");
    assert_eq!(info["backbone"]["checkpoint_sha256"], "random-init-seed-0");
    assert_eq!(info["tokens"]["layers"], serde_json::json!([8, 9, 10, 11]));
    assert_eq!(info["tokens"]["norm_layers"], true);
    assert_eq!(info["preprocessing"]["chip_size"], 56);
    assert_eq!(table(&head.join("training.parquet")).height(), 3);
    assert_eq!(table(&head.join("metrics.parquet")).height(), 2);
    assert!(head.join("training.png").is_file());

    // eval reproduces the training metrics of the same features.
    let eval: Value = serde_json::from_str(&ok(&[
        "heads",
        "eval",
        "--head",
        p(&head),
        "--embeddings",
        p(&feats),
        "--targets",
        p(&dem),
    ]))
    .unwrap();
    assert!((eval["r2"].as_f64().unwrap() - train["r2"].as_f64().unwrap()).abs() < 1e-9);

    // predict, through `heads predict` and `satellite predict --head`: the same file.
    let (a, b) = (dir.path().join("a.tif"), dir.path().join("b.tif"));
    ok(&[
        "heads",
        "predict",
        "--head",
        p(&head),
        "--input",
        p(&rgb),
        "--random-init",
        "--preset",
        "vits14",
        "-o",
        p(&a),
        "--quiet",
    ]);
    ok(&[
        "satellite",
        "predict",
        p(&rgb),
        "--head",
        p(&head),
        "--random-init",
        "--preset",
        "vits14",
        "-o",
        p(&b),
        "--quiet",
    ]);
    let (src, ra, rb) = (
        Raster::open(&rgb).unwrap(),
        Raster::open(&a).unwrap(),
        Raster::open(&b).unwrap(),
    );
    same_grid(&src, &ra);
    assert_eq!(ra.info().dtypes, vec!["float32"]);
    let (ha, hb) = (whole(&ra, 1), whole(&rb, 1));
    assert!(ha
        .iter()
        .zip(&hb)
        .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
    let finite: Vec<f32> = ha.iter().copied().filter(|v| v.is_finite()).collect();
    assert!(finite.len() > ha.len() / 2);
    assert!(finite.iter().all(|h| (2000.0..=4500.0).contains(h)));

    // Another backbone is refused.
    let out = dinoadapt(&[
        "satellite",
        "predict",
        p(&rgb),
        "--head",
        p(&head),
        "--random-init",
        "--preset",
        "vits14",
        "--seed",
        "1",
        "-o",
        p(&b),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sha256"));
}

#[test]
fn segmentation_multi_layer_head_predicts_a_class_map_and_probabilities_on_the_source_grid() {
    let Some(shared) = shared() else { return };
    let src = shared.join("data/satellite/rgbn.tif");
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("classes.tif");
    vegetation_classes(&src, &labels);
    let feats = dir.path().join("feats.safetensors");
    embed(&src, &feats, Some("last:4"));
    let head = dir.path().join("head");
    let stdout = ok(&[
        "heads",
        "train",
        "--task",
        "segment",
        "--head-kind",
        "ms",
        "--embeddings",
        p(&feats),
        "--targets",
        p(&labels),
        "--val-embeddings",
        p(&feats),
        "--dice-weight",
        "0.5",
        "--class-names",
        "bare,sparse,vegetated",
        "--epochs",
        "4",
        "--lr",
        "1e-2",
        "-o",
        p(&head),
        "--quiet",
    ]);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let val = &report["metrics"]["val"];
    assert_eq!(val["iou"].as_array().unwrap().len(), 3, "{val}");
    let miou = val["miou"].as_f64().unwrap();
    let acc = val["pixel_accuracy"].as_f64().unwrap();
    // Random-init features, 4 epochs: better than chance, not a benchmark.
    assert!(miou > 0.0 && miou <= 1.0 && acc > 0.4, "{val}");
    let metrics = table(&head.join("metrics.parquet"));
    assert!(metrics.column("iou_2").is_ok() && metrics.column("miou").is_ok());
    let training = table(&head.join("training.parquet"));
    assert_eq!(training.height(), 4);
    assert_eq!(
        training
            .column("val_metric")
            .unwrap()
            .f64()
            .unwrap()
            .null_count(),
        0
    );

    let out = dir.path().join("classes_pred.tif");
    ok(&[
        "satellite",
        "predict",
        p(&src),
        "--head",
        p(&head),
        "--random-init",
        "--preset",
        "vits14",
        "-o",
        p(&out),
        "--quiet",
    ]);
    let (s, r) = (Raster::open(&src).unwrap(), Raster::open(&out).unwrap());
    same_grid(&s, &r);
    assert_eq!(r.info().count(), 4, "class map + 3 probabilities");
    let class = whole(&r, 1);
    assert!(class.iter().all(|&c| c == 0.0 || c == 1.0 || c == 2.0));
    let probs: Vec<Vec<f32>> = (2..=4).map(|b| whole(&r, b)).collect();
    for i in (0..class.len()).step_by(97) {
        let ps = [probs[0][i], probs[1][i], probs[2][i]];
        assert!((ps.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{ps:?}");
        let best = (0..3).fold(0, |b, k| if ps[k] > ps[b] { k } else { b });
        assert_eq!(class[i], best as f32);
    }
}
