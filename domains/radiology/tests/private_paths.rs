//! Errors of a DICOM walk carry no folder names: exports are often filed under the patient's
//! name or id.

mod common;

use common::*;
use dinoadapt_radiology::dicom::load_series;
use dinoadapt_radiology::inspect::inspect_path;
use dinoadapt_radiology::Pseudonymizer;

#[test]
fn file_errors_keep_only_base_names_and_indices() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join(PATIENT_NAME).join(PATIENT_ID);
    std::fs::create_dir_all(&dir)?;
    let rot = rotation(0.0, 0.0);
    let zs = [0.0, 2.0, 4.0];
    let slices = stack(
        &rot,
        [0.0; 3],
        &zs,
        0.0,
        3,
        3,
        [1.0, 1.0],
        "1.2.3.4",
        "1.2.3.4.5",
    );
    for (n, s) in slices.iter().enumerate() {
        write_slice(&dir.join(format!("b{n}.dcm")), s);
    }
    // a duplicate position, a non-DICOM file, a truncated file
    write_slice(&dir.join("c_dup.dcm"), &slices[1]);
    std::fs::write(dir.join("a_garbage.dcm"), b"not dicom")?;
    let full = std::fs::read(dir.join("b0.dcm"))?;
    std::fs::write(dir.join("d_trunc.dcm"), &full[..full.len() / 2])?;

    let pseudo = Pseudonymizer::default();
    let scan = load_series(&[tmp.path()], &pseudo)?;
    assert_eq!(scan.series[0].volume.dims, [3, 3, 3]);
    let mut files: Vec<(&str, Option<usize>)> = scan
        .errors
        .iter()
        .map(|e| (e.file.as_str(), e.index))
        .collect();
    files.sort();
    // walk order: a_garbage, b0, b1, b2, c_dup, d_trunc
    assert_eq!(
        files,
        [
            ("a_garbage.dcm", Some(0)),
            ("c_dup.dcm", Some(4)),
            ("d_trunc.dcm", Some(5))
        ]
    );
    let json = serde_json::to_string(&scan.errors)?;
    let report = serde_json::to_string(&inspect_path(tmp.path(), &pseudo)?)?;
    for text in [&json, &report] {
        assert!(text.contains("a_garbage.dcm"), "{text}");
        for secret in [
            PATIENT_NAME,
            "Testperson",
            PATIENT_ID,
            tmp.path().to_str().unwrap(),
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    Ok(())
}
