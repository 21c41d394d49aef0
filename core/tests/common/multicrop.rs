//! A tiny multi-crop training setup shared by the engine's device tests: a 3-block ViT with
//! stochastic depth, host batches with local crops and iBOT masks, any image range of them as a
//! batch on any backend, the schedule values and the weights of a trainer.
#![allow(dead_code)]

use std::collections::HashMap;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use dinoadapt_core::objective::head::DinoHeadConfig;
use dinoadapt_core::objective::masking::{collate_masks, BatchMasks, MaskingGenerator, PyRandom};
use dinoadapt_core::seeds::{mix, unit_interval};
use dinoadapt_core::train::param_paths::{restore, snapshot};
use dinoadapt_core::train::{CropBatch, SslModel, StepReport, StepValues, Trainer};
use dinoadapt_core::vit::{FfnConfig, VisionTransformer, VitConfig};

pub const IMAGES: usize = 4;
pub const LOCAL_CROPS: usize = 2;
const GLOBAL: usize = 3 * 16 * 16;
const LOCAL: usize = 3 * 8 * 8;

pub fn tiny_config() -> VitConfig {
    let mut c = VitConfig::preset("vits14_reg").unwrap();
    c.embed_dim = 16;
    c.depth = 3;
    c.num_heads = 2;
    c.pos_grid = 4;
    c.patch_size = 4;
    c.ffn = FfnConfig::mlp(16, 2.0);
    c.drop_path_rate = 0.3;
    c.drop_path_uniform = true;
    c
}

/// The global batch of iteration `step`, on the host: crop-major images and the masks.
pub struct HostBatch {
    global: Vec<f32>,
    local: Vec<f32>,
    masks: BatchMasks,
}

pub fn global_batch(step: usize) -> HostBatch {
    let noise = |what: u64, len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| (unit_interval(mix(step as u64, what, i as u64)) * 4.0 - 2.0) as f32)
            .collect()
    };
    let mut rng = PyRandom::seed(step as u64);
    HostBatch {
        global: noise(1, 2 * IMAGES * GLOBAL),
        local: noise(2, LOCAL_CROPS * IMAGES * LOCAL),
        masks: collate_masks(
            &mut rng,
            &MaskingGenerator::dinov2(4),
            2 * IMAGES,
            0.5,
            (0.1, 0.5),
        ),
    }
}

/// Images [first, first + count) of the global batch, crop-major as a batch of their own.
pub fn shard<B: Backend>(
    b: &HostBatch,
    first: usize,
    count: usize,
    device: &B::Device,
) -> CropBatch<B> {
    let rows = |crops: usize| -> Vec<usize> {
        (0..crops)
            .flat_map(|c| (first..first + count).map(move |i| c * IMAGES + i))
            .collect()
    };
    let take = |data: &[f32], rows: &[usize], len: usize| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| data[r * len..(r + 1) * len].iter().copied())
            .collect()
    };
    let global_rows = rows(2);
    let local_rows = rows(LOCAL_CROPS);
    CropBatch {
        global: Tensor::from_data(
            TensorData::new(
                take(&b.global, &global_rows, GLOBAL),
                [2 * count, 3, 16, 16],
            ),
            device,
        ),
        local: Some(Tensor::from_data(
            TensorData::new(
                take(&b.local, &local_rows, LOCAL),
                [LOCAL_CROPS * count, 3, 8, 8],
            ),
            device,
        )),
        masks: b.masks.select_rows(&global_rows),
    }
}

pub fn values(step: usize) -> StepValues {
    StepValues {
        lr: 2e-3,
        last_layer_lr: 2e-3,
        wd: 0.04,
        momentum: 0.9,
        teacher_temp: 0.07,
        // The first iteration is a head warm-up: no backbone gradient on any replica.
        backbone_frozen: step == 0,
    }
}

/// A student on `device` with the weights `weights` (host tensors by name), or, without them,
/// drawn from `seed` with every parameter materialised (so clones share the values).
pub fn student<B: AutodiffBackend>(
    seed: u64,
    weights: Option<&HashMap<String, dinoadapt_core::checkpoint::HostTensor>>,
    device: &B::Device,
) -> SslModel<B> {
    B::seed(device, seed);
    let backbone = VisionTransformer::<B>::init(&tiny_config(), device);
    let head = DinoHeadConfig::new(16)
        .with_num_prototypes(32)
        .with_hidden_dim(24)
        .with_bottleneck_dim(8);
    let s = SslModel::new(backbone, &head, None, device);
    let _ = snapshot::<B, _>(&s);
    match weights {
        Some(w) => restore(s, w, device).expect("the same architecture"),
        None => s,
    }
}

pub type Weights = HashMap<String, Vec<f32>>;

pub fn weights<B: AutodiffBackend>(t: &Trainer<B>) -> Weights {
    let mut w: Weights = snapshot::<B, _>(&t.student)
        .into_iter()
        .map(|(k, v)| (format!("student.{k}"), v.data))
        .collect();
    w.extend(
        snapshot::<B::InnerBackend, _>(&t.teacher)
            .into_iter()
            .map(|(k, v)| (format!("teacher.{k}"), v.data)),
    );
    w
}

/// `steps` iterations of one replica over images [first, first + count) of every batch.
pub fn train<B: AutodiffBackend>(
    mut t: Trainer<B>,
    steps: usize,
    chunks: usize,
    first: usize,
    count: usize,
) -> (Vec<StepReport>, Weights) {
    t.chunks = chunks;
    let device = t.teacher.backbone.device();
    let reports = (0..steps)
        .map(|step| {
            t.draw_seed = Some(mix(77, 5, step as u64));
            let batch = shard::<B::InnerBackend>(&global_batch(step), first, count, &device);
            t.step(&batch, values(step))
        })
        .collect();
    (reports, weights(&t))
}

pub fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// The worst absolute difference between two trainers' weights, and where.
pub fn worst_weight(a: &Weights, b: &Weights) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for (name, expected) in a {
        for (e, g) in expected.iter().zip(&b[name]) {
            let d = (e - g).abs() as f64;
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
    }
    worst
}
