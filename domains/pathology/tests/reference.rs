//! Opening the shared slides against what openslide-python (OpenSlide 4.0.1) reports in
//! `../shared/data/REFERENCE.json`, and typed errors for files that cannot be read.

mod common;

use std::path::Path;

use dinoadapt_pathology::{MppSource, OpenOptions, PathologyError, Slide};
use serde_json::Value;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()))
}

/// Files Debian's OpenSlide 3.4.1 opens (DICOM needs 4.0, unopenable.tiff is meant to fail).
const OPENABLE: &[&str] = &["CMU-1-Small-Region.svs", "small.svs", "boxes.tiff"];

#[test]
fn slides_match_openslide_reference() {
    let Some((dir, reference)) = common::pathology() else {
        return;
    };
    for name in OPENABLE {
        let want = &reference[format!("pathology/{name}")];
        let slide = Slide::open(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = slide.info();
        assert_eq!(info.backend, "openslide", "{name}");
        assert_eq!(Value::from(info.format.clone()), want["vendor"], "{name}");
        let dims = &want["level_dimensions"];
        assert_eq!(
            info.levels.len() as u64,
            want["level_count"].as_u64().unwrap()
        );
        for (l, level) in info.levels.iter().enumerate() {
            assert_eq!(
                level.width,
                dims[l][0].as_u64().unwrap(),
                "{name} level {l}"
            );
            assert_eq!(
                level.height,
                dims[l][1].as_u64().unwrap(),
                "{name} level {l}"
            );
            let ds = want["level_downsamples"][l].as_f64().unwrap();
            assert!(
                close(level.downsample, ds),
                "{name} level {l}: {}",
                level.downsample
            );
        }
        assert_eq!(
            info.objective_power,
            want["objective_power"].as_f64(),
            "{name}"
        );
        let mut got: Vec<&str> = info.associated_images.iter().map(String::as_str).collect();
        let mut exp: Vec<&str> = want["associated_images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        got.sort_unstable();
        exp.sort_unstable();
        assert_eq!(got, exp, "{name}");
        let want_mpp = want["mpp_x"].as_f64().unwrap();
        if mpp_plausible(want_mpp) {
            let mpp = slide.mpp().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(close(mpp.x, want_mpp) && close(mpp.y, want["mpp_y"].as_f64().unwrap()));
            assert_eq!(mpp.source, MppSource::Openslide, "{name}");
        } else {
            // boxes.tiff: OpenSlide 4 reports its 72 dpi tags as 352.8 um/px; we refuse that.
            let e = slide.mpp().unwrap_err();
            assert!(matches!(e, PathologyError::NoMpp { .. }), "{name}: {e}");
            assert!(e.to_string().contains("--mpp"), "{e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}

fn mpp_plausible(v: f64) -> bool {
    dinoadapt_pathology::mpp::plausible(v)
}

#[test]
fn an_override_gives_boxes_tiff_a_pixel_size() {
    let Some((dir, _)) = common::pathology() else {
        return;
    };
    let opts = OpenOptions {
        mpp_override: Some(0.25),
    };
    let slide = Slide::open_with(&dir.join("boxes.tiff"), &opts).unwrap();
    let mpp = slide.mpp().unwrap();
    assert_eq!(
        (mpp.x, mpp.y, mpp.source),
        (0.25, 0.25, MppSource::Override)
    );
    let bad = OpenOptions {
        mpp_override: Some(352.0),
    };
    let e = Slide::open_with(&dir.join("boxes.tiff"), &bad).unwrap_err();
    assert!(matches!(e, PathologyError::InvalidMpp { .. }), "{e}");
}

#[test]
fn svs_pixels_are_opaque_rgb_and_outside_is_white() {
    let Some(path) = common::cmu_small() else {
        return;
    };
    let slide = Slide::open(&path).unwrap();
    let region = slide.read_region(0, 1000, 1000, 64, 48).unwrap();
    assert_eq!(region.dimensions(), (64, 48));
    assert!(region.pixels().any(|p| p.0 != [255, 255, 255]));
    // Half past the right edge: the outside half is white.
    let edge = slide.read_region(0, 2220 - 8, 100, 16, 4).unwrap();
    assert_eq!(edge.get_pixel(12, 2).0, [255, 255, 255]);
    // Left of the slide.
    let left = slide.read_region(0, -8, 100, 16, 4).unwrap();
    assert_eq!(left.get_pixel(3, 2).0, [255, 255, 255]);
    let info = serde_json::to_string(slide.info()).unwrap();
    assert!(
        !info.contains("aperio.") && !info.contains("Filename"),
        "{info}"
    );
}

#[test]
fn unopenable_tiff_is_a_typed_error_naming_the_file() {
    let Some((dir, _)) = common::pathology() else {
        return;
    };
    let e = Slide::open(&dir.join("unopenable.tiff")).unwrap_err();
    assert!(
        matches!(
            e,
            PathologyError::OpenSlide { .. } | PathologyError::Unrecognised { .. }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("unopenable.tiff"), "{e}");
}

#[test]
fn a_truncated_slide_is_a_typed_error() {
    let Some(path) = common::cmu_small() else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("truncated.svs");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    // Either OpenSlide refuses it, or it opens and reading the missing tiles fails.
    let err = match Slide::open(&cut) {
        Err(e) => e,
        Ok(slide) => {
            let (w, h) = slide.dimensions();
            slide
                .read_region(0, 0, 0, w as u32, h as u32)
                .expect_err("reading the missing part must fail")
        }
    };
    assert!(err.to_string().contains("truncated.svs"), "{err}");
}

/// The DICOM slide's pixels equal OpenSlide 4's (tests/data/dicom_openslide4.json, made by
/// make_dicom_reference.py), whichever instance of the series is opened, also for a region that
/// hangs over the slide's edge; JPEG decoders may differ by a grey level or two.
#[test]
fn dicom_wsi_pixels_match_openslide_4() {
    let Some((dir, _)) = common::pathology() else {
        return;
    };
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(common::crate_dir().join("tests/data/dicom_openslide4.json"))
            .unwrap(),
    )
    .unwrap();
    for r in reference["regions"].as_array().unwrap() {
        let name = r["file"].as_str().unwrap();
        let slide = Slide::open(&dir.join(name)).unwrap();
        assert_eq!(slide.info().format, "dicom");
        let g = |k: &str| r[k].as_i64().unwrap();
        let img = slide
            .read_region(0, g("x"), g("y"), g("width") as u32, g("height") as u32)
            .unwrap();
        let want: Vec<i64> = r["rgb"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let max = img
            .as_raw()
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (i64::from(a) - b).abs())
            .max()
            .unwrap();
        assert!(
            max <= 2,
            "{name} at ({}, {}): max difference {max}",
            g("x"),
            g("y")
        );
    }
}

#[test]
fn a_missing_file_is_an_io_error() {
    let e = Slide::open(Path::new("/nonexistent/slide.svs")).unwrap_err();
    assert!(matches!(e, PathologyError::Io { .. }), "{e:?}");
}

#[test]
fn plain_images_open_through_the_fallback() {
    let Some((dir, _)) = common::pathology() else {
        return;
    };
    let slide = Slide::open(&dir.join("he_tile_240.png")).unwrap();
    assert_eq!(slide.info().backend, "image");
    assert_eq!(slide.dimensions(), (240, 240));
    let e = slide.mpp().unwrap_err();
    assert!(e.to_string().contains("--mpp"), "{e}");
    let jpg = Slide::open(&dir.join("retina.jpg")).unwrap();
    assert_eq!(jpg.dimensions(), (1411, 1411));
}

#[test]
fn a_strip_tiff_takes_its_pixel_size_from_resolution_tags() {
    use tiff::encoder::{colortype::RGB8, Rational, TiffEncoder};
    use tiff::tags::ResolutionUnit;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, unit, per_unit: u32| {
        let path = dir.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        let mut enc = TiffEncoder::new(file).unwrap();
        let mut img = enc.new_image::<RGB8>(32, 16).unwrap();
        img.resolution(unit, Rational { n: per_unit, d: 1 });
        let data: Vec<u8> = (0..32 * 16 * 3).map(|i| (i % 251) as u8).collect();
        img.write_data(&data).unwrap();
        path
    };
    // 40000 px/cm = 0.25 um/px.
    let good = write("scan.tif", ResolutionUnit::Centimeter, 40_000);
    let slide = Slide::open(&good).unwrap();
    let mpp = slide.mpp().unwrap();
    assert_eq!(mpp.source, MppSource::TiffResolution);
    assert!(close(mpp.x, 0.25) && close(mpp.y, 0.25), "{mpp:?}");
    assert_eq!(
        slide.read_region(0, 1, 0, 1, 1).unwrap().get_pixel(0, 0).0,
        [3, 4, 5]
    );
    // 72 dpi: a screen default, refused.
    let screen = write("screen.tif", ResolutionUnit::Inch, 72);
    let e = Slide::open(&screen).unwrap().mpp().unwrap_err();
    assert!(e.to_string().contains("352.7778"), "{e}");
}
