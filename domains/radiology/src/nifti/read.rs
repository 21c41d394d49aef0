//! Reading .nii / .nii.gz (NIfTI-1 and NIfTI-2) into a [`Volume`].

use std::io::Read;
use std::path::Path;

use super::affine::best_affine;
use super::header::{NiftiDatatype, NiftiHeader};
use crate::error::{RadiologyError, Result};
use crate::privacy::Pseudonymizer;
use crate::volume::Volume;

/// Header facts of a NIfTI file, named and valued as nibabel reports them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NiftiHeaderInfo {
    /// 1 or 2.
    pub nifti_version: u8,
    /// `dim[1..=dim[0]]` (nibabel's `img.shape`).
    pub shape: Vec<usize>,
    /// `pixdim[1..=dim[0]]` (nibabel's `header.get_zooms()`).
    pub zooms: Vec<f64>,
    /// `str(img.get_data_dtype())`: "int16" for native (little-endian) data, ">i2" otherwise.
    pub dtype: String,
    /// numpy `dtype.str`: "<i2", ">f4", "|u1".
    pub dtype_descr: String,
    /// The raw NIfTI datatype code.
    pub datatype_code: i16,
    pub qform_code: i32,
    pub sform_code: i32,
    /// `None` when the data are unscaled (slope 0 or not finite), as nibabel reports.
    pub scl_slope: Option<f64>,
    pub scl_inter: Option<f64>,
    /// nibabel's `img.affine` (= `get_best_affine()`), voxel to RAS mm.
    pub affine_ras: [[f64; 4]; 4],
    pub little_endian: bool,
}

/// A NIfTI file read into memory.
#[derive(Debug, Clone)]
pub struct NiftiImage {
    pub header: NiftiHeader,
    pub info: NiftiHeaderInfo,
    /// Scaled voxel values (`raw * slope + inter`) on the file's grid, in LPS.
    pub volume: Volume,
}

fn invalid(path: &Path, reason: impl Into<String>) -> RadiologyError {
    RadiologyError::InvalidNifti {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The decompressed byte stream of a .nii or .nii.gz file (gzip is detected by its magic
/// bytes, not the name). Only regular files are opened: a FIFO, a device or a folder is refused
/// before it is read (a `.nii` that is `/dev/zero` would never end).
pub fn open_stream(path: &Path) -> Result<Box<dyn Read>> {
    Ok(open_bounded(path)?.0)
}

/// Deflate inflates at most ~1032:1: a gzip file of n bytes holds at most this many.
const MAX_INFLATION: u64 = 1032;

/// [`open_stream`] and the most bytes the stream can hold (the file's size, or what its
/// compressed size can inflate to), so that a header asking for more is refused unread.
fn open_bounded(path: &Path) -> Result<(Box<dyn Read>, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| RadiologyError::io(path, "cannot open", e))?;
    if !meta.is_file() {
        return Err(invalid(
            path,
            "not a regular file (a folder, FIFO or device); NIfTI images are files",
        ));
    }
    let mut file =
        std::fs::File::open(path).map_err(|e| RadiologyError::io(path, "cannot open", e))?;
    let mut magic = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut magic)
        .map_err(|e| RadiologyError::io(path, "cannot read file", e))?;
    let stream = std::io::Cursor::new(magic.clone()).chain(std::io::BufReader::new(file));
    if magic == [0x1f, 0x8b] {
        let most = meta.len().saturating_mul(MAX_INFLATION);
        Ok((Box::new(flate2::read::MultiGzDecoder::new(stream)), most))
    } else {
        Ok((Box::new(stream), meta.len()))
    }
}

/// Up to `limit` more bytes of `stream` appended to `bytes` (fewer when the stream ends).
fn read_more(path: &Path, stream: &mut dyn Read, bytes: &mut Vec<u8>, limit: usize) -> Result<()> {
    stream
        .take(limit as u64)
        .read_to_end(bytes)
        .map_err(|e| invalid(path, format!("corrupt gzip stream: {e}")))?;
    Ok(())
}

/// The header bytes of a NIfTI stream (NIfTI-2's 540 at most: a NIfTI-1 header is 348).
fn read_header_bytes(path: &Path, stream: &mut dyn Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(540);
    read_more(path, stream, &mut bytes, 540)?;
    Ok(bytes)
}

/// Reads the whole of a .nii or .nii.gz file, decompressed (see [`open_stream`]).
pub fn read_file_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    read_more(path, &mut *open_stream(path)?, &mut out, usize::MAX)?;
    Ok(out)
}

/// The data scaling: `(None, None)` when the data are unscaled: slope 0 or not finite (the
/// rule of nibabel's `get_slope_inter()`), or the identity scaling slope 1, intercept 0 (which
/// nibabel's loaded image also reports as `(None, None)`, since it moves the scaling into the
/// array proxy). An error when the slope is valid but the intercept is not.
pub fn slope_inter(h: &NiftiHeader) -> std::result::Result<(Option<f64>, Option<f64>), String> {
    if h.scl_slope == 0.0 || !h.scl_slope.is_finite() {
        return Ok((None, None));
    }
    if h.scl_slope == 1.0 && h.scl_inter == 0.0 {
        return Ok((None, None));
    }
    if !h.scl_inter.is_finite() {
        return Err(format!(
            "valid slope {} but invalid intercept {}",
            h.scl_slope, h.scl_inter
        ));
    }
    Ok((Some(h.scl_slope), Some(h.scl_inter)))
}

/// Header facts (no voxel data needed).
pub fn header_info(path: &Path, h: &NiftiHeader) -> Result<NiftiHeaderInfo> {
    let nd = h.dim[0];
    if !(1..=7).contains(&nd) {
        return Err(invalid(path, format!("dim[0] is {nd}, must be 1..7")));
    }
    let nd = nd as usize;
    let mut shape = Vec::with_capacity(nd);
    for i in 1..=nd {
        let d = h.dim[i];
        if d < 1 {
            return Err(invalid(
                path,
                format!("dim[{i}] is {d}, must be at least 1"),
            ));
        }
        shape.push(usize::try_from(d).map_err(|_| invalid(path, format!("dim[{i}] is {d}")))?);
    }
    let dt = NiftiDatatype::from_code(h.datatype).map_err(|name| {
        RadiologyError::UnsupportedNiftiDatatype {
            path: path.to_path_buf(),
            code: h.datatype,
            name,
        }
    })?;
    let (scl_slope, scl_inter) = slope_inter(h).map_err(|r| invalid(path, r))?;
    let affine_ras = best_affine(h);
    if affine_ras.iter().flatten().any(|v| !v.is_finite()) {
        return Err(invalid(path, "affine (sform/qform) has non-finite values"));
    }
    Ok(NiftiHeaderInfo {
        nifti_version: h.version.number(),
        shape,
        zooms: h.pixdim[1..=nd].iter().map(|z| z.abs()).collect(),
        dtype: dt.numpy_str(h.little_endian),
        dtype_descr: dt.numpy_descr(h.little_endian),
        datatype_code: h.datatype,
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        scl_slope,
        scl_inter,
        affine_ras,
        little_endian: h.little_endian,
    })
}

/// Reads only the header of a .nii / .nii.gz.
pub fn read_nifti_header(path: impl AsRef<Path>) -> Result<(NiftiHeader, NiftiHeaderInfo)> {
    let path = path.as_ref();
    let bytes = read_header_bytes(path, &mut *open_stream(path)?)?;
    let h = NiftiHeader::parse(&bytes).map_err(|r| invalid(path, r))?;
    let info = header_info(path, &h)?;
    Ok((h, info))
}

/// Reads a .nii or .nii.gz (NIfTI-1 or NIfTI-2, either byte order) with scaling applied.
///
/// Dimensions 4..7 are folded into [`Volume::frames`]; a 1D/2D image gets size 1 on the missing
/// axes. The volume's id is a pseudonymous hash of the file's bytes (see [`Pseudonymizer`]).
pub fn read_nifti(path: impl AsRef<Path>, pseudo: &Pseudonymizer) -> Result<NiftiImage> {
    let path = path.as_ref();
    let (mut stream, most) = open_bounded(path)?;
    let mut bytes = read_header_bytes(path, &mut *stream)?;
    let header = NiftiHeader::parse(&bytes).map_err(|r| invalid(path, r))?;
    let info = header_info(path, &header)?;
    let dt = NiftiDatatype::from_code(header.datatype).map_err(|name| {
        RadiologyError::UnsupportedNiftiDatatype {
            path: path.to_path_buf(),
            code: header.datatype,
            name,
        }
    })?;
    let mut dims = [1usize; 3];
    for (d, s) in dims.iter_mut().zip(info.shape.iter()) {
        *d = *s;
    }
    let frames: usize = info.shape.iter().skip(3).product();
    let n = info
        .shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| invalid(path, "image too large"))?;
    let hs = header.version.header_size() as f64;
    let off = header.vox_offset;
    if !(off.is_finite() && off >= 0.0) || off.fract() != 0.0 {
        return Err(invalid(
            path,
            format!("vox_offset {off} is not a byte offset"),
        ));
    }
    let off = if off < hs {
        // vox_offset 0 marks a .hdr/.img pair; a single file needs offset >= header size
        return Err(invalid(
            path,
            format!(
                "vox_offset {off} lies inside the header; two-file (.hdr/.img) NIfTI is not supported, convert it to .nii"
            ),
        ));
    } else {
        off as usize
    };
    let need = n
        .checked_mul(dt.size())
        .and_then(|b| b.checked_add(off))
        .ok_or_else(|| invalid(path, "image too large"))?;
    // Only what the header says the image needs is read (and held): trailing bytes, however
    // many a gzip stream would inflate to, are never decompressed; a header asking for more
    // than the file can hold is refused before any voxel is read.
    if need as u64 > most {
        return Err(invalid(
            path,
            format!(
                "truncated: {n} voxels of {} need {need} bytes, more than this {}-byte file \
                 can hold",
                dt.numpy_name(),
                std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            ),
        ));
    }
    if let Some(more) = need.checked_sub(bytes.len()) {
        read_more(path, &mut *stream, &mut bytes, more)?;
    }
    if bytes.len() < need {
        return Err(invalid(
            path,
            format!(
                "truncated: {} voxels of {} need {need} bytes, the file has {}",
                n,
                dt.numpy_name(),
                bytes.len()
            ),
        ));
    }
    let voxels = decode_voxels(
        &bytes[off..need],
        dt,
        header.little_endian,
        info.scl_slope,
        info.scl_inter,
    );
    if !voxels.is_empty() && !voxels.iter().any(|v| v.is_finite()) {
        return Err(invalid(
            path,
            format!("no finite voxel: all {n} values are NaN or ±Inf"),
        ));
    }
    let volume = Volume::from_affine_ras(
        voxels,
        dims,
        frames,
        &info.affine_ras,
        None,
        pseudo.content_id(&bytes[..need]),
    )
    .map_err(|e| invalid(path, e.to_string()))?;
    Ok(NiftiImage {
        header,
        info,
        volume,
    })
}

/// Raw samples to f32, applying `v * slope + inter` in f64 when scaled.
fn decode_voxels(
    data: &[u8],
    dt: NiftiDatatype,
    le: bool,
    slope: Option<f64>,
    inter: Option<f64>,
) -> Vec<f32> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            data.chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    let v = if le {
                        <$t>::from_le_bytes(a)
                    } else {
                        <$t>::from_be_bytes(a)
                    };
                    v as f64
                })
                .collect::<Vec<f64>>()
        };
    }
    let raw: Vec<f64> = match dt {
        NiftiDatatype::U8 => data.iter().map(|&v| f64::from(v)).collect(),
        NiftiDatatype::I8 => data.iter().map(|&v| f64::from(v as i8)).collect(),
        NiftiDatatype::I16 => conv!(i16, 2),
        NiftiDatatype::U16 => conv!(u16, 2),
        NiftiDatatype::I32 => conv!(i32, 4),
        NiftiDatatype::U32 => conv!(u32, 4),
        NiftiDatatype::I64 => conv!(i64, 8),
        NiftiDatatype::U64 => conv!(u64, 8),
        NiftiDatatype::F32 => conv!(f32, 4),
        NiftiDatatype::F64 => conv!(f64, 8),
    };
    match (slope, inter) {
        (Some(s), Some(i)) => raw.into_iter().map(|v| (v * s + i) as f32).collect(),
        _ => raw.into_iter().map(|v| v as f32).collect(),
    }
}

/// The path with `.nii` / `.nii.gz` recognised (case-insensitive).
pub fn is_nifti_path(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

pub(crate) fn wants_gzip(path: &Path) -> bool {
    path.to_string_lossy().to_ascii_lowercase().ends_with(".gz")
}
