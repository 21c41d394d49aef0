//! Training the ABMIL head on bags of slides with either survival loss, and predicting with it.
//! Mini-batches are groups of slides: each bag goes through the head on its own (bags differ
//! in size) and the batch loss is taken over the stacked outputs, so the Cox risk sets span
//! the batch. AdamW (burn's), seeded initial weights, shuffles and dropout.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::abmil::{Abmil, AbmilConfig};
use super::loss::SurvivalLoss;
use super::SurvivalError;

/// Feature bags held on the host: bag `i` is `bags[i]`, row-major [tiles, dim].
#[derive(Debug, Clone, Default)]
pub struct BagSet {
    pub dim: usize,
    pub bags: Vec<Vec<f32>>,
    /// Per bag: the slide's covariates (all the same length; empty when there are none).
    pub covariates: Vec<Vec<f32>>,
}

impl BagSet {
    pub fn len(&self) -> usize {
        self.bags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bags.is_empty()
    }

    pub fn tiles(&self, i: usize) -> usize {
        self.bags[i].len() / self.dim.max(1)
    }

    pub fn n_covariates(&self) -> usize {
        self.covariates.first().map_or(0, Vec::len)
    }

    /// Every bag has tiles of the set's dimension and the same number of covariates.
    pub fn check(&self) -> Result<(), SurvivalError> {
        if self.is_empty() {
            return Err(SurvivalError::Empty);
        }
        let c = self.n_covariates();
        for (i, b) in self.bags.iter().enumerate() {
            if b.is_empty() {
                return Err(SurvivalError::EmptyBag(i));
            }
            if self.dim == 0 || b.len() % self.dim != 0 {
                return Err(SurvivalError::Dimension {
                    index: i,
                    expected: self.dim,
                    found: b.len(),
                });
            }
            if self.covariates.get(i).map_or(0, Vec::len) != c {
                return Err(SurvivalError::Config(format!(
                    "bag {i} has {} covariates, bag 0 has {c}",
                    self.covariates.get(i).map_or(0, Vec::len)
                )));
            }
        }
        Ok(())
    }

    /// Bag `i` and its covariates as tensors on `device`.
    fn upload<B: Backend>(
        &self,
        i: usize,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Option<Tensor<B, 1>>) {
        let bag = Tensor::from_data(
            TensorData::new(self.bags[i].clone(), [self.tiles(i), self.dim]),
            device,
        );
        let cov = self
            .covariates
            .get(i)
            .filter(|c| !c.is_empty())
            .map(|c| Tensor::from_data(TensorData::new(c.clone(), [c.len()]), device));
        (bag, cov)
    }
}

/// How a head is trained (recorded in head.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalTrainConfig {
    pub loss: SurvivalLoss,
    pub hidden: usize,
    pub attention: usize,
    pub dropout: f64,
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Slides per optimizer step (and per Cox risk set).
    pub batch_size: usize,
    pub seed: u64,
}

impl SurvivalTrainConfig {
    pub fn abmil(&self, d_input: usize, covariates: usize) -> AbmilConfig {
        AbmilConfig::new(d_input, self.loss.outputs())
            .with_hidden(self.hidden)
            .with_attention(self.attention)
            .with_dropout(self.dropout)
            .with_covariates(covariates)
            .with_seed(self.seed)
    }
}

/// What one finished epoch reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainProgress {
    pub epoch: usize,
    /// Mean batch loss of the epoch (NaN when no batch had a loss).
    pub loss: f64,
}

/// Train a head on the slides `samples` of `set` (`time` and `event` are indexed like `set`).
/// `on_epoch` is called after every epoch.
pub fn train<B: AutodiffBackend>(
    set: &BagSet,
    time: &[f64],
    event: &[bool],
    samples: &[usize],
    cfg: &SurvivalTrainConfig,
    device: &B::Device,
    mut on_epoch: impl FnMut(TrainProgress),
) -> Result<Abmil<B>, SurvivalError> {
    set.check()?;
    super::check_samples(set.len(), time, event)?;
    if samples.is_empty() {
        return Err(SurvivalError::Empty);
    }
    if cfg.batch_size == 0 || cfg.hidden == 0 || cfg.attention == 0 || cfg.loss.outputs() == 0 {
        return Err(SurvivalError::Config(
            "batch size, hidden and attention widths and outputs must be positive".into(),
        ));
    }
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(SurvivalError::Config(format!(
            "dropout {} is not within [0, 1)",
            cfg.dropout
        )));
    }
    // Weights and shuffles come from host generators seeded by `cfg.seed`; dropout masks from
    // the backend's generator, seeded here (one run at a time per process is reproducible).
    B::seed(device, cfg.seed);
    let mut model: Abmil<B> = cfg.abmil(set.dim, set.n_covariates()).init(device);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init::<B, Abmil<B>>();
    let mut order: Vec<usize> = (0..samples.len()).collect();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (mut t, mut e) = (
        Vec::with_capacity(cfg.batch_size),
        Vec::with_capacity(cfg.batch_size),
    );
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut batches) = (0.0, 0usize);
        for batch in order.chunks(cfg.batch_size) {
            t.clear();
            e.clear();
            let mut outs = Vec::with_capacity(batch.len());
            for &k in batch {
                // One bag at a time on the device: a cohort's bags need not fit in its memory.
                let (bag, cov) = set.upload::<B>(samples[k], device);
                outs.push(model.forward(bag, cov).out);
                t.push(time[samples[k]]);
                e.push(event[samples[k]]);
            }
            let Some(loss) = cfg.loss.batch_loss(Tensor::stack(outs, 0), &t, &e) else {
                continue;
            };
            sum += loss.clone().into_scalar().elem::<f64>();
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.lr, model, grads);
        }
        on_epoch(TrainProgress {
            epoch: epoch + 1,
            loss: if batches == 0 {
                f64::NAN
            } else {
                sum / batches as f64
            },
        });
    }
    Ok(model)
}

/// One slide's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Higher = earlier event expected.
    pub risk: f64,
    /// The head's outputs (the Cox risk, or the hazard logits).
    pub out: Vec<f32>,
    /// Attention of each tile, in bag order (sums to 1).
    pub attention: Vec<f32>,
}

/// Predict slides `samples` of `set` with a trained head (no dropout: pass the inference
/// module, e.g. `model.valid()`).
pub fn predict<B: Backend>(
    model: &Abmil<B>,
    loss: &SurvivalLoss,
    set: &BagSet,
    samples: &[usize],
    device: &B::Device,
) -> Result<Vec<Prediction>, SurvivalError> {
    set.check()?;
    if set.dim != model.d_input() {
        return Err(SurvivalError::Dimension {
            index: 0,
            expected: model.d_input(),
            found: set.dim,
        });
    }
    if set.n_covariates() != model.covariates() {
        return Err(SurvivalError::Config(format!(
            "the head takes {} covariates, the slides have {}",
            model.covariates(),
            set.n_covariates()
        )));
    }
    let host = |t: Tensor<B, 1>| {
        t.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 data")
    };
    Ok(samples
        .iter()
        .map(|&i| {
            let (bag, cov) = set.upload::<B>(i, device);
            let o = model.forward(bag, cov);
            let risk = host(loss.risk(o.out.clone().unsqueeze::<2>()))[0] as f64;
            Prediction {
                risk,
                out: host(o.out),
                attention: host(o.attention),
            }
        })
        .collect())
}

/// Train on `samples` and return the inference module (convenience for cross-validation).
pub fn train_valid<B: AutodiffBackend>(
    set: &BagSet,
    time: &[f64],
    event: &[bool],
    samples: &[usize],
    cfg: &SurvivalTrainConfig,
    device: &B::Device,
    on_epoch: impl FnMut(TrainProgress),
) -> Result<Abmil<B::InnerBackend>, SurvivalError> {
    Ok(train::<B>(set, time, event, samples, cfg, device, on_epoch)?.valid())
}

#[cfg(test)]
mod tests;
