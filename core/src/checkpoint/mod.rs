//! Checkpoint formats in and out: Hugging Face (safetensors + config.json), torch-hub `.pth`,
//! timm (`pytorch_model.bin` / `.safetensors`), and our native safetensors + JSON config.

pub mod error;
pub mod export;
pub mod host_tensor;
pub mod infer;
pub mod layout;
pub mod load;
pub mod safetensors_io;
pub mod torch_pickle;

pub use error::CheckpointError;
pub use host_tensor::{HostTensor, NamedTensors};
pub use layout::Layout;
pub use load::{load_checkpoint, LoadOptions, LoadedCheckpoint};
