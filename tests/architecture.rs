//! The arrows of `../shared/ARCHITECTURE.md`, checked on the crates' manifests: `core` knows no
//! other crate; `datasets` knows `core`; `pretrain` and `heads` know `core` and `datasets`; each
//! domain knows `datasets` and `core`, never another domain; no library knows the program.

use std::collections::BTreeMap;
use std::path::Path;

/// The workspace crates a manifest's `[dependencies]` name.
fn workspace_deps(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && line.starts_with("dinoadapt") {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            deps.push(name);
        }
    }
    deps
}

#[test]
fn crates_depend_only_along_the_arrows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allowed: BTreeMap<&str, (&str, &[&str])> = BTreeMap::from([
        ("core", ("dinoadapt-core", &[][..])),
        ("datasets", ("dinoadapt-datasets", &["dinoadapt-core"][..])),
        (
            "pretrain",
            (
                "dinoadapt-pretrain",
                &["dinoadapt-core", "dinoadapt-datasets"][..],
            ),
        ),
        (
            "heads",
            (
                "dinoadapt-heads",
                &["dinoadapt-core", "dinoadapt-datasets"][..],
            ),
        ),
    ]);
    for (dir, (name, ok)) in &allowed {
        for dep in workspace_deps(&root.join(dir).join("Cargo.toml")) {
            assert!(ok.contains(&dep.as_str()), "{name} depends on {dep}");
        }
    }
    let domains: Vec<_> = std::fs::read_dir(root.join("domains"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    assert!(domains.len() >= 3, "{domains:?}");
    for d in &domains {
        for dep in workspace_deps(&d.join("Cargo.toml")) {
            assert!(
                dep == "dinoadapt-core" || dep == "dinoadapt-datasets",
                "the domain {} depends on {dep}",
                d.display()
            );
        }
    }
}
