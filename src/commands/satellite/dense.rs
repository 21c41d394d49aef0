//! `satellite predict --head DIR`: a trained dense head (segment / canopy, written by `heads
//! train`) and its backbone over a whole raster, on the tiled inference of the other heads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::NamedTensors;
use dinoadapt_heads::dense::{DenseHead, DenseHeadConfig, DensePredictor, DenseTask, TokenSpec};
use dinoadapt_satellite::predict::{ChipBatch, ChipModel, PredictConfig, PredictSummary};
use dinoadapt_satellite::{GeoTiffWriter, Normalization, OutputSpec, Raster, Window};
use serde::{Deserialize, Serialize};

use super::{run_predict, HeadChoice};
use crate::device::{batch_chunks, matmul_precision, on_device, BackendJob};
use crate::model_args::ModelArgs;
use dinoadapt_core::backend::DeviceSpec;

/// The backbone a head was trained on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backbone {
    pub model: String,
    pub checkpoint_sha256: String,
    pub architecture: serde_json::Value,
}

/// How chips were cut and normalised for the backbone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preprocessing {
    pub domain: String,
    pub normalization: Normalization,
    pub bands: Vec<usize>,
    pub chip_size: usize,
    pub chip_stride: usize,
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

/// The backbone for a head: the model flags when given, else the head's recorded model;
/// refused when its checkpoint hash differs from the head's.
pub fn backbone_args(head: &HeadFolder, given: &ModelArgs) -> ModelArgs {
    let mut args = given.clone();
    if args.model.is_none() && !args.random_init {
        args.model = Some(PathBuf::from(&head.info.backbone.model));
    }
    args
}

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

struct DenseChipModel<B: Backend> {
    predictor: DensePredictor<B>,
    norm: Normalization,
}

impl<B: Backend> ChipModel for DenseChipModel<B> {
    fn channels(&self) -> usize {
        self.predictor.channels()
    }

    fn predict(&mut self, batch: &ChipBatch) -> Result<Vec<f32>, String> {
        self.predictor
            .predict(
                batch.normalized(&self.norm),
                batch.chips.len(),
                (batch.size, batch.size),
            )
            .map_err(|e| e.to_string())
    }
}

struct Job<'a> {
    head: HeadFolder,
    model: ModelArgs,
    device: DeviceSpec,
    tf32: bool,
    quiet: bool,
    raster: &'a Raster,
    out: &'a Path,
    cfg: PredictConfig,
}

impl BackendJob for Job<'_> {
    type Output = PredictSummary;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<PredictSummary> {
        let ck = self.model.load()?;
        check_backbone(&self.head, &ck.sha256, &ck.path.display().to_string())?;
        let precision = matmul_precision(self.device, self.tf32);
        let backbone = ck.build::<B>(&device)?.with_precision(precision);
        let info = &self.head.info;
        let head = DenseHead::<B>::from_named(&info.head, self.head.tensors.clone(), &device)
            .with_context(|| format!("{}: head.safetensors", self.head.dir.display()))?;
        let mut model = DenseChipModel {
            predictor: DensePredictor {
                backbone,
                tokens: info.tokens.clone(),
                config: info.head.clone(),
                head,
                device,
                chunks: batch_chunks(self.device),
            },
            norm: info.preprocessing.normalization.clone(),
        };
        run_predict(self.raster, self.out, &self.cfg, &mut model, self.quiet)
    }
}

/// Band 1 the most probable class (nodata where the input was), bands 2.. the probabilities.
fn class_map(probs: &Path, out: &Path, classes: usize, cog: bool) -> anyhow::Result<PathBuf> {
    let src = Raster::open(probs)?;
    let info = src.info().clone();
    let mut writer = GeoTiffWriter::create(
        out,
        OutputSpec {
            width: info.width,
            height: info.height,
            bands: 1 + classes,
            geotransform: info.require_geotransform()?,
            crs: info.crs.clone(),
            nodata: f64::NAN,
            cog,
        },
    )?;
    let bands: Vec<usize> = (1..=classes).collect();
    let w = info.width;
    for row0 in (0..info.height).step_by(256) {
        let rows = 256.min(info.height - row0);
        let px = src.read_window(
            &bands,
            Window {
                col: 0,
                row: row0 as i64,
                width: w,
                height: rows,
            },
        )?;
        let plane = rows * w;
        let mut data = Vec::with_capacity((1 + classes) * plane);
        data.extend((0..plane).map(|p| {
            if !px.valid[p] {
                return f32::NAN;
            }
            (0..classes)
                .fold((0usize, f32::NEG_INFINITY), |b, k| {
                    let v = px.data[k * plane + p];
                    if v > b.1 {
                        (k, v)
                    } else {
                        b
                    }
                })
                .0 as f32
        }));
        data.extend_from_slice(&px.data);
        writer.write_rows(row0, rows, data)?;
    }
    Ok(writer.finish()?)
}

/// Tiled inference of a dense head folder (`choice.head`) over `raster` into `out`.
pub fn predict(
    raster: &Raster,
    out: &Path,
    cfg: &PredictConfig,
    choice: &HeadChoice,
) -> anyhow::Result<PredictSummary> {
    let head = load(Path::new(choice.head))?;
    let pre = head.info.preprocessing.clone();
    let size = pre.chip_size;
    let cfg = PredictConfig {
        bands: pre.bands.clone(),
        chip_size: size,
        stride: if cfg.stride <= size {
            cfg.stride
        } else {
            (size / 2).max(1)
        },
        nodata: Some(cfg.nodata.unwrap_or(f64::NAN)),
        ..cfg.clone()
    };
    let task = head.info.head.task();
    let model = backbone_args(&head, choice.model);
    let classes = head.info.head.output_channels();
    let target = match task {
        DenseTask::Canopy => out.to_path_buf(),
        DenseTask::Segment => {
            let mut p = out.as_os_str().to_os_string();
            p.push(".probabilities.tif");
            PathBuf::from(p)
        }
    };
    let mut summary = on_device(
        choice.device,
        Job {
            head,
            model,
            device: choice.device,
            tf32: choice.tf32,
            quiet: choice.quiet,
            raster,
            out: &target,
            cfg: PredictConfig {
                cog: cfg.cog && task == DenseTask::Canopy,
                ..cfg.clone()
            },
        },
    )?;
    if task == DenseTask::Segment {
        summary.output = class_map(&target, out, classes, cfg.cog)?;
        std::fs::remove_file(&target).with_context(|| format!("removing {}", target.display()))?;
    }
    Ok(summary)
}
