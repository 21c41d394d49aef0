//! A survival study on a cohort of slide feature bags with a clinical table of times and events,
//! and a trained head applied to a cohort.
//!
//! Training runs in three steps: [`Study::prepare`] reads the cohort and fixes the time bins and
//! the folds (on the host), [`Study::cross_validate`] trains k heads by patient fold (C-index of
//! each held-out fold) and then the head on every slide (on a burn device), and
//! [`Study::write`] writes the head folder (see [`crate::store`]; `metrics.parquet` has one row
//! per fold) with `predictions.parquet` (out-of-fold risks and risk groups), `km.png`
//! (Kaplan–Meier of the low / high out-of-fold risk groups with the log-rank p-value) and
//! `attention/{slide}.parquet` (out-of-fold attention per tile), and returns the summary.
//!
//! A trained head is applied with [`SurvivalHead::predict`]; [`evaluate`] measures its risks
//! against the cohort's table and [`write_predictions`] writes them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use dinoadapt_core::checkpoint::NamedTensors;
use dinoadapt_core::train::param_paths::snapshot;
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::write_parquet;
use indicatif::ProgressBar;
use polars::prelude::DataFrame;
use serde_json::{json, Value};

use super::clinical::CovariateScale;
use super::cohort::{Cohort, CohortConfig};
use super::report::{c_index_or_nan, km_and_logrank, mean_std, median_split, num, write_attention};
use super::store::{save_head, SurvivalHead, SurvivalRecord, TASK};
use super::{
    concordance_index, patient_folds, predict, train_valid, Prediction, StudyError, SurvivalLoss,
    SurvivalTrainConfig, TimeBins,
};
use crate::store::{self, HeadInfo};

/// Epochs of a study unless told otherwise (PORPOISE trains 20).
pub const DEFAULT_EPOCHS: usize = 20;
/// AdamW learning rate of a study unless told otherwise.
pub const DEFAULT_LR: f64 = 2e-4;
/// AdamW weight decay of a study unless told otherwise.
pub const DEFAULT_WEIGHT_DECAY: f64 = 1e-5;
/// Quantile time bins of the NLL loss unless told otherwise.
pub const DEFAULT_BINS: usize = 4;

/// The loss a study trains with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StudyLoss {
    /// Discrete-time NLL over `bins` quantile time bins of the event times (PORPOISE / MCAT);
    /// `alpha` weighs the uncensored term (MCAT's alpha_surv).
    Nll { bins: usize, alpha: f64 },
    /// Cox negative partial log-likelihood (Breslow ties).
    Cox,
}

/// How a study is run.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyConfig {
    /// The cohort; it needs its clinical table.
    pub cohort: CohortConfig,
    pub loss: StudyLoss,
    /// Cross-validation folds (by patient).
    pub folds: usize,
    /// Width of the tile embedding (and of the attention branches).
    pub hidden: usize,
    /// Dropout while training.
    pub dropout: f64,
    pub epochs: usize,
    /// AdamW learning rate and weight decay.
    pub lr: f64,
    pub weight_decay: f64,
    /// Slides per optimizer step (one Cox risk set).
    pub batch_slides: usize,
    /// Seeds the folds, the weights, the shuffles and dropout.
    pub seed: u64,
}

/// A cohort ready to train on: covariates scaled, time bins and patient folds fixed.
#[derive(Debug, Clone)]
pub struct Study {
    pub cohort: Cohort,
    pub time: Vec<f64>,
    pub event: Vec<bool>,
    pub patient: Vec<String>,
    /// The fold of each slide.
    pub folds: Vec<usize>,
    /// How many folds.
    pub k: usize,
    /// How each head is trained.
    pub config: SurvivalTrainConfig,
    /// The covariate scaling, fitted on the whole cohort.
    pub scale: CovariateScale,
}

/// What cross-validation found.
#[derive(Debug, Clone)]
pub struct CrossValidation {
    /// Out-of-fold predictions, one per slide.
    pub oof: Vec<Prediction>,
    /// The C-index of each held-out fold (NaN when it has no comparable pair).
    pub c_index: Vec<f64>,
    /// The final head's parameters, on the host.
    pub weights: NamedTensors,
    /// When it started.
    pub started: Instant,
}

impl Study {
    /// Read the cohort (with the progress of opening its bags on `bar`), scale its covariates,
    /// make the time bins (NLL) from one row per patient and the folds by patient.
    pub fn prepare(config: &StudyConfig, bar: &ProgressBar) -> Result<Study, StudyError> {
        let clinical_path = config
            .cohort
            .clinical
            .clone()
            .ok_or(StudyError::NoClinicalTable)?;
        let mut cohort = Cohort::load(&config.cohort, bar)?;
        let clin = cohort
            .clinical
            .as_ref()
            .ok_or(StudyError::NoClinicalTable)?;
        let (time, event, patient) = (clin.time.clone(), clin.event.clone(), clin.patient.clone());
        if !event.iter().any(|&e| e) {
            return Err(StudyError::NoEvents {
                path: clinical_path,
            });
        }
        let scale = CovariateScale::fit(&config.cohort.columns.covariates, &clin.covariates);
        cohort.set.covariates = clin.covariates.iter().map(|r| scale.apply(r)).collect();
        let loss = match config.loss {
            StudyLoss::Cox => SurvivalLoss::Cox,
            StudyLoss::Nll { bins, alpha } => {
                // Bins from one row per patient (MCAT drops duplicate cases first).
                let mut seen = HashSet::new();
                let first: Vec<usize> = (0..patient.len())
                    .filter(|&i| seen.insert(patient[i].as_str()))
                    .collect();
                let t: Vec<f64> = first.iter().map(|&i| time[i]).collect();
                let e: Vec<bool> = first.iter().map(|&i| event[i]).collect();
                let bins = TimeBins::quantiles(&t, &e, bins).map_err(StudyError::Bins)?;
                SurvivalLoss::Nll { bins, alpha }
            }
        };
        let train = SurvivalTrainConfig {
            loss,
            hidden: config.hidden,
            attention: config.hidden,
            dropout: config.dropout,
            epochs: config.epochs,
            lr: config.lr,
            weight_decay: config.weight_decay,
            batch_size: config.batch_slides,
            seed: config.seed,
        };
        let folds =
            patient_folds(&patient, &event, config.folds, config.seed).map_err(|source| {
                StudyError::Folds {
                    folds: config.folds,
                    source,
                }
            })?;
        Ok(Study {
            cohort,
            time,
            event,
            patient,
            folds,
            k: config.folds,
            config: train,
            scale,
        })
    }

    /// Train a head per fold on the other folds and predict the held-out slides, then the head
    /// on every slide. `bar` counts epochs over all of them.
    pub fn cross_validate<B: AutodiffBackend>(
        &self,
        device: &B::Device,
        bar: &ProgressBar,
    ) -> Result<CrossValidation, StudyError> {
        let started = Instant::now();
        let (set, cfg) = (&self.cohort.set, &self.config);
        let epochs = cfg.epochs;
        bar.set_position(0);
        bar.set_length(((self.k + 1) * epochs) as u64);
        let n = set.len();
        let mut oof: Vec<Option<Prediction>> = vec![None; n];
        let mut c_index = Vec::with_capacity(self.k);
        for f in 0..self.k {
            let (held, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| self.folds[i] == f);
            bar.set_message(format!("fold {}/{}", f + 1, self.k));
            let base = bar.position();
            let model = train_valid::<B>(set, &self.time, &self.event, &train, cfg, device, |p| {
                bar.set_position(base + p.epoch as u64);
            })?;
            bar.set_position(base + epochs as u64);
            let pred = predict(&model, &cfg.loss, set, &held, device)?;
            let risk: Vec<f64> = pred.iter().map(|p| p.risk).collect();
            let t: Vec<f64> = held.iter().map(|&i| self.time[i]).collect();
            let e: Vec<bool> = held.iter().map(|&i| self.event[i]).collect();
            c_index.push(c_index_or_nan(&t, &e, &risk, &format!("fold {f}"))?);
            for (i, p) in held.into_iter().zip(pred) {
                oof[i] = Some(p);
            }
        }
        bar.set_message("final head, all slides");
        let all: Vec<usize> = (0..n).collect();
        let base = bar.position();
        let model = train_valid::<B>(set, &self.time, &self.event, &all, cfg, device, |p| {
            bar.set_position(base + p.epoch as u64);
        })?;
        Ok(CrossValidation {
            oof: oof
                .into_iter()
                .map(|p| p.expect("every slide is in a fold"))
                .collect(),
            c_index,
            weights: snapshot(&model),
            started,
        })
    }

    /// Write the head folder `out` with the out-of-fold tables and plots; the summary it
    /// returns is also head.json's `training`.
    pub fn write(&self, out: &Path, cv: &CrossValidation) -> Result<Value, StudyError> {
        let (time, event, patient, folds) = (&self.time, &self.event, &self.patient, &self.folds);
        let cohort = &self.cohort;
        let risk: Vec<f64> = cv.oof.iter().map(|p| p.risk).collect();
        let high = median_split(&risk, folds);
        std::fs::create_dir_all(out).map_err(|source| StudyError::Create {
            path: out.to_path_buf(),
            source,
        })?;
        let lr = km_and_logrank(
            Some(&out.join("km.png")),
            time,
            event,
            &high,
            &format!("out-of-fold risk groups ({} folds)", self.k),
        )?;
        let att_dir = out.join("attention");
        for ((id, p), coords) in cohort.ids.iter().zip(&cv.oof).zip(&cohort.coords) {
            write_attention(&att_dir, id, &p.attention, coords)?;
        }
        let k = self.k;
        let (mut fold_slides, mut fold_events) = (vec![0u64; k], vec![0u64; k]);
        let mut fold_patients = vec![HashSet::new(); k];
        for (i, &f) in folds.iter().enumerate() {
            fold_slides[f] += 1;
            fold_events[f] += event[i] as u64;
            fold_patients[f].insert(patient[i].as_str());
        }
        let folds_df = DataFrame::new(
            k,
            vec![
                col::<u32>("fold", (0..k as u32).collect()),
                col::<u64>("slides", fold_slides.clone()),
                col::<u64>(
                    "patients",
                    fold_patients.iter().map(|p| p.len() as u64).collect(),
                ),
                col::<u64>("events", fold_events.clone()),
                col::<f64>("c_index", cv.c_index.clone()),
            ],
        )?;
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

        let (mean, std) = mean_std(&cv.c_index);
        let summary = json!({
            "task": TASK,
            "loss": self.config.loss.name(),
            "slides": n,
            "patients": patient.iter().collect::<HashSet<_>>().len(),
            "events": event.iter().filter(|&&e| e).count(),
            "folds": (0..k).map(|f| json!({
                "fold": f,
                "slides": fold_slides[f],
                "patients": fold_patients[f].len(),
                "events": fold_events[f],
                "c_index": num(cv.c_index[f]),
            })).collect::<Vec<_>>(),
            "c_index_mean": num(mean),
            "c_index_std": num(std),
            "logrank": lr.as_ref().map(|l| json!({
                "statistic": l.statistic, "p_value": l.p_value,
                "split": "median out-of-fold risk within each fold",
            })),
            "bin_edges": match &self.config.loss {
                SurvivalLoss::Nll { bins, .. } => Some(bins.edges.clone()),
                SurvivalLoss::Cox => None,
            },
            "seed": self.config.seed,
            "seconds": cv.started.elapsed().as_secs_f64(),
        });
        let record =
            SurvivalRecord::new(cohort.set.dim, &self.config, &self.scale, summary.clone());
        let backbone = cohort.backbone.as_ref().map(|(b, _)| b.clone());
        save_head(
            out,
            &cv.weights,
            &HeadInfo::new(TASK, backbone, record),
            folds_df,
        )?;
        let facts = [
            (
                "slides / events".to_string(),
                format!("{n} / {}", summary["events"]),
            ),
            (
                "C-index (mean ± std over folds)".into(),
                format!("{mean:.3} ± {std:.3}"),
            ),
            ("loss".into(), self.config.loss.name().to_string()),
            ("seed".into(), self.config.seed.to_string()),
        ];
        crate::store::write_report(out, TASK, &facts)?;
        Ok(summary)
    }
}

impl<B: Backend> SurvivalHead<B> {
    /// Each slide of `cohort` through the head: its covariates (from the cohort's clinical
    /// table) are scaled as in training and set on the cohort's bags.
    pub fn predict(
        &self,
        cohort: &mut Cohort,
        device: &B::Device,
    ) -> Result<Vec<Prediction>, StudyError> {
        if let Some((b, path)) = &cohort.backbone {
            store::check_features(&self.dir, self.backbone.as_ref(), Some(b), path)?;
        }
        if cohort.set.dim != self.model.d_input() {
            return Err(StudyError::HeadDimension {
                bags: cohort.set.dim,
                head: self.dir.clone(),
                takes: self.model.d_input(),
            });
        }
        let names = &self.scale.names;
        cohort.set.covariates = match &cohort.clinical {
            Some(c) if !names.is_empty() => {
                if c.covariate_names != *names {
                    return Err(StudyError::Covariates {
                        given: c.covariate_names.clone(),
                        head: names.clone(),
                    });
                }
                c.covariates.iter().map(|r| self.scale.apply(r)).collect()
            }
            None if !names.is_empty() => {
                return Err(StudyError::CovariatesNeeded {
                    names: names.clone(),
                })
            }
            _ => Vec::new(),
        };
        let all: Vec<usize> = (0..cohort.set.len()).collect();
        Ok(predict(
            &self.model,
            &self.config.loss,
            &cohort.set,
            &all,
            device,
        )?)
    }
}

/// The C-index and the log-rank test of the median risk split of a head's predictions on a
/// cohort with its clinical table, as JSON.
pub fn evaluate(
    cohort: &Cohort,
    predictions: &[Prediction],
    config: &SurvivalTrainConfig,
) -> Result<Value, StudyError> {
    let clin = cohort
        .clinical
        .as_ref()
        .ok_or(StudyError::NoClinicalTable)?;
    let risk: Vec<f64> = predictions.iter().map(|p| p.risk).collect();
    let c = concordance_index(&clin.time, &clin.event, &risk).map_err(StudyError::CIndex)?;
    let high = median_split(&risk, &vec![0; risk.len()]);
    let lr = km_and_logrank(None, &clin.time, &clin.event, &high, "")?;
    Ok(json!({
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
    }))
}

/// Write a head's predictions on a cohort: the Parquet table `out` (slide_id, risk, tiles and,
/// for the NLL loss, S(t) at the end of each time bin) and the attention per tile in
/// `attention/` beside it. Returns that folder.
pub fn write_predictions(
    out: &Path,
    cohort: &Cohort,
    predictions: &[Prediction],
    config: &SurvivalTrainConfig,
) -> Result<PathBuf, StudyError> {
    let pred = predictions;
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
    for ((id, p), coords) in cohort.ids.iter().zip(pred).zip(&cohort.coords) {
        write_attention(&att_dir, id, &p.attention, coords)?;
    }
    Ok(att_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::survival::ClinicalColumns;
    use burn::backend::{Autodiff, Flex};
    use dinoadapt_core::checkpoint::safetensors_io::write_safetensors;
    use dinoadapt_core::checkpoint::HostTensor;

    /// `slides` bags as `pathology embed` writes them (features/ID.safetensors, `cls` [N, 8])
    /// and a clinical table with an `age` covariate.
    fn cohort_on_disk(dir: &Path, slides: usize) -> CohortConfig {
        cohort_of_backbone(dir, slides, None)
    }

    /// [`cohort_on_disk`] with bags that record the backbone of checkpoint sha256 `sha256`.
    fn cohort_of_backbone(dir: &Path, slides: usize, sha256: Option<&str>) -> CohortConfig {
        let meta: std::collections::HashMap<String, String> = match sha256 {
            Some(sha) => [
                ("model", "m"),
                ("checkpoint_sha256", sha),
                ("layout", "native"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            None => Default::default(),
        };
        let bags = dir.join("bags");
        std::fs::create_dir_all(bags.join("features")).unwrap();
        let mut csv = String::from("slide_id,time,event,age\n");
        for s in 0..slides {
            let n = 3 + s % 4;
            let data: Vec<f32> = (0..n * 8)
                .map(|i| ((i * 7 + s * 3) % 11) as f32 / 11.0)
                .collect();
            let path = bags.join("features").join(format!("S{s}.safetensors"));
            write_safetensors(
                &path,
                &[("cls".to_string(), HostTensor::new(vec![n, 8], data))],
                meta.clone(),
            )
            .unwrap();
            csv.push_str(&format!("S{s},{},{},{}\n", 1 + s % 5, s % 3 != 0, 40 + s));
        }
        let clinical = dir.join("clinical.csv");
        std::fs::write(&clinical, csv.replace("true", "1").replace("false", "0")).unwrap();
        CohortConfig {
            bags,
            clinical: Some(clinical),
            columns: ClinicalColumns {
                covariates: vec!["age".into()],
                ..ClinicalColumns::default()
            },
        }
    }

    #[test]
    fn a_study_writes_a_head_that_predicts_and_evaluates_a_cohort() {
        let tmp = tempfile::tempdir().unwrap();
        let cohort = cohort_on_disk(tmp.path(), 12);
        let config = StudyConfig {
            cohort: cohort.clone(),
            loss: StudyLoss::Cox,
            folds: 2,
            hidden: 8,
            dropout: 0.0,
            epochs: 2,
            lr: DEFAULT_LR,
            weight_decay: DEFAULT_WEIGHT_DECAY,
            batch_slides: 4,
            seed: 0,
        };
        let bar = ProgressBar::hidden();
        let study = Study::prepare(&config, &bar).unwrap();
        assert_eq!((study.k, study.folds.len()), (2, 12));
        let cv = study
            .cross_validate::<Autodiff<Flex>>(&Default::default(), &bar)
            .unwrap();
        let out = tmp.path().join("head");
        let summary = study.write(&out, &cv).unwrap();
        assert_eq!(summary["slides"], 12);
        for f in ["head.json", "head.safetensors", "km.png", "metrics.parquet"] {
            assert!(out.join(f).is_file(), "{f}");
        }
        assert!(out.join("attention/S11.parquet").is_file());

        let head = SurvivalHead::<Flex>::load(&out, &Default::default()).unwrap();
        assert_eq!(head.scale.names, vec!["age"]);
        // Without the table the head has no covariates to take; with other ones it refuses.
        let mut bare = Cohort::load(
            &CohortConfig {
                clinical: None,
                ..cohort.clone()
            },
            &bar,
        )
        .unwrap();
        let e = head.predict(&mut bare, &Default::default()).unwrap_err();
        assert!(matches!(e, StudyError::CovariatesNeeded { .. }), "{e}");
        let mut other = Cohort::load(
            &CohortConfig {
                columns: ClinicalColumns::default(),
                ..cohort.clone()
            },
            &bar,
        )
        .unwrap();
        let e = head.predict(&mut other, &Default::default()).unwrap_err();
        assert!(matches!(e, StudyError::Covariates { .. }), "{e}");

        let mut c = Cohort::load(&cohort, &bar).unwrap();
        let pred = head.predict(&mut c, &Default::default()).unwrap();
        assert_eq!(pred.len(), 12);
        assert_eq!(evaluate(&c, &pred, &head.config).unwrap()["slides"], 12);
        let table = tmp.path().join("pred/risk.parquet");
        let att = write_predictions(&table, &c, &pred, &head.config).unwrap();
        assert!(table.is_file() && att.join("S0.parquet").is_file());
    }

    #[test]
    fn a_head_refuses_bags_of_another_backbone() {
        let tmp = tempfile::tempdir().unwrap();
        let cohort = cohort_of_backbone(&tmp.path().join("a"), 8, Some("aaa"));
        let config = StudyConfig {
            cohort: cohort.clone(),
            loss: StudyLoss::Cox,
            folds: 2,
            hidden: 4,
            dropout: 0.0,
            epochs: 1,
            lr: DEFAULT_LR,
            weight_decay: DEFAULT_WEIGHT_DECAY,
            batch_slides: 4,
            seed: 0,
        };
        let bar = ProgressBar::hidden();
        let study = Study::prepare(&config, &bar).unwrap();
        assert_eq!(
            study.cohort.backbone.as_ref().unwrap().0.checkpoint_sha256,
            "aaa"
        );
        let cv = study
            .cross_validate::<Autodiff<Flex>>(&Default::default(), &bar)
            .unwrap();
        let out = tmp.path().join("head");
        study.write(&out, &cv).unwrap();
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("head.json")).unwrap()).unwrap();
        assert_eq!(info["backbone"]["checkpoint_sha256"], "aaa");
        assert_eq!(info["backbone"]["layout"], "native");
        let head = SurvivalHead::<Flex>::load(&out, &Default::default()).unwrap();

        let mut same = Cohort::load(&cohort, &bar).unwrap();
        assert_eq!(
            head.predict(&mut same, &Default::default()).unwrap().len(),
            8
        );
        let other = cohort_of_backbone(&tmp.path().join("b"), 8, Some("bbb"));
        let mut other = Cohort::load(&other, &bar).unwrap();
        let e = head.predict(&mut other, &Default::default()).unwrap_err();
        assert!(
            matches!(
                e,
                StudyError::Store(crate::store::StoreError::WrongBackbone { .. })
            ),
            "{e}"
        );
        // Bags of other tools record no backbone: taken.
        let bare = cohort_of_backbone(&tmp.path().join("c"), 8, None);
        let mut bare = Cohort::load(&bare, &bar).unwrap();
        assert!(bare.backbone.is_none());
        head.predict(&mut bare, &Default::default()).unwrap();

        // One cohort, two backbones: refused when read.
        let mixed = tmp.path().join("b/bags/features");
        std::fs::copy(
            tmp.path().join("a/bags/features/S0.safetensors"),
            mixed.join("S0.safetensors"),
        )
        .unwrap();
        let e = Cohort::load(
            &CohortConfig {
                clinical: None,
                ..cohort_of_backbone(&tmp.path().join("b"), 0, Some("bbb"))
            },
            &bar,
        )
        .unwrap_err();
        assert!(matches!(e, StudyError::MixedBackbones { .. }), "{e}");
    }
}
