//! Embedding any domain's regions: a producer thread reads batches from a [`RegionSource`]
//! while the backbone runs on the previous one; features stream into the feature store and the
//! regions table (one row per feature row, with world/physical bounds) is written beside it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::bail;
use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::vit::MatmulPrecision;
use dinoadapt_datasets::{
    regions_table, write_parquet, FeatureWriter, Region, RegionBatch, RegionSource,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::commands::features::{append_batch, FeatureLayout};
use crate::device::BackendJob;

/// What was embedded.
#[derive(Debug, Clone)]
pub struct RegionEmbedSummary {
    pub regions: usize,
    pub seconds: f64,
    pub features: PathBuf,
    pub table: PathBuf,
}

pub struct RegionEmbedJob<S: RegionSource + 'static> {
    pub ck: LoadedCheckpoint,
    pub source: S,
    pub layers: Vec<usize>,
    pub norm_layers: bool,
    pub batch_size: usize,
    pub output: PathBuf,
    pub table: PathBuf,
    pub metadata: HashMap<String, String>,
    pub quiet: bool,
    pub precision: MatmulPrecision,
    pub chunks: usize,
}

impl<S: RegionSource + 'static> BackendJob for RegionEmbedJob<S> {
    type Output = RegionEmbedSummary;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<RegionEmbedSummary> {
        let t0 = Instant::now();
        let model = self.ck.build::<B>(&device)?.with_precision(self.precision);
        let size = self.source.size();
        let max = self.source.max_regions();
        if max == 0 {
            bail!("the sources have no regions");
        }
        let layout = FeatureLayout::new(&model, size, self.layers.clone(), self.norm_layers)?;
        let mut metadata = self.metadata.clone();
        metadata.extend(self.source.metadata());
        let mut writer = FeatureWriter::create(&self.output, &layout.specs(max), &metadata)?;
        let (tx, rx) = sync_channel::<Result<RegionBatch, String>>(2);
        let (mut source, batch) = (self.source, self.batch_size.max(1));
        let producer = std::thread::spawn(move || loop {
            match source.next_batch(batch) {
                Ok(Some(b)) => {
                    if tx.send(Ok(b)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        });
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(max as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} embed [{bar:40}] {pos}/{len} regions {per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        let mut regions: Vec<Region> = Vec::with_capacity(max);
        for b in rx.iter() {
            let b = b.map_err(anyhow::Error::msg)?;
            let n = b.regions.len();
            append_batch(
                &model,
                &layout,
                b.pixels,
                n,
                self.chunks,
                &device,
                &mut writer,
            )?;
            regions.extend(b.regions);
            bar.set_position(regions.len() as u64);
        }
        bar.finish_and_clear();
        let _ = producer.join();
        if regions.is_empty() {
            bail!("every region was skipped (all nodata / empty)");
        }
        writer.finish_rows(regions.len())?;
        write_parquet(&self.table, &mut regions_table(&regions))?;
        Ok(RegionEmbedSummary {
            regions: regions.len(),
            seconds: t0.elapsed().as_secs_f64(),
            features: self.output,
            table: self.table,
        })
    }
}
