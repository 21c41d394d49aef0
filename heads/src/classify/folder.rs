//! A trained classification head on disk: `head.json` (task, classes, feature kind, dimension,
//! the linear probe's configuration) and `head.safetensors` (weight, bias and the feature
//! standardisation).

use std::collections::HashMap;
use std::path::Path;

use dinoadapt_core::checkpoint::safetensors_io::{read_safetensors, write_safetensors};
use dinoadapt_core::checkpoint::HostTensor;
use serde_json::json;

use super::{ClassifyError, FeatureKind};
use crate::linear::{LinearProbe, LinearProbeConfig};

/// The linear probe a head folder holds, its class names and the features it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeHead {
    pub probe: LinearProbe,
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    pub features: FeatureKind,
}

impl ProbeHead {
    /// Writes `head.safetensors` and `head.json` into `dir` (which exists).
    pub fn save(&self, dir: &Path) -> Result<(), ClassifyError> {
        let probe = &self.probe;
        let meta = HashMap::from([
            ("dinoadapt.head".to_string(), "linear".to_string()),
            ("classes".to_string(), serde_json::to_string(&self.classes)?),
            ("features".to_string(), self.features.as_str().to_string()),
            ("config".to_string(), serde_json::to_string(&probe.config)?),
        ]);
        let (c, d) = (probe.classes, probe.dim);
        let host = |shape: Vec<usize>, data: &[f32]| HostTensor {
            shape,
            data: data.to_vec(),
        };
        write_safetensors(
            &dir.join("head.safetensors"),
            &[
                ("weight".to_string(), host(vec![c, d], &probe.weight)),
                ("bias".to_string(), host(vec![c], &probe.bias)),
                ("feature_mean".to_string(), host(vec![d], &probe.mean)),
                ("feature_std".to_string(), host(vec![d], &probe.std)),
            ],
            meta,
        )?;
        std::fs::write(
            dir.join("head.json"),
            serde_json::to_string_pretty(&json!({
                "head": "linear",
                "task": "classify",
                "classes": self.classes,
                "features": self.features.as_str(),
                "dim": d,
                "config": probe.config,
            }))?,
        )?;
        Ok(())
    }

    /// Reads the head folder `dir`.
    pub fn load(dir: &Path) -> Result<Self, ClassifyError> {
        let text = std::fs::read_to_string(dir.join("head.json")).map_err(|source| {
            ClassifyError::NotAHead {
                dir: dir.to_path_buf(),
                source,
            }
        })?;
        let info: serde_json::Value = serde_json::from_str(&text)?;
        let classes: Vec<String> = serde_json::from_value(info["classes"].clone())?;
        let features = info["features"].as_str().unwrap_or("cls");
        let config: LinearProbeConfig = serde_json::from_value(info["config"].clone())?;
        let (tensors, _) = read_safetensors(&dir.join("head.safetensors"))?;
        let t = |n: &str| {
            tensors
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| ClassifyError::MissingHeadTensor(n.to_string()))
        };
        let weight = t("weight")?;
        let probe = LinearProbe {
            classes: weight.shape[0],
            dim: weight.shape[1],
            weight: weight.data,
            bias: t("bias")?.data,
            mean: t("feature_mean")?.data,
            std: t("feature_std")?.data,
            config,
        };
        Ok(ProbeHead {
            probe,
            classes,
            features: features.parse()?,
        })
    }
}
