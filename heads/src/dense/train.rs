//! Training a dense head on frozen features: AdamW (decoupled weight decay on convolution
//! weights only, not on biases or BatchNorm), shuffled mini-batches, a fixed number of epochs,
//! one [`EpochLog`] per epoch with the validation metric (mIoU or R²) when a validation set is
//! given. Seeded: the same seed gives the same head on the same device.

use std::time::Instant;

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use dinoadapt_core::train::optimizer::{AdamW, AdamWConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::error::{DenseError, DenseResult};
use super::head::{DenseHead, DenseHeadConfig};
use super::loss::{regression_loss, segmentation_loss, LossTargets, RegressionLoss};
use super::set::{DenseSet, DenseTargets};
use crate::regression_metrics::RegressionMetrics;
use crate::segmentation_metrics::{SegmentationConfusion, SegmentationMetrics};

#[derive(Config, Debug, PartialEq)]
pub struct DenseTrainConfig {
    #[config(default = 30)]
    pub epochs: usize,
    #[config(default = 8)]
    pub batch_size: usize,
    #[config(default = 1e-3)]
    pub lr: f64,
    #[config(default = 1e-4)]
    pub weight_decay: f64,
    #[config(default = 0)]
    pub seed: u64,
    /// Weight of the soft Dice term added to the cross-entropy (segmentation).
    #[config(default = 0.0)]
    pub dice_weight: f64,
    /// Per-pixel error of height regression.
    #[config(default = "RegressionLoss::L1")]
    pub regression_loss: RegressionLoss,
    /// Block side (pixels) of the block-R² reported for heights.
    #[config(default = 50)]
    pub block: usize,
}

/// One epoch of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Loss on the validation set (None without one).
    pub val_loss: Option<f64>,
    /// mIoU (segment) or per-pixel R² (canopy) on the validation set.
    pub val_metric: Option<f64>,
    pub seconds: f64,
}

/// Metrics of a head on a labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DenseMetrics {
    Segmentation(SegmentationMetrics),
    Regression(RegressionMetrics),
}

impl DenseMetrics {
    /// mIoU or per-pixel R² (NaN when undefined): the number the epoch logs follow.
    pub fn headline(&self) -> f64 {
        match self {
            DenseMetrics::Segmentation(m) => m.miou,
            DenseMetrics::Regression(m) => m.r2.unwrap_or(f64::NAN),
        }
    }
}

/// What [`evaluate`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub loss: f64,
    pub metrics: DenseMetrics,
    /// Heights: prediction minus target at every pixel with a target (metres); empty for
    /// classes.
    pub residuals: Vec<f32>,
}

/// A trained head and its history.
pub struct Trained<B: Backend> {
    pub head: DenseHead<B>,
    pub log: Vec<EpochLog>,
}

fn check_set(config: &DenseHeadConfig, set: &DenseSet, which: &'static str) -> DenseResult<()> {
    config.check_input([set.n, set.layers, set.tokens(), set.dim], set.grid)?;
    match (&set.targets, config) {
        (DenseTargets::Classes { classes, .. }, DenseHeadConfig::Linear(c)) => {
            if *classes != c.classes {
                return Err(DenseError::Shape(format!(
                    "the {which} targets have {classes} classes, the head {}",
                    c.classes
                )));
            }
        }
        (DenseTargets::Heights(_), DenseHeadConfig::Dpt(_)) => {}
        _ => {
            return Err(DenseError::Shape(format!(
                "the {which} targets do not fit a {:?} head",
                config.task()
            )))
        }
    }
    if set.valid_pixels() == 0 {
        return Err(DenseError::NoTargets(which));
    }
    Ok(())
}

fn batch_loss<B: Backend>(
    head: &DenseHead<B>,
    config: &DenseHeadConfig,
    set: &DenseSet,
    idx: &[usize],
    cfg: &DenseTrainConfig,
    device: &B::Device,
) -> (burn::tensor::Tensor<B, 1>, burn::tensor::Tensor<B, 4>) {
    let tokens = set.tokens_of::<B>(idx, device);
    let y = head.forward(config, tokens, set.grid, set.size);
    let loss = match LossTargets::<B>::new(&set.targets_of(idx), idx.len(), set.size, device) {
        LossTargets::Classes { one_hot, valid } => {
            segmentation_loss(y.clone(), one_hot, valid, cfg.dice_weight)
        }
        LossTargets::Heights { values, valid } => {
            regression_loss(y.clone(), values, valid, cfg.regression_loss)
        }
    };
    (loss, y)
}

fn scalar<B: Backend>(t: burn::tensor::Tensor<B, 1>) -> DenseResult<f64> {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .map_err(|e| DenseError::Readback(format!("{e:?}")))
        .map(|v| v[0])
}

static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Train a head of `config` on `train` (validated on `val` after every epoch); `on_epoch` sees
/// each epoch's log as it ends. Returns the head on the inner (non-autodiff) backend.
pub fn train<B: AutodiffBackend>(
    config: &DenseHeadConfig,
    train: &DenseSet,
    val: Option<&DenseSet>,
    cfg: &DenseTrainConfig,
    device: &B::Device,
    mut on_epoch: impl FnMut(&EpochLog),
) -> DenseResult<Trained<B::InnerBackend>> {
    config.check()?;
    check_set(config, train, "training")?;
    if let Some(v) = val {
        check_set(config, v, "validation")?;
    }
    if cfg.batch_size == 0 {
        return Err(DenseError::Config("batch size 0".into()));
    }
    // The backend's random generator is process-wide: seeding and drawing the initial weights
    // under one lock keeps a run reproducible when other threads also seed or draw (parallel
    // tests, several trainings in one process).
    let mut head = {
        let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, cfg.seed);
        let head = config.init::<B>(device)?;
        // Parameters are drawn lazily, on first use: draw them all now, under the lock.
        let _ = head.to_named();
        head
    };
    let mut optim = AdamW::<B::InnerBackend>::new(AdamWConfig::default());
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..train.n).collect();
    let mut log = Vec::with_capacity(cfg.epochs);
    let (lr, wd) = (cfg.lr, cfg.weight_decay);
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        order.shuffle(&mut rng);
        let (mut sum, mut batches) = (0f64, 0usize);
        for idx in order.chunks(cfg.batch_size) {
            let (loss, _) = batch_loss(&head, config, train, idx, cfg, device);
            sum += scalar(loss.clone().inner())?;
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(head, grads, |name: &str| {
                let decays = name.ends_with(".weight") && !name.contains("bn.");
                Some((lr, if decays { wd } else { 0.0 }))
            });
        }
        let (val_loss, val_metric) = match val {
            Some(v) => {
                let e = evaluate(&head.valid(), config, v, cfg, device)?;
                (Some(e.loss), Some(e.metrics.headline()))
            }
            None => (None, None),
        };
        let entry = EpochLog {
            epoch,
            train_loss: sum / batches.max(1) as f64,
            val_loss,
            val_metric,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_epoch(&entry);
        log.push(entry);
    }
    Ok(Trained {
        head: head.valid(),
        log,
    })
}

/// Predictions of `head` on every sample of `set`: [n, channels, height, width] (class
/// probabilities or metres), computed `batch_size` samples at a time.
pub fn predict_set<B: Backend>(
    head: &DenseHead<B>,
    config: &DenseHeadConfig,
    set: &DenseSet,
    batch_size: usize,
    device: &B::Device,
) -> DenseResult<Vec<f32>> {
    config.check_input([set.n, set.layers, set.tokens(), set.dim], set.grid)?;
    let all: Vec<usize> = (0..set.n).collect();
    let mut out = Vec::with_capacity(set.n * config.output_channels() * set.size.0 * set.size.1);
    for idx in all.chunks(batch_size.max(1)) {
        let y = head.predict(config, set.tokens_of::<B>(idx, device), set.grid, set.size);
        out.extend(
            y.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| DenseError::Readback(format!("{e:?}")))?,
        );
    }
    Ok(out)
}

/// Loss and metrics of `head` on `set` (block-R² with `cfg.block`).
pub fn evaluate<B: Backend>(
    head: &DenseHead<B>,
    config: &DenseHeadConfig,
    set: &DenseSet,
    cfg: &DenseTrainConfig,
    device: &B::Device,
) -> DenseResult<Evaluation> {
    check_set(config, set, "evaluation")?;
    let all: Vec<usize> = (0..set.n).collect();
    let plane = set.size.0 * set.size.1;
    let (mut loss_sum, mut batches) = (0f64, 0usize);
    let mut confusion = match &set.targets {
        DenseTargets::Classes {
            classes,
            ignore_index,
            ..
        } => Some(SegmentationConfusion::new(*classes, *ignore_index)),
        DenseTargets::Heights(_) => None,
    };
    let mut heights = Vec::new();
    for idx in all.chunks(cfg.batch_size.max(1)) {
        let (loss, y) = batch_loss(head, config, set, idx, cfg, device);
        loss_sum += scalar(loss)? * idx.len() as f64;
        batches += idx.len();
        let y = y
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| DenseError::Readback(format!("{e:?}")))?;
        match (&mut confusion, set.targets_of(idx)) {
            (Some(conf), DenseTargets::Classes { values, .. }) => {
                let c = conf.classes;
                let pred: Vec<u32> = y
                    .chunks(c * plane)
                    .flat_map(|s| {
                        (0..plane).map(move |p| {
                            (0..c)
                                .fold((0u32, f32::NEG_INFINITY), |b, k| {
                                    let v = s[k * plane + p];
                                    if v > b.1 {
                                        (k as u32, v)
                                    } else {
                                        b
                                    }
                                })
                                .0
                        })
                    })
                    .collect();
                conf.add(&values, &pred)?;
            }
            _ => heights.extend(y),
        }
    }
    let residuals = match &set.targets {
        DenseTargets::Heights(t) if confusion.is_none() => heights
            .iter()
            .zip(t)
            .filter(|(_, t)| t.is_finite())
            .map(|(p, t)| p - t)
            .collect(),
        _ => Vec::new(),
    };
    let metrics = match (confusion, &set.targets) {
        (Some(c), _) => DenseMetrics::Segmentation(c.metrics()),
        (None, DenseTargets::Heights(t)) => {
            DenseMetrics::Regression(RegressionMetrics::compute(&heights, t, set.size, cfg.block))
        }
        (None, DenseTargets::Classes { .. }) => unreachable!("classes have a confusion"),
    };
    Ok(Evaluation {
        loss: loss_sum / batches.max(1) as f64,
        metrics,
        residuals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense::linear::LinearHeadConfig;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn the_same_seed_gives_the_same_head_even_with_concurrent_trainings() {
        // 8 samples, 2 layers, a 2 x 2 grid of dim 4, 4 x 4 px; classes from a feature sign.
        let (n, layers, dim) = (8, 2, 4);
        let features: Vec<f32> = (0..n * layers * 5 * dim)
            .map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let values = (0..n * 16).map(|i| (i % 3 == 0) as u32).collect();
        let set = DenseSet::new(
            features,
            (n, layers, dim),
            (2, 2),
            (4, 4),
            DenseTargets::Classes {
                values,
                classes: 2,
                ignore_index: 255,
            },
        )
        .unwrap();
        let config = DenseHeadConfig::Linear(LinearHeadConfig::new(dim, 2).with_layers(2));
        let cfg = DenseTrainConfig::new()
            .with_epochs(2)
            .with_batch_size(3)
            .with_seed(7);
        let run = || {
            let t = train::<Autodiff<Flex>>(&config, &set, None, &cfg, &Default::default(), |_| {})
                .unwrap();
            (t.head.to_named(), t.log)
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(run);
            let b = s.spawn(run);
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a.0, b.0);
        assert_eq!(a.1.len(), 2);
        let other = train::<Autodiff<Flex>>(
            &config,
            &set,
            None,
            &cfg.clone().with_seed(8),
            &Default::default(),
            |_| {},
        )
        .unwrap();
        assert_ne!(other.head.to_named(), a.0);
    }
}
