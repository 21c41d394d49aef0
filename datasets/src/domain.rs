//! Domains as plugins: what a domain crate (pathology, radiology, satellite, ...) offers the
//! program through one registration, so that the program and `pretrain` never match on a
//! domain's name.
//!
//! A recipe names its data source in one tagged table, read by the domain it names:
//!
//! ```toml
//! [data.source]
//! domain = "pathology"          # the plugin's name
//! paths = ["slides/"]           # the rest is the plugin's own configuration
//! mpp = [0.5, 1.0]
//! ```
//!
//! See `docs/adding-a-domain.md` for a walk-through.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::dense::{DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, FeatureFile};
use crate::embedding::Progress;
use crate::ImageSource;

/// Why a domain could not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The `[data.source]` table does not describe a valid source of this domain.
    #[error("[data.source] of domain `{domain}`: {message}")]
    Options {
        domain: &'static str,
        message: String,
    },
    /// The files could not be opened or read.
    #[error("{0}")]
    Input(String),
}

impl DomainError {
    /// `error` and its causes (`a: b: c`) as an input error.
    pub fn input(error: impl std::error::Error) -> Self {
        let mut message = error.to_string();
        let mut cause = error.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.ends_with(&text) {
                message = format!("{message}: {text}");
            }
            cause = c.source();
        }
        DomainError::Input(message)
    }
}

/// A recipe's `[data.source]` table as its domain receives it.
#[derive(Debug, Clone)]
pub struct SourceOptions<'a> {
    /// The table's keys other than `domain`.
    pub options: serde_json::Value,
    /// The recipe's folder: relative paths in the table are taken from it.
    pub base: &'a Path,
    /// The run's seed (online samplers draw from it).
    pub seed: u64,
    /// A folder the source may keep files in while the run lasts (the run's output folder).
    pub scratch: &'a Path,
}

impl SourceOptions<'_> {
    /// The table as the domain's own configuration struct (give it
    /// `#[serde(deny_unknown_fields)]` so a misspelt key is refused with the keys it takes).
    pub fn parse<T: DeserializeOwned>(&self, domain: &'static str) -> Result<T, DomainError> {
        serde_json::from_value(self.options.clone()).map_err(|e| DomainError::Options {
            domain,
            message: e.to_string(),
        })
    }

    /// `path` taken from the recipe's folder when it is relative.
    pub fn anchor(&self, path: &Path) -> PathBuf {
        if path.is_relative() {
            self.base.join(path)
        } else {
            path.to_path_buf()
        }
    }
}

/// A domain plugin. Each domain crate implements it on a unit struct, and the program lists
/// every domain once.
pub trait Domain: Sync {
    /// The name recipes use (`[data.source] domain = "..."`).
    fn name(&self) -> &'static str;

    /// The pre-training image pool of a `[data.source]` table of this domain, or `None` when
    /// the domain does not feed pre-training.
    fn pretraining_images(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Arc<dyn ImageSource>, DomainError>>;

    /// Dense heads: the per-pixel targets of the feature file `file` (made by this domain's
    /// `embed --layers ...`) from `options.targets` in the domain's own label format, or
    /// `None` when the domain gives no dense targets. A domain refuses values it cannot give
    /// (heights from class labels) with an error saying so.
    fn dense_targets(
        &self,
        _file: &FeatureFile,
        _options: &DenseTargetOptions,
    ) -> Option<Result<DenseLabels, DomainError>> {
        None
    }

    /// Dense heads: one list of class names for several target files, so that class ids agree
    /// across files, or `None` when each file's classes are given (`--class-names`) or are the
    /// label values themselves.
    fn dense_class_names(&self, _targets: &[PathBuf]) -> Option<Result<Vec<String>, DomainError>> {
        None
    }

    /// Dense heads: the side of the square model input of a `preprocessing` object this domain
    /// made ([`DenseLabels::preprocessing`]).
    fn dense_input_size(
        &self,
        _preprocessing: &serde_json::Value,
    ) -> Option<Result<usize, DomainError>> {
        None
    }

    /// Dense heads: `model` over the whole of `options.input`, cut as `options.preprocessing`
    /// says and written in the domain's own format under `options.out`; returns a summary of
    /// what was written. `None` when the domain has no dense prediction.
    fn dense_predict(
        &self,
        _options: &DensePredictOptions,
        _model: &mut dyn DenseModel,
        _progress: &mut dyn Progress,
    ) -> Option<Result<serde_json::Value, DomainError>> {
        None
    }
}

/// The domain named `name` among `domains`, or an error listing the names there are.
pub fn find_domain<'a>(
    domains: &[&'a dyn Domain],
    name: &str,
) -> Result<&'a dyn Domain, DomainError> {
    domains
        .iter()
        .copied()
        .find(|d| d.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = domains.iter().map(|d| d.name()).collect();
            DomainError::Input(format!(
                "[data.source] domain `{name}`: unknown; the domains are {}",
                names.join(", ")
            ))
        })
}
