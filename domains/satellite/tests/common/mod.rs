//! Helpers of the satellite tests.

use std::path::PathBuf;

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

/// The crate's folder as cargo gives it when it runs the test (a test binary built in another
/// checkout that shares the target directory still finds this checkout's `../shared`), else
/// where the test was compiled.
pub fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
