//! Fuzzing of the pathology readers (issue 18): DICOM whole-slide images (geometry and frames),
//! GeoJSON annotations and CSV slide lists, fed mutations of real samples.

#[path = "../../../core/tests/common/fuzz.rs"]
mod fuzz;

use std::path::Path;

use dinoadapt_pathology::slide_list::collect_slides;
use dinoadapt_pathology::{dicom_wsi, Annotations};
use fuzz::{refused_with_message, Sample, Scratch};

#[global_allocator]
static ALLOC: fuzz::BoundedAlloc = fuzz::BoundedAlloc;

/// Offsets of the digits in a text sample (coordinates, mpp values), for the numeric extremes.
fn digit_fields(text: &str) -> Vec<usize> {
    text.bytes()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_digit())
        .map(|(i, _)| i)
        .collect()
}

fn text_sample(name: &str, text: &str) -> Sample {
    Sample::text(name, text).with_fields(digit_fields(text))
}

#[test]
fn fuzz_dicom_wsi_frames() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let names = ["boxes_0.dcm", "boxes_1.dcm"];
    let samples: Vec<Sample> = names
        .iter()
        .map(|n| {
            let s = Sample::read(&data.join("pathology").join(n));
            let fields = fuzz::dicom_fields(&s.bytes);
            s.with_fields(fields)
        })
        .collect();
    let scratch = Scratch::new("dicom-wsi");
    for s in &samples {
        scratch.write(&s.name, &s.bytes);
    }
    fuzz::fuzz("fuzz_dicom_wsi_frames", &samples, |sample, bytes| {
        // The mutated instance replaces its original beside the slide's other instance.
        let path = scratch.write(&sample.name, bytes);
        let outcome = read_slide(&path);
        scratch.write(&sample.name, &sample.bytes);
        outcome
    });
}

/// `bytes` with `insert` put in at `at`.
fn inserted(mut bytes: Vec<u8>, at: usize, insert: &[u8]) -> Vec<u8> {
    bytes.splice(at..at, insert.iter().copied());
    bytes
}

/// Crashes the fuzzing found, kept as mutation recipes of the shared samples: each made dicom-rs
/// ask for a declared length of gigabytes; each is now refused before it is parsed.
#[test]
fn regression_dicom_wsi_lengths_past_the_end() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let read = |n: &str| std::fs::read(data.join("pathology").join(n)).unwrap();
    let cases = [
        // One byte inserted in a sequence: a VR read as UN with a 1.4 GB length.
        ("boxes_0.dcm", inserted(read("boxes_0.dcm"), 1032, &[0])),
        // Bytes spliced into a sequence: a nested tag past (7FE0,0010), a 0.8 GB length.
        (
            "boxes_1.dcm",
            inserted(
                inserted(
                    read("boxes_1.dcm"),
                    1555,
                    &[
                        0x35, 0x2e, 0x30, 0x00, 0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0, 0xfe, 0xff,
                        0xdd, 0xe0,
                    ],
                ),
                3469,
                &[0x0e, 0x34, 0x96, 0x3c, 0x03, 0x1d, 0xd2, 0x76, 0x17, 0x2d],
            ),
        ),
        // A tag group in the file meta group damaged to 0x8002 and 13 bytes cut after it: the
        // parser reads the meta group by its group length and starts the data set mid-element,
        // at a 1.4 GB length.
        ("boxes_1.dcm", {
            let mut b = read("boxes_1.dcm");
            b[295] = 0x80;
            b.drain(356..369);
            b
        }),
    ];
    let scratch = Scratch::new("dicom-wsi-regression");
    for (name, bytes) in cases {
        let path = scratch.write(name, &bytes);
        let (described, refused) = fuzz::refused_during(|| dicom_wsi::describe(&path));
        assert_eq!(refused, 0, "{name}: asked for {refused} bytes");
        let err = described.expect_err(name).to_string();
        assert!(err.contains("declares"), "{name}: {err}");
    }
}

/// Describes and opens the slide of `path`, and reads a corner region of every level.
fn read_slide(path: &Path) -> Result<(), String> {
    refused_with_message(dicom_wsi::describe(path))?;
    let (slide, info) = match dicom_wsi::open(path) {
        Ok(opened) => opened,
        Err(e) => return refused_with_message(Err::<(), _>(e)),
    };
    for level in 0..info.levels.len() as u32 {
        refused_with_message(slide.read(level, 0, 0, 48, 48))?;
        let (x, y) = (
            info.width.saturating_sub(24),
            info.height.saturating_sub(24),
        );
        refused_with_message(slide.read(level, x, y, 48, 48))?;
    }
    Ok(())
}

/// Annotations as QuPath exports them, and as `pathology tissue` writes its contours.
const GEOJSON_QUPATH: &str = r#"{"type":"FeatureCollection","features":[
{"type":"Feature","id":"a1","geometry":{"type":"Polygon","coordinates":[[[10.5,12.0],[120.0,14.25],[118.0,96.0],[11.0,90.0],[10.5,12.0]],[[40,40],[60,40],[60,60],[40,60],[40,40]]]},"properties":{"objectType":"annotation","classification":{"name":"Tumor","color":[200,0,0]}}},
{"type":"Feature","id":"a2","geometry":{"type":"MultiPolygon","coordinates":[[[[130,10],[200,10],[200,80],[130,10]]],[[[5,150],[90,150],[90,230],[5,230],[5,150]]]]},"properties":{"objectType":"annotation","classification":{"name":"Stroma"}}},
{"type":"Feature","geometry":{"type":"Point","coordinates":[64,64]},"properties":{"class":"Lymphocyte"}},
{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[256,0],[256,256],[0,256],[0,0]]]},"properties":{"label":"Other"}}
]}"#;

const GEOJSON_TISSUE: &str = r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[1024.0,512.0],[2048.0,512.0],[2304.5,1536.0],[1024.0,1792.0],[1024.0,512.0]]]},"properties":{"class":"tissue","area_px":1310720.0}}"#;

#[test]
fn fuzz_geojson_annotations() {
    let samples = [
        text_sample("qupath.geojson", GEOJSON_QUPATH),
        text_sample("tissue.geojson", GEOJSON_TISSUE),
    ];
    let scratch = Scratch::new("geojson");
    fuzz::fuzz("fuzz_geojson_annotations", &samples, |_, bytes| {
        let text = String::from_utf8_lossy(bytes);
        match Annotations::from_geojson(&text, "background") {
            Ok(a) => {
                // Rasterising what was read must not panic or allocate by the coordinates.
                let classes = a.classes();
                a.rasterise_tiles(&classes, &[[0.0, 0.0, 256.0, 256.0]], 16);
            }
            Err(e) => refused_with_message(Err::<(), _>(e))?,
        }
        let path = scratch.write("annotations.geojson", bytes);
        refused_with_message(Annotations::read(&path, "background"))
    });
}

#[test]
fn fuzz_slide_list_csv() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let dir = data.join("pathology");
    let file = |n: &str| dir.join(n).display().to_string();
    let lists = [
        format!(
            "path,slide_id,mpp\n{},cmu_small,0.499\n\"{}\",small,0.25\n{},boxes,\n",
            file("CMU-1-Small-Region.svs"),
            file("small.svs"),
            file("boxes_0.dcm")
        ),
        format!(
            "slide_path,id\n{},he\n\n{},ihc\n{}\n",
            file("he_tile_240.png"),
            file("ihc.png"),
            file("boxes.tiff")
        ),
        format!(
            "Slide,MPP\n{};0.5\n{},1e-1\n",
            file("retina.jpg"),
            file("unopenable.tiff")
        ),
    ];
    let samples: Vec<Sample> = lists
        .iter()
        .enumerate()
        .map(|(i, t)| text_sample(&format!("list{i}.csv"), t))
        .collect();
    let scratch = Scratch::new("slide-list");
    fuzz::fuzz("fuzz_slide_list_csv", &samples, |_, bytes| {
        let path = scratch.write("slides.csv", bytes);
        refused_with_message(collect_slides(&[path]))
    });
}
