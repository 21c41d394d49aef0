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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, ensure, Context};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use dinoadapt_core::checkpoint::safetensors_io::{
    read_safetensors, write_atomic, write_safetensors,
};
use dinoadapt_core::checkpoint::NamedTensors;
use dinoadapt_core::train::named::{restore, snapshot};
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::plot::{panels_png, Panel, Style};
use dinoadapt_datasets::write_parquet;
use dinoadapt_heads::survival::{
    concordance_index, logrank_test, patient_folds, predict as predict_bags, train_valid, Abmil,
    BagSet, KaplanMeier, Prediction, SurvivalError, SurvivalLoss, SurvivalTrainConfig, TimeBins,
};
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::{
    CsvReadOptions, DataFrame, DataType, IntoColumn, NamedFrom, ParquetReader, SerReader, Series,
};
use serde_json::{json, Value};

use super::{required, Common};
use crate::device::{on_device, BackendJob};

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

/// Level-0 top-left x, y of each tile of a bag, when the bag records them.
type Coords = Option<Vec<[i64; 2]>>;

/// One slide's bag: features [tiles, dim] and the level-0 top-left corner of each tile when the
/// bag records it.
struct Bag {
    features: Vec<f32>,
    dim: usize,
    coords: Coords,
    source: PathBuf,
}

/// The bag file of `id` in `dir`, in the order embed output, .h5 in h5/, .h5, .safetensors.
fn bag_path(dir: &Path, id: &str) -> Option<PathBuf> {
    [
        dir.join("features").join(format!("{id}.safetensors")),
        dir.join("h5").join(format!("{id}.h5")),
        dir.join(format!("{id}.h5")),
        dir.join(format!("{id}.safetensors")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The slide ids of every bag in `dir` (sorted).
fn bag_ids(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut ids = std::collections::BTreeSet::new();
    for (sub, ext) in [
        ("features", "safetensors"),
        ("h5", "h5"),
        ("", "h5"),
        ("", "safetensors"),
    ] {
        let d = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() && p.extension().is_some_and(|x| x == ext) {
                if let Some(stem) = p.file_stem() {
                    ids.insert(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    ensure!(
        !ids.is_empty(),
        "{}: no feature bags (features/*.safetensors from `pathology embed`, or *.h5)",
        dir.display()
    );
    Ok(ids.into_iter().collect())
}

fn read_bag(path: &Path) -> anyhow::Result<Bag> {
    if path.extension().is_some_and(|e| e == "h5") {
        let f = hdf5_metno::File::open(path)
            .with_context(|| format!("{}: not a readable HDF5 file", path.display()))?;
        let ds = f.dataset("features").with_context(|| {
            format!(
                "{}: no `features` dataset (CLAM / TRIDENT bags have one)",
                path.display()
            )
        })?;
        let shape = ds.shape();
        ensure!(
            shape.len() == 2,
            "{}: `features` has shape {shape:?}, expected [tiles, dim]",
            path.display()
        );
        let features: Vec<f32> = ds
            .read_raw()
            .with_context(|| format!("{}: reading `features`", path.display()))?;
        let coords = match f.dataset("coords") {
            Ok(c) => {
                let flat: Vec<i64> = c
                    .read_raw()
                    .with_context(|| format!("{}: reading `coords`", path.display()))?;
                ensure!(
                    flat.len() == 2 * shape[0],
                    "{}: `coords` has {} values for {} tiles (expected [tiles, 2])",
                    path.display(),
                    flat.len(),
                    shape[0]
                );
                Some(flat.chunks(2).map(|c| [c[0], c[1]]).collect())
            }
            Err(_) => None,
        };
        return Ok(Bag {
            features,
            dim: shape[1],
            coords,
            source: path.to_path_buf(),
        });
    }
    let (tensors, _) = read_safetensors(path)?;
    let cls = tensors
        .into_iter()
        .find(|(n, _)| n == "cls")
        .map(|(_, t)| t)
        .with_context(|| {
            format!(
                "{}: no `cls` tensor (expected the feature file of `pathology embed`)",
                path.display()
            )
        })?;
    ensure!(
        cls.shape.len() == 2,
        "{}: `cls` has shape {:?}, expected [tiles, dim]",
        path.display(),
        cls.shape
    );
    let (n, dim) = (cls.shape[0], cls.shape[1]);
    // features/{id}.safetensors -> tiles/{id}.parquet: row `feature_row` has the tile's x, y.
    let tiles = path
        .parent()
        .and_then(Path::parent)
        .zip(path.file_stem())
        .map(|(root, stem)| {
            root.join("tiles")
                .join(format!("{}.parquet", stem.to_string_lossy()))
        })
        .filter(|p| p.is_file());
    let coords = match tiles {
        Some(t) => Some(tile_coords(&t, n)?),
        None => None,
    };
    Ok(Bag {
        features: cls.data,
        dim,
        coords,
        source: path.to_path_buf(),
    })
}

/// x, y of feature rows `0..n` from a `pathology embed` tile table.
fn tile_coords(path: &Path, n: usize) -> anyhow::Result<Vec<[i64; 2]>> {
    let df = ParquetReader::new(std::fs::File::open(path)?)
        .finish()
        .with_context(|| format!("{}: not a Parquet tile table", path.display()))?;
    let get = |name: &str| -> anyhow::Result<Vec<Option<i64>>> {
        let c = df
            .column(name)
            .with_context(|| format!("{}: no `{name}` column", path.display()))?
            .cast(&DataType::Int64)?;
        let ca = c.i64()?;
        Ok((0..df.height()).map(|i| ca.get(i)).collect())
    };
    let (row, x, y) = (get("feature_row")?, get("x")?, get("y")?);
    let mut coords = vec![[-1i64; 2]; n];
    let mut seen = 0;
    for ((r, x), y) in row.iter().zip(&x).zip(&y) {
        if let (Some(r), Some(x), Some(y)) = (r, x, y) {
            if (*r as usize) < n {
                coords[*r as usize] = [*x, *y];
                seen += 1;
            }
        }
    }
    ensure!(
        seen == n,
        "{}: {seen} tiles for {n} feature rows; the tile table and the features disagree \
         (re-run `pathology embed --overwrite` for this slide)",
        path.display()
    );
    Ok(coords)
}

// ---------------------------------------------------------------------------------------------
// The clinical table

struct Clinical {
    slide: Vec<String>,
    time: Vec<f64>,
    event: Vec<bool>,
    patient: Vec<String>,
    /// Per slide, the raw covariate values.
    covariates: Vec<Vec<f64>>,
}

fn read_table(path: &Path) -> anyhow::Result<DataFrame> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let df = match ext.as_str() {
        "parquet" | "pq" => ParquetReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )
        .finish(),
        "csv" => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(None)
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .with_context(|| format!("opening {}", path.display()))?
            .finish(),
        _ => bail!(
            "{}: the clinical table must be .csv or .parquet",
            path.display()
        ),
    };
    df.with_context(|| format!("{}: not a readable table", path.display()))
}

fn read_clinical(path: &Path, a: &CohortArgs) -> anyhow::Result<Clinical> {
    let df = read_table(path)?;
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let column = |name: &str, flag: &str| {
        df.column(name).with_context(|| {
            format!(
                "{}: no column `{name}` (columns: {}); name it with {flag}",
                path.display(),
                names.join(", ")
            )
        })
    };
    let strings = |name: &str, flag: &str| -> anyhow::Result<Vec<String>> {
        let c = column(name, flag)?.cast(&DataType::String)?;
        let ca = c.str()?;
        (0..df.height())
            .map(|i| {
                ca.get(i).map(str::to_string).with_context(|| {
                    format!("{}: `{name}` is empty in row {}", path.display(), i + 1)
                })
            })
            .collect()
    };
    let numbers = |name: &str, flag: &str, slide: &[String]| -> anyhow::Result<Vec<f64>> {
        let c = column(name, flag)?
            .cast(&DataType::Float64)
            .with_context(|| format!("{}: `{name}` is not numeric", path.display()))?;
        let ca = c.f64()?;
        (0..df.height())
            .map(|i| {
                ca.get(i).filter(|v| v.is_finite()).with_context(|| {
                    format!(
                        "{}: `{name}` is missing or not a number for slide {}",
                        path.display(),
                        slide[i]
                    )
                })
            })
            .collect()
    };
    let slide = strings(&a.slide_col, "--slide-col")?;
    let mut seen = HashSet::new();
    let dup: Vec<&String> = slide.iter().filter(|s| !seen.insert(*s)).collect();
    ensure!(
        dup.is_empty(),
        "{}: slides listed more than once: {}",
        path.display(),
        list(&dup)
    );
    let time = numbers(&a.time_col, "--time-col", &slide)?;
    if let Some(i) = time.iter().position(|&t| t < 0.0) {
        bail!("{}: negative time for slide {}", path.display(), slide[i]);
    }
    let event: Vec<bool> = numbers(&a.event_col, "--event-col", &slide)?
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            ensure!(
                e == 1.0 || e == 0.0,
                "{}: event {e} for slide {}: use 1 (event) or 0 (censored)",
                path.display(),
                slide[i]
            );
            Ok(e == 1.0)
        })
        .collect::<anyhow::Result<_>>()?;
    let patient = match &a.patient_col {
        Some(p) => strings(p, "--patient-col")?,
        None if names.iter().any(|n| n == "patient_id") => strings("patient_id", "--patient-col")?,
        None => slide.clone(),
    };
    let cov_columns: Vec<Vec<f64>> = a
        .covariates
        .iter()
        .map(|c| numbers(c, "--covariates", &slide))
        .collect::<anyhow::Result<_>>()?;
    let covariates = (0..slide.len())
        .map(|i| cov_columns.iter().map(|c| c[i]).collect())
        .collect();
    Ok(Clinical {
        slide,
        time,
        event,
        patient,
        covariates,
    })
}

/// The first few items of a list, for messages.
fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let mut s: Vec<String> = items.iter().take(10).map(|x| x.to_string()).collect();
    if items.len() > 10 {
        s.push(format!("… ({} in all)", items.len()));
    }
    s.join(", ")
}

/// Covariate standardisation (mean, std per covariate), fitted on the training cohort.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CovariateScale {
    names: Vec<String>,
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl CovariateScale {
    fn fit(names: &[String], rows: &[Vec<f64>]) -> Self {
        let n = rows.len().max(1) as f64;
        let k = names.len();
        let mean: Vec<f64> = (0..k)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let std = (0..k)
            .map(|j| {
                let v = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
                v.sqrt().max(1e-12)
            })
            .collect();
        CovariateScale {
            names: names.to_vec(),
            mean,
            std,
        }
    }

    fn apply(&self, row: &[f64]) -> Vec<f32> {
        row.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| ((v - m) / s) as f32)
            .collect()
    }
}

/// Slides with their bags, in clinical table order (or bag order without a table).
struct Cohort {
    ids: Vec<String>,
    set: BagSet,
    coords: Vec<Coords>,
    /// Present when the cohort came with a clinical table.
    clinical: Option<Clinical>,
}

/// Read the bags of `ids` from `dir`; every id must have one, of one dimension.
fn load_bags(
    dir: &Path,
    ids: &[String],
    bar: &ProgressBar,
) -> anyhow::Result<(BagSet, Vec<Coords>)> {
    let paths: Vec<Option<PathBuf>> = ids.iter().map(|id| bag_path(dir, id)).collect();
    let missing: Vec<&String> = ids
        .iter()
        .zip(&paths)
        .filter(|(_, p)| p.is_none())
        .map(|(id, _)| id)
        .collect();
    ensure!(
        missing.is_empty(),
        "{}: no feature bag for slides {} (looked for features/ID.safetensors, h5/ID.h5, \
         ID.h5, ID.safetensors); embed them or drop their rows from the clinical table",
        dir.display(),
        list(&missing)
    );
    bar.set_length(ids.len() as u64);
    bar.set_message("reading bags");
    let mut set = BagSet::default();
    let mut coords = Vec::with_capacity(ids.len());
    let mut first: Option<PathBuf> = None;
    for (id, path) in ids.iter().zip(paths.into_iter().flatten()) {
        let bag = read_bag(&path)?;
        ensure!(
            bag.features.len() >= bag.dim && bag.dim > 0,
            "{}: slide {id} has an empty bag",
            bag.source.display()
        );
        match &first {
            None => {
                set.dim = bag.dim;
                first = Some(bag.source.clone());
            }
            Some(f) => ensure!(
                bag.dim == set.dim,
                "{} has features of dimension {}, {} of {}: all bags must come from one model",
                bag.source.display(),
                bag.dim,
                f.display(),
                set.dim
            ),
        }
        set.bags.push(bag.features);
        coords.push(bag.coords);
        bar.inc(1);
    }
    Ok((set, coords))
}

fn load_cohort(a: &CohortArgs, need_table: bool, bar: &ProgressBar) -> anyhow::Result<Cohort> {
    let dir = required(&a.bags, "--bags", TASK)?;
    let clinical = match (&a.clinical, need_table) {
        (Some(p), _) => Some(read_clinical(p, a)?),
        (None, true) => bail!("--task survival needs --clinical (the table of times and events)"),
        (None, false) => None,
    };
    let ids = match &clinical {
        Some(c) => c.slide.clone(),
        None => bag_ids(dir)?,
    };
    ensure!(!ids.is_empty(), "the clinical table has no rows");
    let (set, coords) = load_bags(dir, &ids, bar)?;
    Ok(Cohort {
        ids,
        set,
        coords,
        clinical,
    })
}

// ---------------------------------------------------------------------------------------------
// The head on disk

struct Head<B: Backend> {
    model: Abmil<B>,
    config: SurvivalTrainConfig,
    scale: CovariateScale,
}

fn save_head(
    dir: &Path,
    weights: &NamedTensors,
    dim: usize,
    config: &SurvivalTrainConfig,
    scale: &CovariateScale,
    extra: Value,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = HashMap::from([
        ("dinoadapt.head".to_string(), "abmil".to_string()),
        ("task".to_string(), TASK.to_string()),
        ("config".to_string(), serde_json::to_string(config)?),
    ]);
    write_safetensors(&dir.join("head.safetensors"), weights, meta)?;
    let bins = match &config.loss {
        SurvivalLoss::Nll { bins, .. } => Some(bins.edges.clone()),
        SurvivalLoss::Cox => None,
    };
    let info = json!({
        "task": TASK,
        "head": "abmil",
        "loss": config.loss.name(),
        "dim": dim,
        "outputs": config.loss.outputs(),
        "bin_edges": bins,
        "time_unit": "the clinical table's",
        "risk": match config.loss {
            SurvivalLoss::Cox => "the log relative hazard",
            SurvivalLoss::Nll { .. } => "minus the sum of the survival curve over the bins (MCAT)",
        },
        "covariates": scale,
        "config": config,
        "dinoadapt_version": env!("CARGO_PKG_VERSION"),
        "training": extra,
    });
    write_atomic(
        &dir.join("head.json"),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    Ok(())
}

fn load_head<B: Backend>(dir: &Path, device: &B::Device) -> anyhow::Result<Head<B>> {
    let path = dir.join("head.json");
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("{}: not a head folder (no head.json)", dir.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))?;
    let bad = |what: &str| {
        format!(
            "{}: {what} (was it written by `heads train --task survival`?)",
            path.display()
        )
    };
    let config: SurvivalTrainConfig = serde_json::from_value(info["config"].clone())
        .with_context(|| bad("no usable `config`"))?;
    let scale: CovariateScale = serde_json::from_value(info["covariates"].clone())
        .with_context(|| bad("no usable `covariates`"))?;
    let dim = info["dim"].as_u64().with_context(|| bad("no `dim`"))? as usize;
    let model = config.abmil(dim, scale.names.len()).init::<B>(device);
    let weights = dir.join("head.safetensors");
    let (tensors, _) = read_safetensors(&weights)?;
    let tensors: HashMap<_, _> = tensors.into_iter().collect();
    let model = restore(model, &tensors, device)
        .with_context(|| format!("{}: does not fit head.json", weights.display()))?;
    Ok(Head {
        model,
        config,
        scale,
    })
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// `attention/{slide}.parquet`: tile (feature row), x, y (level-0 px; null when the bag has no
/// coordinates) and attention (sums to 1 over the slide).
fn write_attention(dir: &Path, id: &str, attention: &[f32], coords: &Coords) -> anyhow::Result<()> {
    let n = attention.len();
    let xy = |k: usize| -> Vec<Option<i64>> {
        (0..n).map(|i| coords.as_ref().map(|c| c[i][k])).collect()
    };
    let mut df = DataFrame::new(
        n,
        vec![
            col::<u64>("tile", (0..n as u64).collect()),
            Series::new("x".into(), xy(0)).into_column(),
            Series::new("y".into(), xy(1)).into_column(),
            col::<f32>("attention", attention.to_vec()),
        ],
    )?;
    write_parquet(&dir.join(format!("{id}.parquet")), &mut df)?;
    Ok(())
}

/// The C-index, or NaN (with a warning) when the slides have no comparable pair.
fn c_index_or_nan(time: &[f64], event: &[bool], risk: &[f64], what: &str) -> anyhow::Result<f64> {
    match concordance_index(time, event, risk) {
        Ok(c) => Ok(c.c_index),
        Err(SurvivalError::NoComparablePairs) => {
            tracing::warn!("{what}: no comparable pair of slides, C-index undefined");
            Ok(f64::NAN)
        }
        Err(e) => Err(e.into()),
    }
}

/// High risk (1) when above the median of its group (`group[i]`), else low (0).
fn median_split(risk: &[f64], group: &[usize]) -> Vec<usize> {
    let mut medians: HashMap<usize, f64> = HashMap::new();
    for &g in group {
        medians.entry(g).or_insert_with(|| {
            let mut r: Vec<f64> = risk
                .iter()
                .zip(group)
                .filter(|(_, &h)| h == g)
                .map(|(r, _)| *r)
                .collect();
            r.sort_by(f64::total_cmp);
            let m = r.len() / 2;
            if r.len() % 2 == 1 {
                r[m]
            } else {
                0.5 * (r[m - 1] + r[m])
            }
        });
    }
    risk.iter()
        .zip(group)
        .map(|(r, g)| (*r > medians[g]) as usize)
        .collect()
}

/// Log-rank of the two risk groups (None when one group is empty) and the KM plot.
fn km_and_logrank(
    path: Option<&Path>,
    time: &[f64],
    event: &[bool],
    high: &[usize],
    title: &str,
) -> anyhow::Result<Option<dinoadapt_heads::survival::LogRank>> {
    let both = high.contains(&0) && high.contains(&1);
    let lr = if both {
        Some(logrank_test(time, event, high)?)
    } else {
        None
    };
    if let Some(path) = path {
        let p = lr
            .as_ref()
            .map_or("n/a".to_string(), |l| format!("{:.3e}", l.p_value));
        let mut panel = Panel::new(format!("{title}, log-rank p = {p}"))
            .x_label("time")
            .y_label("survival")
            .style(Style::Step);
        for (g, name) in [(0usize, "low risk"), (1, "high risk")] {
            let idx: Vec<usize> = (0..time.len()).filter(|&i| high[i] == g).collect();
            if idx.is_empty() {
                continue;
            }
            let t: Vec<f64> = idx.iter().map(|&i| time[i]).collect();
            let e: Vec<bool> = idx.iter().map(|&i| event[i]).collect();
            let km = KaplanMeier::fit(&t, &e)?;
            panel = panel.series(format!("{name} (n={})", idx.len()), km.step_points(0.0));
        }
        panels_png(path, &[panel], 1)?;
    }
    Ok(lr)
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

fn mean_std(v: &[f64]) -> (f64, f64) {
    let ok: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if ok.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = ok.iter().sum::<f64>() / ok.len() as f64;
    let var = ok.iter().map(|x| (x - m).powi(2)).sum::<f64>() / ok.len() as f64;
    (m, var.sqrt())
}

/// JSON number or null.
fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

// ---------------------------------------------------------------------------------------------
// train

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

/// Covariate names of the head, so the cohort is read with them.
fn head_covariates(head: &Path) -> anyhow::Result<Vec<String>> {
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(head.join("head.json"))
            .with_context(|| format!("{}: not a head folder (no head.json)", head.display()))?,
    )?;
    Ok(serde_json::from_value(info["covariates"]["names"].clone()).unwrap_or_default())
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

pub fn eval(head: &Path, args: &SurvivalEvalArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let mut cohort = cohort_for_head(head, &args.cohort, true, common.quiet)?;
    let (pred, config) = on_device(
        common.device,
        PredictJob {
            head,
            cohort: &mut cohort,
        },
    )?;
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
    let mut cohort = cohort_for_head(head, &args.cohort, false, common.quiet)?;
    let (pred, config) = on_device(
        common.device,
        PredictJob {
            head,
            cohort: &mut cohort,
        },
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_split_is_per_group() {
        let risk = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 40.0];
        let group = [0, 0, 0, 1, 1, 1, 1];
        assert_eq!(median_split(&risk, &group), vec![0, 0, 1, 0, 0, 1, 1]);
    }

    #[test]
    fn clinical_csv_with_defaults_and_errors_that_name_the_slide() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.csv");
        std::fs::write(&p, "slide_id,time,event,age\nA,3.5,1,60\nB,2,0,70\n").unwrap();
        let a = CohortArgs {
            bags: None,
            clinical: Some(p.clone()),
            slide_col: "slide_id".into(),
            time_col: "time".into(),
            event_col: "event".into(),
            patient_col: None,
            covariates: vec!["age".into()],
        };
        let c = read_clinical(&p, &a).unwrap();
        assert_eq!(c.slide, vec!["A", "B"]);
        assert_eq!(c.patient, c.slide);
        assert_eq!(c.time, vec![3.5, 2.0]);
        assert_eq!(c.event, vec![true, false]);
        assert_eq!(c.covariates, vec![vec![60.0], vec![70.0]]);
        std::fs::write(&p, "slide_id,time,event\nA,3.5,1\nB,,0\n").unwrap();
        let e = read_clinical(&p, &a).err().unwrap().to_string();
        assert!(e.contains("slide B"), "{e}");
        std::fs::write(&p, "slide_id,time,event\nA,3.5,2\n").unwrap();
        let a2 = CohortArgs {
            covariates: vec![],
            ..a
        };
        let e = read_clinical(&p, &a2).err().unwrap().to_string();
        assert!(e.contains("use 1 (event) or 0"), "{e}");
    }
}
