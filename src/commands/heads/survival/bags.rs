//! Slide feature bags: `pathology embed` folders (safetensors + tile table) or CLAM / TRIDENT
//! `.h5` files.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use dinoadapt_core::checkpoint::safetensors_io::{read_tensor, tensor_entry};
use dinoadapt_heads::survival::BagReader;
use polars::prelude::{DataType, ParquetReader, SerReader};

/// Level-0 top-left x, y of each tile of a bag, when the bag records them.
pub(super) type Coords = Option<Vec<[i64; 2]>>;

/// One slide's bag file, opened without reading its features: how many tiles of which
/// dimension, and the level-0 top-left corner of each tile when the bag records it.
pub(super) struct BagHeader {
    pub(super) tiles: usize,
    pub(super) dim: usize,
    pub(super) coords: Coords,
    pub(super) source: PathBuf,
}

/// The bag file of `id` in `dir`, in the order embed output, .h5 in h5/, .h5, .safetensors.
pub(super) fn bag_path(dir: &Path, id: &str) -> Option<PathBuf> {
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
pub(super) fn bag_ids(dir: &Path) -> anyhow::Result<Vec<String>> {
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
    ensure!(
        !ids.is_empty(),
        "{}: no feature bags (features/*.safetensors from `pathology embed`, or *.h5)",
        dir.display()
    );
    Ok(ids.into_iter().collect())
}

fn is_h5(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "h5")
}

fn h5_features(path: &Path) -> anyhow::Result<(hdf5_metno::File, hdf5_metno::Dataset, usize)> {
    let f = hdf5_metno::File::open(path)
        .with_context(|| format!("{}: not a readable HDF5 file", path.display()))?;
    let ds = f.dataset("features").with_context(|| {
        format!(
            "{}: no `features` dataset (CLAM / TRIDENT bags have one)",
            path.display()
        )
    })?;
    let shape = ds.shape();
    ensure!(
        shape.len() == 2,
        "{}: `features` has shape {shape:?}, expected [tiles, dim]",
        path.display()
    );
    Ok((f, ds, shape[0]))
}

/// The header of a bag: `.h5` (`features` [N, D], optional `coords` [N, 2]) or a `pathology
/// embed` feature file (`cls` [N, D], with the tile table beside it for the corners). The
/// features themselves are read by [`read_features`] when the bag is used.
pub(super) fn open_bag(path: &Path) -> anyhow::Result<BagHeader> {
    if is_h5(path) {
        let (f, ds, tiles) = h5_features(path)?;
        let dim = ds.shape()[1];
        let coords = match f.dataset("coords") {
            Ok(c) => {
                let flat: Vec<i64> = c
                    .read_raw()
                    .with_context(|| format!("{}: reading `coords`", path.display()))?;
                ensure!(
                    flat.len() == 2 * tiles,
                    "{}: `coords` has {} values for {tiles} tiles (expected [tiles, 2])",
                    path.display(),
                    flat.len(),
                );
                Some(flat.chunks(2).map(|c| [c[0], c[1]]).collect())
            }
            Err(_) => None,
        };
        return Ok(BagHeader {
            tiles,
            dim,
            coords,
            source: path.to_path_buf(),
        });
    }
    let shape = tensor_entry(path, "cls")?
        .with_context(|| {
            format!(
                "{}: no `cls` tensor (expected the feature file of `pathology embed`)",
                path.display()
            )
        })?
        .shape;
    ensure!(
        shape.len() == 2,
        "{}: `cls` has shape {shape:?}, expected [tiles, dim]",
        path.display(),
    );
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
    })
}

/// The features of a bag [tiles, dim], row-major: `.h5` `features` or the feature file's `cls`.
pub(super) fn read_features(path: &Path) -> anyhow::Result<Vec<f32>> {
    if is_h5(path) {
        let (_, ds, _) = h5_features(path)?;
        return ds
            .read_raw()
            .with_context(|| format!("{}: reading `features`", path.display()));
    }
    Ok(read_tensor(path, "cls")?
        .with_context(|| format!("{}: no `cls` tensor", path.display()))?
        .data)
}

/// Reads each bag from its file when training or prediction uses it.
pub(super) struct BagFiles(pub(super) Vec<PathBuf>);

impl BagReader for BagFiles {
    fn read(&self, i: usize) -> Result<Vec<f32>, String> {
        read_features(&self.0[i]).map_err(|e| format!("{e:#}"))
    }
}

/// x, y of feature rows `0..n` from a `pathology embed` tile table.
pub(super) fn tile_coords(path: &Path, n: usize) -> anyhow::Result<Vec<[i64; 2]>> {
    let df = ParquetReader::new(std::fs::File::open(path)?)
        .finish()
        .with_context(|| format!("{}: not a Parquet tile table", path.display()))?;
    let get = |name: &str| -> anyhow::Result<Vec<Option<i64>>> {
        let c = df
            .column(name)
            .with_context(|| format!("{}: no `{name}` column", path.display()))?
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
    ensure!(
        seen == n,
        "{}: {seen} tiles for {n} feature rows; the tile table and the features disagree \
         (re-run `pathology embed --overwrite` for this slide)",
        path.display()
    );
    Ok(coords)
}

// ---------------------------------------------------------------------------------------------
// The clinical table
