//! Layer tokens of a feature file (from any domain's `embed --layers ...`) in the dense heads'
//! layout `[n, layers, 1 + patches, dim]`, with the backbone they came from and the file's
//! metadata (the domain reads its own keys from it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::HostTensor;
use dinoadapt_heads::dense::TokenSpec;
use serde_json::Value;

use super::folder::Backbone;

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
    pub fn meta(&self, key: &str) -> anyhow::Result<&str> {
        self.meta.get(key).map(|s| s.as_str()).with_context(|| {
            format!(
                "{}: no `{key}` in the metadata; embed with a `dinoadapt <domain> embed` command",
                self.path.display()
            )
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
pub fn load_features(path: &Path, want: usize) -> anyhow::Result<Features> {
    let (tensors, meta) =
        read_safetensors(path).with_context(|| format!("reading features {}", path.display()))?;
    let tensors: HashMap<String, HostTensor> = tensors.into_iter().collect();
    let arch: Value = serde_json::from_str(meta.get("architecture").with_context(|| {
        format!(
            "{}: no `architecture` in the metadata; not a dinoadapt feature file",
            path.display()
        )
    })?)?;
    let registers = arch["num_register_tokens"].as_u64().unwrap_or(0) as usize;
    let depth = arch["depth"].as_u64().unwrap_or(0) as usize;
    let recorded: Vec<usize> = serde_json::from_str(meta.get("layers").map_or("[]", |s| s))?;
    let cls = tensors
        .get("cls")
        .with_context(|| format!("{}: no `cls` tensor", path.display()))?;
    let (n, dim) = (cls.shape[0], cls.shape[1]);
    if recorded.len() < want {
        bail!(
            "{}: the head reads {want} backbone layers, the file has {} layer tensors; embed \
             with `... embed --layers last:4` (the intermediate layers)",
            path.display(),
            recorded.len()
        );
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
            .with_context(|| format!("{}: no `layer.{i}` tensor", path.display()))?;
        patches = t.shape[1] - 1 - registers;
        layer_data.push(t);
    }
    let side = (patches as f64).sqrt().round() as usize;
    if side * side != patches {
        bail!(
            "{}: {patches} patches are not a square grid",
            path.display()
        );
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
    let field = |key: &str| {
        meta.get(key).cloned().with_context(|| {
            format!(
                "{}: no `{key}` in the metadata; not a dinoadapt feature file",
                path.display()
            )
        })
    };
    let backbone = Backbone {
        model: field("model")?,
        checkpoint_sha256: field("checkpoint_sha256")?,
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
