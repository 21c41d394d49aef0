//! dinoadapt-satellite: rasters through GDAL (GeoTIFF, COG, VRT, JP2, ...), chips with overlap,
//! normalisation presets, label rasters warped onto the imagery grid, and tiled inference
//! stitched with smooth blending into georeferenced GeoTIFF/COG outputs, with the heads that need
//! no training (`band:N` passthrough, the `pca` feature map of any backbone).

pub mod align;
pub mod chip_table;
pub mod chips;
pub mod demo;
pub mod demo_inputs;
pub mod dense;
pub mod doctor;
pub mod embed_batch;
pub mod embedding_inputs;
pub mod error;
pub mod geotransform;
pub mod inspect;
pub mod normalize;
pub mod pca_head;
pub mod plugin;
pub mod predict;
pub mod pretraining;
pub mod quicklook;
pub mod raster;
pub mod source;
pub mod stitch;
pub mod writer;

pub use chips::{Chip, ChipGrid};
pub use error::{Result, SatelliteError};
pub use geotransform::GeoTransform;
pub use normalize::{default_preset, Normalization};
pub use pca_head::{PcaHead, PcaHeadError};
pub use plugin::Satellite;
pub use pretraining::{RasterChips, RasterChipsConfig};
pub use raster::{Crs, Raster, RasterInfo, Window, WindowPixels};
pub use stitch::{Blend, Stitcher};
pub use writer::{GeoTiffWriter, OutputSpec};
