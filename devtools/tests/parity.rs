//! Parity of the backbone with every reference fixture in ../shared/fixtures (Hugging Face,
//! official DINOv2 and timm models; native, interpolated and masked inputs; intermediate
//! layers), at 1e-4 absolute in f32, for every weight format each fixture ships: `dinoadapt-dev
//! parity`.

mod common;

use common::*;

#[test]
fn every_backbone_fixture_matches_its_reference() {
    let Some(fixtures) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("parity.json");
    let out = dinoadapt_dev(&["parity", "--fixtures", p(&fixtures), "--json", p(&report)]);
    let reports: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let reports = reports.as_array().unwrap();
    // Each backbone fixture folder, in each of its weight formats.
    let dirs = std::fs::read_dir(&fixtures)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("hf_") || n.starts_with("official_") || n.starts_with("timm_")
        })
        .count();
    assert!(dirs >= 8, "expected the 8 backbone fixtures, found {dirs}");
    assert!(reports.len() >= dirs);
    for r in reports {
        assert!(r["unchecked"].as_array().unwrap().is_empty(), "{r}");
        assert!(r["errors"].as_object().unwrap().len() >= 3, "{r}");
        assert!(r["passed"].as_bool().unwrap(), "{r}");
        assert!(r["worst"].as_f64().unwrap() <= 1e-4, "{r}");
    }
    assert!(out.status.success());
}
