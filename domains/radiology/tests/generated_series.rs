//! Series written by the test itself with known geometry: oblique orientation, uneven
//! spacing, shuffled files, gantry tilt, enhanced multi-frame, a corrupt file; round trip
//! DICOM -> Volume -> NIfTI -> read back; no identifying value in any output.

mod common;

use common::*;
use dinoadapt_radiology::dicom::{load_series, read_dicom_file};
use dinoadapt_radiology::inspect::inspect_path;
use dinoadapt_radiology::nifti::{
    affine::qform_affine, read_nifti, write_nifti, NiftiDatatype, NiftiVersion, NiftiWriteOptions,
};
use dinoadapt_radiology::privacy::{identifying_values, pseudonymous_id};
use dinoadapt_radiology::{Pseudonymizer, RadiologyError, Volume};

const STUDY: &str = "1.2.826.0.1.3680043.8.498.111";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.111.2";
const SALT: &str = "site-secret";

fn assert_affine_close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], tol: f64, what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (a[r][c] - b[r][c]).abs() <= tol,
                "{what}: [{r}][{c}] {} vs {}\n{a:?}\n{b:?}",
                a[r][c],
                b[r][c]
            );
        }
    }
}

/// The expected voxel-to-LPS affine of a stack: columns r*dx, c*dy, n*dz, origin.
fn expected_affine(rot: &[[f64; 3]; 3], spacing: [f64; 3], origin: [f64; 3]) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        for c in 0..3 {
            a[r][c] = rot[r][c] * spacing[c];
        }
        a[r][3] = origin[r];
    }
    a[3][3] = 1.0;
    a
}

/// Writes `slices` under `dir` with names in a shuffled order (name order != position order).
fn write_shuffled(dir: &std::path::Path, slices: &[Slice]) -> Vec<String> {
    let names: Vec<String> = ["m", "c", "x", "a", "q", "f", "z", "b"]
        .iter()
        .take(slices.len())
        .map(|n| format!("{n}.dcm"))
        .collect();
    // write in a scrambled sequence too
    for idx in [3usize, 0, 4, 1, 2, 5, 6, 7] {
        if idx < slices.len() {
            write_slice(&dir.join(&names[idx]), &slices[idx]);
        }
    }
    names
}

#[test]
fn oblique_uneven_shuffled_series_geometry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rot = rotation(30.0, 20.0);
    let origin = [-12.5, 40.25, 7.0];
    let zs = [0.0, 2.0, 4.0, 7.0, 9.0];
    let slices = stack(&rot, origin, &zs, 0.0, 6, 4, [0.8, 0.6], STUDY, SERIES);
    let names = write_shuffled(dir.path(), &slices);

    let pseudo = Pseudonymizer::new(SALT);
    let scan = load_series(&[dir.path()], &pseudo)?;
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!(scan.series.len(), 1);
    let s = &scan.series[0];
    assert_eq!(s.info.order_by_position, names[..5].to_vec());
    let want_gaps = [2.0, 2.0, 3.0, 2.0];
    for (g, w) in s.info.slice_gaps_mm.iter().zip(want_gaps) {
        assert!((g - w).abs() < 1e-6, "{:?}", s.info.slice_gaps_mm);
    }
    assert!(s.info.uneven_spacing);
    assert!(s.info.gantry_tilt_deg < 1e-4);
    // Uneven gaps are resampled onto an even grid from the first to the last slice, in the
    // largest steps no longer than the median gap (2) that divide the 9 mm evenly: 5 of 1.8 mm.
    assert_eq!(s.info.resampled_slices, Some(6));
    let v = &s.volume;
    assert_eq!(v.dims, [4, 6, 6]);
    // spacing: PixelSpacing is [row step, column step] -> x = 0.6, y = 0.8; z = 9 / 5
    let want = expected_affine(&rot, [0.6, 0.8, 1.8], origin);
    assert_affine_close(&v.affine_lps(), &want, 1e-6, "oblique affine");
    assert_affine_close(
        &s.info.affine_lps_ijk_to_world,
        &want,
        1e-6,
        "report affine",
    );
    // slice f holds raw value 1000*f + j*cols + i, rescaled by -1024; grid slice k at 1.8 k mm
    // interpolates linearly between the slices around it
    let raw = |f: usize, j: usize, i: usize| (1000 * f + j * 4 + i) as f32 - 1024.0;
    for k in 0..6 {
        let t = 1.8 * k as f64;
        let f = zs.iter().rposition(|z| *z <= t + 1e-9).unwrap().min(3);
        let w = ((t - zs[f]) / (zs[f + 1] - zs[f])) as f32;
        for j in 0..6 {
            for i in 0..4 {
                let got = v.voxels[v.index(i, j, k, 0).unwrap()];
                let want = raw(f, j, i) + (raw(f + 1, j, i) - raw(f, j, i)) * w;
                assert!(
                    (got - want).abs() < 1e-3,
                    "({i}, {j}, {k}): {got} vs {want}"
                );
            }
        }
    }
    // the first slice's IPP is the origin; the last lies at the end of the grid
    for (k, slice) in [(0usize, &slices[0]), (5, &slices[4])] {
        let p = v.voxel_to_lps([0.0, 0.0, k as f64]);
        for a in 0..3 {
            assert!(
                (p[a] - slice.ipp[a]).abs() < 1e-6,
                "slice {k}: {p:?} vs {:?}",
                slice.ipp
            );
        }
    }
    assert_eq!(v.id, pseudonymous_id(SALT.as_bytes(), STUDY, SERIES));
    assert_eq!(v.modality.as_deref(), Some("CT"));
    Ok(())
}

/// Issue 18, defect 4: a series with one slice missing (gaps 2.5, 5.0, 2.5) was stacked 3.33 mm
/// apart, every slice after the gap up to 0.83 mm from where its file says, with no message.
#[test]
fn a_missing_slice_is_interpolated_and_the_real_slices_stay_where_they_are() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rot = rotation(10.0, 0.0);
    let origin = [0.0, -20.0, 55.0];
    let zs = [0.0, 2.5, 7.5, 10.0];
    let slices = stack(&rot, origin, &zs, 0.0, 3, 2, [0.5, 0.5], STUDY, SERIES);
    write_shuffled(dir.path(), &slices);
    let scan = load_series(&[dir.path()], &Pseudonymizer::new(SALT))?;
    let s = &scan.series[0];
    assert!(s.info.uneven_spacing);
    assert_eq!(s.info.resampled_slices, Some(5));
    assert!((s.info.slice_spacing_mm - 2.5).abs() < 1e-9);
    let v = &s.volume;
    assert_eq!(v.dims, [2, 3, 5]);
    // Each file's slice is at its own position, with its own values.
    for (k, f) in [(0usize, 0usize), (1, 1), (3, 2), (4, 3)] {
        let p = v.voxel_to_lps([0.0, 0.0, k as f64]);
        for a in 0..3 {
            assert!((p[a] - slices[f].ipp[a]).abs() < 1e-6, "slice {f}: {p:?}");
        }
        let got = v.voxels[v.index(1, 2, k, 0).unwrap()];
        assert_eq!(got, (1000 * f + 2 * 2 + 1) as f32 - 1024.0);
    }
    // The missing one is halfway between its neighbours.
    let mid = v.voxels[v.index(1, 2, 2, 0).unwrap()];
    assert_eq!(mid, (1500 + 2 * 2 + 1) as f32 - 1024.0);
    Ok(())
}

#[test]
fn even_oblique_series_roundtrips_through_nifti() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let rot = rotation(-25.0, 110.0);
    let origin = [101.5, -33.0, -250.75];
    let zs: Vec<f64> = (0..6).map(|k| k as f64 * 1.25).collect();
    let slices = stack(&rot, origin, &zs, 0.0, 5, 7, [0.7, 0.9], STUDY, SERIES);
    write_shuffled(dir.path(), &slices);

    let pseudo = Pseudonymizer::new(SALT);
    let scan = load_series(&[dir.path()], &pseudo)?;
    let s = &scan.series[0];
    assert!(!s.info.uneven_spacing);
    let v = &s.volume;
    let want = expected_affine(&rot, [0.9, 0.7, 1.25], origin);
    assert_affine_close(&v.affine_lps(), &want, 1e-6, "dicom affine");
    // RAS is LPS with x and y negated
    let ras = v.affine_ras();
    let lps = v.affine_lps();
    for c in 0..4 {
        assert_eq!(ras[0][c], -lps[0][c] + 0.0);
        assert_eq!(ras[1][c], -lps[1][c] + 0.0);
        assert_eq!(ras[2][c], lps[2][c]);
    }

    let identifying = identifying_values(dir.path().join("a.dcm"))?;
    let names: Vec<&str> = identifying.iter().map(|(n, _)| *n).collect();
    for must in [
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "AccessionNumber",
        "InstitutionName",
        "ReferringPhysicianName",
        "OperatorsName",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    ] {
        assert!(names.contains(&must), "{must} not found in {names:?}");
    }

    for (file, opts) in [
        ("ct.nii.gz", NiftiWriteOptions::default()),
        ("ct.nii", NiftiWriteOptions::default()),
        (
            "ct_v2.nii",
            NiftiWriteOptions {
                version: NiftiVersion::V2,
                ..Default::default()
            },
        ),
        (
            "labels.nii.gz",
            NiftiWriteOptions::labels(NiftiDatatype::I16),
        ),
    ] {
        let path = out.path().join(file);
        write_nifti(v, &path, &opts)?;
        let back = read_nifti(&path, &pseudo)?;
        // acceptance: the affine survives to 1e-4 mm
        v.same_grid(&back.volume, 1e-4)?;
        assert_affine_close(&back.info.affine_ras, &ras, 1e-4, file);
        // the qform alone gives the same affine (orthonormal direction: nothing stripped)
        assert_affine_close(
            &qform_affine(&back.header),
            &ras,
            1e-4,
            &format!("{file} qform"),
        );
        assert_eq!(back.info.sform_code, 1);
        assert_eq!(back.info.qform_code, 1);
        assert_eq!(back.volume.voxels, v.voxels, "{file}");
        assert_eq!(back.volume.orientation_code(), v.orientation_code());

        // no identifying value (nor original UID) in the file, compressed or not
        let raw = std::fs::read(&path)?;
        let plain = dinoadapt_radiology::nifti::read::read_file_bytes(&path)?;
        for (name, value) in &identifying {
            for bytes in [&raw, &plain] {
                assert!(
                    !contains_bytes(bytes, value.as_bytes()),
                    "{file} contains {name}"
                );
            }
        }
    }

    // the JSON report of the series holds no identifying value either
    let reports = inspect_path(dir.path(), &pseudo)?;
    let json = serde_json::to_string(&reports)?;
    for (name, value) in &identifying {
        assert!(!json.contains(value.as_str()), "report contains {name}");
    }
    Ok(())
}

#[test]
fn left_handed_volume_roundtrips_with_qfac() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let rot = rotation(10.0, -40.0);
    // flip the third axis: a left-handed grid (as a NIfTI with qfac -1)
    let mut dir3 = rot;
    for row in dir3.iter_mut() {
        row[2] = -row[2];
    }
    let v = Volume::new(
        (0..24).map(|x| x as f32).collect(),
        [2, 3, 4],
        1,
        [1.1, 2.2, 3.3],
        dir3,
        [5.0, 6.0, -7.0],
        None,
        "test".into(),
    )?;
    let path = out.path().join("lh.nii");
    write_nifti(&v, &path, &NiftiWriteOptions::default())?;
    let back = read_nifti(&path, &Pseudonymizer::default())?;
    assert_eq!(back.header.pixdim[0], -1.0);
    assert_affine_close(&qform_affine(&back.header), &v.affine_ras(), 1e-5, "qform");
    v.same_grid(&back.volume, 1e-4)?;
    Ok(())
}

#[test]
fn gantry_tilt_is_measured() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rot = rotation(0.0, 0.0);
    let zs: Vec<f64> = (0..4).map(|k| k as f64 * 2.5).collect();
    let shear = 15f64.to_radians().tan();
    let slices = stack(
        &rot,
        [0.0, 0.0, 0.0],
        &zs,
        shear,
        3,
        3,
        [1.0, 1.0],
        STUDY,
        SERIES,
    );
    write_shuffled(dir.path(), &slices);
    let scan = load_series(&[dir.path()], &Pseudonymizer::default())?;
    let info = &scan.series[0].info;
    assert!(
        (info.gantry_tilt_deg - 15.0).abs() < 1e-6,
        "{}",
        info.gantry_tilt_deg
    );
    assert!(!info.uneven_spacing);
    Ok(())
}

#[test]
fn corrupt_files_are_reported_and_the_series_still_loads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rot = rotation(5.0, 5.0);
    let zs = [0.0, 3.0, 6.0, 9.0];
    let slices = stack(
        &rot,
        [1.0, 2.0, 3.0],
        &zs,
        0.0,
        4,
        4,
        [1.0, 1.0],
        STUDY,
        SERIES,
    );
    let nested = dir.path().join("nested/deeper");
    std::fs::create_dir_all(&nested)?;
    write_slice(&dir.path().join("s0.dcm"), &slices[0]);
    write_slice(&dir.path().join("s1.dcm"), &slices[1]);
    write_slice(&nested.join("s2.dcm"), &slices[2]);
    write_slice(&nested.join("s3.dcm"), &slices[3]);
    // garbage and a truncated copy of a valid slice
    std::fs::write(
        dir.path().join("garbage.dcm"),
        b"this is not a DICOM file at all, just text",
    )?;
    let full = std::fs::read(dir.path().join("s0.dcm"))?;
    std::fs::write(dir.path().join("truncated.dcm"), &full[..full.len() / 2])?;

    let pseudo = Pseudonymizer::default();
    let err = read_dicom_file(dir.path().join("garbage.dcm"), &pseudo).unwrap_err();
    assert!(
        matches!(err, RadiologyError::InvalidDicom { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("garbage.dcm"), "{err}");

    let scan = load_series(&[dir.path()], &pseudo)?;
    assert_eq!(scan.series.len(), 1);
    assert_eq!(scan.series[0].volume.dims, [4, 4, 4]);
    assert_eq!(
        scan.series[0].info.order_by_position,
        ["s0.dcm", "s1.dcm", "s2.dcm", "s3.dcm"]
    );
    let failed: Vec<&str> = scan.errors.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(scan.errors.len(), 2, "{:?}", scan.errors);
    assert!(failed.iter().any(|f| f.ends_with("garbage.dcm")));
    assert!(failed.iter().any(|f| f.ends_with("truncated.dcm")));

    // a folder with nothing loadable is a typed error
    let empty = tempfile::tempdir()?;
    std::fs::write(empty.path().join("junk.bin"), [0u8; 10])?;
    assert!(matches!(
        load_series(&[empty.path()], &pseudo),
        Err(RadiologyError::NoImages { .. })
    ));
    Ok(())
}

#[test]
fn two_series_in_one_tree_and_duplicates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rot = rotation(0.0, 90.0);
    let a = stack(
        &rot,
        [0.0; 3],
        &[0.0, 1.0, 2.0],
        0.0,
        2,
        2,
        [1.0, 1.0],
        STUDY,
        "1.2.3.1",
    );
    let b = stack(
        &rot,
        [0.0; 3],
        &[0.0, 5.0],
        0.0,
        3,
        3,
        [0.5, 0.5],
        STUDY,
        "1.2.3.2",
    );
    std::fs::create_dir_all(dir.path().join("A"))?;
    std::fs::create_dir_all(dir.path().join("B"))?;
    for (k, s) in a.iter().enumerate() {
        write_slice(&dir.path().join(format!("A/{k}.dcm")), s);
    }
    // a duplicate position in series A
    write_slice(&dir.path().join("A/dup.dcm"), &a[1]);
    for (k, s) in b.iter().enumerate() {
        write_slice(&dir.path().join(format!("B/{k}.dcm")), s);
    }
    let scan = load_series(&[dir.path()], &Pseudonymizer::new("x"))?;
    assert_eq!(scan.series.len(), 2);
    let dims: Vec<[usize; 3]> = scan.series.iter().map(|s| s.volume.dims).collect();
    assert!(
        dims.contains(&[2, 2, 3]) && dims.contains(&[3, 3, 2]),
        "{dims:?}"
    );
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    assert!(scan.errors[0].message.contains("same slice position"));
    assert_ne!(scan.series[0].volume.id, scan.series[1].volume.id);
    Ok(())
}

#[test]
fn enhanced_multiframe_becomes_a_volume() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rot = rotation(20.0, -15.0);
    let origin = [3.0, -4.0, 5.0];
    let zs = [0.0, 1.5, 3.0, 4.5];
    let slices = stack(&rot, origin, &zs, 0.0, 3, 5, [0.5, 0.25], STUDY, SERIES);
    // frames stored in shuffled order
    let shuffled: Vec<Slice> = [2usize, 0, 3, 1]
        .iter()
        .map(|&i| Slice {
            ipp: slices[i].ipp,
            iop: slices[i].iop,
            pixel_spacing: slices[i].pixel_spacing,
            rows: slices[i].rows,
            cols: slices[i].cols,
            raw: slices[i].raw.clone(),
            instance: slices[i].instance,
            study_uid: STUDY.into(),
            series_uid: SERIES.into(),
        })
        .collect();
    let path = dir.path().join("enhanced.dcm");
    write_enhanced(&path, &shuffled);
    let file = read_dicom_file(&path, &Pseudonymizer::default())?;
    assert!(file.info.enhanced);
    let v = file.to_volume()?;
    assert_eq!(v.dims, [5, 3, 4]);
    assert_eq!(v.frames, 1);
    let want = expected_affine(&rot, [0.25, 0.5, 1.5], origin);
    assert_affine_close(&v.affine_lps(), &want, 1e-6, "enhanced affine");
    for k in 0..4 {
        assert_eq!(
            v.voxels[v.index(0, 0, k, 0).unwrap()],
            (1000 * k) as f32 - 1024.0
        );
    }
    let scan = load_series(&[dir.path()], &Pseudonymizer::default())?;
    assert_eq!(scan.series.len(), 1);
    assert!(scan.series[0].info.multiframe);
    assert_eq!(
        scan.series[0].info.order_by_position,
        [
            "enhanced.dcm[1]",
            "enhanced.dcm[3]",
            "enhanced.dcm[0]",
            "enhanced.dcm[2]"
        ]
    );
    Ok(())
}
