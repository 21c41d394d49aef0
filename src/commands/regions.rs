//! Embedding any domain's regions: a producer thread reads batches from a [`RegionSource`]
//! while the backbone runs on the previous one; features stream into the feature store. The
//! model is built once and embeds any number of sources.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::bail;
use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::vit::{MatmulPrecision, VisionTransformer};
use dinoadapt_datasets::{
    regions_table, write_parquet, FeatureWriter, Region, RegionBatch, RegionSource,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::commands::features::{append_batch, FeatureLayout};
use crate::device::BackendJob;

/// How regions are embedded.
#[derive(Debug, Clone)]
pub struct EmbedSettings {
    pub layers: Vec<usize>,
    pub norm_layers: bool,
    pub batch_size: usize,
    pub quiet: bool,
    pub precision: MatmulPrecision,
    pub chunks: usize,
    /// Recorded in every feature file (model, checkpoint hash, program version, ...).
    pub metadata: HashMap<String, String>,
}

/// A backbone on a device, ready to embed sources.
pub struct RegionEmbedder<B: Backend> {
    pub model: VisionTransformer<B>,
    pub device: B::Device,
    pub settings: EmbedSettings,
}

/// What one source gave.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub regions: Vec<Region>,
    /// The class tokens written, [regions, dim].
    pub cls: Vec<f32>,
    pub seconds: f64,
}

impl<B: Backend> RegionEmbedder<B> {
    pub fn new(
        ck: &LoadedCheckpoint,
        device: B::Device,
        settings: EmbedSettings,
    ) -> anyhow::Result<Self> {
        let model = ck.build::<B>(&device)?.with_precision(settings.precision);
        Ok(RegionEmbedder {
            model,
            device,
            settings,
        })
    }

    /// Embed every region of `source` into the feature file `output`.
    pub fn embed<S: RegionSource + 'static>(
        &self,
        source: S,
        output: &Path,
    ) -> anyhow::Result<Embedded> {
        let t0 = Instant::now();
        let s = &self.settings;
        let size = source.size();
        let max = source.max_regions();
        if max == 0 {
            bail!("the source has no regions");
        }
        let layout = FeatureLayout::new(&self.model, size, s.layers.clone(), s.norm_layers)?;
        let mut metadata = s.metadata.clone();
        metadata.insert("layers".into(), serde_json::to_string(&s.layers)?);
        metadata.insert("layers_normed".into(), s.norm_layers.to_string());
        metadata.extend(source.metadata());
        let mut writer = FeatureWriter::create(output, &layout.specs(max), &metadata)?;
        let (tx, rx) = sync_channel::<Result<RegionBatch, String>>(2);
        let (mut source, batch) = (source, s.batch_size.max(1));
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
        let bar = if s.quiet {
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
        let mut cls = Vec::new();
        for b in rx.iter() {
            let b = b.map_err(anyhow::Error::msg)?;
            let n = b.regions.len();
            cls.extend(append_batch(
                &self.model,
                &layout,
                b.pixels,
                n,
                s.chunks,
                &self.device,
                &mut writer,
            )?);
            regions.extend(b.regions);
            bar.set_position(regions.len() as u64);
        }
        bar.finish_and_clear();
        let _ = producer.join();
        if regions.is_empty() {
            bail!("every region was skipped (all nodata / empty)");
        }
        writer.finish_rows(regions.len())?;
        Ok(Embedded {
            regions,
            cls,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// What was embedded.
#[derive(Debug, Clone)]
pub struct RegionEmbedSummary {
    pub regions: usize,
    pub seconds: f64,
    pub features: PathBuf,
    pub table: PathBuf,
}

/// One source into one feature file and its regions table.
pub struct RegionEmbedJob<S: RegionSource + 'static> {
    pub ck: LoadedCheckpoint,
    pub source: S,
    pub settings: EmbedSettings,
    pub output: PathBuf,
    pub table: PathBuf,
}

impl<S: RegionSource + 'static> BackendJob for RegionEmbedJob<S> {
    type Output = RegionEmbedSummary;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<RegionEmbedSummary> {
        let embedder = RegionEmbedder::<B>::new(&self.ck, device, self.settings)?;
        let e = embedder.embed(self.source, &self.output)?;
        write_parquet(&self.table, &mut regions_table(&e.regions))?;
        Ok(RegionEmbedSummary {
            regions: e.regions.len(),
            seconds: e.seconds,
            features: self.output,
            table: self.table,
        })
    }
}
