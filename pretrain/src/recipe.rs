//! The TOML recipe of a pre-training run: model, data, crops, masking, losses, optimisation,
//! teacher, run settings, guard and monitor. Every key has the official DINOv2 default unless
//! the recipe sets it, and any key can be overridden from the command line
//! (`optim.base_lr=0.001`).

use std::path::{Path, PathBuf};

use dinoadapt_core::objective::ScheduleConfig;
use dinoadapt_core::train::{CropForward, OptimConfig, SslLossConfig};
use dinoadapt_core::vit::MatmulPrecision;
use serde::{Deserialize, Serialize};

use crate::stages::StageSection;

/// Why a recipe could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: cannot read the recipe: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid recipe: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("override `{0}`: expected KEY=VALUE with a dotted key such as optim.base_lr=0.001")]
    Override(String),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The backbone to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A preset (`vits14`, `vitb14_reg`, ...) for a fresh backbone; ignored with `checkpoint`.
    #[serde(default)]
    pub arch: Option<String>,
    /// Continued pre-training: start student and teacher from this checkpoint (any format the
    /// foundation loads; fresh DINO/iBOT heads), or from a previous run (its output folder, for
    /// its latest checkpoint, or one of its `checkpoints/step-N` folders): student, teacher
    /// and their heads carry over (the optimizer state too with `train.resume_optimizer`) and
    /// the schedules start again as this recipe says.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Overrides of the preset's shape, for small models.
    #[serde(default)]
    pub embed_dim: Option<usize>,
    #[serde(default)]
    pub depth: Option<usize>,
    #[serde(default)]
    pub num_heads: Option<usize>,
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Native input size (sets the position-embedding grid to img_size / patch_size).
    #[serde(default)]
    pub img_size: Option<usize>,
    #[serde(default)]
    pub mlp_ratio: Option<f64>,
    #[serde(default)]
    pub num_register_tokens: Option<usize>,
    /// Stochastic depth rate.
    #[serde(default)]
    pub drop_path_rate: f64,
    /// The same stochastic depth rate in every block, as the official DINOv2 training configs
    /// (`drop_path_uniform: true`); false: rising linearly from 0 at the first block (timm).
    #[serde(default = "default_drop_path_uniform")]
    pub drop_path_uniform: bool,
    /// Input channels, when not three: 1 for grayscale CT/MR, 4 for RGB + near-infrared, up to
    /// the bands of a multispectral source. A fresh model is built with them; an RGB
    /// checkpoint's patch embedding is grown to them (`channel_map`). `crops.mean`/`crops.std`
    /// give one value per channel; the names and normalisation are recorded with the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_chans: Option<usize>,
    /// How an RGB checkpoint grows to `in_chans`: for each channel the RGB kernel it copies
    /// (0, 1, 2; -1: none, it starts at zero); by default every channel takes the RGB mean
    /// scaled by 3 / in_chans (a gray image then gives the RGB model's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_map: Option<Vec<i64>>,
    /// Names of the input channels (default `band1`, `band2`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_names: Vec<String>,
    /// LayerScale init of a fresh backbone (official `student.layerscale`, 1e-5); 0 builds the
    /// blocks without LayerScale. Ignored with `checkpoint` (the weights carry their own).
    #[serde(default = "default_layerscale")]
    pub layerscale: f64,
    /// How the backbone's products run: `backend` (f32 on CPU, TF32 on CUDA), `split` (f32
    /// accuracy on TF32 tensor cores) or `bf16` (mixed precision: bf16 products, f32 weights).
    #[serde(default)]
    pub precision: MatmulPrecision,
}

fn default_layerscale() -> f64 {
    1e-5
}

/// DINO / iBOT heads (`dino.head_*`, `ibot.separate_head`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadsSection {
    pub prototypes: usize,
    pub hidden_dim: usize,
    pub bottleneck_dim: usize,
    pub nlayers: usize,
    pub separate_ibot_head: bool,
}

impl Default for HeadsSection {
    fn default() -> Self {
        HeadsSection {
            prototypes: 65536,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            nlayers: 3,
            separate_ibot_head: false,
        }
    }
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Image files, folders (recursive) or list files.
    #[serde(default)]
    pub images: Vec<PathBuf>,
    /// A curated manifest (`dinoadapt curate`): its kept rows' paths are added to `images`.
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// Images per iteration.
    pub batch_size: usize,
    /// Images from a domain plugin instead of image files: `[data.source]` with `domain = "..."`
    /// and that domain's own keys (e.g. random tissue tiles of slides, slices of volumes, chips
    /// of rasters); see `docs/adding-a-domain.md`.
    #[serde(default)]
    pub source: Option<DataSource>,
}

/// `[data.source]`: the domain that supplies the images and its own configuration, which only
/// that domain reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    /// The domain plugin's name (`pathology`, `radiology`, `satellite`, ...).
    pub domain: String,
    /// Every other key of the table, for the domain.
    #[serde(flatten)]
    pub options: toml::Table,
    /// The folder relative paths in `options` are taken from: the recipe's folder unless the
    /// table sets `base` (itself taken from the recipe's folder when relative). A run writes it
    /// out absolute in its `recipe.toml`, so that copy reads the same files.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub base: PathBuf,
}

impl DataSource {
    /// The `[data.source]` table of a TOML file (a recipe, or a file holding only that
    /// table), its `base` taken from the file's folder as in a recipe.
    pub fn load(path: &Path) -> Result<DataSource, RecipeError> {
        let parse_err = |message: String| RecipeError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table = text.parse().map_err(|e| parse_err(format!("{e}")))?;
        let source = table
            .get("data")
            .and_then(|d| d.get("source"))
            .cloned()
            .ok_or_else(|| {
                parse_err("no [data.source] table (domain = \"...\" and the domain's keys)".into())
            })?;
        let mut source: DataSource = source
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(format!("[data.source]: {}", e.message())))?;
        source.base = path.parent().unwrap_or(Path::new(".")).join(&source.base);
        Ok(source)
    }
}

fn is_empty_path(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// `crops.*` (official `DataAugmentationDINO` settings by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropsSection {
    pub global_size: u32,
    pub global_scale: [f64; 2],
    pub local_size: u32,
    pub local_scale: [f64; 2],
    pub local_crops: usize,
    /// Normalisation per input channel (three for RGB; one per channel of a model with
    /// `model.in_chans` channels).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// How the student's global and local crops go through the backbone: `packed` (one
    /// sequence, block-diagonal attention; the default) or `per_size` (one forward each).
    pub forward: CropForward,
}

impl Default for CropsSection {
    fn default() -> Self {
        CropsSection {
            global_size: 224,
            global_scale: [0.32, 1.0],
            local_size: 98,
            local_scale: [0.05, 0.32],
            local_crops: 8,
            mean: dinoadapt_datasets::transforms::IMAGENET_MEAN.to_vec(),
            std: dinoadapt_datasets::transforms::IMAGENET_STD.to_vec(),
            forward: CropForward::Packed,
        }
    }
}

/// iBOT block masking (`ibot.mask_sample_probability`, `ibot.mask_ratio_min_max`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskingSection {
    pub probability: f64,
    pub ratio: [f32; 2],
}

impl Default for MaskingSection {
    fn default() -> Self {
        MaskingSection {
            probability: 0.5,
            ratio: [0.1, 0.5],
        }
    }
}

/// `optim.*`: schedules in epochs of `epoch_length` iterations, and the optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    pub epochs: usize,
    pub epoch_length: usize,
    pub warmup_epochs: usize,
    pub freeze_last_layer_epochs: usize,
    pub base_lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    /// The batch size of the sqrt(batch / 1024) lr scaling; the data batch size by default.
    pub scaling_batch_size: Option<usize>,
    #[serde(flatten)]
    pub optimizer: OptimConfig,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            epochs: 100,
            epoch_length: 1250,
            warmup_epochs: 10,
            freeze_last_layer_epochs: 1,
            base_lr: 0.004,
            min_lr: 1e-6,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            scaling_batch_size: None,
            optimizer: OptimConfig::default(),
        }
    }
}

/// `teacher.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherSection {
    pub momentum_teacher: f64,
    pub final_momentum_teacher: f64,
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub warmup_teacher_temp_epochs: usize,
}

impl Default for TeacherSection {
    fn default() -> Self {
        TeacherSection {
            momentum_teacher: 0.992,
            final_momentum_teacher: 1.0,
            warmup_teacher_temp: 0.04,
            teacher_temp: 0.07,
            warmup_teacher_temp_epochs: 30,
        }
    }
}

/// How the run is executed and saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    pub seed: u64,
    pub output_dir: PathBuf,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Data parallelism: the devices of the run, e.g. `["cuda:0", "cuda:1"]` (`--devices`),
    /// one student/teacher replica per device, each with `data.batch_size / devices` images of
    /// every batch; the gradients and the objective's batch statistics are reduced over all of
    /// them (burn-collective). Empty: `device` alone.
    pub devices: Vec<String>,
    /// Stop after this many iterations (default: epochs x epoch_length).
    pub max_steps: Option<usize>,
    /// Save a checkpoint every this many iterations (and at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept besides the best one.
    pub keep_last: usize,
    /// Head warm-up: iterations with the backbone frozen before joint training.
    pub head_warmup_iterations: usize,
    /// A log line every this many iterations.
    pub log_every: usize,
    /// When `model.checkpoint` names a previous run: carry its AdamW moments and step counts
    /// over too (by default the optimizer starts afresh).
    pub resume_optimizer: bool,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            seed: 0,
            output_dir: PathBuf::from("runs/pretrain"),
            device: "cpu".into(),
            devices: Vec::new(),
            max_steps: None,
            checkpoint_every: 500,
            keep_last: 3,
            head_warmup_iterations: 0,
            log_every: 20,
            resume_optimizer: false,
        }
    }
}

/// The collapse and NaN guard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardSection {
    pub enabled: bool,
    /// Class-token std (mean over dimensions) below which the features count as collapsed.
    pub min_cls_std: f64,
    /// Teacher entropy above this fraction of ln(prototypes) counts as a uniform teacher.
    pub max_entropy_fraction: f64,
    /// Consecutive iterations a symptom must last before the run stops.
    pub patience: usize,
    /// The entropy and uniform-student checks start after this iteration (default: the end of
    /// the teacher temperature and lr warm-ups, whichever is later).
    pub entropy_after: Option<usize>,
    /// The DINO terms count as "at ln K" (the student predicts a uniform distribution) within
    /// this relative distance of ln K times their share...
    pub uniform_tolerance: f64,
    /// ...for this many iterations in a row.
    pub uniform_patience: usize,
}

impl Default for GuardSection {
    fn default() -> Self {
        GuardSection {
            enabled: true,
            min_cls_std: 1e-4,
            max_entropy_fraction: 0.999,
            patience: 20,
            entropy_after: None,
            uniform_tolerance: 2e-3,
            uniform_patience: 50,
        }
    }
}

/// kNN accuracy of the teacher's class tokens on labelled image folders (`<root>/<class>/...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    pub train: PathBuf,
    pub val: PathBuf,
    /// Also evaluate every this many iterations (0: at the start, after the head warm-up and at
    /// the end only).
    #[serde(default)]
    pub every: usize,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Images per class at most (all by default).
    #[serde(default)]
    pub max_per_class: Option<usize>,
}

fn default_drop_path_uniform() -> bool {
    true
}

fn default_k() -> usize {
    20
}

fn default_temperature() -> f64 {
    0.07
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub name: String,
    pub model: ModelSection,
    #[serde(default)]
    pub heads: HeadsSection,
    pub data: DataSection,
    #[serde(default)]
    pub crops: CropsSection,
    #[serde(default)]
    pub masking: MaskingSection,
    #[serde(default)]
    pub loss: SslLossConfig,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub teacher: TeacherSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub guard: GuardSection,
    #[serde(default)]
    pub monitor: Option<MonitorSection>,
    #[serde(default)]
    pub distillation: Option<DistillationSection>,
    /// Stages after the main schedule (`[[stages]]`, e.g. a high-resolution stage): see
    /// [`crate::stages`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageSection>,
}

/// `[distillation]` (DINOv2 §5): train the recipe's (smaller) model against a frozen larger
/// one. The teacher is a previous run (its folder or a `checkpoints/step-N` folder), whose EMA
/// teacher and DINO/iBOT heads give the targets; to distil a released checkpoint, first train
/// its heads on the frozen backbone (a run from `model.checkpoint` with
/// `train.head_warmup_iterations` = `train.max_steps`). The student's global crops are not
/// masked, and the run's output model is the student's EMA (`student/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillationSection {
    pub teacher: PathBuf,
}

/// Set `table[a][b]... = value` for the dotted `key`, creating tables on the way.
fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|k| !k.is_empty())
        .ok_or(key.to_string())?;
    let mut t = table;
    for p in parts {
        t = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// A TOML value from the command line: a TOML literal if it parses as one, else a string.
fn parse_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

impl Recipe {
    /// Read `path` and apply `overrides` (`KEY=VALUE`). Relative paths in the recipe are
    /// relative to the recipe's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, overrides)
    }

    /// Parse recipe text (`origin` names it in errors and anchors relative paths).
    pub fn parse(text: &str, origin: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
        let parse_err = |message: String| RecipeError::Parse {
            path: origin.to_path_buf(),
            message,
        };
        let mut table: toml::Table = text.parse().map_err(|e| parse_err(format!("{e}")))?;
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| RecipeError::Override(o.clone()))?;
            set_path(&mut table, k.trim(), parse_value(v.trim()))
                .map_err(|_| RecipeError::Override(o.clone()))?;
        }
        if let Some(data) = table.get("data").and_then(|d| d.as_table()) {
            for (old, domain) in [
                ("slides", "pathology"),
                ("volumes", "radiology"),
                ("rasters", "satellite"),
            ] {
                if data.contains_key(old) {
                    return Err(parse_err(format!(
                        "data.{old} is now a table of its domain: `[data.source]` with \
                         `domain = \"{domain}\"` and `paths = [...]` (see README, pre-training)"
                    )));
                }
            }
        }
        let mut recipe: Recipe = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.message().to_string()))?;
        let base = origin.parent().unwrap_or(Path::new("."));
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        recipe.data.images.iter_mut().for_each(anchor);
        if let Some(source) = recipe.data.source.as_mut() {
            source.base = base.join(&source.base);
        }
        if let Some(m) = recipe.data.manifest.as_mut() {
            anchor(m);
        }
        if let Some(c) = recipe.model.checkpoint.as_mut() {
            anchor(c);
        }
        if let Some(d) = recipe.distillation.as_mut() {
            anchor(&mut d.teacher);
        }
        anchor(&mut recipe.train.output_dir);
        if let Some(m) = recipe.monitor.as_mut() {
            anchor(&mut m.train);
            anchor(&mut m.val);
        }
        recipe.validate().map_err(|message| RecipeError::Invalid {
            path: origin.to_path_buf(),
            message,
        })?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<(), String> {
        if self.model.arch.is_none() && self.model.checkpoint.is_none() {
            return Err("[model] needs `arch` (a preset) or `checkpoint`".into());
        }
        if self.data.images.is_empty() && self.data.manifest.is_none() && self.data.source.is_none()
        {
            return Err(
                "[data] needs `images` (image files, folders or list files), `manifest` (a \
                 curated manifest) or a `[data.source]` table naming a domain (e.g. \
                 `domain = \"pathology\"` with the slides to sample tissue tiles from)"
                    .into(),
            );
        }
        if self.data.batch_size == 0 {
            return Err("data.batch_size must be at least 1".into());
        }
        let replicas = self.train.devices.len().max(1);
        if !self.data.batch_size.is_multiple_of(replicas) {
            return Err(format!(
                "data.batch_size {} does not split evenly over the {replicas} devices of \
                 train.devices: choose a multiple of {replicas}",
                self.data.batch_size
            ));
        }
        if self.optim.epoch_length == 0 || self.optim.epochs == 0 {
            return Err("optim.epochs and optim.epoch_length must be at least 1".into());
        }
        if self.heads.prototypes == 0 {
            return Err("heads.prototypes must be at least 1".into());
        }
        self.loss.gram.validate()?;
        let mut names = std::collections::BTreeSet::from(["main"]);
        for s in &self.stages {
            s.validate()?;
            if !names.insert(s.name.as_str()) {
                return Err(format!("two stages are named `{}`", s.name));
            }
        }
        Ok(())
    }

    /// The official schedules of this recipe.
    pub fn schedule_config(&self) -> ScheduleConfig {
        let o = &self.optim;
        let t = &self.teacher;
        ScheduleConfig {
            epoch_length: o.epoch_length,
            epochs: o.epochs,
            warmup_epochs: o.warmup_epochs,
            warmup_teacher_temp_epochs: t.warmup_teacher_temp_epochs,
            freeze_last_layer_epochs: o.freeze_last_layer_epochs,
            batch_size: o.scaling_batch_size.unwrap_or(self.data.batch_size),
            base_lr: o.base_lr,
            min_lr: o.min_lr,
            weight_decay: o.weight_decay,
            weight_decay_end: o.weight_decay_end,
            momentum_teacher: t.momentum_teacher,
            final_momentum_teacher: t.final_momentum_teacher,
            warmup_teacher_temp: t.warmup_teacher_temp,
            teacher_temp: t.teacher_temp,
        }
    }

    /// Iterations the run lasts.
    pub fn total_steps(&self) -> usize {
        let full = self.optim.epochs * self.optim.epoch_length;
        self.train.max_steps.map_or(full, |m| m.min(full))
    }

    /// The recipe as TOML (what the run records in its output folder).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("recipes serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [model]
        arch = "vits14"
        [data]
        images = ["imgs"]
        batch_size = 4
    "#;

    #[test]
    fn defaults_are_the_official_ones_and_overrides_apply() {
        let r = Recipe::parse(MINIMAL, Path::new("/x/r.toml"), &[]).unwrap();
        assert_eq!(r.optim.base_lr, 0.004);
        assert_eq!(r.optim.optimizer.clip_grad, 3.0);
        assert_eq!(r.teacher.teacher_temp, 0.07);
        assert_eq!(r.crops.local_crops, 8);
        assert_eq!(r.data.images, vec![PathBuf::from("/x/imgs")]);
        let o = vec![
            "optim.base_lr=0.001".to_string(),
            "optim.clip_grad=1.5".to_string(),
            "loss.centering=softmax".to_string(),
            "train.output_dir=/tmp/out".to_string(),
            "crops.local_crops = 2".to_string(),
        ];
        let r = Recipe::parse(MINIMAL, Path::new("/x/r.toml"), &o).unwrap();
        assert_eq!(r.optim.base_lr, 0.001);
        assert_eq!(r.optim.optimizer.clip_grad, 1.5);
        assert_eq!(r.loss.centering, dinoadapt_core::train::Centering::Softmax);
        assert_eq!(r.train.output_dir, PathBuf::from("/tmp/out"));
        assert_eq!(r.crops.local_crops, 2);
        // The written recipe reads back the same.
        let again = Recipe::parse(&r.to_toml(), Path::new("/"), &[]).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn mistakes_are_named() {
        let e = Recipe::parse(MINIMAL, Path::new("r.toml"), &["optim.base_lr".into()]);
        assert!(matches!(e, Err(RecipeError::Override(_))));
        let e = Recipe::parse(MINIMAL, Path::new("r.toml"), &["optim.bse_lr=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bse_lr"), "{e}");
        let e = Recipe::parse(
            "[data]\nimages=[\"a\"]\nbatch_size=1\n[model]\n",
            Path::new("r.toml"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("arch"), "{e}");
    }
}
