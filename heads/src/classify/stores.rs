//! The feature stores of every domain as probe inputs. Besides the one file `embed` writes
//! (safetensors + a Parquet manifest of image paths), a store is any feature file whose region
//! table (same name, `.parquet`) numbers its rows by `feature_row`, or a folder of them:
//!
//! - `pathology embed -o DIR`: `features/<slide>.safetensors` + `tiles/<slide>.parquet`;
//! - `radiology embed -o DIR`: `<volume id>.safetensors` + `.parquet` (one row per slice);
//! - `satellite embed -o F.safetensors`: one file + `F.parquet` (one row per chip, each with
//!   its raster), or the folder of per-raster files `--resume`/`--shard` write;
//! - `embed --source RECIPE --out DIR`: `features/<id>.safetensors` + `regions/<id>.parquet`.
//!
//! Each row is a region (a tile, a slice, a chip) with a key `<group>:<index>`: the group is
//! the slide, volume or raster (the file's name, or the chip's raster), the index the region's
//! (`tile_index`, `slice_index`, `region_index`). [`Unit::Groups`] pools a group's rows into one
//! (the mean, as slide- or volume-level features).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use polars::prelude::{DataFrame, DataType, ParquetReader, SerReader};
use serde::{Deserialize, Serialize};

use super::ClassifyError;

/// The columns that number a region within its group, in the order they are looked for.
const INDEX_COLUMNS: [&str; 3] = ["tile_index", "slice_index", "region_index"];

/// What a row of a store is to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Every region (tile, slice, chip, image) is a sample.
    #[default]
    Rows,
    /// Every group (slide, volume, raster) is a sample: the mean of its rows' features.
    Groups,
}

impl FromStr for Unit {
    type Err = ClassifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rows" | "tiles" | "slices" | "chips" | "regions" | "images" => Ok(Unit::Rows),
            "groups" | "slides" | "volumes" | "rasters" => Ok(Unit::Groups),
            other => Err(ClassifyError::UnknownUnit(other.to_string())),
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Rows => "rows",
            Unit::Groups => "groups",
        })
    }
}

/// The name of one row: `id` (an image path, or `<group>:<index>`) and its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowKey {
    pub id: String,
    pub group: String,
}

impl RowKey {
    /// A row that is its own group (an image of `embed`, a pooled slide).
    pub fn single(id: impl Into<String>) -> Self {
        let id = id.into();
        RowKey {
            group: id.clone(),
            id,
        }
    }
}

/// One feature file of a store and its region table.
#[derive(Debug, Clone, PartialEq)]
pub struct StorePart {
    pub features: PathBuf,
    pub table: PathBuf,
    /// The group of rows whose table names none (the file's stem).
    pub group: String,
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads the Parquet table `path`.
pub(crate) fn read_table(path: &Path) -> Result<DataFrame, ClassifyError> {
    let table = |reason: String| ClassifyError::ManifestTable {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| ClassifyError::Manifest {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| table(format!("not a readable Parquet table ({e})")))
}

/// Whether `df` numbers regions (`feature_row` and one of the index columns).
pub(crate) fn is_region_table(df: &DataFrame) -> bool {
    df.column("feature_row").is_ok() && INDEX_COLUMNS.iter().any(|c| df.column(c).is_ok())
}

/// The parts of the store folder `dir`, in name order.
pub fn folder_parts(dir: &Path) -> Result<Vec<StorePart>, ClassifyError> {
    let listed = |d: &Path| -> Result<Vec<PathBuf>, ClassifyError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|source| ClassifyError::ReadLabels {
                path: d.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        Ok(files)
    };
    let mut parts = Vec::new();
    let nested = dir.join("features");
    if nested.is_dir() {
        // pathology embed (tiles/) and embed --source (regions/).
        for f in listed(&nested)? {
            let s = stem(&f);
            let table = ["tiles", "regions"]
                .iter()
                .map(|t| dir.join(t).join(format!("{s}.parquet")))
                .find(|t| t.is_file())
                .ok_or_else(|| ClassifyError::ManifestTable {
                    path: f.clone(),
                    reason: format!("no region table tiles/{s}.parquet or regions/{s}.parquet"),
                })?;
            parts.push(StorePart {
                features: f,
                table,
                group: s,
            });
        }
    } else {
        // radiology embed and per-raster satellite embed: `<id>.safetensors` + `<id>.parquet`
        // (other pairs, such as radiology's pooled volumes.safetensors, number no regions).
        for f in listed(dir)? {
            let table = f.with_extension("parquet");
            if table.is_file() && is_region_table(&read_table(&table)?) {
                parts.push(StorePart {
                    group: stem(&f),
                    features: f,
                    table,
                });
            }
        }
    }
    if parts.is_empty() {
        return Err(ClassifyError::ManifestTable {
            path: dir.to_path_buf(),
            reason: "no feature files with region tables here: give a feature file of `embed`, \
                     or the output of `pathology embed`, `radiology embed`, `satellite embed` \
                     or `embed --source`"
                .into(),
        });
    }
    Ok(parts)
}

/// The key of each of the `n` feature rows of `part`, from its region table `df`.
pub(crate) fn region_keys(
    part: &StorePart,
    df: &DataFrame,
    n: usize,
) -> Result<Vec<RowKey>, ClassifyError> {
    let bad = |reason: String| ClassifyError::ManifestTable {
        path: part.table.clone(),
        reason,
    };
    let ints = |name: &str| -> Result<Vec<Option<i64>>, ClassifyError> {
        let c = df
            .column(name)
            .and_then(|c| c.cast(&DataType::Int64))
            .map_err(|e| bad(format!("`{name}`: {e}")))?;
        let c = c.i64().map_err(|e| bad(format!("`{name}`: {e}")))?;
        Ok((0..c.len()).map(|i| c.get(i)).collect())
    };
    let rows = ints("feature_row")?;
    let index_name = INDEX_COLUMNS
        .iter()
        .find(|c| df.column(c).is_ok())
        .ok_or_else(|| {
            bad(format!(
                "no region index column ({})",
                INDEX_COLUMNS.join(", ")
            ))
        })?;
    let index = ints(index_name)?;
    // A table of several rasters names each chip's raster.
    let sources: Option<Vec<Option<String>>> = df
        .column("source")
        .ok()
        .and_then(|c| c.str().ok())
        .map(|s| {
            (0..s.len())
                .map(|i| s.get(i).map(|p| stem(Path::new(p))))
                .collect()
        });
    let mut keys: Vec<Option<RowKey>> = vec![None; n];
    for (r, (row, idx)) in rows.iter().zip(&index).enumerate() {
        let (Some(row), Some(idx)) = (row, idx) else {
            return Err(bad(format!("row {r}: empty feature_row or {index_name}")));
        };
        let slot = usize::try_from(*row)
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| bad(format!("feature_row {row} outside the file's {n} rows")))?;
        let group = sources
            .as_ref()
            .and_then(|s| s[r].clone())
            .unwrap_or_else(|| part.group.clone());
        keys[slot] = Some(RowKey {
            id: format!("{group}:{idx}"),
            group,
        });
    }
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| k.ok_or_else(|| bad(format!("no row of the table for feature row {i}"))))
        .collect()
}

/// The mean of each group's rows (`x` row-major `[rows, dim]`), groups in order of first
/// appearance.
pub fn group_means(x: &[f32], dim: usize, keys: &[RowKey]) -> (Vec<f32>, Vec<RowKey>) {
    let mut order: Vec<String> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut sums: Vec<(Vec<f64>, usize)> = Vec::new();
    for (row, k) in x.chunks(dim).zip(keys) {
        let g = *at.entry(k.group.as_str()).or_insert_with(|| {
            order.push(k.group.clone());
            sums.push((vec![0.0; dim], 0));
            sums.len() - 1
        });
        let (s, count) = &mut sums[g];
        s.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
        *count += 1;
    }
    let means = sums
        .iter()
        .flat_map(|(s, count)| s.iter().map(move |v| (v / *count as f64) as f32))
        .collect();
    (means, order.into_iter().map(RowKey::single).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dinoadapt_datasets::column as col;

    #[test]
    fn units_read_in_the_fields_words() {
        for (s, u) in [
            ("tiles", Unit::Rows),
            ("slices", Unit::Rows),
            ("chips", Unit::Rows),
            ("slides", Unit::Groups),
            ("volumes", Unit::Groups),
        ] {
            assert_eq!(s.parse::<Unit>().unwrap(), u);
        }
        let err = "pixels".parse::<Unit>().unwrap_err().to_string();
        assert!(err.contains("tiles"), "{err}");
    }

    #[test]
    fn rows_are_keyed_by_group_and_region_index_in_feature_row_order() {
        let part = StorePart {
            features: "f.safetensors".into(),
            table: "f.parquet".into(),
            group: "slide".into(),
        };
        let df = DataFrame::new(
            2,
            vec![
                col::<u64>("feature_row", vec![1, 0]),
                col::<u64>("tile_index", vec![7, 3]),
            ],
        )
        .unwrap();
        assert!(is_region_table(&df));
        let keys = region_keys(&part, &df, 2).unwrap();
        assert_eq!(keys[0].id, "slide:3");
        assert_eq!(keys[1].id, "slide:7");
        assert_eq!(keys[1].group, "slide");
        let err = region_keys(&part, &df, 3).unwrap_err().to_string();
        assert!(err.contains("feature row 2"), "{err}");
        // A chips table names each chip's raster.
        let df = DataFrame::new(
            2,
            vec![
                col::<u64>("feature_row", vec![0, 1]),
                col::<u64>("region_index", vec![0, 0]),
                col::<String>("source", vec!["/d/a.tif".into(), "/d/b.tif".into()]),
            ],
        )
        .unwrap();
        let keys = region_keys(&part, &df, 2).unwrap();
        assert_eq!((keys[0].id.as_str(), keys[1].id.as_str()), ("a:0", "b:0"));
    }

    #[test]
    fn groups_pool_to_the_mean_of_their_rows() {
        let keys: Vec<RowKey> = ["a:0", "b:0", "a:1"]
            .iter()
            .map(|id| RowKey {
                id: id.to_string(),
                group: id[..1].to_string(),
            })
            .collect();
        let (x, k) = group_means(&[1.0, 2.0, 10.0, 20.0, 3.0, 4.0], 2, &keys);
        assert_eq!(x, [2.0, 3.0, 10.0, 20.0]);
        assert_eq!(k, [RowKey::single("a"), RowKey::single("b")]);
    }
}
