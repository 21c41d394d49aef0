//! One domain source embedded into one feature file and its regions table, on the device
//! `--device` names (the engine is `dinoadapt_datasets::embedding`).

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_datasets::embedding::{EmbedSettings, RegionEmbedder};
use dinoadapt_datasets::{regions_table, write_parquet, RegionSource};

use crate::device::BackendJob;
use crate::progress::Bar;

/// What was embedded.
#[derive(Debug, Clone)]
pub struct RegionEmbedSummary {
    pub regions: usize,
    pub seconds: f64,
    pub features: PathBuf,
    pub table: PathBuf,
}

/// One source into one feature file and its regions table.
pub struct RegionEmbedding<S: RegionSource + 'static> {
    pub ck: LoadedCheckpoint,
    pub source: S,
    pub settings: EmbedSettings,
    pub output: PathBuf,
    pub table: PathBuf,
    pub quiet: bool,
}

impl<S: RegionSource + 'static> BackendJob for RegionEmbedding<S> {
    type Output = RegionEmbedSummary;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<RegionEmbedSummary> {
        let embedder = RegionEmbedder::<B>::new(&self.ck, device, self.settings)?;
        let e = embedder.embed(
            self.source,
            &self.output,
            &mut Bar::new("embed", self.quiet),
        )?;
        write_parquet(&self.table, &mut regions_table(&e.regions))?;
        Ok(RegionEmbedSummary {
            regions: e.regions.len(),
            seconds: e.seconds,
            features: self.output,
            table: self.table,
        })
    }
}
