//! Random tissue tiles for pre-training, drawn online from a set of slides at one or several
//! pixel sizes, with H&E augmentation. Seeded: the same seed, slides and configuration give the
//! same tiles (positions and per-tile seeds are drawn in order; reading runs in parallel).

use std::sync::Arc;

use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::augment::HeAugment;
use crate::error::{PathologyError, Result};
use crate::resample::{read_resampled, Resample};
use crate::slide::Slide;
use crate::tissue::TissueMask;

/// One slide to sample from: its id (not its path), the slide and its tissue mask.
#[derive(Debug, Clone)]
pub struct SamplerSlide {
    pub id: String,
    pub slide: Arc<Slide>,
    pub mask: TissueMask,
}

/// What to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Tile side in pixels.
    pub size: u32,
    /// Pixel sizes in um; each tile picks one uniformly (e.g. [0.25, 0.5, 1.0]).
    pub mpps: Vec<f64>,
    /// A draw is retried (up to `max_tries`) while its tissue fraction is below this.
    pub min_tissue: f64,
    pub max_tries: usize,
    pub augment: HeAugment,
    pub resample: Resample,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            size: 224,
            mpps: vec![0.5],
            min_tissue: 0.5,
            max_tries: 10,
            augment: HeAugment::default(),
            resample: Resample::Lanczos3,
        }
    }
}

/// A sampled, augmented tile and where it came from.
#[derive(Debug, Clone)]
pub struct SampledTile {
    pub slide_id: String,
    pub mpp: f64,
    /// Level-0 top-left and extent.
    pub rect0: [f64; 4],
    pub tissue_fraction: f64,
    pub image: RgbImage,
}

struct Entry {
    slide: SamplerSlide,
    /// Mask pixel indices that are tissue.
    tissue: Vec<u32>,
}

/// Draws random tissue tiles.
pub struct RandomTileSampler {
    entries: Vec<Entry>,
    cfg: SamplerConfig,
    rng: StdRng,
}

impl RandomTileSampler {
    /// A sampler over `slides` (those without any tissue are left out), seeded with `seed`.
    pub fn new(slides: Vec<SamplerSlide>, cfg: SamplerConfig, seed: u64) -> Result<Self> {
        let here = std::path::Path::new("sampler");
        if cfg.size == 0 || cfg.mpps.is_empty() || cfg.mpps.iter().any(|m| m.is_nan() || *m <= 0.0)
        {
            return Err(PathologyError::invalid(
                here,
                "random tiles need a positive size and at least one positive mpp",
            ));
        }
        let mut entries = Vec::new();
        for s in slides {
            s.slide.mpp()?;
            let tissue: Vec<u32> = s
                .mask
                .mask
                .pixels()
                .enumerate()
                .filter(|(_, p)| p.0[0] > 0)
                .map(|(i, _)| i as u32)
                .collect();
            if tissue.is_empty() {
                tracing::warn!("slide {}: no tissue in its mask; not sampled", s.id);
                continue;
            }
            entries.push(Entry { slide: s, tissue });
        }
        if entries.is_empty() {
            return Err(PathologyError::invalid(
                here,
                "none of the slides has tissue in its mask; check the tissue detection (QC PNG)",
            ));
        }
        Ok(RandomTileSampler {
            entries,
            cfg,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// Draws a slide, an mpp and a position centred on a tissue pixel (kept inside the slide).
    fn draw(
        entries: &[Entry],
        cfg: &SamplerConfig,
        rng: &mut StdRng,
    ) -> Result<(usize, f64, [f64; 4], f64)> {
        let e = rng.random_range(0..entries.len());
        let target = cfg.mpps[rng.random_range(0..cfg.mpps.len())];
        let entry = &entries[e];
        let mpp = entry.slide.slide.mpp()?;
        let (w0, h0) = entry.slide.slide.dimensions();
        let mask = &entry.slide.mask;
        let mw = mask.mask.width();
        let um = f64::from(cfg.size) * target;
        let (tw, th) = (um / mpp.x, um / mpp.y);
        let mut best = (f64::NEG_INFINITY, [0.0; 4]);
        for _ in 0..cfg.max_tries.max(1) {
            let i = entry.tissue[rng.random_range(0..entry.tissue.len())];
            let (mx, my) = (f64::from(i % mw), f64::from(i / mw));
            let cx = (mx + rng.random::<f64>()) * mask.downsample;
            let cy = (my + rng.random::<f64>()) * mask.downsample;
            let x = (cx - tw / 2.0)
                .clamp(0.0, (w0 as f64 - tw).max(0.0))
                .floor();
            let y = (cy - th / 2.0)
                .clamp(0.0, (h0 as f64 - th).max(0.0))
                .floor();
            let rect = [x, y, tw, th];
            let f = mask.fraction_in(rect);
            if f > best.0 {
                best = (f, rect);
            }
            if f >= cfg.min_tissue {
                break;
            }
        }
        Ok((e, target, best.1, best.0))
    }

    /// One random augmented tile determined by `seed` alone (not by earlier draws): what a
    /// pre-training pool needs to give the same tile for the same (seed, step, slot).
    pub fn sample_one(&self, seed: u64) -> Result<SampledTile> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (e, mpp, rect, f) = Self::draw(&self.entries, &self.cfg, &mut rng)?;
        let s = &self.entries[e].slide;
        let (level, _) = s.slide.level_for_mpp(mpp)?;
        let cfg = &self.cfg;
        let img = read_resampled(&s.slide, level, rect, cfg.size, cfg.size, cfg.resample)?;
        let image = cfg.augment.apply(&img, &mut rng);
        Ok(SampledTile {
            slide_id: s.id.clone(),
            mpp,
            rect0: rect,
            tissue_fraction: f,
            image,
        })
    }

    /// `n` random augmented tiles.
    pub fn sample(&mut self, n: usize) -> Result<Vec<SampledTile>> {
        let mut draws = Vec::with_capacity(n);
        for _ in 0..n {
            let (e, mpp, rect, f) = Self::draw(&self.entries, &self.cfg, &mut self.rng)?;
            draws.push((e, mpp, rect, f, self.rng.random::<u64>()));
        }
        let cfg = &self.cfg;
        let entries = &self.entries;
        draws
            .into_par_iter()
            .map(|(e, mpp, rect, f, seed)| {
                let s = &entries[e].slide;
                let (level, _) = s.slide.level_for_mpp(mpp)?;
                let img = read_resampled(&s.slide, level, rect, cfg.size, cfg.size, cfg.resample)?;
                let image = cfg.augment.apply(&img, &mut StdRng::seed_from_u64(seed));
                Ok(SampledTile {
                    slide_id: s.id.clone(),
                    mpp,
                    rect0: rect,
                    tissue_fraction: f,
                    image,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tissue::{detect_tissue, TissueConfig};

    fn slide_with_tissue() -> SamplerSlide {
        let img = RgbImage::from_fn(300, 200, |x, y| {
            image::Rgb(if x > 150 && y > 50 {
                [210, 110, 170]
            } else {
                [250, 250, 250]
            })
        });
        let slide = Arc::new(Slide::from_image("mem", img, Some(1.0)));
        let mask = detect_tissue(
            &slide,
            &TissueConfig {
                mask_mpp: 4.0,
                ..TissueConfig::default()
            },
        )
        .unwrap()
        .mask;
        SamplerSlide {
            id: "s1".into(),
            slide,
            mask,
        }
    }

    #[test]
    fn same_seed_same_tiles_and_tiles_lie_on_tissue() {
        let cfg = SamplerConfig {
            size: 16,
            mpps: vec![1.0, 2.0],
            ..SamplerConfig::default()
        };
        let mut a = RandomTileSampler::new(vec![slide_with_tissue()], cfg.clone(), 3).unwrap();
        let mut b = RandomTileSampler::new(vec![slide_with_tissue()], cfg, 3).unwrap();
        let ta = a.sample(6).unwrap();
        let tb = b.sample(6).unwrap();
        for (x, y) in ta.iter().zip(&tb) {
            assert_eq!(x.rect0, y.rect0);
            assert_eq!(x.image, y.image);
            assert!(x.tissue_fraction >= 0.5, "{x:?}");
            assert_eq!(x.image.dimensions(), (16, 16));
            assert!(x.rect0[0] + x.rect0[2] <= 300.0 && x.rect0[1] + x.rect0[3] <= 200.0);
        }
        assert!(ta.iter().any(|t| t.mpp == 2.0) && ta.iter().any(|t| t.mpp == 1.0));
    }

    #[test]
    fn slides_without_tissue_are_an_error() {
        let img = RgbImage::from_pixel(64, 64, image::Rgb([255; 3]));
        let slide = Arc::new(Slide::from_image("mem", img, Some(1.0)));
        let mask = TissueMask {
            mask: image::GrayImage::new(16, 16),
            downsample: 4.0,
        };
        let s = SamplerSlide {
            id: "blank".into(),
            slide,
            mask,
        };
        assert!(RandomTileSampler::new(vec![s], SamplerConfig::default(), 0).is_err());
    }
}
