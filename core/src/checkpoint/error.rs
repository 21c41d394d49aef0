//! Typed errors for reading and writing checkpoints. Each names the file, what was wrong and what
//! to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid {format} file: {reason}")]
    Malformed {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: cannot tell the architecture: {reason}")]
    Architecture { path: PathBuf, reason: String },
    #[error(
        "{path}: missing weights {} for a {layout} checkpoint; {hint}",
        key_list(keys)
    )]
    MissingKeys {
        path: PathBuf,
        layout: &'static str,
        keys: Vec<String>,
        hint: String,
    },
    #[error(
        "{path}: unexpected weights {} in a {layout} checkpoint; {hint}",
        key_list(keys)
    )]
    UnexpectedKeys {
        path: PathBuf,
        layout: &'static str,
        keys: Vec<String>,
        hint: String,
    },
    #[error("{path}: weight `{key}` has shape {found:?}, expected {expected:?}; {hint}")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        hint: String,
    },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// A readable list of key names: the first few, then how many more.
pub fn key_list(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<&str> = keys.iter().take(SHOWN).map(String::as_str).collect();
    if keys.len() > SHOWN {
        format!("{head:?} (+{} more)", keys.len() - SHOWN)
    } else {
        format!("{head:?}")
    }
}

impl CheckpointError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn malformed(
        path: impl Into<PathBuf>,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        CheckpointError::Malformed {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }
}
