//! NIfTI edge cases not covered by the shared reference files: scaling, the fallback affine,
//! NIfTI-2 and big-endian headers, 4D, and typed errors for bad files.

use dinoadapt_radiology::nifti::{
    read_nifti, write_nifti, NiftiDatatype, NiftiHeader, NiftiVersion, NiftiWriteOptions,
};
use dinoadapt_radiology::{Pseudonymizer, RadiologyError, Volume};

fn header(version: NiftiVersion, le: bool, dt: NiftiDatatype, dims: &[i64]) -> NiftiHeader {
    let mut dim = [1i64; 8];
    dim[0] = dims.len() as i64;
    dim[1..=dims.len()].copy_from_slice(dims);
    NiftiHeader {
        version,
        little_endian: le,
        dim,
        datatype: dt.code(),
        bitpix: dt.bitpix(),
        pixdim: [1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0],
        vox_offset: (version.header_size() + 4) as f64,
        scl_slope: 0.0,
        scl_inter: 0.0,
        cal_max: 0.0,
        cal_min: 0.0,
        slice_duration: 0.0,
        toffset: 0.0,
        qform_code: 0,
        sform_code: 0,
        quatern: [0.0; 3],
        qoffset: [0.0; 3],
        srow: [[0.0; 4]; 3],
        xyzt_units: 2,
        intent_code: 0,
        descrip: String::new(),
    }
}

fn file_with(h: &NiftiHeader, data: &[u8]) -> Vec<u8> {
    let mut b = h.encode();
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(data);
    b
}

#[test]
fn scaled_big_endian_i16_with_fallback_affine() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut h = header(NiftiVersion::V1, false, NiftiDatatype::I16, &[4, 5, 6]);
    h.scl_slope = 2.0;
    h.scl_inter = -3.0;
    let data: Vec<u8> = (0..120i16).flat_map(|v| (v - 60).to_be_bytes()).collect();
    let path = dir.path().join("scaled.nii");
    std::fs::write(&path, file_with(&h, &data))?;
    let img = read_nifti(&path, &Pseudonymizer::default())?;
    assert_eq!(img.info.dtype, ">i2");
    assert_eq!(img.info.dtype_descr, ">i2");
    assert_eq!(
        (img.info.scl_slope, img.info.scl_inter),
        (Some(2.0), Some(-3.0))
    );
    assert_eq!(img.volume.voxels[0], -123.0);
    assert_eq!(img.volume.voxels[119], 59.0 * 2.0 - 3.0);
    // nibabel's shape_zoom_affine: diag(-2, 3, 4), centred on the middle voxel
    let want = [
        [-2.0, 0.0, 0.0, 3.0],
        [0.0, 3.0, 0.0, -6.0],
        [0.0, 0.0, 4.0, -10.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(img.info.affine_ras, want);
    assert_eq!(
        img.volume.orientation_code(),
        [Some("L"), Some("A"), Some("S")]
    );
    Ok(())
}

#[test]
fn nan_slope_means_unscaled_and_nifti2_4d_reads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut h = header(NiftiVersion::V2, true, NiftiDatatype::F64, &[2, 2, 1, 3]);
    h.scl_slope = f64::NAN;
    h.sform_code = 1;
    h.srow = [
        [0.0, 0.0, 1.5, 10.0],
        [2.0, 0.0, 0.0, 20.0],
        [0.0, -1.0, 0.0, 30.0],
    ];
    let data: Vec<u8> = (0..12)
        .flat_map(|v| (v as f64 * 0.5).to_le_bytes())
        .collect();
    let path = dir.path().join("four_d.nii");
    std::fs::write(&path, file_with(&h, &data))?;
    let img = read_nifti(&path, &Pseudonymizer::default())?;
    assert_eq!(img.info.nifti_version, 2);
    assert_eq!(img.info.shape, vec![2, 2, 1, 3]);
    assert_eq!(img.info.dtype, "float64");
    assert_eq!(img.info.scl_slope, None);
    assert_eq!(img.volume.frames, 3);
    assert_eq!(img.volume.voxels[11], 5.5);
    // i -> A, j -> I, k -> R
    assert_eq!(
        img.volume.orientation_code(),
        [Some("A"), Some("I"), Some("R")]
    );
    // written back as NIfTI-1 4D: same grid and frames
    let out = dir.path().join("back.nii.gz");
    write_nifti(&img.volume, &out, &NiftiWriteOptions::default())?;
    let back = read_nifti(&out, &Pseudonymizer::default())?;
    assert_eq!(back.info.shape, vec![2, 2, 1, 3]);
    img.volume.same_grid(&back.volume, 1e-5)?;
    Ok(())
}

#[test]
fn bad_files_give_typed_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = Pseudonymizer::default();
    // garbage
    let path = dir.path().join("garbage.nii");
    std::fs::write(&path, b"hello world, not nifti")?;
    assert!(matches!(
        read_nifti(&path, &p),
        Err(RadiologyError::InvalidNifti { .. })
    ));
    // truncated data
    let h = header(NiftiVersion::V1, true, NiftiDatatype::F32, &[4, 4, 4]);
    let path = dir.path().join("short.nii");
    std::fs::write(&path, file_with(&h, &[0u8; 20]))?;
    let e = read_nifti(&path, &p).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    // complex datatype
    let mut h = header(NiftiVersion::V1, true, NiftiDatatype::F32, &[1, 1, 1]);
    h.datatype = 32;
    let path = dir.path().join("complex.nii");
    std::fs::write(&path, file_with(&h, &[0u8; 8]))?;
    assert!(matches!(
        read_nifti(&path, &p),
        Err(RadiologyError::UnsupportedNiftiDatatype { code: 32, .. })
    ));
    // corrupt gzip
    let path = dir.path().join("bad.nii.gz");
    std::fs::write(&path, [0x1f, 0x8b, 8, 0, 1, 2, 3])?;
    assert!(matches!(
        read_nifti(&path, &p),
        Err(RadiologyError::InvalidNifti { .. })
    ));
    // missing file
    assert!(matches!(
        read_nifti(dir.path().join("nope.nii"), &p),
        Err(RadiologyError::Io { .. })
    ));
    Ok(())
}

#[test]
fn label_maps_must_fit_their_type() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let v = Volume::new(
        vec![0.0, 1.0, 2.0, 300.0],
        [2, 2, 1],
        1,
        [1.0; 3],
        id,
        [0.0; 3],
        None,
        "v".into(),
    )?;
    let path = dir.path().join("labels.nii");
    let e = write_nifti(&v, &path, &NiftiWriteOptions::labels(NiftiDatatype::U8)).unwrap_err();
    assert!(matches!(e, RadiologyError::ValueOutOfRange { .. }), "{e}");
    assert!(!path.exists(), "no partial file on error");
    write_nifti(&v, &path, &NiftiWriteOptions::labels(NiftiDatatype::U16))?;
    let back = read_nifti(&path, &Pseudonymizer::default())?;
    assert_eq!(back.info.dtype, "uint16");
    assert_eq!(back.volume.voxels, v.voxels);
    // no temporary files left behind
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    Ok(())
}
