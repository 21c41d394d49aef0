//! The `.h5` feature bag CLAM / TRIDENT-style MIL code reads: `features` [N, D] float32 and
//! `coords` [N, 2] int64 (level-0 top-left x, y of each tile), with the tiling recorded as
//! attributes of `coords` (as CLAM does) and the provenance as file attributes.

use std::path::{Path, PathBuf};

use dinoadapt_core::io::{persist, temp_file_beside};
use hdf5_metno::types::VarLenUnicode;

/// Why a bag could not be written.
#[derive(Debug, thiserror::Error)]
pub enum H5BagError {
    #[error("{values} feature values for {tiles} tiles of dimension {dim}")]
    Shape {
        values: usize,
        tiles: usize,
        dim: usize,
    },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        source: hdf5_metno::Error,
    },
    #[error(transparent)]
    Hdf5(#[from] hdf5_metno::Error),
    #[error("attribute {name}: {message}")]
    Attribute { name: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Attributes of `coords` (CLAM's names where it has one).
#[derive(Debug, Clone)]
pub struct TileAttrs {
    /// Tile side at the target resolution (px).
    pub patch_size: u64,
    /// Tile side in level-0 pixels.
    pub patch_size_level0: f64,
    pub target_mpp: f64,
    pub slide_mpp: f64,
    pub level0_width: u64,
    pub level0_height: u64,
}

/// Write `features` ([n, dim]) and `coords` ([n, 2]) to `path` through a temp file + rename.
pub fn write_bag(
    path: &Path,
    features: &[f32],
    dim: usize,
    coords: &[[i64; 2]],
    tiles: &TileAttrs,
    file_attrs: &[(&str, String)],
) -> Result<(), H5BagError> {
    let n = coords.len();
    if features.len() != n * dim {
        return Err(H5BagError::Shape {
            values: features.len(),
            tiles: n,
            dim,
        });
    }
    let write_err = |source| H5BagError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = temp_file_beside(path).map_err(write_err)?;
    {
        let f = hdf5_metno::File::create(tmp.path()).map_err(|source| H5BagError::Create {
            path: tmp.path().to_path_buf(),
            source,
        })?;
        f.new_dataset::<f32>()
            .shape((n, dim))
            .create("features")?
            .write_raw(features)?;
        let flat: Vec<i64> = coords.iter().flat_map(|c| c.iter().copied()).collect();
        let c = f.new_dataset::<i64>().shape((n, 2)).create("coords")?;
        c.write_raw(&flat)?;
        c.new_attr::<u64>()
            .create("patch_size")?
            .write_scalar(&tiles.patch_size)?;
        c.new_attr::<f64>()
            .create("patch_size_level0")?
            .write_scalar(&tiles.patch_size_level0)?;
        c.new_attr::<u64>()
            .create("patch_level")?
            .write_scalar(&0u64)?;
        c.new_attr::<f64>()
            .create("target_mpp")?
            .write_scalar(&tiles.target_mpp)?;
        c.new_attr::<f64>()
            .create("slide_mpp")?
            .write_scalar(&tiles.slide_mpp)?;
        c.new_attr::<u64>()
            .create("level_dim_x")?
            .write_scalar(&tiles.level0_width)?;
        c.new_attr::<u64>()
            .create("level_dim_y")?
            .write_scalar(&tiles.level0_height)?;
        for (k, v) in file_attrs {
            let v: VarLenUnicode = v.parse().map_err(|e| H5BagError::Attribute {
                name: k.to_string(),
                message: format!("{e:?}"),
            })?;
            f.new_attr::<VarLenUnicode>().create(*k)?.write_scalar(&v)?;
        }
    }
    persist(tmp, path).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_features_coords_and_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slide.h5");
        let attrs = TileAttrs {
            patch_size: 224,
            patch_size_level0: 224.9,
            target_mpp: 0.5,
            slide_mpp: 0.499,
            level0_width: 2220,
            level0_height: 2967,
        };
        let features: Vec<f32> = (0..6).map(|x| x as f32).collect();
        write_bag(
            &path,
            &features,
            3,
            &[[0, 0], [224, 448]],
            &attrs,
            &[("slide_id", "s1".into())],
        )
        .unwrap();
        let f = hdf5_metno::File::open(&path).unwrap();
        let feats: Vec<f32> = f.dataset("features").unwrap().read_raw().unwrap();
        assert_eq!(feats, features);
        let coords = f.dataset("coords").unwrap();
        assert_eq!(coords.shape(), vec![2, 2]);
        assert_eq!(coords.read_raw::<i64>().unwrap(), vec![0, 0, 224, 448]);
        let ps: u64 = coords.attr("patch_size").unwrap().read_scalar().unwrap();
        assert_eq!(ps, 224);
        let id: VarLenUnicode = f.attr("slide_id").unwrap().read_scalar().unwrap();
        assert_eq!(id.as_str(), "s1");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
