//! The backbone a head was trained on, as its folder and feature files record it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The backbone a head was trained on: the part of the features' provenance
/// ([`dinoadapt_datasets::Provenance`]) that names the model, not the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backbone {
    /// The checkpoint file the backbone was loaded from.
    pub model: String,
    /// Its sha256 (`random-init-seed-N` for random weights): what two backbones are compared by.
    pub checkpoint_sha256: String,
    /// The checkpoint's layout: huggingface, official, timm, native (empty where not recorded).
    #[serde(default)]
    pub layout: String,
    /// The ViT configuration.
    pub architecture: serde_json::Value,
}

impl Backbone {
    /// The backbone that a feature file's metadata (or a bag's attributes) names; `None` when
    /// it records no checkpoint (features of other tools).
    pub fn from_metadata(meta: &HashMap<String, String>) -> Option<Backbone> {
        let model = meta.get("model")?;
        let sha256 = meta.get("checkpoint_sha256")?;
        let architecture = meta
            .get("architecture")
            .map(|a| serde_json::from_str(a).unwrap_or_else(|_| a.as_str().into()))
            .unwrap_or_default();
        Some(Backbone {
            model: model.clone(),
            checkpoint_sha256: sha256.clone(),
            layout: meta.get("layout").cloned().unwrap_or_default(),
            architecture,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backbone_is_read_from_provenance_metadata() {
        let mut meta = HashMap::from([
            ("model".to_string(), "m.safetensors".to_string()),
            ("layout".to_string(), "huggingface".to_string()),
            ("architecture".to_string(), r#"{"depth":2}"#.to_string()),
        ]);
        assert_eq!(Backbone::from_metadata(&meta), None);
        meta.insert("checkpoint_sha256".into(), "abc".into());
        let b = Backbone::from_metadata(&meta).unwrap();
        assert_eq!(
            (b.model.as_str(), b.layout.as_str()),
            ("m.safetensors", "huggingface")
        );
        assert_eq!(b.checkpoint_sha256, "abc");
        assert_eq!(b.architecture["depth"], 2);
    }
}
