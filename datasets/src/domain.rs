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
