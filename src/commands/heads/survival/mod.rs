//! `heads train|eval|predict --task survival`: gated-attention MIL (ABMIL) on slide feature bags
//! against a clinical table of times and events.
//!
//! Bags are what `dinoadapt pathology embed` writes (`features/{id}.safetensors` tensor `cls`
//! [N, D] with `tiles/{id}.parquet` giving each feature row's level-0 x, y) or CLAM / TRIDENT
//! `.h5` files (`features` [N, D], `coords` [N, 2]) in the folder or its `h5/`. The clinical
//! table is CSV or Parquet with one row per slide: slide id, time (any unit: it is kept as is,
//! and the bin edges in head.json are in it), event (1 = event, 0 = censored), optionally the
//! patient id (folds never split a patient) and numeric covariates.
//!
//! `train` runs k-fold cross-validation by patient (C-index of each held-out fold), then trains
//! the head on every slide and writes it with `folds.parquet`, `predictions.parquet` (out-of-fold
//! risks and risk groups), `km.png` (Kaplan–Meier of the low / high out-of-fold risk groups with
//! the log-rank p-value) and `attention/{slide}.parquet` (out-of-fold attention per tile).

mod bags;
mod clinical;
mod cohort;
mod folder;
mod report;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, ensure, Context};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use dinoadapt_core::checkpoint::NamedTensors;
use dinoadapt_core::train::named::snapshot;
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::write_parquet;
use dinoadapt_heads::survival::{
    concordance_index, patient_folds, predict as predict_bags, train_valid, Prediction,
    SurvivalLoss, SurvivalTrainConfig, TimeBins,
};
use indicatif::ProgressBar;
use polars::prelude::DataFrame;
use serde_json::json;

use super::{required, Common};
use crate::device::{on_device, BackendJob};
use clinical::CovariateScale;
use cohort::{load_cohort, Cohort};
use folder::{head_covariates, load_head, save_head, write_attention};
use report::{c_index_or_nan, km_and_logrank, mean_std, median_split, num, progress};

const TASK: &str = "survival";
/// Epochs when `--epochs` is not given (PORPOISE trains 20).
const DEFAULT_EPOCHS: usize = 20;

/// Where the cohort comes from (shared by train, eval and predict).
#[derive(Args, Debug, Clone)]
pub struct CohortArgs {
    /// survival: the bags, a `pathology embed` output folder (features/ + tiles/) or a folder of
    /// CLAM / TRIDENT .h5 files (`features`, `coords`).
    #[arg(long)]
    pub bags: Option<PathBuf>,
    /// survival: the clinical table, CSV or Parquet, one row per slide.
    #[arg(long)]
    pub clinical: Option<PathBuf>,
    /// survival: the clinical table's slide id column (the bag file names without extension).
    #[arg(long, default_value = "slide_id")]
    pub slide_col: String,
    /// survival: the time column (any unit; kept as is).
    #[arg(long, default_value = "time")]
    pub time_col: String,
    /// survival: the event column (1 = event observed, 0 = censored).
    #[arg(long, default_value = "event")]
    pub event_col: String,
    /// survival: the patient id column [default: patient_id if present, else the slide id].
    #[arg(long)]
    pub patient_col: Option<String>,
    /// survival: numeric covariate columns joined to the slide embedding (e.g. age,stage).
    #[arg(long, value_delimiter = ',')]
    pub covariates: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// Discrete-time NLL over quantile time bins (PORPOISE / MCAT).
    Nll,
    /// Cox negative partial log-likelihood (Breslow ties).
    Cox,
}

/// `heads train` flags of the survival task(s).
#[derive(Args, Debug)]
pub struct SurvivalTrainArgs {
    #[command(flatten)]
    pub cohort: CohortArgs,
    /// survival: the loss.
    #[arg(long, value_enum, default_value = "nll")]
    pub loss: LossKind,
    /// survival: NLL weight of the uncensored term (MCAT's alpha_surv).
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f64,
    /// survival: cross-validation folds (by patient).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// survival: width of the tile embedding (and of the attention branches).
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// survival: dropout while training.
    #[arg(long, default_value_t = 0.25)]
    pub dropout: f64,
    /// survival: slides per optimizer step (one Cox risk set).
    #[arg(long, default_value_t = 16)]
    pub batch_slides: usize,
}

/// `heads eval` flags of the survival task(s).
#[derive(Args, Debug)]
pub struct SurvivalEvalArgs {
    #[command(flatten)]
    pub cohort: CohortArgs,
}

/// `heads predict` flags of the survival task(s).
#[derive(Args, Debug)]
pub struct SurvivalPredictArgs {
    #[command(flatten)]
    pub cohort: CohortArgs,
}

// ---------------------------------------------------------------------------------------------
// Bags

struct TrainJob<'a> {
    cohort: &'a Cohort,
    time: &'a [f64],
    event: &'a [bool],
    folds: &'a [usize],
    k: usize,
    config: &'a SurvivalTrainConfig,
    bar: &'a ProgressBar,
}

struct TrainOutput {
    /// Out-of-fold predictions, one per slide.
    oof: Vec<Prediction>,
    c_index: Vec<f64>,
    /// The final head's parameters, on the host.
    weights: NamedTensors,
}

impl BackendJob for TrainJob<'_> {
    type Output = TrainOutput;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<TrainOutput> {
        let (set, cfg) = (&self.cohort.set, self.config);
        let n = set.len();
        let mut oof: Vec<Option<Prediction>> = vec![None; n];
        let mut c_index = Vec::with_capacity(self.k);
        let epochs = cfg.epochs;
        for f in 0..self.k {
            let (held, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| self.folds[i] == f);
            self.bar.set_message(format!("fold {}/{}", f + 1, self.k));
            let base = self.bar.position();
            let model = train_valid::<Autodiff<B>>(
                set,
                self.time,
                self.event,
                &train,
                cfg,
                &device,
                |p| {
                    self.bar.set_position(base + p.epoch as u64);
                },
            )?;
            self.bar.set_position(base + epochs as u64);
            let pred = predict_bags(&model, &cfg.loss, set, &held, &device)?;
            let risk: Vec<f64> = pred.iter().map(|p| p.risk).collect();
            let t: Vec<f64> = held.iter().map(|&i| self.time[i]).collect();
            let e: Vec<bool> = held.iter().map(|&i| self.event[i]).collect();
            c_index.push(c_index_or_nan(&t, &e, &risk, &format!("fold {f}"))?);
            for (i, p) in held.into_iter().zip(pred) {
                oof[i] = Some(p);
            }
        }
        self.bar.set_message("final head, all slides");
        let all: Vec<usize> = (0..n).collect();
        let base = self.bar.position();
        let model =
            train_valid::<Autodiff<B>>(set, self.time, self.event, &all, cfg, &device, |p| {
                self.bar.set_position(base + p.epoch as u64);
            })?;
        Ok(TrainOutput {
            oof: oof
                .into_iter()
                .map(|p| p.expect("every slide is in a fold"))
                .collect(),
            c_index,
            weights: snapshot(&model),
        })
    }
}

/// Defaults of the flags survival shares with the other tasks.
const DEFAULT_LR: f64 = 2e-4;
const DEFAULT_WEIGHT_DECAY: f64 = 1e-5;
const DEFAULT_BINS: usize = 4;

pub fn train(args: &SurvivalTrainArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let lr = common.lr.unwrap_or(DEFAULT_LR);
    let weight_decay = common.weight_decay.unwrap_or(DEFAULT_WEIGHT_DECAY);
    let n_bins = common.bins.unwrap_or(DEFAULT_BINS);
    let out = required(&common.out, "--out", TASK)?;
    ensure!(lr > 0.0, "--lr must be positive");
    ensure!(weight_decay >= 0.0, "--weight-decay must be 0 or more");
    ensure!(args.batch_slides > 0, "--batch-slides must be positive");
    ensure!(
        (0.0..1.0).contains(&args.dropout),
        "--dropout must be within [0, 1)"
    );
    ensure!(
        (0.0..=1.0).contains(&args.alpha),
        "--alpha must be within [0, 1]"
    );
    let bar = progress(common.quiet);
    let mut cohort = load_cohort(&args.cohort, true, &bar)?;
    let clin = cohort.clinical.as_ref().expect("train reads the table");
    let (time, event, patient) = (clin.time.clone(), clin.event.clone(), clin.patient.clone());
    ensure!(
        event.iter().any(|&e| e),
        "{}: no slide has an event; survival needs some",
        args.cohort.clinical.as_ref().expect("read").display()
    );
    let scale = CovariateScale::fit(&args.cohort.covariates, &clin.covariates);
    cohort.set.covariates = clin.covariates.iter().map(|r| scale.apply(r)).collect();
    let epochs = common.epochs.unwrap_or(DEFAULT_EPOCHS);
    let loss = match args.loss {
        LossKind::Cox => SurvivalLoss::Cox,
        LossKind::Nll => {
            // Bins from one row per patient (MCAT drops duplicate cases first).
            let mut seen = HashSet::new();
            let first: Vec<usize> = (0..patient.len())
                .filter(|&i| seen.insert(patient[i].as_str()))
                .collect();
            let t: Vec<f64> = first.iter().map(|&i| time[i]).collect();
            let e: Vec<bool> = first.iter().map(|&i| event[i]).collect();
            let bins = TimeBins::quantiles(&t, &e, n_bins).context("--bins")?;
            SurvivalLoss::Nll {
                bins,
                alpha: args.alpha,
            }
        }
    };
    let config = SurvivalTrainConfig {
        loss,
        hidden: args.hidden,
        attention: args.hidden,
        dropout: args.dropout,
        epochs,
        lr,
        weight_decay,
        batch_size: args.batch_slides,
        seed: common.seed,
    };
    let folds = patient_folds(&patient, &event, args.folds, common.seed)
        .with_context(|| format!("--folds {}", args.folds))?;
    bar.set_position(0);
    bar.set_length(((args.folds + 1) * epochs) as u64);
    let t0 = std::time::Instant::now();
    let result = on_device(
        common.device,
        TrainJob {
            cohort: &cohort,
            time: &time,
            event: &event,
            folds: &folds,
            k: args.folds,
            config: &config,
            bar: &bar,
        },
    )?;
    bar.finish_and_clear();

    // Out-of-fold tables and plots.
    let risk: Vec<f64> = result.oof.iter().map(|p| p.risk).collect();
    let high = median_split(&risk, &folds);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let lr = km_and_logrank(
        Some(&out.join("km.png")),
        &time,
        &event,
        &high,
        &format!("out-of-fold risk groups ({} folds)", args.folds),
    )?;
    let att_dir = out.join("attention");
    for ((id, p), coords) in cohort.ids.iter().zip(&result.oof).zip(&cohort.coords) {
        write_attention(&att_dir, id, &p.attention, coords)?;
    }
    let k = args.folds;
    let (mut fold_slides, mut fold_events) = (vec![0u64; k], vec![0u64; k]);
    let mut fold_patients = vec![HashSet::new(); k];
    for (i, &f) in folds.iter().enumerate() {
        fold_slides[f] += 1;
        fold_events[f] += event[i] as u64;
        fold_patients[f].insert(patient[i].as_str());
    }
    let mut folds_df = DataFrame::new(
        k,
        vec![
            col::<u32>("fold", (0..k as u32).collect()),
            col::<u64>("slides", fold_slides.clone()),
            col::<u64>(
                "patients",
                fold_patients.iter().map(|p| p.len() as u64).collect(),
            ),
            col::<u64>("events", fold_events.clone()),
            col::<f64>("c_index", result.c_index.clone()),
        ],
    )?;
    write_parquet(&out.join("folds.parquet"), &mut folds_df)?;
    let n = cohort.ids.len();
    let mut pred_df = DataFrame::new(
        n,
        vec![
            col::<String>("slide_id", cohort.ids.clone()),
            col::<String>("patient_id", patient.clone()),
            col::<f64>("time", time.clone()),
            col::<bool>("event", event.clone()),
            col::<u32>("fold", folds.iter().map(|&f| f as u32).collect()),
            col::<f64>("risk", risk.clone()),
            col::<String>(
                "risk_group",
                high.iter()
                    .map(|&h| if h == 1 { "high" } else { "low" }.to_string())
                    .collect(),
            ),
        ],
    )?;
    write_parquet(&out.join("predictions.parquet"), &mut pred_df)?;

    let (mean, std) = mean_std(&result.c_index);
    let summary = json!({
        "task": TASK,
        "loss": config.loss.name(),
        "slides": n,
        "patients": patient.iter().collect::<HashSet<_>>().len(),
        "events": event.iter().filter(|&&e| e).count(),
        "folds": (0..k).map(|f| json!({
            "fold": f,
            "slides": fold_slides[f],
            "patients": fold_patients[f].len(),
            "events": fold_events[f],
            "c_index": num(result.c_index[f]),
        })).collect::<Vec<_>>(),
        "c_index_mean": num(mean),
        "c_index_std": num(std),
        "logrank": lr.as_ref().map(|l| json!({
            "statistic": l.statistic, "p_value": l.p_value,
            "split": "median out-of-fold risk within each fold",
        })),
        "bin_edges": match &config.loss {
            SurvivalLoss::Nll { bins, .. } => Some(bins.edges.clone()),
            SurvivalLoss::Cox => None,
        },
        "seed": common.seed,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    save_head(
        out,
        &result.weights,
        cohort.set.dim,
        &config,
        &scale,
        summary.clone(),
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// eval / predict

struct PredictJob<'a> {
    head: &'a Path,
    cohort: &'a mut Cohort,
}

impl BackendJob for PredictJob<'_> {
    type Output = (Vec<Prediction>, SurvivalTrainConfig);

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
        let head = load_head::<B>(self.head, &device)?;
        let cohort = self.cohort;
        ensure!(
            cohort.set.dim == head.model.d_input(),
            "the bags have features of dimension {}, the head in {} takes {}: embed with the \
             model the head was trained on",
            cohort.set.dim,
            self.head.display(),
            head.model.d_input()
        );
        let names = &head.scale.names;
        cohort.set.covariates = match &cohort.clinical {
            Some(c) if !names.is_empty() => {
                c.covariates.iter().map(|r| head.scale.apply(r)).collect()
            }
            None if !names.is_empty() => bail!(
                "the head takes covariates {}: give --clinical with them (and --covariates)",
                names.join(",")
            ),
            _ => Vec::new(),
        };
        let all: Vec<usize> = (0..cohort.set.len()).collect();
        Ok((
            predict_bags(&head.model, &head.config.loss, &cohort.set, &all, &device)?,
            head.config,
        ))
    }
}

fn cohort_for_head(
    head: &Path,
    a: &CohortArgs,
    need_table: bool,
    quiet: bool,
) -> anyhow::Result<Cohort> {
    let mut a = a.clone();
    let names = head_covariates(head)?;
    if a.covariates.is_empty() {
        a.covariates = names.clone();
    }
    ensure!(
        a.covariates == names,
        "--covariates {} differ from the head's {}",
        a.covariates.join(","),
        names.join(",")
    );
    let bar = progress(quiet);
    let c = load_cohort(&a, need_table, &bar)?;
    bar.finish_and_clear();
    Ok(c)
}

/// The cohort of `a` (its clinical table required with `need_table`) through the head in
/// `head`: the cohort, each slide's prediction and the head's training settings.
fn predicted(
    head: &Path,
    a: &CohortArgs,
    need_table: bool,
    common: &Common,
) -> anyhow::Result<(Cohort, Vec<Prediction>, SurvivalTrainConfig)> {
    let mut cohort = cohort_for_head(head, a, need_table, common.quiet)?;
    let (pred, config) = on_device(
        common.device,
        PredictJob {
            head,
            cohort: &mut cohort,
        },
    )?;
    Ok((cohort, pred, config))
}

pub fn eval(head: &Path, args: &SurvivalEvalArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let (cohort, pred, config) = predicted(head, &args.cohort, true, common)?;
    let clin = cohort.clinical.as_ref().expect("eval reads the table");
    let risk: Vec<f64> = pred.iter().map(|p| p.risk).collect();
    let c =
        concordance_index(&clin.time, &clin.event, &risk).context("the C-index of these slides")?;
    let high = median_split(&risk, &vec![0; risk.len()]);
    let lr = km_and_logrank(None, &clin.time, &clin.event, &high, "")?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "task": TASK,
            "loss": config.loss.name(),
            "slides": risk.len(),
            "events": clin.event.iter().filter(|&&e| e).count(),
            "c_index": c.c_index,
            "concordant": c.concordant,
            "discordant": c.discordant,
            "tied_risk": c.tied_risk,
            "logrank": lr.map(|l| json!({
                "statistic": l.statistic, "p_value": l.p_value,
                "split": "median risk",
            })),
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

pub fn predict(
    head: &Path,
    args: &SurvivalPredictArgs,
    common: &Common,
) -> anyhow::Result<ExitCode> {
    let out = required(&common.out, "--out", TASK)?;
    let (cohort, pred, config) = predicted(head, &args.cohort, false, common)?;
    let n = pred.len();
    let mut columns = vec![
        col::<String>("slide_id", cohort.ids.clone()),
        col::<f64>("risk", pred.iter().map(|p| p.risk).collect()),
        col::<u64>(
            "tiles",
            (0..n).map(|i| cohort.set.tiles(i) as u64).collect(),
        ),
    ];
    if let SurvivalLoss::Nll { bins, .. } = &config.loss {
        // S(t) at the end of each bin: the product of (1 − hazard) up to it.
        for k in 0..bins.n_bins() {
            let s: Vec<f64> = pred
                .iter()
                .map(|p| {
                    p.out[..=k]
                        .iter()
                        .map(|&l| 1.0 - 1.0 / (1.0 + (-(l as f64)).exp()))
                        .product()
                })
                .collect();
            columns.push(col::<f64>(&format!("survival_bin{k}"), s));
        }
    }
    let mut df = DataFrame::new(n, columns)?;
    write_parquet(out, &mut df)?;
    let att_dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("attention");
    for ((id, p), coords) in cohort.ids.iter().zip(&pred).zip(&cohort.coords) {
        write_attention(&att_dir, id, &p.attention, coords)?;
    }
    eprintln!(
        "{n} slides -> {} (attention per tile in {})",
        out.display(),
        att_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
