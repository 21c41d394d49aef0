//! End-to-end: a DICOM study folder (a real CT series, a single CT slice and a corrupt file,
//! under a folder named like a patient) and a NIfTI volume -> `inspect`, `radiology convert`,
//! `slices`, `embed`, `predict`; predictions overlay the source; no identifying value of the
//! DICOM files, nor the folder's name, appears in any output file or message.

mod common;

use std::path::{Path, PathBuf};

use common::{dinoadapt, read_tensors, shared, table};
use dinoadapt_radiology::dicom::load_series;
use dinoadapt_radiology::nifti::read_nifti;
use dinoadapt_radiology::privacy::identifying_values;
use dinoadapt_radiology::Pseudonymizer;
use serde_json::Value;

const FOLDER: &str = "DOE^JOHN 1961";

/// The study folder; returns it and every identifying value its DICOM files hold.
fn study(shared: &Path, root: &Path) -> (PathBuf, Vec<String>) {
    let dir = root.join(FOLDER);
    std::fs::create_dir_all(dir.join("CT")).unwrap();
    let mut values = vec![FOLDER.to_string()];
    for f in std::fs::read_dir(shared.join("data/dicom/series_ct5n")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join("CT").join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        shared.join("data/dicom/CT_small.dcm"),
        dir.join("CT_small.dcm"),
    )
    .unwrap();
    let mr = std::fs::read(shared.join("data/dicom/MR_small.dcm")).unwrap();
    std::fs::write(dir.join("broken.dcm"), &mr[..300]).unwrap();
    for f in walk(&dir) {
        if let Ok(v) = identifying_values(&f) {
            values.extend(v.into_iter().map(|(_, v)| v));
        }
    }
    // Short values (single letters, "0") would match anywhere; the scan keeps real identifiers.
    values.retain(|v| v.len() >= 4);
    values.sort();
    values.dedup();
    assert!(
        values.len() > 3,
        "the test DICOMs carry identifying values: {values:?}"
    );
    (dir, values)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.windows(n.len()).any(|w| w == n)
}

fn run(args: &[&str], log: &mut Vec<u8>) -> std::process::Output {
    let out = dinoadapt(args);
    log.extend(&out.stdout);
    log.extend(&out.stderr);
    out
}

#[test]
fn a_dicom_study_becomes_volumes_slices_features_and_overlaying_predictions_without_phi() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (study, phi) = study(&shared, tmp.path());
    let out = tmp.path().join("out");
    let s = study.to_str().unwrap();
    let nifti = shared.join("data/nifti/anatomical.nii");
    let n = nifti.to_str().unwrap();
    let o = |d: &str| out.join(d).to_str().unwrap().to_string();
    let mut log = Vec::new();

    // inspect: the series folder and a NIfTI file.
    let r = run(&["inspect", s, "--json"], &mut log);
    assert!(r.status.success());
    let reports: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(
        reports.as_array().unwrap().len(),
        2,
        "two series in the study"
    );

    // convert: two series + a NIfTI; the corrupt file is a failed row, the rest finish.
    let r = run(
        &["radiology", "convert", s, n, "-o", &o("convert")],
        &mut log,
    );
    assert!(r.status.success());
    let volumes = table(&out.join("convert/volumes.parquet"));
    let status = volumes.column("status").unwrap().str().unwrap();
    let statuses: Vec<&str> = (0..volumes.height())
        .filter_map(|i| status.get(i))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "ok").count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == "failed").count(), 1);
    let err = volumes.column("error").unwrap().str().unwrap();
    assert!((0..volumes.height()).any(|i| err.get(i).unwrap().contains("cannot read")));

    // The converted series keeps its geometry: the reference affine of series_ct5n.
    let pseudo = Pseudonymizer::new("dinoadapt");
    let scan = load_series(&[study.join("CT")], &pseudo).unwrap();
    let source = &scan.series[0].volume;
    let converted = read_nifti(out.join(format!("convert/{}.nii.gz", source.id)), &pseudo).unwrap();
    let (a, b) = (converted.volume.affine_lps(), source.affine_lps());
    for r in 0..4 {
        for c in 0..4 {
            assert!((a[r][c] - b[r][c]).abs() < 1e-4, "affine {a:?} vs {b:?}");
        }
    }
    assert_eq!(converted.volume.voxels, source.voxels);

    // slices: PNGs and their world positions.
    let r = run(
        &[
            "radiology",
            "slices",
            s,
            "--intensity",
            "abdomen",
            "--channels",
            "neighbours",
            "--size",
            "56",
            "-o",
            &o("slices"),
        ],
        &mut log,
    );
    assert!(r.status.success());
    let slices = table(&out.join("slices/slices.parquet"));
    assert_eq!(slices.height(), 6, "5 + 1 axial slices");
    let first = slices
        .column("png")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_string();
    let img = image::open(out.join("slices").join(first)).unwrap();
    assert_eq!((img.width(), img.height()), (56, 56));

    // embed: per-slice features with positions, pooled volume features.
    let r = run(
        &[
            "radiology",
            "embed",
            "--random-init",
            "--preset",
            "vits14",
            s,
            "--size",
            "56",
            "--intensity",
            "abdomen",
            "-o",
            &o("embed"),
            "--quiet",
        ],
        &mut log,
    );
    assert!(r.status.success());
    let t = read_tensors(&out.join(format!("embed/{}.safetensors", source.id)));
    assert_eq!(t["cls"].0, vec![5, 384]);
    assert_eq!(t["patch"].0, vec![5, 16, 384]);
    let pooled = read_tensors(&out.join("embed/volumes.safetensors"));
    assert_eq!(pooled["cls_mean"].0, vec![2, 384]);
    let rows = table(&out.join(format!("embed/{}.parquet", source.id)));
    let z = rows.column("z_lps").unwrap().f64().unwrap();
    // Slice k of the axial stack lies at the series origin + k * 2.5 mm along z (LPS).
    for k in 0..5 {
        let want = source.voxel_to_lps([7.5, 7.5, k as f64])[2];
        assert!((z.get(k).unwrap() - want).abs() < 1e-6, "slice {k}");
    }

    // predict: label maps on the source grid and affine.
    let r = run(
        &[
            "radiology",
            "predict",
            "--random-init",
            "--preset",
            "vits14",
            s,
            n,
            "--size",
            "56",
            "--head",
            "kmeans:3",
            "-o",
            &o("predict"),
            "--quiet",
        ],
        &mut log,
    );
    assert!(r.status.success());
    let pred = read_nifti(
        out.join(format!("predict/{}_kmeans3.nii.gz", source.id)),
        &pseudo,
    )
    .unwrap()
    .volume;
    assert_eq!(pred.dims, source.dims);
    let (a, b) = (pred.affine_lps(), source.affine_lps());
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (a[r][c] - b[r][c]).abs() < 1e-4,
                "prediction affine {a:?} vs {b:?}"
            );
        }
    }
    assert!(pred.voxels.iter().all(|&v| (1.0..=3.0).contains(&v)));

    // The PHI scan: every byte written and every message printed.
    let mut files = walk(&out);
    files.sort();
    assert!(files.len() > 15);
    for f in &files {
        let mut bytes = std::fs::read(f).unwrap();
        if f.extension().is_some_and(|e| e == "gz") {
            use std::io::Read;
            let mut d = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut d)
                .unwrap();
            bytes = d;
        }
        for v in &phi {
            assert!(
                !contains(&bytes, v),
                "{} contains the identifying value {v:?}",
                f.display()
            );
        }
    }
    for v in &phi {
        assert!(
            !contains(&log, v),
            "a message contains the identifying value {v:?}"
        );
    }
}
