//! A pre-training run from a recipe: build or load the backbone, train with the DINOv2
//! objective, checkpoint atomically, resume exactly, guard against collapse, monitor kNN
//! accuracy, and leave metrics (Parquet + PNG) and the teacher backbone behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use dinoadapt_core::checkpoint::export::save_native;
use dinoadapt_core::checkpoint::{load_checkpoint, CheckpointError, LoadOptions};
use dinoadapt_core::objective::head::DinoHeadConfig;
use dinoadapt_core::train::param_paths::{materialize, restore};
use dinoadapt_core::train::{SslModel, StepValues, Trainer};
use dinoadapt_core::vit::{
    ChannelInit, FfnConfig, InputChannels, PosEmbedInterpolation, VisionTransformer, VitConfig,
};
use dinoadapt_datasets::ImageError;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::checkpoints::{self, CheckpointMeta};
use crate::data::{mix, BatchRecipe, ImagePool, Prefetch, Shard};
use crate::guard::Guard;
use crate::metrics::{self, MetricsError, StepRecord};
use crate::monitor::{KnnMonitor, LabelledImages};
use crate::recipe::{HeadsSection, Recipe};
use crate::replica::Replica;
use crate::stages;
use dinoadapt_datasets::ImageSource;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Images(#[from] ImageError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(
        "{0} already holds checkpoints of a run: pass --resume to continue it, or choose another \
         train.output_dir"
    )]
    OutputInUse(PathBuf),
    #[error(
        "--resume: {0} holds no checkpoint of a run to continue; leave out --resume to start one"
    )]
    NothingToResume(PathBuf),
    #[error(
        "--resume: the run in {} was made with another recipe ({}); resume it with its own \
         recipe ({}), or start a new run in another train.output_dir",
        .path.parent().unwrap_or(Path::new(".")).display(),
        .changes.join("; "),
        .path.display()
    )]
    RecipeChanged { path: PathBuf, changes: Vec<String> },
    #[error("the run was stopped: {symptom} The last good checkpoint is {last}.")]
    Collapsed { symptom: String, last: String },
    #[error("{path}: cannot write: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the program runs it.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Continue from the latest checkpoint in the output folder.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// The images, when a domain plugin samples them (the recipe's `[data.source]`, e.g.
    /// tissue tiles of slides); otherwise the recipe's image files and manifest.
    pub images: Option<Arc<dyn ImageSource>>,
    /// Chunks of each batch that go through the backbones at once, one per thread on a CPU
    /// (`Trainer::chunks`); 0 or 1 runs the whole batch in one pass, as on a GPU.
    pub batch_chunks: usize,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("resume", &self.resume)
            .field("progress", &self.progress)
            .field("images", &self.images.as_ref().map(|i| i.describe()))
            .field("batch_chunks", &self.batch_chunks)
            .finish()
    }
}

/// A kNN measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnnPoint {
    pub step: usize,
    pub when: String,
    pub accuracy: f64,
}

/// What a finished run reports (also written to `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub output_dir: PathBuf,
    pub steps: usize,
    pub resumed_from: Option<usize>,
    pub final_loss: Option<f64>,
    /// Mean training throughput of this process's iterations (source images per second).
    pub images_per_s: f64,
    /// The images of the pool an epoch visits (a curated manifest's kept rows or tiles), and
    /// what they are.
    pub pool_images: usize,
    pub pool: String,
    pub knn: Vec<KnnPoint>,
    pub teacher: PathBuf,
    pub metrics: PathBuf,
    pub plot: PathBuf,
}

/// The backbone architecture of a fresh run: the preset with the recipe's shape overrides.
pub fn fresh_config(recipe: &Recipe) -> Result<VitConfig, RunError> {
    let m = &recipe.model;
    let name = m.arch.as_deref().unwrap_or("vits14");
    let mut c = VitConfig::preset(name)
        .ok_or_else(|| RunError::Config(format!("model.arch: unknown preset `{name}`")))?;
    if let Some(d) = m.embed_dim {
        c.embed_dim = d;
        c.ffn = FfnConfig::mlp(d, m.mlp_ratio.unwrap_or(4.0));
    } else if let Some(r) = m.mlp_ratio {
        c.ffn = FfnConfig::mlp(c.embed_dim, r);
    }
    if let Some(v) = m.depth {
        c.depth = v;
    }
    if let Some(v) = m.num_heads {
        c.num_heads = v;
    }
    if let Some(v) = m.patch_size {
        c.patch_size = v;
    }
    if let Some(v) = m.num_register_tokens {
        c.num_register_tokens = v;
    }
    if let Some(s) = m.img_size {
        c.pos_grid = s / c.patch_size;
    }
    c.layer_scale = m.layerscale > 0.0;
    c.layer_scale_init = m.layerscale;
    // A fresh run resamples position embeddings for the local crops as the official training
    // config does (`interpolate_offset` 0.1, `interpolate_antialias` false), whatever the preset's
    // released hub weights use.
    c.interpolation = PosEmbedInterpolation::OffsetBicubic { offset: 0.1 };
    c.validate()
        .map_err(|e| RunError::Config(format!("[model]: {e}")))?;
    Ok(c)
}

/// The training state `model.checkpoint` names when it names a previous run rather than a
/// model: (the run's folder, the checkpoint folder) for a run folder (its latest checkpoint) or
/// one of its `checkpoints/step-N` folders.
pub fn previous_run(path: &Path) -> Option<(PathBuf, PathBuf)> {
    if path.join("state.json").is_file() && path.join("state.safetensors").is_file() {
        let run = path.parent()?.parent()?;
        return Some((run.to_path_buf(), path.to_path_buf()));
    }
    checkpoints::latest(path).map(|(_, dir)| (path.to_path_buf(), dir))
}

/// The model folder a run exports: `student/` for a distillation run, else `teacher/`.
pub fn output_model(run: &Path) -> PathBuf {
    let student = run.join("student");
    if student.is_dir() {
        student
    } else {
        run.join("teacher")
    }
}

/// `backbone` with fresh DINO (and, when separate, iBOT) heads of the recipe's `[heads]`.
fn with_heads<B: Backend>(
    backbone: VisionTransformer<B>,
    h: &HeadsSection,
    device: &B::Device,
) -> SslModel<B> {
    let head = DinoHeadConfig::new(backbone.config.embed_dim)
        .with_num_prototypes(h.prototypes)
        .with_hidden_dim(h.hidden_dim)
        .with_bottleneck_dim(h.bottleneck_dim)
        .with_nlayers(h.nlayers);
    let ibot = h.separate_ibot_head.then_some(&head);
    SslModel::new(backbone, &head, ibot, device)
}

/// The frozen teacher of a distillation: a previous run's EMA teacher with its DINO/iBOT heads,
/// on the heads of the recipe that run was made with.
fn distillation_teacher<B: Backend>(
    path: &Path,
    recipe: &Recipe,
    student_patch: usize,
    device: &B::Device,
) -> Result<SslModel<B>, RunError> {
    let (run, dir) = previous_run(path).ok_or_else(|| {
        RunError::Config(format!(
            "distillation.teacher: {} is not a run's folder (nor one of its checkpoints/step-N \
             folders); the teacher's DINO/iBOT heads give the targets, so train heads on the \
             frozen model first (a run from model.checkpoint with train.head_warmup_iterations \
             = train.max_steps) and name that run",
            path.display()
        ))
    })?;
    let (tensors, meta) = checkpoints::load(&dir)?;
    let origin = dir.join("state.json");
    let previous = Recipe::parse(&meta.recipe, &origin, &[])
        .map_err(|e| RunError::Config(format!("distillation.teacher: {e}")))?;
    let (p, h) = (&previous.heads, &recipe.heads);
    if p.prototypes != h.prototypes || p.separate_ibot_head != h.separate_ibot_head {
        return Err(RunError::Config(format!(
            "distillation.teacher: its heads have {} prototypes{}; the student's [heads] must \
             have the same (prototypes = {}, separate_ibot_head = {})",
            p.prototypes,
            if p.separate_ibot_head {
                " and a separate iBOT head"
            } else {
                ""
            },
            p.prototypes,
            p.separate_ibot_head
        )));
    }
    let backbone = load_checkpoint(&run.join("teacher"), &LoadOptions::default())?.build(device)?;
    if backbone.config.patch_size != student_patch {
        return Err(RunError::Config(format!(
            "distillation.teacher: its patches are {} px, the student's {student_patch} px; the \
             iBOT targets are the teacher's tokens at the student's masked patches, so both \
             need one patch grid",
            backbone.config.patch_size
        )));
    }
    let model = with_heads(backbone, p, device);
    let weights: std::collections::HashMap<_, _> = tensors
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("teacher.").map(|r| (r.to_string(), v)))
        .collect();
    restore(model, &weights, device)
        .map_err(|e| RunError::Config(format!("distillation.teacher {}: {e}", dir.display())))
}

fn build_backbone<B: Backend>(
    recipe: &Recipe,
    device: &B::Device,
) -> Result<(VisionTransformer<B>, String), RunError> {
    match &recipe.model.checkpoint {
        Some(path) => {
            // A previous run's architecture is that of the model it exported.
            let model = match previous_run(path) {
                Some((run, _)) => output_model(&run),
                None => path.clone(),
            };
            let mut loaded = load_checkpoint(&model, &LoadOptions::default())?;
            loaded.config.drop_path_rate = recipe.model.drop_path_rate;
            loaded.config.drop_path_uniform = recipe.model.drop_path_uniform;
            if !loaded.config.mask_token {
                tracing::info!(
                    "{}: no mask token in the checkpoint; iBOT trains one from zeros",
                    path.display()
                );
            }
            let backbone = loaded.build(device)?.with_mask_token();
            Ok((input_channels(backbone, recipe)?, loaded.sha256))
        }
        None => {
            let mut cfg = fresh_config(recipe)?;
            cfg.drop_path_rate = recipe.model.drop_path_rate;
            cfg.drop_path_uniform = recipe.model.drop_path_uniform;
            cfg.in_chans = recipe.model.in_chans.unwrap_or(3);
            let backbone = VisionTransformer::init(&cfg, device);
            Ok((input_channels(backbone, recipe)?, String::new()))
        }
    }
}

/// `model.in_chans`: the patch embedding grown to that many channels when it has three, and
/// the channels' names and normalisation recorded with the model.
fn input_channels<B: Backend>(
    backbone: VisionTransformer<B>,
    recipe: &Recipe,
) -> Result<VisionTransformer<B>, RunError> {
    let m = &recipe.model;
    let Some(channels) = m.in_chans else {
        return Ok(backbone);
    };
    let init = match &m.channel_map {
        None => ChannelInit::MeanRepeat,
        Some(map) => ChannelInit::Map(map.iter().map(|&k| usize::try_from(k).ok()).collect()),
    };
    let names = if m.channel_names.is_empty() {
        (1..=channels).map(|i| format!("band{i}")).collect()
    } else {
        m.channel_names.clone()
    };
    let record = InputChannels {
        names,
        mean: recipe.crops.mean.clone(),
        std: recipe.crops.std.clone(),
    };
    let grown = backbone.config.in_chans != channels;
    let backbone = backbone
        .with_input_channels(channels, &init, Some(record))
        .map_err(|e| RunError::Config(format!("model.in_chans = {channels}: {e}")))?;
    if grown {
        tracing::info!("the RGB patch embedding grown to {channels} channels ({init:?})");
    }
    Ok(backbone)
}

/// When `path` names a previous run: its student, teacher and heads (and, with
/// `resume_optimizer`, its optimizer state) into `trainer`.
pub fn continue_from_run<B: AutodiffBackend>(
    trainer: &mut Trainer<B>,
    path: &Path,
    resume_optimizer: bool,
) -> Result<(), RunError> {
    let Some((run, dir)) = previous_run(path) else {
        return Ok(());
    };
    let (mut tensors, meta) = checkpoints::load(&dir)?;
    if tensors.keys().any(|k| k.starts_with("student_ema.")) {
        // A distillation run: its output, the student's EMA, is the new run's teacher.
        tensors.retain(|k, _| !k.starts_with("teacher."));
        let ema: Vec<(String, _)> = tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("student_ema.")
                    .map(|r| (format!("teacher.{r}"), v.clone()))
            })
            .collect();
        tensors.extend(ema);
    }
    let mismatch = |e: String| {
        RunError::Config(format!(
            "model.checkpoint: {} cannot continue in this recipe ({e}); the [heads] section must \
             match the previous run's",
            dir.display()
        ))
    };
    trainer.load_weights(&tensors).map_err(mismatch)?;
    if resume_optimizer {
        trainer
            .load_optimizer(&tensors, &meta.optimizer_steps)
            .map_err(mismatch)?;
    }
    tracing::info!(
        "continuing run {} from its iteration {}: student, teacher and heads{} carried over; the \
         schedules start again",
        run.display(),
        meta.step,
        if resume_optimizer {
            ", optimizer state"
        } else {
            ""
        }
    );
    Ok(())
}

fn check_crops(recipe: &Recipe, patch: usize, channels: usize) -> Result<(), RunError> {
    let c = &recipe.crops;
    if c.mean.len() != channels || c.std.len() != channels {
        return Err(RunError::Config(format!(
            "crops.mean and crops.std need one value per input channel ({channels}; they have \
             {} and {})",
            c.mean.len(),
            c.std.len()
        )));
    }
    if let Some(bad) = c.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(RunError::Config(format!(
            "crops.std {bad} is not a positive number"
        )));
    }
    if recipe.monitor.is_some() && channels != 3 && channels != 1 {
        return Err(RunError::Config(format!(
            "[monitor] classifies RGB (or, for a 1-channel model, gray) image folders; a \
             {channels}-channel model cannot be monitored on them: leave [monitor] out"
        )));
    }
    for (name, size) in [("global_size", c.global_size), ("local_size", c.local_size)] {
        if size == 0 || !(size as usize).is_multiple_of(patch) {
            return Err(RunError::Config(format!(
                "crops.{name} = {size} is not a multiple of the patch size {patch}"
            )));
        }
    }
    Ok(())
}

/// Recipe keys a resumed run may change: where it runs, how often it writes and where it stops
/// (the schedules follow the epochs, not `max_steps`), nothing that changes what it computes.
const RESUMABLE_KEYS: [&str; 6] = [
    "train.device",
    "train.max_steps",
    "train.output_dir",
    "train.checkpoint_every",
    "train.keep_last",
    "train.log_every",
];

/// Refuse to resume a run with a recipe that differs from the one it was started with (saved
/// as `saved`) in anything but [`RESUMABLE_KEYS`]: the checkpoint's optimizer state, schedules
/// and data order belong to the saved recipe.
fn same_recipe(saved: &Path, recipe: &Recipe) -> Result<(), RunError> {
    let Ok(text) = std::fs::read_to_string(saved) else {
        return Ok(()); // runs from before recipe.toml was kept
    };
    let flat = |text: &str| -> Result<BTreeMap<String, String>, String> {
        let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        let mut out = BTreeMap::new();
        flatten("", &toml::Value::Table(table), &mut out);
        Ok(out)
    };
    let before = flat(&text).map_err(|e| RunError::Config(format!("{}: {e}", saved.display())))?;
    let now = flat(&recipe.to_toml()).map_err(RunError::Config)?;
    let keys: BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    let changes: Vec<String> = keys
        .into_iter()
        .filter(|k| !RESUMABLE_KEYS.contains(&k.as_str()))
        .filter(|k| before.get(*k) != now.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            format!("{k}: {} -> {}", show(before.get(k)), show(now.get(k)))
        })
        .collect();
    if changes.is_empty() {
        Ok(())
    } else {
        Err(RunError::RecipeChanged {
            path: saved.to_path_buf(),
            changes,
        })
    }
}

/// Every leaf of `value` under its dotted key.
fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}

/// Run (or continue) the recipe on `device`.
pub fn run<B: AutodiffBackend>(
    recipe: &Recipe,
    options: &RunOptions,
    device: &B::Device,
) -> Result<RunSummary, RunError> {
    run_replica::<B>(recipe, options, device, None)
}

/// Run the recipe on `device` as one replica of a data-parallel run (`None`: the only one).
/// Rank 0 writes everything (checkpoints, metrics, the teacher, the report) and measures kNN;
/// every replica trains on its shard of each batch and sees the global batch's figures.
pub(crate) fn run_replica<B: AutodiffBackend>(
    recipe: &Recipe,
    options: &RunOptions,
    device: &B::Device,
    replica: Option<&Replica<B::InnerBackend>>,
) -> Result<RunSummary, RunError> {
    let lead = replica.is_none_or(|r| r.rank() == 0);
    let world = replica.map_or(1, |r| r.world());
    let out = recipe.train.output_dir.clone();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let previous = checkpoints::latest(&out);
    if previous.is_some() && !options.resume {
        return Err(RunError::OutputInUse(out));
    }
    if options.resume {
        if previous.is_none() {
            return Err(RunError::NothingToResume(out));
        }
        same_recipe(&out.join("recipe.toml"), recipe)?;
    }
    let seed = recipe.train.seed;
    // The backend's RNG is one per process on the CPU: replicas build their models in turn,
    // each from the seed, and draw every parameter before letting the next one start.
    static MODEL_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let init_turn = replica.map(|_| MODEL_INIT.lock().unwrap_or_else(|e| e.into_inner()));
    B::seed(device, seed);
    let (backbone, source_sha) = build_backbone::<B>(recipe, device)?;
    let backbone = backbone.with_precision(recipe.model.precision);
    let cfg = backbone.config.clone();
    check_crops(recipe, cfg.patch_size, cfg.in_chans)?;
    let plan = stages::plan(recipe, cfg.patch_size).map_err(RunError::Config)?;
    for s in &plan[1..] {
        check_crops(&s.recipe, cfg.patch_size, cfg.in_chans)?;
    }
    for s in &plan {
        if !s.recipe.data.batch_size.is_multiple_of(world) {
            return Err(RunError::Config(format!(
                "stage `{}`: batch size {} does not split evenly over {world} devices",
                s.name, s.recipe.data.batch_size
            )));
        }
    }
    let h = &recipe.heads;
    let student = with_heads(backbone, h, device);
    materialize::<B, _>(&student);
    drop(init_turn);
    let mut trainer = Trainer::new(student, recipe.loss, recipe.optim.optimizer);
    trainer.crop_forward = recipe.crops.forward;
    trainer.chunks = options.batch_chunks.max(1);
    if previous.is_none() {
        if let Some(path) = &recipe.model.checkpoint {
            continue_from_run(&mut trainer, path, recipe.train.resume_optimizer)?;
        }
    }
    if let Some(d) = &recipe.distillation {
        let teacher =
            distillation_teacher::<B::InnerBackend>(&d.teacher, recipe, cfg.patch_size, device)?;
        tracing::info!(
            "distilling a {}-d, {}-block teacher into a {}-d, {}-block student",
            teacher.backbone.config.embed_dim,
            teacher.backbone.config.depth,
            cfg.embed_dim,
            cfg.depth
        );
        trainer.distill_from(teacher);
    }

    let metrics_path = out.join("metrics.parquet");
    let mut records: Vec<StepRecord> = Vec::new();
    let mut start = 0;
    let mut best: (Option<f64>, Option<usize>) = (None, None);
    let mut knn: Vec<KnnPoint> = Vec::new();
    if let Some((step, dir)) = &previous {
        let (tensors, meta) = checkpoints::load(dir)?;
        // The tables as the stages before this checkpoint left them.
        trainer.resample_pos_embed(stages::pos_grid_after(
            &plan,
            step.checked_sub(1),
            cfg.patch_size,
            cfg.pos_grid,
        ));
        trainer
            .load_state(&tensors, &meta.optimizer_steps)
            .map_err(|e| RunError::Config(format!("{}: {e}", dir.display())))?;
        start = *step;
        best = (meta.best_loss, meta.best_step);
        knn = meta
            .knn
            .into_iter()
            .map(|(step, when, accuracy)| KnnPoint {
                step,
                when,
                accuracy,
            })
            .collect();
        if metrics_path.is_file() {
            records = metrics::read(&metrics_path)?;
            records.retain(|r| (r.step as usize) < start);
        }
        tracing::info!("resuming {} from iteration {start}", out.display());
    }
    if let Some(r) = replica {
        // Every replica starts from rank 0's state: the same weights, moments and centres.
        r.start_from_lead(&mut trainer)?;
        trainer.replicas = Some(r.replicas.clone());
    }
    let recipe_path = out.join("recipe.toml");
    if lead {
        std::fs::write(&recipe_path, recipe.to_toml()).map_err(io(&recipe_path))?;
    }

    let pool = match &options.images {
        Some(source) => ImagePool::new(source.clone(), seed),
        None => {
            if let Some(source) = &recipe.data.source {
                return Err(RunError::Config(format!(
                    "[data.source] of domain `{}` needs that domain plugin's image source (run \
                     the recipe with `dinoadapt pretrain`)",
                    source.domain
                )));
            }
            let mut inputs = recipe.data.images.clone();
            if let Some(m) = &recipe.data.manifest {
                inputs.extend(
                    crate::curate::kept_paths(m).map_err(|e| RunError::Config(e.to_string()))?,
                );
            }
            ImagePool::open(&inputs, seed)?
        }
    };
    let pool = Arc::new(pool);
    tracing::info!("images: {}", pool.source.describe());
    let total = stages::total_steps(&plan, recipe.train.max_steps);
    let mut stage = stages::stage_of(&plan, start);
    let mut schedules = plan[stage].recipe.schedule_config().build();
    let warmup = recipe.train.head_warmup_iterations;
    let inner_device = trainer.teacher.backbone.device();
    let mut monitor = match recipe.monitor.as_ref().filter(|_| lead) {
        Some(m) => Some(KnnMonitor {
            train: LabelledImages::open(&m.train, m.max_per_class)?,
            val: LabelledImages::open(&m.val, m.max_per_class)?,
            size: plan[stage].recipe.crops.global_size,
            mean: recipe.crops.mean.clone(),
            std: recipe.crops.std.clone(),
            k: m.k,
            temperature: m.temperature,
        }),
        None => None,
    };
    let every = recipe.monitor.as_ref().map_or(0, |m| m.every);
    let measure = |monitor: &Option<KnnMonitor>,
                   trainer: &Trainer<B>,
                   step: usize,
                   when: &str,
                   knn: &mut Vec<KnnPoint>| {
        if let Some(m) = monitor {
            if knn.iter().any(|p| p.step == step && p.when == when) {
                return Ok::<(), RunError>(());
            }
            let accuracy = m.accuracy(&trainer.output().backbone)?;
            tracing::info!("kNN accuracy at iteration {step} ({when}): {accuracy:.4}");
            knn.push(KnnPoint {
                step,
                when: when.to_string(),
                accuracy,
            });
        }
        Ok(())
    };
    if start == 0 {
        measure(&monitor, &trainer, 0, "start", &mut knn)?;
    }
    let warmup_end = recipe
        .teacher
        .warmup_teacher_temp_epochs
        .max(recipe.optim.warmup_epochs)
        * recipe.optim.epoch_length
        + warmup;
    let mut guard = Guard::new(
        &recipe.guard,
        h.prototypes,
        recipe.crops.local_crops,
        warmup_end,
    );

    let bar = if options.progress && lead {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} it  ETA {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar.set_position(start as u64);
    let mut smoothed: Option<f64> = records.last().map(|r| r.report.loss.total);
    let mut last_saved = previous
        .as_ref()
        .map(|(_, d)| d.display().to_string())
        .unwrap_or_else(|| "none (no checkpoint was saved yet)".into());
    let (mut timed_images, mut timed_secs) = (0usize, 0f64);
    // The run's output model: the EMA teacher, or in distillation the student's EMA.
    let teacher_dir = out.join(if recipe.distillation.is_some() {
        "student"
    } else {
        "teacher"
    });

    let shard = Shard {
        rank: replica.map_or(0, |r| r.rank()),
        world,
    };
    let batches_of = |s: &stages::Stage| BatchRecipe {
        shard,
        ..BatchRecipe::from_recipe(&s.recipe, cfg.patch_size, cfg.in_chans)
    };
    let mut prefetch = Prefetch::new(
        batches_of(&plan[stage]),
        pool.clone(),
        start..plan[stage].end.min(total),
    );
    for step in start..total {
        if stage + 1 < plan.len() && step == plan[stage + 1].start {
            stage += 1;
            let s = &plan[stage];
            let size = s.recipe.crops.global_size;
            if size != plan[stage - 1].recipe.crops.global_size {
                trainer.resample_pos_embed(s.grid(cfg.patch_size));
                if let Some(m) = monitor.as_mut() {
                    m.size = size;
                }
            }
            tracing::info!(
                "iteration {step}: stage `{}` ({} iterations, global crops {size} px, batch {})",
                s.name,
                s.end - s.start,
                s.recipe.data.batch_size
            );
            // The baseline: the model as it stands, evaluated at the stage's resolution.
            let when = format!("stage {} start ({size} px)", s.name);
            measure(&monitor, &trainer, step, &when, &mut knn)?;
            schedules = s.recipe.schedule_config().build();
            prefetch = Prefetch::new(batches_of(s), pool.clone(), step..s.end.min(total));
        }
        // Each stage's schedules start again at its first iteration.
        let at = step - plan[stage].start;
        if replica.is_none() {
            B::seed(device, mix(seed, 4, step as u64));
        }
        // The stochastic depth of the iteration, the same on every replica.
        trainer.draw_seed = Some(mix(seed, 4, step as u64));
        let t0 = Instant::now();
        let batch = prefetch
            .next(step)?
            .upload::<B::InnerBackend>(&inner_device);
        let values = StepValues {
            lr: schedules.lr.at(at),
            last_layer_lr: schedules.last_layer_lr.at(at),
            wd: schedules.wd.at(at),
            momentum: schedules.momentum.at(at),
            teacher_temp: schedules.teacher_temp.at(at),
            backbone_frozen: step < warmup,
        };
        if trainer.refresh_gram_teacher(step) {
            tracing::info!("iteration {step}: Gram teacher loaded from the EMA teacher");
        }
        let report = trainer.step(&batch, values);
        let secs = t0.elapsed().as_secs_f64();
        let images = batch.images() * world;
        timed_images += images;
        timed_secs += secs;
        let record = StepRecord {
            step: step as u64,
            epoch: pool.epochs_after(step + 1, plan[stage].recipe.data.batch_size),
            values,
            report,
            images_per_s: images as f64 / secs.max(1e-9),
        };
        records.push(record);
        if let Some(symptom) = guard.check(step, &report) {
            if lead {
                metrics::write(&metrics_path, &records)?;
                metrics::plot(&out.join("metrics.png"), &records)?;
            }
            bar.abandon();
            return Err(RunError::Collapsed {
                symptom: symptom.to_string(),
                last: last_saved,
            });
        }
        let l = report.loss.total;
        smoothed = Some(smoothed.map_or(l, |s| 0.9 * s + 0.1 * l));
        bar.set_position(step as u64 + 1);
        bar.set_message(format!(
            "loss {l:.4}  {:.2} img/s",
            timed_images as f64 / timed_secs.max(1e-9)
        ));
        let done = step + 1;
        if lead && done.is_multiple_of(recipe.train.log_every.max(1)) {
            tracing::info!(
                "iteration {done}/{total} loss {l:.4} ({}) lr {:.2e} teacher entropy {:.3} cls std \
                 {:.3e}",
                report
                    .loss
                    .terms
                    .iter()
                    .map(|(n, v)| format!("{} {v:.4}", n.trim_end_matches("_loss")))
                    .collect::<Vec<_>>()
                    .join(", "),
                values.lr,
                report.loss.teacher_entropy,
                report.loss.cls_std,
            );
        }
        if warmup > 0 && done == warmup {
            measure(&monitor, &trainer, done, "after head warm-up", &mut knn)?;
        }
        if every > 0 && done.is_multiple_of(every) && done != total {
            measure(&monitor, &trainer, done, "periodic", &mut knn)?;
        }
        if plan.len() > 1 && done == plan[stage].end && done != total {
            let when = format!("stage {} end", plan[stage].name);
            measure(&monitor, &trainer, done, &when, &mut knn)?;
        }
        if done == total {
            measure(&monitor, &trainer, done, "end", &mut knn)?;
        }
        let checkpoint = done.is_multiple_of(recipe.train.checkpoint_every.max(1)) || done == total;
        if checkpoint && lead {
            if best.0.is_none_or(|b| smoothed.is_some_and(|s| s < b)) {
                best = (smoothed, Some(done));
            }
            let (tensors, optimizer_steps) = trainer.save_state();
            let meta = CheckpointMeta {
                step: done,
                seed,
                optimizer_steps,
                best_loss: best.0,
                best_step: best.1,
                program_version: env!("CARGO_PKG_VERSION").into(),
                recipe: recipe.to_toml(),
                knn: knn
                    .iter()
                    .map(|p| (p.step, p.when.clone(), p.accuracy))
                    .collect(),
            };
            metrics::write(&metrics_path, &records)?;
            let dir = checkpoints::save(&out, &tensors, &meta)?;
            let output = &trainer.output().backbone;
            save_native(
                &output.to_state(),
                &output.config,
                &teacher_dir,
                &[
                    ("step", done.to_string()),
                    ("seed", seed.to_string()),
                    ("source_sha256", source_sha.clone()),
                ],
            )?;
            checkpoints::prune(&out, recipe.train.keep_last, best.1);
            last_saved = dir.display().to_string();
        }
    }
    bar.finish_and_clear();
    let plot = out.join("metrics.png");
    let summary = RunSummary {
        output_dir: out.clone(),
        steps: total,
        resumed_from: previous.map(|(s, _)| s),
        final_loss: records.last().map(|r| r.report.loss.total),
        images_per_s: timed_images as f64 / timed_secs.max(1e-9),
        pool_images: pool.len(),
        pool: pool.source.describe(),
        knn,
        teacher: teacher_dir,
        metrics: metrics_path,
        plot,
    };
    if !lead {
        return Ok(summary);
    }
    metrics::plot(&summary.plot, &records)?;
    let summary_path = out.join("summary.json");
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(&summary).expect("summary serialises"),
    )
    .map_err(io(&summary_path))?;
    run_report(&summary, seed, &out.join("recipe.toml"))
        .write(&out.join("report.html"))
        .map_err(|e| RunError::Config(e.to_string()))?;
    Ok(summary)
}

/// `report.html` of a run: the recipe, the pool, throughput, the metrics plot and kNN.
fn run_report(s: &RunSummary, seed: u64, recipe: &Path) -> dinoadapt_datasets::report::Report {
    use dinoadapt_datasets::column as col;
    use dinoadapt_datasets::report::{Report, Section};
    let mut monitor = Section::new("Training").image("losses, schedules, teacher", &s.plot);
    if !s.knn.is_empty() {
        let df = polars::prelude::DataFrame::new(
            s.knn.len(),
            vec![
                col::<u64>("step", s.knn.iter().map(|k| k.step as u64).collect()),
                col::<String>("when", s.knn.iter().map(|k| k.when.clone()).collect()),
                col::<f64>("knn_accuracy", s.knn.iter().map(|k| k.accuracy).collect()),
            ],
        )
        .expect("columns of one length");
        monitor = monitor.table("kNN monitor (teacher class tokens)", df);
    }
    Report::new("pretrain")
        .recipe(recipe)
        .fact("seed", seed)
        .fact("iterations", s.steps)
        .fact(
            "resumed from",
            s.resumed_from.map_or("-".into(), |r| r.to_string()),
        )
        .fact("pool", format!("{} images: {}", s.pool_images, s.pool))
        .fact("images per second", format!("{:.1}", s.images_per_s))
        .fact(
            "final loss",
            s.final_loss.map_or("-".into(), |l| format!("{l:.4}")),
        )
        .fact("teacher", s.teacher.display())
        .section(monitor)
}
