//! Batch runs over many inputs (slides, volumes, rasters): the share of the inputs one process
//! takes (`--shard i/n`, or a Slurm array), one status file per item, written last and
//! atomically, so that a rerun skips what finished and redoes what was cut off, and the runner
//! ([`run_batch`]) that pathology, radiology and satellite batches share.
//!
//! # Exit status
//! One rule for every batch command ([`BatchRun::exit_code`]): `0` when at least one item of
//! this process's share finished (now or in an earlier run) or there was nothing to do; failed
//! items are rows of the manifest and counted on stderr. [`ALL_FAILED`] (`3`) when every item
//! attempted failed, so that a Slurm job or a pipeline sees a batch that produced nothing.
//! [`STOPPED`] (`4`) when a `--strict` batch ([`BatchConfig::strict`]) stopped at its first
//! failed item. (The program exits `2` when a batch cannot start at all: bad arguments,
//! unwritable folder.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dinoadapt_core::io::write_atomically;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a batch could not be set up or recorded.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("--shard `{0}`: expected i/n, e.g. 0/4")]
    ShardSyntax(String),
    #[error("--shard {0}: needs 0 <= i < n")]
    ShardRange(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "two items of the batch share the id `{0}` (their outputs would overwrite each other)"
    )]
    DuplicateId(String),
    #[error("writing the manifest: {0}")]
    Manifest(String),
}

/// Item `k` belongs to shard `index` of `count` when `k % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `--shard i/n`, else a Slurm array (`SLURM_ARRAY_TASK_ID` relative to
    /// `SLURM_ARRAY_TASK_MIN`, over `SLURM_ARRAY_TASK_COUNT`), else everything.
    pub fn resolve(flag: Option<&str>) -> Result<Shard, BatchError> {
        if let Some(s) = flag {
            let syntax = || BatchError::ShardSyntax(s.to_string());
            let (i, n) = s.split_once('/').ok_or_else(syntax)?;
            let index: usize = i.trim().parse().map_err(|_| syntax())?;
            let count: usize = n.trim().parse().map_err(|_| syntax())?;
            if count == 0 || index >= count {
                return Err(BatchError::ShardRange(s.to_string()));
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

    /// This shard's items, in their order.
    pub fn select<T>(self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, s)| s)
            .collect()
    }
}

/// The status files of a batch's output folder: `out/status/<id>.json`, one per item.
#[derive(Debug, Clone)]
pub struct StatusFiles {
    out: PathBuf,
}

impl StatusFiles {
    pub fn new(out: &Path) -> Self {
        StatusFiles {
            out: out.to_path_buf(),
        }
    }

    /// Where item `id`'s status is.
    pub fn path(&self, id: &str) -> PathBuf {
        self.out.join("status").join(format!("{id}.json"))
    }

    /// Item `id`'s status from an earlier run, if it has a readable one.
    pub fn read<S: DeserializeOwned>(&self, id: &str) -> Option<S> {
        std::fs::read_to_string(self.path(id))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Write item `id`'s status atomically (temp file + rename): the last thing written for it.
    pub fn write<S: Serialize>(&self, id: &str, status: &S) -> Result<(), BatchError> {
        let path = self.path(id);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BatchError::Io { path, source }
        };
        let text = serde_json::to_string_pretty(status).map_err(|source| BatchError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomically(&path, |w| w.write_all(text.as_bytes())).map_err(io(&path))
    }

    /// Every readable status in the folder (all shards so far), in file-name order.
    pub fn read_all<S: DeserializeOwned>(&self) -> Result<Vec<S>, BatchError> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(self.out.join("status")) {
            Ok(dir) => dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => return Ok(Vec::new()),
        };
        paths.sort();
        let mut rows = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|source| BatchError::Io {
                path: p.clone(),
                source,
            })?;
            if let Ok(s) = serde_json::from_str::<S>(&text) {
                rows.push(s);
            }
        }
        Ok(rows)
    }
}

/// The exit status of a batch in which every item attempted failed.
pub const ALL_FAILED: u8 = 3;

/// The exit status of a strict batch that stopped at a failed item.
pub const STOPPED: u8 = 4;

/// How one process runs its share of a batch.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The output folder (status files under `status/`).
    pub out: PathBuf,
    /// This process's share of the items.
    pub shard: Shard,
    /// Write `status/<id>.json` for each item, last (needed to resume and to join shards).
    pub statuses: bool,
    /// Skip items whose status from an earlier run says they finished and whose outputs are
    /// all there (needs `statuses`).
    pub resume: bool,
    /// Stop at the first item that fails (its status and the manifest are still written), for
    /// pipelines that prefer no output to a partial one.
    pub strict: bool,
}

/// One kind of work over a batch's items: what an item is called, how it is done, and its
/// status, which is also its row (or rows) of the batch's manifest.
pub trait BatchJob {
    type Item;
    /// What happened to one item: saved as `status/<id>.json`, read back on resume and when
    /// the shards are joined.
    type Status: Serialize + DeserializeOwned;
    type Error: std::fmt::Display;

    /// The item's id: the name of its status file, unique within the batch.
    fn id(&self, item: &Self::Item) -> String;
    /// Do the item: its status, or why it could not be done.
    fn run(&mut self, item: &Self::Item) -> Result<Self::Status, Self::Error>;
    /// The status of an item whose [`run`](Self::run) failed.
    fn failed(&self, item: &Self::Item, error: &Self::Error) -> Self::Status;
    /// Whether the status is of a finished item (else it counts as failed); on resume, a
    /// finished item whose outputs are all there is skipped.
    fn finished(&self, status: &Self::Status) -> bool;
    /// Files written for the item, relative to the output folder.
    fn outputs(&self, status: &Self::Status) -> Vec<String>;
    /// Write the batch's manifest from the statuses of every item that has one (this run's,
    /// earlier runs', other shards'), in item order; its path.
    fn write_manifest(&mut self, statuses: &[&Self::Status]) -> Result<PathBuf, Self::Error>;
    /// The batch's run report (`report.html` in the output folder, written after the
    /// manifest): its title and sections, or `None` for batches that write none. The runner
    /// adds the counts, the timing and the manifest.
    fn report(&self) -> Option<crate::report::Report> {
        None
    }
    /// The input file of an item, hashed in the report (never named there).
    fn item_path(&self, _item: &Self::Item) -> Option<PathBuf> {
        None
    }
}

/// What one process did with its share of a batch.
#[derive(Debug, Clone)]
pub struct BatchRun<S> {
    pub shard: Shard,
    /// Items of the share done now.
    pub done: usize,
    /// Items of the share an earlier run finished.
    pub skipped: usize,
    /// Items of the share that failed now.
    pub failed: usize,
    /// The status of every item of the whole batch (all shards), in item order: this run's,
    /// else the one on disk, else none yet.
    pub statuses: Vec<Option<S>>,
    /// The manifest written.
    pub manifest: PathBuf,
    /// A strict batch stopped at a failed item; the items after it were not attempted.
    pub stopped: bool,
}

impl<S> BatchRun<S> {
    /// True when items were attempted and every one of them failed.
    pub fn all_failed(&self) -> bool {
        self.failed > 0 && self.done == 0 && self.skipped == 0
    }

    /// The batch's exit status (see the [module docs](self)): [`STOPPED`] when a strict batch
    /// stopped, [`ALL_FAILED`] when every item attempted failed, else success.
    pub fn exit_code(&self) -> ExitCode {
        if self.stopped {
            ExitCode::from(STOPPED)
        } else if self.all_failed() {
            ExitCode::from(ALL_FAILED)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Run `job` over this process's share of `items` (all of the batch, in a fixed order that
/// every shard sees alike): skip on resume what an earlier run finished, do the rest one by one,
/// write each item's status last, then the manifest of every item with a status.
/// `progress` hears `start(share, unit)` and the number of items handled after each.
pub fn run_batch<J: BatchJob>(
    cfg: &BatchConfig,
    items: &[J::Item],
    job: &mut J,
    unit: &str,
    progress: &mut dyn crate::embedding::Progress,
) -> Result<BatchRun<J::Status>, BatchError> {
    let ids: Vec<String> = items.iter().map(|i| job.id(i)).collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(BatchError::DuplicateId(dup.clone()));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|source| BatchError::Io {
        path: cfg.out.clone(),
        source,
    })?;
    let files = StatusFiles::new(&cfg.out);
    let started = std::time::Instant::now();
    let share = cfg.shard.select((0..items.len()).collect());
    let mut statuses: Vec<Option<J::Status>> = (0..items.len()).map(|_| None).collect();
    let (mut done, mut skipped, mut failed) = (0, 0, 0);
    let mut stopped = false;
    progress.start(share.len(), unit);
    for (n, &k) in share.iter().enumerate() {
        let earlier = if cfg.resume {
            files.read::<J::Status>(&ids[k]).filter(|s| {
                job.finished(s) && job.outputs(s).iter().all(|o| cfg.out.join(o).is_file())
            })
        } else {
            None
        };
        let status = match earlier {
            Some(s) => {
                skipped += 1;
                s
            }
            None => {
                let s = match job.run(&items[k]) {
                    Ok(s) => s,
                    Err(e) => job.failed(&items[k], &e),
                };
                if job.finished(&s) {
                    done += 1;
                } else {
                    failed += 1;
                }
                if cfg.statuses {
                    files.write(&ids[k], &s)?;
                }
                s
            }
        };
        statuses[k] = Some(status);
        progress.set(n + 1);
        if cfg.strict && failed > 0 {
            stopped = true;
            break;
        }
    }
    progress.finish();
    if cfg.statuses {
        for (k, id) in ids.iter().enumerate() {
            if statuses[k].is_none() {
                statuses[k] = files.read(id);
            }
        }
    }
    let present: Vec<&J::Status> = statuses.iter().flatten().collect();
    let manifest = job
        .write_manifest(&present)
        .map_err(|e| BatchError::Manifest(e.to_string()))?;
    if let Some(report) = job.report() {
        let secs = started.elapsed().as_secs_f64();
        let inputs: Vec<PathBuf> = share
            .iter()
            .filter_map(|&k| job.item_path(&items[k]))
            .collect();
        report
            .inputs(&inputs)
            .fact(format!("{unit} (this shard)"), share.len())
            .fact(
                "done now / earlier / failed",
                format!("{done} / {skipped} / {failed}"),
            )
            .fact("seconds", format!("{secs:.1}"))
            .fact(
                format!("{unit} per second"),
                format!("{:.3}", done as f64 / secs.max(1e-9)),
            )
            .section(crate::report::Section::new("Manifest").parquet("every item", &manifest))
            .write(&cfg.out.join("report.html"))
            .map_err(|e| BatchError::Manifest(e.to_string()))?;
    }
    Ok(BatchRun {
        shard: cfg.shard,
        done,
        skipped,
        failed,
        statuses,
        manifest,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_items() {
        let all: Vec<usize> = (0..3)
            .flat_map(|i| Shard { index: i, count: 3 }.select((0..10).collect()))
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
    fn statuses_are_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = StatusFiles::new(dir.path());
        files.write("b", &serde_json::json!({"id": "b"})).unwrap();
        files.write("a", &serde_json::json!({"id": "a"})).unwrap();
        std::fs::write(files.path("broken"), "{").unwrap();
        let all: Vec<serde_json::Value> = files.read_all().unwrap();
        assert_eq!(
            all,
            vec![
                serde_json::json!({"id": "a"}),
                serde_json::json!({"id": "b"})
            ]
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("status"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["a.json", "b.json", "broken.json"]);
        assert_eq!(files.read::<serde_json::Value>("a").unwrap()["id"], "a");
        assert!(files.read::<serde_json::Value>("missing").is_none());
    }
}

#[cfg(test)]
mod runner_tests {
    use super::*;
    use crate::embedding::Silent;
    use serde::Deserialize;

    /// Items are numbers; odd ones fail; each done item writes `out/<n>.txt`.
    struct Numbers {
        out: PathBuf,
        runs: Vec<u32>,
        manifests: usize,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        n: u32,
        ok: bool,
        outputs: Vec<String>,
    }

    impl BatchJob for Numbers {
        type Item = u32;
        type Status = Row;
        type Error = String;

        fn id(&self, item: &u32) -> String {
            format!("n{item}")
        }
        fn run(&mut self, item: &u32) -> Result<Row, String> {
            self.runs.push(*item);
            if item % 2 == 1 {
                return Err(format!("{item} is odd"));
            }
            let name = format!("{item}.txt");
            std::fs::write(self.out.join(&name), item.to_string()).unwrap();
            Ok(Row {
                n: *item,
                ok: true,
                outputs: vec![name],
            })
        }
        fn failed(&self, item: &u32, _: &String) -> Row {
            Row {
                n: *item,
                ok: false,
                outputs: vec![],
            }
        }
        fn finished(&self, s: &Row) -> bool {
            s.ok
        }
        fn outputs(&self, s: &Row) -> Vec<String> {
            s.outputs.clone()
        }
        fn write_manifest(&mut self, statuses: &[&Row]) -> Result<PathBuf, String> {
            self.manifests = statuses.len();
            Ok(self.out.join("manifest"))
        }
    }

    fn config(out: &Path, shard: Shard, resume: bool) -> BatchConfig {
        BatchConfig {
            out: out.to_path_buf(),
            shard,
            statuses: true,
            resume,
            strict: false,
        }
    }

    fn job(out: &Path) -> Numbers {
        Numbers {
            out: out.to_path_buf(),
            runs: vec![],
            manifests: 0,
        }
    }

    #[test]
    fn a_strict_batch_stops_at_its_first_failed_item() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut j = job(out);
        let cfg = BatchConfig {
            strict: true,
            ..config(out, Shard { index: 0, count: 1 }, false)
        };
        let run = run_batch(&cfg, &[0, 2, 3, 4], &mut j, "numbers", &mut Silent).unwrap();
        assert_eq!(j.runs, [0, 2, 3], "4 comes after the failure");
        assert!(run.stopped);
        assert_eq!((run.done, run.failed), (2, 1));
        assert_eq!(run.exit_code(), ExitCode::from(STOPPED));
        assert_eq!(j.manifests, 3, "the manifest has the items attempted");
    }

    #[test]
    fn shards_join_and_a_resumed_run_redoes_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let items = [0, 1, 2, 3, 4];
        let mut j = job(out);
        let run = run_batch(
            &config(out, Shard { index: 0, count: 2 }, false),
            &items,
            &mut j,
            "numbers",
            &mut Silent,
        )
        .unwrap();
        assert_eq!(j.runs, [0, 2, 4]);
        assert_eq!((run.done, run.skipped, run.failed), (3, 0, 0));
        assert_eq!(j.manifests, 3, "only this shard's items have statuses yet");
        let mut j = job(out);
        let run = run_batch(
            &config(out, Shard { index: 1, count: 2 }, false),
            &items,
            &mut j,
            "numbers",
            &mut Silent,
        )
        .unwrap();
        assert_eq!(j.runs, [1, 3]);
        assert!(run.all_failed());
        assert_eq!(run.exit_code(), ExitCode::from(ALL_FAILED));
        assert_eq!(j.manifests, 5, "the shards are joined");
        let joined: Vec<u32> = run.statuses.iter().flatten().map(|s| s.n).collect();
        assert_eq!(joined, items, "in item order");

        // Resume: item 2 lost its output, the odd ones failed: those are redone.
        std::fs::remove_file(out.join("2.txt")).unwrap();
        let mut j = job(out);
        let run = run_batch(
            &config(out, Shard { index: 0, count: 1 }, true),
            &items,
            &mut j,
            "numbers",
            &mut Silent,
        )
        .unwrap();
        assert_eq!(j.runs, [1, 2, 3]);
        assert_eq!((run.done, run.skipped, run.failed), (1, 2, 2));
        assert_eq!(run.exit_code(), ExitCode::SUCCESS);
    }

    #[test]
    fn without_statuses_nothing_is_recorded_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut cfg = config(out, Shard { index: 0, count: 1 }, false);
        cfg.statuses = false;
        let run = run_batch(&cfg, &[2, 4], &mut job(out), "numbers", &mut Silent).unwrap();
        assert_eq!(run.done, 2);
        assert!(!out.join("status").exists());
        let dup = run_batch(&cfg, &[2, 2], &mut job(out), "numbers", &mut Silent);
        assert!(matches!(dup, Err(BatchError::DuplicateId(id)) if id == "n2"));
        let empty = run_batch(&cfg, &[], &mut job(out), "numbers", &mut Silent).unwrap();
        assert_eq!(
            empty.exit_code(),
            ExitCode::SUCCESS,
            "nothing to do is no failure"
        );
    }
}
