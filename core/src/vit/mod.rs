//! The ViT family: configuration, layers, the model, position-embedding resampling and input
//! channels other than RGB.

pub mod channels;
pub mod config;
pub mod cpu_attention;
pub mod cpu_attention_grad;
mod cpu_blocks;
pub mod cpu_layer_norm;
pub mod erf_gelu;
pub mod init;
pub mod layers;
pub mod model;
pub mod packed;
pub mod pos_embed;
pub mod precision;
pub mod stochastic_depth;
pub mod weights;

pub use channels::{ChannelInit, InputChannels};
pub use config::{FfnConfig, PosEmbedPrefix, VitConfig, PRESETS};
pub use model::{patches_to_grid, VisionTransformer, VitFeatures};
pub use packed::Packing;
pub use pos_embed::{PosEmbedInterpolation, PosEmbedSkip};
pub use precision::MatmulPrecision;
pub use stochastic_depth::DropPathForm;
pub use weights::{check_state, expected_keys, StateDict, WeightError};
