//! The recipe's `data.volumes` as the pre-training image pool: every slice of every volume,
//! rendered once when the run starts (reoriented, intensity-mapped, 2.5D channels, aspect kept)
//! exactly as `radiology slices` renders them, as 8-bit RGB (`volume_size`² × 3 bytes a slice);
//! slices with no voxel above the background are left out.
//!
//! The rendered slices go to an unnamed file in the run's output folder, removed when the run
//! ends, and each is read back when drawn: memory holds none of them (100 CT volumes of 300
//! slices at 224 px are 4.5 GB), the page cache keeps the hot ones.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::Context;
use dinoadapt_datasets::{ImageError, ImageSource, RegionSource};
use dinoadapt_pretrain::Recipe;
use dinoadapt_radiology::source::SliceSource;
use image::{DynamicImage, RgbImage};

use super::volumes::{for_each_volume, VolumeItem};
use super::{to_rgb, SliceArgs, VolumeInputs};

pub struct VolumeSlices {
    /// The rendered slices laid end to end.
    store: File,
    /// Where the store is (its folder; the file itself has no name).
    folder: PathBuf,
    count: usize,
    size: u32,
    describe: String,
}

/// How the recipe's `data.volumes` are sliced (defaults: axial, min-max, repeated channels,
/// 224 px).
fn slice_args(recipe: &Recipe) -> SliceArgs {
    let d = &recipe.data;
    SliceArgs {
        axis: d.volume_axis.clone().unwrap_or_else(|| "axial".into()),
        intensity: d
            .volume_intensity
            .clone()
            .unwrap_or_else(|| "minmax".into()),
        channels: d.volume_channels.clone().unwrap_or_else(|| "repeat".into()),
        size: d.volume_size.unwrap_or(224),
        step: 1,
        skip_empty: true,
        background: None,
        stretch: false,
    }
}

/// Render every non-empty slice of the recipe's volumes, in order, handing each to `sink` as
/// RGB bytes [size, size, 3]. Returns the volumes rendered.
fn render_slices(
    recipe: &Recipe,
    mut sink: impl FnMut(Vec<u8>) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let options = slice_args(recipe).options()?;
    let inputs = VolumeInputs {
        inputs: recipe.data.volumes.clone(),
        id_salt: None,
        id_map: None,
    };
    let (mut volumes, mut failures) = (0, Vec::new());
    let per = 3 * options.input.size * options.input.size;
    for_each_volume(&inputs, |item| {
        let volume = match item {
            VolumeItem::Failed(row) => {
                failures.push(format!("input #{}: {}", row.input_index, row.error));
                return Ok(());
            }
            VolumeItem::Volume(v, _) => v,
        };
        let mut source = SliceSource::new(&volume, options)?;
        while let Some(b) = source.next_batch(16).map_err(anyhow::Error::msg)? {
            for chunk in b.pixels.chunks(per) {
                sink(to_rgb(chunk, &options.input))?;
            }
        }
        volumes += 1;
        Ok(())
    })?;
    anyhow::ensure!(
        failures.is_empty(),
        "data.volumes: {} could not be read: {}",
        failures.len(),
        failures.join("; ")
    );
    Ok(volumes)
}

impl VolumeSlices {
    /// Load the recipe's volumes and render their slices into the store.
    pub fn from_recipe(recipe: &Recipe) -> anyhow::Result<VolumeSlices> {
        let args = slice_args(recipe);
        let folder = recipe.train.output_dir.clone();
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let store = tempfile::tempfile_in(&folder)
            .with_context(|| format!("{}: cannot hold the rendered slices", folder.display()))?;
        let mut writer = BufWriter::with_capacity(1 << 20, &store);
        let mut count = 0usize;
        let volumes = render_slices(recipe, |rgb| {
            count += 1;
            writer
                .write_all(&rgb)
                .with_context(|| format!("writing slices in {}", folder.display()))
        })?;
        anyhow::ensure!(
            count > 0,
            "data.volumes: no slice with a voxel above the background"
        );
        writer
            .flush()
            .with_context(|| format!("writing slices in {}", folder.display()))?;
        drop(writer);
        let describe = format!(
            "{count} {} slices of {volumes} volumes ({} intensity, {} channels, {} px)",
            args.axis, args.intensity, args.channels, args.size
        );
        Ok(VolumeSlices {
            store,
            folder,
            count,
            size: args.size as u32,
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
    use std::path::Path;

    #[test]
    fn drawn_slices_are_the_rendered_slices_read_back_from_the_store() {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
        if !shared.is_dir() {
            assert!(
                std::env::var("CI").is_err(),
                "CI: ../shared is missing (the shared data this test reads)"
            );
            eprintln!("skipped: ../shared is missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let volume = shared.join("data/nifti/anatomical.nii");
        let text = format!(
            "[model]\narch = \"vits14\"\n[data]\nvolumes = [{:?}]\nvolume_axis = \"coronal\"\nvolume_size = 40\nbatch_size = 4\n\
             [train]\noutput_dir = {:?}\n",
            volume.display().to_string(),
            dir.path().join("run").display().to_string()
        );
        let path = dir.path().join("recipe.toml");
        std::fs::write(&path, text).unwrap();
        let recipe = Recipe::load(&path, &[]).unwrap();
        let mut rendered = Vec::new();
        render_slices(&recipe, |rgb| {
            rendered.push(rgb);
            Ok(())
        })
        .unwrap();
        let pool = VolumeSlices::from_recipe(&recipe).unwrap();
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
