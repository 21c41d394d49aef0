//! What produced an output, recorded under one spelling by every output of the program: the
//! feature files of `embed`, `pathology embed`, `radiology embed` and `satellite embed`
//! (safetensors metadata) and the `.h5` bags (file attributes).

use std::collections::HashMap;

use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::vit::MatmulPrecision;
use serde::Serialize;

/// The version of the program, as every output records it.
pub const PROGRAM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The provenance of a model's outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    /// The checkpoint file the backbone was loaded from.
    pub model: String,
    /// Its sha256 (`random-init-seed-N` for random weights).
    pub checkpoint_sha256: String,
    /// The checkpoint's layout: huggingface, official, timm, native.
    pub layout: String,
    /// The backbone's architecture (JSON of the ViT configuration).
    pub architecture: String,
    /// The device that ran it: cpu, cuda:N.
    pub device: String,
    /// The precision of its matrix products.
    pub matmul_precision: String,
    /// The dinoadapt version that wrote the output.
    pub dinoadapt_version: String,
}

impl Provenance {
    pub fn new(ck: &LoadedCheckpoint, device: impl ToString, precision: MatmulPrecision) -> Self {
        Provenance {
            model: ck.path.display().to_string(),
            checkpoint_sha256: ck.sha256.clone(),
            layout: ck.layout.short().to_string(),
            architecture: serde_json::to_string(&ck.config).expect("the configuration serialises"),
            device: device.to_string(),
            matmul_precision: format!("{precision:?}"),
            dinoadapt_version: PROGRAM_VERSION.to_string(),
        }
    }

    /// The record as key/value pairs, in a fixed order.
    pub fn pairs(&self) -> [(&'static str, String); 7] {
        [
            ("model", self.model.clone()),
            ("checkpoint_sha256", self.checkpoint_sha256.clone()),
            ("layout", self.layout.clone()),
            ("architecture", self.architecture.clone()),
            ("device", self.device.clone()),
            ("matmul_precision", self.matmul_precision.clone()),
            ("dinoadapt_version", self.dinoadapt_version.clone()),
        ]
    }

    /// The record as feature-file metadata.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.pairs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}
