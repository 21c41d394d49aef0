//! Batches of slides: the list (`dinoadapt_pathology::slide_list`), the shard and the status
//! files (`dinoadapt_datasets::batch`), each slide's status and the manifest merged from every
//! status file.

use std::path::{Path, PathBuf};

use dinoadapt_datasets::column as col;
use dinoadapt_datasets::write_parquet;
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, Series};
use serde::{Deserialize, Serialize};

pub use dinoadapt_datasets::batch::Shard;
use dinoadapt_datasets::batch::StatusFiles;
pub use dinoadapt_pathology::slide_list::{collect_slides, SlideEntry};

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

/// The stages in order.
pub const STAGES: [&str; 3] = ["tissue", "tile", "embed"];

/// True when the slide finished `stage` (or a later one) in an earlier run and its outputs are
/// all there.
pub fn finished(out: &Path, slide_id: &str, stage: &str) -> bool {
    let rank = |s: &str| STAGES.iter().position(|x| *x == s);
    StatusFiles::new(out)
        .read::<SlideStatus>(slide_id)
        .is_some_and(|s| {
            s.status == "done"
                && rank(&s.stage) >= rank(stage)
                && s.outputs.iter().all(|o| out.join(o).is_file())
        })
}

pub fn write_status(out: &Path, s: &SlideStatus) -> anyhow::Result<()> {
    Ok(StatusFiles::new(out).write(&s.slide_id, s)?)
}

/// `manifest.parquet` from every status file in `out/status` (all shards so far).
pub fn write_manifest(out: &Path) -> anyhow::Result<(PathBuf, Vec<SlideStatus>)> {
    let mut rows: Vec<SlideStatus> = StatusFiles::new(out).read_all()?;
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
