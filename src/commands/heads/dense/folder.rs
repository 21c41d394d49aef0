//! A dense head folder ([`dinoadapt_heads::dense::head_folder`]) with the domain that reads its
//! `preprocessing`, and the backbone + head predictor built from it.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dinoadapt_datasets::{DenseValues, Domain};
use dinoadapt_heads::dense::head_folder as dense_folder;
pub use dinoadapt_heads::dense::head_folder::{is_head_folder, HeadFolder};
use dinoadapt_heads::dense::{DensePredictor, DenseTask};

use super::targets::registered;
use crate::device::{batch_chunks, matmul_precision};
use crate::model_args::ModelArgs;
use dinoadapt_core::backend::DeviceSpec;

/// Reads the dense head folder `dir` and finds the domain of its preprocessing.
pub fn load(dir: &Path) -> anyhow::Result<(HeadFolder, &'static dyn Domain)> {
    let head = dense_folder::load(dir)?;
    let what = dir.join("head.json").display().to_string();
    let domain = registered(head.info.domain(), &what)?;
    Ok((head, domain))
}

/// What the head predicts per pixel.
pub fn values(head: &HeadFolder) -> DenseValues {
    match head.info.head.task() {
        DenseTask::Canopy => DenseValues::Heights,
        DenseTask::Segment => DenseValues::Classes,
    }
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
