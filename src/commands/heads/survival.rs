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
//! the head on every slide and writes it with `metrics.parquet` (one row per fold),
//! `predictions.parquet` (out-of-fold risks and risk groups), `km.png` (Kaplan–Meier of the low /
//! high out-of-fold risk groups with the log-rank p-value) and `attention/{slide}.parquet`
//! (out-of-fold attention per tile). Bags of another backbone than the head's are refused.
//!
//! The engine is `dinoadapt_heads::survival` ([`Study`], [`SurvivalHead`]); this module turns
//! the flags into its configuration, picks the device, names the flags in its errors and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, ensure};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use dinoadapt_heads::survival::{
    evaluate, head_covariates, write_predictions, ClinicalColumns, Cohort, CohortConfig,
    ColumnRole, CrossValidation, Prediction, Study, StudyConfig, StudyError, StudyLoss,
    SurvivalHead, SurvivalTrainConfig, DEFAULT_BINS, DEFAULT_EPOCHS, DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::{required, Common};
use crate::device::{on_device, BackendJob};

const TASK: &str = "survival";

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

/// The cohort the flags name (`--clinical` required with `need_table`), with `covariates`.
fn cohort_config(
    a: &CohortArgs,
    covariates: Vec<String>,
    need_table: bool,
) -> anyhow::Result<CohortConfig> {
    let bags = required(&a.bags, "--bags", TASK)?.clone();
    if need_table && a.clinical.is_none() {
        bail!("--task survival needs --clinical (the table of times and events)");
    }
    Ok(CohortConfig {
        bags,
        clinical: a.clinical.clone(),
        columns: ClinicalColumns {
            slide: a.slide_col.clone(),
            time: a.time_col.clone(),
            event: a.event_col.clone(),
            patient: a.patient_col.clone(),
            covariates,
        },
    })
}

/// The library's error, with the flag that sets what it is about.
fn explain(e: StudyError) -> anyhow::Error {
    match e {
        StudyError::NoColumn {
            path,
            column,
            columns,
            role,
            source,
        } => {
            let flag = match role {
                ColumnRole::Slide => "--slide-col",
                ColumnRole::Time => "--time-col",
                ColumnRole::Event => "--event-col",
                ColumnRole::Patient => "--patient-col",
                ColumnRole::Covariate => "--covariates",
            };
            anyhow::Error::new(source).context(format!(
                "{}: no column `{column}` (columns: {}); name it with {flag}",
                path.display(),
                columns.join(", ")
            ))
        }
        StudyError::Bins(source) => anyhow::Error::new(source).context("--bins"),
        StudyError::Folds { folds, source } => {
            anyhow::Error::new(source).context(format!("--folds {folds}"))
        }
        StudyError::CovariatesNeeded { names } => anyhow::anyhow!(
            "the head takes covariates {}: give --clinical with them (and --covariates)",
            names.join(",")
        ),
        e => e.into(),
    }
}

fn progress(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

// ---------------------------------------------------------------------------------------------
// train

struct CrossValidate<'a> {
    study: &'a Study,
    bar: &'a ProgressBar,
}

impl BackendJob for CrossValidate<'_> {
    type Output = CrossValidation;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<CrossValidation> {
        self.study
            .cross_validate::<Autodiff<B>>(&device, self.bar)
            .map_err(explain)
    }
}

pub fn train(args: &SurvivalTrainArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let lr = common.lr.unwrap_or(DEFAULT_LR);
    let weight_decay = common.weight_decay.unwrap_or(DEFAULT_WEIGHT_DECAY);
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
    let config = StudyConfig {
        cohort: cohort_config(&args.cohort, args.cohort.covariates.clone(), true)?,
        loss: match args.loss {
            LossKind::Cox => StudyLoss::Cox,
            LossKind::Nll => StudyLoss::Nll {
                bins: common.bins.unwrap_or(DEFAULT_BINS),
                alpha: args.alpha,
            },
        },
        folds: args.folds,
        hidden: args.hidden,
        dropout: args.dropout,
        epochs: common.epochs.unwrap_or(DEFAULT_EPOCHS),
        lr,
        weight_decay,
        batch_slides: args.batch_slides,
        seed: common.seed,
    };
    let bar = progress(common.quiet);
    let study = Study::prepare(&config, &bar).map_err(explain)?;
    let cv = on_device(
        common.device,
        CrossValidate {
            study: &study,
            bar: &bar,
        },
    )?;
    bar.finish_and_clear();
    let summary = study.write(out, &cv).map_err(explain)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// eval / predict

struct Predict<'a> {
    head: &'a Path,
    cohort: &'a mut Cohort,
}

impl BackendJob for Predict<'_> {
    type Output = (Vec<Prediction>, SurvivalTrainConfig);

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
        let head = SurvivalHead::<B>::load(self.head, &device).map_err(explain)?;
        let pred = head.predict(self.cohort, &device).map_err(explain)?;
        Ok((pred, head.config))
    }
}

/// The cohort of `a` (its clinical table required with `need_table`) through the head in
/// `head`: the cohort, each slide's prediction and the head's training settings.
fn predicted(
    head: &Path,
    a: &CohortArgs,
    need_table: bool,
    common: &Common,
) -> anyhow::Result<(Cohort, Vec<Prediction>, SurvivalTrainConfig)> {
    let names = head_covariates(head).map_err(explain)?;
    let covariates = if a.covariates.is_empty() {
        names.clone()
    } else {
        a.covariates.clone()
    };
    ensure!(
        covariates == names,
        "--covariates {} differ from the head's {}",
        covariates.join(","),
        names.join(",")
    );
    let config = cohort_config(a, covariates, need_table)?;
    let bar = progress(common.quiet);
    let mut cohort = Cohort::load(&config, &bar).map_err(explain)?;
    bar.finish_and_clear();
    let (pred, config) = on_device(
        common.device,
        Predict {
            head,
            cohort: &mut cohort,
        },
    )?;
    Ok((cohort, pred, config))
}

pub fn eval(head: &Path, args: &SurvivalEvalArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let (cohort, pred, config) = predicted(head, &args.cohort, true, common)?;
    let summary = evaluate(&cohort, &pred, &config).map_err(explain)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

pub fn predict(
    head: &Path,
    args: &SurvivalPredictArgs,
    common: &Common,
) -> anyhow::Result<ExitCode> {
    let out = required(&common.out, "--out", TASK)?;
    let (cohort, pred, config) = predicted(head, &args.cohort, false, common)?;
    let att_dir = write_predictions(out, &cohort, &pred, &config).map_err(explain)?;
    eprintln!(
        "{} slides -> {} (attention per tile in {})",
        pred.len(),
        out.display(),
        att_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
