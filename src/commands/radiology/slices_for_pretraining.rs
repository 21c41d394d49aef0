//! The recipe's `data.volumes` as the pre-training image pool: every slice of every volume,
//! rendered once when the run starts (reoriented, intensity-mapped, 2.5D channels, aspect kept)
//! exactly as `radiology slices` renders them, and held as 8-bit RGB (`volume_size`² × 3 bytes a
//! slice); slices with no voxel above the background are left out.

use dinoadapt_datasets::{ImageError, ImageSource, RegionSource};
use dinoadapt_pretrain::Recipe;
use dinoadapt_radiology::source::SliceSource;
use image::{DynamicImage, RgbImage};

use super::volumes::{for_each_volume, VolumeItem};
use super::{to_rgb, SliceArgs, VolumeInputs};

pub struct VolumeSlices {
    slices: Vec<RgbImage>,
    describe: String,
}

impl VolumeSlices {
    /// Load the recipe's volumes and render their slices.
    pub fn from_recipe(recipe: &Recipe) -> anyhow::Result<VolumeSlices> {
        let d = &recipe.data;
        let args = SliceArgs {
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
        };
        let options = args.options()?;
        let inputs = VolumeInputs {
            inputs: d.volumes.clone(),
            id_salt: None,
            id_map: None,
        };
        let (mut slices, mut volumes, mut failures) = (Vec::new(), 0, Vec::new());
        let size = options.input.size as u32;
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
                let per = 3 * options.input.size * options.input.size;
                for chunk in b.pixels.chunks(per) {
                    let rgb = to_rgb(chunk, &options.input);
                    slices.push(RgbImage::from_raw(size, size, rgb).expect("sized above"));
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
        anyhow::ensure!(
            !slices.is_empty(),
            "data.volumes: no slice with a voxel above the background"
        );
        let describe = format!(
            "{} {} slices of {volumes} volumes ({} intensity, {} channels, {} px)",
            slices.len(),
            args.axis,
            args.intensity,
            args.channels,
            args.size
        );
        Ok(VolumeSlices { slices, describe })
    }
}

impl ImageSource for VolumeSlices {
    fn len(&self) -> usize {
        self.slices.len()
    }

    fn image(&self, index: usize, _seed: u64) -> Result<DynamicImage, ImageError> {
        Ok(DynamicImage::ImageRgb8(self.slices[index].clone()))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
