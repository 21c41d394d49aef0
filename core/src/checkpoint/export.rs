//! Writing checkpoints: dinoadapt's native safetensors + JSON config, and the Hugging Face
//! layout (`model.safetensors` + `config.json`) that `transformers` loads back.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use super::error::CheckpointError;
use super::host_tensor::HostTensor;
use super::layout::to_huggingface;
use super::load::NATIVE_ARCH_KEY;
use super::safetensors_io::{write_atomic, write_safetensors};
use crate::vit::{FfnConfig, PosEmbedInterpolation, PosEmbedPrefix, StateDict, VitConfig};

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), CheckpointError> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// Write `dir/model.safetensors` (canonical keys, the architecture in `__metadata__`) and
/// `dir/config.json` (`{"dinoadapt": <architecture>}`).
pub fn save_native(
    state: &StateDict,
    cfg: &VitConfig,
    dir: &Path,
    provenance: &[(&str, String)],
) -> Result<(), CheckpointError> {
    let arch = serde_json::to_string(cfg).expect("config serialises");
    let mut meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (NATIVE_ARCH_KEY.to_string(), arch),
        (
            "dinoadapt_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    for (k, v) in provenance {
        meta.insert(format!("dinoadapt.{k}"), v.clone());
    }
    let tensors: Vec<(String, HostTensor)> =
        state.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
    write_safetensors(&dir.join("model.safetensors"), &tensors, meta)?;
    write_json(&dir.join("config.json"), &json!({ "dinoadapt": cfg }))
}

/// The `mlp_ratio` that makes transformers rebuild exactly this FFN width.
fn hf_mlp_ratio(cfg: &VitConfig) -> Option<f64> {
    let d = cfg.embed_dim;
    let fits = |ratio: f64| match cfg.ffn {
        FfnConfig::Mlp { hidden } => (d as f64 * ratio) as usize == hidden,
        FfnConfig::SwiGlu { .. } => FfnConfig::dinov2_swiglu(d, ratio) == cfg.ffn,
    };
    if fits(4.0) {
        return Some(4.0);
    }
    let target = match cfg.ffn {
        FfnConfig::Mlp { hidden } => hidden,
        FfnConfig::SwiGlu { hidden } => hidden * 3 / 2,
    };
    (target.saturating_sub(16)..target + 16)
        .map(|h1| h1 as f64 / d as f64)
        .find(|&r| fits(r))
}

/// Write the Hugging Face layout to `dir`. Returns warnings about behaviour that transformers
/// will not reproduce (e.g. another position-embedding interpolation at non-native sizes).
pub fn save_huggingface(
    state: &StateDict,
    cfg: &VitConfig,
    dir: &Path,
) -> Result<Vec<String>, CheckpointError> {
    let refuse = |reason: &str| CheckpointError::Write {
        path: dir.to_path_buf(),
        reason: format!("transformers' Dinov2 models cannot express this architecture: {reason}"),
    };
    if cfg.pos_embed_prefix != PosEmbedPrefix::Cls {
        return Err(refuse(
            "position embedding without a class-token row (timm no_embed_class)",
        ));
    }
    if !cfg.layer_scale {
        return Err(refuse("no LayerScale"));
    }
    if !cfg.proj_bias || !cfg.ffn_bias {
        return Err(refuse("projection or FFN without bias"));
    }
    let mlp_ratio =
        hf_mlp_ratio(cfg).ok_or_else(|| refuse("FFN width not reachable from an mlp_ratio"))?;
    let mut warnings = Vec::new();
    let mut state = state.clone();
    if !cfg.mask_token {
        state.insert(
            "mask_token".into(),
            HostTensor::new(vec![1, cfg.embed_dim], vec![0.0; cfg.embed_dim]),
        );
        warnings.push(
            "the model has no mask token; a zero one was written (unused at inference)".into(),
        );
    }
    let registers = cfg.num_register_tokens > 0;
    let hf_mode = if registers {
        PosEmbedInterpolation::BicubicAntialias
    } else {
        PosEmbedInterpolation::Bicubic
    };
    if cfg.interpolation != hf_mode {
        warnings.push(format!(
            "transformers resamples position embeddings with `{}`, this model with `{}`: \
             features agree at the native size only",
            hf_mode.name(),
            cfg.interpolation.name()
        ));
    }
    let (arch, model_type) = if registers {
        ("Dinov2WithRegistersModel", "dinov2_with_registers")
    } else {
        ("Dinov2Model", "dinov2")
    };
    let mut config = json!({
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        // transformers' config dataclass takes an int where the ratio is whole (the hub's own
        // configs write `4`); `4.0` is refused.
        "mlp_ratio": if mlp_ratio.fract() == 0.0 { json!(mlp_ratio as i64) } else { json!(mlp_ratio) },
        "image_size": cfg.pos_grid * cfg.patch_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "layer_norm_eps": cfg.norm_eps,
        "layerscale_value": 1.0,
        "qkv_bias": cfg.qkv_bias,
        "use_swiglu_ffn": matches!(cfg.ffn, FfnConfig::SwiGlu { .. }),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": 0.0,
        "initializer_range": 0.02,
        "apply_layernorm": true,
        "reshape_hidden_states": true,
        "dtype": "float32",
    });
    if registers {
        config["num_register_tokens"] = json!(cfg.num_register_tokens);
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(
        &dir.join("model.safetensors"),
        &to_huggingface(&state),
        meta,
    )?;
    write_json(&dir.join("config.json"), &config)?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mlp_ratios_transformers_can_rebuild() {
        let mut c = VitConfig::preset("vitg14").unwrap();
        assert_eq!(hf_mlp_ratio(&c), Some(4.0));
        c.embed_dim = 64;
        c.ffn = FfnConfig::SwiGlu { hidden: 160 };
        let r = hf_mlp_ratio(&c).unwrap();
        assert_eq!(FfnConfig::dinov2_swiglu(64, r), c.ffn);
        c.ffn = FfnConfig::Mlp { hidden: 100 };
        let r = hf_mlp_ratio(&c).unwrap();
        assert_eq!((64.0 * r) as usize, 100);
    }
}
