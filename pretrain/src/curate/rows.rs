//! Rows of an embedding matrix read from a safetensors feature file in blocks, so a pool larger
//! than memory is searched block by block: the header is parsed once, then each block is one
//! positioned read of its bytes. [`StoreRows`] reads the files of a store (a domain embed's
//! folder) as one matrix, their rows end to end, with one file open at a time.

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
    /// Open while it is read; [`FeatureRows::close`] lets it go (reopened on the next read).
    file: Option<File>,
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
            file: Some(file),
            data_start: 8 + header_len + begin,
        })
    }

    /// Closes the file until the next read.
    pub fn close(&mut self) {
        self.file = None;
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
        if n == 0 {
            return Ok(Vec::new());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(File::open(&self.path).map_err(io)?),
        };
        file.seek(SeekFrom::Start(
            self.data_start + (start * self.dim * 4) as u64,
        ))
        .map_err(io)?;
        file.read_exact(&mut bytes).map_err(io)?;
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

/// The rows of several feature files end to end (a store folder's files, in its order), read
/// in blocks like one file; a block that spans files reads each in turn, and only the file
/// being read is open.
#[derive(Debug)]
pub struct StoreRows {
    pub rows: usize,
    pub dim: usize,
    parts: Vec<FeatureRows>,
    /// The first row of each part.
    starts: Vec<usize>,
    /// The part whose file is open.
    open: Option<usize>,
}

impl StoreRows {
    /// Tensor `name` of each of `files`; every file must give rows of one width.
    pub fn open(files: &[PathBuf], name: &str) -> Result<Self, RowsError> {
        let (mut parts, mut starts, mut rows) = (Vec::new(), Vec::new(), 0);
        for f in files {
            let mut part = FeatureRows::open(f, name)?;
            part.close();
            if let Some(first) = parts.first().map(|p: &FeatureRows| p.dim) {
                if part.dim != first {
                    return Err(RowsError::Format {
                        path: f.clone(),
                        message: format!(
                            "`{name}` has {} dimensions, {}'s {first}",
                            part.dim,
                            files[0].display()
                        ),
                    });
                }
            }
            starts.push(rows);
            rows += part.rows;
            parts.push(part);
        }
        let dim = parts.first().map_or(0, |p| p.dim);
        Ok(StoreRows {
            rows,
            dim,
            parts,
            starts,
            open: None,
        })
    }

    /// The files, in row order, with their rows.
    pub fn files(&self) -> impl Iterator<Item = (&Path, usize)> {
        self.parts.iter().map(|p| (p.path.as_path(), p.rows))
    }

    /// Rows `start..start + count` (clamped to the end), row-major.
    pub fn read(&mut self, start: usize, count: usize) -> Result<Vec<f32>, RowsError> {
        let end = (start + count).min(self.rows);
        let mut out = Vec::with_capacity(end.saturating_sub(start) * self.dim);
        let mut at = start;
        while at < end {
            // The part holding row `at`: the last whose first row is at or before it.
            let i = self.starts.partition_point(|&s| s <= at) - 1;
            if let Some(o) = self.open.filter(|&o| o != i) {
                self.parts[o].close();
            }
            self.open = Some(i);
            let local = at - self.starts[i];
            let take = (end - at).min(self.parts[i].rows - local);
            out.extend(self.parts[i].read(local, take)?);
            at += take;
        }
        Ok(out)
    }

    /// Every row.
    pub fn read_all(&mut self) -> Result<Vec<f32>, RowsError> {
        self.read(0, self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dinoadapt_datasets::FeatureWriter;

    fn write(path: &Path, rows: &[[f32; 2]]) {
        let mut w = FeatureWriter::create(
            path,
            &[("cls".into(), vec![rows.len(), 2])],
            &Default::default(),
        )
        .unwrap();
        for r in rows {
            w.append("cls", r).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn store_rows_read_the_files_end_to_end_across_their_borders() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
            dir.path().join("c.safetensors"),
        );
        write(&a, &[[0.0, 0.5], [1.0, 1.5]]);
        write(&b, &[[2.0, 2.5]]);
        write(&c, &[[3.0, 3.5], [4.0, 4.5], [5.0, 5.5]]);
        let mut s = StoreRows::open(&[a.clone(), b, c], "cls").unwrap();
        assert_eq!((s.rows, s.dim), (6, 2));
        assert_eq!(s.read(1, 3).unwrap(), [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        assert_eq!(s.read(5, 10).unwrap(), [5.0, 5.5]);
        assert_eq!(s.read(0, 1).unwrap(), [0.0, 0.5]);
        let all: Vec<f32> = (0..6).flat_map(|i| [i as f32, i as f32 + 0.5]).collect();
        assert_eq!(s.read_all().unwrap(), all);
        // Files of another width are refused with both names.
        let wide = dir.path().join("wide.safetensors");
        let mut w =
            FeatureWriter::create(&wide, &[("cls".into(), vec![1, 3])], &Default::default())
                .unwrap();
        w.append("cls", &[0.0; 3]).unwrap();
        w.finish().unwrap();
        let err = StoreRows::open(&[a, wide], "cls").unwrap_err().to_string();
        assert!(
            err.contains("wide.safetensors") && err.contains("a.safetensors"),
            "{err}"
        );
    }
}
