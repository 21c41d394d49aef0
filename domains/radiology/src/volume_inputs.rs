//! Loading the inputs of a radiology batch one by one (a NIfTI file, or every series under a
//! DICOM file or folder), with one row per volume or failure. Rows carry the pseudonymous id and
//! base names only: never a folder path of the input tree.

use std::path::{Path, PathBuf};

use crate::dicom::load_series;
use crate::nifti::read_nifti;
use crate::predictions::{write_predictions, SlicePrediction};
use crate::source::{SliceOptions, SliceSource};
use crate::{Pseudonymizer, RadiologyError, Volume};

/// The volumes of a batch and how their ids are made.
#[derive(Debug, Clone, Default)]
pub struct InputVolumes {
    /// NIfTI files, DICOM files, or folders of DICOM files (searched recursively, grouped by
    /// SeriesInstanceUID).
    pub paths: Vec<PathBuf>,
    /// Salt of the pseudonymous ids (default: $DINOADAPT_ID_SALT, else "dinoadapt").
    pub id_salt: Option<String>,
    /// JSON object mapping original Series/StudyInstanceUIDs to the ids to use.
    pub id_map: Option<PathBuf>,
}

/// One row of `volumes.parquet`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct VolumeRow {
    /// Position of the input on the command line.
    pub input_index: usize,
    /// Which file inside a folder input failed, by its place in the walk (`file #k`, sorted,
    /// depth-first), never by its name (empty otherwise: the input is named by `input_index`
    /// only, as folder and file names of exports can carry names).
    pub file: String,
    pub id: String,
    pub kind: String,
    pub modality: String,
    pub status: String,
    pub error: String,
    pub dims: [u64; 3],
    pub spacing: [f64; 3],
    /// RAS+ axis codes, e.g. "LPS".
    pub orientation: String,
    pub uneven_spacing: Option<bool>,
    pub gantry_tilt_deg: Option<f64>,
    /// What was written for the volume (relative to the output folder).
    pub output: String,
    /// Slices embedded or written.
    pub regions: usize,
    /// Row of the pooled feature in volumes.safetensors.
    pub feature_row: Option<u64>,
}

impl VolumeRow {
    pub fn fail(&mut self, message: impl Into<String>) {
        self.status = "failed".into();
        self.error = message.into();
    }

    fn of(volume: &Volume, input_index: usize, kind: &str) -> Self {
        VolumeRow {
            input_index,
            id: volume.id.clone(),
            kind: kind.into(),
            modality: volume.modality.clone().unwrap_or_default(),
            status: "ok".into(),
            dims: volume.dims.map(|d| d as u64),
            spacing: volume.spacing,
            orientation: volume
                .orientation_code()
                .iter()
                .map(|c| c.unwrap_or("?"))
                .collect(),
            ..Default::default()
        }
    }
}

/// A loaded volume with its row, or a failure row.
pub enum VolumeItem {
    Volume(Box<Volume>, VolumeRow),
    Failed(VolumeRow),
}

fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into())
}

/// `message` with `path` replaced by `name` and every folder above it removed.
pub fn scrub(message: &str, path: &Path, name: &str) -> String {
    let mut m = message.replace(&path.display().to_string(), name);
    m = m.replace(&base_name(path), name);
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && d != &Path::new("/")) {
        m = m.replace(&d.display().to_string(), "<folder>");
        dir = d.parent();
    }
    m
}

fn is_nifti(path: &Path) -> bool {
    let name = base_name(path).to_ascii_lowercase();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

impl InputVolumes {
    /// The pseudonymizer of the batch: the salt (else $DINOADAPT_ID_SALT, else "dinoadapt")
    /// and the id map.
    pub fn pseudonymizer(&self) -> Result<Pseudonymizer, RadiologyError> {
        let salt = self
            .id_salt
            .clone()
            .or_else(|| std::env::var("DINOADAPT_ID_SALT").ok())
            .unwrap_or_else(|| {
                warn_public_salt();
                "dinoadapt".into()
            });
        let p = Pseudonymizer::new(salt);
        Ok(match &self.id_map {
            Some(m) => p.load_mapping(m)?,
            None => p,
        })
    }
}

/// The pseudonymous id of input `path` (a salted hash of the path as given): the name of its
/// status file in a resumable or sharded batch, without any folder or file name in it.
pub fn input_id(pseudo: &Pseudonymizer, path: &Path) -> String {
    format!(
        "input-{}",
        pseudo.content_id(format!("input path:{}", path.display()).as_bytes())
    )
}

/// Load every input in turn and hand each volume (or failure) to `f`; one volume in memory at
/// a time per input file (a DICOM folder's series are loaded together).
pub fn for_each_volume<E: From<RadiologyError>>(
    inputs: &InputVolumes,
    mut f: impl FnMut(VolumeItem) -> Result<(), E>,
) -> Result<(), E> {
    let pseudo = inputs.pseudonymizer()?;
    for (i, path) in inputs.paths.iter().enumerate() {
        for_each_volume_of(&pseudo, i, path, &mut f)?;
    }
    Ok(())
}

/// The volumes (or failures) of input number `index`, `path` (a NIfTI file, or a DICOM file or
/// folder), handed to `f` one by one.
pub fn for_each_volume_of<E: From<RadiologyError>>(
    pseudo: &Pseudonymizer,
    index: usize,
    path: &Path,
    mut f: impl FnMut(VolumeItem) -> Result<(), E>,
) -> Result<(), E> {
    let i = index;
    let label = format!("input #{i}");
    let failed = |message: String| {
        VolumeItem::Failed(VolumeRow {
            input_index: i,
            status: "failed".into(),
            error: scrub(&message, path, &label),
            ..Default::default()
        })
    };
    if std::fs::metadata(path).is_err() {
        let why = dinoadapt_core::io::why_unreachable(path);
        return f(failed(format!("{}: {why}", path.display())));
    }
    if is_nifti(path) {
        match read_nifti(path, pseudo) {
            Ok(img) => {
                let row = VolumeRow::of(&img.volume, i, "nifti");
                f(VolumeItem::Volume(Box::new(img.volume), row))?;
            }
            Err(e) => f(failed(e.to_string()))?,
        }
        return Ok(());
    }
    match load_series(&[path], pseudo) {
        Ok(scan) => {
            for s in scan.series {
                let mut row = VolumeRow::of(&s.volume, i, "dicom_series");
                row.uneven_spacing = Some(s.info.uneven_spacing);
                row.gantry_tilt_deg = Some(s.info.gantry_tilt_deg);
                f(VolumeItem::Volume(Box::new(s.volume), row))?;
            }
            for e in scan.errors {
                // A file inside a folder is named by its place in the walk, not its name (file
                // names of exports can carry patient names).
                let file = match e.index {
                    Some(k) => format!("file #{k}"),
                    None => "a folder".into(),
                };
                let message = match e.file.as_str() {
                    "" => e.message.clone(),
                    name => e.message.replace(name, &file),
                };
                f(VolumeItem::Failed(VolumeRow {
                    input_index: i,
                    file,
                    status: "failed".into(),
                    error: scrub(&message, path, &label),
                    ..Default::default()
                }))?;
            }
        }
        Err(e) => f(failed(e.to_string()))?,
    }
    Ok(())
}

/// Write `volume`'s slice predictions as the NIfTI label map `dir/name` on its source grid,
/// and record the file and the slices predicted in `row` (or the failure).
pub fn write_label_map(
    dir: &Path,
    name: String,
    volume: &Volume,
    options: &SliceOptions,
    predictions: &[SlicePrediction],
    row: &mut VolumeRow,
) {
    match write_predictions(
        dir.join(&name),
        volume,
        options.axis,
        &options.input,
        predictions,
    ) {
        Ok(_) => {
            row.output = name;
            row.regions = predictions.len();
        }
        Err(e) => row.fail(e.to_string()),
    }
}

/// [`for_each_volume`] with each volume's slice source: inputs that fail to load or slice
/// become failed rows; `f` fills in the row of every other volume, which is then kept.
pub fn for_each_sliced_volume<E: From<RadiologyError>>(
    inputs: &InputVolumes,
    options: SliceOptions,
    rows: &mut Vec<VolumeRow>,
    mut f: impl FnMut(&Volume, SliceSource, &mut VolumeRow) -> Result<(), E>,
) -> Result<(), E> {
    for_each_volume(inputs, |item| slice_item(item, options, rows, &mut f))
}

/// [`for_each_volume_of`] with each volume's slice source, as [`for_each_sliced_volume`].
pub fn for_each_sliced_volume_of<E: From<RadiologyError>>(
    pseudo: &Pseudonymizer,
    index: usize,
    path: &Path,
    options: SliceOptions,
    rows: &mut Vec<VolumeRow>,
    mut f: impl FnMut(&Volume, SliceSource, &mut VolumeRow) -> Result<(), E>,
) -> Result<(), E> {
    for_each_volume_of(pseudo, index, path, |item| {
        slice_item(item, options, rows, &mut f)
    })
}

/// A loaded volume's slice source handed to `f`, or the failure, and its row kept.
fn slice_item<E>(
    item: VolumeItem,
    options: SliceOptions,
    rows: &mut Vec<VolumeRow>,
    f: &mut impl FnMut(&Volume, SliceSource, &mut VolumeRow) -> Result<(), E>,
) -> Result<(), E> {
    match item {
        VolumeItem::Failed(row) => rows.push(row),
        VolumeItem::Volume(volume, mut row) => {
            match SliceSource::new(&volume, options) {
                Ok(source) => f(&volume, source, &mut row)?,
                Err(e) => row.fail(e.to_string()),
            }
            rows.push(row);
        }
    }
    Ok(())
}

/// Say (once per process) that the ids are salted with the public default: anyone holding a
/// study's UIDs or a file's bytes can recompute them.
pub fn warn_public_salt() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "volume ids are salted with the public default \"dinoadapt\": anyone with the \
             study's UIDs or the file can recompute them; give --id-salt or DINOADAPT_ID_SALT \
             (kept secret, the same for every run of a study) for pseudonyms only you can link"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn scrubbing_keeps_base_names_only() {
        let p = Path::new("/data/DOE^JOHN/study 1/CT/0001.dcm");
        let m = scrub(
            "cannot read /data/DOE^JOHN/study 1/CT/0001.dcm: truncated",
            p,
            "#0",
        );
        assert_eq!(m, "cannot read #0: truncated");
        let m = scrub("no images under /data/DOE^JOHN/study 1/CT", p, "#0");
        assert!(!m.contains("DOE"), "{m}");
        let folder = Path::new("/data/DOE^JOHN");
        let m = scrub("DOE^JOHN: no DICOM files", folder, "input #3");
        assert_eq!(m, "input #3: no DICOM files");
    }
}
