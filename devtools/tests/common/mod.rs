//! Helpers of the `dinoadapt-dev` tests (the shared-folder rule of the program's tests/common).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared` beside the repository. Under `CI=true` its absence fails the test; elsewhere the
/// test is skipped with a message.
pub fn shared() -> Option<PathBuf> {
    let dir = crate_dir().join("../../shared");
    if dir.join("fixtures").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared is missing beside the repository; CI needs it");
    }
    eprintln!("skipping: ../shared is not beside the repository");
    None
}

pub fn fixtures() -> Option<PathBuf> {
    shared().map(|s| s.join("fixtures"))
}

pub fn dinoadapt_dev(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_dinoadapt-dev"))
        .args(args)
        .output()
        .expect("run dinoadapt-dev");
    eprintln!(
        "$ dinoadapt-dev {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// This crate's folder (devtools/) as cargo gives it when it runs the test (a test binary built
/// in another checkout that shares the target directory still finds this checkout's
/// `../shared`), else where the test was compiled.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
