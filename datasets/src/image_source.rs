//! Where pre-training images come from: files (the default), or anything a domain samples
//! online — random tissue tiles of whole-slide images, chips of rasters — behind one trait, so
//! `pretrain` knows no domain.

use std::path::PathBuf;

use image::DynamicImage;

use crate::bands::MultiBandImage;
use crate::images::{collect_images, open_image, ImageError};

/// A pool of `len()` images; `image(i, seed)` is image `i` drawn with `seed` (a source that
/// samples online uses the seed; files ignore it). Both must be deterministic.
pub trait ImageSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn image(&self, index: usize, seed: u64) -> Result<DynamicImage, ImageError>;
    /// Image `index` as bands on [0, 1], for models with other than three input channels: by
    /// default the R, G and B planes of [`image`](Self::image); a source with more bands (a
    /// multispectral raster) gives them all.
    fn bands(&self, index: usize, seed: u64) -> Result<MultiBandImage, ImageError> {
        Ok(MultiBandImage::from_image(&self.image(index, seed)?))
    }
    /// One line for logs and run records.
    fn describe(&self) -> String;
}

/// Image files: paths, folders (recursive) and list files, as `embed` takes them.
pub struct ImageFiles {
    pub paths: Vec<PathBuf>,
}

impl ImageFiles {
    pub fn open(inputs: &[PathBuf]) -> Result<Self, ImageError> {
        Ok(ImageFiles {
            paths: collect_images(inputs)?,
        })
    }
}

impl ImageSource for ImageFiles {
    fn len(&self) -> usize {
        self.paths.len()
    }

    fn image(&self, index: usize, _seed: u64) -> Result<DynamicImage, ImageError> {
        open_image(&self.paths[index])
    }

    fn describe(&self) -> String {
        format!("{} image files", self.paths.len())
    }
}
