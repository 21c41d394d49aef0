//! Every `nifti/*` and `dicom/*` entry of the shared REFERENCE.json (nibabel 5.4.2 and
//! pydicom 3.0.2 results) against this crate's reports.

mod common;

use dinoadapt_radiology::dicom::read_dicom_file;
use dinoadapt_radiology::inspect::inspect_path;
use dinoadapt_radiology::privacy::identifying_values;
use dinoadapt_radiology::{Pseudonymizer, RadiologyError};
use serde_json::Value;

/// Files the reference says dicom-rs cannot decode (12-bit JPEG extended, 32-bit RT dose):
/// they may fail, but then with a clear typed error.
const MAY_FAIL_PIXELS: &[&str] = &["dicom/JPGExtended.dcm", "dicom/rtdose.dcm"];

/// Files pydicom could not decode in the reference run but this build must (JPEG-LS through
/// CharLS: dicom-pixeldata's `charls` feature).
const MUST_DECODE: &[&str] = &["dicom/MR_small_jpeg_ls_lossless.dcm"];

fn tolerance(key: &str) -> (f64, f64) {
    // (absolute, relative)
    match key {
        "value_min" | "value_max" | "value_mean" => (1e-6, 1e-3),
        k if k.starts_with("affine") => (1e-4, 0.0),
        _ => (1e-6, 1e-6),
    }
}

fn compare(key: &str, path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            let (abs, rel) = tolerance(key);
            if (a - b).abs() > abs + rel * a.abs() {
                out.push(format!("{path}: want {a}, got {b}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!("{path}: want {want}, got {got}"));
                return;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(key, &format!("{path}[{i}]"), x, y, out);
            }
        }
        _ => {
            if want != got {
                out.push(format!("{path}: want {want}, got {got}"));
            }
        }
    }
}

#[test]
fn reference_geometry_nifti_dicom_and_series() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let reference = common::reference(&data);
    let pseudo = Pseudonymizer::new("reference-test");
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut typed_failures = Vec::new();
    for (name, want) in reference.as_object().unwrap() {
        if !(name.starts_with("nifti/") || name.starts_with("dicom/")) {
            continue;
        }
        checked += 1;
        let path = data.join(name);
        let reports = match inspect_path(&path, &pseudo) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{name}: cannot inspect: {e}"));
                continue;
            }
        };
        assert_eq!(reports.len(), 1, "{name}: one report expected");
        let got = serde_json::to_value(&reports[0]).unwrap();
        if std::env::var_os("RADIOLOGY_DUMP").is_some() {
            eprintln!("{name}: {}", reports[0].to_json());
        }
        // no identifying value of the source file appears in the report
        if name.starts_with("dicom/") {
            let files: Vec<std::path::PathBuf> = if path.is_dir() {
                std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect()
            } else {
                vec![path.clone()]
            };
            let json = got.to_string();
            for f in files {
                for (attr, value) in identifying_values(&f).unwrap() {
                    if value.len() >= 4 && json.contains(&value) {
                        problems.push(format!("{name}: report contains {attr}"));
                    }
                }
            }
        }
        let want_obj = want.as_object().unwrap();
        let pixel_failed = got.get("pixel_error").is_some_and(|v| !v.is_null());
        if pixel_failed {
            let reason = got["pixel_error"].as_str().unwrap_or_default().to_string();
            if MUST_DECODE.contains(&name.as_str()) {
                problems.push(format!("{name}: must decode, got: {reason}"));
            } else if want_obj.contains_key("pixel_error")
                || MAY_FAIL_PIXELS.contains(&name.as_str())
            {
                // must be a typed error naming the transfer syntax
                let file = read_dicom_file(&path, &pseudo).unwrap();
                match &file.pixels {
                    Err(RadiologyError::UndecodableTransferSyntax {
                        uid, name: ts_name, ..
                    }) => {
                        assert_eq!(uid, want["transfer_syntax"].as_str().unwrap(), "{name}");
                        assert!(!ts_name.is_empty());
                        assert!(reason.contains(uid.as_str()), "{name}: {reason}");
                    }
                    Err(RadiologyError::PixelData { .. }) => {}
                    other => panic!("{name}: unexpected pixel result {other:?}"),
                }
                typed_failures.push(format!("{name}: {reason}"));
            } else {
                problems.push(format!("{name}: pixels not decoded: {reason}"));
            }
        }
        for (key, want_v) in want_obj {
            if matches!(key.as_str(), "kind" | "note" | "pixel_error") {
                continue;
            }
            if pixel_failed && (key.starts_with("value_") || key == "pixel_shape") {
                continue;
            }
            match got.get(key) {
                Some(got_v) => compare(key, &format!("{name}.{key}"), want_v, got_v, &mut problems),
                None if want_v.is_null() => {}
                None => problems.push(format!("{name}.{key}: missing (want {want_v})")),
            }
        }
        assert_eq!(got["kind"], want["kind"], "{name}");
    }
    eprintln!("checked {checked} reference entries");
    for f in &typed_failures {
        eprintln!("typed pixel failure (allowed): {f}");
    }
    assert!(checked >= 20, "only {checked} entries");
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn jpeg_ls_lossless_decodes_to_the_uncompressed_pixels() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let pseudo = Pseudonymizer::new("reference-test");
    let plain = read_dicom_file(data.join("dicom/MR_small.dcm"), &pseudo).unwrap();
    let jls = read_dicom_file(data.join("dicom/MR_small_jpeg_ls_lossless.dcm"), &pseudo).unwrap();
    assert_eq!(jls.info.transfer_syntax, "1.2.840.10008.1.2.4.80");
    let (a, b) = (plain.pixels.unwrap(), jls.pixels.unwrap());
    assert_eq!(a.values.len(), 64 * 64);
    assert_eq!(a.values, b.values);
}
