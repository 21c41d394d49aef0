//! End-to-end: `dinoadapt inspect RASTER --json` and `dinoadapt satellite chips|embed|predict`
//! on the shared GeoTIFFs and on generated rasters.

mod common;

use common::{dinoadapt, ok, read_tensors, shared, table, whole};
use dinoadapt_satellite::Raster;
use serde_json::Value;

#[test]
fn inspect_json_reports_gdal_geometry_for_every_shared_raster() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data");
    let text = std::fs::read_to_string(data.join("REFERENCE.json")).unwrap();
    let reference: Value = serde_json::from_str(&text.replace("NaN", "null")).unwrap();
    let mut n = 0;
    for (key, want) in reference.as_object().unwrap() {
        if want["kind"] != "raster" {
            continue;
        }
        let path = data.join(key);
        let got: Value =
            serde_json::from_str(&ok(&["inspect", path.to_str().unwrap(), "--json"])).unwrap();
        for field in [
            "width",
            "height",
            "count",
            "dtypes",
            "nodata",
            "geotransform_gdal",
            "bounds",
            "epsg",
        ] {
            assert_eq!(got[field], want[field], "{key}: {field}");
        }
        n += 1;
    }
    assert_eq!(n, 7);
}

#[test]
fn predict_with_the_band_head_reproduces_the_input_with_nodata_and_georeferencing() {
    let Some(shared) = shared() else { return };
    let src = shared.join("data/satellite/rmnp-rgb.tif");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("green.tif");
    ok(&[
        "satellite",
        "predict",
        src.to_str().unwrap(),
        "--bands",
        "2",
        "--head",
        "band:1",
        "--size",
        "96",
        "--stride",
        "72",
        "--blend",
        "gaussian",
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let (a, b) = (Raster::open(&src).unwrap(), Raster::open(&out).unwrap());
    let (got, want) = (whole(&b, 1), whole(&a, 2));
    assert_eq!(got.len(), want.len());
    let differ = got.iter().zip(&want).filter(|(x, y)| x != y).count();
    assert_eq!(
        differ, 0,
        "{differ} stitched pixels differ from the input band"
    );
    assert_eq!(b.info().geotransform, a.info().geotransform);
    assert_eq!(b.info().crs.as_ref().unwrap().epsg, Some(4326));
    assert_eq!(b.info().nodata[0], Some(255.0));
    assert_eq!(b.info().dtypes, vec!["float32"]);
}

#[test]
fn embed_writes_one_feature_row_per_kept_chip_with_world_bounds() {
    let Some(shared) = shared() else { return };
    let src = shared.join("data/satellite/rmnp-rgb.tif");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chips.safetensors");
    ok(&[
        "satellite",
        "embed",
        "--random-init",
        "--preset",
        "vits14",
        src.to_str().unwrap(),
        "--size",
        "112",
        "--stride",
        "112",
        "--max-nodata",
        "0.05",
        "--layers",
        "last:1",
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let t = read_tensors(&out);
    let df = table(&out.with_extension("parquet"));
    // 485x373 at 112/112: 5 columns x 4 rows of chips; the nodata border drops some.
    let rows = df.height();
    assert!(rows > 0 && rows < 20, "{rows} chips kept");
    assert_eq!(t["cls"].0, vec![rows, 384]);
    assert_eq!(t["patch"].0, vec![rows, 64, 384]);
    assert_eq!(t["layer.11"].0, vec![rows, 65, 384]);
    let raster = Raster::open(&src).unwrap();
    let gt = raster.info().geotransform.unwrap();
    let col = df.column("col").unwrap().i64().unwrap();
    let row = df.column("row").unwrap().i64().unwrap();
    let min_x = df.column("min_x").unwrap().f64().unwrap();
    let max_y = df.column("max_y").unwrap().f64().unwrap();
    for i in 0..rows {
        let (x, y) = gt.apply(col.get(i).unwrap() as f64, row.get(i).unwrap() as f64);
        assert!((min_x.get(i).unwrap() - x).abs() < 1e-9);
        assert!((max_y.get(i).unwrap() - y).abs() < 1e-9);
        assert!(
            df.column("valid_fraction")
                .unwrap()
                .f64()
                .unwrap()
                .get(i)
                .unwrap()
                >= 0.95
        );
    }
    assert_eq!(
        df.column("crs").unwrap().str().unwrap().get(0),
        Some("EPSG:4326")
    );
}

#[test]
fn predict_with_the_pca_head_writes_a_georeferenced_feature_map() {
    let Some(shared) = shared() else { return };
    let src = shared.join("data/satellite/rgbn.tif");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pca.tif");
    ok(&[
        "satellite",
        "predict",
        "--random-init",
        "--preset",
        "vits14",
        src.to_str().unwrap(),
        "--size",
        "112",
        "--stride",
        "84",
        "--cog",
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let r = Raster::open(&out).unwrap();
    assert_eq!(r.info().count(), 3);
    assert_eq!((r.info().width, r.info().height), (515, 403));
    assert_eq!(r.info().crs.as_ref().unwrap().epsg, Some(32618));
    let first = whole(&r, 1);
    assert!(first.iter().all(|v| v.is_finite()));
    // The first principal component varies over the scene.
    let (lo, hi) = first
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(hi - lo > 1e-3, "{lo}..{hi}");
}

#[test]
fn chips_with_labels_record_label_coverage() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data/satellite");
    let dir = tempfile::tempdir().unwrap();
    ok(&[
        "satellite",
        "chips",
        data.join("rmnp-rgb.tif").to_str().unwrap(),
        "--size",
        "128",
        "--stride",
        "96",
        "--labels",
        data.join("rmnp-dem.tif").to_str().unwrap(),
        "--label-resampling",
        "bilinear",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let df = table(&dir.path().join("chips.parquet"));
    assert_eq!(df.height(), 20);
    let cover = df.column("label_valid_fraction").unwrap().f64().unwrap();
    assert!((0..cover.len())
        .filter_map(|i| cover.get(i))
        .any(|v| v > 0.5));
    let aligned = Raster::open(&dir.path().join("labels/rmnp-rgb.tif")).unwrap();
    assert_eq!((aligned.info().width, aligned.info().height), (485, 373));
}

#[test]
fn unusable_inputs_fail_with_clear_messages() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data/satellite");
    let dir = tempfile::tempdir().unwrap();
    // A label raster far away from the imagery.
    let out = dinoadapt(&[
        "satellite",
        "chips",
        data.join("rgbn.tif").to_str().unwrap(),
        "--labels",
        data.join("rmnp-dem.tif").to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not overlap"));
    // A raster with no georeferencing: a plain PNG.
    let png = shared.join("data/pathology/he_tile_240.png");
    let out = dinoadapt(&[
        "satellite",
        "predict",
        png.to_str().unwrap(),
        "--head",
        "band:1",
        "-o",
        dir.path().join("x.tif").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no georeferencing"));
    // A file GDAL cannot read.
    let bad = dir.path().join("bad.tif");
    std::fs::write(&bad, b"II*\0 not really a TIFF").unwrap();
    let out = dinoadapt(&["inspect", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GDAL cannot open it"));
    // A TIFF OpenSlide recognises but cannot decode is reported as a slide.
    let out = dinoadapt(&[
        "inspect",
        data.join("../pathology/unopenable.tiff").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unsupported TIFF compression"));
}

/// A float raster whose nodata is NaN (ours, for one) reports "nan" as `gdalinfo -json` does,
/// not null (which reads as "no nodata"); its statistics leave the NaN pixels out.
#[test]
fn inspect_json_reports_a_nan_nodata_as_gdal_does() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nan_nodata.tif");
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = driver
        .create_with_band_type::<f32, _>(&path, 4, 2, 2)
        .unwrap();
    ds.set_geo_transform(&[500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0])
        .unwrap();
    for b in 1..=2 {
        let mut band = ds.rasterband(b).unwrap();
        // GeoTIFF keeps one nodata for every band.
        band.set_no_data_value(Some(f64::NAN)).unwrap();
        let v = vec![1.0f32, 2.0, f32::NAN, 4.0, 5.0, 6.0, 7.0, f32::NAN];
        band.write((0, 0), (4, 2), &mut gdal::raster::Buffer::new((4, 2), v))
            .unwrap();
    }
    drop(ds);
    let got: Value =
        serde_json::from_str(&ok(&["inspect", path.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(got["nodata"], "nan", "{got}");
    assert_eq!(got["nodatavals"], serde_json::json!(["nan", "nan"]));
    let stats = &got["band_stats_excluding_nodata"][0];
    assert_eq!(stats["valid_pixels"], 6, "{stats}");
    assert_eq!(
        (stats["min"].as_f64(), stats["max"].as_f64()),
        (Some(1.0), Some(7.0))
    );
}
