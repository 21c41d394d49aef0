//! dinoadapt-pretrain: pre-training runs from TOML recipes (fresh or continued from released
//! weights, or from a previous run, or distilled from one) on the core training engine, in
//! stages, with exact resume, a collapse guard, kNN monitoring and
//! metrics; and data curation (dedup, retrieval, k-means) whose manifests recipes take as data.

pub mod checkpoints;
pub mod curate;
pub mod data;
pub mod guard;
pub mod launch;
pub mod metrics;
pub mod monitor;
pub mod nodes;
pub mod recipe;
pub mod replica;
pub mod run;
pub mod stages;

pub use launch::pretrain_on;
#[cfg(feature = "collective")]
pub use nodes::run_across_processes;
pub use recipe::{Recipe, RecipeError};
#[cfg(feature = "collective")]
pub use replica::run_data_parallel;
pub use run::{run, KnnPoint, RunError, RunOptions, RunSummary};
