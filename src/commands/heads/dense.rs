//! `heads train|eval|predict --task segment|canopy`: dense heads on the layer tokens of
//! `satellite embed --layers last:4`, with per-pixel targets from a label raster (classes, or
//! heights in metres) warped onto each source raster's grid. A trained head is a folder:
//! `head.json` (task, head configuration, backbone identity, preprocessing), `head.safetensors`,
//! `metrics.parquet`, `training.parquet` (one row per epoch) and `training.png`.
//! `predict` runs backbone + head over a whole raster (as `satellite predict --head DIR`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use dinoadapt_core::checkpoint::safetensors_io::{read_safetensors, write_safetensors};
use dinoadapt_core::checkpoint::HostTensor;
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::plot::{panels_png, Panel};
use dinoadapt_datasets::write_parquet;
use dinoadapt_heads::dense::{
    evaluate, train as train_head, BinNorm, Bins, DenseHead, DenseHeadConfig, DenseMetrics,
    DenseSet, DenseTargets, DenseTrainConfig, DptHeadConfig, DptOutput, EpochLog, LinearHeadConfig,
    RegressionLoss, TokenSpec,
};
use dinoadapt_satellite::align::{warp_to_grid, LabelResampling};
use dinoadapt_satellite::{Normalization, Raster, Window};
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, ParquetReader, SerReader, Series};
use serde_json::{json, Value};

use super::{required, Common, Task};
use crate::commands::satellite::dense::{self as sat, Backbone, HeadInfo, Preprocessing};
use crate::commands::satellite::{predict_config, predict_with_head, ChipArgs, HeadChoice};
use crate::device::{on_device, BackendJob};
use crate::model_args::ModelArgs;

/// `heads train` flags of the dense tasks.
#[derive(Args, Debug)]
pub struct DenseTrainArgs {
    /// segment/canopy: training features (safetensors from `satellite embed --layers last:4`,
    /// with its .parquet chips table).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// segment/canopy: the target raster (class values, or heights in metres), warped onto
    /// each source raster's grid; its nodata (and NaN) pixels are ignored.
    #[arg(long)]
    pub targets: Option<PathBuf>,
    /// segment/canopy: validation features (per-epoch metric; default: none).
    #[arg(long)]
    pub val_embeddings: Option<PathBuf>,
    /// segment/canopy: validation targets (default: --targets).
    #[arg(long)]
    pub val_targets: Option<PathBuf>,
    /// segment/canopy: linear (last layer), ms (last 4 layers) or dpt (default: linear for
    /// segment, dpt for canopy).
    #[arg(long)]
    pub head_kind: Option<String>,
    /// segment: number of classes (default: the largest class value in the targets + 1).
    #[arg(long)]
    pub classes: Option<usize>,
    /// segment: class names, comma-separated, in class-value order (recorded in head.json).
    #[arg(long, value_delimiter = ',')]
    pub class_names: Vec<String>,
    /// segment: target value to ignore (besides nodata).
    #[arg(long, default_value_t = 255)]
    pub ignore_index: u32,
    /// segment: do not concatenate the class token to the patch tokens (DINOv2 does).
    #[arg(long)]
    pub no_cls_token: bool,
    /// segment: weight of the soft Dice term added to the cross-entropy.
    #[arg(long, default_value_t = 0.0)]
    pub dice_weight: f64,
    /// canopy: bin weights, relu-eps (Meta's model) or softmax.
    #[arg(long, default_value = "relu-eps")]
    pub bin_norm: String,
    /// canopy: lowest height (metres) of the bins / regression range.
    #[arg(long, default_value_t = 0.0)]
    pub min_height: f64,
    /// canopy: highest height (default: the largest training target, rounded up).
    #[arg(long)]
    pub max_height: Option<f64>,
    /// canopy: l1 (absolute error) or l2 (squared error).
    #[arg(long, default_value = "l1")]
    pub height_loss: String,
    /// canopy: width of the DPT fusion path.
    #[arg(long, default_value_t = 64)]
    pub dpt_features: usize,
    /// canopy: block side (pixels) of the block-R².
    #[arg(long, default_value_t = 50)]
    pub block: usize,
    /// segment/canopy: resampling of the target raster onto the imagery grid (default: nearest
    /// for segment, bilinear for canopy).
    #[arg(long)]
    pub target_resampling: Option<String>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

/// Defaults of the flags the dense tasks share with the others (`--lr`, `--weight-decay`,
/// `--bins`: canopy height bins of the DPT output, 0 for plain regression).
const DEFAULT_LR: f64 = 1e-3;
const DEFAULT_WEIGHT_DECAY: f64 = 1e-4;
const DEFAULT_BINS: usize = 256;

/// `heads eval` flags of the dense tasks.
#[derive(Args, Debug)]
pub struct DenseEvalArgs {
    /// segment/canopy: features to evaluate on (from the head's backbone).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// segment/canopy: their target raster.
    #[arg(long)]
    pub targets: Option<PathBuf>,
}

/// `heads predict` flags of the dense tasks.
#[derive(Args, Debug)]
pub struct DensePredictArgs {
    /// segment/canopy: the raster to predict (output: a GeoTIFF on its grid, --out).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// segment/canopy: the backbone checkpoint (default: the head's recorded model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// segment/canopy: a random-init backbone (--preset, --backbone-seed), for tests.
    #[arg(long, conflicts_with = "model")]
    pub random_init: bool,
    #[arg(long)]
    pub preset: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub backbone_seed: u64,
    /// segment/canopy: chip stride (default: half the head's chip size).
    #[arg(long)]
    pub stride: Option<usize>,
    /// segment/canopy: blending of overlapping chips: cosine, gaussian, uniform.
    #[arg(long, default_value = "cosine")]
    pub blend: String,
    #[arg(long, default_value_t = 8)]
    pub predict_batch: usize,
    /// segment/canopy: write a Cloud-Optimised GeoTIFF.
    #[arg(long)]
    pub cog: bool,
}

/// One row of a chips table.
struct RegionRow {
    source: String,
    window: Window,
}

/// Features of a file in the heads' token layout, and where each row came from.
struct Features {
    tokens: Vec<f32>,
    n: usize,
    layers: usize,
    dim: usize,
    grid: (usize, usize),
    spec: TokenSpec,
    regions: Vec<RegionRow>,
    backbone: Backbone,
    preprocessing: Preprocessing,
}

fn meta<'a>(m: &'a HashMap<String, String>, key: &str, path: &Path) -> anyhow::Result<&'a str> {
    m.get(key).map(|s| s.as_str()).with_context(|| {
        format!(
            "{}: no `{key}` in the metadata; embed with `dinoadapt satellite embed`",
            path.display()
        )
    })
}

/// Load `path` keeping the last `want` layers (class token + patches of each).
fn load_features(path: &Path, want: usize) -> anyhow::Result<Features> {
    let (tensors, m) =
        read_safetensors(path).with_context(|| format!("reading features {}", path.display()))?;
    let tensors: HashMap<String, HostTensor> = tensors.into_iter().collect();
    let arch: Value = serde_json::from_str(meta(&m, "architecture", path)?)?;
    let registers = arch["num_register_tokens"].as_u64().unwrap_or(0) as usize;
    let depth = arch["depth"].as_u64().unwrap_or(0) as usize;
    let recorded: Vec<usize> = serde_json::from_str(m.get("layers").map_or("[]", |s| s))?;
    let cls = tensors
        .get("cls")
        .with_context(|| format!("{}: no `cls` tensor", path.display()))?;
    let (n, dim) = (cls.shape[0], cls.shape[1]);
    if recorded.len() < want {
        bail!(
            "{}: the head reads {want} backbone layers, the file has {} layer tensors; embed \
             with `satellite embed ... --layers last:4` (the intermediate layers)",
            path.display(),
            recorded.len()
        );
    }
    let chosen = recorded[recorded.len() - want..].to_vec();
    // Whether layer.{i} went through the final norm: recorded by the embed commands, or (older
    // files) seen when the last block is among them (normed, it equals the final output).
    let norm_layers = match m.get("layers_normed") {
        Some(v) => v == "true",
        None => match tensors.get(&format!("layer.{}", depth.saturating_sub(1))) {
            Some(last) => {
                let t = last.shape[1];
                let d = last.data[..t * dim].iter().zip(&cls.data[..dim]);
                d.map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) < 1e-4
            }
            None => false,
        },
    };
    let mut layer_data = Vec::with_capacity(want);
    let mut patches = 0;
    for i in &chosen {
        let t = tensors
            .get(&format!("layer.{i}"))
            .with_context(|| format!("{}: no `layer.{i}` tensor", path.display()))?;
        patches = t.shape[1] - 1 - registers;
        layer_data.push(t);
    }
    let side = (patches as f64).sqrt().round() as usize;
    if side * side != patches {
        bail!(
            "{}: {patches} patches are not a square grid",
            path.display()
        );
    }
    let per = (1 + registers + patches) * dim;
    let mut tokens = Vec::with_capacity(n * want * (1 + patches) * dim);
    for s in 0..n {
        for t in &layer_data {
            let row = &t.data[s * per..(s + 1) * per];
            tokens.extend_from_slice(&row[..dim]);
            tokens.extend_from_slice(&row[(1 + registers) * dim..]);
        }
    }
    let table = path.with_extension("parquet");
    let df =
        ParquetReader::new(std::fs::File::open(&table).with_context(|| {
            format!("{}: the chips table beside the features", table.display())
        })?)
        .finish()?;
    let (fr, src) = (
        df.column("feature_row")?.u64()?,
        df.column("source")?.str()?,
    );
    let (c, r) = (df.column("col")?.i64()?, df.column("row")?.i64()?);
    let (w, h) = (df.column("width")?.u64()?, df.column("height")?.u64()?);
    let mut regions: Vec<Option<RegionRow>> = (0..n).map(|_| None).collect();
    for i in 0..df.height() {
        let row = fr.get(i).unwrap_or(u64::MAX) as usize;
        if row < n {
            regions[row] = Some(RegionRow {
                source: src.get(i).unwrap_or_default().to_string(),
                window: Window {
                    col: c.get(i).unwrap_or(0),
                    row: r.get(i).unwrap_or(0),
                    width: w.get(i).unwrap_or(0) as usize,
                    height: h.get(i).unwrap_or(0) as usize,
                },
            });
        }
    }
    let regions: Vec<RegionRow> = regions
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{}: no row for feature {i}", table.display())))
        .collect::<anyhow::Result<_>>()?;
    let bands: Vec<usize> = serde_json::from_str(meta(&m, "bands", path)?)?;
    let chip_size: usize = meta(&m, "chip_size", path)?.parse()?;
    Ok(Features {
        tokens,
        n,
        layers: want,
        dim,
        grid: (side, side),
        spec: TokenSpec {
            layers: chosen,
            norm_layers,
        },
        regions,
        backbone: Backbone {
            model: meta(&m, "model", path)?.to_string(),
            checkpoint_sha256: meta(&m, "checkpoint_sha256", path)?.to_string(),
            architecture: arch,
        },
        preprocessing: Preprocessing {
            domain: m
                .get("domain")
                .cloned()
                .unwrap_or_else(|| "satellite".into()),
            normalization: serde_json::from_str::<Normalization>(meta(&m, "normalization", path)?)?,
            bands,
            chip_size,
            chip_stride: m
                .get("chip_stride")
                .and_then(|s| s.parse().ok())
                .unwrap_or(chip_size),
        },
    })
}

/// Target values of every region (`[n, size, size]`), NaN where the target raster has no data.
fn read_targets(
    f: &Features,
    targets: &Path,
    resampling: LabelResampling,
) -> anyhow::Result<Vec<f32>> {
    let label = Raster::open(targets)?;
    let size = f.preprocessing.chip_size;
    let scratch = std::env::temp_dir().join(format!("dinoadapt-dense-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut aligned: BTreeMap<String, Raster> = BTreeMap::new();
    let mut out = Vec::with_capacity(f.n * size * size);
    for region in &f.regions {
        if !aligned.contains_key(&region.source) {
            let image = Raster::open(Path::new(&region.source))
                .with_context(|| format!("the source raster {} of the features", region.source))?;
            let dest = scratch.join(format!("{}.tif", aligned.len()));
            let a = warp_to_grid(&label, image.info(), &dest, resampling)?;
            aligned.insert(region.source.clone(), a);
        }
        let px = aligned[&region.source].read_window(&[1], region.window)?;
        if px.width * px.height != size * size {
            bail!(
                "a chip of {}x{} px in the table; the features are of {size} px chips",
                px.width,
                px.height
            );
        }
        out.extend(
            px.data
                .iter()
                .zip(&px.valid)
                .map(|(&v, &ok)| if ok { v } else { f32::NAN }),
        );
    }
    drop(aligned);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(out)
}

fn class_targets(values: &[f32], classes: usize, ignore: u32) -> anyhow::Result<DenseTargets> {
    let values = values
        .iter()
        .map(|&v| {
            if !v.is_finite() || v == ignore as f32 {
                return Ok(ignore);
            }
            if v < 0.0 || v.fract() != 0.0 || v as usize >= classes {
                bail!(
                    "target value {v} is not a class in 0..{classes} (nor --ignore-index \
                     {ignore}); give --classes or fix the target raster"
                );
            }
            Ok(v as u32)
        })
        .collect::<anyhow::Result<Vec<u32>>>()?;
    Ok(DenseTargets::Classes {
        values,
        classes,
        ignore_index: ignore,
    })
}

fn dense_set(f: &Features, targets: DenseTargets) -> anyhow::Result<DenseSet> {
    let s = f.preprocessing.chip_size;
    Ok(DenseSet::new(
        f.tokens.clone(),
        (f.n, f.layers, f.dim),
        f.grid,
        (s, s),
        targets,
    )?)
}

fn resampling(args: &DenseTrainArgs, task: Task) -> anyhow::Result<LabelResampling> {
    let name = args.target_resampling.as_deref().unwrap_or(match task {
        Task::Segment => "nearest",
        _ => "bilinear",
    });
    LabelResampling::parse(name).with_context(|| {
        format!("--target-resampling `{name}`: nearest, bilinear, average or mode")
    })
}

fn head_config(
    task: Task,
    args: &DenseTrainArgs,
    bins: usize,
    dim: usize,
    train_values: &[f32],
) -> anyhow::Result<DenseHeadConfig> {
    let kind = args.head_kind.as_deref().unwrap_or(match task {
        Task::Segment => "linear",
        _ => "dpt",
    });
    Ok(match (task, kind) {
        (Task::Segment, "linear" | "ms") => {
            let classes = match args.classes {
                Some(c) => c,
                None => {
                    let max = train_values
                        .iter()
                        .filter(|v| v.is_finite() && **v != args.ignore_index as f32)
                        .fold(-1f32, |m, &v| m.max(v));
                    if max < 0.0 {
                        bail!("the targets have no class values; give --classes");
                    }
                    max as usize + 1
                }
            };
            DenseHeadConfig::Linear(
                LinearHeadConfig::new(dim, classes)
                    .with_layers(if kind == "ms" { 4 } else { 1 })
                    .with_use_cls(!args.no_cls_token),
            )
        }
        (Task::Canopy, "dpt") => {
            let max = match args.max_height {
                Some(m) => m,
                None => {
                    let m = train_values
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    if !m.is_finite() {
                        bail!("the targets have no valid height");
                    }
                    (m as f64).ceil()
                }
            };
            let output = if bins == 0 {
                DptOutput::Regression {
                    min: args.min_height,
                    max,
                }
            } else {
                let norm = match args.bin_norm.as_str() {
                    "relu-eps" => BinNorm::default(),
                    "softmax" => BinNorm::Softmax,
                    o => bail!("--bin-norm `{o}`: relu-eps or softmax"),
                };
                DptOutput::Bins(Bins::new(bins, args.min_height, max, norm)?)
            };
            let f = args.dpt_features;
            DenseHeadConfig::Dpt(
                DptHeadConfig::new(dim, output)
                    .with_features(f)
                    .with_scale_channels([f / 2, f, 2 * f, 2 * f])
                    .with_head_channels(32.min(f)),
            )
        }
        (Task::Segment, o) => bail!("--head-kind `{o}` for segment: linear or ms"),
        (_, o) => bail!("--head-kind `{o}` for canopy: dpt"),
    })
}

struct TrainJob<'a> {
    config: &'a DenseHeadConfig,
    train: &'a DenseSet,
    val: Option<&'a DenseSet>,
    cfg: &'a DenseTrainConfig,
    quiet: bool,
}

type TrainOutput = (
    dinoadapt_core::checkpoint::NamedTensors,
    Vec<EpochLog>,
    Vec<(String, DenseMetrics)>,
);

impl BackendJob for TrainJob<'_> {
    type Output = TrainOutput;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<TrainOutput> {
        let quiet = self.quiet;
        let trained =
            train_head::<Autodiff<B>>(self.config, self.train, self.val, self.cfg, &device, |e| {
                if !quiet {
                    eprintln!(
                        "epoch {:>3}  loss {:.4}{}  {:.1} s",
                        e.epoch,
                        e.train_loss,
                        match (e.val_loss, e.val_metric) {
                            (Some(l), Some(m)) => format!("  val loss {l:.4}  val metric {m:.4}"),
                            _ => String::new(),
                        },
                        e.seconds
                    );
                }
            })?;
        let mut metrics = vec![(
            "train".to_string(),
            evaluate(&trained.head, self.config, self.train, self.cfg, &device)?.metrics,
        )];
        if let Some(v) = self.val {
            metrics.push((
                "val".into(),
                evaluate(&trained.head, self.config, v, self.cfg, &device)?.metrics,
            ));
        }
        Ok((trained.head.to_named(), trained.log, metrics))
    }
}

fn metrics_table(rows: &[(String, DenseMetrics)]) -> anyhow::Result<DataFrame> {
    let split = col::<String>("split", rows.iter().map(|r| r.0.clone()).collect());
    let opt = |name: &str, v: Vec<Option<f64>>| Series::new(name.into(), v).into_column();
    let mut columns = vec![split];
    match &rows[0].1 {
        DenseMetrics::Segmentation(first) => {
            let seg: Vec<_> = rows
                .iter()
                .filter_map(|r| match &r.1 {
                    DenseMetrics::Segmentation(m) => Some(m),
                    _ => None,
                })
                .collect();
            columns.push(col::<u64>("pixels", seg.iter().map(|m| m.pixels).collect()));
            columns.push(col::<f64>(
                "pixel_accuracy",
                seg.iter().map(|m| m.pixel_accuracy).collect(),
            ));
            columns.push(col::<f64>("miou", seg.iter().map(|m| m.miou).collect()));
            columns.push(col::<f64>(
                "mean_dice",
                seg.iter().map(|m| m.mean_dice).collect(),
            ));
            for k in 0..first.iou.len() {
                columns.push(opt(
                    &format!("iou_{k}"),
                    seg.iter().map(|m| m.iou[k]).collect(),
                ));
                columns.push(opt(
                    &format!("dice_{k}"),
                    seg.iter().map(|m| m.dice[k]).collect(),
                ));
            }
        }
        DenseMetrics::Regression(_) => {
            let reg: Vec<_> = rows
                .iter()
                .filter_map(|r| match &r.1 {
                    DenseMetrics::Regression(m) => Some(m),
                    _ => None,
                })
                .collect();
            columns.push(col::<u64>("pixels", reg.iter().map(|m| m.pixels).collect()));
            columns.push(col::<f64>("mae", reg.iter().map(|m| m.mae).collect()));
            columns.push(col::<f64>("rmse", reg.iter().map(|m| m.rmse).collect()));
            columns.push(opt("r2", reg.iter().map(|m| m.r2).collect()));
            columns.push(col::<f64>("bias", reg.iter().map(|m| m.bias).collect()));
            columns.push(opt("block_r2", reg.iter().map(|m| m.block_r2).collect()));
            columns.push(col::<u64>("blocks", reg.iter().map(|m| m.blocks).collect()));
        }
    }
    Ok(DataFrame::new(rows.len(), columns)?)
}

fn training_table(log: &[EpochLog]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new(
        log.len(),
        vec![
            col::<u64>("epoch", log.iter().map(|e| e.epoch as u64).collect()),
            col::<f64>("train_loss", log.iter().map(|e| e.train_loss).collect()),
            Series::new(
                "val_loss".into(),
                log.iter().map(|e| e.val_loss).collect::<Vec<_>>(),
            )
            .into_column(),
            Series::new(
                "val_metric".into(),
                log.iter().map(|e| e.val_metric).collect::<Vec<_>>(),
            )
            .into_column(),
            col::<f64>("seconds", log.iter().map(|e| e.seconds).collect()),
        ],
    )?)
}

fn training_plot(path: &Path, log: &[EpochLog], metric: &str) -> anyhow::Result<()> {
    let pts = |f: &dyn Fn(&EpochLog) -> Option<f64>| -> Vec<(f64, f64)> {
        log.iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let mut loss = Panel::new("loss")
        .x_label("epoch")
        .y_label("loss")
        .series("train", pts(&|e| Some(e.train_loss)));
    let val = pts(&|e| e.val_loss);
    let mut panels = Vec::new();
    if !val.is_empty() {
        loss = loss.series("val", val);
        panels.push(loss);
        panels.push(
            Panel::new(format!("validation {metric}"))
                .x_label("epoch")
                .y_label(metric)
                .series("val", pts(&|e| e.val_metric)),
        );
    } else {
        panels.push(loss);
    }
    let columns = panels.len();
    panels_png(path, &panels, columns)?;
    Ok(())
}

pub fn train(task: Task, args: &DenseTrainArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let name = task.name();
    let emb = required(&args.embeddings, "--embeddings", name)?;
    let targets = required(&args.targets, "--targets", name)?;
    let out = required(&common.out, "--out", name)?;
    let kind_layers = match (task, args.head_kind.as_deref()) {
        (Task::Segment, None | Some("linear")) => 1,
        _ => 4,
    };
    let f = load_features(emb, kind_layers)?;
    let res = resampling(args, task)?;
    let tv = read_targets(&f, targets, res)?;
    let config = head_config(task, args, common.bins.unwrap_or(DEFAULT_BINS), f.dim, &tv)?;
    let to_targets = |values: &[f32]| -> anyhow::Result<DenseTargets> {
        Ok(match &config {
            DenseHeadConfig::Linear(c) => class_targets(values, c.classes, args.ignore_index)?,
            DenseHeadConfig::Dpt(_) => DenseTargets::Heights(values.to_vec()),
        })
    };
    let train_set = dense_set(&f, to_targets(&tv)?)?;
    let val_set = match &args.val_embeddings {
        Some(p) => {
            let v = load_features(p, config.layers())?;
            if v.backbone.checkpoint_sha256 != f.backbone.checkpoint_sha256 {
                bail!(
                    "{} and {} come from different backbones",
                    emb.display(),
                    p.display()
                );
            }
            let vt = read_targets(&v, args.val_targets.as_deref().unwrap_or(targets), res)?;
            Some(dense_set(&v, to_targets(&vt)?)?)
        }
        None => None,
    };
    let loss = match args.height_loss.as_str() {
        "l1" => RegressionLoss::L1,
        "l2" => RegressionLoss::L2,
        o => bail!("--height-loss `{o}`: l1 or l2"),
    };
    let cfg = DenseTrainConfig::new()
        .with_epochs(common.epochs.unwrap_or(30))
        .with_batch_size(args.batch_size)
        .with_lr(common.lr.unwrap_or(DEFAULT_LR))
        .with_weight_decay(common.weight_decay.unwrap_or(DEFAULT_WEIGHT_DECAY))
        .with_seed(common.seed)
        .with_dice_weight(args.dice_weight)
        .with_regression_loss(loss)
        .with_block(args.block);
    let (tensors, log, metrics) = on_device(
        common.device,
        TrainJob {
            config: &config,
            train: &train_set,
            val: val_set.as_ref(),
            cfg: &cfg,
            quiet: common.quiet,
        },
    )?;
    std::fs::create_dir_all(out)?;
    let info = HeadInfo {
        task: name.to_string(),
        head: config.clone(),
        tokens: f.spec.clone(),
        backbone: f.backbone.clone(),
        preprocessing: f.preprocessing.clone(),
        class_names: args.class_names.clone(),
    };
    let mut record = serde_json::to_value(&info)?;
    record["training"] = serde_json::to_value(&cfg)?;
    record["targets"] = json!({
        "raster": targets.display().to_string(),
        "resampling": res,
        "units": if task == Task::Canopy { "m" } else { "class" },
        "ignore_index": args.ignore_index,
    });
    record["features"] = json!(emb.display().to_string());
    record["metrics"] = json!(metrics.iter().cloned().collect::<BTreeMap<_, _>>());
    record["dinoadapt_version"] = json!(env!("CARGO_PKG_VERSION"));
    let st_meta = HashMap::from([
        ("dinoadapt.head".to_string(), name.to_string()),
        ("config".to_string(), serde_json::to_string(&config)?),
        (
            "checkpoint_sha256".to_string(),
            f.backbone.checkpoint_sha256.clone(),
        ),
    ]);
    write_safetensors(&out.join("head.safetensors"), &tensors, st_meta)?;
    let json_path = out.join("head.json");
    let part = out.join("head.json.part");
    std::fs::write(&part, serde_json::to_string_pretty(&record)?)?;
    std::fs::rename(&part, &json_path)?;
    write_parquet(&out.join("metrics.parquet"), &mut metrics_table(&metrics)?)?;
    write_parquet(&out.join("training.parquet"), &mut training_table(&log)?)?;
    let metric = if task == Task::Segment { "mIoU" } else { "R²" };
    training_plot(&out.join("training.png"), &log, metric)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "task": name,
            "head": config,
            "samples": {"train": train_set.n, "val": val_set.as_ref().map(|v| v.n)},
            "metrics": record["metrics"],
        }))?
    );
    eprintln!("head -> {}", out.display());
    Ok(ExitCode::SUCCESS)
}

struct EvalJob<'a> {
    head: &'a sat::HeadFolder,
    set: &'a DenseSet,
    cfg: DenseTrainConfig,
}

impl BackendJob for EvalJob<'_> {
    type Output = DenseMetrics;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<DenseMetrics> {
        let head =
            DenseHead::<B>::from_named(&self.head.info.head, self.head.tensors.clone(), &device)?;
        Ok(evaluate(&head, &self.head.info.head, self.set, &self.cfg, &device)?.metrics)
    }
}

pub fn eval(head_dir: &Path, args: &DenseEvalArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let head = sat::load(head_dir)?;
    let emb = required(&args.embeddings, "--embeddings", &head.info.task)?;
    let targets = required(&args.targets, "--targets", &head.info.task)?;
    let f = load_features(emb, head.info.head.layers())?;
    sat::check_backbone(&head, &f.backbone.checkpoint_sha256, &f.backbone.model)?;
    if f.spec != head.info.tokens {
        bail!(
            "{}: layers {:?} (norm {}), the head reads {:?} (norm {})",
            emb.display(),
            f.spec.layers,
            f.spec.norm_layers,
            head.info.tokens.layers,
            head.info.tokens.norm_layers
        );
    }
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(head_dir.join("head.json"))?)?;
    let res = record["targets"]["resampling"]
        .as_str()
        .and_then(LabelResampling::parse)
        .unwrap_or(LabelResampling::Nearest);
    let mut cfg: DenseTrainConfig = serde_json::from_value(record["training"].clone())
        .unwrap_or_else(|_| DenseTrainConfig::new());
    cfg.block = record["training"]["block"].as_u64().unwrap_or(50) as usize;
    let tv = read_targets(&f, targets, res)?;
    let t = match &head.info.head {
        DenseHeadConfig::Linear(c) => class_targets(
            &tv,
            c.classes,
            record["targets"]["ignore_index"].as_u64().unwrap_or(255) as u32,
        )?,
        DenseHeadConfig::Dpt(_) => DenseTargets::Heights(tv),
    };
    let set = dense_set(&f, t)?;
    let m = on_device(
        common.device,
        EvalJob {
            head: &head,
            set: &set,
            cfg,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(ExitCode::SUCCESS)
}

pub fn predict(
    head_dir: &Path,
    args: &DensePredictArgs,
    common: &Common,
) -> anyhow::Result<ExitCode> {
    let input = required(&args.input, "--input", "segment/canopy")?;
    let out = required(&common.out, "--out", "segment/canopy")?;
    let head = sat::load(head_dir)?;
    let size = head.info.preprocessing.chip_size;
    let raster = Raster::open(input)?;
    let chips = ChipArgs {
        size,
        stride: Some(args.stride.unwrap_or((size / 2).max(1))),
        bands: head.info.preprocessing.bands.clone(),
        max_nodata: 1.0,
    };
    let cfg = predict_config(&chips, &args.blend, args.predict_batch, None, args.cog)?;
    let model = ModelArgs {
        model: args.model.clone(),
        random_init: args.random_init,
        seed: args.backbone_seed,
        preset: args.preset.clone(),
        arch_file: None,
        num_heads: None,
        interpolation: None,
    };
    let dir = head_dir.to_string_lossy().into_owned();
    let s = predict_with_head(
        &raster,
        out,
        &cfg,
        &HeadChoice {
            head: &dir,
            model: &model,
            normalize: "none",
            device: common.device,
            tf32: false,
            quiet: common.quiet,
        },
    )?;
    eprintln!(
        "{} chips, {:.2} Mpx in {:.2} s -> {}",
        s.chips,
        s.megapixels,
        s.seconds,
        s.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
