//! Rows of an embedding matrix read from a safetensors feature file in blocks, so a pool larger
//! than memory is searched block by block: the header is parsed once, then each block is one
//! positioned read of its bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Why a feature file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

/// A 2-D float32 tensor [rows, dim] inside a safetensors file.
#[derive(Debug)]
pub struct FeatureRows {
    pub path: PathBuf,
    pub rows: usize,
    pub dim: usize,
    file: File,
    data_start: u64,
}

impl FeatureRows {
    /// Open tensor `name` (e.g. `cls`) of `path`.
    pub fn open(path: &Path, name: &str) -> Result<Self, RowsError> {
        let io = |source| RowsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let format = |message: String| RowsError::Format {
            path: path.to_path_buf(),
            message,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(io)?;
        let header_len = u64::from_le_bytes(len);
        if header_len > 100 << 20 {
            return Err(format("not a safetensors file (header too large)".into()));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| format(format!("not a safetensors file: {e}")))?;
        let entry = header.get(name).ok_or_else(|| {
            let names: Vec<&String> = header
                .as_object()
                .map(|o| o.keys().filter(|k| *k != "__metadata__").collect())
                .unwrap_or_default();
            format(format!("no tensor `{name}` (it holds {names:?})"))
        })?;
        if entry["dtype"] != "F32" {
            return Err(format(format!(
                "`{name}` is {}, expected F32",
                entry["dtype"]
            )));
        }
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as usize)
                    .collect()
            })
            .unwrap_or_default();
        let [rows, dim] = shape[..] else {
            return Err(format(format!(
                "`{name}` has shape {shape:?}, expected [rows, dim]"
            )));
        };
        let begin = entry["data_offsets"][0]
            .as_u64()
            .ok_or_else(|| format("missing data_offsets".into()))?;
        Ok(FeatureRows {
            path: path.to_path_buf(),
            rows,
            dim,
            file,
            data_start: 8 + header_len + begin,
        })
    }

    /// Rows `start..start + count` (clamped to the end), row-major.
    pub fn read(&mut self, start: usize, count: usize) -> Result<Vec<f32>, RowsError> {
        let end = (start + count).min(self.rows);
        let n = end.saturating_sub(start) * self.dim;
        let mut bytes = vec![0u8; n * 4];
        let io = |source| RowsError::Io {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(
                self.data_start + (start * self.dim * 4) as u64,
            ))
            .map_err(io)?;
        self.file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Every row.
    pub fn read_all(&mut self) -> Result<Vec<f32>, RowsError> {
        self.read(0, self.rows)
    }
}
