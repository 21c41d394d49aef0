//! dinoadapt-core: the ViT family, the DINOv2 objective, the training engine and checkpoint
//! formats. It knows nothing of image files or domains.

pub mod backend;
pub mod checkpoint;
mod cpu_autodiff;
pub mod error_text;
pub mod eval;
pub mod host;
pub mod io;
pub mod objective;
pub mod seeds;
pub mod train;
pub mod vit;

pub use error_text::error_chain;
