//! Inferring the architecture of a checkpoint from its tensor shapes, its config file (when it
//! has one) and the user's overrides. The one thing shapes cannot tell is the head count.

use serde_json::Value;

use super::layout::Layout;
use crate::vit::{
    FfnConfig, PosEmbedInterpolation, PosEmbedPrefix, PosEmbedSkip, StateDict, VitConfig,
};

/// A config file found beside (or inside) the checkpoint.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// Hugging Face `config.json` (has `model_type`).
    pub huggingface: Option<Value>,
    /// timm `config.json` (`architecture` + `model_args`), or a bare constructor-args object.
    pub timm: Option<Value>,
    /// dinoadapt's own architecture (native checkpoints, architecture files).
    pub native: Option<VitConfig>,
}

/// What the user said about the architecture.
#[derive(Debug, Clone, Default)]
pub struct ArchOverrides {
    /// A built-in preset name (`vitl14_reg`, `uni2h`, ...).
    pub preset: Option<String>,
    /// A full architecture file.
    pub arch: Option<VitConfig>,
    /// Head count (`--num-heads`).
    pub num_heads: Option<usize>,
    /// Position-embedding resampling mode (`--interpolation`).
    pub interpolation: Option<PosEmbedInterpolation>,
}

/// Where the head count came from, for `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadsSource {
    Override,
    ConfigFile,
    Preset,
    DefaultDimOver64,
}

impl HeadsSource {
    pub fn describe(self) -> &'static str {
        match self {
            HeadsSource::Override => "given (--num-heads)",
            HeadsSource::ConfigFile => "from the config file",
            HeadsSource::Preset => "from the architecture given",
            HeadsSource::DefaultDimOver64 => "default: embed_dim / 64",
        }
    }
}

fn shape<'a>(state: &'a StateDict, key: &str) -> Result<&'a [usize], String> {
    state
        .get(key)
        .map(|t| t.shape.as_slice())
        .ok_or_else(|| format!("no `{key}` weight"))
}

fn isqrt_exact(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

fn json_usize(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}

/// The timm constructor arguments, whether the file nests them under `model_args` or not.
fn timm_args(v: &Value) -> &Value {
    v.get("model_args").unwrap_or(v)
}

/// The architecture the user (or a native checkpoint) states outright: an architecture file,
/// else a preset, else `native`, with the head-count and interpolation overrides applied.
/// `None` when nothing is stated and the shapes must tell.
pub fn explicit_config(
    overrides: &ArchOverrides,
    native: Option<&VitConfig>,
) -> Option<Result<(VitConfig, HeadsSource), String>> {
    let mut cfg = match (&overrides.arch, &overrides.preset) {
        (Some(a), _) => a.clone(),
        (None, Some(p)) => match VitConfig::preset(p) {
            Some(c) => c,
            None => {
                return Some(Err(format!(
                    "unknown preset `{p}`; known: {}",
                    crate::vit::PRESETS.join(", ")
                )))
            }
        },
        (None, None) => native?.clone(),
    };
    let mut source = HeadsSource::Preset;
    if let Some(h) = overrides.num_heads {
        cfg.num_heads = h;
        source = HeadsSource::Override;
    }
    if let Some(i) = overrides.interpolation {
        cfg.interpolation = i;
    }
    Some(cfg.validate().map(|()| (cfg, source)))
}

/// Infer the architecture. An explicit architecture (file or preset) wins over inference; the
/// loader then checks it against the shapes.
pub fn infer_config(
    layout: Layout,
    state: &StateDict,
    config: &ConfigFile,
    overrides: &ArchOverrides,
) -> Result<(VitConfig, HeadsSource), String> {
    if let Some(explicit) = explicit_config(overrides, config.native.as_ref()) {
        return explicit;
    }

    let cls = shape(state, "cls_token")?;
    let embed_dim = *cls.last().ok_or("`cls_token` has no dimensions")?;
    let patch = shape(state, "patch_embed.proj.weight")?;
    if patch.len() != 4 || patch[2] != patch[3] {
        return Err(format!(
            "`patch_embed.proj.weight` has shape {patch:?}; expected (D, C, p, p) square patches"
        ));
    }
    let (in_chans, patch_size) = (patch[1], patch[2]);
    let depth = (0..)
        .take_while(|i| state.contains_key(&format!("blocks.{i}.norm1.weight")))
        .count();
    if depth == 0 {
        return Err("no transformer blocks (`blocks.0.norm1.weight`) found".into());
    }
    let num_register_tokens = state
        .get("register_tokens")
        .map(|t| t.shape[1])
        .unwrap_or(0);
    let rows = shape(state, "pos_embed")?[1];

    let hf = config.huggingface.as_ref();
    let timm = config.timm.as_ref().map(timm_args);

    let pos_embed_prefix = match layout {
        Layout::Timm => {
            let no_embed_class = timm
                .and_then(|t| t.get("no_embed_class"))
                .and_then(Value::as_bool);
            match no_embed_class {
                Some(true) => PosEmbedPrefix::None,
                Some(false) if num_register_tokens > 0 => PosEmbedPrefix::AllPrefix,
                Some(false) => PosEmbedPrefix::Cls,
                None if isqrt_exact(rows).is_some() => PosEmbedPrefix::None,
                None if isqrt_exact(rows - 1).is_some() => PosEmbedPrefix::Cls,
                None => PosEmbedPrefix::AllPrefix,
            }
        }
        _ => PosEmbedPrefix::Cls,
    };
    let grid_rows = rows
        .checked_sub(pos_embed_prefix.rows(num_register_tokens))
        .ok_or("`pos_embed` has fewer rows than prefix tokens")?;
    let pos_grid = isqrt_exact(grid_rows).ok_or_else(|| {
        format!("`pos_embed` has {rows} rows: {grid_rows} grid rows is not a square grid")
    })?;

    let ffn = if state.contains_key("blocks.0.mlp.w12.weight") {
        FfnConfig::SwiGlu {
            hidden: shape(state, "blocks.0.mlp.w3.weight")?[1],
        }
    } else {
        FfnConfig::Mlp {
            hidden: shape(state, "blocks.0.mlp.fc1.weight")?[0],
        }
    };

    let (num_heads, source) = if let Some(h) = overrides.num_heads {
        (h, HeadsSource::Override)
    } else if let Some(h) = hf.and_then(|c| json_usize(c, "num_attention_heads")) {
        (h, HeadsSource::ConfigFile)
    } else if let Some(h) = timm.and_then(|c| json_usize(c, "num_heads")) {
        (h, HeadsSource::ConfigFile)
    } else if embed_dim % 64 == 0 {
        (embed_dim / 64, HeadsSource::DefaultDimOver64)
    } else {
        return Err(format!(
            "embed_dim {embed_dim} is not a multiple of 64, so the head count cannot be \
             assumed: give it with --num-heads N (or an architecture file)"
        ));
    };

    let (interpolation, interpolation_skip) = match layout {
        Layout::Official => (
            if num_register_tokens > 0 {
                PosEmbedInterpolation::BicubicAntialias
            } else {
                PosEmbedInterpolation::OffsetBicubic { offset: 0.1 }
            },
            PosEmbedSkip::SameCountSquareImage,
        ),
        Layout::HuggingFace => {
            let with_registers = hf
                .and_then(|c| c.get("model_type"))
                .and_then(Value::as_str)
                .map(|t| t == "dinov2_with_registers")
                .unwrap_or(num_register_tokens > 0);
            (
                if with_registers {
                    PosEmbedInterpolation::BicubicAntialias
                } else {
                    PosEmbedInterpolation::Bicubic
                },
                PosEmbedSkip::SameCountSquareImage,
            )
        }
        Layout::Timm | Layout::Native => (
            PosEmbedInterpolation::BicubicAntialias,
            PosEmbedSkip::SameGrid,
        ),
    };
    let norm_eps = hf
        .and_then(|c| c.get("layer_norm_eps"))
        .and_then(Value::as_f64)
        .unwrap_or(1e-6);
    let has = |k: &str| state.contains_key(k);
    let ffn_bias = match ffn {
        FfnConfig::Mlp { .. } => has("blocks.0.mlp.fc1.bias"),
        FfnConfig::SwiGlu { .. } => has("blocks.0.mlp.w12.bias"),
    };
    let cfg = VitConfig {
        embed_dim,
        depth,
        num_heads,
        patch_size,
        in_chans,
        pos_grid,
        num_register_tokens,
        pos_embed_prefix,
        ffn,
        layer_scale: has("blocks.0.ls1.gamma"),
        layer_scale_init: if layout == Layout::Timm { 1e-5 } else { 1.0 },
        qkv_bias: has("blocks.0.attn.qkv.bias"),
        proj_bias: has("blocks.0.attn.proj.bias"),
        ffn_bias,
        mask_token: has("mask_token"),
        norm_eps,
        drop_path_rate: 0.0,
        drop_path_uniform: false,
        interpolation: overrides.interpolation.unwrap_or(interpolation),
        interpolation_skip,
        channels: None,
    };
    cfg.validate()?;
    Ok((cfg, source))
}
