//! Batches of slides (the list: `dinoadapt_pathology::slide_list`): sharding over a Slurm array,
//! one status file per finished slide (written last, atomically) so a rerun skips what
//! finished and redoes what was cut off, and the manifest merged from every status file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::write_parquet;
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, Series};
use serde::{Deserialize, Serialize};

pub use dinoadapt_pathology::slide_list::{collect_slides, SlideEntry};

/// Slide `k` belongs to shard `index` of `count` when `k % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `--shard i/n`, else a Slurm array (`SLURM_ARRAY_TASK_ID` relative to
    /// `SLURM_ARRAY_TASK_MIN`, over `SLURM_ARRAY_TASK_COUNT`), else everything.
    pub fn resolve(flag: Option<&str>) -> anyhow::Result<Shard> {
        if let Some(s) = flag {
            let (i, n) = s
                .split_once('/')
                .with_context(|| format!("--shard `{s}`: expected i/n, e.g. 0/4"))?;
            let (index, count): (usize, usize) = (i.trim().parse()?, n.trim().parse()?);
            if count == 0 || index >= count {
                bail!("--shard {s}: needs 0 <= i < n");
            }
            return Ok(Shard { index, count });
        }
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        if let (Some(id), Some(count)) = (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT"))
        {
            let index = id - var("SLURM_ARRAY_TASK_MIN").unwrap_or(0).min(id);
            if count > 0 && index < count {
                return Ok(Shard { index, count });
            }
        }
        Ok(Shard { index: 0, count: 1 })
    }

    pub fn select(self, slides: Vec<SlideEntry>) -> Vec<SlideEntry> {
        slides
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, s)| s)
            .collect()
    }
}

/// What happened to one slide (`status/<slide_id>.json`, the last thing written for it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlideStatus {
    pub slide_id: String,
    /// "done" or "failed".
    pub status: String,
    /// The last stage run: "tissue", "tile" or "embed".
    #[serde(default)]
    pub stage: String,
    pub error: String,
    pub format: String,
    pub mpp: Option<f64>,
    pub mpp_source: String,
    pub width: u64,
    pub height: u64,
    pub tiles: u64,
    pub tissue_fraction: f64,
    pub seconds: f64,
    /// Files written for the slide, relative to the output folder.
    pub outputs: Vec<String>,
}

pub fn status_path(out: &Path, slide_id: &str) -> PathBuf {
    out.join("status").join(format!("{slide_id}.json"))
}

/// The stages in order.
pub const STAGES: [&str; 3] = ["tissue", "tile", "embed"];

/// True when the slide finished `stage` (or a later one) in an earlier run and its outputs are
/// all there.
pub fn finished(out: &Path, slide_id: &str, stage: &str) -> bool {
    let rank = |s: &str| STAGES.iter().position(|x| *x == s);
    std::fs::read_to_string(status_path(out, slide_id))
        .ok()
        .and_then(|t| serde_json::from_str::<SlideStatus>(&t).ok())
        .is_some_and(|s| {
            s.status == "done"
                && rank(&s.stage) >= rank(stage)
                && s.outputs.iter().all(|o| out.join(o).is_file())
        })
}

pub fn write_status(out: &Path, s: &SlideStatus) -> anyhow::Result<()> {
    let path = status_path(out, &s.slide_id);
    std::fs::create_dir_all(path.parent().expect("status folder"))?;
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(s)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// `manifest.parquet` from every status file in `out/status` (all shards so far).
pub fn write_manifest(out: &Path) -> anyhow::Result<(PathBuf, Vec<SlideStatus>)> {
    let mut rows: Vec<SlideStatus> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(out.join("status")) {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Ok(s) = serde_json::from_str::<SlideStatus>(&std::fs::read_to_string(&p)?) {
                    rows.push(s);
                }
            }
        }
    }
    rows.sort_by(|a, b| a.slide_id.cmp(&b.slide_id));
    let s = |g: fn(&SlideStatus) -> &String| rows.iter().map(|r| g(r).clone()).collect::<Vec<_>>();
    let mut df = DataFrame::new(
        rows.len(),
        vec![
            col::<String>("slide_id", s(|r| &r.slide_id)),
            col::<String>("status", s(|r| &r.status)),
            col::<String>("stage", s(|r| &r.stage)),
            col::<String>("error", s(|r| &r.error)),
            col::<String>("format", s(|r| &r.format)),
            Series::new("mpp".into(), rows.iter().map(|r| r.mpp).collect::<Vec<_>>()).into_column(),
            col::<String>("mpp_source", s(|r| &r.mpp_source)),
            col::<u64>("width", rows.iter().map(|r| r.width).collect()),
            col::<u64>("height", rows.iter().map(|r| r.height).collect()),
            col::<u64>("tiles", rows.iter().map(|r| r.tiles).collect()),
            col::<f64>(
                "tissue_fraction",
                rows.iter().map(|r| r.tissue_fraction).collect(),
            ),
            col::<f64>("seconds", rows.iter().map(|r| r.seconds).collect()),
            col::<String>(
                "outputs",
                rows.iter().map(|r| r.outputs.join(";")).collect(),
            ),
        ],
    )?;
    let path = out.join("manifest.parquet");
    write_parquet(&path, &mut df)?;
    Ok((path, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<SlideEntry> {
        (0..n)
            .map(|i| SlideEntry {
                path: PathBuf::from(format!("s{i}.svs")),
                slide_id: format!("s{i}"),
                mpp: None,
            })
            .collect()
    }

    #[test]
    fn shards_partition_the_slides() {
        let all: Vec<String> = (0..3)
            .flat_map(|i| Shard { index: i, count: 3 }.select(entries(10)))
            .map(|s| s.slide_id)
            .collect();
        assert_eq!(all.len(), 10);
        assert_eq!(
            Shard::resolve(Some("1/4")).unwrap(),
            Shard { index: 1, count: 4 }
        );
        assert!(Shard::resolve(Some("4/4")).is_err());
        assert!(Shard::resolve(Some("x")).is_err());
    }

    #[test]
    fn a_finished_slide_needs_its_status_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut s = SlideStatus {
            slide_id: "A".into(),
            status: "done".into(),
            stage: "tile".into(),
            outputs: vec!["tiles/A.parquet".into()],
            ..Default::default()
        };
        write_status(out, &s).unwrap();
        assert!(!finished(out, "A", "tile"), "the output is missing");
        std::fs::create_dir_all(out.join("tiles")).unwrap();
        std::fs::write(out.join("tiles/A.parquet"), b"x").unwrap();
        assert!(finished(out, "A", "tile"));
        assert!(finished(out, "A", "tissue"));
        assert!(
            !finished(out, "A", "embed"),
            "a later stage is not finished"
        );
        s.status = "failed".into();
        write_status(out, &s).unwrap();
        assert!(!finished(out, "A", "tile"));
        let (_, rows) = write_manifest(out).unwrap();
        assert_eq!(rows.len(), 1);
    }
}
