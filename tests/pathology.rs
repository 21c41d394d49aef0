//! End-to-end: a folder of slides (the real H&E SVS, OpenSlide's pyramidal TIFF, a tiny SVS,
//! a truncated slide, an unopenable TIFF) -> tissue GeoJSON + QC PNG, tiles Parquet, feature
//! bags (safetensors + .h5) and a manifest; failures are rows, the rest finish; a rerun skips
//! finished slides and redoes one cut off; shards split the batch; `inspect SLIDE --json`.

mod common;

use std::path::Path;

use common::{dinoadapt, ok, pretrain_steps, read_tensors, shared, table, tiny_pretrain_recipe};
use polars::prelude::DataFrame;
use serde_json::Value;

fn status_of(df: &DataFrame, id: &str) -> (String, String, u64) {
    let ids = df.column("slide_id").unwrap().str().unwrap();
    let i = (0..df.height()).find(|&i| ids.get(i) == Some(id)).unwrap();
    (
        df.column("status")
            .unwrap()
            .str()
            .unwrap()
            .get(i)
            .unwrap()
            .to_string(),
        df.column("error")
            .unwrap()
            .str()
            .unwrap()
            .get(i)
            .unwrap()
            .to_string(),
        df.column("tiles").unwrap().u64().unwrap().get(i).unwrap(),
    )
}

#[test]
fn a_folder_of_slides_becomes_tissue_tiles_feature_bags_and_a_resumable_manifest() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data/pathology");
    let tmp = tempfile::tempdir().unwrap();
    let slides = tmp.path().join("slides");
    std::fs::create_dir_all(&slides).unwrap();
    for f in [
        "CMU-1-Small-Region.svs",
        "boxes.tiff",
        "small.svs",
        "unopenable.tiff",
    ] {
        std::fs::copy(data.join(f), slides.join(f)).unwrap();
    }
    let svs = std::fs::read(data.join("CMU-1-Small-Region.svs")).unwrap();
    std::fs::write(slides.join("truncated.svs"), &svs[..svs.len() / 3]).unwrap();
    let out = tmp.path().join("out");
    let (s, o) = (slides.to_str().unwrap(), out.to_str().unwrap());
    let embed = |extra: &[&str]| {
        let mut a = vec![
            "pathology",
            "embed",
            "--random-init",
            "--preset",
            "vits14",
            s,
            "-o",
            o,
            "--mpp",
            "0.5",
            "--size",
            "112",
            "--target-mpp",
            "1.0",
            "--quiet",
        ];
        a.extend_from_slice(extra);
        dinoadapt(&a)
    };
    let r = embed(&[]);
    assert!(r.status.success());
    let m = table(&out.join("manifest.parquet"));
    assert_eq!(m.height(), 5);
    let (st, _, tiles) = status_of(&m, "CMU-1-Small-Region");
    assert_eq!(st, "done");
    assert!(tiles > 10, "{tiles} tiles");
    // boxes.tiff records 72 dpi: refused alone, accepted with --mpp.
    assert_eq!(status_of(&m, "boxes").0, "done");
    for bad in ["truncated", "unopenable"] {
        let (st, err, _) = status_of(&m, bad);
        assert_eq!(st, "failed", "{bad}");
        assert!(!err.is_empty());
        assert!(
            !err.contains(slides.to_str().unwrap()),
            "paths stay out of outputs: {err}"
        );
    }
    // Tissue GeoJSON (QuPath) and QC thumbnail.
    let gj: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("tissue/CMU-1-Small-Region.geojson")).unwrap(),
    )
    .unwrap();
    assert_eq!(gj["type"], "FeatureCollection");
    assert!(!gj["features"].as_array().unwrap().is_empty());
    assert!(out.join("tissue/CMU-1-Small-Region.png").is_file());
    // Tiles (level-0 coordinates) and the feature bag: one row per tile.
    let t = table(&out.join("tiles/CMU-1-Small-Region.parquet"));
    assert_eq!(t.height() as u64, tiles);
    let x = t.column("x").unwrap().i64().unwrap();
    assert!((0..t.height()).all(|i| (0..2220).contains(&x.get(i).unwrap())));
    let f = read_tensors(&out.join("features/CMU-1-Small-Region.safetensors"));
    assert_eq!(f["cls"].0, vec![tiles as usize, 384]);
    let h5 = hdf5_metno::File::open(out.join("h5/CMU-1-Small-Region.h5")).unwrap();
    assert_eq!(
        h5.dataset("features").unwrap().shape(),
        vec![tiles as usize, 384]
    );
    let coords: Vec<i64> = h5.dataset("coords").unwrap().read_raw().unwrap();
    assert_eq!(coords.len() as u64, 2 * tiles);
    assert_eq!(coords[0], x.get(0).unwrap());

    // A rerun skips the finished slides; a slide cut off (its feature file gone) is redone.
    std::fs::remove_file(out.join("features/CMU-1-Small-Region.safetensors")).unwrap();
    let r = embed(&[]);
    let log = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(
        log.contains("1 slides done, 2 already finished, 2 failed"),
        "{log}"
    );
    assert!(out
        .join("features/CMU-1-Small-Region.safetensors")
        .is_file());

    // Shards split the batch.
    let shard_out = tmp.path().join("shard");
    let r = dinoadapt(&[
        "pathology",
        "tissue",
        s,
        "-o",
        shard_out.to_str().unwrap(),
        "--shard",
        "1/2",
        "--quiet",
    ]);
    // Shard 1 of 2 holds `boxes` (72 dpi, refused without --mpp) and `truncated`: every slide
    // it attempted failed, which the exit status says (dinoadapt_datasets::batch::ALL_FAILED).
    assert_eq!(
        r.status.code(),
        Some(dinoadapt_datasets::batch::ALL_FAILED as i32)
    );
    assert_eq!(table(&shard_out.join("manifest.parquet")).height(), 2);
}

#[test]
fn inspect_reports_openslide_geometry() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data");
    let text = std::fs::read_to_string(data.join("REFERENCE.json")).unwrap();
    let reference: Value = serde_json::from_str(&text.replace("NaN", "null")).unwrap();
    for key in [
        "pathology/CMU-1-Small-Region.svs",
        "pathology/small.svs",
        "pathology/boxes.tiff",
    ] {
        let want = &reference[key];
        let got: Value = serde_json::from_str(&ok(&[
            "inspect",
            data.join(key).to_str().unwrap(),
            "--json",
        ]))
        .unwrap();
        for field in [
            "dimensions",
            "level_count",
            "level_dimensions",
            "vendor",
            "objective_power",
        ] {
            assert_eq!(got[field], want[field], "{key}: {field}");
        }
        let (g, w) = (&got["level_downsamples"], &want["level_downsamples"]);
        for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
            assert!(
                (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-9,
                "{key}"
            );
        }
        for field in ["mpp_x", "mpp_y"] {
            let (a, b) = (got[field].as_f64().unwrap(), want[field].as_f64().unwrap());
            assert!((a - b).abs() < 1e-6 * b, "{key}: {field} {a} vs {b}");
        }
    }
}

#[test]
fn pretraining_samples_tissue_tiles_from_slides() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let slide = shared.join("data/pathology/CMU-1-Small-Region.svs");
    let recipe = tiny_pretrain_recipe(
        tmp.path(),
        &format!(
            "[data.source]\ndomain = \"pathology\"\npaths = [{:?}]\nmpp = [0.5, 1.0]\ntile_size = 64\ntiles_per_epoch = 16",
            slide.display().to_string()
        ),
    );
    ok(&["pretrain", "--recipe", recipe.to_str().unwrap(), "--quiet"]);
    assert_eq!(pretrain_steps(tmp.path()), 3);
}

/// A pyramidal tiled TIFF (levels 1, 2, 4) at 0.25 µm/px with a tissue-coloured ellipse,
/// written with GDAL (tiled, DEFLATE, internal overviews, resolution tags in px/cm).
fn pyramidal_tiff(path: &Path) {
    let (w, h) = (800usize, 600usize);
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let options = gdal::raster::RasterCreationOptions::from_iter([
        "TILED=YES",
        "BLOCKXSIZE=128",
        "BLOCKYSIZE=128",
        "COMPRESS=DEFLATE",
        "PHOTOMETRIC=RGB",
    ]);
    let mut ds = driver
        .create_with_band_type_with_options::<u8, _>(path, w, h, 3, &options)
        .unwrap();
    for (k, v) in [
        ("TIFFTAG_XRESOLUTION", "40000"),
        ("TIFFTAG_YRESOLUTION", "40000"),
        ("TIFFTAG_RESOLUTIONUNIT", "3"),
    ] {
        gdal::Metadata::set_metadata_item(&mut ds, k, v, "").unwrap();
    }
    let tissue = [200u8, 110, 170];
    for (b, &value) in tissue.iter().enumerate() {
        let data: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| {
                let (dx, dy) = ((x as f64 - 400.0) / 300.0, (y as f64 - 300.0) / 200.0);
                if dx * dx + dy * dy < 1.0 {
                    value
                } else {
                    245
                }
            })
            .collect();
        ds.rasterband(b + 1)
            .unwrap()
            .write((0, 0), (w, h), &mut gdal::raster::Buffer::new((w, h), data))
            .unwrap();
    }
    ds.build_overviews("AVERAGE", &[2, 4], &[]).unwrap();
}

#[test]
fn a_generated_pyramid_is_read_from_the_level_that_matches_the_target_mpp() {
    let tmp = tempfile::tempdir().unwrap();
    let slide = tmp.path().join("pyramid.tif");
    pyramidal_tiff(&slide);
    let info: Value =
        serde_json::from_str(&ok(&["inspect", slide.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(info["level_count"], 3, "{info}");
    assert_eq!(
        info["level_downsamples"],
        serde_json::json!([1.0, 2.0, 4.0])
    );
    assert!((info["mpp_x"].as_f64().unwrap() - 0.25).abs() < 1e-9);
    assert_eq!(info["mpp_usable"], true);
    for (mpp, level) in [("0.25", 0), ("0.5", 1), ("1.0", 2)] {
        let out = tmp.path().join(format!("out_{mpp}"));
        ok(&[
            "pathology",
            "tile",
            slide.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--target-mpp",
            mpp,
            "--size",
            "32",
            "--quiet",
        ]);
        let t = table(&out.join("tiles/pyramid.parquet"));
        assert!(t.height() > 0, "tiles at {mpp}");
        let levels = t.column("level").unwrap().u32().unwrap();
        assert!(
            (0..t.height()).all(|i| levels.get(i) == Some(level)),
            "{mpp} um/px"
        );
        // Each tile covers exactly 32 px x mpp um: 32 * mpp / 0.25 level-0 px.
        let w = t.column("width").unwrap().f64().unwrap().get(0).unwrap();
        assert!((w - 32.0 * mpp.parse::<f64>().unwrap() / 0.25).abs() < 1e-9);
    }
}

#[test]
fn tile_images_are_the_tiles_of_the_table_in_its_order() {
    let tmp = tempfile::tempdir().unwrap();
    let slide = tmp.path().join("pyramid.tif");
    pyramidal_tiff(&slide);
    let out = tmp.path().join("out");
    let tile = |extra: &[&str]| {
        let mut a = vec![
            "pathology",
            "tile",
            slide.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--target-mpp",
            "0.5",
            "--size",
            "48",
            "--quiet",
        ];
        a.extend_from_slice(extra);
        ok(&a);
    };
    tile(&[]);
    assert!(!out.join("tile_images").exists());
    // A finished slide is redone when its images are asked for.
    tile(&["--images"]);
    let t = table(&out.join("tiles/pyramid.parquet"));
    let (x, y) = (t.column("x").unwrap(), t.column("y").unwrap());
    let dir = out.join("tile_images/pyramid");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(t.height() > 4, "{} tiles", t.height());
    assert_eq!(names.len(), t.height());
    for (i, name) in names.iter().enumerate() {
        let (xi, yi) = (x.i64().unwrap().get(i), y.i64().unwrap().get(i));
        assert_eq!(
            name,
            &format!("{i:06}_x{}_y{}.png", xi.unwrap(), yi.unwrap())
        );
    }
    // Tiles inside the ellipse are the tissue colour (read from the pyramid's level 1, 0.5 µm/px).
    let img = image::open(dir.join(&names[names.len() / 2]))
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), (48, 48));
    let p = img.get_pixel(24, 24).0;
    assert!(
        p.iter()
            .zip([200u8, 110, 170])
            .all(|(&a, b)| a.abs_diff(b) <= 2),
        "{p:?}"
    );
}

/// A DICOM slide (two instances of one series: the level and its thumbnail) is one slide of the
/// batch, read with dicom-rs on OpenSlide 3.4, tiled and embedded.
#[test]
fn a_dicom_slide_in_a_folder_is_one_slide_and_is_embedded() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data/pathology");
    let tmp = tempfile::tempdir().unwrap();
    let slides = tmp.path().join("slides");
    std::fs::create_dir_all(&slides).unwrap();
    for f in ["boxes_0.dcm", "boxes_1.dcm"] {
        std::fs::copy(data.join(f), slides.join(f)).unwrap();
    }
    let out = tmp.path().join("out");
    let r = dinoadapt(&[
        "pathology",
        "embed",
        "--random-init",
        "--preset",
        "vits14",
        slides.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--size",
        "14",
        "--target-mpp",
        "0.5",
        "--min-tissue",
        "0",
        "--min-area-um2",
        "0",
        "--quiet",
    ]);
    assert!(r.status.success());
    let m = table(&out.join("manifest.parquet"));
    assert_eq!(m.height(), 1, "one slide for the two instances");
    let (st, err, tiles) = status_of(&m, "boxes_0");
    assert_eq!(st, "done", "{err}");
    assert!(tiles >= 1);
    let f = read_tensors(&out.join("features/boxes_0.safetensors"));
    assert_eq!(f["cls"].0, vec![tiles as usize, 384]);
}
