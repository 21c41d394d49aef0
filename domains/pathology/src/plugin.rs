//! The pathology domain plugin: what this crate offers the program through
//! [`dinoadapt_datasets::Domain`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dinoadapt_datasets::demo::{DemoContext, DemoOutcome};
use dinoadapt_datasets::embedding::Progress;
use dinoadapt_datasets::{
    Check, DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, Domain, DomainError,
    EmbeddingInputs, FeatureFile, FileClaim, FileDescription, ImageSource, SourceOptions,
};

use crate::embedding_inputs::SlideInputs;
use crate::{inspect, SlideTiles, SlideTilesConfig};

/// The pathology domain plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pathology;

impl Domain for Pathology {
    fn name(&self) -> &'static str {
        "pathology"
    }

    fn pretraining_images(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Arc<dyn ImageSource>, DomainError>> {
        Some(SlideTilesConfig::from_source(source).and_then(|cfg| {
            Ok(Arc::new(SlideTiles::open(&cfg, source.seed)?) as Arc<dyn ImageSource>)
        }))
    }

    /// Each slide's tissue tiles on a grid, at each of the table's resolutions.
    fn embedding_inputs(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Box<dyn EmbeddingInputs>, DomainError>> {
        Some(
            source
                .parse_anchored(self.name(), |c: &mut SlideTilesConfig| &mut c.paths)
                .and_then(|cfg| Ok(Box::new(SlideInputs::new(&cfg)?) as Box<dyn EmbeddingInputs>)),
        )
    }

    /// OpenSlide's and HDF5's versions.
    fn doctor(&self) -> Vec<Check> {
        crate::doctor::checks()
    }

    /// Slide features and survival on the sample slide ([`crate::demo`]).
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
        Some(crate::dense::tile_labels(file, options))
    }

    /// Slides: one class list over every annotation file, so that ids agree across slides.
    fn dense_class_names(&self, targets: &[PathBuf]) -> Option<Result<Vec<String>, DomainError>> {
        Some(crate::dense::annotation_classes(targets))
    }

    fn dense_input_size(
        &self,
        preprocessing: &serde_json::Value,
    ) -> Option<Result<usize, DomainError>> {
        Some(
            crate::dense::TileInput::from_preprocessing(preprocessing)
                .map(|t| t.tiling.size as usize),
        )
    }

    fn dense_predict(
        &self,
        options: &DensePredictOptions,
        model: &mut dyn DenseModel,
        progress: &mut dyn Progress,
    ) -> Option<Result<serde_json::Value, DomainError>> {
        Some(crate::dense::predict_slide(options, model, progress))
    }
}
