//! Writing a [`Volume`] as NIfTI (.nii or .nii.gz), float or label map, atomically.

use std::io::Write;
use std::path::Path;

use dinoadapt_core::io::write_atomically;

use super::affine::qform_fields;
use super::header::{NiftiDatatype, NiftiHeader, NiftiVersion};
use super::read::wants_gzip;
use crate::error::{RadiologyError, Result};
use crate::volume::Volume;

/// How to write a NIfTI file.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiWriteOptions {
    /// Voxel type: `F32` for images, an integer type (`U8`, `I16`, `U16`, ...) for label maps.
    pub datatype: NiftiDatatype,
    /// NIfTI-1 (default) or NIfTI-2 (64-bit floats in the header: exact affines).
    pub version: NiftiVersion,
    /// The code stored as both `sform_code` and `qform_code` (1 = scanner, 2 = aligned, ...);
    /// pass the source file's code to keep it.
    pub xform_code: i32,
    /// gzip the file; `None` decides by the `.gz` ending of the path.
    pub gzip: Option<bool>,
}

impl Default for NiftiWriteOptions {
    fn default() -> Self {
        NiftiWriteOptions {
            datatype: NiftiDatatype::F32,
            version: NiftiVersion::V1,
            xform_code: 1,
            gzip: None,
        }
    }
}

impl NiftiWriteOptions {
    /// A label map of the given integer type.
    pub fn labels(datatype: NiftiDatatype) -> Self {
        NiftiWriteOptions {
            datatype,
            ..Default::default()
        }
    }
}

/// A zeroed, valid single-file NIfTI-1 header (for tests).
#[cfg(test)]
pub(crate) fn blank_header_v1() -> Vec<u8> {
    blank(NiftiVersion::V1).encode()
}

fn blank(version: NiftiVersion) -> NiftiHeader {
    NiftiHeader {
        version,
        little_endian: true,
        dim: [3, 1, 1, 1, 1, 1, 1, 1],
        datatype: NiftiDatatype::F32.code(),
        bitpix: 32,
        pixdim: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
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
        xyzt_units: 0,
        intent_code: 0,
        descrip: String::new(),
    }
}

/// The header [`write_nifti`] writes for `volume`: both sform (the exact RAS affine) and qform
/// (nibabel's `set_qform`: quaternion, qfac for a left-handed matrix, shears stripped) set
/// to `xform_code`, units mm (+ s for 4D), no scaling, no identifying text.
pub fn header_for(volume: &Volume, opts: &NiftiWriteOptions) -> Result<NiftiHeader> {
    volume.validate()?;
    let mut h = blank(opts.version);
    let aff = volume.affine_ras();
    let q = qform_fields(&aff).ok_or_else(|| RadiologyError::InvalidVolume {
        reason: "affine is singular, cannot store a qform".into(),
    })?;
    h.dim = [3, 1, 1, 1, 1, 1, 1, 1];
    for (i, d) in volume.dims.iter().enumerate() {
        h.dim[i + 1] = *d as i64;
    }
    if volume.frames > 1 {
        h.dim[0] = 4;
        h.dim[4] = volume.frames as i64;
        h.pixdim[4] = 1.0;
    }
    if opts.version == NiftiVersion::V1 && h.dim.iter().any(|d| *d > i64::from(i16::MAX)) {
        return Err(RadiologyError::InvalidVolume {
            reason: format!(
                "dims {:?} x {} do not fit NIfTI-1 (32767 max); write NIfTI-2",
                volume.dims, volume.frames
            ),
        });
    }
    h.datatype = opts.datatype.code();
    h.bitpix = opts.datatype.bitpix();
    h.pixdim[0] = q.qfac;
    h.pixdim[1..4].copy_from_slice(&q.zooms);
    h.quatern = q.quatern;
    h.qoffset = q.qoffset;
    h.srow = [aff[0], aff[1], aff[2]];
    h.qform_code = opts.xform_code;
    h.sform_code = opts.xform_code;
    h.xyzt_units = 2 | if volume.frames > 1 { 8 } else { 0 };
    h.descrip = "dinoadapt-radiology".into();
    Ok(h)
}

fn encode_voxels(volume: &Volume, dt: NiftiDatatype, path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(volume.voxels.len() * dt.size());
    macro_rules! ints {
        ($t:ty) => {{
            for (idx, &v) in volume.voxels.iter().enumerate() {
                let r = f64::from(v).round();
                if !(r.is_finite() && r >= <$t>::MIN as f64 && r <= <$t>::MAX as f64) {
                    return Err(RadiologyError::ValueOutOfRange {
                        path: path.to_path_buf(),
                        dtype: dt.numpy_name(),
                        reason: format!("voxel {idx} has value {v}"),
                    });
                }
                out.extend_from_slice(&(r as $t).to_le_bytes());
            }
        }};
    }
    match dt {
        NiftiDatatype::F32 => volume
            .voxels
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        NiftiDatatype::F64 => volume
            .voxels
            .iter()
            .for_each(|v| out.extend_from_slice(&f64::from(*v).to_le_bytes())),
        NiftiDatatype::U8 => ints!(u8),
        NiftiDatatype::I8 => ints!(i8),
        NiftiDatatype::I16 => ints!(i16),
        NiftiDatatype::U16 => ints!(u16),
        NiftiDatatype::I32 => ints!(i32),
        NiftiDatatype::U32 => ints!(u32),
        NiftiDatatype::I64 => ints!(i64),
        NiftiDatatype::U64 => ints!(u64),
    }
    Ok(out)
}

/// The complete file contents (uncompressed) for `volume`.
pub fn encode_nifti(
    volume: &Volume,
    opts: &NiftiWriteOptions,
    path_for_errors: &Path,
) -> Result<Vec<u8>> {
    let h = header_for(volume, opts)?;
    let mut bytes = h.encode();
    bytes.extend_from_slice(&[0u8; 4]); // no extensions
    debug_assert_eq!(bytes.len() as f64, h.vox_offset);
    bytes.extend(encode_voxels(volume, opts.datatype, path_for_errors)?);
    Ok(bytes)
}

/// Writes `volume` to `path` (.nii or .nii.gz) through a temporary file and a rename, so a
/// killed run never leaves a half-written image under the final name.
///
/// Integer datatypes (label maps) round each value and fail with
/// [`RadiologyError::ValueOutOfRange`] when one does not fit (or is NaN).
pub fn write_nifti(
    volume: &Volume,
    path: impl AsRef<Path>,
    opts: &NiftiWriteOptions,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_nifti(volume, opts, path)?;
    let gzip = opts.gzip.unwrap_or_else(|| wants_gzip(path));
    write_atomically(path, |w| {
        if gzip {
            let mut gz = flate2::write::GzEncoder::new(&mut *w, flate2::Compression::default());
            gz.write_all(&bytes)?;
            gz.finish()?;
        } else {
            w.write_all(&bytes)?;
        }
        w.flush()?;
        w.get_ref().sync_all()
    })
    .map_err(|e| RadiologyError::io(path, "cannot write NIfTI file", e))
}
