//! The class-token features of a file that `embed` wrote (safetensors, with its Parquet
//! manifest beside it) and the class label of each row, from the image paths (ImageFolder
//! style) or from a CSV.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use polars::prelude::{ParquetReader, SerReader};
use serde::{Deserialize, Serialize};

use super::ClassifyError;
use crate::backbone::Backbone;

/// Which features a probe reads from a feature file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FeatureKind {
    /// The class token (`cls`).
    #[default]
    #[serde(rename = "cls")]
    Cls,
    /// The class token and the mean patch token concatenated (`cls+avgpool`), as DINOv2's
    /// linear evaluation does.
    #[serde(rename = "cls+avgpool")]
    ClsAvgpool,
}

impl FeatureKind {
    /// The name `head.json` records and `--features` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Cls => "cls",
            FeatureKind::ClsAvgpool => "cls+avgpool",
        }
    }
}

impl fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FeatureKind {
    type Err = ClassifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cls" => Ok(FeatureKind::Cls),
            "cls+avgpool" => Ok(FeatureKind::ClsAvgpool),
            other => Err(ClassifyError::UnknownFeatures(other.to_string())),
        }
    }
}

/// Where the class of each row comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Labels {
    /// The parent folder of each image path in the manifest (`folder`).
    #[default]
    Folder,
    /// A CSV with the columns `path,label` (`csv:FILE`); a path matches by its full text or its
    /// file name.
    Csv(PathBuf),
}

impl FromStr for Labels {
    type Err = ClassifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "folder" {
            return Ok(Labels::Folder);
        }
        s.strip_prefix("csv:")
            .map(|file| Labels::Csv(PathBuf::from(file)))
            .ok_or_else(|| ClassifyError::UnknownLabels(s.to_string()))
    }
}

/// Features of one file and the image path of each row.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Row-major `[rows, dim]`.
    pub x: Vec<f32>,
    pub dim: usize,
    /// The image path of each row (from the manifest; empty where it has none).
    pub paths: Vec<String>,
    /// The backbone the file records (`None` for files of other tools).
    pub backbone: Option<Backbone>,
}

impl Features {
    /// Reads the `kind` features of `path` and the image paths of its manifest
    /// (`path` with the extension `.parquet`).
    pub fn load(path: &Path, kind: FeatureKind) -> Result<Self, ClassifyError> {
        let (tensors, meta) = read_safetensors(path)?;
        let get = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| ClassifyError::MissingFeatures {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                })
        };
        let bad = |reason: String| ClassifyError::BadFeatures {
            path: path.to_path_buf(),
            reason,
        };
        let cls = get("cls")?;
        let [n, d] = cls.shape[..] else {
            return Err(bad(format!(
                "`cls` has shape {:?}; class tokens are [rows, dim]",
                cls.shape
            )));
        };
        if n == 0 || d == 0 {
            return Err(bad(format!("`cls` has shape {:?}: no features", cls.shape)));
        }
        check_finite(&cls.data, d, "cls").map_err(bad)?;
        let (x, dim) = match kind {
            FeatureKind::Cls => (cls.data.clone(), d),
            FeatureKind::ClsAvgpool => {
                let patch = get("patch")?;
                let p = match patch.shape[..] {
                    [rows, p, pd] if rows == n && pd == d && p > 0 => p,
                    _ => {
                        return Err(bad(format!(
                            "`patch` has shape {:?}; cls+avgpool needs [{n}, tokens, {d}] \
                             beside `cls` [{n}, {d}]",
                            patch.shape
                        )))
                    }
                };
                check_finite(&patch.data, p * d, "patch").map_err(bad)?;
                let mut x = Vec::with_capacity(n * 2 * d);
                for i in 0..n {
                    x.extend_from_slice(&cls.data[i * d..(i + 1) * d]);
                    let tokens = &patch.data[i * p * d..(i + 1) * p * d];
                    let mut mean = vec![0f32; d];
                    for t in tokens.chunks(d) {
                        mean.iter_mut().zip(t).for_each(|(m, v)| *m += v / p as f32);
                    }
                    x.extend(mean);
                }
                (x, 2 * d)
            }
        };
        // Feature row i is the manifest row whose `index` is i.
        let manifest = path.with_extension("parquet");
        let file = std::fs::File::open(&manifest).map_err(|source| ClassifyError::Manifest {
            path: manifest.clone(),
            source,
        })?;
        let table = |reason: String| ClassifyError::ManifestTable {
            path: manifest.clone(),
            reason,
        };
        let df = ParquetReader::new(file)
            .finish()
            .map_err(|e| table(format!("not a readable Parquet table ({e})")))?;
        let column = |name: &str, kind: &str| {
            table(format!(
                "no `{name}` column of {kind} (the manifest `embed` writes beside its features)"
            ))
        };
        let index = df
            .column("index")
            .and_then(|c| c.u32())
            .map_err(|_| column("index", "u32 feature rows"))?
            .clone();
        let p = df
            .column("path")
            .and_then(|c| c.str())
            .map_err(|_| column("path", "input paths"))?
            .clone();
        let mut paths = vec![String::new(); n];
        for r in 0..df.height() {
            if let (Some(i), Some(path)) = (index.get(r), p.get(r)) {
                if (i as usize) < n {
                    paths[i as usize] = path.to_string();
                }
            }
        }
        Ok(Features {
            x,
            dim,
            paths,
            backbone: Backbone::from_metadata(&meta),
        })
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The class name of each row.
    pub fn label_names(&self, labels: &Labels) -> Result<Vec<String>, ClassifyError> {
        let file = match labels {
            Labels::Folder => {
                return self
                    .paths
                    .iter()
                    .map(|p| {
                        Path::new(p)
                            .parent()
                            .and_then(|d| d.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                            .ok_or_else(|| ClassifyError::NoClassFolder(p.clone()))
                    })
                    .collect();
            }
            Labels::Csv(file) => file,
        };
        let text = std::fs::read_to_string(file).map_err(|source| ClassifyError::ReadLabels {
            path: file.clone(),
            source,
        })?;
        let map: HashMap<String, String> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(','))
            .map(|(p, l)| (p.trim().to_string(), l.trim().to_string()))
            .collect();
        self.paths
            .iter()
            .map(|p| {
                map.get(p)
                    .or_else(|| {
                        let name = Path::new(p).file_name()?.to_str()?;
                        map.get(name)
                    })
                    .cloned()
                    .ok_or_else(|| ClassifyError::NoLabel {
                        path: file.clone(),
                        image: p.clone(),
                    })
            })
            .collect()
    }
}

/// Refuse NaN and ±Inf in a tensor of rows of `row` values: a probe trained on them silently
/// degrades (three such values among 5,120 took a linear probe from 0.625 to 0.100).
fn check_finite(data: &[f32], row: usize, name: &str) -> Result<(), String> {
    let bad = data.iter().filter(|v| !v.is_finite()).count();
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(first) => Err(format!(
            "{bad} non-finite value(s) (NaN or ±Inf) in `{name}`, the first in row {}; \
             re-embed those inputs or leave them out",
            first / row.max(1)
        )),
    }
}

/// The class index of each name in `classes`.
pub fn encode(names: &[String], classes: &[String]) -> Result<Vec<usize>, ClassifyError> {
    names
        .iter()
        .map(|n| {
            classes
                .iter()
                .position(|c| c == n)
                .ok_or_else(|| ClassifyError::UnknownClass {
                    class: n.clone(),
                    classes: classes.to_vec(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_kinds_and_label_sources_read_as_the_flags_write_them() {
        for kind in [FeatureKind::Cls, FeatureKind::ClsAvgpool] {
            assert_eq!(kind.as_str().parse::<FeatureKind>().unwrap(), kind);
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str(), "head.json spells it as the flag does");
            assert_eq!(serde_json::from_value::<FeatureKind>(json).unwrap(), kind);
        }
        let err = "avgpool".parse::<FeatureKind>().unwrap_err();
        assert_eq!(err.to_string(), "--features `avgpool`: cls or cls+avgpool");
        assert_eq!("folder".parse::<Labels>().unwrap(), Labels::Folder);
        assert_eq!(
            "csv:a/b.csv".parse::<Labels>().unwrap(),
            Labels::Csv(PathBuf::from("a/b.csv"))
        );
        let err = "tsv:x".parse::<Labels>().unwrap_err();
        assert_eq!(err.to_string(), "--labels `tsv:x`: folder or csv:FILE");
    }

    #[test]
    fn labels_come_from_the_parent_folder_or_the_csv() {
        let f = Features {
            x: vec![0.0; 2],
            dim: 1,
            paths: vec!["data/cat/1.png".into(), "data/dog/2.png".into()],
            backbone: None,
        };
        assert_eq!(f.label_names(&Labels::Folder).unwrap(), ["cat", "dog"]);
        let dir = std::env::temp_dir().join(format!("dinoadapt-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("labels.csv");
        std::fs::write(&csv, "path,label\ndata/cat/1.png, tabby\n2.png,hound\n").unwrap();
        assert_eq!(
            f.label_names(&Labels::Csv(csv.clone())).unwrap(),
            ["tabby", "hound"]
        );
        std::fs::write(&csv, "path,label\n1.png,tabby\n").unwrap();
        let err = f.label_names(&Labels::Csv(csv.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: no label for `data/dog/2.png`", csv.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let classes = vec!["cat".to_string()];
        let err = encode(&["dog".to_string()], &classes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "class `dog` is not among the training classes [\"cat\"]"
        );
    }
}
