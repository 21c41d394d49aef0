//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// `../shared/data` beside the repository (required under `CI=true`).
pub fn shared_data() -> Option<PathBuf> {
    let dir = crate_dir().join("../../../shared/data");
    if dir.join("REFERENCE.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared/data is missing beside the repository; CI needs it");
    }
    eprintln!("skipping: ../shared/data is missing");
    None
}

/// The shared pathology folder and what openslide-python 4.0.1 reports for its files.
pub fn pathology() -> Option<(PathBuf, Value)> {
    let data = shared_data()?;
    let text = std::fs::read_to_string(data.join("REFERENCE.json")).unwrap();
    let reference: Value = serde_json::from_str(&text.replace("NaN", "null")).unwrap();
    Some((data.join("pathology"), reference))
}

/// CMU-1-Small-Region.svs: a real 20x H&E Aperio slide, 2220 x 2967, 0.499 um/px.
pub fn cmu_small() -> Option<PathBuf> {
    pathology().map(|(dir, _)| dir.join("CMU-1-Small-Region.svs"))
}

/// The crate's folder as cargo gives it when it runs the test (a test binary built in another
/// checkout that shares the target directory still finds this checkout's `../shared`), else
/// where the test was compiled.
pub fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
