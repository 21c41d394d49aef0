//! `dinoadapt embed`: images (or a preprocessed pixel tensor) -> features.
//!
//! Decoding and preprocessing run on a producer thread (rayon inside a batch) while the backbone
//! runs on the previous batch; features stream into the safetensors file batch by batch, so
//! memory stays flat in the number of inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use clap::Args;
use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_datasets::{
    collect_images, embed_manifest, open_image, write_parquet, EmbedRecord, FeatureWriter,
    Preprocess, ResizeFilter,
};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::Value;

use crate::commands::features::{append_batch, FeatureLayout};
use crate::device::{batch_chunks, matmul_precision, on_device, BackendJob};
use crate::model_args::{LayerArgs, ModelArgs, RunArgs};
use dinoadapt_core::vit::MatmulPrecision;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images: files (PNG, JPEG, TIFF), folders (searched recursively) or list files (one path
    /// per line, or a CSV whose first column is the path).
    pub inputs: Vec<PathBuf>,
    /// A safetensors file holding a preprocessed NCHW float32 tensor, fed straight to the
    /// backbone (no preprocessing).
    #[arg(long, conflicts_with = "inputs")]
    pub pixels: Option<PathBuf>,
    /// The tensor's name in --pixels (default: the only tensor).
    #[arg(long, requires = "pixels")]
    pub pixels_key: Option<String>,
    /// Output features (safetensors: cls, patch, reg, layer.{i}).
    #[arg(long, short, default_value = "features.safetensors")]
    pub output: PathBuf,
    /// Parquet manifest (default: the output path with .parquet).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Resize the shorter side to N px before cropping (0: no resize). Default: the model's
    /// preprocessing config, else 256.
    #[arg(long)]
    pub resize: Option<u32>,
    /// Centre crop: N or HxW (0: no crop). Default: the model's config, else 224.
    #[arg(long)]
    pub crop_size: Option<String>,
    /// Per-channel mean, e.g. 0.485,0.456,0.406.
    #[arg(long)]
    pub mean: Option<String>,
    /// Per-channel std, e.g. 0.229,0.224,0.225.
    #[arg(long)]
    pub std: Option<String>,
    /// Resize filter: bicubic, bilinear, nearest.
    #[arg(long)]
    pub filter: Option<String>,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

fn triple(s: &str, what: &str) -> anyhow::Result<[f32; 3]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--{what} `{s}`: expected three numbers like 0.5,0.5,0.5"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("--{what} `{s}`: expected three numbers"))
}

/// The model's own preprocessing (HF preprocessor_config.json, timm pretrained_cfg), then flags.
fn preprocessing(args: &EmbedArgs, ck: &LoadedCheckpoint) -> anyhow::Result<Preprocess> {
    let dir = ck.path.parent().unwrap_or(Path::new("."));
    let hf = dir.join("preprocessor_config.json");
    let mut p = if hf.is_file() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&hf)?)
            .with_context(|| format!("{}: not valid JSON", hf.display()))?;
        Preprocess::from_huggingface(&v)
    } else if let Some(cfg) = ck
        .config_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        let v: Value = serde_json::from_str(&cfg).unwrap_or(Value::Null);
        match v.get("pretrained_cfg") {
            Some(t) => Preprocess::from_timm(t),
            None => Preprocess::default(),
        }
    } else {
        Preprocess::default()
    };
    if let Some(r) = args.resize {
        p.resize_shortest = (r > 0).then_some(r);
    }
    if let Some(c) = &args.crop_size {
        p.crop = match c.split_once('x') {
            _ if c == "0" => None,
            Some((h, w)) => Some((h.parse()?, w.parse()?)),
            None => {
                let s: u32 = c.parse().with_context(|| format!("--crop-size `{c}`"))?;
                Some((s, s))
            }
        };
    }
    if let Some(m) = &args.mean {
        p.mean = triple(m, "mean")?;
    }
    if let Some(s) = &args.std {
        p.std = triple(s, "std")?;
    }
    if let Some(f) = &args.filter {
        p.filter = ResizeFilter::parse(f)
            .ok_or_else(|| anyhow::anyhow!("--filter `{f}`: bicubic, bilinear or nearest"))?;
    }
    Ok(p)
}

/// Parse `--layers`.
pub fn parse_layers(spec: &str, depth: usize) -> anyhow::Result<Vec<usize>> {
    let layers: Vec<usize> = if let Some(n) = spec.strip_prefix("last:") {
        let n: usize = n.parse().with_context(|| format!("--layers `{spec}`"))?;
        if n == 0 || n > depth {
            bail!("--layers `{spec}`: the model has {depth} blocks");
        }
        (depth - n..depth).collect()
    } else {
        spec.split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .with_context(|| format!("--layers `{spec}`: not an index list"))
            })
            .collect::<Result<_, _>>()?
    };
    if let Some(bad) = layers.iter().find(|&&i| i >= depth) {
        bail!(
            "--layers: block {bad} does not exist (the model has blocks 0..{})",
            depth - 1
        );
    }
    Ok(layers)
}

/// One batch ready for the backbone.
struct Batch {
    pixels: Vec<f32>,
    n: usize,
    records: Vec<EmbedRecord>,
}

type BatchResult = anyhow::Result<Batch>;

fn image_batches(
    paths: Vec<PathBuf>,
    pre: Preprocess,
    batch: usize,
    size: (usize, usize),
) -> Receiver<BatchResult> {
    let (tx, rx) = sync_channel::<BatchResult>(2);
    std::thread::spawn(move || {
        let mut index = 0u32;
        for chunk in paths.chunks(batch) {
            let done: Vec<(EmbedRecord, Option<Vec<f32>>)> = chunk
                .par_iter()
                .map(|p| {
                    let mut record = EmbedRecord {
                        index: None,
                        path: p.display().to_string(),
                        model: String::new(),
                        checkpoint_sha256: String::new(),
                        width: 0,
                        height: 0,
                        input_width: 0,
                        input_height: 0,
                        file_bytes: std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                        seconds: 0.0,
                        error: String::new(),
                    };
                    let img = match open_image(p) {
                        Ok(img) => img,
                        Err(e) => {
                            record.error = e.to_string();
                            return (record, None);
                        }
                    };
                    let (x, (h, w)) = pre.apply(&img);
                    record.width = img.width();
                    record.height = img.height();
                    record.input_width = w;
                    record.input_height = h;
                    if (h as usize, w as usize) != size {
                        record.error = format!(
                            "{}: preprocesses to {h}x{w}, the batch is {}x{}: give --crop-size so every \
                             image has one size",
                            p.display(),
                            size.0,
                            size.1
                        );
                        return (record, None);
                    }
                    (record, Some(x))
                })
                .collect();
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * size.0 * size.1);
            let mut records = Vec::with_capacity(chunk.len());
            let mut n = 0;
            for (mut rec, x) in done {
                match x {
                    Some(x) => {
                        rec.index = Some(index);
                        index += 1;
                        n += 1;
                        pixels.extend_from_slice(&x);
                    }
                    None => tracing::warn!("skipping an input: {}", rec.error),
                }
                records.push(rec);
            }
            if tx.send(Ok(Batch { pixels, n, records })).is_err() {
                return;
            }
        }
    });
    rx
}

fn pixel_batches(
    path: &Path,
    key: Option<&str>,
    batch: usize,
) -> anyhow::Result<(usize, (usize, usize), Receiver<BatchResult>)> {
    let (tensors, _) = read_safetensors(path)?;
    let (name, t) = match key {
        Some(k) => tensors
            .into_iter()
            .find(|(n, _)| n == k)
            .with_context(|| format!("{}: no tensor `{k}`", path.display()))?,
        None if tensors.len() == 1 => tensors.into_iter().next().expect("one tensor"),
        None => bail!(
            "{}: holds {} tensors ({:?}); name one with --pixels-key",
            path.display(),
            tensors.len(),
            tensors.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
        ),
    };
    if t.shape.len() != 4 || t.shape[1] != 3 {
        bail!(
            "{}: `{name}` has shape {:?}; expected (N, 3, H, W)",
            path.display(),
            t.shape
        );
    }
    let (n, h, w) = (t.shape[0], t.shape[2], t.shape[3]);
    let (tx, rx) = sync_channel::<BatchResult>(2);
    let file = path.display().to_string();
    std::thread::spawn(move || {
        let per = 3 * h * w;
        for start in (0..n).step_by(batch) {
            let end = (start + batch).min(n);
            let records = (start..end)
                .map(|i| EmbedRecord {
                    index: Some(i as u32),
                    path: format!("{file}#{name}[{i}]"),
                    model: String::new(),
                    checkpoint_sha256: String::new(),
                    width: w as u32,
                    height: h as u32,
                    input_width: w as u32,
                    input_height: h as u32,
                    file_bytes: 0,
                    seconds: 0.0,
                    error: String::new(),
                })
                .collect();
            let b = Batch {
                pixels: t.data[start * per..end * per].to_vec(),
                n: end - start,
                records,
            };
            if tx.send(Ok(b)).is_err() {
                return;
            }
        }
    });
    Ok((n, (h, w), rx))
}

struct EmbedJob {
    ck: LoadedCheckpoint,
    batches: Receiver<BatchResult>,
    total: usize,
    size: (usize, usize),
    layers: Vec<usize>,
    norm_layers: bool,
    output: PathBuf,
    metadata: HashMap<String, String>,
    quiet: bool,
    precision: MatmulPrecision,
    chunks: usize,
}

impl BackendJob for EmbedJob {
    type Output = Vec<EmbedRecord>;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
        let model = self.ck.build::<B>(&device)?.with_precision(self.precision);
        let n = self.total;
        let layout = FeatureLayout::new(&model, self.size, self.layers.clone(), self.norm_layers)?;
        let specs = layout.specs(n);
        let mut writer = FeatureWriter::create(&self.output, &specs, &self.metadata)?;
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(n as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} embed [{bar:40}] {pos}/{len} images {per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        let model_name = self.ck.path.display().to_string();
        let mut records = Vec::with_capacity(n);
        let mut embedded = 0usize;
        for batch in self.batches.iter() {
            let batch = batch?;
            let t0 = Instant::now();
            if batch.n > 0 {
                append_batch(
                    &model,
                    &layout,
                    batch.pixels,
                    batch.n,
                    self.chunks,
                    &device,
                    &mut writer,
                )?;
                embedded += batch.n;
            }
            let per = t0.elapsed().as_secs_f64() / batch.n.max(1) as f64;
            bar.inc(batch.records.len() as u64);
            for mut rec in batch.records {
                rec.model = model_name.clone();
                rec.checkpoint_sha256 = self.ck.sha256.clone();
                if rec.error.is_empty() {
                    rec.seconds = per;
                }
                records.push(rec);
            }
        }
        bar.finish_and_clear();
        if records.len() != n {
            bail!("only {} of {n} inputs were read", records.len());
        }
        if embedded == 0 {
            bail!("none of the {n} inputs could be read (see the warnings above)");
        }
        writer.finish_rows(embedded)?;
        Ok(records)
    }
}

pub fn run(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    args.run.batch()?;
    let ck = args.model.load()?;
    let layers = args.layers.resolve(ck.config.depth)?;
    let precision = matmul_precision(args.run.device, args.run.tf32);
    let mut metadata = HashMap::from([
        ("matmul_precision".to_string(), format!("{precision:?}")),
        (
            "dinoadapt.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("model".to_string(), ck.path.display().to_string()),
        ("checkpoint_sha256".to_string(), ck.sha256.clone()),
        ("layout".to_string(), ck.layout.short().to_string()),
        (
            "architecture".to_string(),
            serde_json::to_string(&ck.config)?,
        ),
        ("device".to_string(), args.run.device.to_string()),
        ("layers".to_string(), serde_json::to_string(&layers)?),
        ("layers_normed".to_string(), args.layers.norm.to_string()),
    ]);
    let (total, size, batches) = if let Some(px) = &args.pixels {
        metadata.insert("preprocessing".into(), "none (--pixels)".into());
        pixel_batches(px, args.pixels_key.as_deref(), args.run.batch_size)?
    } else {
        if args.inputs.is_empty() {
            bail!("give images (files, folders or list files) or --pixels FILE");
        }
        let pre = preprocessing(&args, &ck)?;
        metadata.insert("preprocessing".into(), serde_json::to_string(&pre)?);
        let paths = collect_images(&args.inputs)?;
        let size = match pre.crop {
            Some((h, w)) => (h as usize, w as usize),
            None => {
                let img = open_image(&paths[0])?;
                let (h, w) = pre.output_size(img.height(), img.width());
                (h as usize, w as usize)
            }
        };
        let n = paths.len();
        (
            n,
            size,
            image_batches(paths, pre, args.run.batch_size, size),
        )
    };
    let manifest = args
        .manifest
        .clone()
        .unwrap_or_else(|| args.output.with_extension("parquet"));
    let job = EmbedJob {
        ck,
        batches,
        total,
        size,
        layers,
        norm_layers: args.layers.norm,
        output: args.output.clone(),
        metadata,
        quiet: args.run.quiet,
        precision,
        chunks: batch_chunks(args.run.device),
    };
    let t0 = Instant::now();
    let records = on_device(args.run.device, job)?;
    write_parquet(&manifest, &mut embed_manifest(&records))?;
    let failed = records.iter().filter(|r| !r.error.is_empty()).count();
    if failed > 0 {
        eprintln!("warning: {failed} inputs could not be read; the manifest says why");
    }
    eprintln!(
        "embedded {} inputs in {:.1} s -> {} (+ {})",
        records.len() - failed,
        t0.elapsed().as_secs_f64(),
        args.output.display(),
        manifest.display()
    );
    Ok(ExitCode::SUCCESS)
}
