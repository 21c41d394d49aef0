//! Shared by the core fixture tests.

use std::path::PathBuf;

/// `../shared/fixtures/<name>` beside the repository. Under `CI=true` its absence fails the
/// test; elsewhere the test is skipped with a message.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let dir = crate_dir().join("../../shared/fixtures").join(name);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared/fixtures is missing beside the repository; CI needs it");
    }
    eprintln!("skipping: ../shared/fixtures not found");
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
