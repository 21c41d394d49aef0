//! The recipe's `data.slides` as the pre-training image pool: random tissue tiles drawn online
//! (at one of `data.slide_mpp`, with H&E augmentation), each determined by its draw seed so a
//! resumed run sees the same tiles.

use std::sync::Arc;

use dinoadapt_datasets::{ImageError, ImageSource};
use dinoadapt_pathology::sampler::{RandomTileSampler, SamplerConfig, SamplerSlide};
use dinoadapt_pathology::tissue::{detect_tissue, TissueConfig};
use dinoadapt_pathology::{OpenOptions, Slide};
use dinoadapt_pretrain::Recipe;
use image::DynamicImage;

use super::batch::collect_slides;

pub struct SlideTiles {
    sampler: RandomTileSampler,
    len: usize,
    slides: usize,
    mpps: Vec<f64>,
}

impl SlideTiles {
    /// Open the recipe's slides and find their tissue.
    pub fn from_recipe(recipe: &Recipe) -> anyhow::Result<SlideTiles> {
        let d = &recipe.data;
        let mut slides = Vec::new();
        for entry in collect_slides(&d.slides)? {
            let slide = Slide::open_with(
                &entry.path,
                &OpenOptions {
                    mpp_override: entry.mpp,
                },
            )?;
            let mask = detect_tissue(&slide, &TissueConfig::default())?.mask;
            slides.push(SamplerSlide {
                id: entry.slide_id,
                slide: Arc::new(slide),
                mask,
            });
        }
        let mpps = if d.slide_mpp.is_empty() {
            vec![0.5]
        } else {
            d.slide_mpp.clone()
        };
        let n = slides.len();
        let cfg = SamplerConfig {
            size: d.slide_tile_size.unwrap_or(224),
            mpps: mpps.clone(),
            ..SamplerConfig::default()
        };
        Ok(SlideTiles {
            sampler: RandomTileSampler::new(slides, cfg, recipe.train.seed)?,
            len: d.slide_tiles_per_epoch.unwrap_or(10_000).max(1),
            slides: n,
            mpps,
        })
    }
}

impl ImageSource for SlideTiles {
    fn len(&self) -> usize {
        self.len
    }

    fn image(&self, index: usize, seed: u64) -> Result<DynamicImage, ImageError> {
        let tile = self
            .sampler
            .sample_one(seed ^ (index as u64).rotate_left(32))
            .map_err(|e| ImageError::Decode {
                path: format!("tile {index} of the recipe's slides").into(),
                reason: e.to_string(),
            })?;
        Ok(DynamicImage::ImageRgb8(tile.image))
    }

    fn describe(&self) -> String {
        format!(
            "random tissue tiles of {} slides at {:?} µm/px ({} per epoch)",
            self.slides, self.mpps, self.len
        )
    }
}
