//! `heads train|eval|predict --task segment|canopy`: dense heads on the layer tokens of any
//! domain's `embed --layers ...` (satellite chips, volume slices, slide tiles), with per-pixel
//! targets in the domain's own label format (a label raster, a label volume, GeoJSON
//! annotations). The engine (head configuration, training, metrics, the head folder:
//! `head.json`, `head.safetensors`, `metrics.parquet`, `training.parquet`, `training.png`) is
//! `dinoadapt_heads::dense`; the domains read their targets, cut their inputs and write their
//! predictions behind `dinoadapt_datasets::Domain` (`dense_*`). Here: the flags, the domain of
//! the feature file or head folder looked up among the registered domains ([`targets`],
//! [`folder`]), the device, and printing. `predict` runs backbone + head over a whole raster,
//! volume or slide and the domain writes its own format.

pub mod folder;
pub mod predict;
mod targets;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use dinoadapt_datasets::{DenseLabels, DensePredictOptions, DenseTargetOptions};
use dinoadapt_heads::dense::head_folder::{self as head_folder, head_info};
use dinoadapt_heads::dense::layer_tokens::{load_features, Features};
use dinoadapt_heads::dense::{
    head_config, targets_for, train_and_measure, BinNorm, DenseMetrics, DenseRecord, DenseSet,
    DenseTargets, DenseTrainConfig, HeadChoice, HeadFolder, RegressionLoss, TrainedDense,
    TrainedHead,
};
use serde_json::json;

use super::{required, Common, Task};
use crate::device::{on_device, BackendJob};
use crate::model_args::ModelArgs;
use targets::{domain_of, input_size, labelled, values};

/// Features and their targets (train and eval).
#[derive(Args, Debug)]
pub struct DenseData {
    /// segment/canopy: features with layer tokens (`satellite|radiology|pathology embed
    /// --layers last:4`; the table the command writes beside them is read too). Several files
    /// (comma-separated or repeated: one per volume or slide) are joined into one set.
    #[arg(long, value_delimiter = ',')]
    pub embeddings: Vec<PathBuf>,
    /// segment/canopy: the targets in the domain's format, one for all feature files or one
    /// per file. Satellite: a raster (class values, or heights in metres) warped onto each
    /// source raster's grid, nodata ignored. Radiology: a label volume (NIfTI or DICOM) on the
    /// image's grid or resampled onto it. Pathology: GeoJSON annotations in level-0 pixels
    /// (class 0 = no polygon).
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<PathBuf>,
    /// segment (radiology): the image volume each feature file was made from, in order.
    #[arg(long, value_delimiter = ',')]
    pub volume: Vec<PathBuf>,
}

/// `heads train` flags of the dense tasks.
#[derive(Args, Debug)]
pub struct DenseTrainArgs {
    #[command(flatten)]
    pub data: DenseData,
    /// segment/canopy: validation features (per-epoch metric; default: none), as
    /// --embeddings.
    #[arg(long, value_delimiter = ',')]
    pub val_embeddings: Vec<PathBuf>,
    /// segment/canopy: validation targets (default: --targets).
    #[arg(long, value_delimiter = ',')]
    pub val_targets: Vec<PathBuf>,
    /// segment (radiology): the image volumes of the validation features.
    #[arg(long, value_delimiter = ',')]
    pub val_volume: Vec<PathBuf>,
    /// segment/canopy: linear (last layer), ms (last 4 layers) or dpt (default: linear for
    /// segment, dpt for canopy).
    #[arg(long)]
    pub head_kind: Option<String>,
    /// segment: number of classes (default: the largest class value in the targets + 1).
    #[arg(long)]
    pub classes: Option<usize>,
    /// segment: class names, comma-separated, in class-value order (recorded in head.json;
    /// pathology: the background first, then the annotation classes to learn).
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

/// `heads eval` flags of the dense tasks: features of the head's backbone and their targets.
#[derive(Args, Debug)]
pub struct DenseEvalArgs {
    #[command(flatten)]
    pub data: DenseData,
}

/// `heads predict` flags of the dense tasks.
#[derive(Args, Debug)]
pub struct DensePredictArgs {
    /// segment/canopy: what to predict, in the head's domain. A raster (--out: a GeoTIFF on
    /// its grid); a volume, NIfTI or DICOM series (--out: a folder of NIfTI label maps on the
    /// source grid); a slide (--out: a folder with the mask PNG and GeoJSON).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// segment (slides): level-0 µm/px for a slide that records none.
    #[arg(long)]
    pub mpp: Option<f64>,
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
    /// segment/canopy: chip stride (rasters, default: half the chip size) or tile stride
    /// (slides, default: the stride of the features) in input pixels.
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

/// The training set of `f`'s tokens (moved out of `f`, not copied) and `targets`.
fn dense_set(f: &mut Features, l: &DenseLabels, targets: DenseTargets) -> anyhow::Result<DenseSet> {
    let s = l.input_size;
    Ok(DenseSet::new(
        std::mem::take(&mut f.tokens),
        (f.n, f.layers, f.dim),
        f.grid,
        (s, s),
        targets,
    )?)
}

/// The head `--head-kind` and the other flags of `task` choose (`bins`: canopy height bins,
/// 0 for plain regression).
fn head_choice(task: Task, args: &DenseTrainArgs, bins: usize) -> anyhow::Result<HeadChoice> {
    let kind = args.head_kind.as_deref().unwrap_or(match task {
        Task::Segment => "linear",
        _ => "dpt",
    });
    Ok(match (task, kind) {
        (Task::Segment, "linear" | "ms") => HeadChoice::Linear {
            layers: if kind == "ms" { 4 } else { 1 },
            classes: args.classes,
            ignore_index: args.ignore_index,
            use_cls: !args.no_cls_token,
        },
        (Task::Canopy, "dpt") => HeadChoice::Dpt {
            bins,
            bin_norm: match (bins, args.bin_norm.as_str()) {
                (0, _) | (_, "relu-eps") => BinNorm::default(),
                (_, "softmax") => BinNorm::Softmax,
                (_, o) => bail!("--bin-norm `{o}`: relu-eps or softmax"),
            },
            min_height: args.min_height,
            max_height: args.max_height,
            features: args.dpt_features,
        },
        (Task::Segment, o) => bail!("--head-kind `{o}` for segment: linear or ms"),
        (_, o) => bail!("--head-kind `{o}` for canopy: dpt"),
    })
}

struct DenseTrainJob<'a> {
    config: &'a dinoadapt_heads::dense::DenseHeadConfig,
    train: &'a DenseSet,
    val: Option<&'a DenseSet>,
    cfg: &'a DenseTrainConfig,
    quiet: bool,
}

impl BackendJob for DenseTrainJob<'_> {
    type Output = TrainedHead;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<TrainedHead> {
        let quiet = self.quiet;
        let on_epoch = |e: &dinoadapt_heads::dense::EpochLog| {
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
        };
        Ok(train_and_measure::<Autodiff<B>>(
            self.config,
            self.train,
            self.val,
            self.cfg,
            &device,
            on_epoch,
        )?)
    }
}

/// Feature files, their targets (one for all, or one per file) and image volumes (none, or one
/// per file).
struct Sources<'a> {
    embeddings: &'a [PathBuf],
    targets: &'a [PathBuf],
    volumes: &'a [PathBuf],
}

impl Sources<'_> {
    fn check(&self, flags: &str) -> anyhow::Result<()> {
        let n = self.embeddings.len();
        if n == 0 {
            bail!("segment/canopy need {flags}embeddings");
        }
        if self.targets.len() != 1 && self.targets.len() != n {
            bail!(
                "{n} {flags}embeddings files and {} {flags}targets: give one target for all, or \
                 one per file",
                self.targets.len()
            );
        }
        if !self.volumes.is_empty() && self.volumes.len() != n {
            bail!(
                "{n} {flags}embeddings files and {} {flags}volume: one volume per file",
                self.volumes.len()
            );
        }
        Ok(())
    }
}

/// The feature files of `sources` and their targets (`template`: the options of every file)
/// joined into one set, checked to share a backbone (`backbone` when given), layers, domain and
/// input size.
fn labelled_features(
    sources: &Sources,
    layers: usize,
    template: &DenseTargetOptions,
    backbone: Option<&str>,
) -> anyhow::Result<(Features, DenseLabels)> {
    let mut joined: Option<(Features, DenseLabels)> = None;
    let mut names = template.class_names.to_vec();
    for (i, emb) in sources.embeddings.iter().enumerate() {
        let mut f = load_features(emb, layers)?;
        let want = match &joined {
            Some((first, _)) => first.backbone.checkpoint_sha256.clone(),
            None => backbone
                .unwrap_or(&f.backbone.checkpoint_sha256)
                .to_string(),
        };
        if f.backbone.checkpoint_sha256 != want {
            bail!(
                "{}: made with the backbone {} (sha256 {}), not the one of the head or of the \
                 other features (sha256 {want})",
                emb.display(),
                f.backbone.model,
                f.backbone.checkpoint_sha256
            );
        }
        let domain = domain_of(&f)?;
        // One class list over every target file when the domain makes one (slides), so that
        // ids agree across files.
        if names.is_empty() {
            if let Some(joint) = domain.dense_class_names(sources.targets) {
                names = joint?;
            }
        }
        let options = DenseTargetOptions {
            targets: &sources.targets[i.min(sources.targets.len() - 1)],
            volume: sources.volumes.get(i).map(PathBuf::as_path),
            class_names: &names,
            ..*template
        };
        let l = labelled(&f, domain, &options)?;
        match joined.as_mut() {
            None => joined = Some((f, l)),
            Some((jf, jl)) => {
                if f.spec != jf.spec || f.dim != jf.dim || f.grid != jf.grid {
                    bail!(
                        "{}: layers {:?} of dimension {} on a {:?} grid; {} has {:?}, {}, {:?}",
                        emb.display(),
                        f.spec.layers,
                        f.dim,
                        f.grid,
                        sources.embeddings[0].display(),
                        jf.spec.layers,
                        jf.dim,
                        jf.grid
                    );
                }
                let domain_name = |l: &DenseLabels| l.preprocessing["domain"].to_string();
                if l.input_size != jl.input_size || domain_name(&l) != domain_name(jl) {
                    bail!(
                        "{}: {} inputs of {} px; {} has {} inputs of {} px",
                        emb.display(),
                        domain.name(),
                        l.input_size,
                        sources.embeddings[0].display(),
                        jl.preprocessing["domain"].as_str().unwrap_or("unknown"),
                        jl.input_size
                    );
                }
                jf.tokens.append(&mut f.tokens);
                jf.n += f.n;
                jl.values.extend(l.values);
            }
        }
    }
    let (f, mut l) = joined.expect("checked: at least one file");
    if sources.embeddings.len() > 1 {
        l.record["files"] = serde_json::json!(sources.embeddings.len());
    }
    Ok((f, l))
}

pub fn train(task: Task, args: &DenseTrainArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let name = task.name();
    let out = required(&common.out, "--out", name)?;
    let train_sources = Sources {
        embeddings: &args.data.embeddings,
        targets: &args.data.targets,
        volumes: &args.data.volume,
    };
    train_sources.check("--")?;
    let emb = &args.data.embeddings[0];
    let kind_layers = match (task, args.head_kind.as_deref()) {
        (Task::Segment, None | Some("linear")) => 1,
        _ => 4,
    };
    let template = DenseTargetOptions {
        targets: emb,
        volume: None,
        resampling: args.target_resampling.as_deref(),
        class_names: &args.class_names,
        ignore_index: args.ignore_index,
        values: values(task),
    };
    let (mut f, l) = labelled_features(&train_sources, kind_layers, &template, None)?;
    let choice = head_choice(task, args, common.bins.unwrap_or(DEFAULT_BINS))?;
    let config = head_config(&choice, f.dim, &l.values)?;
    let to_targets = |values: &[f32]| -> anyhow::Result<DenseTargets> {
        Ok(targets_for(&config, values, args.ignore_index)?)
    };
    let train_set = dense_set(&mut f, &l, to_targets(&l.values)?)?;
    let val_set = if args.val_embeddings.is_empty() {
        None
    } else {
        let val_sources = Sources {
            embeddings: &args.val_embeddings,
            targets: if args.val_targets.is_empty() {
                &args.data.targets
            } else {
                &args.val_targets
            },
            volumes: &args.val_volume,
        };
        val_sources.check("--val-")?;
        let (mut v, vl) = labelled_features(
            &val_sources,
            config.layers(),
            &DenseTargetOptions {
                class_names: &l.class_names,
                ..template
            },
            Some(&f.backbone.checkpoint_sha256),
        )?;
        if vl.input_size != l.input_size {
            bail!(
                "{}: inputs of {} px; the training features are of {} px",
                args.val_embeddings[0].display(),
                vl.input_size,
                l.input_size
            );
        }
        Some(dense_set(&mut v, &vl, to_targets(&vl.values)?)?)
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
    let trained = on_device(
        common.device,
        DenseTrainJob {
            config: &config,
            train: &train_set,
            val: val_set.as_ref(),
            cfg: &cfg,
            quiet: common.quiet,
        },
    )?;
    let info = head_info(
        name,
        f.backbone.clone(),
        DenseRecord {
            head: config.clone(),
            tokens: f.spec.clone(),
            preprocessing: l.preprocessing.clone(),
            class_names: l.class_names.clone(),
            training: cfg.clone(),
            targets: l.record.clone(),
            features: args
                .data
                .embeddings
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            metrics: serde_json::Value::Null,
        },
        args.ignore_index,
        &trained.metrics,
    );
    head_folder::write(
        out,
        &info,
        &TrainedDense {
            metrics: &trained.metrics,
            tensors: &trained.tensors,
            log: &trained.log,
            metric_name: if task == Task::Segment { "mIoU" } else { "R²" },
            residuals: &trained.residuals,
        },
    )?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "task": name,
            "domain": l.preprocessing["domain"],
            "head": config,
            "samples": {"train": train_set.n, "val": val_set.as_ref().map(|v| v.n)},
            "metrics": info.metrics,
        }))?
    );
    eprintln!("head -> {}", out.display());
    Ok(ExitCode::SUCCESS)
}

struct DenseEvalJob<'a> {
    head: &'a HeadFolder,
    set: &'a DenseSet,
    cfg: DenseTrainConfig,
}

impl BackendJob for DenseEvalJob<'_> {
    type Output = DenseMetrics;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<DenseMetrics> {
        Ok(self.head.evaluate::<B>(self.set, &self.cfg, &device)?)
    }
}

pub fn eval(head_dir: &Path, args: &DenseEvalArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let (head, domain) = folder::load(head_dir)?;
    let sources = Sources {
        embeddings: &args.data.embeddings,
        targets: &args.data.targets,
        volumes: &args.data.volume,
    };
    sources.check("--")?;
    let emb = &args.data.embeddings[0];
    let ignore = head.ignore_index();
    let resampling = head.info.targets["resampling"].as_str();
    let (mut f, l) = labelled_features(
        &sources,
        head.info.head.layers(),
        &DenseTargetOptions {
            targets: emb,
            volume: None,
            resampling,
            class_names: &head.info.class_names,
            ignore_index: ignore,
            values: folder::values(&head),
        },
        None,
    )?;
    // Every file has the first one's backbone; the head takes that one only.
    head.check_features(Some(&f.backbone), emb)?;
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
    let trained_on = input_size(domain, &head.info.preprocessing)?;
    if l.input_size != trained_on {
        bail!(
            "{}: inputs of {} px; the head was trained on {trained_on} px",
            emb.display(),
            l.input_size,
        );
    }
    let cfg = head.info.training.clone();
    let t = targets_for(&head.info.head, &l.values, ignore)?;
    let set = dense_set(&mut f, &l, t)?;
    let m = on_device(
        common.device,
        DenseEvalJob {
            head: &head,
            set: &set,
            cfg,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(ExitCode::SUCCESS)
}

/// Backbone + head over the input of `--input`, written in the head's domain's format; the
/// domain's summary on stdout.
pub fn predict(
    head_dir: &Path,
    args: &DensePredictArgs,
    common: &Common,
) -> anyhow::Result<ExitCode> {
    let input = required(&args.input, "--input", "segment/canopy")?;
    let out = required(&common.out, "--out", "segment/canopy")?;
    let (head, domain) = folder::load(head_dir)?;
    let model = ModelArgs {
        model: args.model.clone(),
        random_init: args.random_init,
        seed: args.backbone_seed,
        preset: args.preset.clone(),
        arch_file: None,
        num_heads: None,
        interpolation: None,
    };
    let options = DensePredictOptions {
        input,
        out,
        preprocessing: &head.info.preprocessing,
        values: folder::values(&head),
        class_names: &head.info.class_names,
        mpp: args.mpp,
        nodata: None,
        stride: args.stride,
        blend: &args.blend,
        batch: args.predict_batch,
        cog: args.cog,
    };
    let backbone = predict::Backbone {
        model: &model,
        device: common.device,
        tf32: false,
        quiet: common.quiet,
    };
    let summary = predict::run(&head, domain, &options, &backbone)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}
