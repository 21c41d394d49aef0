//! Interop (issue 18): what dinoadapt writes, read by the libraries users read it with, in the
//! virtual environment `scripts/interop-env.sh` makes from PyPI (`.ci/run` makes it; its python
//! is `$DINOADAPT_PYTHON`, else `~/.cache/dinoadapt/venv/bin/python`): `export --to huggingface`
//! loads in transformers and gives our features, the `.h5` bags read in h5py as CLAM/TRIDENT
//! read them, NIfTI in nibabel, GeoTIFF/COG in rasterio, Parquet tables in pandas. The library
//! versions each check ran with are printed. Under `CI=true` a missing environment fails.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ok, shared};

/// The interop environment's python, if there is one.
fn python() -> Option<PathBuf> {
    let py = common::venv_python();
    if py.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("no interop environment: run scripts/interop-env.sh (.ci/run does)");
        }
        eprintln!("skipping: no interop environment (scripts/interop-env.sh makes one)");
    }
    py
}

/// `interop.py args` in the environment; its JSON line, asserted ok.
fn check(py: &PathBuf, args: &[&str]) -> serde_json::Value {
    let script = common::crate_dir().join("scripts/interop.py");
    let out = Command::new(py).arg(script).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "interop {args:?}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or(serde_json::Value::Null);
    assert!(
        out.status.success() && line["ok"] == true,
        "interop {args:?}: {stdout}"
    );
    line
}

#[test]
fn outputs_read_back_in_transformers_h5py_nibabel_rasterio_and_pandas() {
    let Some(shared) = shared() else { return };
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let d = shared.join("data");
    let fx = shared.join("fixtures");
    let s = |p: PathBuf| p.to_str().unwrap().to_string();

    // Every export to Hugging Face loads in transformers and gives the features we give.
    for name in [
        "hf_dinov2_reg",
        "official_dinov2",
        "official_dinov2_swiglu",
        "timm_uni",
    ] {
        let export = t(&format!("export-{name}"));
        ok(&[
            "export",
            "--model",
            &s(fx.join(name)),
            "--to",
            "huggingface",
            "--out",
            &export,
        ]);
        let ours = t(&format!("{name}.safetensors"));
        // 56-px inputs for patch 14; UNI (patch 16) takes its fixture's own 64-px input.
        let (pixels, key) = match name {
            "timm_uni" => (fx.join("timm_uni/io.safetensors"), "x"),
            _ => (fx.join("hf_dinov2_reg/io.safetensors"), "pixel_values"),
        };
        let pixels = s(pixels);
        ok(&[
            "embed",
            "--model",
            &export,
            "--pixels",
            &pixels,
            "--pixels-key",
            key,
            "-o",
            &ours,
            "--quiet",
        ]);
        let r = check(&py, &["transformers", &export, &pixels, key, &ours]);
        eprintln!("{name}: {r}");
    }

    // A slide's feature bag in h5py, as CLAM and TRIDENT read it.
    let m = s(fx.join("hf_dinov2_reg"));
    let slides = t("slides");
    ok(&[
        "pathology",
        "embed",
        "--model",
        &m,
        &s(d.join("pathology/CMU-1-Small-Region.svs")),
        "-o",
        &slides,
        "--target-mpp",
        "2.0",
        "--size",
        "112",
        "--quiet",
    ]);
    let bag = common::read_tensors(
        &tmp.path()
            .join("slides/features/CMU-1-Small-Region.safetensors"),
    );
    let (rows, dim) = (bag["cls"].0[0].to_string(), bag["cls"].0[1].to_string());
    check(
        &py,
        &["h5", &t("slides/h5/CMU-1-Small-Region.h5"), &rows, &dim],
    );
    check(
        &py,
        &[
            "parquet",
            &t("slides/manifest.parquet"),
            "slide_id",
            "status",
            "mpp",
        ],
    );
    check(
        &py,
        &[
            "parquet",
            &t("slides/tiles/CMU-1-Small-Region.parquet"),
            "feature_row",
            "x",
            "y",
        ],
    );

    // A volume converted to NIfTI in nibabel, with the affine `inspect` reports.
    let nii = d.join("nifti/anatomical.nii");
    let conv = t("converted");
    ok(&["radiology", "convert", &s(nii.clone()), "-o", &conv]);
    let written = std::fs::read_dir(&conv)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .unwrap();
    let report = ok(&["inspect", &s(written.clone()), "--json"]);
    let json = t("inspect.json");
    std::fs::write(&json, report).unwrap();
    check(&py, &["nifti", &s(written), &json]);

    // A PCA map (COG) in rasterio.
    let pca = t("pca.tif");
    ok(&[
        "satellite",
        "predict",
        "--model",
        &m,
        "--size",
        "56",
        &s(d.join("satellite/rmnp-rgb.tif")),
        "--out",
        &pca,
        "--quiet",
    ]);
    check(&py, &["raster", &pca]);
}
