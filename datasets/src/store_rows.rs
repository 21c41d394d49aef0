//! The rows of a feature store, named. Besides the one file `embed` writes (safetensors + a
//! Parquet manifest of image paths), a store is any feature file whose region table (same name,
//! `.parquet`) numbers its rows by `feature_row`, or a folder of them:
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
//! (the mean, as slide- or volume-level features). Probes (`heads`) and curation (`pretrain`)
//! read stores through this module; [`region_places`] gives the level-0 place of each tile
//! where the table records it, so that a curated tile can be read back from its slide.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use polars::prelude::{DataFrame, DataType, ParquetReader, SerReader};
use serde::{Deserialize, Serialize};

/// The columns that number a region within its group, in the order they are looked for.
const INDEX_COLUMNS: [&str; 3] = ["tile_index", "slice_index", "region_index"];

/// Why the rows of a store cannot be named.
#[derive(Debug, thiserror::Error)]
pub enum StoreRowsError {
    #[error(
        "--unit `{0}`: rows (tiles, slices, chips, regions, images) or groups (slides, volumes, \
         rasters)"
    )]
    UnknownUnit(String),
    /// A table beside the features lacks what names the rows, or the folder holds no store.
    #[error("{}: {reason}", path.display())]
    Table { path: PathBuf, reason: String },
    /// The table beside a feature file cannot be opened.
    #[error("{}: the manifest beside the features", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A store folder cannot be listed.
    #[error("reading {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

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
    type Err = StoreRowsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rows" | "tiles" | "slices" | "chips" | "regions" | "images" => Ok(Unit::Rows),
            "groups" | "slides" | "volumes" | "rasters" => Ok(Unit::Groups),
            other => Err(StoreRowsError::UnknownUnit(other.to_string())),
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
pub fn read_table(path: &Path) -> Result<DataFrame, StoreRowsError> {
    let file = std::fs::File::open(path).map_err(|source| StoreRowsError::Manifest {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| StoreRowsError::Table {
            path: path.to_path_buf(),
            reason: format!("not a readable Parquet table ({e})"),
        })
}

/// Whether `df` numbers regions (`feature_row` and one of the index columns).
pub fn is_region_table(df: &DataFrame) -> bool {
    df.column("feature_row").is_ok() && INDEX_COLUMNS.iter().any(|c| df.column(c).is_ok())
}

/// The parts of the store folder `dir`, in name order.
pub fn folder_parts(dir: &Path) -> Result<Vec<StorePart>, StoreRowsError> {
    let listed = |d: &Path| -> Result<Vec<PathBuf>, StoreRowsError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|source| StoreRowsError::ReadDir {
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
                .ok_or_else(|| StoreRowsError::Table {
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
        return Err(StoreRowsError::Table {
            path: dir.to_path_buf(),
            reason: "no feature files with region tables here: give a feature file of `embed`, \
                     or the output of `pathology embed`, `radiology embed`, `satellite embed` \
                     or `embed --source`"
                .into(),
        });
    }
    Ok(parts)
}

/// The parts of the store `path`: a folder's ([`folder_parts`]), or the one feature file with
/// its table beside it (`path` with the extension `.parquet`: `embed`'s manifest or a region
/// table).
pub fn store_parts(path: &Path) -> Result<Vec<StorePart>, StoreRowsError> {
    if path.is_dir() {
        return folder_parts(path);
    }
    Ok(vec![StorePart {
        features: path.to_path_buf(),
        table: path.with_extension("parquet"),
        group: stem(path),
    }])
}

/// The key of each of the `n` feature rows of `part`, from its region table `df`.
pub fn region_keys(
    part: &StorePart,
    df: &DataFrame,
    n: usize,
) -> Result<Vec<RowKey>, StoreRowsError> {
    let bad = |reason: String| StoreRowsError::Table {
        path: part.table.clone(),
        reason,
    };
    let rows = ints(df, "feature_row", &part.table)?;
    let index_name = INDEX_COLUMNS
        .iter()
        .find(|c| df.column(c).is_ok())
        .ok_or_else(|| {
            bad(format!(
                "no region index column ({})",
                INDEX_COLUMNS.join(", ")
            ))
        })?;
    let index = ints(df, index_name, &part.table)?;
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
    let slots = feature_slots(part, &rows, n)?;
    let mut keys: Vec<Option<RowKey>> = vec![None; n];
    for (r, (slot, idx)) in slots.iter().zip(&index).enumerate() {
        let Some(idx) = idx else {
            return Err(bad(format!("row {r}: empty {index_name}")));
        };
        let group = sources
            .as_ref()
            .and_then(|s| s[r].clone())
            .unwrap_or_else(|| part.group.clone());
        keys[*slot] = Some(RowKey {
            id: format!("{group}:{idx}"),
            group,
        });
    }
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| k.ok_or_else(|| bad(format!("no row of the table for feature row {i}"))))
        .collect()
}

/// The image path of each of the `n` rows of an `embed` manifest (`index`, `path`); rows the
/// manifest does not list are named `""`.
pub fn manifest_keys(
    manifest: &Path,
    df: &DataFrame,
    n: usize,
) -> Result<Vec<RowKey>, StoreRowsError> {
    let column = |name: &str, kind: &str| StoreRowsError::Table {
        path: manifest.to_path_buf(),
        reason: format!(
            "no `{name}` column of {kind} (the manifest `embed` writes beside its features, or \
             a region table with `feature_row`)"
        ),
    };
    let index = df
        .column("index")
        .and_then(|c| c.cast(&DataType::Int64))
        .map_err(|_| column("index", "feature rows"))?;
    let index = index.i64().map_err(|_| column("index", "feature rows"))?;
    let p = df
        .column("path")
        .and_then(|c| c.str())
        .map_err(|_| column("path", "input paths"))?;
    // Feature row i is the manifest row whose `index` is i.
    let mut paths = vec![String::new(); n];
    for r in 0..df.height() {
        if let (Some(i), Some(path)) = (index.get(r), p.get(r)) {
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| paths.get_mut(i)) {
                *slot = path.to_string();
            }
        }
    }
    Ok(paths.into_iter().map(RowKey::single).collect())
}

/// The key of each of the `n` rows of `part` from its table `df`: a region table's
/// `<group>:<index>`, else the image paths of `embed`'s manifest.
pub fn row_keys(part: &StorePart, df: &DataFrame, n: usize) -> Result<Vec<RowKey>, StoreRowsError> {
    if is_region_table(df) {
        region_keys(part, df, n)
    } else {
        manifest_keys(&part.table, df, n)
    }
}

/// What the group of a region table's rows is, as a column name of tables that list rows of
/// several stores (a curated manifest): `slide` (tile tables), `volume` (slice tables), else
/// `group` (chips, `embed --source` regions); `None` when `df` numbers no regions.
pub fn group_column(df: &DataFrame) -> Option<&'static str> {
    if !is_region_table(df) {
        return None;
    }
    Some(if df.column("tile_index").is_ok() {
        "slide"
    } else if df.column("slice_index").is_ok() {
        "volume"
    } else {
        "group"
    })
}

/// Where a region lies, as its table records it (`pathology embed`'s tile tables: level-0 `x`,
/// `y`, `width`, `height` and the pyramid `level` read); `None` for what the table lacks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RegionPlace {
    pub x: Option<i64>,
    pub y: Option<i64>,
    pub width: Option<f64>,
    pub height: Option<f64>,
    pub level: Option<i64>,
}

/// The columns of [`RegionPlace`], in its order.
pub const PLACE_COLUMNS: [&str; 5] = ["x", "y", "width", "height", "level"];

/// The place of each of the `n` feature rows of `part` from its region table `df` (every field
/// `None` when the table records none of them).
pub fn region_places(
    part: &StorePart,
    df: &DataFrame,
    n: usize,
) -> Result<Vec<RegionPlace>, StoreRowsError> {
    let mut out = vec![RegionPlace::default(); n];
    if !PLACE_COLUMNS.iter().any(|c| df.column(c).is_ok()) {
        return Ok(out);
    }
    let rows = ints(df, "feature_row", &part.table)?;
    let slots = feature_slots(part, &rows, n)?;
    let optional_ints = |name: &str| -> Result<Option<Vec<Option<i64>>>, StoreRowsError> {
        match df.column(name) {
            Ok(_) => ints(df, name, &part.table).map(Some),
            Err(_) => Ok(None),
        }
    };
    let optional_floats = |name: &str| -> Result<Option<Vec<Option<f64>>>, StoreRowsError> {
        let Ok(c) = df.column(name) else {
            return Ok(None);
        };
        let bad = |e: polars::prelude::PolarsError| StoreRowsError::Table {
            path: part.table.clone(),
            reason: format!("`{name}`: {e}"),
        };
        let c = c.cast(&DataType::Float64).map_err(bad)?;
        let c = c.f64().map_err(bad)?;
        Ok(Some((0..c.len()).map(|i| c.get(i)).collect()))
    };
    let (x, y, level) = (
        optional_ints("x")?,
        optional_ints("y")?,
        optional_ints("level")?,
    );
    let (width, height) = (optional_floats("width")?, optional_floats("height")?);
    let at = |v: &Option<Vec<Option<i64>>>, r: usize| v.as_ref().and_then(|v| v[r]);
    let atf = |v: &Option<Vec<Option<f64>>>, r: usize| v.as_ref().and_then(|v| v[r]);
    for (r, slot) in slots.iter().enumerate() {
        out[*slot] = RegionPlace {
            x: at(&x, r),
            y: at(&y, r),
            width: atf(&width, r),
            height: atf(&height, r),
            level: at(&level, r),
        };
    }
    Ok(out)
}

/// The values of the integer column `name` of `df` (the table `path`).
fn ints(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<Option<i64>>, StoreRowsError> {
    let bad = |e: polars::prelude::PolarsError| StoreRowsError::Table {
        path: path.to_path_buf(),
        reason: format!("`{name}`: {e}"),
    };
    let c = df
        .column(name)
        .and_then(|c| c.cast(&DataType::Int64))
        .map_err(bad)?;
    let c = c.i64().map_err(bad)?;
    Ok((0..c.len()).map(|i| c.get(i)).collect())
}

/// The feature row of each table row (`feature_row`), checked to lie among the file's `n`.
fn feature_slots(
    part: &StorePart,
    rows: &[Option<i64>],
    n: usize,
) -> Result<Vec<usize>, StoreRowsError> {
    let bad = |reason: String| StoreRowsError::Table {
        path: part.table.clone(),
        reason,
    };
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let row = row.ok_or_else(|| bad(format!("row {r}: empty feature_row")))?;
            usize::try_from(row)
                .ok()
                .filter(|&i| i < n)
                .ok_or_else(|| bad(format!("feature_row {row} outside the file's {n} rows")))
        })
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
    use crate::column as col;

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
        assert_eq!(group_column(&df), Some("group"));
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

    #[test]
    fn tile_places_follow_the_feature_rows_and_embed_manifests_name_images() {
        let part = StorePart {
            features: "s.safetensors".into(),
            table: "s.parquet".into(),
            group: "s".into(),
        };
        let df = DataFrame::new(
            2,
            vec![
                col::<u64>("feature_row", vec![1, 0]),
                col::<u64>("tile_index", vec![5, 4]),
                col::<i64>("x", vec![100, 0]),
                col::<i64>("y", vec![20, 10]),
                col::<f64>("width", vec![56.5, 56.5]),
                col::<f64>("height", vec![56.0, 56.0]),
                col::<u32>("level", vec![1, 0]),
            ],
        )
        .unwrap();
        assert_eq!(group_column(&df), Some("slide"));
        let places = region_places(&part, &df, 2).unwrap();
        assert_eq!(
            places[0],
            RegionPlace {
                x: Some(0),
                y: Some(10),
                width: Some(56.5),
                height: Some(56.0),
                level: Some(0)
            }
        );
        assert_eq!((places[1].x, places[1].level), (Some(100), Some(1)));
        let keys = row_keys(&part, &df, 2).unwrap();
        assert_eq!((keys[0].id.as_str(), keys[1].id.as_str()), ("s:4", "s:5"));
        // A slice table records no places; an embed manifest names its images.
        let slices = DataFrame::new(
            1,
            vec![
                col::<u64>("feature_row", vec![0]),
                col::<u64>("slice_index", vec![9]),
            ],
        )
        .unwrap();
        assert_eq!(group_column(&slices), Some("volume"));
        assert_eq!(
            region_places(&part, &slices, 1).unwrap(),
            [RegionPlace::default()]
        );
        let manifest = DataFrame::new(
            2,
            vec![
                col::<u32>("index", vec![1, 0]),
                col::<String>("path", vec!["b.png".into(), "a.png".into()]),
            ],
        )
        .unwrap();
        assert_eq!(group_column(&manifest), None);
        let keys = row_keys(&part, &manifest, 3).unwrap();
        assert_eq!(
            keys,
            [
                RowKey::single("a.png"),
                RowKey::single("b.png"),
                RowKey::single("")
            ]
        );
        let err = row_keys(&part, &slices.drop("slice_index").unwrap(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `index` column"), "{err}");
    }
}
