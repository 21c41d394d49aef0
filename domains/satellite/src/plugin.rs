//! The satellite domain plugin: what this crate offers the program through
//! [`dinoadapt_datasets::Domain`].

use std::path::Path;
use std::sync::Arc;

use dinoadapt_datasets::demo::{DemoContext, DemoOutcome};
use dinoadapt_datasets::embedding::Progress;
use dinoadapt_datasets::{
    Check, DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, Domain, DomainError,
    EmbeddingInputs, FeatureFile, FileClaim, FileDescription, ImageSource, SourceOptions,
};

use crate::embedding_inputs::RasterInputs;
use crate::{inspect, RasterChips, RasterChipsConfig};

/// The satellite domain plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Satellite;

impl Domain for Satellite {
    fn name(&self) -> &'static str {
        "satellite"
    }

    fn pretraining_images(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Arc<dyn ImageSource>, DomainError>> {
        Some(
            source
                .parse_anchored(self.name(), |c: &mut RasterChipsConfig| &mut c.paths)
                .and_then(|cfg| Ok(Arc::new(RasterChips::open(&cfg)?) as Arc<dyn ImageSource>)),
        )
    }

    /// Each raster's chips on a grid.
    fn embedding_inputs(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Box<dyn EmbeddingInputs>, DomainError>> {
        Some(
            source
                .parse_anchored(self.name(), |c: &mut RasterChipsConfig| &mut c.paths)
                .and_then(|cfg| Ok(Box::new(RasterInputs::new(&cfg)?) as Box<dyn EmbeddingInputs>)),
        )
    }

    /// GDAL's version, its GeoTIFF/COG drivers and the PROJ database.
    fn doctor(&self) -> Vec<Check> {
        crate::doctor::checks()
    }

    /// Canopy height on the sample raster ([`crate::demo`]).
    fn demo(&self, ctx: &mut DemoContext) -> Option<Result<DemoOutcome, DomainError>> {
        Some(crate::demo::run(ctx))
    }

    fn claim_file(&self, path: &Path) -> FileClaim {
        inspect::claim(path)
    }

    fn describe_file(&self, path: &Path) -> Result<FileDescription, DomainError> {
        inspect::describe(path).map_err(DomainError::input)
    }

    fn dense_targets(
        &self,
        file: &FeatureFile,
        options: &DenseTargetOptions,
    ) -> Option<Result<DenseLabels, DomainError>> {
        Some(crate::dense::chip_labels(file, options))
    }

    fn dense_input_size(
        &self,
        preprocessing: &serde_json::Value,
    ) -> Option<Result<usize, DomainError>> {
        Some(crate::dense::ChipInput::from_preprocessing(preprocessing).map(|c| c.chip_size))
    }

    fn dense_predict(
        &self,
        options: &DensePredictOptions,
        model: &mut dyn DenseModel,
        progress: &mut dyn Progress,
    ) -> Option<Result<serde_json::Value, DomainError>> {
        Some(crate::dense::predict_chips(options, model, progress))
    }
}
