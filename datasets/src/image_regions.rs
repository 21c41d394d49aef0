//! Image files and preprocessed pixel tensors as [`RegionSource`]s: what `embed` feeds the
//! embedding engine. An image is one region (its whole pixel grid); one that cannot be read or
//! preprocesses to another size than the batch is a [`SkippedRegion`] saying why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::HostTensor;
use dinoadapt_core::vit::InputChannels;
use rayon::prelude::*;

use crate::images::open_image;
use crate::regions::{Region, RegionBatch, RegionSource, SkippedRegion};
use crate::transforms::Preprocess;

/// Image files, each preprocessed (resize, crop, normalise) to one input size.
pub struct ImageRegions {
    paths: Vec<PathBuf>,
    preprocess: Preprocess,
    size: (usize, usize),
    next: usize,
    /// For a one-channel model: the images as gray (ITU-R 601 luma), normalised with this
    /// (mean, std).
    gray: Option<(f32, f32)>,
}

impl ImageRegions {
    /// `size` is the (height, width) every image must preprocess to (the crop, or the first
    /// image's size when the preprocessing does not crop).
    pub fn new(paths: Vec<PathBuf>, preprocess: Preprocess, size: (usize, usize)) -> Self {
        ImageRegions {
            paths,
            preprocess,
            size,
            next: 0,
            gray: None,
        }
    }

    /// The regions a model with the channel record `channels` takes: for a one-channel model
    /// (`model.in_chans = 1` of a pre-training run), the images as gray normalised with the
    /// record's mean and std, as the run fed them; otherwise RGB with the preprocessing's.
    pub fn with_input_channels(mut self, channels: Option<&InputChannels>) -> Self {
        self.gray = channels
            .filter(|c| c.mean.len() == 1 && c.std.len() == 1)
            .map(|c| (c.mean[0], c.std[0]));
        self
    }
}

enum Read {
    Ok(Region, Vec<f32>),
    Skipped(SkippedRegion),
}

impl ImageRegions {
    fn read(&self, index: usize) -> Read {
        let p = &self.paths[index];
        let mut skipped = SkippedRegion {
            source: p.display().to_string(),
            index,
            width: 0,
            height: 0,
            input_width: 0,
            input_height: 0,
            error: String::new(),
        };
        let img = match open_image(p) {
            Ok(img) => img,
            Err(e) => {
                skipped.error = e.to_string();
                return Read::Skipped(skipped);
            }
        };
        let (x, (h, w)) = match self.gray {
            None => self.preprocess.apply(&img),
            Some((mean, std)) => {
                let raw = Preprocess {
                    mean: [0.0; 3],
                    std: [1.0; 3],
                    ..self.preprocess.clone()
                };
                let (rgb, hw) = raw.apply(&img);
                let n = (hw.0 * hw.1) as usize;
                let gray = (0..n)
                    .map(|i| {
                        let g = 0.299 * rgb[i] + 0.587 * rgb[n + i] + 0.114 * rgb[2 * n + i];
                        (g - mean) / std
                    })
                    .collect();
                (gray, hw)
            }
        };
        let (width, height) = (img.width() as usize, img.height() as usize);
        if (h as usize, w as usize) != self.size {
            skipped.error = format!(
                "{}: preprocesses to {h}x{w}, the batch is {}x{}: give --crop-size so every \
                 image has one size",
                p.display(),
                self.size.0,
                self.size.1
            );
            skipped.width = width;
            skipped.height = height;
            skipped.input_width = w as usize;
            skipped.input_height = h as usize;
            return Read::Skipped(skipped);
        }
        let region = Region {
            source: skipped.source,
            index,
            col: 0,
            row: 0,
            width,
            height,
            bounds: [0.0, 0.0, width as f64, height as f64],
            crs: "px".into(),
            valid_fraction: 1.0,
        };
        Read::Ok(region, x)
    }
}

impl RegionSource for ImageRegions {
    fn size(&self) -> (usize, usize) {
        self.size
    }

    fn max_regions(&self) -> usize {
        self.paths.len()
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<RegionBatch>, String> {
        let (start, end) = (self.next, (self.next + max).min(self.paths.len()));
        if start >= end {
            return Ok(None);
        }
        self.next = end;
        // Decode and preprocess the batch's images in parallel, keep their order.
        let read: Vec<Read> = (start..end).into_par_iter().map(|i| self.read(i)).collect();
        let (h, w) = self.size;
        let mut batch = RegionBatch {
            regions: Vec::with_capacity(end - start),
            pixels: Vec::with_capacity((end - start) * self.channels() * h * w),
            size: self.size,
            skipped: Vec::new(),
        };
        for r in read {
            match r {
                Read::Ok(region, x) => {
                    batch.regions.push(region);
                    batch.pixels.extend_from_slice(&x);
                }
                Read::Skipped(s) => {
                    tracing::warn!("skipping an input: {}", s.error);
                    batch.skipped.push(s);
                }
            }
        }
        Ok(Some(batch))
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([(
            "preprocessing".to_string(),
            serde_json::to_string(&self.preprocess).expect("preprocessing serialises"),
        )]);
        if let Some((mean, std)) = self.gray {
            m.insert(
                "channels".into(),
                format!("gray (ITU-R 601 luma), mean {mean}, std {std}"),
            );
        }
        m
    }

    fn unit(&self) -> &'static str {
        "images"
    }

    fn channels(&self) -> usize {
        if self.gray.is_some() {
            1
        } else {
            3
        }
    }
}

/// A safetensors file holding a preprocessed NCHW float32 tensor, fed to the backbone as it is.
pub struct TensorRegions {
    file: String,
    name: String,
    tensor: HostTensor,
    next: usize,
}

/// Why a pixel tensor cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PixelTensorError {
    #[error(transparent)]
    Read(#[from] dinoadapt_core::checkpoint::CheckpointError),
    #[error("{file}: no tensor `{name}`")]
    Missing { file: String, name: String },
    #[error("{file}: holds {count} tensors ({names:?}); name one with --pixels-key")]
    Ambiguous {
        file: String,
        count: usize,
        names: Vec<String>,
    },
    #[error("{file}: `{name}` has shape {shape:?}; expected (N, 3, H, W)")]
    Shape {
        file: String,
        name: String,
        shape: Vec<usize>,
    },
}

impl TensorRegions {
    /// The tensor `key` of `path` (or its only tensor).
    pub fn open(path: &Path, key: Option<&str>) -> Result<Self, PixelTensorError> {
        let file = path.display().to_string();
        let (tensors, _) = read_safetensors(path)?;
        let (name, tensor) = match key {
            Some(k) => tensors.into_iter().find(|(n, _)| n == k).ok_or_else(|| {
                PixelTensorError::Missing {
                    file: file.clone(),
                    name: k.into(),
                }
            })?,
            None if tensors.len() == 1 => tensors.into_iter().next().expect("one tensor"),
            None => {
                return Err(PixelTensorError::Ambiguous {
                    file,
                    count: tensors.len(),
                    names: tensors.iter().map(|(n, _)| n.clone()).collect(),
                })
            }
        };
        if tensor.shape.len() != 4 || tensor.shape[1] != 3 {
            return Err(PixelTensorError::Shape {
                file,
                name,
                shape: tensor.shape,
            });
        }
        Ok(TensorRegions {
            file,
            name,
            tensor,
            next: 0,
        })
    }
}

impl RegionSource for TensorRegions {
    fn size(&self) -> (usize, usize) {
        (self.tensor.shape[2], self.tensor.shape[3])
    }

    fn max_regions(&self) -> usize {
        self.tensor.shape[0]
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<RegionBatch>, String> {
        let (h, w) = self.size();
        let (start, end) = (self.next, (self.next + max).min(self.max_regions()));
        if start >= end {
            return Ok(None);
        }
        self.next = end;
        let per = 3 * h * w;
        let regions = (start..end)
            .map(|i| Region {
                source: format!("{}#{}[{i}]", self.file, self.name),
                index: i,
                col: 0,
                row: 0,
                width: w,
                height: h,
                bounds: [0.0, 0.0, w as f64, h as f64],
                crs: "px".into(),
                valid_fraction: 1.0,
            })
            .collect();
        Ok(Some(RegionBatch {
            regions,
            pixels: self.tensor.data[start * per..end * per].to_vec(),
            size: (h, w),
            skipped: Vec::new(),
        }))
    }

    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([("preprocessing".to_string(), "none (--pixels)".to_string())])
    }

    fn unit(&self) -> &'static str {
        "images"
    }
}
