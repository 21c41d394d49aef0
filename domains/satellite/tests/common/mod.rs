//! Helpers of the satellite tests.

use std::path::PathBuf;

/// `../shared/data` beside the repository (required under `CI=true`).
pub fn shared_data() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.join("REFERENCE.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared/data is missing beside the repository; CI needs it");
    }
    eprintln!("skipping: ../shared/data is missing");
    None
}
