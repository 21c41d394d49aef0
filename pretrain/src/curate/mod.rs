//! Curation of a pool of embeddings, the LVD-142M way: drop near duplicates and items too close
//! to an evaluation set, then either retrieve each seed's nearest pool items (with a k-means
//! cluster fallback for seeds with too few close neighbours) or sample evenly over a hierarchical
//! k-means. The result is a Parquet manifest, one row per pool item, that pre-training recipes
//! take as their data (`data.manifest`).
//!
//! The pool (and the seed and evaluation sets) is any feature store
//! ([`dinoadapt_datasets::store_rows`]): a file `embed` wrote, whose manifest names each row by
//! its image path, or a feature file with its region table, or a domain embed's folder (its
//! files' rows end to end, in the folder's order), whose rows are named `<group>:<index>`
//! (`slide:12`); the manifest then also names each row's group (`slide`, `volume`, `group`) and,
//! where the region table records them, its level-0 place (`x`, `y`, `width`, `height`,
//! `level`), so that the kept tiles can be read back from their slides.

pub mod kmeans;
pub mod rows;
pub mod search;
pub mod select;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dinoadapt_datasets::plot::{histogram_png, PlotError};
use dinoadapt_datasets::store_rows::{
    group_column, read_table as read_store_table, region_places, row_keys, store_parts,
    PLACE_COLUMNS,
};
use dinoadapt_datasets::{write_parquet, ManifestError, RegionPlace, StoreRowsError};
use polars::prelude::{Column, DataFrame, IntoColumn, NamedFrom, Series};
use serde::Serialize;

use kmeans::{assign, kmeans, KMeans};
use rows::{RowsError, StoreRows};
use search::{search, search_chunked, InMemory, Metric, RowBlocks};
use select::{balanced_sample, contaminated, duplicates, retrieve, Retrieved};

#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    #[error(transparent)]
    Rows(#[from] RowsError),
    #[error(transparent)]
    Store(#[from] StoreRowsError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error("{path}: cannot read the manifest: {reason}")]
    ReadManifest { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
}

/// What is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// DINOv2 retrieval: `neighbours` per seed above `floor`; `clusters` > 0 enables the k-means
    /// fallback for seeds left short.
    Retrieval {
        neighbours: usize,
        floor: f32,
        clusters: usize,
    },
    /// Hierarchical k-means (cluster counts per level) and `budget` rows sampled evenly across it.
    Hierarchical { levels: Vec<usize>, budget: usize },
    /// Only deduplication and decontamination.
    DedupOnly,
}

/// Settings of a curation run.
#[derive(Debug, Clone, PartialEq)]
pub struct CurateConfig {
    pub metric: Metric,
    /// Pool rows closer than this to another row are near duplicates (`None`: no dedup).
    pub dedup_threshold: Option<f32>,
    /// Neighbours looked at per row for dedup.
    pub dedup_neighbours: usize,
    /// Pool rows closer than this to an evaluation row are removed.
    pub eval_threshold: f32,
    pub mode: Mode,
    pub kmeans_iterations: usize,
    pub seed: u64,
    /// Pool rows read and multiplied at a time.
    pub block_rows: usize,
    /// Tensor name in the feature files.
    pub key: String,
}

/// One pool row of the curated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct CurateRecord {
    pub index: u32,
    pub path: String,
    pub kept: bool,
    pub reason: String,
    /// The similarity (or distance) behind the decision; NaN when none.
    pub similarity: f64,
    /// The seed row it was retrieved for, or -1.
    pub seed: i64,
    /// Its cluster (top level), or -1.
    pub cluster: i64,
    /// For a row of a region store: the column naming its group (`slide`, `volume`, `group`)
    /// and the group.
    pub group: Option<(&'static str, String)>,
    /// Where the region lies, as far as its region table records it.
    pub place: RegionPlace,
}

/// Summary statistics of a run.
#[derive(Debug, Clone, Serialize)]
pub struct CurateSummary {
    pub pool: usize,
    pub dim: usize,
    pub metric: Metric,
    pub duplicates_removed: usize,
    pub duplicate_groups: usize,
    pub contaminated_removed: usize,
    pub seeds: usize,
    pub kept: usize,
    pub collision_rate: Option<f64>,
    pub fallback_seeds: Option<usize>,
    pub kmeans_inertia: Option<f64>,
}

/// The records, the summary and the nearest-neighbour scores of the pool (for the histogram).
pub struct Curated {
    pub records: Vec<CurateRecord>,
    pub summary: CurateSummary,
    pub nearest: Vec<f32>,
}

/// A Parquet table, with errors that name the file.
fn read_table(path: &Path) -> Result<DataFrame, CurateError> {
    use dinoadapt_datasets::ManifestError;
    dinoadapt_datasets::manifest::read_parquet(path).map_err(|e| CurateError::ReadManifest {
        path: path.to_path_buf(),
        reason: match e {
            ManifestError::Read { reason, .. } | ManifestError::Write { reason, .. } => reason,
        },
    })
}

/// The name of a pool row in the manifest: its id (an image path, or `<group>:<index>`), its
/// group and its place.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowName {
    pub path: String,
    pub group: Option<(&'static str, String)>,
    pub place: RegionPlace,
}

/// The feature files of the store `path` as one matrix of rows (tensor `key`), and with
/// `named` the name of each row: a region table's `<group>:<index>` with the group and the
/// region's place, else the image paths of `embed`'s manifest (empty when a lone feature file
/// has none beside it).
pub fn open_store(
    path: &Path,
    key: &str,
    named: bool,
) -> Result<(StoreRows, Vec<RowName>), CurateError> {
    let parts = store_parts(path)?;
    let files: Vec<PathBuf> = parts.iter().map(|p| p.features.clone()).collect();
    let rows = StoreRows::open(&files, key)?;
    let mut names = Vec::new();
    if !named {
        return Ok((rows, names));
    }
    for (part, (_, n)) in parts.iter().zip(rows.files()) {
        if !part.table.is_file() && parts.len() == 1 {
            names.extend(std::iter::repeat_n(RowName::default(), n));
            continue;
        }
        let df = read_store_table(&part.table)?;
        let keys = row_keys(part, &df, n)?;
        let (group, places) = match group_column(&df) {
            Some(c) => (Some(c), region_places(part, &df, n)?),
            None => (None, vec![RegionPlace::default(); n]),
        };
        names.extend(keys.into_iter().zip(places).map(|(k, place)| RowName {
            path: k.id,
            group: group.map(|c| (c, k.group)),
            place,
        }));
    }
    Ok((rows, names))
}

/// Query rows read at a time for the pool's self-search and decontamination.
const QUERY_CHUNK: usize = 65536;

/// Some rows of a store (ascending indices), read on demand: what hierarchical k-means
/// clusters at each level without copying the members.
struct Subset<'a> {
    rows: &'a mut StoreRows,
    members: &'a [usize],
}

impl RowBlocks for Subset<'_> {
    fn rows(&self) -> usize {
        self.members.len()
    }

    fn dim(&self) -> usize {
        self.rows.dim
    }

    fn block(&mut self, start: usize, count: usize) -> Result<Vec<f32>, RowsError> {
        let end = (start + count).min(self.members.len());
        let mut out = Vec::with_capacity(end.saturating_sub(start) * self.rows.dim);
        let mut i = start;
        while i < end {
            // One read per run of consecutive rows.
            let mut j = i + 1;
            while j < end && self.members[j] == self.members[j - 1] + 1 {
                j += 1;
            }
            out.extend(self.rows.read(self.members[i], j - i)?);
            i = j;
        }
        Ok(out)
    }
}

/// Curate the pool in `pool` (a feature store: a file, or a domain embed's folder), against the
/// `seeds` and `eval` stores.
pub fn curate<B: Backend>(
    pool_path: &Path,
    seeds_path: Option<&Path>,
    eval_path: Option<&Path>,
    cfg: &CurateConfig,
    device: &B::Device,
    progress: &mut dyn FnMut(&str),
) -> Result<Curated, CurateError> {
    let (mut pool, names) = open_store(pool_path, &cfg.key, true)?;
    let (n, dim) = (pool.rows, pool.dim);
    let read_all = |p: &Path| -> Result<Vec<f32>, CurateError> {
        let (mut r, _) = open_store(p, &cfg.key, false)?;
        if r.dim != dim {
            return Err(CurateError::Config(format!(
                "{}: features have {} dimensions, the pool {dim}",
                p.display(),
                r.dim
            )));
        }
        Ok(r.read_all()?)
    };
    let mut removed: Vec<Option<(String, f64)>> = vec![None; n];

    // Near duplicates: a self-search of the pool, streamed on both sides (the pool never has
    // to fit in memory: QUERY_CHUNK query rows and one pool block at a time).
    progress("near-duplicate search");
    let (mut queries, _) = open_store(pool_path, &cfg.key, false)?;
    let k = cfg.dedup_neighbours.max(1);
    let self_knn = search_chunked::<B>(
        &mut queries,
        &mut pool,
        k,
        cfg.metric,
        cfg.block_rows,
        QUERY_CHUNK,
        true,
        device,
        &mut |_| {},
    )?;
    let nearest: Vec<f32> = (0..n)
        .map(|i| self_knn.row(i).next().map_or(f32::NAN, |x| x.1))
        .collect();
    let (mut duplicates_removed, mut groups) = (0, std::collections::HashSet::new());
    if let Some(t) = cfg.dedup_threshold {
        for (i, d) in duplicates(&self_knn, t).into_iter().enumerate() {
            if let Some((keep, s)) = d {
                removed[i] = Some((format!("duplicate of {keep}"), s as f64));
                duplicates_removed += 1;
                groups.insert(keep);
            }
        }
    }

    // Decontamination.
    let mut contaminated_removed = 0;
    if let Some(e) = eval_path {
        progress("decontamination");
        let eval = read_all(e)?;
        let knn = search_chunked::<B>(
            &mut queries,
            &mut InMemory { data: &eval, dim },
            1,
            cfg.metric,
            cfg.block_rows,
            QUERY_CHUNK,
            false,
            device,
            &mut |_| {},
        )?;
        for (i, c) in contaminated(&knn, cfg.eval_threshold)
            .into_iter()
            .enumerate()
        {
            if let (Some((j, s)), None) = (c, &removed[i]) {
                removed[i] = Some((format!("near evaluation item {j}"), s as f64));
                contaminated_removed += 1;
            }
        }
    }
    let eligible: Vec<bool> = removed.iter().map(Option::is_none).collect();

    let mut records: Vec<CurateRecord> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| CurateRecord {
            index: i as u32,
            path: name.path,
            kept: false,
            reason: String::new(),
            similarity: f64::NAN,
            seed: -1,
            cluster: -1,
            group: name.group,
            place: name.place,
        })
        .collect();
    let mut summary = CurateSummary {
        pool: n,
        dim,
        metric: cfg.metric,
        duplicates_removed,
        duplicate_groups: groups.len(),
        contaminated_removed,
        seeds: 0,
        kept: 0,
        collision_rate: None,
        fallback_seeds: None,
        kmeans_inertia: None,
    };
    let fit = |rows: &mut dyn RowBlocks, k: usize, seed: u64| -> Result<KMeans, CurateError> {
        Ok(kmeans::<B>(
            rows,
            k,
            cfg.kmeans_iterations,
            cfg.metric,
            seed,
            cfg.block_rows,
            device,
            &mut |_| {},
        )?)
    };

    match &cfg.mode {
        Mode::DedupOnly => {
            for (r, e) in records.iter_mut().zip(&eligible) {
                r.kept = *e;
            }
        }
        Mode::Retrieval {
            neighbours,
            floor,
            clusters,
        } => {
            let seeds_path = seeds_path.ok_or_else(|| {
                CurateError::Config("retrieval needs --seeds (the curated seed set)".into())
            })?;
            progress("retrieval");
            let seeds = read_all(seeds_path)?;
            summary.seeds = seeds.len() / dim;
            // Look further than `neighbours` so removed rows can be skipped.
            let knn = search::<B>(
                &seeds,
                &mut pool,
                neighbours * 4 + k,
                cfg.metric,
                cfg.block_rows,
                false,
                device,
                &mut |_| {},
            )?;
            let km = if *clusters > 0 {
                progress("k-means");
                Some(fit(&mut pool, *clusters, cfg.seed)?)
            } else {
                None
            };
            let seed_clusters = match &km {
                Some(km) => Some(
                    assign::<B>(
                        &mut InMemory { data: &seeds, dim },
                        &km.centroids,
                        cfg.metric,
                        cfg.block_rows,
                        device,
                    )?
                    .0
                    .into_iter()
                    .map(|c| c as usize)
                    .collect::<Vec<_>>(),
                ),
                None => None,
            };
            let r = retrieve(
                &knn,
                &eligible,
                *neighbours,
                *floor,
                seed_clusters.as_deref(),
                km.as_ref().map(|k| (&k.assignments[..], &k.distances[..])),
            );
            summary.collision_rate = Some(r.collision_rate);
            summary.fallback_seeds = Some(r.fallback_seeds);
            summary.kmeans_inertia = km.as_ref().map(|k| k.inertia);
            for (i, why) in r.kept.into_iter().enumerate() {
                let rec = &mut records[i];
                if let Some(km) = &km {
                    rec.cluster = km.assignments[i] as i64;
                }
                match why {
                    Some(Retrieved::Neighbour { seed, score }) => {
                        rec.kept = true;
                        rec.reason = format!("retrieved for seed {seed}");
                        rec.similarity = score as f64;
                        rec.seed = seed as i64;
                    }
                    Some(Retrieved::ClusterFallback { seed, cluster }) => {
                        rec.kept = true;
                        rec.reason = format!("cluster {cluster} fallback for seed {seed}");
                        rec.seed = seed as i64;
                    }
                    None => {}
                }
            }
        }
        Mode::Hierarchical { levels, budget } => {
            progress("hierarchical k-means");
            let rows: Vec<usize> = (0..n).filter(|i| eligible[*i]).collect();
            let mut cluster_paths: Vec<Vec<u32>> = vec![Vec::new(); n];
            let mut leaf_dist = vec![0f32; n];
            // Level by level: cluster the members of every cluster of the level above.
            let mut parents: Vec<Vec<usize>> = vec![rows.clone()];
            for (level, &k) in levels.iter().enumerate() {
                let mut next = Vec::new();
                for (g, members) in parents.iter().enumerate() {
                    if members.is_empty() {
                        continue;
                    }
                    let km = fit(
                        &mut Subset {
                            rows: &mut pool,
                            members,
                        },
                        k.min(members.len()),
                        cfg.seed + (level * 7919 + g) as u64,
                    )?;
                    if level == 0 {
                        summary.kmeans_inertia = Some(km.inertia);
                    }
                    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
                    for (m, &r) in members.iter().enumerate() {
                        cluster_paths[r].push(km.assignments[m]);
                        leaf_dist[r] = km.distances[m];
                        children.entry(km.assignments[m]).or_default().push(r);
                    }
                    let mut children: Vec<(u32, Vec<usize>)> = children.into_iter().collect();
                    children.sort_by_key(|(c, _)| *c);
                    next.extend(children.into_iter().map(|(_, v)| v));
                }
                parents = next;
            }
            let sub_paths: Vec<Vec<u32>> = rows.iter().map(|&r| cluster_paths[r].clone()).collect();
            let sub_dist: Vec<f32> = rows.iter().map(|&r| leaf_dist[r]).collect();
            let chosen = balanced_sample(&sub_paths, &sub_dist, *budget);
            for (j, &r) in rows.iter().enumerate() {
                let rec = &mut records[r];
                rec.cluster = cluster_paths[r].first().map_or(-1, |c| *c as i64);
                let path: Vec<String> = cluster_paths[r].iter().map(|c| c.to_string()).collect();
                if chosen[j] {
                    rec.kept = true;
                    rec.reason = format!("sampled from cluster {}", path.join("/"));
                    rec.similarity = sub_dist[j] as f64;
                } else {
                    rec.reason = format!("not sampled from cluster {}", path.join("/"));
                }
            }
        }
    }
    for (rec, rm) in records.iter_mut().zip(removed) {
        if let Some((reason, s)) = rm {
            rec.kept = false;
            rec.reason = reason;
            rec.similarity = s;
        } else if !rec.kept && rec.reason.is_empty() {
            rec.reason = "not retrieved".into();
        }
    }
    summary.kept = records.iter().filter(|r| r.kept).count();
    Ok(Curated {
        records,
        summary,
        nearest,
    })
}

fn column<T>(name: &str, values: Vec<T>) -> Column
where
    Series: NamedFrom<Vec<T>, [T]>,
{
    Series::new(name.into(), values).into_column()
}

/// The curated manifest as a table: `index, path, kept, reason, similarity, seed, cluster`, then
/// for rows of region stores their group's column (`slide`, `volume`, `group`) and the place
/// columns their tables record (`x`, `y`, `width`, `height`, `level`).
pub fn to_frame(records: &[CurateRecord]) -> DataFrame {
    let get = |f: fn(&CurateRecord) -> String| records.iter().map(f).collect::<Vec<String>>();
    let mut columns = vec![
        column(
            "index",
            records.iter().map(|r| r.index).collect::<Vec<u32>>(),
        ),
        column("path", get(|r| r.path.clone())),
        column(
            "kept",
            records.iter().map(|r| r.kept).collect::<Vec<bool>>(),
        ),
        column("reason", get(|r| r.reason.clone())),
        column(
            "similarity",
            records.iter().map(|r| r.similarity).collect::<Vec<f64>>(),
        ),
        column("seed", records.iter().map(|r| r.seed).collect::<Vec<i64>>()),
        column(
            "cluster",
            records.iter().map(|r| r.cluster).collect::<Vec<i64>>(),
        ),
    ];
    let mut groups: Vec<&'static str> = Vec::new();
    for &(name, _) in records.iter().filter_map(|r| r.group.as_ref()) {
        if !groups.contains(&name) {
            groups.push(name);
        }
    }
    for name in groups {
        let values: Vec<Option<String>> = records
            .iter()
            .map(|r| {
                r.group
                    .as_ref()
                    .filter(|g| g.0 == name)
                    .map(|g| g.1.clone())
            })
            .collect();
        columns.push(column(name, values));
    }
    let ints = |f: fn(&RegionPlace) -> Option<i64>| -> Vec<Option<i64>> {
        records.iter().map(|r| f(&r.place)).collect()
    };
    let floats = |f: fn(&RegionPlace) -> Option<f64>| -> Vec<Option<f64>> {
        records.iter().map(|r| f(&r.place)).collect()
    };
    let place = [
        column(PLACE_COLUMNS[0], ints(|p| p.x)),
        column(PLACE_COLUMNS[1], ints(|p| p.y)),
        column(PLACE_COLUMNS[2], floats(|p| p.width)),
        column(PLACE_COLUMNS[3], floats(|p| p.height)),
        column(PLACE_COLUMNS[4], ints(|p| p.level)),
    ];
    // Only the columns some row has a value of.
    columns.extend(place.into_iter().filter(|c| c.null_count() < c.len()));
    DataFrame::new(records.len(), columns).expect("columns have one length")
}

/// Write the manifest (Parquet), the histogram of nearest-neighbour scores (PNG) and the run
/// report (`<manifest>.report.html`).
pub fn write_outputs(
    out: &Path,
    curated: &Curated,
    cfg: &CurateConfig,
) -> Result<PathBuf, CurateError> {
    write_parquet(out, &mut to_frame(&curated.records))?;
    let png = out.with_extension("png");
    let values: Vec<f64> = curated.nearest.iter().map(|v| *v as f64).collect();
    let mut markers = Vec::new();
    if let Some(t) = cfg.dedup_threshold {
        markers.push(("dedup threshold".to_string(), t as f64));
    }
    if let Mode::Retrieval { floor, .. } = cfg.mode {
        markers.push(("retrieval floor".to_string(), floor as f64));
    }
    let x = match cfg.metric {
        Metric::Cosine => "cosine similarity to the nearest other pool item",
        Metric::L2 => "squared distance to the nearest other pool item",
    };
    histogram_png(
        &png,
        "Pool nearest-neighbour similarity",
        x,
        &values,
        50,
        &markers,
    )?;
    // The run report beside the manifest: the summary's figures, the histogram, the reasons.
    let mut report = dinoadapt_datasets::report::Report::new("curate");
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&curated.summary) {
        for (k, v) in m.into_iter().filter(|(_, v)| !v.is_null()) {
            report = report.fact(k, v);
        }
    }
    let reasons = to_frame(&curated.records)
        .column("reason")
        .ok()
        .and_then(|c| {
            use polars::prelude::SeriesMethods;
            c.as_materialized_series()
                .value_counts(true, false, "rows".into(), false)
                .ok()
        });
    let mut section = dinoadapt_datasets::report::Section::new("Curation")
        .image("nearest-neighbour similarities", &png);
    if let Some(df) = reasons {
        section = section.table("rows by reason (kept rows have none)", df);
    }
    let page = out.with_extension("report.html");
    report
        .section(section)
        .write(&page)
        .map_err(|e| CurateError::ReadManifest {
            path: page.clone(),
            reason: e.to_string(),
        })?;
    Ok(png)
}

/// Paths of the kept rows of a curated manifest (what pre-training recipes read).
pub fn kept_paths(manifest: &Path) -> Result<Vec<PathBuf>, CurateError> {
    let err = |reason: String| CurateError::ReadManifest {
        path: manifest.to_path_buf(),
        reason,
    };
    let df = read_table(manifest)?;
    if let Some(c) = ["slide", "volume", "group"]
        .into_iter()
        .find(|c| df.column(c).is_ok())
    {
        return Err(err(format!(
            "its rows are regions of a feature store (`path` is `<{c}>:<index>`), not image \
             files; curated slide tiles feed pre-training through `[data.source] domain = \
             \"pathology\"` with `tiles = ...`"
        )));
    }
    let kept = df.column("kept").map_err(|e| err(e.to_string()))?;
    let kept = kept.bool().map_err(|e| err(e.to_string()))?;
    let path = df.column("path").map_err(|e| err(e.to_string()))?;
    let path = path.str().map_err(|e| err(e.to_string()))?;
    let out: Vec<PathBuf> = (0..df.height())
        .filter(|i| kept.get(*i) == Some(true))
        .filter_map(|i| path.get(i).filter(|p| !p.is_empty()).map(PathBuf::from))
        .collect();
    if out.is_empty() {
        return Err(err("no kept rows with a path".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use dinoadapt_datasets::{column as col, FeatureWriter};

    /// A `pathology embed`-like folder: `features/<id>.safetensors` + `tiles/<id>.parquet`.
    fn slide_store(dir: &Path, id: &str, rows: &[[f32; 3]], x0: i64) {
        for sub in ["features", "tiles"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let features = dir.join(format!("features/{id}.safetensors"));
        let mut w = FeatureWriter::create(
            &features,
            &[("cls".into(), vec![rows.len(), 3])],
            &Default::default(),
        )
        .unwrap();
        for r in rows {
            w.append("cls", r).unwrap();
        }
        w.finish().unwrap();
        let n = rows.len() as u64;
        let mut df = DataFrame::new(
            rows.len(),
            vec![
                col::<u64>("feature_row", (0..n).collect()),
                col::<u64>("tile_index", (0..n).map(|i| 10 + i).collect()),
                col::<i64>("x", (0..n as i64).map(|i| x0 + 56 * i).collect()),
                col::<i64>("y", vec![7; rows.len()]),
                col::<f64>("width", vec![56.5; rows.len()]),
                col::<f64>("height", vec![56.5; rows.len()]),
                col::<u32>("level", vec![0; rows.len()]),
            ],
        )
        .unwrap();
        write_parquet(&dir.join(format!("tiles/{id}.parquet")), &mut df).unwrap();
    }

    #[test]
    fn a_folder_pool_is_its_files_end_to_end_named_by_slide_and_tile() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("embed");
        slide_store(
            &store,
            "a",
            &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            0,
        );
        // b's first row repeats a's second; its second is new.
        slide_store(&store, "b", &[[0.0, 1.0, 0.0], [1.0, 1.0, -1.0]], 1000);
        let cfg = CurateConfig {
            metric: Metric::Cosine,
            dedup_threshold: Some(0.999),
            dedup_neighbours: 2,
            eval_threshold: 0.95,
            mode: Mode::DedupOnly,
            kmeans_iterations: 2,
            seed: 0,
            // Blocks that span the two files.
            block_rows: 2,
            key: "cls".into(),
        };
        let c = curate::<Flex>(&store, None, None, &cfg, &Default::default(), &mut |_| {}).unwrap();
        assert_eq!(c.summary.pool, 5);
        let paths: Vec<&str> = c.records.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["a:10", "a:11", "a:12", "b:10", "b:11"]);
        assert_eq!(c.records[3].reason, "duplicate of 1");
        assert_eq!(c.summary.kept, 4);
        assert_eq!(c.records[4].group, Some(("slide", "b".to_string())));
        assert_eq!(c.records[4].place.x, Some(1056));
        assert_eq!(c.records[4].place.width, Some(56.5));

        let out = dir.path().join("curated.parquet");
        write_outputs(&out, &c, &cfg).unwrap();
        let df = read_table(&out).unwrap();
        let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "index",
                "path",
                "kept",
                "reason",
                "similarity",
                "seed",
                "cluster",
                "slide",
                "x",
                "y",
                "width",
                "height",
                "level"
            ]
        );
        // Tile ids are no image paths: `data.manifest` refuses them and says what takes them.
        let err = kept_paths(&out).unwrap_err().to_string();
        assert!(err.contains("tiles = "), "{err}");

        // The seed and evaluation sets may be folders too: the pool against itself as the
        // evaluation set removes every row.
        let cfg = CurateConfig {
            dedup_threshold: None,
            eval_threshold: 0.999,
            ..cfg
        };
        let c = curate::<Flex>(
            &store,
            None,
            Some(&store),
            &cfg,
            &Default::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!((c.summary.contaminated_removed, c.summary.kept), (5, 0));
    }

    #[test]
    fn a_lone_embed_file_keeps_its_image_paths_and_its_columns() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pool.safetensors");
        let mut w =
            FeatureWriter::create(&f, &[("cls".into(), vec![2, 2])], &Default::default()).unwrap();
        w.append("cls", &[1.0, 0.0, 0.0, 1.0]).unwrap();
        w.finish().unwrap();
        // Without a manifest beside it the rows have no paths.
        let (rows, names) = open_store(&f, "cls", true).unwrap();
        assert_eq!((rows.rows, names.len()), (2, 2));
        assert_eq!(names[0], RowName::default());
        let mut m = DataFrame::new(
            2,
            vec![
                col::<u32>("index", vec![0, 1]),
                col::<String>("path", vec!["x/a.png".into(), "x/b.png".into()]),
            ],
        )
        .unwrap();
        write_parquet(&f.with_extension("parquet"), &mut m).unwrap();
        let (_, names) = open_store(&f, "cls", true).unwrap();
        assert_eq!(
            (names[1].path.as_str(), &names[1].group),
            ("x/b.png", &None)
        );
        let records: Vec<CurateRecord> = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| CurateRecord {
                index: i as u32,
                path: n.path,
                kept: true,
                reason: String::new(),
                similarity: f64::NAN,
                seed: -1,
                cluster: -1,
                group: n.group,
                place: n.place,
            })
            .collect();
        assert_eq!(to_frame(&records).width(), 7);
    }
}
