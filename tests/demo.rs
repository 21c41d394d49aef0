//! `dinoadapt demo` on a fresh folder, without `../shared`: the three users' jobs run their
//! recipe scripts (recipes/*.sh) at tiny scale on the built-in samples and the report shows
//! them. Every output a job promises is there and reads back.
//!
//! Then the notebooks (`notebooks/*.ipynb`) run on those outputs, headless with nbclient in the
//! Python environment `scripts/interop-env.sh` makes from PyPI (`.ci/run` makes it; its python
//! is `$DINOADAPT_PYTHON`, else `~/.cache/dinoadapt/venv/bin/python`). They run the program on
//! the demo's outputs and read them with pandas, safetensors, h5py, nibabel, rasterio and
//! matplotlib, ending in checks: an output a notebook cannot read, or that disagrees with the
//! others, fails its cell and this test, with the cell's error. Under `CI=true` a missing
//! environment fails; elsewhere the notebooks are skipped with a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{p, read_tensors, table};

fn exists(dir: &Path, rel: &str) {
    assert!(dir.join(rel).exists(), "{rel} is missing");
}

#[test]
fn the_demo_runs_every_job_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let t0 = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_dinoadapt"))
        .args(["demo", "--out", p(&out)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("demo: {:.0} s\n{stderr}", t0.elapsed().as_secs_f64());
    assert!(run.status.success(), "the demo failed");
    assert!(
        stderr.contains("report.html"),
        "it says where the report is"
    );

    // Pathology: tiles with a QC thumbnail, a curated pool, a pre-trained teacher, slide bags,
    // a survival head with its Kaplan-Meier plot and risk per slide.
    for rel in [
        "pathology/tiles/tissue/CMU-1-Small-Region.png",
        "pathology/curated.parquet",
        "pathology/pretrain/teacher/model.safetensors",
        "pathology/pretrain/metrics.png",
        "pathology/slides/h5/CMU-1-Small-Region.h5",
        "pathology/survival/head/km.png",
    ] {
        exists(&out, rel);
    }
    let curated = table(&out.join("pathology/curated.parquet"));
    let kept = curated
        .column("kept")
        .unwrap()
        .bool()
        .unwrap()
        .sum()
        .unwrap() as usize;
    assert!(
        kept > 0 && kept < curated.height(),
        "{kept} of {}",
        curated.height()
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("pathology/pretrain/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["steps"], 200);
    assert_eq!(
        summary["pool_images"].as_u64().unwrap() as usize,
        kept,
        "{summary}"
    );
    let risk = table(&out.join("pathology/survival/risk.parquet"));
    let clinical = std::fs::read_to_string(out.join("pathology/cohort/clinical.csv")).unwrap();
    assert_eq!(risk.height(), clinical.lines().count() - 1);

    // Radiology: slice features, a probe and its confusion, a label map on the source grid.
    let probe = table(&out.join("radiology/probe/metrics.parquet"));
    assert!(probe.height() >= 2);
    exists(&out, "radiology/probe/confusion.parquet");
    let labels: Vec<_> = std::fs::read_dir(out.join("radiology/labels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_segment.nii.gz"))
        .collect();
    assert_eq!(labels.len(), 1, "{labels:?}");

    // Remote sensing: the height map on the raster's grid, its quick look, the error report.
    let heights = dinoadapt_satellite::Raster::open(&out.join("satellite/heights.tif")).unwrap();
    let source = dinoadapt_satellite::Raster::open(&out.join("inputs/rgbn.tif")).unwrap();
    assert_eq!(heights.info().geotransform, source.info().geotransform);
    assert_eq!(
        (heights.info().width, heights.info().height),
        (source.info().width, source.info().height)
    );
    exists(&out, "satellite/heights.png");
    exists(&out, "satellite/head/errors.png");
    let errors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("satellite/errors.json")).unwrap())
            .unwrap();
    assert!(errors["mae"].as_f64().unwrap().is_finite(), "{errors}");
    let chips = read_tensors(&out.join("satellite/chips.safetensors"));
    assert!(chips.contains_key("layer.3") || chips.keys().any(|k| k.starts_with("layer.")));

    // Every long command of the jobs wrote its own run report, pictures inlined.
    for rel in [
        "pathology/tiles/report.html",
        "pathology/slides/report.html",
        "pathology/curated.report.html",
        "pathology/pretrain/report.html",
        "pathology/survival/head/report.html",
        "radiology/segment/report.html",
        "satellite/head/report.html",
        "satellite/heights.report.html",
    ] {
        let page = std::fs::read_to_string(out.join(rel)).unwrap_or_default();
        assert!(
            page.contains("data:image/png;base64,"),
            "{rel}: no report with pictures"
        );
    }
    let probe = std::fs::read_to_string(out.join("radiology/probe/report.html")).unwrap();
    assert!(probe.contains("confusion") && probe.contains("predicted superior"));
    let pretrain = std::fs::read_to_string(out.join("pathology/pretrain/report.html")).unwrap();
    assert!(pretrain.contains("<h2>Recipe</h2>") && pretrain.contains("<th>seed</th>"));

    // The report: every job's section, pictures inlined, timings, no input file names.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for heading in [
        "Jobs and timings",
        "Pathology: slide, tissue, tiles, curation, pre-training",
        "Pathology: survival from slide feature bags",
        "Radiology: frozen features of a volume",
        "Remote sensing: canopy height",
    ] {
        assert!(html.contains(heading), "no section {heading}");
    }
    assert!(html.matches("data:image/png;base64,").count() >= 8);
    // The recipes the jobs ran are in the output, as run.
    for script in [
        "pathology_slide_features.sh",
        "pathology_survival.sh",
        "radiology_frozen_eval.sh",
        "canopy_height.sh",
    ] {
        let ran = std::fs::read_to_string(out.join("recipes").join(script)).unwrap();
        let ours = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("recipes")
                .join(script),
        )
        .unwrap();
        assert_eq!(ran, ours, "{script}");
    }

    if let Some(py) = python() {
        run_notebooks(&py, &out, dir);
    }
}

const NOTEBOOKS: [&str; 3] = ["pathology", "radiology", "remote_sensing"];

/// Executes a notebook with nbclient: `python -c RUNNER NOTEBOOK WORKDIR EXECUTED`. The kernel is
/// this interpreter (a kernelspec installed into WORKDIR, found first through JUPYTER_PATH); a
/// first cell, added here, fails unless the kernel runs in this environment and imports rasterio
/// from it. The executed notebook (outputs included) is written to EXECUTED even on failure.
const RUNNER: &str = r#"
import os, re, sys
import nbclient, nbformat
from ipykernel.kernelspec import install

notebook, workdir, executed = sys.argv[1:4]
prefix = os.path.join(workdir, "kernel")
install(prefix=prefix, kernel_name="python3")
os.environ["JUPYTER_PATH"] = os.path.join(prefix, "share", "jupyter")
nb = nbformat.read(notebook, as_version=4)
nb.cells.insert(0, nbformat.v4.new_code_cell(
    "import sys, rasterio\n"
    f"assert sys.prefix == {sys.prefix!r}, ('kernel not in the environment', sys.executable)\n"
    "print('kernel:', sys.executable, '| rasterio', rasterio.__version__, 'from', rasterio.__file__)"
))
client = nbclient.NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": workdir}}
)
try:
    client.execute()
except nbclient.exceptions.CellExecutionError as e:
    print(re.sub(r"\x1b\[[0-9;]*m", "", str(e)), file=sys.stderr)  # no colour codes
    sys.exit(1)
finally:
    nbformat.write(nb, executed)
print(nb.cells[0].outputs[0].text, end="")
"#;

/// The interop environment's python, if there is one with the notebook libraries.
fn python() -> Option<PathBuf> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let py = common::venv_python();
    let Some(py) = py else {
        if ci {
            panic!("no interop environment: run scripts/interop-env.sh (.ci/run does)");
        }
        eprintln!("skipping: no interop environment (scripts/interop-env.sh makes one)");
        return None;
    };
    let probe = Command::new(&py)
        .args(["-c", "import nbclient, nbformat, ipykernel, matplotlib, rasterio, nibabel, h5py, safetensors, pandas"])
        .output()
        .unwrap();
    if !probe.status.success() {
        let why = String::from_utf8_lossy(&probe.stderr);
        if ci {
            panic!(
                "{} lacks the notebook libraries (rerun scripts/interop-env.sh): {why}",
                py.display()
            );
        }
        eprintln!(
            "skipping: {} lacks the notebook libraries (rerun scripts/interop-env.sh): {why}",
            py.display()
        );
        return None;
    }
    Some(py)
}

/// Runs one notebook; its error (the failing cell and traceback), if any.
fn execute(
    py: &Path,
    notebook: &Path,
    work: &Path,
    executed: &Path,
    env: &[(&str, &Path)],
) -> Result<String, String> {
    std::fs::create_dir_all(work).unwrap();
    let out = Command::new(py)
        .arg("-c")
        .arg(RUNNER)
        .arg(notebook)
        .arg(work)
        .arg(executed)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

/// Each notebook executed headless on the demo's outputs `demo` (scratch in `tmp`); a failing
/// cell or a notebook that drew nothing fails.
fn run_notebooks(py: &Path, demo: &Path, tmp: tempfile::TempDir) {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_dinoadapt"));
    let figures = tmp.path().join("figures");
    let env = [
        ("DINOADAPT_DEMO_OUT", demo),
        ("DINOADAPT", exe.as_path()),
        ("DINOADAPT_FIGURES", figures.as_path()),
    ];
    let mut failures = Vec::new();
    for name in NOTEBOOKS {
        let notebook = common::crate_dir().join(format!("notebooks/{name}.ipynb"));
        let executed = tmp.path().join(format!("{name}.executed.ipynb"));
        let t0 = Instant::now();
        let result = execute(
            py,
            &notebook,
            &tmp.path().join(format!("work-{name}")),
            &executed,
            &env,
        );
        let seconds = t0.elapsed().as_secs_f64();
        match result {
            Ok(out) => eprintln!("notebook {name}: ok in {seconds:.0} s\n{out}"),
            Err(e) => {
                eprintln!("notebook {name}: FAILED in {seconds:.0} s\n{e}");
                failures.push(name);
                continue;
            }
        }
        // Each notebook draws: its figures, saved through $DINOADAPT_FIGURES, are PNGs.
        let drawn: Vec<_> = std::fs::read_dir(&figures)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let pngs = drawn
            .iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{name}-"))
            })
            .filter(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n")))
            .count();
        if pngs == 0 {
            eprintln!("notebook {name}: no figure saved in {}", figures.display());
            failures.push(name);
        }
    }
    if !failures.is_empty() {
        // Keep the demo outputs and the executed notebooks for a look.
        let kept = tmp.keep();
        panic!(
            "notebooks failed: {failures:?} (demo outputs and executed notebooks kept in {})",
            kept.display()
        );
    }
}
