//! `heads train|eval|predict --task classify`: the probes of DINOv2's evaluation on any feature
//! store (`embed`, `pathology|radiology|satellite embed`; kNN, the linear sweep, few-shot; see
//! [`dinoadapt_heads::classify`]). This module turns the flags into a [`ClassifyConfig`] and
//! prints the results.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use dinoadapt_heads::classify::{self, ClassifyConfig, Labels};

use super::{required, Common};

#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// classify: which features, `cls` or `cls+avgpool` (class token and mean patch token
    /// concatenated, as DINOv2's linear evaluation does).
    #[arg(long, default_value = "cls")]
    pub features: String,
    /// classify: labels, `folder` (each image path's parent folder), `csv:FILE` (row name or
    /// its slide/volume/raster, label[, split]) or `targets:FILE` (a label raster, annotations).
    #[arg(long, default_value = "folder")]
    pub labels: String,
    /// classify: samples, `rows` (tiles, slices, chips) or `groups` (slides, volumes, rasters).
    #[arg(long, default_value = "rows")]
    pub unit: String,
}

/// `heads train --task classify`.
#[derive(Args, Debug)]
pub struct ClassifyTrainArgs {
    /// classify: training features (a feature file, or a domain embed's output folder).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// classify: validation features (the sweep is chosen on them).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// classify: test features (reported, never used for choices).
    #[arg(long)]
    pub test: Option<PathBuf>,
    #[command(flatten)]
    pub feats: FeatureArgs,
    /// classify: kNN neighbours and temperature.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
    /// classify: learning rates of the linear sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.001,0.003,0.01,0.03,0.1"
    )]
    pub lrs: Vec<f64>,
    /// classify: weight decays of the linear sweep.
    #[arg(long, value_delimiter = ',', default_value = "0,0.0001,0.001,0.01")]
    pub wds: Vec<f64>,
    /// classify: also run few-shot probes with these many training samples per class (e.g. 1,5,10).
    #[arg(long, value_delimiter = ',')]
    pub few_shot: Vec<usize>,
}

pub fn train(args: &ClassifyTrainArgs, common: &Common) -> Result<ExitCode> {
    let train = required(&args.train, "--train", "classify")?.clone();
    let val = required(&args.val, "--val", "classify")?.clone();
    let out = required(&common.out, "--out", "classify")?;
    let cfg = ClassifyConfig {
        train,
        val,
        test: args.test.clone(),
        features: args.feats.features.parse()?,
        labels: args.feats.labels.parse()?,
        unit: args.feats.unit.parse()?,
        k: args.k,
        temperature: args.temperature,
        lrs: args.lrs.clone(),
        weight_decays: args.wds.clone(),
        few_shot: args.few_shot.clone(),
        epochs: common.epochs.unwrap_or(300),
        seed: common.seed,
    };
    let report = classify::train(&cfg, out, &crate::domains::all())?;
    println!("{}", serde_json::to_string_pretty(&report.summary())?);
    Ok(ExitCode::SUCCESS)
}

pub fn eval(head: &Path, features: &Path, labels: &str, split: Option<&str>) -> Result<ExitCode> {
    let labels: Labels = labels.parse()?;
    let m = classify::eval(head, features, &labels, split, &crate::domains::all())?;
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(ExitCode::SUCCESS)
}

pub fn predict(head: &Path, features_path: &Path, out: &Path) -> Result<ExitCode> {
    let n = classify::predict(head, features_path, out)?;
    eprintln!("{n} predictions -> {}", out.display());
    Ok(ExitCode::SUCCESS)
}
