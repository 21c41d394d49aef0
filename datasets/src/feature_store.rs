//! The feature store: per-source tensors in safetensors, written as they are computed.
//!
//! [`FeatureWriter`] lays out the whole safetensors file up front (every tensor's shape is known
//! before the first batch: one row per input), then writes each batch's rows at their offsets.
//! Memory stays flat in the number of inputs, and the file appears under its name only when
//! complete (temp file + rename), so a killed run never leaves a half-written feature file.

use std::collections::{BTreeMap, HashMap};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use dinoadapt_core::io::{persist, temp_file_beside, NamedTempFile};

use serde_json::json;

/// Errors of the feature store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("feature `{name}`: {reason}")]
    Layout { name: String, reason: String },
}

#[derive(Debug, Clone)]
struct Slot {
    shape: Vec<usize>,
    /// Byte offset of the tensor's data from the start of the file.
    start: u64,
    row_elems: usize,
    rows_written: usize,
}

/// Streams f32 tensors with a leading row dimension into one safetensors file.
pub struct FeatureWriter {
    path: PathBuf,
    /// The file being written, beside `path`; moved onto it by `finish`.
    tmp: NamedTempFile,
    slots: BTreeMap<String, Slot>,
    metadata: HashMap<String, String>,
}

impl FeatureWriter {
    /// Create the file for `tensors` (name, full shape with rows first) and `metadata`.
    pub fn create(
        path: &Path,
        tensors: &[(String, Vec<usize>)],
        metadata: &HashMap<String, String>,
    ) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!(metadata));
        let mut offset = 0u64;
        let mut slots = BTreeMap::new();
        let mut sorted: Vec<&(String, Vec<usize>)> = tensors.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, shape) in sorted {
            if shape.is_empty() {
                return Err(StoreError::Layout {
                    name: name.clone(),
                    reason: "a feature needs a leading row dimension".into(),
                });
            }
            let bytes = shape.iter().product::<usize>() as u64 * 4;
            header.insert(
                name.clone(),
                json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            slots.insert(
                name.clone(),
                Slot {
                    shape: shape.clone(),
                    start: offset,
                    row_elems: shape[1..].iter().product(),
                    rows_written: 0,
                },
            );
            offset += bytes;
        }
        let mut text = serde_json::to_string(&header)
            .expect("header serialises")
            .into_bytes();
        while !(8 + text.len()).is_multiple_of(8) {
            text.push(b' ');
        }
        let data_start = 8 + text.len() as u64;
        for s in slots.values_mut() {
            s.start += data_start;
        }
        let mut tmp = temp_file_beside(path).map_err(io)?;
        let file = tmp.as_file_mut();
        file.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.set_len(data_start + offset).map_err(io)?;
        Ok(FeatureWriter {
            path: path.to_path_buf(),
            tmp,
            slots,
            metadata: metadata.clone(),
        })
    }

    /// Write the next rows of tensor `name` (row-major f32, a whole number of rows).
    pub fn append(&mut self, name: &str, data: &[f32]) -> Result<(), StoreError> {
        let slot = self.slots.get_mut(name).ok_or_else(|| StoreError::Layout {
            name: name.into(),
            reason: "not declared when the file was created".into(),
        })?;
        if slot.row_elems == 0 || !data.len().is_multiple_of(slot.row_elems) {
            return Err(StoreError::Layout {
                name: name.into(),
                reason: format!(
                    "{} values is not a whole number of rows of {}",
                    data.len(),
                    slot.row_elems
                ),
            });
        }
        let rows = data.len() / slot.row_elems;
        if slot.rows_written + rows > slot.shape[0] {
            return Err(StoreError::Layout {
                name: name.into(),
                reason: format!("more than the {} rows declared", slot.shape[0]),
            });
        }
        let at = slot.start + (slot.rows_written * slot.row_elems * 4) as u64;
        let mut bytes = Vec::with_capacity(data.len() * 4);
        for v in data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let file = self.tmp.as_file_mut();
        let written = file
            .seek(SeekFrom::Start(at))
            .and_then(|_| file.write_all(&bytes));
        written.map_err(|source| StoreError::Io {
            path: self.tmp.path().to_path_buf(),
            source,
        })?;
        slot.rows_written += rows;
        Ok(())
    }

    /// Check every tensor is complete, flush, and move the file into place.
    pub fn finish(self) -> Result<PathBuf, StoreError> {
        let declared = self.slots.values().map(|s| s.shape[0]).next().unwrap_or(0);
        self.finish_rows(declared)
    }

    /// Like [`finish`](Self::finish) when only the first `rows` rows were written (inputs that
    /// failed were skipped): the file is rewritten with `rows` rows. Every tensor must have
    /// exactly `rows` rows written.
    pub fn finish_rows(self, rows: usize) -> Result<PathBuf, StoreError> {
        for (name, s) in &self.slots {
            if s.rows_written != rows || rows > s.shape[0] {
                return Err(StoreError::Layout {
                    name: name.clone(),
                    reason: format!("{} of {} rows written", s.rows_written, rows),
                });
            }
        }
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        self.tmp.as_file().sync_all().map_err(io)?;
        if self.slots.values().all(|s| s.shape[0] == rows) {
            persist(self.tmp, &self.path).map_err(io)?;
            return Ok(self.path);
        }
        // Compact: copy the written rows into a file declared with `rows` rows, which takes
        // `path`'s place; the uncompacted temporary file is removed when dropped.
        let mut src = self.tmp;
        let specs: Vec<(String, Vec<usize>)> = self
            .slots
            .iter()
            .map(|(n, s)| {
                let mut shape = s.shape.clone();
                shape[0] = rows;
                (n.clone(), shape)
            })
            .collect();

        let mut out = FeatureWriter::create(&self.path, &specs, &self.metadata)?;
        // Copy row blocks so memory stays bounded whatever the number of rows.
        const BLOCK_BYTES: usize = 64 << 20;
        for (name, s) in &self.slots {
            let block_rows = (BLOCK_BYTES / (s.row_elems * 4).max(1)).max(1);
            src.seek(SeekFrom::Start(s.start)).map_err(io)?;
            let mut done = 0;
            while done < rows {
                let n = block_rows.min(rows - done);
                let mut buf = vec![0u8; n * s.row_elems * 4];
                std::io::Read::read_exact(&mut src, &mut buf).map_err(io)?;
                let data: Vec<f32> = buf
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                out.append(name, &data)?;
                done += n;
            }
        }
        drop(src);
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    #[test]
    fn streams_rows_into_a_valid_safetensors_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        let meta = HashMap::from([("model".to_string(), "x".to_string())]);
        let mut w = FeatureWriter::create(
            &path,
            &[("cls".into(), vec![3, 2]), ("patch".into(), vec![3, 2, 2])],
            &meta,
        )
        .unwrap();
        w.append("cls", &[0.0, 1.0, 2.0, 3.0]).unwrap();
        w.append("patch", &[9.0; 8]).unwrap();
        assert!(w.append("cls", &[1.0]).is_err());
        w.append("cls", &[4.0, 5.0]).unwrap();
        w.append("patch", &[7.0; 4]).unwrap();
        assert!(!path.exists(), "only complete files appear");
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let cls: Vec<f32> = st
            .tensor("cls")
            .unwrap()
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(cls, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(st.tensor("patch").unwrap().shape(), [3, 2, 2]);
        let (_, m) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap()["model"], "x");
    }

    #[test]
    fn an_unfinished_writer_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        let mut w =
            FeatureWriter::create(&path, &[("a".into(), vec![2, 1])], &HashMap::new()).unwrap();
        w.append("a", &[1.0]).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn compacts_when_inputs_were_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        let mut w = FeatureWriter::create(
            &path,
            &[("a".into(), vec![3, 2]), ("b".into(), vec![3, 1])],
            &HashMap::new(),
        )
        .unwrap();
        w.append("a", &[1.0, 2.0, 3.0, 4.0]).unwrap();
        w.append("b", &[5.0, 6.0]).unwrap();
        w.finish_rows(2).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("a").unwrap().shape(), [2, 2]);
        let b: Vec<f32> = st
            .tensor("b")
            .unwrap()
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(b, [5.0, 6.0]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary files left"
        );
    }

    #[test]
    fn refuses_to_finish_an_incomplete_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        let mut w =
            FeatureWriter::create(&path, &[("cls".into(), vec![2, 1])], &HashMap::new()).unwrap();
        w.append("cls", &[1.0]).unwrap();
        assert!(w.finish().is_err());
        assert!(!path.exists());
    }
}
