//! The flags every batch command shares (`--shard`, `--resume`, `--overwrite`), turned into the
//! runner's `BatchConfig`, and the runner's progress bar and summary line.

use std::path::Path;

use clap::Args;
use dinoadapt_datasets::batch::{BatchConfig, BatchRun, Shard};

/// How a batch command splits its items among processes and treats an earlier run's.
#[derive(Args, Debug, Clone, Default)]
pub struct ShardArgs {
    /// Process shard i of n (`0/4`: items 0, 4, 8, ... of the batch); default:
    /// SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT of a Slurm array job, else everything.
    #[arg(long)]
    pub shard: Option<String>,
    /// Skip items an earlier run finished (their status file says so and their outputs are
    /// there) and redo the rest. Always on for `pathology`.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Redo items an earlier run finished (the default, except for `pathology`).
    #[arg(long)]
    pub overwrite: bool,
    /// Stop at the first item that fails (exit status 4) instead of going on with the rest.
    #[arg(long)]
    pub strict: bool,
}

/// Whether a command resumes unless told `--overwrite` (pathology) or only with `--resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeDefault {
    Resume,
    Overwrite,
}

impl ShardArgs {
    /// This process's shard (the flag, else a Slurm array, else the whole batch).
    pub fn shard(&self) -> anyhow::Result<Shard> {
        Ok(Shard::resolve(self.shard.as_deref())?)
    }

    /// True when this run keeps a status per item: always for a command that resumes by
    /// default (a later run may resume even after `--overwrite`), else when it shards or
    /// resumes.
    pub fn keeps_statuses(&self, default: ResumeDefault) -> anyhow::Result<bool> {
        Ok(default == ResumeDefault::Resume || self.resumes(default) || self.shard()?.count > 1)
    }

    fn resumes(&self, default: ResumeDefault) -> bool {
        match default {
            ResumeDefault::Resume => !self.overwrite,
            ResumeDefault::Overwrite => self.resume,
        }
    }

    /// The runner's settings for the output folder `out`.
    pub fn config(&self, out: &Path, default: ResumeDefault) -> anyhow::Result<BatchConfig> {
        Ok(BatchConfig {
            out: out.to_path_buf(),
            shard: self.shard()?,
            statuses: self.keeps_statuses(default)?,
            resume: self.resumes(default),
            strict: self.strict,
        })
    }
}

/// One line on stderr: what this process did with its share.
pub fn print_summary<S>(what: &str, unit: &str, run: &BatchRun<S>) {
    eprintln!(
        "{what}: {} {unit} done, {} already finished, {} failed (shard {}/{}) -> {}",
        run.done,
        run.skipped,
        run.failed,
        run.shard.index,
        run.shard.count,
        run.manifest.display()
    );
    if run.stopped {
        eprintln!(
            "{what}: --strict: stopped at the first failed {} (exit status {})",
            unit.trim_end_matches('s'),
            dinoadapt_datasets::batch::STOPPED
        );
    } else if run.all_failed() {
        eprintln!(
            "{what}: every {} attempted failed (exit status {})",
            unit.trim_end_matches('s'),
            dinoadapt_datasets::batch::ALL_FAILED
        );
    }
}
