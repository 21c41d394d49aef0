//! The domains' side of a dense head folder ([`dinoadapt_heads::dense::folder`]): how each
//! domain's pixels became model inputs (`preprocessing` in `head.json`, in the domain crates'
//! types), and the backbone + head predictor built from a folder for inference in any domain.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::Backend;
use dinoadapt_heads::dense::folder as dense_folder;
pub use dinoadapt_heads::dense::folder::{is_head_folder, HeadFolder};
use dinoadapt_heads::dense::DensePredictor;
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

    /// As `head.json` records it (the heads crate keeps it as the domain's JSON).
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
}

/// Reads the dense head folder `dir` and its domain's preprocessing.
pub fn load(dir: &Path) -> anyhow::Result<(HeadFolder, Preprocessing)> {
    let head = dense_folder::load(dir)?;
    let pre = serde_json::from_value(head.info.preprocessing.clone()).with_context(|| {
        format!(
            "{}: not a dense head (segment / canopy) description",
            dir.join("head.json").display()
        )
    })?;
    Ok((head, pre))
}

/// The backbone for a head: the model flags when given, else the head's recorded model.
pub fn backbone_args(head: &HeadFolder, given: &ModelArgs) -> ModelArgs {
    let mut args = given.clone();
    if let (None, false, Some(b)) = (&args.model, args.random_init, &head.info.backbone) {
        args.model = Some(PathBuf::from(&b.model));
    }
    args
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
    head.check_backbone(&ck.sha256, &ck.path.display().to_string())
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}. Give the head's backbone with --model (or --random-init --preset ... \
                 --seed N for random-init-seed-N)"
            )
        })?;
    let backbone = ck
        .build::<B>(&device)?
        .with_precision(matmul_precision(spec, tf32));
    let info = &head.info;
    let dense = head.dense_head::<B>(&device)?;
    Ok(DensePredictor {
        backbone,
        tokens: info.tokens.clone(),
        config: info.head.clone(),
        head: dense,
        device,
        chunks: batch_chunks(spec),
    })
}
