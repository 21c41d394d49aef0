//! The `kmeans:K` head: every patch token of a volume's slices clustered into K groups
//! (k-means++, cosine) — DINOv2's unsupervised part segmentation — as a label map written as
//! NIfTI on the source grid and affine.

use std::process::ExitCode;

use burn::tensor::backend::Backend;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_datasets::RegionSource;
use dinoadapt_pretrain::curate::kmeans::kmeans;
use dinoadapt_pretrain::curate::search::{InMemory, Metric};
use dinoadapt_radiology::predictions::{SlicePrediction, SliceValues};
use dinoadapt_radiology::source::SliceOptions;

use super::volumes::{for_each_sliced_volume, write_label_map};
use super::{finish, PredictArgs};
use crate::device::{batch_chunks, matmul_precision, BackendJob};
use dinoadapt_datasets::embedding::patch_tokens;

pub struct KmeansPredictJob {
    pub args: PredictArgs,
    pub options: SliceOptions,
    pub ck: LoadedCheckpoint,
    pub k: usize,
}

impl BackendJob for KmeansPredictJob {
    type Output = ExitCode;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<ExitCode> {
        let args = &self.args;
        let model = self
            .ck
            .build::<B>(&device)?
            .with_precision(matmul_precision(args.run.device, args.run.tf32));
        let (size, p) = (self.options.input.size, model.config.patch_size);
        let chunks = batch_chunks(args.run.device);
        std::fs::create_dir_all(&args.out)?;
        let mut rows = Vec::new();
        for_each_sliced_volume(
            &args.volumes,
            self.options,
            &mut rows,
            |volume, mut source, row| {
                let fit = source.fit();
                let records = source.records().to_vec();
                let (mut tokens, mut grid) = (Vec::new(), (0, 0));
                while let Some(b) = source
                    .next_batch(args.run.batch_size.max(1))
                    .map_err(anyhow::Error::msg)?
                {
                    let n = b.regions.len();
                    let (t, g) = patch_tokens(&model, &device, b.pixels, n, size, chunks)?;
                    tokens.extend(t);
                    grid = g;
                }
                let dim = model.config.embed_dim;
                let clusters = kmeans::<B>(
                    &mut InMemory { data: &tokens, dim },
                    self.k,
                    25,
                    Metric::Cosine,
                    args.kmeans_seed,
                    4096,
                    &device,
                    &mut |_| {},
                )
                .map_err(|e| anyhow::anyhow!("k-means: {e}"))?;
                let (gh, gw) = grid;
                let np = gh * gw;
                // Labels 1..K inside the slice's canvas rectangle, 0 in the padding.
                let predictions: Vec<SlicePrediction> = records
                    .iter()
                    .enumerate()
                    .map(|(s, r)| {
                        let labels = &clusters.assignments[s * np..(s + 1) * np];
                        let mut canvas = vec![0u8; size * size];
                        for y in fit.y0..fit.y0 + fit.h {
                            for x in fit.x0..fit.x0 + fit.w {
                                let (py, px) = ((y / p).min(gh - 1), (x / p).min(gw - 1));
                                canvas[y * size + x] = labels[py * gw + px] as u8 + 1;
                            }
                        }
                        SlicePrediction {
                            index: r.slice_index,
                            values: SliceValues::U8(canvas),
                        }
                    })
                    .collect();
                let name = format!("{}_kmeans{}.nii.gz", volume.id, self.k);
                write_label_map(&args.out, name, volume, &self.options, &predictions, row);
                Ok(())
            },
        )?;
        finish(&args.out, &rows, "predict")
    }
}
