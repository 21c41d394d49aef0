//! kill -9 (issue 18): each batch command killed with SIGKILL at several points, then run
//! again (with `--resume` where it resumes), ends with outputs identical to an uninterrupted
//! run — byte for byte, except wall-clock `seconds` columns and keys, which differ between any
//! two runs. `pathology embed` and `pretrain` have their own kill tests (tests/pathology.rs,
//! tests/pretrain.rs).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, shared, table};
use polars::prelude::DataFrame;

/// When to kill a run.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Once `n` status files exist in `<out>/status`.
    AfterStatuses(usize),
    /// This long after the start.
    After(Duration),
}

/// Start `dinoadapt args`, SIGKILL it at `when` (or let it end if it ends first); whether it
/// was killed.
fn killed(args: &[String], out: &Path, when: Kill) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dinoadapt"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let due = match when {
            Kill::After(d) => t0.elapsed() >= d,
            Kill::AfterStatuses(n) => std::fs::read_dir(out.join("status"))
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                        .count()
                        >= n
                })
                .unwrap_or(false),
        };
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no kill point reached"
        );
        if due {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<PathBuf, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), p);
            }
        }
    }
    out
}

fn without_seconds(df: DataFrame) -> DataFrame {
    match df
        .get_column_names()
        .iter()
        .any(|c| c.as_str() == "seconds")
    {
        true => df.drop("seconds").unwrap(),
        false => df,
    }
}

fn strip_seconds(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("seconds");
            m.values_mut().for_each(strip_seconds);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_seconds),
        _ => {}
    }
}

/// The outputs under `a` and `b` are the same files with the same content (timing and run
/// reports aside).
fn assert_same_outputs(a: &Path, b: &Path, what: &str) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "{what}: the files differ"
    );
    for (rel, pa) in &fa {
        let pb = &fb[rel];
        let name = rel.display();
        match rel.extension().and_then(|e| e.to_str()) {
            // Run reports record the command line, the start time and the timings: their
            // existence is compared, their content is not.
            Some("html") => {}
            Some("parquet") => {
                let (x, y) = (without_seconds(table(pa)), without_seconds(table(pb)));
                assert!(x.equals_missing(&y), "{what}: {name} differs:\n{x}\n{y}");
            }
            Some("json") => {
                let read = |p: &Path| {
                    let mut v: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                    strip_seconds(&mut v);
                    v
                };
                assert_eq!(read(pa), read(pb), "{what}: {name} differs");
            }
            _ => assert!(
                std::fs::read(pa).unwrap() == std::fs::read(pb).unwrap(),
                "{what}: {name} differs"
            ),
        }
    }
}

/// `args` with `{out}` replaced by `out`.
fn with_out(args: &[&str], out: &Path) -> Vec<String> {
    args.iter()
        .map(|a| a.replace("{out}", out.to_str().unwrap()))
        .collect()
}

/// The uninterrupted run of `args` into `root/straight`, then for each kill point a run into
/// `root/killed-<k>` killed there and run again with `again` flags appended; each must end
/// like the uninterrupted one. `out` is where, under a run's folder, the outputs are.
fn check(root: &Path, what: &str, args: &[&str], again: &[&str], out: &str, points: &[Kill]) {
    let straight = root.join("straight");
    let s = with_out(args, &straight);
    ok(&s.iter().map(String::as_str).collect::<Vec<_>>());
    let mut kills = 0;
    for (k, point) in points.iter().enumerate() {
        let dir = root.join(format!("killed-{k}"));
        let first = with_out(args, &dir);
        if killed(&first, &dir.join(out), *point) {
            kills += 1;
        }
        let mut rerun = first.clone();
        rerun.extend(again.iter().map(|a| a.to_string()));
        ok(&rerun.iter().map(String::as_str).collect::<Vec<_>>());
        assert_same_outputs(
            &straight.join(out),
            &dir.join(out),
            &format!("{what}, kill {k}"),
        );
    }
    eprintln!(
        "kill -9: {what}: {kills} of {} runs killed mid-way",
        points.len()
    );
}

/// Kill points spread over a run that takes about `d`.
fn spread(d: Duration) -> Vec<Kill> {
    [0.15, 0.4, 0.7]
        .iter()
        .map(|f| Kill::After(d.mul_f64(*f)))
        .collect()
}

/// How long `args` takes, uninterrupted, into a scratch folder under `root`.
fn timed(root: &Path, args: &[&str]) -> Duration {
    let t0 = Instant::now();
    let s = with_out(args, &root.join("timing"));
    ok(&s.iter().map(String::as_str).collect::<Vec<_>>());
    t0.elapsed()
}

#[test]
fn batch_commands_killed_and_run_again_end_as_an_uninterrupted_run() {
    let Some(shared) = shared() else { return };
    let d = shared.join("data");
    let m = shared.join("fixtures/hf_dinov2_reg");
    let m = m.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = |rel: &str| d.join(rel).to_str().unwrap().to_string();

    // radiology embed: three inputs, killed after the first and the second finished.
    let (nii, ct5n, ct) = (
        p("nifti/anatomical.nii"),
        p("dicom/series_ct5n"),
        p("dicom/CT_small.dcm"),
    );
    let root = tmp.path().join("radiology");
    check(
        &root,
        "radiology embed",
        &[
            "radiology",
            "embed",
            "--model",
            m,
            "--size",
            "56",
            "--quiet",
            &nii,
            &ct5n,
            &ct,
            "--resume",
            "-o",
            "{out}",
        ],
        &[],
        "",
        &[Kill::AfterStatuses(1), Kill::AfterStatuses(2)],
    );

    // satellite embed, one features file per raster.
    let (rgb, rgbn) = (p("satellite/rmnp-rgb.tif"), p("satellite/rgbn.tif"));
    let root = tmp.path().join("satellite-embed");
    check(
        &root,
        "satellite embed",
        &[
            "satellite",
            "embed",
            "--model",
            m,
            "--size",
            "56",
            "--quiet",
            "--resume",
            &rgb,
            &rgbn,
            "-o",
            "{out}/f.safetensors",
        ],
        &[],
        "f",
        &[Kill::AfterStatuses(1)],
    );

    // satellite predict (a PCA map): not resumable; a run after a kill starts over.
    let root = tmp.path().join("satellite-predict");
    std::fs::create_dir_all(&root).unwrap();
    let args = [
        "satellite",
        "predict",
        "--model",
        m,
        "--size",
        "56",
        "--quiet",
        &rgb,
        "--out",
        "{out}/pca.tif",
    ];
    for dir in ["straight", "timing", "killed-0", "killed-1", "killed-2"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let points = spread(timed(&root, &args));
    check(&root, "satellite predict", &args, &[], "", &points);

    // curate and heads train on embedded digits.
    let feats = tmp.path().join("feats");
    std::fs::create_dir_all(&feats).unwrap();
    for (split, per_class) in [("train", 8), ("val", 4)] {
        let list = feats.join(format!("{split}.txt"));
        let mut paths = Vec::new();
        for c in 0..4 {
            let dir = d.join(format!("mnist5k/{split}/{c}"));
            let mut f: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            f.sort();
            paths.extend(
                f.into_iter()
                    .take(per_class)
                    .map(|p| p.display().to_string()),
            );
        }
        std::fs::write(&list, paths.join("\n")).unwrap();
        ok(&[
            "embed",
            "--model",
            m,
            "--quiet",
            list.to_str().unwrap(),
            "-o",
            feats.join(format!("{split}.safetensors")).to_str().unwrap(),
        ]);
    }
    let (train, val) = (
        feats.join("train.safetensors"),
        feats.join("val.safetensors"),
    );
    let (train, val) = (train.to_str().unwrap(), val.to_str().unwrap());
    let root = tmp.path().join("curate");
    let args = [
        "curate",
        "--pool",
        train,
        "--eval",
        val,
        "--mode",
        "dedup",
        "--out",
        "{out}/curated.parquet",
    ];
    let args = {
        for dir in ["straight", "timing", "killed-0", "killed-1", "killed-2"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        args.to_vec()
    };
    let points = spread(timed(&root, &args));
    check(&root, "curate", &args, &[], "", &points);

    let root = tmp.path().join("heads");
    let args = [
        "heads",
        "train",
        "--task",
        "classify",
        "--train",
        train,
        "--val",
        val,
        "--lrs",
        "0.01,0.1",
        "--wds",
        "0",
        "--epochs",
        "50",
        "--quiet",
        "-o",
        "{out}/head",
    ];
    let points = spread(timed(&root, &args));
    check(&root, "heads train", &args, &[], "", &points);
}
