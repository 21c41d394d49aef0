//! Layer tokens of a feature file (from any domain's `embed --layers ...`) in the dense heads'
//! layout `[n, layers, 1 + patches, dim]`, with the backbone they came from and the file's
//! metadata (the domain reads its own keys from it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::{CheckpointError, HostTensor};
use serde_json::Value;

use super::TokenSpec;
use crate::backbone::Backbone;

/// What can go wrong reading a feature file for a dense head.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    #[error("reading features {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: Box<CheckpointError>,
    },
    /// A key every dinoadapt feature file records is missing.
    #[error("{}: no `{key}` in the metadata; not a dinoadapt feature file", path.display())]
    NotAFeatureFile { path: PathBuf, key: String },
    /// A key the domain needs is missing.
    #[error(
        "{}: no `{key}` in the metadata; embed with a `dinoadapt <domain> embed` command",
        path.display()
    )]
    MissingMeta { path: PathBuf, key: String },
    #[error("{}: no `{name}` tensor", path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error(
        "{}: the head reads {want} backbone layers, the file has {found} layer tensors; embed \
         with `... embed --layers last:4` (the intermediate layers)",
        path.display()
    )]
    TooFewLayers {
        path: PathBuf,
        want: usize,
        found: usize,
    },
    #[error("{}: {patches} patches are not a square grid", path.display())]
    NotSquare { path: PathBuf, patches: usize },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Features of a file in the heads' token layout.
pub struct Features {
    pub path: PathBuf,
    pub tokens: Vec<f32>,
    pub n: usize,
    pub layers: usize,
    pub dim: usize,
    pub grid: (usize, usize),
    pub spec: TokenSpec,
    pub backbone: Backbone,
    pub meta: HashMap<String, String>,
}

impl Features {
    /// A metadata value the domain needs.
    pub fn meta(&self, key: &str) -> Result<&str, FeaturesError> {
        self.meta
            .get(key)
            .map(|s| s.as_str())
            .ok_or_else(|| FeaturesError::MissingMeta {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    /// The domain that made the file (`domain` metadata; satellite files of older versions
    /// lack it).
    pub fn domain(&self) -> &str {
        match self.meta.get("domain") {
            Some(d) => d,
            None if self.meta.contains_key("bands") => "satellite",
            None => "unknown",
        }
    }
}

/// Loads `path` keeping its last `want` layers (class token + patches of each).
pub fn load_features(path: &Path, want: usize) -> Result<Features, FeaturesError> {
    let (tensors, meta) = read_safetensors(path).map_err(|source| FeaturesError::Read {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    let tensors: HashMap<String, HostTensor> = tensors.into_iter().collect();
    let field = |key: &str| {
        meta.get(key).ok_or_else(|| FeaturesError::NotAFeatureFile {
            path: path.to_path_buf(),
            key: key.to_string(),
        })
    };
    let missing = |name: String| FeaturesError::MissingTensor {
        path: path.to_path_buf(),
        name,
    };
    let arch: Value = serde_json::from_str(field("architecture")?)?;
    let registers = arch["num_register_tokens"].as_u64().unwrap_or(0) as usize;
    let depth = arch["depth"].as_u64().unwrap_or(0) as usize;
    let recorded: Vec<usize> = serde_json::from_str(meta.get("layers").map_or("[]", |s| s))?;
    let cls = tensors.get("cls").ok_or_else(|| missing("cls".into()))?;
    let (n, dim) = (cls.shape[0], cls.shape[1]);
    if recorded.len() < want {
        return Err(FeaturesError::TooFewLayers {
            path: path.to_path_buf(),
            want,
            found: recorded.len(),
        });
    }
    let chosen = recorded[recorded.len() - want..].to_vec();
    // Whether layer.{i} went through the final norm: recorded by the embed commands, or (older
    // files) seen when the last block is among them (normed, it equals the final output).
    let norm_layers = match meta.get("layers_normed") {
        Some(v) => v == "true",
        None => match tensors.get(&format!("layer.{}", depth.saturating_sub(1))) {
            Some(last) => {
                let t = last.shape[1];
                let d = last.data[..t * dim].iter().zip(&cls.data[..dim]);
                d.map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) < 1e-4
            }
            None => false,
        },
    };
    let mut layer_data = Vec::with_capacity(want);
    let mut patches = 0;
    for i in &chosen {
        let t = tensors
            .get(&format!("layer.{i}"))
            .ok_or_else(|| missing(format!("layer.{i}")))?;
        patches = t.shape[1] - 1 - registers;
        layer_data.push(t);
    }
    let side = (patches as f64).sqrt().round() as usize;
    if side * side != patches {
        return Err(FeaturesError::NotSquare {
            path: path.to_path_buf(),
            patches,
        });
    }
    let per = (1 + registers + patches) * dim;
    let mut tokens = Vec::with_capacity(n * want * (1 + patches) * dim);
    for s in 0..n {
        for t in &layer_data {
            let row = &t.data[s * per..(s + 1) * per];
            tokens.extend_from_slice(&row[..dim]);
            tokens.extend_from_slice(&row[(1 + registers) * dim..]);
        }
    }
    let backbone = Backbone {
        model: field("model")?.clone(),
        checkpoint_sha256: field("checkpoint_sha256")?.clone(),
        layout: meta.get("layout").cloned().unwrap_or_default(),
        architecture: arch,
    };
    Ok(Features {
        path: path.to_path_buf(),
        tokens,
        n,
        layers: want,
        dim,
        grid: (side, side),
        spec: TokenSpec {
            layers: chosen,
            norm_layers,
        },
        backbone,
        meta,
    })
}
