//! Images of any number of bands (channels): a grayscale CT slice (1), RGB + near-infrared (4),
//! a multispectral chip (up to 13), as f32 planes on the [0, 1] scale of 8-bit images. Image
//! sources give them to pre-training runs of models with C != 3 input channels, and
//! [`multi_crop_bands`] makes the DINOv2 crops of them: the same random resized crops and
//! flips as for RGB, brightness and contrast jitter in place of the colour jitter (hue,
//! saturation and grayscale have no meaning beyond RGB), Gaussian blur, no solarisation.

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageBuffer, Luma};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::multicrop::{resized_crop_box, Crops, MultiCropConfig};

type Plane = ImageBuffer<Luma<f32>, Vec<f32>>;

/// `bands` planes of `width` x `height` pixels, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiBandImage {
    pub width: u32,
    pub height: u32,
    pub bands: Vec<Vec<f32>>,
}

impl MultiBandImage {
    /// The R, G and B planes of an image, on [0, 1].
    pub fn from_image(img: &DynamicImage) -> MultiBandImage {
        let rgb = img.to_rgb32f();
        let (width, height) = rgb.dimensions();
        let n = (width * height) as usize;
        let mut bands: Vec<Vec<f32>> = (0..3).map(|_| Vec::with_capacity(n)).collect();
        for p in rgb.pixels() {
            for (b, v) in bands.iter_mut().zip(p.0) {
                b.push(v);
            }
        }
        MultiBandImage {
            width,
            height,
            bands,
        }
    }

    /// The image with `channels` bands: as it is when it has them; a gray image from RGB
    /// (ITU-R 601 luma, exact for gray images stored as RGB); one band repeated to three.
    pub fn with_channels(self, channels: usize) -> Result<MultiBandImage, String> {
        let have = self.bands.len();
        match (have, channels) {
            (a, b) if a == b => Ok(self),
            (3, 1) => {
                let b = &self.bands;
                let gray = (0..b[0].len())
                    .map(|i| 0.299 * b[0][i] + 0.587 * b[1][i] + 0.114 * b[2][i])
                    .collect();
                Ok(MultiBandImage {
                    bands: vec![gray],
                    ..self
                })
            }
            (1, 3) => Ok(MultiBandImage {
                bands: vec![self.bands[0].clone(); 3],
                ..self
            }),
            _ => Err(format!(
                "the images have {have} bands and the model takes {channels} channels"
            )),
        }
    }
}

fn plane(width: u32, height: u32, data: &[f32]) -> Plane {
    Plane::from_raw(width, height, data.to_vec()).expect("a plane of the image's size")
}

/// One crop of every band: resized crop, flip (p 0.5), brightness and contrast jitter (p 0.8),
/// blur (p `blur`, sigma in [0.1, 2]), normalised per band.
fn crop_bands(
    rng: &mut StdRng,
    img: &MultiBandImage,
    size: u32,
    scale: (f64, f64),
    blur: f64,
    cfg: &MultiCropConfig,
) -> Vec<f32> {
    let (x, y, w, h) = resized_crop_box(rng, img.width, img.height, scale);
    let flip = rng.random_bool(0.5);
    let jitter = rng.random_bool(0.8).then(|| {
        (
            rng.random_range(0.6f32..=1.4),
            rng.random_range(0.6f32..=1.4),
        )
    });
    let sigma = rng
        .random_bool(blur)
        .then(|| rng.random_range(0.1f32..=2.0));
    let mut planes: Vec<Plane> = img
        .bands
        .iter()
        .map(|b| {
            let view = imageops::crop_imm(&plane(img.width, img.height, b), x, y, w, h).to_image();
            let mut c = imageops::resize(&view, size, size, FilterType::CatmullRom);
            if flip {
                imageops::flip_horizontal_in_place(&mut c);
            }
            c
        })
        .collect();
    if let Some((brightness, contrast)) = jitter {
        let n = (size * size) as usize * planes.len();
        let mean = planes.iter().flat_map(|p| p.iter()).sum::<f32>() * brightness / n as f32;
        for p in &mut planes {
            p.iter_mut().for_each(|v| {
                let b = (*v * brightness).clamp(0.0, 1.0);
                *v = (contrast * b + (1.0 - contrast) * mean).clamp(0.0, 1.0);
            });
        }
    }
    if let Some(sigma) = sigma {
        planes = planes.iter().map(|p| imageops::blur(p, sigma)).collect();
    }
    let mut out = Vec::with_capacity(planes.len() * (size * size) as usize);
    for (c, p) in planes.iter().enumerate() {
        let (m, s) = (cfg.mean[c], cfg.std[c]);
        out.extend(p.iter().map(|v| (v - m) / s));
    }
    out
}

/// The DINOv2 crops of a multi-band image for `seed` (`cfg.mean` and `cfg.std` hold one value
/// per band).
pub fn multi_crop_bands(img: &MultiBandImage, cfg: &MultiCropConfig, seed: u64) -> Crops {
    assert_eq!(cfg.mean.len(), img.bands.len(), "one mean per band");
    let mut rng = StdRng::seed_from_u64(seed);
    let g = (cfg.global_size, cfg.global_scale);
    let global = vec![
        crop_bands(&mut rng, img, g.0, g.1, 1.0, cfg),
        crop_bands(&mut rng, img, g.0, g.1, 0.1, cfg),
    ];
    let local = (0..cfg.local_crops)
        .map(|_| crop_bands(&mut rng, img, cfg.local_size, cfg.local_scale, 0.5, cfg))
        .collect();
    Crops { global, local }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bands(n: usize) -> MultiBandImage {
        let (w, h) = (60u32, 40u32);
        MultiBandImage {
            width: w,
            height: h,
            bands: (0..n)
                .map(|b| {
                    (0..w * h)
                        .map(|i| ((i % w) as f32 / w as f32 + b as f32 * 0.1).min(1.0))
                        .collect()
                })
                .collect(),
        }
    }

    fn cfg(n: usize) -> MultiCropConfig {
        MultiCropConfig {
            global_size: 32,
            local_size: 16,
            local_crops: 3,
            mean: vec![0.5; n],
            std: vec![0.25; n],
            ..MultiCropConfig::default()
        }
    }

    #[test]
    fn any_band_count_gives_seeded_crops_of_every_band() {
        for n in [1, 4, 13] {
            let img = bands(n);
            let a = multi_crop_bands(&img, &cfg(n), 7);
            let b = multi_crop_bands(&img, &cfg(n), 7);
            assert_eq!(a.global, b.global);
            assert_eq!(a.global.len(), 2);
            assert_eq!(a.local.len(), 3);
            assert_eq!(a.global[0].len(), n * 32 * 32);
            assert_eq!(a.local[2].len(), n * 16 * 16);
            assert!(a.global[0].iter().all(|v| v.is_finite()));
            assert_ne!(a.global, multi_crop_bands(&img, &cfg(n), 8).global);
        }
    }

    #[test]
    fn channels_convert_between_gray_and_rgb_only() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(4, 3, |x, y| {
            image::Luma([(x * 40 + y * 10) as u8])
        }));
        let rgb = MultiBandImage::from_image(&gray);
        assert_eq!(rgb.bands.len(), 3);
        let one = rgb.clone().with_channels(1).unwrap();
        for (a, b) in one.bands[0].iter().zip(&rgb.bands[0]) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(one.clone().with_channels(3).unwrap().bands.len(), 3);
        assert!(bands(4).with_channels(3).is_err());
        assert!(rgb.with_channels(4).is_err());
    }
}
