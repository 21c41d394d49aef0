//! Per-run manifests as Parquet tables (one row per input), written atomically.

use std::path::{Path, PathBuf};

use polars::prelude::{Column, DataFrame, IntoColumn, NamedFrom, ParquetWriter, Series};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot write the manifest: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{path}: cannot read the table: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// One embedded input.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRecord {
    /// Row of this input in the feature file (None: it failed and has no row).
    pub index: Option<u32>,
    pub path: String,
    pub model: String,
    pub checkpoint_sha256: String,
    /// Size of the input as read (pixels), before preprocessing.
    pub width: u32,
    pub height: u32,
    /// Size fed to the backbone.
    pub input_width: u32,
    pub input_height: u32,
    pub file_bytes: u64,
    /// Wall time attributed to this input (its batch's time divided by the batch size).
    pub seconds: f64,
    /// Why the input has no features (empty when it has).
    pub error: String,
}

/// A named Parquet column from a vector (the one helper every table writer uses).
pub fn column<T>(name: &str, v: Vec<T>) -> Column
where
    Series: NamedFrom<Vec<T>, [T]>,
{
    Series::new(name.into(), v).into_column()
}

/// The manifest as a DataFrame.
pub fn embed_manifest(records: &[EmbedRecord]) -> DataFrame {
    let c = |name: &str, v: Vec<u32>| column::<u32>(name, v);
    let columns = vec![
        Series::new(
            "index".into(),
            records
                .iter()
                .map(|r| r.index)
                .collect::<Vec<Option<u32>>>(),
        )
        .into_column(),
        column::<String>(
            "status",
            records
                .iter()
                .map(|r| if r.error.is_empty() { "ok" } else { "failed" }.to_string())
                .collect(),
        ),
        column::<String>("path", records.iter().map(|r| r.path.clone()).collect()),
        column::<String>("model", records.iter().map(|r| r.model.clone()).collect()),
        column::<String>(
            "checkpoint_sha256",
            records
                .iter()
                .map(|r| r.checkpoint_sha256.clone())
                .collect(),
        ),
        c("width", records.iter().map(|r| r.width).collect()),
        c("height", records.iter().map(|r| r.height).collect()),
        c(
            "input_width",
            records.iter().map(|r| r.input_width).collect(),
        ),
        c(
            "input_height",
            records.iter().map(|r| r.input_height).collect(),
        ),
        column::<u64>("file_bytes", records.iter().map(|r| r.file_bytes).collect()),
        column::<f64>("seconds", records.iter().map(|r| r.seconds).collect()),
        column::<String>("error", records.iter().map(|r| r.error.clone()).collect()),
    ];
    DataFrame::new(records.len(), columns).expect("columns have one length")
}

/// Write a table to Parquet through a temp file + rename.
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<(), ManifestError> {
    let err = |reason: String| ManifestError::Write {
        path: path.to_path_buf(),
        reason,
    };
    dinoadapt_core::io::write_atomically(path, |w| {
        ParquetWriter::new(w)
            .finish(df)
            .map(drop)
            .map_err(std::io::Error::other)
    })
    .map_err(|e| err(e.to_string()))
}

/// Read a Parquet table.
pub fn read_parquet(path: &Path) -> Result<DataFrame, ManifestError> {
    use polars::prelude::{ParquetReader, SerReader};

    let err = |reason: String| ManifestError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{ParquetReader, SerReader};

    #[test]
    fn writes_a_readable_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let r = EmbedRecord {
            index: Some(0),
            path: "a.png".into(),
            model: "m".into(),
            checkpoint_sha256: "ab".into(),
            width: 3,
            height: 4,
            input_width: 224,
            input_height: 224,
            file_bytes: 10,
            seconds: 0.5,
            error: String::new(),
        };
        let bad = EmbedRecord {
            index: None,
            error: "cannot decode".into(),
            ..r.clone()
        };
        let mut df = embed_manifest(&[
            r.clone(),
            EmbedRecord {
                index: Some(1),
                ..r
            },
            bad,
        ]);
        write_parquet(&path, &mut df).unwrap();
        let back = ParquetReader::new(std::fs::File::open(&path).unwrap())
            .finish()
            .unwrap();
        assert_eq!(back.height(), 3);
        assert_eq!(
            back.column("status").unwrap().str().unwrap().get(2),
            Some("failed")
        );
        assert_eq!(back.column("index").unwrap().u32().unwrap().get(2), None);
        assert_eq!(
            back.column("path").unwrap().str().unwrap().get(1),
            Some("a.png")
        );
    }
}
