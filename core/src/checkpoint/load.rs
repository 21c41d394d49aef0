//! Opening a checkpoint as users hold it: a file or a folder, any supported format.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::CheckpointError;
use super::host_tensor::{HostTensor, NamedTensors};
use super::infer::{infer_config, ArchOverrides, ConfigFile, HeadsSource};
use super::layout::{detect_layout, strip_wrappers, to_canonical, Layout};
use super::safetensors_io::{looks_like_safetensors, read_safetensors};
use super::torch_pickle::{looks_like_torch_zip, read_torch_checkpoint};
use crate::vit::{StateDict, VisionTransformer, VitConfig, WeightError};

/// Metadata key under which native checkpoints store their architecture.
pub const NATIVE_ARCH_KEY: &str = "dinoadapt.arch";

/// The container format of the weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    /// `torch.save` zip archive (`.pth`, `.bin`, `.pt`).
    TorchZip,
}

impl FileFormat {
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Safetensors => "safetensors",
            FileFormat::TorchZip => "torch zip-pickle",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub overrides: ArchOverrides,
}

/// A checkpoint read into host memory with its architecture.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    pub path: PathBuf,
    pub config_path: Option<PathBuf>,
    pub file_format: FileFormat,
    pub layout: Layout,
    pub config: VitConfig,
    pub heads_source: HeadsSource,
    pub state: StateDict,
    /// Head / wrapper keys that were left out.
    pub dropped: Vec<String>,
    /// sha256 of the weights file, hex.
    pub sha256: String,
}

impl LoadedCheckpoint {
    /// A checkpoint of seeded random weights (official initialisation) for the architecture the
    /// overrides name (a preset or an architecture file), named `random-init-seed-N` (path and
    /// hash alike); `Err` says what is missing or wrong. For tests and benchmarks.
    pub fn random(overrides: &ArchOverrides, seed: u64) -> Result<LoadedCheckpoint, String> {
        use crate::backend::CpuBackend;
        use crate::vit::VisionTransformer;

        let (config, heads_source) = super::infer::explicit_config(overrides, None)
            .ok_or_else(|| "--random-init needs --preset or --arch-file".to_string())??;
        let device = Default::default();
        CpuBackend::seed(&device, seed);
        let state = VisionTransformer::<CpuBackend>::init(&config, &device).to_state();
        let name = format!("random-init-seed-{seed}");
        Ok(LoadedCheckpoint {
            path: PathBuf::from(&name),
            config_path: None,
            file_format: FileFormat::Safetensors,
            layout: Layout::Native,
            config,
            heads_source,
            state,
            dropped: Vec::new(),
            sha256: name,
        })
    }

    /// Build the model on `device`.
    pub fn build<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<VisionTransformer<B>, CheckpointError> {
        VisionTransformer::from_state(&self.config, &self.state, device)
            .map_err(|e| weight_error(&self.path, self.layout, &self.config, e))
    }

    pub fn num_params(&self) -> usize {
        self.state.values().map(HostTensor::numel).sum()
    }
}

fn weight_error(path: &Path, layout: Layout, cfg: &VitConfig, e: WeightError) -> CheckpointError {
    let arch = format!(
        "D={} depth={} heads={} patch={} registers={} ffn={:?}",
        cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size, cfg.num_register_tokens, cfg.ffn
    );
    let path = path.to_path_buf();
    match e {
        WeightError::Missing(keys) => CheckpointError::MissingKeys {
            path,
            layout: layout.name(),
            keys,
            hint: format!(
                "the architecture ({arch}) needs them: the file may be incomplete, or not the \
                 model --preset/--arch-file says"
            ),
        },
        WeightError::Mismatch {
            missing,
            unexpected,
        } => CheckpointError::MissingKeys {
            path,
            layout: layout.name(),
            keys: missing,
            hint: format!(
                "the file has {} instead, which the architecture ({arch}) does not \
                 use: the keys may be misnamed (rename them to the {} names) or the file is \
                 not this model",
                super::error::key_list(&unexpected),
                layout.name()
            ),
        },
        WeightError::Unexpected(keys) => CheckpointError::UnexpectedKeys {
            path,
            layout: layout.name(),
            keys,
            hint: format!(
                "they are not part of the architecture ({arch}); give the right --preset or \
                 --arch-file, or strip them from the file"
            ),
        },
        WeightError::Shape {
            key,
            expected,
            found,
        } => CheckpointError::Shape {
            path,
            key,
            expected,
            found,
            hint: format!(
                "the architecture ({arch}) does not fit this file: check --num-heads, --preset \
                 or --arch-file"
            ),
        },
    }
}

/// Find the weights file and config file for a path that is a file or a folder.
pub fn resolve(path: &Path) -> Result<(PathBuf, Option<PathBuf>), CheckpointError> {
    if !path.exists() {
        return Err(CheckpointError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                crate::io::why_unreachable(path),
            ),
        ));
    }
    crate::io::refuse_special_file(path).map_err(|e| CheckpointError::io(path, e))?;
    let (weights, dir) = if path.is_dir() {
        let mut found = None;
        for name in [
            "model.safetensors",
            "pytorch_model.bin",
            "open_clip_pytorch_model.bin",
        ] {
            if path.join(name).is_file() {
                found = Some(path.join(name));
                break;
            }
        }
        if found.is_none() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| CheckpointError::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("safetensors" | "pth" | "bin" | "pt")
                    )
                })
                .collect();
            entries.sort();
            found = entries.into_iter().next();
        }
        let w = found.ok_or_else(|| CheckpointError::Unsupported {
            path: path.to_path_buf(),
            reason: "no checkpoint in this folder (looked for model.safetensors, \
                     pytorch_model.bin, *.safetensors, *.pth, *.bin)"
                .into(),
        })?;
        (w, path.to_path_buf())
    } else {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (path.to_path_buf(), dir)
    };
    let config = dir.join("config.json");
    Ok((weights, config.is_file().then_some(config)))
}

/// Classify a config.json.
pub fn read_config_file(path: &Path) -> Result<ConfigFile, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CheckpointError::malformed(path, "JSON config", e.to_string()))?;
    let mut cfg = ConfigFile::default();
    if let Some(native) = v.get("dinoadapt") {
        cfg.native =
            Some(serde_json::from_value(native.clone()).map_err(|e| {
                CheckpointError::malformed(path, "dinoadapt config", e.to_string())
            })?);
    } else if v.get("model_type").is_some() {
        cfg.huggingface = Some(v);
    } else if v.get("architecture").is_some() || v.get("model_args").is_some() {
        cfg.timm = Some(v);
    }
    Ok(cfg)
}

/// Read an architecture file (the JSON schema of [`VitConfig`], optionally under `dinoadapt`).
pub fn read_arch_file(path: &Path) -> Result<VitConfig, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CheckpointError::malformed(path, "architecture file", e.to_string()))?;
    let v = v.get("dinoadapt").cloned().unwrap_or(v);
    serde_json::from_value(v)
        .map_err(|e| CheckpointError::malformed(path, "architecture file", e.to_string()))
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, CheckpointError> {
    let mut f = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| CheckpointError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Read the raw tensors of a weights file, detecting the container from its first bytes.
pub fn read_weights_file(
    path: &Path,
) -> Result<(FileFormat, NamedTensors, HashMap<String, String>), CheckpointError> {
    let mut prefix = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut prefix))
        .map_err(|e| CheckpointError::io(path, e))?;
    let prefix = &prefix[..n];
    if looks_like_torch_zip(prefix) {
        Ok((
            FileFormat::TorchZip,
            read_torch_checkpoint(path)?,
            HashMap::new(),
        ))
    } else if looks_like_safetensors(prefix) {
        let (t, m) = read_safetensors(path)?;
        Ok((FileFormat::Safetensors, t, m))
    } else if prefix.first() == Some(&0x80) {
        Err(CheckpointError::Unsupported {
            path: path.to_path_buf(),
            reason: "legacy (pre-1.6) torch.save format; re-save it with torch>=1.6 \
                     `torch.save(state_dict, path)`"
                .into(),
        })
    } else {
        Err(CheckpointError::Unsupported {
            path: path.to_path_buf(),
            reason: "neither safetensors nor a torch.save zip archive; dinoadapt reads \
                     Hugging Face safetensors, torch-hub .pth and timm .bin/.safetensors"
                .into(),
        })
    }
}

/// Open a checkpoint file or folder: read the weights, detect the layout, infer the
/// architecture. Nothing is put on a device yet (see [`LoadedCheckpoint::build`]).
pub fn load_checkpoint(
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedCheckpoint, CheckpointError> {
    let (weights, config_path) = resolve(path)?;
    let mut config = match &config_path {
        Some(c) => read_config_file(c)?,
        None => ConfigFile::default(),
    };
    let (file_format, raw, metadata) = read_weights_file(&weights)?;
    if raw.is_empty() {
        return Err(CheckpointError::malformed(
            &weights,
            file_format.name(),
            "it holds no tensors",
        ));
    }
    if let Some(arch) = metadata.get(NATIVE_ARCH_KEY) {
        config.native = Some(serde_json::from_str(arch).map_err(|e| {
            CheckpointError::malformed(
                &weights,
                "dinoadapt native",
                format!("bad `{NATIVE_ARCH_KEY}`: {e}"),
            )
        })?);
    }
    let (stripped, mut dropped) = strip_wrappers(raw);
    let keys: Vec<&str> = stripped.iter().map(|(k, _)| k.as_str()).collect();
    let layout = if config.native.is_some() {
        Layout::Native
    } else if config.huggingface.is_some() && keys.iter().any(|k| k.starts_with("embeddings.")) {
        Layout::HuggingFace
    } else if config.timm.is_some() && detect_layout(&keys).is_some() {
        Layout::Timm
    } else {
        detect_layout(&keys).ok_or_else(|| CheckpointError::Unsupported {
            path: weights.clone(),
            reason: format!(
                "not a ViT checkpoint dinoadapt knows (first keys: {:?}); expected official \
                 DINOv2 (`cls_token`, `blocks.0.attn.qkv.weight`), Hugging Face \
                 (`embeddings.cls_token`, `encoder.layer.0...`) or timm keys",
                keys.iter().take(5).collect::<Vec<_>>()
            ),
        })?
    };
    let canonical = to_canonical(layout, stripped);
    dropped.extend(canonical.dropped);
    let (vit, heads_source) = infer_config(layout, &canonical.state, &config, &options.overrides)
        .map_err(|reason| CheckpointError::Architecture {
        path: weights.clone(),
        reason,
    })?;
    if !dropped.is_empty() {
        tracing::warn!(
            "{}: left out {} weights that are not part of the backbone (heads or the other \
             network): {:?}",
            weights.display(),
            dropped.len(),
            dropped.iter().take(8).collect::<Vec<_>>()
        );
    }
    let sha256 = sha256_file(&weights)?;
    let loaded = LoadedCheckpoint {
        path: weights,
        config_path,
        file_format,
        layout,
        config: vit,
        heads_source,
        state: canonical.state,
        dropped,
        sha256,
    };
    crate::vit::check_state(&loaded.config, &loaded.state)
        .map_err(|e| weight_error(&loaded.path, loaded.layout, &loaded.config, e))?;
    Ok(loaded)
}
