//! The data of a run: a pool of images sampled in a seeded order, turned into multi-crop
//! batches with iBOT masks. Everything an iteration draws depends only on (seed, iteration), so
//! a resumed run sees exactly the data the uninterrupted run would have seen.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use dinoadapt_core::objective::masking::{collate_masks, BatchMasks, MaskingGenerator, PyRandom};
use dinoadapt_core::train::CropBatch;
use dinoadapt_datasets::multicrop::{multi_crop, MultiCropConfig};
use dinoadapt_datasets::{multi_crop_bands, ImageError, ImageFiles, ImageSource};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::recipe::Recipe;

pub use dinoadapt_core::seeds::mix;

/// The images of a run, visited epoch by epoch in a seeded random order.
pub struct ImagePool {
    pub source: Arc<dyn ImageSource>,
    seed: u64,
    order: Mutex<Option<(usize, Vec<usize>)>>,
}

impl ImagePool {
    /// Image files (paths, folders, list files).
    pub fn open(inputs: &[PathBuf], seed: u64) -> Result<Self, ImageError> {
        Ok(Self::new(Arc::new(ImageFiles::open(inputs)?), seed))
    }

    /// Any image source (e.g. tiles sampled online from slides).
    pub fn new(source: Arc<dyn ImageSource>, seed: u64) -> Self {
        ImagePool {
            source,
            seed,
            order: Mutex::new(None),
        }
    }

    pub fn len(&self) -> usize {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// The image at position `pos` of the endless stream of shuffled epochs.
    fn at(&self, pos: usize) -> usize {
        let n = self.len();
        let epoch = pos / n;
        let mut order = self.order.lock().expect("order lock");
        if order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut StdRng::seed_from_u64(mix(self.seed, 1, epoch as u64)));
            *order = Some((epoch, perm));
        }
        order.as_ref().expect("just set").1[pos % n]
    }

    /// Indices of the `batch` images of iteration `step`.
    pub fn batch_indices(&self, step: usize, batch: usize) -> Vec<usize> {
        (step * batch..(step + 1) * batch)
            .map(|p| self.at(p))
            .collect()
    }

    /// Epochs of the pool seen after `steps` iterations of `batch` images.
    pub fn epochs_after(&self, steps: usize, batch: usize) -> f64 {
        (steps * batch) as f64 / self.len().max(1) as f64
    }
}

/// How images become a batch: the crops and the masks.
#[derive(Debug, Clone)]
pub struct BatchRecipe {
    pub crops: MultiCropConfig,
    pub masking: MaskingGenerator,
    pub mask_probability: f64,
    pub mask_ratio: (f32, f32),
    pub batch_size: usize,
    pub seed: u64,
    /// Input channels of the model: three take RGB images, others the sources' bands.
    pub channels: usize,
    /// The part of every batch this process's replica holds (the whole batch on one device).
    pub shard: Shard,
}

/// One data-parallel replica's share of every batch: rank r of `world` holds images
/// [r b / world, (r + 1) b / world) of the global batch of b images, with the crops, draws and
/// iBOT masks those images have in the global batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { rank: 0, world: 1 }
    }
}

impl Shard {
    /// The slots of a global batch of `batch` images this shard holds.
    pub fn slots(&self, batch: usize) -> Range<usize> {
        let per = batch / self.world.max(1);
        self.rank * per..(self.rank + 1) * per
    }
}

impl BatchRecipe {
    /// The batches of `r` for a model of `patch_size` and `channels` input channels.
    pub fn from_recipe(r: &Recipe, patch_size: usize, channels: usize) -> Self {
        let c = &r.crops;
        BatchRecipe {
            crops: MultiCropConfig {
                global_size: c.global_size,
                global_scale: (c.global_scale[0], c.global_scale[1]),
                local_size: c.local_size,
                local_scale: (c.local_scale[0], c.local_scale[1]),
                local_crops: c.local_crops,
                mean: c.mean.clone(),
                std: c.std.clone(),
            },
            masking: MaskingGenerator::dinov2(c.global_size as usize / patch_size),
            mask_probability: r.masking.probability,
            mask_ratio: (r.masking.ratio[0], r.masking.ratio[1]),
            batch_size: r.data.batch_size,
            seed: r.train.seed,
            channels,
            shard: Shard::default(),
        }
    }

    /// The host data of iteration `step`'s batch (this shard's images of it): images read,
    /// cropped and masked.
    pub fn host_batch(&self, pool: &ImagePool, step: usize) -> Result<HostBatch, ImageError> {
        let indices = pool.batch_indices(step, self.batch_size);
        let slots = self.shard.slots(self.batch_size);
        let crops = indices[slots.clone()]
            .par_iter()
            .zip(slots.clone())
            .map(|(&idx, i)| {
                // The draw seed: the same (seed, step, slot) always gives the same image.
                let draw = mix(self.seed, 1 << 32 | step as u64, i as u64);
                let crop_seed = mix(self.seed, 2 + step as u64, i as u64);
                if self.channels == 3 {
                    let img = pool.source.image(idx, draw)?;
                    return Ok(multi_crop(&img, &self.crops, crop_seed));
                }
                let img = pool
                    .source
                    .bands(idx, draw)?
                    .with_channels(self.channels)
                    .map_err(|reason| ImageError::Decode {
                        path: format!("image {idx} of {}", pool.source.describe()).into(),
                        reason,
                    })?;
                Ok(multi_crop_bands(&img, &self.crops, crop_seed))
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        let n = crops.len();
        // Crop-major: crop j of every image, then crop j + 1.
        let global: Vec<f32> = (0..2)
            .flat_map(|j| crops.iter().flat_map(move |c| c.global[j].iter().copied()))
            .collect();
        let nl = self.crops.local_crops;
        let local = (nl > 0).then(|| {
            (0..nl)
                .flat_map(|j| crops.iter().flat_map(move |c| c.local[j].iter().copied()))
                .collect()
        });
        let mut rng = PyRandom::seed(mix(self.seed, 3, step as u64));
        // The global batch's masks, and of them the rows of this shard's global crops.
        let all = self.batch_size;
        let masks = collate_masks(
            &mut rng,
            &self.masking,
            2 * all,
            self.mask_probability,
            self.mask_ratio,
        );
        let masks = if n == all {
            masks
        } else {
            let rows: Vec<usize> = (0..2)
                .flat_map(|c| slots.clone().map(move |i| c * all + i))
                .collect();
            masks.select_rows(&rows)
        };
        Ok(HostBatch {
            images: n,
            channels: self.channels,
            global_size: self.crops.global_size as usize,
            local_size: self.crops.local_size as usize,
            local_crops: nl,
            global,
            local,
            masks,
        })
    }

    /// The batch of iteration `step` on `device`.
    pub fn batch<B: Backend>(
        &self,
        pool: &ImagePool,
        step: usize,
        device: &B::Device,
    ) -> Result<CropBatch<B>, ImageError> {
        Ok(self.host_batch(pool, step)?.upload(device))
    }
}

/// A batch on the host, crop-major as [`CropBatch`] lays it out.
pub struct HostBatch {
    images: usize,
    channels: usize,
    global_size: usize,
    local_size: usize,
    local_crops: usize,
    global: Vec<f32>,
    local: Option<Vec<f32>>,
    masks: BatchMasks,
}

impl HostBatch {
    pub fn upload<B: Backend>(self, device: &B::Device) -> CropBatch<B> {
        let (n, g, l, c) = (
            self.images,
            self.global_size,
            self.local_size,
            self.channels,
        );
        let local = self.local.map(|data| {
            Tensor::from_data(
                TensorData::new(data, [self.local_crops * n, c, l, l]),
                device,
            )
        });
        CropBatch {
            global: Tensor::from_data(TensorData::new(self.global, [2 * n, c, g, g]), device),
            local,
            masks: self.masks,
        }
    }
}

/// The batches of iterations `steps`, made one ahead on a background thread: reading, cropping
/// and masking the next batch overlaps the current iteration, as the DataLoader workers of the
/// official code do. What a batch holds depends only on (seed, iteration), so prefetching
/// changes nothing in a run. Dropping it stops the thread after the batch it is making.
pub struct Prefetch {
    receive: Option<Receiver<(usize, Result<HostBatch, ImageError>)>>,
    worker: Option<JoinHandle<()>>,
}

impl Prefetch {
    pub fn new(recipe: BatchRecipe, pool: Arc<ImagePool>, steps: Range<usize>) -> Prefetch {
        let (send, receive) = sync_channel(1);
        let worker = std::thread::spawn(move || {
            for step in steps {
                let batch = recipe.host_batch(&pool, step);
                if send.send((step, batch)).is_err() {
                    break;
                }
            }
        });
        Prefetch {
            receive: Some(receive),
            worker: Some(worker),
        }
    }

    /// The batch of iteration `step` (iterations come in order).
    pub fn next(&mut self, step: usize) -> Result<HostBatch, ImageError> {
        let (made, batch) = self
            .receive
            .as_ref()
            .and_then(|r| r.recv().ok())
            .expect("the batch thread makes every iteration's batch");
        assert_eq!(made, step, "batches are taken in iteration order");
        batch
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.receive.take();
        if let Some(w) = self.worker.take() {
            w.join().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_covers_each_epoch_once_and_depends_only_on_the_seed() {
        let pool = |seed| {
            let files = ImageFiles {
                paths: (0..10).map(|i| PathBuf::from(format!("{i}.png"))).collect(),
            };
            ImagePool::new(Arc::new(files), seed)
        };
        let a = pool(1);
        let mut epoch0: Vec<usize> = (0..5).flat_map(|s| a.batch_indices(s, 2)).collect();
        let first = epoch0.clone();
        epoch0.sort();
        assert_eq!(epoch0, (0..10).collect::<Vec<_>>());
        // Asking out of order (as a resumed run does) gives the same indices.
        let b = pool(1);
        assert_eq!(b.batch_indices(7, 2), a.batch_indices(7, 2));
        assert_eq!(b.batch_indices(1, 2), first[2..4].to_vec());
        assert_ne!(pool(2).batch_indices(0, 10), a.batch_indices(0, 10));
        assert_eq!(a.epochs_after(5, 2), 1.0);
    }

    /// Noise images of 40 px; counts the images made.
    struct Noise(std::sync::atomic::AtomicUsize);

    impl ImageSource for Noise {
        fn len(&self) -> usize {
            12
        }
        fn image(&self, index: usize, seed: u64) -> Result<image::DynamicImage, ImageError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut rng = StdRng::seed_from_u64(mix(seed, index as u64, 0));
            let img = image::RgbImage::from_fn(40, 40, |_, _| {
                image::Rgb(rand::Rng::random::<[u8; 3]>(&mut rng))
            });
            Ok(image::DynamicImage::ImageRgb8(img))
        }
        fn describe(&self) -> String {
            "noise".into()
        }
    }

    fn recipe() -> BatchRecipe {
        BatchRecipe {
            crops: MultiCropConfig {
                global_size: 16,
                local_size: 8,
                local_crops: 2,
                ..MultiCropConfig::default()
            },
            masking: MaskingGenerator::dinov2(4),
            mask_probability: 0.5,
            mask_ratio: (0.1, 0.5),
            batch_size: 3,
            seed: 5,
            channels: 3,
            shard: Shard::default(),
        }
    }

    #[test]
    fn a_shard_holds_its_images_of_the_global_batch_with_their_crops_and_masks() {
        let pool = ImagePool::new(Arc::new(Noise(Default::default())), 5);
        let whole = BatchRecipe {
            batch_size: 4,
            mask_probability: 0.75,
            ..recipe()
        };
        let all = whole.host_batch(&pool, 3).unwrap();
        let crop = 3 * 16 * 16;
        for rank in 0..2 {
            let part = BatchRecipe {
                shard: Shard { rank, world: 2 },
                ..whole.clone()
            }
            .host_batch(&pool, 3)
            .unwrap();
            assert_eq!(part.images, 2);
            for c in 0..2 {
                for i in 0..2 {
                    let (row, global_row) = (c * 2 + i, c * 4 + rank * 2 + i);
                    assert_eq!(
                        part.global[row * crop..(row + 1) * crop],
                        all.global[global_row * crop..(global_row + 1) * crop],
                        "rank {rank}, crop {c}, image {i}"
                    );
                    assert_eq!(part.masks.masks[row], all.masks.masks[global_row]);
                }
            }
        }
    }

    #[test]
    fn prefetched_batches_are_the_batches_of_their_iterations() {
        let source = Arc::new(Noise(Default::default()));
        let pool = Arc::new(ImagePool::new(source.clone(), 5));
        let mut prefetch = Prefetch::new(recipe(), pool.clone(), 4..7);
        for step in 4..7 {
            let ahead = prefetch.next(step).unwrap();
            let direct = recipe().host_batch(&pool, step).unwrap();
            assert_eq!(ahead.global, direct.global, "iteration {step}");
            assert_eq!(ahead.local, direct.local);
            assert_eq!(ahead.masks.masks, direct.masks.masks);
            assert_eq!(ahead.global.len(), 2 * 3 * 3 * 16 * 16);
        }
        drop(prefetch);

        // Dropped early, the thread stops after at most the batch it is making and the one it
        // holds: it does not run through the remaining iterations.
        let source = Arc::new(Noise(Default::default()));
        let pool = Arc::new(ImagePool::new(source.clone(), 5));
        let mut prefetch = Prefetch::new(recipe(), pool, 0..1000);
        prefetch.next(0).unwrap();
        drop(prefetch);
        let made = source.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(made <= 3 * 3, "{made} images made for 1 batch taken");
    }
}
