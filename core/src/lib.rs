//! dinoadapt-core: the ViT family, the DINOv2 objective, the training engine and checkpoint
//! formats. It knows nothing of image files or domains.

pub mod backend;
pub mod checkpoint;
pub mod eval;
pub mod io;
pub mod objective;
pub mod train;
pub mod vit;
