//! A cohort: the slides' feature bags matched to the clinical table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::ProgressBar;

use super::bag_files::{bag_ids, bag_path, open_bag, BagFiles, Coords};
use super::clinical::{Clinical, ClinicalColumns};
use super::{BagSet, Bags, StudyError};
use crate::backbone::Backbone;

/// Where a cohort comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortConfig {
    /// The bags: a `pathology embed` output folder (features/ + tiles/) or a folder of CLAM /
    /// TRIDENT .h5 files (`features`, `coords`), in the folder or its `h5/`.
    pub bags: PathBuf,
    /// The clinical table, CSV or Parquet, one row per slide. Without it the cohort is every
    /// bag of the folder (enough to predict).
    pub clinical: Option<PathBuf>,
    pub columns: ClinicalColumns,
}

/// Slides with their bags, in clinical table order (or bag order without a table).
#[derive(Debug, Clone)]
pub struct Cohort {
    pub ids: Vec<String>,
    pub set: BagSet,
    pub coords: Vec<Coords>,
    /// Present when the cohort came with a clinical table.
    pub clinical: Option<Clinical>,
    /// The backbone its bags record.
    pub backbone: BagsBackbone,
}

/// The backbone a cohort's bags record, with the first bag that records it (`None` for bags
/// of other tools).
pub type BagsBackbone = Option<(Backbone, PathBuf)>;

impl Cohort {
    /// Read the clinical table (if any) and open the bags of its slides (of every bag in the
    /// folder without a table). The features stay on disk.
    pub fn load(config: &CohortConfig, bar: &ProgressBar) -> Result<Cohort, StudyError> {
        let dir = &config.bags;
        let clinical = match &config.clinical {
            Some(p) => Some(Clinical::read(p, &config.columns)?),
            None => None,
        };
        let ids = match &clinical {
            Some(c) => c.slide.clone(),
            None => bag_ids(dir)?,
        };
        if ids.is_empty() {
            return Err(StudyError::NoRows);
        }
        let (set, coords, backbone) = load_bags(dir, &ids, bar)?;
        Ok(Cohort {
            ids,
            set,
            coords,
            clinical,
            backbone,
        })
    }
}

/// Open the bags of `ids` in `dir` (headers and tile corners; the features are read on use);
/// every id must have one, of one dimension and one backbone. Returns the backbone with the
/// first bag that records it.
pub fn load_bags(
    dir: &Path,
    ids: &[String],
    bar: &ProgressBar,
) -> Result<(BagSet, Vec<Coords>, BagsBackbone), StudyError> {
    let paths: Vec<Option<PathBuf>> = ids.iter().map(|id| bag_path(dir, id)).collect();
    let missing: Vec<String> = ids
        .iter()
        .zip(&paths)
        .filter(|(_, p)| p.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    if !missing.is_empty() {
        return Err(StudyError::MissingBags {
            dir: dir.to_path_buf(),
            slides: missing,
        });
    }
    bar.set_length(ids.len() as u64);
    bar.set_message("opening bags");
    let paths: Vec<PathBuf> = paths.into_iter().flatten().collect();
    let (mut tiles, mut coords) = (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
    let mut dim: Option<(usize, &Path)> = None;
    let mut backbone: BagsBackbone = None;
    for (id, path) in ids.iter().zip(&paths) {
        let bag = open_bag(path)?;
        if bag.tiles == 0 || bag.dim == 0 {
            return Err(StudyError::EmptyBag {
                path: bag.source,
                slide: id.clone(),
            });
        }
        match dim {
            None => dim = Some((bag.dim, path)),
            Some((d, first)) if bag.dim != d => {
                return Err(StudyError::MixedDimensions {
                    path: bag.source,
                    dim: bag.dim,
                    first: first.to_path_buf(),
                    first_dim: d,
                })
            }
            Some(_) => {}
        }
        match (&backbone, bag.backbone) {
            (None, Some(b)) => backbone = Some((b, bag.source.clone())),
            (Some((first, first_path)), Some(b))
                if b.checkpoint_sha256 != first.checkpoint_sha256 =>
            {
                return Err(StudyError::MixedBackbones {
                    path: bag.source,
                    sha256: b.checkpoint_sha256,
                    first: first_path.clone(),
                    first_sha256: first.checkpoint_sha256.clone(),
                })
            }
            _ => {}
        }
        tiles.push(bag.tiles);
        coords.push(bag.coords);
        bar.inc(1);
    }
    // The features stay on disk: each bag is read when training or prediction reaches it.
    let set = BagSet {
        dim: dim.map_or(0, |(d, _)| d),
        bags: Bags::Files {
            tiles,
            reader: Arc::new(BagFiles(paths)),
        },
        covariates: Vec::new(),
    };
    Ok((set, coords, backbone))
}
