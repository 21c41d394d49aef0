//! dinoadapt-datasets: image inputs, model preprocessing, DINOv2 multi-crop augmentation,
//! batching, the feature store, the embedding engine and PNG plots.

pub mod bands;
pub mod batch;
pub mod class_planes;
pub mod demo;
pub mod dense;
pub mod dicom_lengths;
pub mod doctor;
pub mod domain;
pub mod embedding;
pub mod feature_store;
pub mod image_regions;
pub mod image_source;
pub mod images;
pub mod jobs;
pub mod manifest;
pub mod multicrop;
pub mod plot;
pub mod provenance;
pub mod regions;
pub mod report;
pub mod store_rows;
pub mod transforms;

pub use bands::{multi_crop_bands, MultiBandImage};
pub use batch::{run_batch, BatchConfig, BatchError, BatchJob, BatchRun, Shard, StatusFiles};
pub use dense::{
    DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, DenseValues, FeatureFile,
};
pub use doctor::{Check, CheckStatus};
pub use domain::{
    claiming_domain, find_domain, Domain, DomainError, EmbeddingInput, EmbeddingInputs, FileClaim,
    FileDescription, SourceOptions,
};
pub use feature_store::{FeatureWriter, StoreError};
pub use image_regions::{ImageRegions, PixelTensorError, TensorRegions};
pub use image_source::{ImageFiles, ImageSource};
pub use images::{collect_images, open_image, ImageError};
pub use manifest::{column, embed_manifest, write_parquet, EmbedRecord, ManifestError};
pub use provenance::{Provenance, PROGRAM_VERSION};
pub use regions::{regions_table, Region, RegionBatch, RegionSource, SkippedRegion};
pub use store_rows::{RegionPlace, RowKey, StorePart, StoreRowsError, Unit};
pub use transforms::{Preprocess, PreprocessOverrides, ResizeFilter};
