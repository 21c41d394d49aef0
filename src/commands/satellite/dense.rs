//! `satellite predict --head DIR`: a trained dense head (segment / canopy, written by `heads
//! train`) and its backbone over a whole raster, on the tiled inference of the other heads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use dinoadapt_heads::dense::{DensePredictor, DenseTask};
use dinoadapt_satellite::predict::{
    class_map, ChipBatch, ChipModel, PredictConfig, PredictSummary,
};
use dinoadapt_satellite::{Normalization, Raster};

use super::{run_predict, HeadChoice};
use crate::commands::heads::dense::folder::{load, predictor, HeadFolder, Preprocessing};
use crate::device::{on_device, BackendJob};
use crate::model_args::ModelArgs;
use dinoadapt_core::backend::DeviceSpec;

pub use crate::commands::heads::dense::folder::is_head_folder;

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
    norm: Normalization,
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
        let predictor = predictor::<B>(&self.head, &self.model, self.device, self.tf32, device)?;
        let mut model = DenseChipModel {
            predictor,
            norm: self.norm,
        };
        run_predict(self.raster, self.out, &self.cfg, &mut model, self.quiet)
    }
}

/// Tiled inference of a dense head folder (`choice.head`) over `raster` into `out`.
pub fn predict(
    raster: &Raster,
    out: &Path,
    cfg: &PredictConfig,
    choice: &HeadChoice,
) -> anyhow::Result<PredictSummary> {
    let (head, pre) = load(Path::new(choice.head))?;
    predict_loaded(head, &pre, raster, out, cfg, choice)
}

/// [`predict`] with the head folder already read (`choice.head` names it in messages).
pub fn predict_loaded(
    head: HeadFolder,
    pre: &Preprocessing,
    raster: &Raster,
    out: &Path,
    cfg: &PredictConfig,
    choice: &HeadChoice,
) -> anyhow::Result<PredictSummary> {
    let pre = match pre {
        Preprocessing::Satellite(s) => s.clone(),
        other => bail!(
            "{}: a {} head; predict with `dinoadapt heads predict --head {} --input ...`",
            choice.head,
            other.domain(),
            choice.head
        ),
    };
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
    let model = choice.model.clone();
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
            norm: pre.normalization.clone(),
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
