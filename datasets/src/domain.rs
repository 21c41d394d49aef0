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
//! The same table tells the domain what to embed (`dinoadapt embed --source recipe.toml`):
//! [`Domain::embedding_inputs`] lists its inputs and hands out their region sources, which the
//! shared engine embeds ([`crate::embedding::InputsBatch`]).
//!
//! See `docs/adding-a-domain.md` for a walk-through.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::dense::{DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions, FeatureFile};
use crate::doctor::Check;
use crate::embedding::Progress;
use crate::{ImageSource, RegionSource};

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

/// How surely a domain takes a file as its own (`dinoadapt inspect`): the program gives a
/// file to the first domain, in registry order, that is `Certain` of it, else to the first
/// that finds it `Possible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileClaim {
    /// Not a file of this domain.
    No,
    /// A file this domain can read, that another domain may know better (a TIFF OpenSlide
    /// opens may be a georeferenced raster; any folder may hold a DICOM series).
    Possible,
    /// A file of this domain by its format (a `.svs` slide, a NIfTI volume, a georeferenced
    /// raster).
    Certain,
}

/// What `dinoadapt inspect` shows of a file: one JSON object (`--json`) or text lines.
#[derive(Debug, Clone)]
pub struct FileDescription {
    pub json: serde_json::Value,
    pub text: Vec<String>,
}

impl DomainError {
    /// `error` and its causes (`a: b: c`) as an input error.
    pub fn input(error: impl std::error::Error) -> Self {
        DomainError::Input(dinoadapt_core::error_chain(&error))
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

    /// [`parse`](Self::parse), with the paths `paths` points at taken from the recipe's folder.
    pub fn parse_anchored<T: DeserializeOwned>(
        &self,
        domain: &'static str,
        paths: impl FnOnce(&mut T) -> &mut Vec<PathBuf>,
    ) -> Result<T, DomainError> {
        let mut config: T = self.parse(domain)?;
        for p in paths(&mut config).iter_mut() {
            *p = self.anchor(p);
        }
        Ok(config)
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

/// One input of a domain's embedding (a slide, a volume file or DICOM folder, a raster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingInput {
    /// Names its outputs and status: unique in the batch, free of path separators, and
    /// carrying no more of the path than the domain's own outputs do (a slide id, a volume's
    /// pseudonym).
    pub id: String,
    pub path: PathBuf,
}

/// What a domain embeds of a `[data.source]` table: its inputs, in a fixed order, and the
/// region sources of each (a slide gives one, a DICOM folder one per series).
pub trait EmbeddingInputs: Send {
    /// Every input, in the order every shard of a batch sees alike.
    fn inputs(&self) -> &[EmbeddingInput];

    /// Where `input` is in [`inputs`](Self::inputs), or an error when it is not one of them.
    fn position(&self, input: &EmbeddingInput) -> Result<usize, DomainError> {
        self.inputs()
            .iter()
            .position(|i| i == input)
            .ok_or_else(|| DomainError::Input(format!("{}: not an input of the table", input.id)))
    }

    /// The region sources of `input`, each handed to `embed` with an id for its feature file
    /// (unique in the batch; the input's id when the input has one source), or why one part of
    /// the input could not become a source (a broken series of a DICOM folder), which does not
    /// stop the others. An error returned means the input could not be read at all.
    fn for_each_source(
        &self,
        input: &EmbeddingInput,
        embed: &mut dyn FnMut(String, Result<Box<dyn RegionSource>, DomainError>),
    ) -> Result<(), DomainError>;
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

    /// What `dinoadapt embed --source` embeds of a `[data.source]` table of this domain (the
    /// same table as pre-training: the inputs it names, cut as it says, on a regular grid
    /// rather than at random), or `None` when the domain embeds nothing.
    fn embedding_inputs(
        &self,
        _source: &SourceOptions,
    ) -> Option<Result<Box<dyn EmbeddingInputs>, DomainError>> {
        None
    }

    /// `dinoadapt doctor`: this domain's environment, checked before a long batch: the
    /// libraries it links (their versions), the formats and codecs this build reads, each
    /// failure or warning with what to install (e.g. the Debian package). Cheap: no input
    /// files are opened. None by default.
    fn doctor(&self) -> Vec<Check> {
        Vec::new()
    }

    /// `dinoadapt demo`: this domain's jobs at tiny scale on its built-in samples (see
    /// [`crate::demo`]), or `None` when it has no demo.
    fn demo(
        &self,
        _ctx: &mut crate::demo::DemoContext,
    ) -> Option<Result<crate::demo::DemoOutcome, DomainError>> {
        None
    }

    /// Whether `path` is a file (or folder) of this domain, for `dinoadapt inspect`.
    fn claim_file(&self, _path: &Path) -> FileClaim {
        FileClaim::No
    }

    /// The description of a file this domain claims (see [`Domain::claim_file`]).
    fn describe_file(&self, path: &Path) -> Result<FileDescription, DomainError> {
        Err(DomainError::Input(format!(
            "{}: the {} domain describes no files",
            path.display(),
            self.name()
        )))
    }

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

/// The domain that claims `path` (see [`FileClaim`]), if any.
pub fn claiming_domain<'a>(domains: &[&'a dyn Domain], path: &Path) -> Option<&'a dyn Domain> {
    let claims: Vec<FileClaim> = domains.iter().map(|d| d.claim_file(path)).collect();
    [FileClaim::Certain, FileClaim::Possible]
        .iter()
        .find_map(|want| claims.iter().position(|c| c == want))
        .map(|i| domains[i])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A domain claiming paths by their extension.
    struct ByExtension(&'static str, &'static [(&'static str, FileClaim)]);

    impl Domain for ByExtension {
        fn name(&self) -> &'static str {
            self.0
        }

        fn pretraining_images(
            &self,
            _: &SourceOptions,
        ) -> Option<Result<Arc<dyn ImageSource>, DomainError>> {
            None
        }

        fn claim_file(&self, path: &Path) -> FileClaim {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            self.1
                .iter()
                .find(|(e, _)| *e == ext)
                .map_or(FileClaim::No, |(_, c)| *c)
        }
    }

    #[test]
    fn a_certain_claim_wins_over_an_earlier_possible_one_and_ties_go_to_the_first() {
        let slides = ByExtension(
            "slides",
            &[("svs", FileClaim::Certain), ("tif", FileClaim::Possible)],
        );
        let rasters = ByExtension(
            "rasters",
            &[("tif", FileClaim::Certain), ("png", FileClaim::Possible)],
        );
        let images = ByExtension("images", &[("png", FileClaim::Possible)]);
        let domains: [&dyn Domain; 3] = [&slides, &rasters, &images];
        let who = |p: &str| claiming_domain(&domains, Path::new(p)).map(|d| d.name());
        assert_eq!(who("a.svs"), Some("slides"));
        assert_eq!(who("a.tif"), Some("rasters"));
        assert_eq!(who("a.png"), Some("rasters"));
        assert_eq!(who("a.txt"), None);
        let err = slides.describe_file(Path::new("a.svs")).unwrap_err();
        assert!(err.to_string().contains("describes no files"), "{err}");
    }
}
