//! dinoadapt-datasets: image inputs, model preprocessing, DINOv2 multi-crop augmentation,
//! batching, the feature store and PNG plots.

pub mod feature_store;
pub mod image_source;
pub mod images;
pub mod manifest;
pub mod multicrop;
pub mod plot;
pub mod regions;
pub mod transforms;

pub use feature_store::{FeatureWriter, StoreError};
pub use image_source::{ImageFiles, ImageSource};
pub use images::{collect_images, open_image, ImageError};
pub use manifest::{column, embed_manifest, write_parquet, EmbedRecord, ManifestError};
pub use regions::{regions_table, Region, RegionBatch, RegionSource};
pub use transforms::{Preprocess, ResizeFilter};
