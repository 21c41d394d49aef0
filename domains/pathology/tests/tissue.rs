//! Tissue detection on the real H&E slide and on a blank image.

mod common;

use dinoadapt_pathology::{detect_tissue, OpenOptions, Slide, TissueConfig};
use serde_json::Value;

#[test]
fn cmu_small_region_has_tissue_with_valid_outputs() {
    let Some(path) = common::cmu_small() else {
        return;
    };
    let slide = Slide::open(&path).unwrap();
    let d = detect_tissue(&slide, &TissueConfig::default()).unwrap();
    // 8 um/px mask over 0.499 um/px: downsample ~16.
    assert!((d.mask.downsample - 8.0 / 0.499).abs() < 1e-9);
    assert_eq!(d.mask.mask.dimensions(), (139, 186));
    let f = d.mask.fraction();
    assert!((0.2..=0.95).contains(&f), "tissue fraction {f}");
    assert!(!d.polygons.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let gj = dir.path().join("tissue.geojson");
    let png = dir.path().join("qc.png");
    d.write_geojson(&gj).unwrap();
    d.write_qc_png(&png).unwrap();

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&gj).unwrap()).unwrap();
    assert_eq!(v["type"], "FeatureCollection");
    let features = v["features"].as_array().unwrap();
    assert_eq!(features.len(), d.polygons.len());
    let mut area = 0.0;
    for f in features {
        assert_eq!(f["type"], "Feature");
        assert_eq!(f["geometry"]["type"], "Polygon");
        assert_eq!(f["properties"]["objectType"], "annotation");
        assert_eq!(f["properties"]["classification"]["name"], "Tissue");
        for (k, ring) in f["geometry"]["coordinates"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let pts = ring.as_array().unwrap();
            assert!(pts.len() >= 4);
            assert_eq!(pts[0], pts[pts.len() - 1], "rings are closed");
            let mut a = 0.0;
            for w in pts.windows(2) {
                let (x0, y0) = (w[0][0].as_f64().unwrap(), w[0][1].as_f64().unwrap());
                let (x1, y1) = (w[1][0].as_f64().unwrap(), w[1][1].as_f64().unwrap());
                assert!((0.0..=2220.0).contains(&x0) && (0.0..=2967.0).contains(&y0));
                a += x0 * y1 - x1 * y0;
            }
            area += if k == 0 {
                a.abs() / 2.0
            } else {
                -a.abs() / 2.0
            };
        }
    }
    // Polygon area (level-0 px²) agrees with the mask's tissue area within simplification error.
    let mask_area = f * 2220.0 * 2967.0;
    assert!(
        (area - mask_area).abs() / mask_area < 0.1,
        "{area} vs {mask_area}"
    );

    let qc = image::open(&png).unwrap().to_rgb8();
    assert_eq!(qc.dimensions(), (139, 186));
    assert!(qc.pixels().any(|p| p.0 == [0, 255, 0]));
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn a_blank_white_image_has_no_tissue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blank.png");
    image::RgbImage::from_pixel(640, 480, image::Rgb([255, 255, 255]))
        .save(&path)
        .unwrap();
    let opts = OpenOptions {
        mpp_override: Some(0.5),
    };
    let slide = Slide::open_with(&path, &opts).unwrap();
    let d = detect_tissue(&slide, &TissueConfig::default()).unwrap();
    assert_eq!(d.mask.fraction(), 0.0);
    assert!(d.polygons.is_empty());
    assert_eq!(d.geojson()["features"].as_array().unwrap().len(), 0);
}

#[test]
fn detection_without_a_pixel_size_asks_for_mpp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blank.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([255, 255, 255]))
        .save(&path)
        .unwrap();
    let slide = Slide::open(&path).unwrap();
    let e = detect_tissue(&slide, &TissueConfig::default()).unwrap_err();
    assert!(
        e.to_string().contains("--mpp") && e.to_string().contains("blank.png"),
        "{e}"
    );
}
