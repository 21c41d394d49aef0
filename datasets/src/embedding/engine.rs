//! [`RegionEmbedder`]: a backbone on a device that embeds sources into feature files.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::error_text::panic_message;
use dinoadapt_core::vit::{MatmulPrecision, VisionTransformer};

use super::layout::{forward_rows, BatchRows, FeatureLayout};
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

/// A backbone on one or more devices (one copy per device), ready to embed sources. With
/// several devices, the batches of every source are shared among them as they come.
pub struct RegionEmbedder<B: Backend> {
    /// The backbone on the first device.
    pub model: VisionTransformer<B>,
    pub device: B::Device,
    /// The backbone's copies on the other devices.
    replicas: Vec<(VisionTransformer<B>, B::Device)>,
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

/// Why a thread of the embedding stopped, from its panic's payload: an error of the batch
/// instead of a crash of the program (e.g. an allocation that failed under a memory limit).
fn panic_text(what: &str, payload: Box<dyn std::any::Any + Send>) -> String {
    format!("{what} stopped: {}", panic_message(payload.as_ref()))
}

/// What a device made of one batch: its rows, its regions and its backbone seconds.
struct Forwarded {
    seq: usize,
    rows: Option<BatchRows>,
    batch: RegionBatch,
    seconds: f64,
}

impl<B: Backend> RegionEmbedder<B> {
    pub fn new(
        ck: &LoadedCheckpoint,
        device: B::Device,
        settings: EmbedSettings,
    ) -> Result<Self, EmbedError> {
        Self::on_devices(ck, vec![device], settings)
    }

    /// The backbone of `ck` on each of `devices` (at least one).
    pub fn on_devices(
        ck: &LoadedCheckpoint,
        devices: Vec<B::Device>,
        settings: EmbedSettings,
    ) -> Result<Self, EmbedError> {
        let mut copies = devices
            .into_iter()
            .map(|device| {
                let model = ck.build::<B>(&device)?.with_precision(settings.precision);
                Ok((model, device))
            })
            .collect::<Result<Vec<_>, EmbedError>>()?;
        if copies.is_empty() {
            return Err(EmbedError::Source("no device to embed on".into()));
        }
        let (model, device) = copies.remove(0);
        Ok(RegionEmbedder {
            model,
            device,
            replicas: copies,
            settings,
        })
    }

    /// How many devices embed at once.
    pub fn device_count(&self) -> usize {
        1 + self.replicas.len()
    }

    /// Embed every region of `source` into the feature file `output`: a producer thread reads
    /// batches, one thread per device runs the backbone on whichever batch comes next, and
    /// this thread writes the rows in the source's order.
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
        let mut out = Embedded {
            regions: Vec::with_capacity(max),
            skipped: Vec::new(),
            cls: Vec::new(),
            forward_seconds: Vec::with_capacity(max),
            seconds: 0.0,
        };
        let copies: Vec<(&VisionTransformer<B>, &B::Device)> =
            std::iter::once((&self.model, &self.device))
                .chain(self.replicas.iter().map(|(m, d)| (m, d)))
                .collect();
        let result = std::thread::scope(|scope| -> Result<(), EmbedError> {
            let (batches_tx, batches_rx) =
                sync_channel::<Result<(usize, RegionBatch), String>>(2 * copies.len());
            let (mut source, batch) = (source, s.batch_size.max(1));
            scope.spawn(move || {
                for seq in 0.. {
                    let read = catch_unwind(AssertUnwindSafe(|| source.next_batch(batch)));
                    let next = match read.unwrap_or_else(|p| Err(panic_text("reading", p))) {
                        Ok(Some(b)) => Ok((seq, b)),
                        Ok(None) => return,
                        Err(e) => Err(e),
                    };
                    let stop = next.is_err();
                    if batches_tx.send(next).is_err() || stop {
                        return;
                    }
                }
            });
            // Dropped when the last device thread ends, which stops the producer.
            let batches = Arc::new(Mutex::new(batches_rx));
            let (done_tx, done_rx) = channel::<Result<Forwarded, EmbedError>>();
            for (model, device) in copies.iter().copied() {
                let (batches, done) = (Arc::clone(&batches), done_tx.clone());
                let layout = &layout;
                scope.spawn(move || loop {
                    let next = batches
                        .lock()
                        .expect("no device thread panics holding it")
                        .recv();
                    let Ok(next) = next else { return };
                    let forwarded = next.map_err(EmbedError::Source).and_then(|(seq, mut b)| {
                        let n = b.regions.len();
                        let t = Instant::now();
                        let rows = match n {
                            0 => None,
                            _ => {
                                let pixels = std::mem::take(&mut b.pixels);
                                let forward = AssertUnwindSafe(|| {
                                    forward_rows(model, layout, pixels, n, s.chunks, device)
                                });
                                let rows = catch_unwind(forward).unwrap_or_else(|p| {
                                    Err(EmbedError::Device(panic_text("the backbone", p)))
                                });
                                Some(rows?)
                            }
                        };
                        Ok(Forwarded {
                            seq,
                            rows,
                            batch: b,
                            seconds: t.elapsed().as_secs_f64(),
                        })
                    });
                    let failed = forwarded.is_err();
                    if done.send(forwarded).is_err() || failed {
                        return;
                    }
                });
            }
            drop((batches, done_tx));
            // Batches come back in any order; they are written in the source's.
            let mut waiting = BTreeMap::new();
            let mut next = 0;
            for f in done_rx.iter() {
                let f = f?;
                waiting.insert(f.seq, f);
                while let Some(f) = waiting.remove(&next) {
                    next += 1;
                    let n = f.batch.regions.len();
                    if let Some(rows) = &f.rows {
                        rows.append_to(&layout, &mut writer)?;
                        out.cls.extend_from_slice(&rows.cls);
                    }
                    let per = f.seconds / n.max(1) as f64;
                    out.forward_seconds.extend(std::iter::repeat_n(per, n));
                    out.regions.extend(f.batch.regions);
                    out.skipped.extend(f.batch.skipped);
                    progress.set(out.regions.len() + out.skipped.len());
                }
            }
            Ok(())
        });
        progress.finish();
        result?;
        if out.regions.is_empty() {
            return Err(EmbedError::NothingEmbedded);
        }
        writer.finish_rows(out.regions.len())?;
        out.seconds = t0.elapsed().as_secs_f64();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedding::Silent;
    use dinoadapt_core::checkpoint::infer::ArchOverrides;
    use dinoadapt_core::vit::{FfnConfig, VitConfig};

    type Cpu = dinoadapt_core::backend::CpuBackend;

    fn checkpoint() -> LoadedCheckpoint {
        let mut c = VitConfig::preset("vits14_reg").unwrap();
        (c.embed_dim, c.depth, c.num_heads, c.pos_grid, c.patch_size) = (16, 2, 2, 2, 4);
        c.ffn = FfnConfig::mlp(16, 2.0);
        let overrides = ArchOverrides {
            arch: Some(c),
            ..Default::default()
        };
        LoadedCheckpoint::random(&overrides, 7).unwrap()
    }

    fn settings() -> EmbedSettings {
        EmbedSettings {
            layers: vec![0],
            norm_layers: false,
            batch_size: 2,
            precision: MatmulPrecision::Backend,
            chunks: 1,
            metadata: HashMap::new(),
        }
    }

    /// `regions` 8x8 regions, region `i` filled with `i / 10`; fails at region `fail_at`.
    struct Ramp {
        regions: usize,
        next: usize,
        fail_at: Option<usize>,
        /// Panic at `fail_at` instead of returning an error.
        panics: bool,
    }

    impl RegionSource for Ramp {
        fn size(&self) -> (usize, usize) {
            (8, 8)
        }
        fn max_regions(&self) -> usize {
            self.regions
        }
        fn next_batch(&mut self, max: usize) -> Result<Option<RegionBatch>, String> {
            if self.fail_at.is_some_and(|f| self.next >= f) {
                if self.panics {
                    panic!("region {} broke the reader", self.next);
                }
                return Err(format!("region {} is unreadable", self.next));
            }
            let end = (self.next + max).min(self.regions);
            if self.next == end {
                return Ok(None);
            }
            let regions: Vec<Region> = (self.next..end)
                .map(|index| Region {
                    source: "ramp".into(),
                    index,
                    col: 0,
                    row: 0,
                    width: 8,
                    height: 8,
                    bounds: [0.0; 4],
                    crs: "px".into(),
                    valid_fraction: 1.0,
                })
                .collect();
            let pixels = (self.next..end)
                .flat_map(|i| std::iter::repeat_n(i as f32 / 10.0, 3 * 64))
                .collect();
            self.next = end;
            Ok(Some(RegionBatch {
                regions,
                pixels,
                size: (8, 8),
                skipped: Vec::new(),
            }))
        }
        fn metadata(&self) -> HashMap<String, String> {
            HashMap::new()
        }
    }

    fn ramp(regions: usize, fail_at: Option<usize>) -> Ramp {
        Ramp {
            regions,
            next: 0,
            fail_at,
            panics: false,
        }
    }

    #[test]
    fn several_devices_write_every_batch_in_the_sources_order() {
        let ck = checkpoint();
        let dir = tempfile::tempdir().unwrap();
        let one = RegionEmbedder::<Cpu>::new(&ck, Default::default(), settings()).unwrap();
        let three = RegionEmbedder::<Cpu>::on_devices(&ck, vec![Default::default(); 3], settings())
            .unwrap();
        assert_eq!(three.device_count(), 3);
        let a = one
            .embed(
                ramp(11, None),
                &dir.path().join("a.safetensors"),
                &mut Silent,
            )
            .unwrap();
        let b = three
            .embed(
                ramp(11, None),
                &dir.path().join("b.safetensors"),
                &mut Silent,
            )
            .unwrap();
        let order: Vec<usize> = b.regions.iter().map(|r| r.index).collect();
        assert_eq!(order, (0..11).collect::<Vec<_>>());
        assert_eq!(b.forward_seconds.len(), 11);
        assert_eq!(a.cls.len(), 11 * 16);
        let worst = a
            .cls
            .iter()
            .zip(&b.cls)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-6, "{worst}");
        // Different regions have different features (the rows did not all come from one).
        assert!((b.cls[0] - b.cls[10 * 16]).abs() > 1e-6);
        let (fa, fb) = (
            std::fs::read(dir.path().join("a.safetensors")).unwrap(),
            std::fs::read(dir.path().join("b.safetensors")).unwrap(),
        );
        assert_eq!(fa.len(), fb.len());
    }

    #[test]
    fn a_source_failing_midway_stops_every_device_with_its_error() {
        let ck = checkpoint();
        let dir = tempfile::tempdir().unwrap();
        let two = RegionEmbedder::<Cpu>::on_devices(&ck, vec![Default::default(); 2], settings())
            .unwrap();
        let err = two
            .embed(
                ramp(40, Some(6)),
                &dir.path().join("f.safetensors"),
                &mut Silent,
            )
            .unwrap_err();
        assert!(err.to_string().contains("region 6 is unreadable"), "{err}");
        // A reader that panics is an error of this source, not a crash of the program.
        let panicking = Ramp {
            panics: true,
            ..ramp(40, Some(4))
        };
        let err = two
            .embed(panicking, &dir.path().join("g.safetensors"), &mut Silent)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("reading stopped: region 4 broke the reader"),
            "{err}"
        );
        assert!(RegionEmbedder::<Cpu>::on_devices(&ck, Vec::new(), settings()).is_err());
    }
}
