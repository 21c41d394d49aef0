//! A trained dense head on disk: `head.json` (task, head configuration, the backbone it was
//! trained on, how the domain's pixels became model inputs) and `head.safetensors`; and the
//! backbone + head predictor built from it for inference in any domain.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::NamedTensors;
pub use dinoadapt_heads::backbone::Backbone;
use dinoadapt_heads::dense::{DenseHead, DenseHeadConfig, DensePredictor, TokenSpec};
use dinoadapt_pathology::tiling::TilingConfig;
use dinoadapt_radiology::source::SliceOptions;
use dinoadapt_satellite::Normalization;
use serde::{Deserialize, Serialize};

use crate::device::{batch_chunks, matmul_precision};
use crate::model_args::ModelArgs;
use dinoadapt_core::backend::DeviceSpec;

/// Satellite chips: bands, size, and the per-band normalisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SatelliteInput {
    pub normalization: Normalization,
    pub bands: Vec<usize>,
    pub chip_size: usize,
    pub chip_stride: usize,
}

/// Slide tiles: pixel size, side and stride, and the RGB normalisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathologyInput {
    pub tiling: TilingConfig,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// How the domain's pixels became model inputs when the features were made; prediction cuts
/// its inputs the same way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "domain", rename_all = "snake_case")]
pub enum Preprocessing {
    Satellite(SatelliteInput),
    /// Volume slices (axis, intensity mapping, channels, size, aspect, step).
    Radiology {
        slices: SliceOptions,
    },
    Pathology(PathologyInput),
}

impl Preprocessing {
    pub fn domain(&self) -> &'static str {
        match self {
            Preprocessing::Satellite(_) => "satellite",
            Preprocessing::Radiology { .. } => "radiology",
            Preprocessing::Pathology(_) => "pathology",
        }
    }

    /// Side of the square model input, in pixels.
    pub fn input_size(&self) -> usize {
        match self {
            Preprocessing::Satellite(s) => s.chip_size,
            Preprocessing::Radiology { slices } => slices.input.size,
            Preprocessing::Pathology(p) => p.tiling.size as usize,
        }
    }
}

/// `head.json` of a dense head folder (the fields prediction needs; the file holds more).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadInfo {
    pub task: String,
    pub head: DenseHeadConfig,
    pub tokens: TokenSpec,
    pub backbone: Backbone,
    pub preprocessing: Preprocessing,
    /// Class names (segment), in class-index order.
    #[serde(default)]
    pub class_names: Vec<String>,
}

/// A head folder read from disk.
pub struct HeadFolder {
    pub dir: PathBuf,
    pub info: HeadInfo,
    pub tensors: NamedTensors,
}

pub fn is_head_folder(dir: &Path) -> bool {
    dir.join("head.json").is_file()
}

pub fn load(dir: &Path) -> anyhow::Result<HeadFolder> {
    let path = dir.join("head.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: not a head folder (no head.json)", dir.display()))?;
    let info: HeadInfo = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a dense head (segment / canopy) description",
            path.display()
        )
    })?;
    let (tensors, _) = read_safetensors(&dir.join("head.safetensors"))
        .with_context(|| format!("{}: reading head.safetensors", dir.display()))?;
    Ok(HeadFolder {
        dir: dir.to_path_buf(),
        info,
        tensors,
    })
}

impl HeadFolder {
    /// The head's class name of class `k` (its index when none was recorded).
    pub fn class_name(&self, k: usize) -> String {
        self.info
            .class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"))
    }
}

/// The backbone for a head: the model flags when given, else the head's recorded model.
pub fn backbone_args(head: &HeadFolder, given: &ModelArgs) -> ModelArgs {
    let mut args = given.clone();
    if args.model.is_none() && !args.random_init {
        args.model = Some(PathBuf::from(&head.info.backbone.model));
    }
    args
}

/// Refuses a backbone whose checkpoint hash differs from the head's.
pub fn check_backbone(head: &HeadFolder, sha256: &str, model: &str) -> anyhow::Result<()> {
    let want = &head.info.backbone.checkpoint_sha256;
    if sha256 != want {
        bail!(
            "{}: the head was trained on the backbone {} (checkpoint sha256 {want}); \
             the backbone given ({model}) has sha256 {sha256}. Give the head's backbone \
             with --model (or --random-init --preset ... --seed N for random-init-seed-N)",
            head.dir.display(),
            head.info.backbone.model
        );
    }
    Ok(())
}

/// Backbone (`model`, checked against the head's) + head on `device`.
pub fn predictor<B: Backend>(
    head: &HeadFolder,
    model: &ModelArgs,
    spec: DeviceSpec,
    tf32: bool,
    device: B::Device,
) -> anyhow::Result<DensePredictor<B>> {
    let ck = backbone_args(head, model).load()?;
    check_backbone(head, &ck.sha256, &ck.path.display().to_string())?;
    let backbone = ck
        .build::<B>(&device)?
        .with_precision(matmul_precision(spec, tf32));
    let info = &head.info;
    let dense = DenseHead::<B>::from_named(&info.head, head.tensors.clone(), &device)
        .with_context(|| format!("{}: head.safetensors", head.dir.display()))?;
    Ok(DensePredictor {
        backbone,
        tokens: info.tokens.clone(),
        config: info.head.clone(),
        head: dense,
        device,
        chunks: batch_chunks(spec),
    })
}

/// Index of the largest of `classes` values at pixel `p` of planes of `plane` pixels.
pub fn argmax_at(probs: &[f32], classes: usize, plane: usize, p: usize) -> usize {
    (0..classes)
        .fold((0usize, f32::NEG_INFINITY), |b, k| {
            let v = probs[k * plane + p];
            if v > b.1 {
                (k, v)
            } else {
                b
            }
        })
        .0
}
