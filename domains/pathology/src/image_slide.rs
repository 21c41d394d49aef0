//! The fallback backend for plain images OpenSlide does not take (strip TIFFs, PNG, JPEG): one
//! level, decoded once into memory (these are photographs and small crops, not gigapixel scans;
//! a real scan should be a tiled pyramidal TIFF that OpenSlide reads).

use std::path::{Path, PathBuf};

use image::{ImageFormat, ImageReader, RgbImage};

use crate::error::Result;
use crate::mpp::{self, Mpp, MppSource};
use crate::slide::{LevelInfo, SlideInfo};

/// A plain image as a one-level slide.
#[derive(Debug)]
pub struct ImageSlide {
    path: PathBuf,
    format: String,
    pixels: RgbImage,
    mpp: Option<Mpp>,
    mpp_note: Option<String>,
}

impl ImageSlide {
    /// Decodes `path` (TIFF, PNG or JPEG; any bit depth is converted to 8-bit RGB).
    pub fn open(path: &Path) -> std::result::Result<ImageSlide, image::ImageError> {
        let reader = ImageReader::open(path)
            .map_err(image::ImageError::IoError)?
            .with_guessed_format()
            .map_err(image::ImageError::IoError)?;
        let format = reader.format();
        let pixels = reader.decode()?.to_rgb8();
        let (mpp, mpp_note) = if format == Some(ImageFormat::Tiff) {
            match mpp::read_tiff_resolution(path).map(mpp::mpp_from_resolution) {
                Some(Ok((x, y))) => {
                    let source = MppSource::TiffResolution;
                    (Some(Mpp { x, y, source }), None)
                }
                Some(Err(why)) => (None, Some(why)),
                None => (None, Some("the TIFF has no resolution tags".into())),
            }
        } else {
            let note = "PNG/JPEG files carry no microscope pixel size this reader trusts";
            (None, Some(note.to_string()))
        };
        Ok(ImageSlide {
            path: path.to_path_buf(),
            format: format
                .map(|f| format!("{f:?}").to_lowercase())
                .unwrap_or_else(|| "image".into()),
            pixels,
            mpp,
            mpp_note,
        })
    }

    /// Builds a slide from pixels already in memory (tests, generated images).
    pub fn from_rgb(path: &Path, pixels: RgbImage, mpp: Option<Mpp>) -> ImageSlide {
        ImageSlide {
            path: path.to_path_buf(),
            format: "memory".into(),
            pixels,
            mpp,
            mpp_note: Some("an in-memory image".into()),
        }
    }

    /// The image format ("tiff", "png", "jpeg").
    pub fn format(&self) -> &str {
        &self.format
    }

    /// (width, height) in pixels.
    pub fn dimensions(&self) -> (u64, u64) {
        (
            u64::from(self.pixels.width()),
            u64::from(self.pixels.height()),
        )
    }

    /// Its description as a one-level slide.
    pub fn info(&self) -> SlideInfo {
        let (width, height) = self.dimensions();
        let (mpp, mpp_note) = self.mpp();
        SlideInfo {
            backend: "image".into(),
            format: self.format().to_string(),
            openslide_version: None,
            width,
            height,
            levels: vec![LevelInfo {
                width,
                height,
                downsample: 1.0,
            }],
            mpp,
            mpp_note,
            objective_power: None,
            bounds: None,
            associated_images: Vec::new(),
        }
    }

    /// The pixel size from the TIFF resolution tags, and why there is none otherwise.
    pub fn mpp(&self) -> (Option<Mpp>, Option<String>) {
        (self.mpp, self.mpp_note.clone())
    }

    /// `w` x `h` pixels at (`x0`, `y0`) (>= 0); what lies past the right/bottom edge is white.
    pub fn read(&self, x0: u64, y0: u64, w: u32, h: u32) -> Result<RgbImage> {
        let (iw, ih) = self.dimensions();
        let mut out = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
        if x0 >= iw || y0 >= ih {
            return Ok(out);
        }
        let cw = (iw - x0).min(u64::from(w)) as u32;
        let ch = (ih - y0).min(u64::from(h)) as u32;
        let view = image::imageops::crop_imm(&self.pixels, x0 as u32, y0 as u32, cw, ch).to_image();
        image::imageops::replace(&mut out, &view, 0, 0);
        Ok(out)
    }

    /// The path it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_edge_are_white() {
        let img = RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
        let s = ImageSlide::from_rgb(Path::new("mem"), img, None);
        let r = s.read(2, 1, 4, 4).unwrap();
        assert_eq!(r.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(r.get_pixel(1, 1).0, [10, 20, 30]);
        assert_eq!(r.get_pixel(2, 0).0, [255, 255, 255]);
        assert_eq!(r.get_pixel(0, 2).0, [255, 255, 255]);
        assert_eq!(s.read(9, 9, 2, 2).unwrap().get_pixel(1, 1).0, [255; 3]);
    }
}
