//! Batch runs over many inputs (slides, volumes, rasters): the share of the inputs one process
//! takes (`--shard i/n`, or a Slurm array), and one status file per finished item, written last
//! and atomically, so that a rerun skips what finished and redoes what was cut off.

use std::io::Write;
use std::path::{Path, PathBuf};

use dinoadapt_core::io::write_atomically;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a batch could not be set up or recorded.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("--shard `{0}`: expected i/n, e.g. 0/4")]
    ShardSyntax(String),
    #[error("--shard {0}: needs 0 <= i < n")]
    ShardRange(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Item `k` belongs to shard `index` of `count` when `k % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `--shard i/n`, else a Slurm array (`SLURM_ARRAY_TASK_ID` relative to
    /// `SLURM_ARRAY_TASK_MIN`, over `SLURM_ARRAY_TASK_COUNT`), else everything.
    pub fn resolve(flag: Option<&str>) -> Result<Shard, BatchError> {
        if let Some(s) = flag {
            let syntax = || BatchError::ShardSyntax(s.to_string());
            let (i, n) = s.split_once('/').ok_or_else(syntax)?;
            let index: usize = i.trim().parse().map_err(|_| syntax())?;
            let count: usize = n.trim().parse().map_err(|_| syntax())?;
            if count == 0 || index >= count {
                return Err(BatchError::ShardRange(s.to_string()));
            }
            return Ok(Shard { index, count });
        }
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        if let (Some(id), Some(count)) = (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT"))
        {
            let index = id - var("SLURM_ARRAY_TASK_MIN").unwrap_or(0).min(id);
            if count > 0 && index < count {
                return Ok(Shard { index, count });
            }
        }
        Ok(Shard { index: 0, count: 1 })
    }

    /// This shard's items, in their order.
    pub fn select<T>(self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, s)| s)
            .collect()
    }
}

/// The status files of a batch's output folder: `out/status/<id>.json`, one per item.
#[derive(Debug, Clone)]
pub struct StatusFiles {
    out: PathBuf,
}

impl StatusFiles {
    pub fn new(out: &Path) -> Self {
        StatusFiles {
            out: out.to_path_buf(),
        }
    }

    /// Where item `id`'s status is.
    pub fn path(&self, id: &str) -> PathBuf {
        self.out.join("status").join(format!("{id}.json"))
    }

    /// Item `id`'s status from an earlier run, if it has a readable one.
    pub fn read<S: DeserializeOwned>(&self, id: &str) -> Option<S> {
        std::fs::read_to_string(self.path(id))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Write item `id`'s status atomically (temp file + rename): the last thing written for it.
    pub fn write<S: Serialize>(&self, id: &str, status: &S) -> Result<(), BatchError> {
        let path = self.path(id);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BatchError::Io { path, source }
        };
        let text = serde_json::to_string_pretty(status).map_err(|source| BatchError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomically(&path, |w| w.write_all(text.as_bytes())).map_err(io(&path))
    }

    /// Every readable status in the folder (all shards so far), in file-name order.
    pub fn read_all<S: DeserializeOwned>(&self) -> Result<Vec<S>, BatchError> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(self.out.join("status")) {
            Ok(dir) => dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => return Ok(Vec::new()),
        };
        paths.sort();
        let mut rows = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|source| BatchError::Io {
                path: p.clone(),
                source,
            })?;
            if let Ok(s) = serde_json::from_str::<S>(&text) {
                rows.push(s);
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_items() {
        let all: Vec<usize> = (0..3)
            .flat_map(|i| Shard { index: i, count: 3 }.select((0..10).collect()))
            .collect();
        assert_eq!(all.len(), 10);
        assert_eq!(
            Shard::resolve(Some("1/4")).unwrap(),
            Shard { index: 1, count: 4 }
        );
        assert!(Shard::resolve(Some("4/4")).is_err());
        assert!(Shard::resolve(Some("x")).is_err());
    }

    #[test]
    fn statuses_are_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = StatusFiles::new(dir.path());
        files.write("b", &serde_json::json!({"id": "b"})).unwrap();
        files.write("a", &serde_json::json!({"id": "a"})).unwrap();
        std::fs::write(files.path("broken"), "{").unwrap();
        let all: Vec<serde_json::Value> = files.read_all().unwrap();
        assert_eq!(
            all,
            vec![
                serde_json::json!({"id": "a"}),
                serde_json::json!({"id": "b"})
            ]
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("status"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["a.json", "b.json", "broken.json"]);
        assert_eq!(files.read::<serde_json::Value>("a").unwrap()["id"], "a");
        assert!(files.read::<serde_json::Value>("missing").is_none());
    }
}
