//! The radiology domain plugin: what this crate offers the program through
//! [`dinoadapt_datasets::Domain`].

use std::path::Path;
use std::sync::Arc;

use dinoadapt_datasets::demo::{DemoContext, DemoOutcome};
use dinoadapt_datasets::embedding::Progress;
use dinoadapt_datasets::{
    Check, DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, Domain, DomainError,
    EmbeddingInputs, FeatureFile, FileClaim, FileDescription, ImageSource, SourceOptions,
};

use crate::embedding_inputs::VolumeInputs;
use crate::{inspect, VolumeSlices, VolumeSlicesConfig};

/// The radiology domain plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Radiology;

impl Domain for Radiology {
    fn name(&self) -> &'static str {
        "radiology"
    }

    fn pretraining_images(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Arc<dyn ImageSource>, DomainError>> {
        Some(
            source
                .parse_anchored(self.name(), |c: &mut VolumeSlicesConfig| &mut c.paths)
                .and_then(|cfg| {
                    Ok(Arc::new(VolumeSlices::render(&cfg, source.scratch)?)
                        as Arc<dyn ImageSource>)
                }),
        )
    }

    /// Every non-empty slice of each volume.
    fn embedding_inputs(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Box<dyn EmbeddingInputs>, DomainError>> {
        Some(
            source
                .parse_anchored(self.name(), |c: &mut VolumeSlicesConfig| &mut c.paths)
                .and_then(|cfg| Ok(Box::new(VolumeInputs::new(&cfg)?) as Box<dyn EmbeddingInputs>)),
        )
    }

    /// The DICOM transfer syntaxes this build decodes and gzip NIfTI.
    fn doctor(&self) -> Vec<Check> {
        crate::doctor::checks()
    }

    /// Slice probes and segmentation on the sample volume ([`crate::demo`]).
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
        Some(crate::dense::slice_labels(file, options))
    }

    fn dense_input_size(
        &self,
        preprocessing: &serde_json::Value,
    ) -> Option<Result<usize, DomainError>> {
        Some(
            crate::dense::SliceInput::from_preprocessing(preprocessing)
                .map(|s| s.slices.input.size),
        )
    }

    fn dense_predict(
        &self,
        options: &DensePredictOptions,
        model: &mut dyn DenseModel,
        progress: &mut dyn Progress,
    ) -> Option<Result<serde_json::Value, DomainError>> {
        Some(crate::dense::predict_volumes(options, model, progress))
    }
}
