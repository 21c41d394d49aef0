//! `inspect --json`: one serialisable report per file, folder or series.
//!
//! Key names follow the reference data (`REFERENCE.json`: what nibabel / pydicom report) where
//! the meaning matches: `affine_ras`, `axcodes`, `shape`, `zooms`, `dtype`, `value_min`, ...
//! Reports carry a pseudonymous id and never an identifying DICOM value.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dicom::{self, DicomFileInfo, SeriesInfo};
use crate::error::Result;
use crate::nifti::{self, NiftiHeaderInfo};
use crate::privacy::Pseudonymizer;
use crate::volume::{IntensityStats, Volume};

/// Everything `inspect --json` prints for one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeReport {
    /// "nifti", "dicom" (one file) or "dicom_series".
    pub kind: String,
    /// Pseudonymous id (see [`crate::privacy`]).
    pub id: String,
    /// DICOM Modality, when known.
    pub modality: Option<String>,
    /// nibabel's `aff2axcodes` of the RAS affine (`None` without geometry).
    pub axcodes: Option<Vec<Option<String>>>,
    /// Value range after scaling / rescale (`None` when pixels could not be decoded).
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub value_mean: Option<f64>,
    /// The volume grid: voxels along i, j, k, 3D frames, spacing (mm), voxel-to-LPS affine.
    pub dims: Option<[usize; 3]>,
    pub volume_frames: Option<usize>,
    pub spacing: Option<[f64; 3]>,
    pub affine_lps: Option<[[f64; 4]; 4]>,
    /// NIfTI header facts (kind "nifti").
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub nifti: Option<NiftiHeaderInfo>,
    /// DICOM attributes of one file (kind "dicom").
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub dicom: Option<DicomFileInfo>,
    /// Series geometry (kind "dicom_series").
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub series: Option<SeriesInfo>,
}

impl VolumeReport {
    fn base(kind: &str, id: String, modality: Option<String>) -> Self {
        VolumeReport {
            kind: kind.into(),
            id,
            modality,
            axcodes: None,
            value_min: None,
            value_max: None,
            value_mean: None,
            dims: None,
            volume_frames: None,
            spacing: None,
            affine_lps: None,
            nifti: None,
            dicom: None,
            series: None,
        }
    }

    fn set_stats(&mut self, stats: Option<IntensityStats>) {
        if let Some(s) = stats {
            self.value_min = Some(s.min);
            self.value_max = Some(s.max);
            self.value_mean = Some(s.mean);
        }
    }

    fn set_volume(&mut self, v: &Volume) {
        self.axcodes = Some(codes(v));
        self.dims = Some(v.dims);
        self.volume_frames = Some(v.frames);
        self.spacing = Some(v.spacing);
        self.affine_lps = Some(v.affine_lps());
        self.set_stats(v.intensity_range());
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

fn codes(v: &Volume) -> Vec<Option<String>> {
    v.orientation_code()
        .iter()
        .map(|c| c.map(str::to_string))
        .collect()
}

/// Report of a NIfTI file.
pub fn inspect_nifti(path: &Path, pseudo: &Pseudonymizer) -> Result<VolumeReport> {
    let img = nifti::read_nifti(path, pseudo)?;
    let mut r = VolumeReport::base("nifti", img.volume.id.clone(), None);
    r.set_volume(&img.volume);
    // axis codes from the header affine exactly as nibabel computes them
    r.axcodes = Some(
        crate::volume::axcodes(&img.info.affine_ras)
            .iter()
            .map(|c| c.map(str::to_string))
            .collect(),
    );
    r.nifti = Some(img.info);
    Ok(r)
}

/// Report of one DICOM file. Pixels that cannot be decoded leave the value range empty and set
/// `pixel_error`; a file that is not DICOM at all is an error.
pub fn inspect_dicom_file(path: &Path, pseudo: &Pseudonymizer) -> Result<VolumeReport> {
    let file = dicom::read_dicom_file(path, pseudo)?;
    let mut r = VolumeReport::base("dicom", file.id.clone(), file.modality.clone());
    if file.pixels.is_ok() {
        if let Ok(v) = file.to_volume() {
            r.set_volume(&v);
            if file.info.affine_lps_ijk_to_world.is_none() {
                // no position/orientation in the file: the grid is a placeholder, so no
                // orientation or world affine is claimed
                r.axcodes = None;
                r.affine_lps = None;
            }
        }
        // over all samples (colour too), as pydicom's pixel_array
        r.set_stats(file.stats());
    }
    r.dicom = Some(file.info.clone());
    Ok(r)
}

/// Report of a DICOM series (a folder, or files of one series). With several series under the
/// path, one report each; unreadable files are listed in each report's `file_errors`.
pub fn inspect_dicom_series(path: &Path, pseudo: &Pseudonymizer) -> Result<Vec<VolumeReport>> {
    let scan = dicom::load_series(&[path], pseudo)?;
    if scan.series.is_empty() {
        return Err(crate::RadiologyError::NoImages {
            path: path.to_path_buf(),
            detail: "no series".into(),
        });
    }
    let mut out = Vec::new();
    for s in scan.series {
        let mut r = VolumeReport::base(
            "dicom_series",
            s.volume.id.clone(),
            s.volume.modality.clone(),
        );
        r.set_volume(&s.volume);
        let mut info = s.info;
        info.file_errors = scan.errors.clone();
        r.series = Some(info);
        out.push(r);
    }
    Ok(out)
}

/// Report(s) for any input: a .nii/.nii.gz file, a folder of DICOM files (series), or one
/// DICOM file.
pub fn inspect_path(path: impl AsRef<Path>, pseudo: &Pseudonymizer) -> Result<Vec<VolumeReport>> {
    let path = path.as_ref();
    if path.is_dir() {
        inspect_dicom_series(path, pseudo)
    } else if nifti::is_nifti_path(path) {
        Ok(vec![inspect_nifti(path, pseudo)?])
    } else {
        Ok(vec![inspect_dicom_file(path, pseudo)?])
    }
}

/// NIfTI files and DICOM files (by extension or the `DICM` magic at byte 128) are volumes for
/// certain; a folder may hold DICOM series (the program has ruled out checkpoint folders).
pub fn claim(path: &Path) -> dinoadapt_datasets::FileClaim {
    use dinoadapt_datasets::FileClaim;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") || name.ends_with(".dcm") {
        return FileClaim::Certain;
    }
    if path.is_dir() {
        return FileClaim::Possible;
    }
    let mut magic = [0u8; 132];
    let dicom = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|_| &magic[128..] == b"DICM");
    if dicom {
        FileClaim::Certain
    } else {
        FileClaim::No
    }
}

/// The report(s) of `path` (ids pseudonymised with `DINOADAPT_ID_SALT`), as JSON (one object,
/// or a list for several series) and as text.
pub fn describe(
    path: &Path,
) -> std::result::Result<dinoadapt_datasets::FileDescription, dinoadapt_datasets::DomainError> {
    use dinoadapt_datasets::DomainError;
    let salt = std::env::var("DINOADAPT_ID_SALT").unwrap_or_else(|_| {
        crate::volume_inputs::warn_public_salt();
        "dinoadapt".into()
    });
    let reports = inspect_path(path, &Pseudonymizer::new(salt)).map_err(DomainError::input)?;
    let json = if reports.len() == 1 {
        serde_json::to_value(&reports[0])
    } else {
        serde_json::to_value(&reports)
    }
    .map_err(DomainError::input)?;
    let mut text = Vec::new();
    for r in &reports {
        text.push(format!("volume        {} ({})", r.id, r.kind));
        text.push(format!(
            "modality      {}",
            r.modality.as_deref().unwrap_or("?")
        ));
        if let (Some(d), Some(s)) = (r.dims, r.spacing) {
            text.push(format!(
                "grid          {} x {} x {} voxels, spacing {:.4} x {:.4} x {:.4} mm",
                d[0], d[1], d[2], s[0], s[1], s[2]
            ));
        }
        if let Some(codes) = &r.axcodes {
            let c: Vec<&str> = codes.iter().map(|c| c.as_deref().unwrap_or("?")).collect();
            text.push(format!("orientation   {} (RAS+ axis codes)", c.concat()));
        }
        if let Some(a) = &r.affine_lps {
            text.push(format!("affine (LPS)  {a:?}"));
        }
        if let (Some(lo), Some(hi)) = (r.value_min, r.value_max) {
            text.push(format!("values        {lo} .. {hi}"));
        }
    }
    Ok(dinoadapt_datasets::FileDescription { json, text })
}
