//! Training the ABMIL head on bags of slides with either survival loss, and predicting with it.
//! Mini-batches are groups of slides: each bag goes through the head on its own (bags differ
//! in size) and the batch loss is taken over the stacked outputs, so the Cox risk sets span
//! the batch. AdamW (burn's), seeded initial weights, shuffles and dropout.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::abmil::{Abmil, AbmilConfig};
use super::bags::BagSet;
use super::loss::SurvivalLoss;
use super::SurvivalError;

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
    let mut slides = Vec::with_capacity(samples.len());
    let mut outs = Vec::with_capacity(cfg.batch_size);
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        slides.clear();
        slides.extend(order.iter().map(|&k| samples[k]));
        let (mut sum, mut batches, mut seen) = (0.0, 0usize, 0usize);
        // One bag at a time on the device, read ahead from disk when the bags are on files: a
        // cohort's bags need fit neither in device nor in host memory. Batches of
        // `cfg.batch_size` slides in shuffled order (the last one may be smaller).
        set.stream::<B>(&slides, device, |i, bag, cov| {
            outs.push(model.forward(bag, cov).out);
            t.push(time[i]);
            e.push(event[i]);
            seen += 1;
            if outs.len() < cfg.batch_size && seen < slides.len() {
                return Ok(());
            }
            let loss = cfg
                .loss
                .batch_loss(Tensor::stack(std::mem::take(&mut outs), 0), &t, &e);
            t.clear();
            e.clear();
            if let Some(loss) = loss {
                sum += loss.clone().into_scalar().elem::<f64>();
                batches += 1;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(cfg.lr, model.clone(), grads);
            }
            Ok(())
        })?;
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
    let mut predictions = Vec::with_capacity(samples.len());
    set.stream::<B>(samples, device, |_, bag, cov| {
        let o = model.forward(bag, cov);
        let risk = host(loss.risk(o.out.clone().unsqueeze::<2>()))[0] as f64;
        predictions.push(Prediction {
            risk,
            out: host(o.out),
            attention: host(o.attention),
        });
        Ok(())
    })?;
    Ok(predictions)
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
