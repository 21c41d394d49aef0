//! [`RegionEmbedder`]: a backbone on a device that embeds sources into feature files.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::vit::{MatmulPrecision, VisionTransformer};

use super::layout::{append_batch, FeatureLayout};
use super::{EmbedError, Progress};
use crate::regions::{Region, RegionBatch, RegionSource, SkippedRegion};
use crate::{EmbedRecord, FeatureWriter};

/// How regions are embedded.
#[derive(Debug, Clone)]
pub struct EmbedSettings {
    /// Intermediate blocks kept as `layer.{i}`.
    pub layers: Vec<usize>,
    /// Apply the final norm to the intermediate layers.
    pub norm_layers: bool,
    pub batch_size: usize,
    pub precision: MatmulPrecision,
    /// Slices of a batch run at once (one per CPU thread on the CPU, 1 on a GPU).
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
    /// The regions embedded, feature row `i` = `regions[i]`.
    pub regions: Vec<Region>,
    /// Regions the source skipped (unreadable, wrong size), in the order it met them.
    pub skipped: Vec<SkippedRegion>,
    /// The class tokens written, [regions, dim].
    pub cls: Vec<f32>,
    /// Backbone seconds of each embedded region (its batch's time over the batch size).
    pub forward_seconds: Vec<f64>,
    pub seconds: f64,
}

impl Embedded {
    /// One manifest row per region, embedded or skipped, in the source's order (an image
    /// source: the order of its inputs): `input` is the size fed to the backbone (height,
    /// width); `file_bytes` records each region's source file size (image files, not a tensor).
    pub fn records(
        &self,
        input: (usize, usize),
        model: &str,
        checkpoint_sha256: &str,
        file_bytes: bool,
    ) -> Vec<EmbedRecord> {
        let bytes = |path: &str| match file_bytes {
            true => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            false => 0,
        };
        let record = |index, path: &str, (width, height), seconds, error: &str| EmbedRecord {
            index,
            path: path.to_string(),
            model: model.to_string(),
            checkpoint_sha256: checkpoint_sha256.to_string(),
            width,
            height,
            input_width: input.1 as u32,
            input_height: input.0 as u32,
            file_bytes: bytes(path),
            seconds,
            error: error.to_string(),
        };
        let mut rows: Vec<(usize, EmbedRecord)> = Vec::new();
        for (row, (r, s)) in self.regions.iter().zip(&self.forward_seconds).enumerate() {
            let size = (r.width as u32, r.height as u32);
            rows.push((r.index, record(Some(row as u32), &r.source, size, *s, "")));
        }
        for s in &self.skipped {
            let mut rec = record(
                None,
                &s.source,
                (s.width as u32, s.height as u32),
                0.0,
                &s.error,
            );
            rec.input_width = s.input_width as u32;
            rec.input_height = s.input_height as u32;
            rows.push((s.index, rec));
        }
        rows.sort_by_key(|(i, _)| *i);
        rows.into_iter().map(|(_, r)| r).collect()
    }
}

impl<B: Backend> RegionEmbedder<B> {
    pub fn new(
        ck: &LoadedCheckpoint,
        device: B::Device,
        settings: EmbedSettings,
    ) -> Result<Self, EmbedError> {
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
        progress: &mut dyn Progress,
    ) -> Result<Embedded, EmbedError> {
        let t0 = Instant::now();
        let s = &self.settings;
        let size = source.size();
        let max = source.max_regions();
        if max == 0 {
            return Err(EmbedError::NoRegions);
        }
        let c = &self.model.config;
        if c.in_chans != source.channels() {
            return Err(EmbedError::Channels {
                channels: c.in_chans,
                names: c
                    .channels
                    .as_ref()
                    .map(|r| r.names.join(", "))
                    .unwrap_or_else(|| "unnamed".into()),
                given: source.channels(),
            });
        }
        let layout = FeatureLayout::new(&self.model, size, s.layers.clone(), s.norm_layers)?;
        let mut metadata = s.metadata.clone();
        metadata.insert(
            "layers".into(),
            serde_json::to_string(&s.layers).expect("indices serialise"),
        );
        metadata.insert("layers_normed".into(), s.norm_layers.to_string());
        metadata.extend(source.metadata());
        let mut writer = FeatureWriter::create(output, &layout.specs(max), &metadata)?;
        progress.start(max, source.unit());
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
        let mut out = Embedded {
            regions: Vec::with_capacity(max),
            skipped: Vec::new(),
            cls: Vec::new(),
            forward_seconds: Vec::with_capacity(max),
            seconds: 0.0,
        };
        let result = (|| -> Result<(), EmbedError> {
            for b in rx.iter() {
                let b = b.map_err(EmbedError::Source)?;
                let n = b.regions.len();
                let t = Instant::now();
                if n > 0 {
                    out.cls.extend(append_batch(
                        &self.model,
                        &layout,
                        b.pixels,
                        n,
                        s.chunks,
                        &self.device,
                        &mut writer,
                    )?);
                }
                let per = t.elapsed().as_secs_f64() / n.max(1) as f64;
                out.forward_seconds.extend(std::iter::repeat_n(per, n));
                out.regions.extend(b.regions);
                out.skipped.extend(b.skipped);
                progress.set(out.regions.len() + out.skipped.len());
            }
            Ok(())
        })();
        progress.finish();
        drop(rx);
        let _ = producer.join();
        result?;
        if out.regions.is_empty() {
            return Err(EmbedError::NothingEmbedded);
        }
        writer.finish_rows(out.regions.len())?;
        out.seconds = t0.elapsed().as_secs_f64();
        Ok(out)
    }
}
