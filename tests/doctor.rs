//! `dinoadapt doctor` checks this machine: the libraries each domain links, the output folder,
//! a checkpoint; a failed check exits 1.

mod common;

use common::*;
use serde_json::Value;

/// The JSON report of `dinoadapt doctor args...` and its exit code, which is 1 exactly when a
/// check failed.
fn doctor(args: &[&str]) -> (Value, i32) {
    let out = dinoadapt(&[&["doctor", "--json"], args].concat());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    let code = out.status.code().unwrap();
    let failed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["status"] == "fail");
    assert_eq!(code, i32::from(failed), "exit code vs checks: {report:#}");
    assert_eq!(report["status"] == "fail", failed);
    (report, code)
}

fn check<'a>(report: &'a Value, area: &str, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["area"] == area && c["name"] == name)
        .unwrap_or_else(|| panic!("no {area}/{name} check in {report:#}"))
}

#[test]
fn doctor_finds_gdal_openslide_and_hdf5_and_a_writable_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (report, _) = doctor(&["--out", p(&out)]);
    for (area, name, starts) in [
        ("satellite", "gdal", "GDAL "),
        ("pathology", "openslide", "OpenSlide "),
        ("pathology", "hdf5", "HDF5 "),
    ] {
        let c = check(&report, area, name);
        assert_eq!(c["status"], "ok", "{c:#}");
        assert!(c["detail"].as_str().unwrap().starts_with(starts), "{c:#}");
    }
    assert_eq!(check(&report, "satellite", "driver GTiff")["status"], "ok");
    assert_eq!(check(&report, "output", "write permission")["status"], "ok");
    assert!(out.is_dir(), "the output folder is created");
    for (area, name) in [
        ("system", "cpu"),
        ("system", "memory"),
        ("output", "free disk"),
        ("radiology", "dicom codecs"),
        ("radiology", "nifti"),
    ] {
        check(&report, area, name);
    }
    let cuda = &report["checks"][2];
    assert_eq!(cuda["area"], "device", "{report:#}");
    // The table: a header, aligned rows, a count.
    let table = dinoadapt(&["doctor", "--out", p(&out)]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("STATUS  AREA "), "{text}");
    assert!(text.contains("pathology  openslide "), "{text}");
    assert!(text.contains(" checks: "), "{text}");
}

#[test]
fn doctor_fails_an_output_folder_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let (report, code) = doctor(&["--out", p(&file.join("out"))]);
    let c = check(&report, "output", "write permission");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(c["fix"].as_str().unwrap().contains("--out"), "{c:#}");
    assert_eq!(code, 1);
}

#[test]
fn doctor_reports_a_checkpoint_layout_or_why_it_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model");
    let (report, code) = doctor(&["--out", p(dir.path()), "--model", p(&missing)]);
    let c = check(&report, "model", "checkpoint");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(
        c["detail"].as_str().unwrap().contains("no-such-model"),
        "{c:#}"
    );
    assert!(c["fix"].as_str().unwrap().contains("--preset"), "{c:#}");
    assert_eq!(code, 1);

    let Some(shared) = shared() else { return };
    let model = shared.join("fixtures/hf_dinov2");
    let (report, _) = doctor(&["--out", p(dir.path()), "--model", p(&model)]);
    let c = check(&report, "model", "checkpoint");
    assert_eq!(c["status"], "ok", "{c:#}");
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains("Hugging Face transformers layout"),
        "{detail}"
    );
    assert!(detail.contains("patch=14"), "{detail}");
    assert!(detail.contains("registers=0"), "{detail}");
}
