//! `dinoadapt embed --source RECIPE.toml --out DIR`: the inputs of a recipe's `[data.source]`
//! table (any registered domain), embedded by the domain's region sources on a regular grid,
//! as a batch (`--shard`, `--resume`): `features/<id>.safetensors`, `regions/<id>.parquet`,
//! `status/<input>.json` and `manifest.parquet`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_datasets::embedding::{EmbedSettings, InputsBatch, RegionEmbedder, Silent};
use dinoadapt_datasets::{find_domain, run_batch, EmbeddingInputs, SourceOptions};
use dinoadapt_pretrain::recipe::DataSource;

use crate::batch_args::{print_summary, ResumeDefault, ShardArgs};
use crate::device::DevicesJob;
use crate::progress::Bar;

/// The inputs of the `[data.source]` table of `recipe` (a recipe, or any TOML file with that
/// table), as its domain lists them (the seed of random sampling plays no part); the domain's
/// name.
pub fn source_inputs(
    recipe: &Path,
    out: &Path,
) -> anyhow::Result<(Box<dyn EmbeddingInputs>, &'static str)> {
    let source = DataSource::load(recipe)?;
    let domain = find_domain(&crate::domains::all(), &source.domain)?;
    let options = SourceOptions {
        options: serde_json::to_value(&source.options)?,
        base: &source.base,
        seed: 0,
        scratch: out,
    };
    match domain.embedding_inputs(&options) {
        Some(inputs) => Ok((inputs?, domain.name())),
        None => anyhow::bail!(
            "[data.source] domain `{}` has nothing to embed",
            source.domain
        ),
    }
}

/// The embedding of a domain's inputs on one or more devices.
pub struct SourceEmbedJob {
    pub ck: LoadedCheckpoint,
    pub settings: EmbedSettings,
    pub inputs: Box<dyn EmbeddingInputs>,
    pub domain: &'static str,
    pub out: PathBuf,
    pub shards: ShardArgs,
    pub quiet: bool,
}

impl DevicesJob for SourceEmbedJob {
    type Output = ExitCode;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> anyhow::Result<ExitCode> {
        let cfg = self.shards.config(&self.out, ResumeDefault::Overwrite)?;
        let embedder = RegionEmbedder::<B>::on_devices(&self.ck, devices, self.settings)?;
        let mut bar = Bar::new("embed", self.quiet);
        let mut job = InputsBatch {
            inputs: &*self.inputs,
            embedder: &embedder,
            out: self.out.clone(),
            progress: &mut bar,
        };
        let items = self.inputs.inputs().to_vec();
        let run = run_batch(&cfg, &items, &mut job, "inputs", &mut Silent)?;
        print_summary(&format!("embed ({})", self.domain), "inputs", &run);
        Ok(run.exit_code())
    }
}
