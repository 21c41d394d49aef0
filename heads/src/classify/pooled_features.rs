//! The class-token features of a store (a file that `embed` wrote, with its Parquet manifest
//! beside it, or any domain's feature store, see [`super::stores`]) and the class label of each
//! row: from the image paths (ImageFolder style), a CSV, or the domain's dense labels.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_datasets::{find_domain, DenseTargetOptions, DenseValues, Domain, FeatureFile};
use serde::{Deserialize, Serialize};

use super::stores::{group_means, read_table, row_keys, store_parts, RowKey, Unit};
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
    /// A CSV (`csv:FILE`) whose first column names rows and whose `label` column (else the
    /// second) gives their class; an optional `split` column (train, val, test) assigns each
    /// row to a split. A row matches by its id (an image path, or `<group>:<index>` such as
    /// `slide:12`), its group (`slide`: every tile of the slide) or its file name.
    Csv(PathBuf),
    /// The domain's own dense labels (`targets:FILE`, also `raster:FILE`): a label raster
    /// over satellite chips, GeoJSON annotations over one slide's tiles. Each row takes the
    /// most frequent class of its pixels; rows without any are left out.
    Targets(PathBuf),
}

impl FromStr for Labels {
    type Err = ClassifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "folder" {
            return Ok(Labels::Folder);
        }
        if let Some(file) = s.strip_prefix("csv:") {
            return Ok(Labels::Csv(PathBuf::from(file)));
        }
        s.strip_prefix("targets:")
            .or_else(|| s.strip_prefix("raster:"))
            .map(|file| Labels::Targets(PathBuf::from(file)))
            .ok_or_else(|| ClassifyError::UnknownLabels(s.to_string()))
    }
}

/// One feature file of a store: its rows in [`Features`] and its metadata (a domain reads its
/// dense labels by them).
#[derive(Debug, Clone, PartialEq)]
pub struct FileRows {
    pub path: PathBuf,
    pub meta: HashMap<String, String>,
    pub rows: usize,
}

/// Features of a store and the key of each row.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Row-major `[rows, dim]`.
    pub x: Vec<f32>,
    pub dim: usize,
    /// The name of each row: an image path (`embed`) or `<group>:<index>` (domain stores).
    pub keys: Vec<RowKey>,
    /// The backbone the files record (`None` for files of other tools).
    pub backbone: Option<Backbone>,
    /// The feature files, in row order (empty once rows are pooled into groups).
    pub files: Vec<FileRows>,
}

/// Rows `[n, dim]` of one feature file and its metadata.
struct FileFeatures {
    x: Vec<f32>,
    dim: usize,
    n: usize,
    meta: HashMap<String, String>,
}

/// The `kind` features of one safetensors file.
fn read_rows(path: &Path, kind: FeatureKind) -> Result<FileFeatures, ClassifyError> {
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
    Ok(FileFeatures { x, dim, n, meta })
}

impl Features {
    /// Reads the `kind` features of a store: a feature file of `embed` (its manifest beside
    /// it, `path` with the extension `.parquet`), a feature file with its region table, or a
    /// domain's output folder ([`super::stores`]).
    pub fn load(path: &Path, kind: FeatureKind) -> Result<Self, ClassifyError> {
        let parts = store_parts(path)?;
        let mut out = Features {
            x: Vec::new(),
            dim: 0,
            keys: Vec::new(),
            backbone: None,
            files: Vec::new(),
        };
        for part in &parts {
            let FileFeatures { x, dim, n, meta } = read_rows(&part.features, kind)?;
            let df = read_table(&part.table)?;
            let keys = row_keys(part, &df, n)?;
            let backbone = Backbone::from_metadata(&meta);
            if out.files.is_empty() {
                (out.dim, out.backbone) = (dim, backbone);
            } else if dim != out.dim
                || backbone.as_ref().map(|b| &b.checkpoint_sha256)
                    != out.backbone.as_ref().map(|b| &b.checkpoint_sha256)
            {
                return Err(ClassifyError::BadFeatures {
                    path: part.features.clone(),
                    reason: format!(
                        "{dim}-wide features of another backbone or width than {}'s",
                        parts[0].features.display()
                    ),
                });
            }
            out.x.extend(x);
            out.keys.extend(keys);
            out.files.push(FileRows {
                path: part.features.clone(),
                meta,
                rows: n,
            });
        }
        Ok(out)
    }

    /// The features as samples of `unit`: rows as they are, or each group pooled (the mean).
    pub fn in_unit(self, unit: Unit) -> Self {
        match unit {
            Unit::Rows => self,
            Unit::Groups => {
                let (x, keys) = group_means(&self.x, self.dim, &self.keys);
                Features {
                    x,
                    keys,
                    files: Vec::new(),
                    ..self
                }
            }
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of each row.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// The rows whose `keep` is true.
    pub fn select(&self, keep: &[bool]) -> Features {
        let d = self.dim;
        Features {
            x: self
                .x
                .chunks(d)
                .zip(keep)
                .filter(|(_, k)| **k)
                .flat_map(|(r, _)| r.iter().copied())
                .collect(),
            dim: d,
            keys: self
                .keys
                .iter()
                .zip(keep)
                .filter(|(_, k)| **k)
                .map(|(r, _)| r.clone())
                .collect(),
            backbone: self.backbone.clone(),
            files: Vec::new(),
        }
    }

    /// The labelled rows of `split` (every row when the labels name no splits) and their class
    /// names; `domains` read [`Labels::Targets`].
    pub fn labelled(
        &self,
        labels: &Labels,
        split: Option<&str>,
        domains: &[&dyn Domain],
    ) -> Result<(Features, Vec<String>), ClassifyError> {
        let names = self.label_names(labels, split, domains)?;
        let keep: Vec<bool> = names.iter().map(Option::is_some).collect();
        if !keep.iter().any(|k| *k) {
            return Err(ClassifyError::NoLabelledRows {
                split: split.unwrap_or("any").to_string(),
            });
        }
        Ok((self.select(&keep), names.into_iter().flatten().collect()))
    }

    /// The class name of each row, `None` for rows of another split or without a target.
    pub fn label_names(
        &self,
        labels: &Labels,
        split: Option<&str>,
        domains: &[&dyn Domain],
    ) -> Result<Vec<Option<String>>, ClassifyError> {
        let file = match labels {
            Labels::Folder => {
                return self
                    .keys
                    .iter()
                    .map(|k| {
                        Path::new(&k.id)
                            .parent()
                            .and_then(|d| d.file_name())
                            .map(|n| Some(n.to_string_lossy().into_owned()))
                            .ok_or_else(|| ClassifyError::NoClassFolder(k.id.clone()))
                    })
                    .collect();
            }
            Labels::Targets(file) => return target_classes(self, file, domains),
            Labels::Csv(file) => file,
        };
        let table = LabelTable::read(file)?;
        self.keys
            .iter()
            .map(|k| {
                let name = Path::new(&k.id).file_name().and_then(|n| n.to_str());
                let (label, row_split) = table
                    .rows
                    .get(&k.id)
                    .or_else(|| table.rows.get(&k.group))
                    .or_else(|| name.and_then(|n| table.rows.get(n)))
                    .ok_or_else(|| ClassifyError::NoLabel {
                        path: file.clone(),
                        image: k.id.clone(),
                    })?;
                let wanted = match (split, row_split) {
                    (Some(want), Some(s)) => s == want,
                    _ => true,
                };
                Ok(wanted.then(|| label.clone()))
            })
            .collect()
    }
}

/// A labels CSV: row name -> (label, split).
struct LabelTable {
    rows: HashMap<String, (String, Option<String>)>,
}

impl LabelTable {
    fn read(file: &Path) -> Result<LabelTable, ClassifyError> {
        let text = std::fs::read_to_string(file).map_err(|source| ClassifyError::ReadLabels {
            path: file.to_path_buf(),
            source,
        })?;
        let cells = |l: &str| -> Vec<String> {
            l.split(',')
                .map(|c| c.trim().trim_matches('"').to_string())
                .collect()
        };
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = cells(lines.next().unwrap_or_default());
        let at = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
        let label = at("label").unwrap_or(1);
        let split = at("split");
        let rows = lines
            .map(cells)
            .filter(|c| c.len() > label)
            .map(|c| {
                let s = split.and_then(|i| c.get(i).cloned());
                (c[0].clone(), (c[label].clone(), s))
            })
            .collect();
        Ok(LabelTable { rows })
    }
}

/// The most frequent class of each row's pixels in the domain's dense labels `file`.
fn target_classes(
    f: &Features,
    file: &Path,
    domains: &[&dyn Domain],
) -> Result<Vec<Option<String>>, ClassifyError> {
    if f.files.is_empty() {
        return Err(ClassifyError::TargetsOfGroups);
    }
    let mut out = Vec::with_capacity(f.len());
    for part in &f.files {
        let targets = |reason: String| ClassifyError::Targets {
            path: part.path.clone(),
            reason,
        };
        let name = part.meta.get("domain").ok_or_else(|| {
            targets("no `domain` metadata: embed with a `dinoadapt <domain> embed` command".into())
        })?;
        let domain = find_domain(domains, name).map_err(|e| targets(e.to_string()))?;
        let feature_file = FeatureFile {
            path: &part.path,
            meta: &part.meta,
            rows: part.rows,
        };
        let options = DenseTargetOptions {
            targets: file,
            volume: None,
            resampling: None,
            class_names: &[],
            ignore_index: u32::MAX,
            values: DenseValues::Classes,
        };
        let l = domain
            .dense_targets(&feature_file, &options)
            .ok_or_else(|| targets(format!("the {name} domain has no dense labels")))?
            .map_err(|e| targets(e.to_string()))?;
        let plane = l.input_size * l.input_size;
        if l.values.len() != part.rows * plane {
            return Err(targets(format!(
                "{} target values for {} rows of {plane} pixels",
                l.values.len(),
                part.rows
            )));
        }
        for row in l.values.chunks(plane) {
            let mut counts: HashMap<i64, usize> = HashMap::new();
            for v in row.iter().filter(|v| v.is_finite()) {
                *counts.entry(v.round() as i64).or_default() += 1;
            }
            // The most frequent class; ties go to the smaller class value.
            let best = counts
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(c, _)| c);
            out.push(best.map(|c| {
                l.class_names
                    .get(c as usize)
                    .cloned()
                    .unwrap_or_else(|| c.to_string())
            }));
        }
    }
    Ok(out)
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
        assert_eq!(
            err.to_string(),
            "--labels `tsv:x`: folder, csv:FILE or targets:FILE"
        );
    }

    #[test]
    fn labels_come_from_the_parent_folder_or_the_csv() {
        let f = Features {
            x: vec![0.0; 2],
            dim: 1,
            keys: vec![
                RowKey::single("data/cat/1.png"),
                RowKey::single("data/dog/2.png"),
            ],
            backbone: None,
            files: Vec::new(),
        };
        let folder = f.label_names(&Labels::Folder, None, &[]).unwrap();
        assert_eq!(folder, [Some("cat".into()), Some("dog".into())]);
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, "path,label\ndata/cat/1.png, tabby\n2.png,hound\n").unwrap();
        let (_, names) = f.labelled(&Labels::Csv(csv.clone()), None, &[]).unwrap();
        assert_eq!(names, ["tabby", "hound"]);
        std::fs::write(&csv, "path,label\n1.png,tabby\n").unwrap();
        let err = f
            .label_names(&Labels::Csv(csv.clone()), None, &[])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: no label for `data/dog/2.png`", csv.display())
        );
        let classes = vec!["cat".to_string()];
        let err = encode(&["dog".to_string()], &classes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "class `dog` is not among the training classes [\"cat\"]"
        );
    }

    #[test]
    fn a_csv_labels_a_slides_tiles_by_its_group_and_splits_them() {
        let key = |id: &str| RowKey {
            id: id.into(),
            group: id.split(':').next().unwrap().into(),
        };
        let f = Features {
            x: vec![1.0, 2.0, 3.0],
            dim: 1,
            keys: vec![key("s1:0"), key("s1:1"), key("s2:0")],
            backbone: None,
            files: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        // The tile's own row wins over its slide's.
        std::fs::write(
            &csv,
            "slide_id,split,label\ns1,train,tumour\ns1:1,train,normal\ns2,val,normal\n",
        )
        .unwrap();
        let labels = Labels::Csv(csv);
        let (train, names) = f.labelled(&labels, Some("train"), &[]).unwrap();
        assert_eq!(names, ["tumour", "normal"]);
        assert_eq!(train.x, [1.0, 2.0]);
        let (val, names) = f.labelled(&labels, Some("val"), &[]).unwrap();
        assert_eq!(
            (val.ids(), names),
            (vec!["s2:0".to_string()], vec!["normal".into()])
        );
        let err = f.labelled(&labels, Some("test"), &[]).unwrap_err();
        assert!(err.to_string().contains("test"), "{err}");
        assert_eq!(
            "raster:l.tif".parse::<Labels>().unwrap(),
            Labels::Targets("l.tif".into())
        );
    }
}
