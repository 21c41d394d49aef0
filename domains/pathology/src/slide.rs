//! A whole-slide image, whichever backend reads it: OpenSlide for scanner formats, a plain image
//! decoder for TIFF/PNG/JPEG files OpenSlide does not take. One API over both: metadata
//! ([`SlideInfo`], with nothing identifying in it), pyramid levels, the pixel size and region
//! reads in level-0 coordinates.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::dicom_wsi::DicomSlide;
use crate::error::{PathologyError, Result};
use crate::image_slide::ImageSlide;
use crate::mpp::{self, Mpp, MppSource, MPP_RANGE};
use crate::openslide_slide::{detect_vendor, openslide_version, OpenSlideSlide};

/// One pyramid level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelInfo {
    pub width: u64,
    pub height: u64,
    /// Level-0 pixels per pixel of this level.
    pub downsample: f64,
}

/// What a slide is, technically. Never holds label/macro pixels, barcodes, free-text
/// descriptions or any vendor property outside the technical whitelist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideInfo {
    /// "openslide" or "image".
    pub backend: String,
    /// OpenSlide's vendor ("aperio", "generic-tiff", "hamamatsu", ...) or the image format
    /// ("tiff", "png", "jpeg").
    pub format: String,
    /// The OpenSlide version that read it (for the OpenSlide backend).
    pub openslide_version: Option<String>,
    /// Level-0 width and height in pixels.
    pub width: u64,
    pub height: u64,
    pub levels: Vec<LevelInfo>,
    /// Level-0 microns per pixel and where they came from; None when unknown.
    pub mpp: Option<Mpp>,
    /// Why the file's own pixel size was not used (missing, or implausible like 72 dpi).
    pub mpp_note: Option<String>,
    pub objective_power: Option<f64>,
    /// Scanned area (x, y, width, height) in level-0 px, when the format records one.
    pub bounds: Option<[u64; 4]>,
    /// Names of associated images (label, macro, thumbnail): listed, never read.
    pub associated_images: Vec<String>,
}

impl SlideInfo {
    /// Level-0 microns per pixel, or the typed error telling the user to pass `--mpp`.
    pub fn require_mpp(&self, path: &Path) -> Result<Mpp> {
        self.mpp.ok_or_else(|| PathologyError::NoMpp {
            path: path.to_path_buf(),
            detail: self
                .mpp_note
                .clone()
                .unwrap_or_else(|| "no pixel size recorded".into()),
        })
    }
}

/// How to open a slide.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenOptions {
    /// Level-0 microns per pixel to use instead of the file's (`--mpp`); wins over the file.
    pub mpp_override: Option<f64>,
}

/// The reader behind a slide.
#[derive(Debug)]
pub enum Backend {
    OpenSlide(Box<OpenSlideSlide>),
    /// DICOM WSI read with dicom-rs (OpenSlide < 4 cannot open DICOM).
    Dicom(DicomSlide),
    Image(ImageSlide),
}

/// An open whole-slide image. `Send + Sync`: region reads may run in parallel.
#[derive(Debug)]
pub struct Slide {
    path: PathBuf,
    backend: Backend,
    info: SlideInfo,
}

/// Whether the file starts like a DICOM Part 10 file ("DICM" after the 128-byte preamble).
fn is_dicom(path: &Path) -> bool {
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..] == b"DICM"
}

impl Slide {
    /// Opens a slide with the file's own pixel size.
    pub fn open(path: &Path) -> Result<Slide> {
        Slide::open_with(path, &OpenOptions::default())
    }

    /// Opens a slide: OpenSlide when it recognises the file, else the plain image decoder.
    pub fn open_with(path: &Path, options: &OpenOptions) -> Result<Slide> {
        std::fs::metadata(path).map_err(|_| {
            let why = dinoadapt_core::io::why_unreachable(path);
            PathologyError::io(path, "cannot open the slide")(std::io::Error::other(why))
        })?;
        dinoadapt_core::io::refuse_special_file(path)
            .map_err(PathologyError::io(path, "cannot open the slide"))?;
        let (backend, mut info) = if let Some(vendor) = detect_vendor(path) {
            let s = OpenSlideSlide::open(path, &vendor)?;
            let (mpp, mpp_note) = s.mpp();
            let info = SlideInfo {
                backend: "openslide".into(),
                format: s.vendor().to_string(),
                openslide_version: Some(openslide_version()),
                width: s.levels()[0].width,
                height: s.levels()[0].height,
                levels: s.levels().to_vec(),
                mpp,
                mpp_note,
                objective_power: s.objective_power(),
                bounds: s.bounds(),
                associated_images: s.associated_image_names(),
            };
            (Backend::OpenSlide(Box::new(s)), info)
        } else if is_dicom(path) {
            let (s, info) = crate::dicom_wsi::open(path)?;
            (Backend::Dicom(s), info)
        } else {
            // Not a slide OpenSlide knows and not a decodable image (also: a truncated slide
            // whose directories are cut off, which OpenSlide then does not recognise).
            let s = ImageSlide::open(path).map_err(|e| PathologyError::Unrecognised {
                path: path.to_path_buf(),
                openslide: openslide_version(),
                reason: format!("as a plain image: {e}"),
            })?;
            let info = s.info();
            (Backend::Image(s), info)
        };
        if let Some(v) = options.mpp_override {
            if !mpp::plausible(v) {
                return Err(PathologyError::InvalidMpp {
                    path: path.to_path_buf(),
                    value: v,
                    min: MPP_RANGE.0,
                    max: MPP_RANGE.1,
                });
            }
            if let Some(file) = info.mpp {
                if (file.mean() - v).abs() > 0.05 * v {
                    tracing::warn!(
                        "{}: --mpp {v} overrides the file's {:.4} um/px ({:?})",
                        path.display(),
                        file.mean(),
                        file.source
                    );
                }
            }
            info.mpp = Some(Mpp {
                x: v,
                y: v,
                source: MppSource::Override,
            });
        }
        Ok(Slide {
            path: path.to_path_buf(),
            backend,
            info,
        })
    }

    /// Wraps an in-memory image as a one-level slide (tests, generated inputs).
    pub fn from_image(name: &str, pixels: RgbImage, mpp: Option<f64>) -> Slide {
        let mpp = mpp.map(|v| Mpp {
            x: v,
            y: v,
            source: MppSource::Override,
        });
        let s = ImageSlide::from_rgb(Path::new(name), pixels, mpp);
        Slide {
            path: PathBuf::from(name),
            info: s.info(),
            backend: Backend::Image(s),
        }
    }

    /// The path it was opened from (for messages; never put it in a region's `source`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Technical metadata.
    pub fn info(&self) -> &SlideInfo {
        &self.info
    }

    /// The backend reading it.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Level-0 (width, height).
    pub fn dimensions(&self) -> (u64, u64) {
        (self.info.width, self.info.height)
    }

    /// The pyramid levels, level 0 first.
    pub fn levels(&self) -> &[LevelInfo] {
        &self.info.levels
    }

    /// Level-0 microns per pixel, or a typed error asking for `--mpp`.
    pub fn mpp(&self) -> Result<Mpp> {
        self.info.require_mpp(&self.path)
    }

    /// The level to read for a pixel size of `target_mpp`: the coarsest level whose pixels are
    /// no larger than the target (within 1 %), so reads never upsample. Returns the level and,
    /// when even level 0 is coarser than the target, the upsampling factor (> 1).
    pub fn level_for_mpp(&self, target_mpp: f64) -> Result<(u32, Option<f64>)> {
        let mpp = self.mpp()?.mean();
        let mut best = 0;
        for (i, l) in self.levels().iter().enumerate() {
            if mpp * l.downsample <= target_mpp * 1.01 {
                best = i;
            }
        }
        let up = (mpp > target_mpp * 1.01).then_some(mpp / target_mpp);
        Ok((best as u32, up))
    }

    /// The level with the largest downsample that is still <= `downsample`.
    pub fn level_for_downsample(&self, downsample: f64) -> u32 {
        let mut best = 0;
        for (i, l) in self.levels().iter().enumerate() {
            if l.downsample <= downsample * 1.001 {
                best = i;
            }
        }
        best as u32
    }

    /// Reads `w` x `h` pixels of `level` whose top-left lies at level-0 (`x0`, `y0`), like
    /// `openslide_read_region`. Whatever lies outside the slide (also at negative coordinates)
    /// is white; transparent slide background is composited over white.
    pub fn read_region(&self, level: u32, x0: i64, y0: i64, w: u32, h: u32) -> Result<RgbImage> {
        let Some(l) = self.levels().get(level as usize) else {
            return Err(PathologyError::Read {
                path: self.path.clone(),
                level,
                x: x0,
                y: y0,
                width: w,
                height: h,
                message: format!("the slide has {} levels", self.levels().len()),
            });
        };
        // Columns/rows left of or above the slide are white; read the rest from 0.
        let skip = |v: i64, n: u32| -> (u32, u64) {
            if v >= 0 {
                (0, v as u64)
            } else {
                (
                    (((-v) as f64) / l.downsample).round().min(f64::from(n)) as u32,
                    0,
                )
            }
        };
        let (dx, rx) = skip(x0, w);
        let (dy, ry) = skip(y0, h);
        let (rw, rh) = (w - dx, h - dy);
        if dx == 0 && dy == 0 {
            return self.read_inside(level, rx, ry, w, h);
        }
        let mut out = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
        if rw > 0 && rh > 0 {
            let part = self.read_inside(level, rx, ry, rw, rh)?;
            image::imageops::replace(&mut out, &part, i64::from(dx), i64::from(dy));
        }
        Ok(out)
    }

    fn read_inside(&self, level: u32, x0: u64, y0: u64, w: u32, h: u32) -> Result<RgbImage> {
        match &self.backend {
            Backend::OpenSlide(s) => s.read(level, x0, y0, w, h),
            Backend::Dicom(s) => s.read(level, x0, y0, w, h),
            Backend::Image(s) => s.read(x0, y0, w, h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]))
    }

    #[test]
    fn negative_origins_read_white_then_pixels() {
        let s = Slide::from_image("mem", gradient(8, 8), Some(0.5));
        let r = s.read_region(0, -2, -1, 4, 3).unwrap();
        assert_eq!(r.get_pixel(0, 0).0, [255; 3]);
        assert_eq!(r.get_pixel(1, 2).0, [255; 3]);
        assert_eq!(r.get_pixel(2, 1).0, [0, 0, 7]);
        assert_eq!(r.get_pixel(3, 2).0, [1, 1, 7]);
        assert!(s.read_region(1, 0, 0, 1, 1).is_err());
    }

    #[test]
    fn level_choice_never_upsamples() {
        let mut s = Slide::from_image("mem", gradient(8, 8), Some(0.25));
        s.info.levels = vec![
            LevelInfo {
                width: 8,
                height: 8,
                downsample: 1.0,
            },
            LevelInfo {
                width: 4,
                height: 4,
                downsample: 2.0,
            },
            LevelInfo {
                width: 2,
                height: 2,
                downsample: 4.0,
            },
        ];
        assert_eq!(s.level_for_mpp(0.25).unwrap(), (0, None));
        assert_eq!(s.level_for_mpp(0.5).unwrap(), (1, None));
        assert_eq!(s.level_for_mpp(0.9).unwrap(), (1, None));
        assert_eq!(s.level_for_mpp(4.0).unwrap(), (2, None));
        let (l, up) = s.level_for_mpp(0.125).unwrap();
        assert_eq!(l, 0);
        assert!((up.unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(s.level_for_downsample(3.0), 1);
    }

    #[test]
    fn no_mpp_is_a_typed_error() {
        let s = Slide::from_image("mem.png", gradient(2, 2), None);
        let e = s.mpp().unwrap_err();
        assert!(matches!(e, PathologyError::NoMpp { .. }));
        assert!(e.to_string().contains("--mpp"));
    }
}
