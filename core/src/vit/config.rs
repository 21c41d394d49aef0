//! One configuration for the whole ViT family (DINOv2 S/B/L/g, with or without registers, UNI,
//! UNI2-h and any other size), serialisable as the documented architecture file.

use super::channels::InputChannels;
use serde::{Deserialize, Serialize};

use super::pos_embed::{PosEmbedInterpolation, PosEmbedSkip};

/// The feed-forward network of every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FfnConfig {
    /// fc1 (D -> hidden), exact erf GELU, fc2 (hidden -> D).
    Mlp { hidden: usize },
    /// Packed SwiGLU: one projection D -> 2*hidden giving [gate | value], silu(gate) * value,
    /// then hidden -> D. Official/HF DINOv2 (`w12`/`w3`) and timm `SwiGLUPacked` (`fc1`/`fc2`)
    /// compute the same thing; they differ only in how `hidden` follows from `mlp_ratio`.
    SwiGlu { hidden: usize },
}

impl FfnConfig {
    pub fn hidden(&self) -> usize {
        match self {
            FfnConfig::Mlp { hidden } | FfnConfig::SwiGlu { hidden } => *hidden,
        }
    }

    /// DINOv2's SwiGLU hidden-size rule: `((int(int(D*ratio) * 2/3) + 7) // 8) * 8`.
    pub fn dinov2_swiglu(embed_dim: usize, mlp_ratio: f64) -> Self {
        let h = (embed_dim as f64 * mlp_ratio) as usize;
        let h = (h as f64 * 2.0 / 3.0) as usize;
        FfnConfig::SwiGlu {
            hidden: h.div_ceil(8) * 8,
        }
    }

    /// timm `SwiGLUPacked`: fc1 has `int(D*ratio)` rows, half of them gate the other half.
    pub fn timm_swiglu_packed(embed_dim: usize, mlp_ratio: f64) -> Self {
        FfnConfig::SwiGlu {
            hidden: (embed_dim as f64 * mlp_ratio) as usize / 2,
        }
    }

    pub fn mlp(embed_dim: usize, mlp_ratio: f64) -> Self {
        FfnConfig::Mlp {
            hidden: (embed_dim as f64 * mlp_ratio) as usize,
        }
    }
}

/// Which of the leading (non-patch) tokens carry a position embedding. The table has this many
/// rows before the M*M grid rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosEmbedPrefix {
    /// DINOv2 (official, HF) and timm without registers: one row for the class token; register
    /// tokens are inserted after the position embedding is added.
    Cls,
    /// timm `no_embed_class=True` (UNI2-h): no row for the class or register tokens.
    None,
    /// timm with registers and `no_embed_class=False`: one row per class and register token.
    AllPrefix,
}

impl PosEmbedPrefix {
    pub fn rows(self, num_register_tokens: usize) -> usize {
        match self {
            PosEmbedPrefix::Cls => 1,
            PosEmbedPrefix::None => 0,
            PosEmbedPrefix::AllPrefix => 1 + num_register_tokens,
        }
    }
}

fn default_in_chans() -> usize {
    3
}
fn default_true() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ls_init() -> f64 {
    1.0
}
fn default_skip() -> PosEmbedSkip {
    PosEmbedSkip::SameCountSquareImage
}

/// The architecture of one Vision Transformer. This is also the schema of the architecture file
/// (`--arch-file FILE.json`): every field below, with the defaults shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Width of the residual stream (D).
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads; head_dim = embed_dim / num_heads.
    pub num_heads: usize,
    /// Side of the square patches (14 for DINOv2, 16 for UNI).
    pub patch_size: usize,
    /// Input channels (default 3).
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    /// Side M of the stored position-embedding grid (image_size / patch_size, 37 for 518 px).
    pub pos_grid: usize,
    /// Register tokens (0, 4 for DINOv2 `_reg`, 8 for UNI2-h).
    #[serde(default)]
    pub num_register_tokens: usize,
    /// Which leading tokens have a position-embedding row.
    pub pos_embed_prefix: PosEmbedPrefix,
    pub ffn: FfnConfig,
    /// Per-channel LayerScale after attention and FFN (absent = identity).
    #[serde(default = "default_true")]
    pub layer_scale: bool,
    /// LayerScale init value for new (random) weights: 1.0 official hub, 1e-5 timm/UNI.
    #[serde(default = "default_ls_init")]
    pub layer_scale_init: f64,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default = "default_true")]
    pub proj_bias: bool,
    #[serde(default = "default_true")]
    pub ffn_bias: bool,
    /// A learned mask token (DINOv2/iBOT). timm models have none.
    #[serde(default = "default_true")]
    pub mask_token: bool,
    /// LayerNorm epsilon (1e-6 in every DINOv2/UNI model).
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    /// Stochastic depth rate, training only: of every block when `drop_path_uniform` (the
    /// official DINOv2 training default), else of the last block, linearly increasing from 0
    /// (timm's rule).
    #[serde(default)]
    pub drop_path_rate: f64,
    #[serde(default)]
    pub drop_path_uniform: bool,
    /// How the position embedding is resampled for other grid sizes.
    pub interpolation: PosEmbedInterpolation,
    /// When the stored table is used unchanged.
    #[serde(default = "default_skip")]
    pub interpolation_skip: PosEmbedSkip,
    /// The input channels' names and normalisation, for a model grown to C != 3 channels
    /// ([`super::channels`]); absent for RGB models, which take ImageNet normalisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<InputChannels>,
}

/// Names of the built-in presets.
pub const PRESETS: &[&str] = &[
    "vits14",
    "vitb14",
    "vitl14",
    "vitg14",
    "vits14_reg",
    "vitb14_reg",
    "vitl14_reg",
    "vitg14_reg",
    "uni",
    "uni2h",
];

impl VitConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Number of tokens before the patches: class token + registers.
    pub fn num_prefix_tokens(&self) -> usize {
        1 + self.num_register_tokens
    }

    /// Rows of the stored position-embedding table.
    pub fn pos_embed_rows(&self) -> usize {
        self.pos_embed_prefix.rows(self.num_register_tokens) + self.pos_grid * self.pos_grid
    }

    /// Stochastic-depth rate of block `i`: the same in every block when `drop_path_uniform`,
    /// else rising linearly from 0 to `drop_path_rate` (timm's rule).
    pub fn drop_path_of_block(&self, i: usize) -> f64 {
        if self.depth <= 1 || self.drop_path_uniform {
            return self.drop_path_rate;
        }
        self.drop_path_rate * i as f64 / (self.depth - 1) as f64
    }

    /// Check internal consistency; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.embed_dim == 0 || self.depth == 0 || self.num_heads == 0 || self.patch_size == 0 {
            return Err("embed_dim, depth, num_heads and patch_size must be positive".into());
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "embed_dim {} is not divisible by num_heads {}: give the right head count \
                 (--num-heads)",
                self.embed_dim, self.num_heads
            ));
        }
        if self.pos_grid == 0 {
            return Err("pos_grid must be positive".into());
        }
        if self.ffn.hidden() == 0 {
            return Err("the FFN hidden size must be positive".into());
        }
        if self.in_chans == 0 {
            return Err("in_chans must be positive".into());
        }
        if let Some(c) = &self.channels {
            c.validate(self.in_chans)?;
        }
        Ok(())
    }

    /// Official torch-hub DINOv2 (518 px, patch 14).
    fn dinov2(embed_dim: usize, depth: usize, num_heads: usize, swiglu: bool, reg: bool) -> Self {
        VitConfig {
            embed_dim,
            depth,
            num_heads,
            patch_size: 14,
            in_chans: 3,
            pos_grid: 37,
            num_register_tokens: if reg { 4 } else { 0 },
            pos_embed_prefix: PosEmbedPrefix::Cls,
            ffn: if swiglu {
                FfnConfig::dinov2_swiglu(embed_dim, 4.0)
            } else {
                FfnConfig::mlp(embed_dim, 4.0)
            },
            layer_scale: true,
            layer_scale_init: 1.0,
            qkv_bias: true,
            proj_bias: true,
            ffn_bias: true,
            mask_token: true,
            norm_eps: 1e-6,
            drop_path_rate: 0.0,
            drop_path_uniform: false,
            interpolation: if reg {
                PosEmbedInterpolation::BicubicAntialias
            } else {
                PosEmbedInterpolation::OffsetBicubic { offset: 0.1 }
            },
            interpolation_skip: PosEmbedSkip::SameCountSquareImage,
            channels: None,
        }
    }

    /// timm `VisionTransformer` as the UNI models build it (init_values 1e-5, no mask token,
    /// antialiased resampling when the grid changes).
    #[allow(clippy::too_many_arguments)]
    fn timm(
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
        patch_size: usize,
        pos_grid: usize,
        num_register_tokens: usize,
        pos_embed_prefix: PosEmbedPrefix,
        ffn: FfnConfig,
    ) -> Self {
        VitConfig {
            embed_dim,
            depth,
            num_heads,
            patch_size,
            in_chans: 3,
            pos_grid,
            num_register_tokens,
            pos_embed_prefix,
            ffn,
            layer_scale: true,
            layer_scale_init: 1e-5,
            qkv_bias: true,
            proj_bias: true,
            ffn_bias: true,
            mask_token: false,
            norm_eps: 1e-6,
            drop_path_rate: 0.0,
            drop_path_uniform: false,
            interpolation: PosEmbedInterpolation::BicubicAntialias,
            interpolation_skip: PosEmbedSkip::SameGrid,
            channels: None,
        }
    }

    /// A built-in architecture by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Option<Self> {
        let (base, reg) = match name.strip_suffix("_reg") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let cfg = match base {
            "vits14" => Self::dinov2(384, 12, 6, false, reg),
            "vitb14" => Self::dinov2(768, 12, 12, false, reg),
            "vitl14" => Self::dinov2(1024, 24, 16, false, reg),
            "vitg14" => Self::dinov2(1536, 40, 24, true, reg),
            // UNI: timm vit_large_patch16_224, init_values 1e-5, dynamic_img_size.
            "uni" if !reg => Self::timm(
                1024,
                24,
                16,
                16,
                14,
                0,
                PosEmbedPrefix::Cls,
                FfnConfig::mlp(1024, 4.0),
            ),
            // UNI2-h: ViT-H/14-like, 8 registers, no_embed_class, packed SwiGLU (ratio 2.66667*2).
            "uni2h" if !reg => Self::timm(
                1536,
                24,
                24,
                14,
                16,
                8,
                PosEmbedPrefix::None,
                FfnConfig::timm_swiglu_packed(1536, 2.66667 * 2.0),
            ),
            _ => return None,
        };
        Some(cfg)
    }

    /// A small version of a preset for unit tests: `depth` 2, the given width, heads and grid,
    /// the preset's FFN kind at ratio 4.
    #[cfg(test)]
    pub(crate) fn tiny(preset: &str, embed_dim: usize, num_heads: usize, pos_grid: usize) -> Self {
        let mut c = Self::preset(preset).expect("known preset");
        c.embed_dim = embed_dim;
        c.depth = 2;
        c.num_heads = num_heads;
        c.pos_grid = pos_grid;
        c.ffn = match c.ffn {
            FfnConfig::Mlp { .. } => FfnConfig::mlp(embed_dim, 4.0),
            FfnConfig::SwiGlu { .. } => FfnConfig::dinov2_swiglu(embed_dim, 4.0),
        };
        c
    }

    /// Parameter count of this architecture.
    pub fn num_params(&self) -> usize {
        let d = self.embed_dim;
        let h = self.ffn.hidden();
        let b = |on: bool, n: usize| if on { n } else { 0 };
        let ffn = match self.ffn {
            FfnConfig::Mlp { .. } => d * h + b(self.ffn_bias, h) + h * d + b(self.ffn_bias, d),
            FfnConfig::SwiGlu { .. } => {
                d * 2 * h + b(self.ffn_bias, 2 * h) + h * d + b(self.ffn_bias, d)
            }
        };
        let block = 4 * d // two norms
            + d * 3 * d + b(self.qkv_bias, 3 * d)
            + d * d + b(self.proj_bias, d)
            + b(self.layer_scale, 2 * d)
            + ffn;
        let embed = d * self.in_chans * self.patch_size * self.patch_size + d;
        embed
            + d // cls
            + self.num_register_tokens * d
            + b(self.mask_token, d)
            + self.pos_embed_rows() * d
            + self.depth * block
            + 2 * d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stochastic_depth_is_uniform_or_rises_linearly_over_the_blocks() {
        let mut cfg = VitConfig::preset("vits14").unwrap();
        cfg.drop_path_rate = 0.4;
        let rates = |c: &VitConfig| {
            (0..c.depth)
                .map(|i| c.drop_path_of_block(i))
                .collect::<Vec<_>>()
        };
        let linear = rates(&cfg);
        assert_eq!((linear[0], linear[11]), (0.0, 0.4));
        assert!((linear[6] - 0.4 * 6.0 / 11.0).abs() < 1e-12);
        cfg.drop_path_uniform = true;
        assert!(rates(&cfg).iter().all(|&r| r == 0.4));
    }

    #[test]
    fn swiglu_hidden_rules_match_the_references() {
        assert_eq!(FfnConfig::dinov2_swiglu(64, 4.0).hidden(), 176);
        assert_eq!(FfnConfig::dinov2_swiglu(1536, 4.0).hidden(), 4096);
        // UNI2-h: fc1 has int(1536 * 5.33334) = 8192 rows, fc2 takes 4096.
        assert_eq!(
            FfnConfig::timm_swiglu_packed(1536, 2.66667 * 2.0).hidden(),
            4096
        );
    }

    #[test]
    fn presets_have_the_published_parameter_counts() {
        // torch-hub DINOv2 backbones, counted with sum(p.numel()) including mask_token.
        let m = |n: &str| VitConfig::preset(n).unwrap().num_params() as f64 / 1e6;
        assert!((m("vits14") - 22.06).abs() < 0.01, "{}", m("vits14"));
        assert!((m("vitb14") - 86.58).abs() < 0.01, "{}", m("vitb14"));
        assert!((m("vitl14") - 304.37).abs() < 0.01, "{}", m("vitl14"));
        assert!((m("vitg14") - 1136.48).abs() < 0.01, "{}", m("vitg14"));
        for p in PRESETS {
            VitConfig::preset(p).unwrap().validate().unwrap();
        }
        assert!(VitConfig::preset("uni_reg").is_none());
    }

    #[test]
    fn architecture_file_round_trips_and_fills_defaults() {
        let cfg = VitConfig::preset("uni2h").unwrap();
        let json = serde_json::to_string_pretty(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<VitConfig>(&json).unwrap(), cfg);
        let minimal = r#"{"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 14,
            "pos_grid": 4, "pos_embed_prefix": "cls", "ffn": {"kind": "mlp", "hidden": 256},
            "interpolation": {"mode": "bicubic"}}"#;
        let c: VitConfig = serde_json::from_str(minimal).unwrap();
        assert_eq!(c.norm_eps, 1e-6);
        assert!(c.layer_scale && c.mask_token && c.qkv_bias);
        assert_eq!(c.pos_embed_rows(), 17);
    }
}
