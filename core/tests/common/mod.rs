//! Shared by the core fixture tests.

use std::path::PathBuf;

/// `../shared/fixtures/<name>` beside the repository. Under `CI=true` its absence fails the
/// test; elsewhere the test is skipped with a message.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
    .join(name);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared/fixtures is missing beside the repository; CI needs it");
    }
    eprintln!("skipping: ../shared/fixtures not found");
    None
}
