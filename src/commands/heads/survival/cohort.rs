//! Bags matched to the clinical table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bags::{bag_ids, bag_path, open_bag, BagFiles, Coords};
use super::clinical::{list, read_clinical, Clinical};
use super::{CohortArgs, TASK};
use crate::commands::heads::required;
use anyhow::{bail, ensure};
use dinoadapt_heads::survival::{BagSet, Bags};
use indicatif::ProgressBar;

/// Slides with their bags, in clinical table order (or bag order without a table).
pub(super) struct Cohort {
    pub(super) ids: Vec<String>,
    pub(super) set: BagSet,
    pub(super) coords: Vec<Coords>,
    /// Present when the cohort came with a clinical table.
    pub(super) clinical: Option<Clinical>,
}

/// Open the bags of `ids` in `dir` (headers and tile corners; the features are read on use);
/// every id must have one, of one dimension.
pub(super) fn load_bags(
    dir: &Path,
    ids: &[String],
    bar: &ProgressBar,
) -> anyhow::Result<(BagSet, Vec<Coords>)> {
    let paths: Vec<Option<PathBuf>> = ids.iter().map(|id| bag_path(dir, id)).collect();
    let missing: Vec<&String> = ids
        .iter()
        .zip(&paths)
        .filter(|(_, p)| p.is_none())
        .map(|(id, _)| id)
        .collect();
    ensure!(
        missing.is_empty(),
        "{}: no feature bag for slides {} (looked for features/ID.safetensors, h5/ID.h5, \
         ID.h5, ID.safetensors); embed them or drop their rows from the clinical table",
        dir.display(),
        list(&missing)
    );
    bar.set_length(ids.len() as u64);
    bar.set_message("opening bags");
    let paths: Vec<PathBuf> = paths.into_iter().flatten().collect();
    let (mut tiles, mut coords) = (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
    let mut dim: Option<(usize, &Path)> = None;
    for (id, path) in ids.iter().zip(&paths) {
        let bag = open_bag(path)?;
        ensure!(
            bag.tiles > 0 && bag.dim > 0,
            "{}: slide {id} has an empty bag",
            bag.source.display()
        );
        match dim {
            None => dim = Some((bag.dim, path)),
            Some((d, first)) => ensure!(
                bag.dim == d,
                "{} has features of dimension {}, {} of {d}: all bags must come from one model",
                bag.source.display(),
                bag.dim,
                first.display(),
            ),
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
    Ok((set, coords))
}

pub(super) fn load_cohort(
    a: &CohortArgs,
    need_table: bool,
    bar: &ProgressBar,
) -> anyhow::Result<Cohort> {
    let dir = required(&a.bags, "--bags", TASK)?;
    let clinical = match (&a.clinical, need_table) {
        (Some(p), _) => Some(read_clinical(p, a)?),
        (None, true) => bail!("--task survival needs --clinical (the table of times and events)"),
        (None, false) => None,
    };
    let ids = match &clinical {
        Some(c) => c.slide.clone(),
        None => bag_ids(dir)?,
    };
    ensure!(!ids.is_empty(), "the clinical table has no rows");
    let (set, coords) = load_bags(dir, &ids, bar)?;
    Ok(Cohort {
        ids,
        set,
        coords,
        clinical,
    })
}

// ---------------------------------------------------------------------------------------------
// The head on disk
