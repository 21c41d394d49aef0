//! The radiology domain's pre-training image pool: every slice of every volume, rendered once
//! when the run starts (reoriented, intensity-mapped, 2.5D channels, aspect kept) exactly as
//! `radiology slices` renders them, as 8-bit RGB (`size`² × 3 bytes a slice); slices with no
//! voxel above the background are left out.
//!
//! The rendered slices go to an unnamed file in the run's output folder, removed when the run
//! ends, and each is read back when drawn: memory holds none of them (100 CT volumes of 300
//! slices at 224 px are 4.5 GB), the page cache keeps the hot ones.
//!
//! ```toml
//! [data.source]
//! domain = "radiology"
//! paths = ["ct/"]            # NIfTI files, DICOM files or folders
//! axis = "axial"             # axial, coronal, sagittal (default axial)
//! intensity = "minmax"       # a CT window, MR percentiles, minmax, none (default minmax)
//! channels = "repeat"        # repeat, neighbours, windows:A;B;C (default repeat)
//! size = 224                 # default 224
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use dinoadapt_datasets::{DomainError, ImageError, ImageSource, RegionSource};
use image::{DynamicImage, RgbImage};
use serde::Deserialize;

use crate::inputs::{to_rgb, Channels, InputSpec};
use crate::intensity::Intensity;
use crate::slices::Axis;
use crate::source::{SliceOptions, SliceSource};
use crate::volume_inputs::{for_each_volume, InputVolumes, VolumeItem};

/// The `[data.source]` keys of the radiology domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSlicesConfig {
    /// NIfTI files, DICOM files or folders of DICOM files.
    pub paths: Vec<PathBuf>,
    /// axial, coronal or sagittal (of the volume reoriented to RAS).
    #[serde(default = "default_axis")]
    pub axis: String,
    /// A CT window (lung, mediastinum, ...), MR percentiles, minmax or none.
    #[serde(default = "default_intensity")]
    pub intensity: String,
    /// repeat, neighbours or windows:A;B;C.
    #[serde(default = "default_channels")]
    pub channels: String,
    /// Slice side in pixels.
    #[serde(default = "default_size")]
    pub size: usize,
}

fn default_axis() -> String {
    "axial".into()
}

fn default_intensity() -> String {
    "minmax".into()
}

fn default_channels() -> String {
    "repeat".into()
}

fn default_size() -> usize {
    224
}

impl VolumeSlicesConfig {
    /// How the slices are cut and rendered (every non-empty slice, aspect kept).
    pub fn slice_options(&self) -> Result<SliceOptions, DomainError> {
        let bad = |key: &str, value: &str, e: String| DomainError::Options {
            domain: "radiology",
            message: format!("{key} `{value}`: {e}"),
        };
        let axis: Axis = self
            .axis
            .parse()
            .map_err(|e| bad("axis", &self.axis, format!("{e}")))?;
        let intensity: Intensity = self
            .intensity
            .parse()
            .map_err(|e| bad("intensity", &self.intensity, format!("{e}")))?;
        let channels: Channels = self
            .channels
            .parse()
            .map_err(|e| bad("channels", &self.channels, format!("{e}")))?;
        Ok(SliceOptions {
            axis,
            input: InputSpec {
                intensity,
                channels,
                size: self.size,
                keep_aspect: true,
                ..InputSpec::default()
            },
            step: 1,
            skip_empty: true,
            background: None,
        })
    }
}

/// Every non-empty slice of a set of volumes, rendered once, as a pre-training image pool.
pub struct VolumeSlices {
    /// The rendered slices laid end to end.
    store: File,
    /// Where the store is (its folder; the file itself has no name).
    folder: PathBuf,
    count: usize,
    size: u32,
    describe: String,
}

/// Render every non-empty slice of the volumes, in order, handing each to `sink` as RGB bytes
/// [size, size, 3]. Returns the volumes rendered.
fn render_slices(
    cfg: &VolumeSlicesConfig,
    mut sink: impl FnMut(Vec<u8>) -> Result<(), DomainError>,
) -> Result<usize, DomainError> {
    let options = cfg.slice_options()?;
    let inputs = InputVolumes {
        paths: cfg.paths.clone(),
        id_salt: None,
        id_map: None,
    };
    let (mut volumes, mut failures) = (0, Vec::new());
    let per = 3 * options.input.size * options.input.size;
    let input = |e: String| DomainError::Input(e);
    for_each_volume(&inputs, |item| {
        let volume = match item {
            VolumeItem::Failed(row) => {
                failures.push(format!("input #{}: {}", row.input_index, row.error));
                return Ok(());
            }
            VolumeItem::Volume(v, _) => v,
        };
        let mut source = SliceSource::new(&volume, options).map_err(|e| input(e.to_string()))?;
        while let Some(b) = source.next_batch(16).map_err(input)? {
            for chunk in b.pixels.chunks(per) {
                sink(to_rgb(chunk, &options.input))?;
            }
        }
        volumes += 1;
        Ok(())
    })
    .map_err(|e: VolumeError| match e {
        VolumeError::Read(e) => input(e.to_string()),
        VolumeError::Domain(e) => e,
    })?;
    if !failures.is_empty() {
        return Err(input(format!(
            "[data.source] paths: {} could not be read: {}",
            failures.len(),
            failures.join("; ")
        )));
    }
    Ok(volumes)
}

/// Errors of the walk over the volumes: reading one, or the sink's.
enum VolumeError {
    Read(crate::RadiologyError),
    Domain(DomainError),
}

impl From<crate::RadiologyError> for VolumeError {
    fn from(e: crate::RadiologyError) -> Self {
        VolumeError::Read(e)
    }
}

impl From<DomainError> for VolumeError {
    fn from(e: DomainError) -> Self {
        VolumeError::Domain(e)
    }
}

impl VolumeSlices {
    /// Load the volumes and render their slices into an unnamed file in `folder`.
    pub fn render(cfg: &VolumeSlicesConfig, folder: &Path) -> Result<VolumeSlices, DomainError> {
        let io = |what: &str, e: std::io::Error| {
            DomainError::Input(format!("{what} {}: {e}", folder.display()))
        };
        std::fs::create_dir_all(folder).map_err(|e| io("creating", e))?;
        let store = tempfile::tempfile_in(folder).map_err(|e| {
            DomainError::Input(format!(
                "{}: cannot hold the rendered slices: {e}",
                folder.display()
            ))
        })?;
        let mut writer = BufWriter::with_capacity(1 << 20, &store);
        let mut count = 0usize;
        let volumes = render_slices(cfg, |rgb| {
            count += 1;
            writer
                .write_all(&rgb)
                .map_err(|e| io("writing slices in", e))
        })?;
        if count == 0 {
            return Err(DomainError::Input(
                "[data.source] paths: no slice with a voxel above the background".into(),
            ));
        }
        writer.flush().map_err(|e| io("writing slices in", e))?;
        drop(writer);
        let describe = format!(
            "{count} {} slices of {volumes} volumes ({} intensity, {} channels, {} px)",
            cfg.axis, cfg.intensity, cfg.channels, cfg.size
        );
        Ok(VolumeSlices {
            store,
            folder: folder.to_path_buf(),
            count,
            size: cfg.size as u32,
            describe,
        })
    }
}

impl ImageSource for VolumeSlices {
    fn len(&self) -> usize {
        self.count
    }

    fn image(&self, index: usize, _seed: u64) -> Result<DynamicImage, ImageError> {
        let bytes = 3 * (self.size as usize).pow(2);
        let mut rgb = vec![0u8; bytes];
        self.store
            .read_exact_at(&mut rgb, (index * bytes) as u64)
            .map_err(|source| ImageError::Io {
                path: self.folder.join(format!("(rendered slice {index})")),
                source,
            })?;
        let image = RgbImage::from_raw(self.size, self.size, rgb).expect("sized above");
        Ok(DynamicImage::ImageRgb8(image))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_slices_are_the_rendered_slices_read_back_from_the_store() {
        let shared = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
            .join("../../../shared");
        if !shared.is_dir() {
            assert!(
                std::env::var("CI").is_err(),
                "CI: ../shared is missing (the shared data this test reads)"
            );
            eprintln!("skipped: ../shared is missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = VolumeSlicesConfig {
            paths: vec![shared.join("data/nifti/anatomical.nii")],
            axis: "coronal".into(),
            intensity: default_intensity(),
            channels: default_channels(),
            size: 40,
        };
        let mut rendered = Vec::new();
        render_slices(&cfg, |rgb| {
            rendered.push(rgb);
            Ok(())
        })
        .unwrap();
        let pool = VolumeSlices::render(&cfg, &dir.path().join("run")).unwrap();
        assert_eq!(pool.len(), rendered.len());
        assert!(pool.len() > 10, "{}", pool.describe());
        for i in [0, pool.len() / 2, pool.len() - 1] {
            let image = pool.image(i, 0).unwrap().into_rgb8();
            assert_eq!(image.dimensions(), (40, 40));
            assert_eq!(image.as_raw(), &rendered[i], "slice {i}");
        }
        assert_ne!(rendered[0], rendered[pool.len() / 2]);
        assert!(pool.image(pool.len(), 0).is_err());
        // The store has no name: nothing is left in the output folder.
        drop(pool);
        assert_eq!(
            std::fs::read_dir(dir.path().join("run")).unwrap().count(),
            0
        );
    }
}
