//! kNN accuracy of a backbone's class tokens on labelled image folders (`<root>/<class>/...`),
//! the DINO-style check that pre-training improves the features.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use dinoadapt_core::eval::knn_accuracy;
use dinoadapt_core::vit::VisionTransformer;
use dinoadapt_datasets::{collect_images, open_image, ImageError};
use image::imageops::{self, FilterType};
use rayon::prelude::*;

/// Images with class labels: one sub-folder per class, classes in name order.
#[derive(Debug, Clone)]
pub struct LabelledImages {
    pub paths: Vec<PathBuf>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

impl LabelledImages {
    /// Read `root/<class>/**` keeping at most `max_per_class` images per class (in name order).
    pub fn open(root: &Path, max_per_class: Option<usize>) -> Result<Self, ImageError> {
        let io = |source| ImageError::Io {
            path: root.to_path_buf(),
            source,
        };
        let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(ImageError::Empty(vec![root.to_path_buf()]));
        }
        let mut out = LabelledImages {
            paths: Vec::new(),
            labels: Vec::new(),
            classes: Vec::new(),
        };
        for (label, dir) in classes.iter().enumerate() {
            let mut imgs = collect_images(std::slice::from_ref(dir))?;
            imgs.truncate(max_per_class.unwrap_or(usize::MAX));
            out.labels.extend(std::iter::repeat_n(label, imgs.len()));
            out.paths.extend(imgs);
            out.classes
                .push(dir.file_name().unwrap_or_default().to_string_lossy().into());
        }
        Ok(out)
    }
}

/// Resize to `size` x `size` (bicubic), normalise, CHW: RGB with three means, gray (ITU-R 601
/// luma) with one.
fn pixels(path: &Path, size: u32, mean: &[f32], std: &[f32]) -> Result<Vec<f32>, ImageError> {
    let img = open_image(path)?.to_rgb32f();
    let img = imageops::resize(&img, size, size, FilterType::CatmullRom);
    let n = (size * size) as usize;
    let channels = mean.len();
    let mut out = vec![0f32; channels * n];
    for (i, p) in img.pixels().enumerate() {
        if channels == 1 {
            let g = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
            out[i] = (g - mean[0]) / std[0];
        } else {
            for c in 0..3 {
                out[c * n + i] = (p[c] - mean[c]) / std[c];
            }
        }
    }
    Ok(out)
}

/// Class tokens [N, D] of `images` (row-major), in batches of `batch`.
pub fn class_tokens<B: Backend>(
    model: &VisionTransformer<B>,
    paths: &[PathBuf],
    size: u32,
    mean: &[f32],
    std: &[f32],
    batch: usize,
) -> Result<Vec<f32>, ImageError> {
    let channels = mean.len();
    let device = model.device();
    let s = size as usize;
    let mut out = Vec::with_capacity(paths.len() * model.config.embed_dim);
    for chunk in paths.chunks(batch.max(1)) {
        let data = chunk
            .par_iter()
            .map(|p| pixels(p, size, mean, std))
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(data, [chunk.len(), channels, s, s]),
            &device,
        );
        let cls = model.forward_features(x, None, &[]).cls();
        out.extend(
            cls.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32"),
        );
    }
    Ok(out)
}

/// The kNN evaluation of a run's monitor section.
#[derive(Debug, Clone)]
pub struct KnnMonitor {
    pub train: LabelledImages,
    pub val: LabelledImages,
    pub size: u32,
    /// Per input channel: three (RGB images) or one (the images as gray).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub k: usize,
    pub temperature: f64,
}

impl KnnMonitor {
    /// Top-1 kNN accuracy of `model`'s class tokens: val images classified by train images.
    pub fn accuracy<B: Backend>(&self, model: &VisionTransformer<B>) -> Result<f64, ImageError> {
        let f = |set: &LabelledImages| {
            class_tokens(model, &set.paths, self.size, &self.mean, &self.std, 64)
        };
        let (train, val) = (f(&self.train)?, f(&self.val)?);
        Ok(knn_accuracy(
            &train,
            &self.train.labels,
            &val,
            &self.val.labels,
            model.config.embed_dim,
            self.train.classes.len(),
            self.k,
            self.temperature,
        ))
    }
}
