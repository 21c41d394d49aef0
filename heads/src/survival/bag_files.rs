//! Slide feature bags on disk: `pathology embed` folders (`features/{id}.safetensors` tensor
//! `cls` [N, D], with `tiles/{id}.parquet` giving each feature row's level-0 x, y) or CLAM /
//! TRIDENT `.h5` files (`features` [N, D], `coords` [N, 2]).

use std::path::{Path, PathBuf};

use std::collections::HashMap;

use dinoadapt_core::checkpoint::safetensors_io::{read_metadata, read_tensor, tensor_entry};
use hdf5_metno::types::VarLenUnicode;
use polars::prelude::{DataType, ParquetReader, SerReader};

use super::error::chain;
use super::{BagReader, StudyError};
use crate::backbone::Backbone;

/// Level-0 top-left x, y of each tile of a bag, when the bag records them.
pub type Coords = Option<Vec<[i64; 2]>>;

/// One slide's bag file, opened without reading its features: how many tiles of which
/// dimension, and the level-0 top-left corner of each tile when the bag records it.
#[derive(Debug, Clone, PartialEq)]
pub struct BagHeader {
    pub tiles: usize,
    pub dim: usize,
    pub coords: Coords,
    pub source: PathBuf,
    /// The backbone the bag records (its provenance); `None` for bags of other tools.
    pub backbone: Option<Backbone>,
}

/// The bag file of `id` in `dir`, in the order embed output, .h5 in h5/, .h5, .safetensors.
pub fn bag_path(dir: &Path, id: &str) -> Option<PathBuf> {
    [
        dir.join("features").join(format!("{id}.safetensors")),
        dir.join("h5").join(format!("{id}.h5")),
        dir.join(format!("{id}.h5")),
        dir.join(format!("{id}.safetensors")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The slide ids of every bag in `dir` (sorted).
pub fn bag_ids(dir: &Path) -> Result<Vec<String>, StudyError> {
    let mut ids = std::collections::BTreeSet::new();
    for (sub, ext) in [
        ("features", "safetensors"),
        ("h5", "h5"),
        ("", "h5"),
        ("", "safetensors"),
    ] {
        let d = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() && p.extension().is_some_and(|x| x == ext) {
                if let Some(stem) = p.file_stem() {
                    ids.insert(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    if ids.is_empty() {
        return Err(StudyError::NoBags {
            dir: dir.to_path_buf(),
        });
    }
    Ok(ids.into_iter().collect())
}

fn is_h5(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "h5")
}

fn bag_error(path: &Path, what: String) -> StudyError {
    StudyError::Bag {
        path: path.to_path_buf(),
        what,
    }
}

fn h5_error(path: &Path, what: &'static str) -> impl FnOnce(hdf5_metno::Error) -> StudyError {
    let path = path.to_path_buf();
    move |source| StudyError::H5 { path, what, source }
}

fn h5_features(path: &Path) -> Result<(hdf5_metno::File, hdf5_metno::Dataset, usize), StudyError> {
    let f = hdf5_metno::File::open(path).map_err(h5_error(path, "not a readable HDF5 file"))?;
    let ds = f.dataset("features").map_err(h5_error(
        path,
        "no `features` dataset (CLAM / TRIDENT bags have one)",
    ))?;
    let shape = ds.shape();
    if shape.len() != 2 {
        return Err(bag_error(
            path,
            format!("`features` has shape {shape:?}, expected [tiles, dim]"),
        ));
    }
    Ok((f, ds, shape[0]))
}

/// The header of a bag: `.h5` (`features` [N, D], optional `coords` [N, 2]) or a `pathology
/// embed` feature file (`cls` [N, D], with the tile table beside it for the corners). The
/// features themselves are read by [`read_features`] when the bag is used.
pub fn open_bag(path: &Path) -> Result<BagHeader, StudyError> {
    if is_h5(path) {
        let (f, ds, tiles) = h5_features(path)?;
        let dim = ds.shape()[1];
        let coords = match f.dataset("coords") {
            Ok(c) => {
                let flat: Vec<i64> = c.read_raw().map_err(h5_error(path, "reading `coords`"))?;
                if flat.len() != 2 * tiles {
                    return Err(bag_error(
                        path,
                        format!(
                            "`coords` has {} values for {tiles} tiles (expected [tiles, 2])",
                            flat.len()
                        ),
                    ));
                }
                Some(flat.chunks(2).map(|c| [c[0], c[1]]).collect())
            }
            Err(_) => None,
        };
        // The provenance as file attributes (`pathology embed --h5`); other tools write none.
        let attrs: HashMap<String, String> =
            ["model", "checkpoint_sha256", "layout", "architecture"]
                .into_iter()
                .filter_map(|k| {
                    let v = f.attr(k).ok()?.read_scalar::<VarLenUnicode>().ok()?;
                    Some((k.to_string(), v.as_str().to_string()))
                })
                .collect();
        return Ok(BagHeader {
            tiles,
            dim,
            coords,
            source: path.to_path_buf(),
            backbone: Backbone::from_metadata(&attrs),
        });
    }
    let shape = tensor_entry(path, "cls")?
        .ok_or_else(|| {
            bag_error(
                path,
                "no `cls` tensor (expected the feature file of `pathology embed`)".into(),
            )
        })?
        .shape;
    if shape.len() != 2 {
        return Err(bag_error(
            path,
            format!("`cls` has shape {shape:?}, expected [tiles, dim]"),
        ));
    }
    let (tiles, dim) = (shape[0], shape[1]);
    // features/{id}.safetensors -> tiles/{id}.parquet: row `feature_row` has the tile's x, y.
    let table = path
        .parent()
        .and_then(Path::parent)
        .zip(path.file_stem())
        .map(|(root, stem)| {
            root.join("tiles")
                .join(format!("{}.parquet", stem.to_string_lossy()))
        })
        .filter(|p| p.is_file());
    let coords = match table {
        Some(t) => Some(tile_coords(&t, tiles)?),
        None => None,
    };
    Ok(BagHeader {
        tiles,
        dim,
        coords,
        source: path.to_path_buf(),
        backbone: Backbone::from_metadata(&read_metadata(path)?),
    })
}

/// The features of a bag [tiles, dim], row-major: `.h5` `features` or the feature file's `cls`.
pub fn read_features(path: &Path) -> Result<Vec<f32>, StudyError> {
    if is_h5(path) {
        let (_, ds, _) = h5_features(path)?;
        return ds.read_raw().map_err(h5_error(path, "reading `features`"));
    }
    Ok(read_tensor(path, "cls")?
        .ok_or_else(|| bag_error(path, "no `cls` tensor".into()))?
        .data)
}

/// Reads each bag from its file when training or prediction uses it.
pub struct BagFiles(pub Vec<PathBuf>);

impl BagReader for BagFiles {
    fn read(&self, i: usize) -> Result<Vec<f32>, String> {
        read_features(&self.0[i]).map_err(|e| chain(&e))
    }
}

/// x, y of feature rows `0..n` from a `pathology embed` tile table.
pub fn tile_coords(path: &Path, n: usize) -> Result<Vec<[i64; 2]>, StudyError> {
    let table_error = |what: String| {
        let path = path.to_path_buf();
        move |source| StudyError::TileTable { path, what, source }
    };
    let df = ParquetReader::new(std::fs::File::open(path)?)
        .finish()
        .map_err(table_error("not a Parquet tile table".into()))?;
    let get = |name: &str| -> Result<Vec<Option<i64>>, StudyError> {
        let c = df
            .column(name)
            .map_err(table_error(format!("no `{name}` column")))?
            .cast(&DataType::Int64)?;
        let ca = c.i64()?;
        Ok((0..df.height()).map(|i| ca.get(i)).collect())
    };
    let (row, x, y) = (get("feature_row")?, get("x")?, get("y")?);
    let mut coords = vec![[-1i64; 2]; n];
    let mut seen = 0;
    for ((r, x), y) in row.iter().zip(&x).zip(&y) {
        if let (Some(r), Some(x), Some(y)) = (r, x, y) {
            if (*r as usize) < n {
                coords[*r as usize] = [*x, *y];
                seen += 1;
            }
        }
    }
    if seen != n {
        return Err(StudyError::TileRows {
            path: path.to_path_buf(),
            seen,
            rows: n,
        });
    }
    Ok(coords)
}
