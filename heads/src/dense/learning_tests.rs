//! Planted-signal tests: synthetic tokens whose classes / heights are a function of the
//! features of one layer; each head must learn it on a training set and generalise to a
//! held-out set.

use burn::backend::{Autodiff, Flex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

type AB = Autodiff<Flex>;

const GRID: (usize, usize) = (4, 4);
const PATCH: usize = 7;
const DIM: usize = 16;
const LAYERS: usize = 4;

/// Random tokens [n, 4, 1 + 16, 16] and each patch's tokens of `layer`.
fn tokens(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let t = 1 + GRID.0 * GRID.1;
    (0..n * LAYERS * t * DIM)
        .map(|_| {
            // Box-Muller: standard normal values.
            let (u, v): (f64, f64) = (rng.random_range(1e-9..1.0), rng.random());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Feature `k` of patch `p` of layer `l` of sample `i`.
fn feat(x: &[f32], i: usize, l: usize, p: usize, k: usize) -> f32 {
    let t = 1 + GRID.0 * GRID.1;
    x[((i * LAYERS + l) * t + 1 + p) * DIM + k]
}

fn size() -> (usize, usize) {
    (GRID.0 * PATCH, GRID.1 * PATCH)
}

/// Bilinear weights of pixel `px` on a `g`-patch axis (half-pixel centres, edge clamp): the
/// resampling the heads use, so a field defined at patch centres is what they can express.
fn coord(px: usize, g: usize) -> (usize, usize, f64) {
    let v = ((px as f64 + 0.5) / PATCH as f64 - 0.5).clamp(0.0, (g - 1) as f64);
    let v0 = v.floor() as usize;
    (v0, (v0 + 1).min(g - 1), v - v0 as f64)
}

/// A field given at patch centres (`at(patch)`), interpolated bilinearly to every pixel.
fn upsample(at: impl Fn(usize) -> f64) -> Vec<f64> {
    let (h, w) = size();
    let mut out = Vec::with_capacity(h * w);
    for r in 0..h {
        let (y0, y1, fy) = coord(r, GRID.0);
        for c in 0..w {
            let (x0, x1, fx) = coord(c, GRID.1);
            let top = at(y0 * GRID.1 + x0) * (1.0 - fx) + at(y0 * GRID.1 + x1) * fx;
            let bottom = at(y1 * GRID.1 + x0) * (1.0 - fx) + at(y1 * GRID.1 + x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// Pixel labels: the argmax over 3 scores, features 0..3 of `layer` at each patch centre
/// interpolated to the pixel; every 11th pixel ignored.
fn seg_set(n: usize, seed: u64, layer: usize) -> DenseSet {
    let x = tokens(n, seed);
    let (h, w) = size();
    let mut values = Vec::with_capacity(n * h * w);
    for i in 0..n {
        let scores: Vec<Vec<f64>> = (0..3)
            .map(|k| upsample(|p| feat(&x, i, layer, p, k) as f64))
            .collect();
        values.extend((0..h * w).map(|px| {
            let class = (0..3).fold(0, |b, k| if scores[k][px] > scores[b][px] { k } else { b });
            if px % 11 == 5 {
                255
            } else {
                class as u32
            }
        }));
    }
    DenseSet::new(
        x,
        (n, LAYERS, DIM),
        GRID,
        (h, w),
        DenseTargets::Classes {
            values,
            classes: 3,
            ignore_index: 255,
        },
    )
    .unwrap()
}

/// Heights: a nonlinear function (tanh of one, clip of the other) of a feature of layer 0 and
/// one of layer 2 (the ×4 and ×1 scales of DPT's reassembly, where per-patch detail survives;
/// the ×½ scale of the last layer blurs it) at each patch centre, interpolated bilinearly to
/// pixels; every 13th pixel NaN (nodata).
fn height_set(n: usize, seed: u64) -> DenseSet {
    let x = tokens(n, seed);
    let (h, w) = size();
    let mut heights = Vec::with_capacity(n * h * w);
    for i in 0..n {
        let field = upsample(|p| {
            let (a, b) = (feat(&x, i, 0, p, 0) as f64, feat(&x, i, 2, p, 1) as f64);
            15.0 + 10.0 * a.tanh() + 4.0 * b.clamp(-2.5, 2.5)
        });
        for (px, v) in field.into_iter().enumerate() {
            heights.push(if px % 13 == 7 { f32::NAN } else { v as f32 });
        }
    }
    DenseSet::new(
        x,
        (n, LAYERS, DIM),
        GRID,
        (h, w),
        DenseTargets::Heights(heights),
    )
    .unwrap()
}

fn fit(config: &DenseHeadConfig, tr: &DenseSet, va: &DenseSet, cfg: &DenseTrainConfig) -> f64 {
    let device = Default::default();
    let t0 = std::time::Instant::now();
    let trained = train::<AB>(config, tr, Some(va), cfg, &device, |_| {}).unwrap();
    let e = evaluate(&trained.head, config, va, cfg, &device).unwrap();
    let first = trained.log.first().unwrap().train_loss;
    let last = trained.log.last().unwrap().train_loss;
    eprintln!(
        "{:?}: val {:?}; train loss {first:.4} -> {last:.4}; {:.1} s",
        config,
        e.metrics,
        t0.elapsed().as_secs_f64()
    );
    assert!(last < first, "the training loss fell");
    assert_eq!(trained.log.len(), cfg.epochs);
    assert_eq!(
        trained.log.last().unwrap().val_metric,
        Some(e.metrics.headline())
    );
    e.metrics.headline()
}

#[test]
fn linear_head_learns_classes_planted_in_the_last_layer() {
    let (tr, va) = (seg_set(128, 1, 3), seg_set(32, 2, 3));
    let config = DenseHeadConfig::Linear(LinearHeadConfig::new(DIM, 3));
    let cfg = DenseTrainConfig::new()
        .with_epochs(30)
        .with_batch_size(16)
        .with_lr(3e-2);
    let miou = fit(&config, &tr, &va, &cfg);
    assert!(miou > 0.8, "mIoU {miou}");
}

#[test]
fn multi_layer_head_learns_classes_planted_in_an_earlier_layer() {
    // The signal is in layer 0 of 4: the multi-layer head sees it, the last-layer head cannot.
    let (tr, va) = (seg_set(128, 3, 0), seg_set(32, 4, 0));
    let cfg = DenseTrainConfig::new()
        .with_epochs(30)
        .with_batch_size(16)
        .with_lr(3e-2)
        .with_dice_weight(0.5);
    let ms = DenseHeadConfig::Linear(LinearHeadConfig::new(DIM, 3).with_layers(4));
    let miou = fit(&ms, &tr, &va, &cfg);
    assert!(miou > 0.8, "+ms mIoU {miou}");
    let last = DenseHeadConfig::Linear(LinearHeadConfig::new(DIM, 3));
    let blind = fit(&last, &tr, &va, &cfg);
    assert!(
        blind < 0.5,
        "last-layer head mIoU {blind} on a signal it cannot see"
    );
}

fn dpt(output: DptOutput) -> DenseHeadConfig {
    DenseHeadConfig::Dpt(
        DptHeadConfig::new(DIM, output)
            .with_features(32)
            .with_scale_channels([16, 32, 32, 32])
            .with_head_channels(16),
    )
}

#[test]
fn dpt_head_with_bins_learns_nonlinear_heights() {
    let (tr, va) = (height_set(160, 5), height_set(32, 6));
    let bins = Bins::new(64, 0.0, 40.0, BinNorm::default()).unwrap();
    // The default loss, L1 (the plain-regression test below uses L2).
    let cfg = DenseTrainConfig::new()
        .with_epochs(20)
        .with_batch_size(16)
        .with_lr(3e-3)
        .with_weight_decay(1e-2);
    let r2 = fit(&dpt(DptOutput::Bins(bins)), &tr, &va, &cfg);
    assert!(r2 > 0.8, "R² {r2}");
}

#[test]
fn dpt_head_with_plain_regression_learns_nonlinear_heights() {
    let (tr, va) = (height_set(160, 7), height_set(32, 8));
    let cfg = DenseTrainConfig::new()
        .with_epochs(20)
        .with_batch_size(16)
        .with_lr(3e-3)
        .with_weight_decay(1e-2)
        .with_regression_loss(RegressionLoss::L2);
    let r2 = fit(
        &dpt(DptOutput::Regression {
            min: 0.0,
            max: 40.0,
        }),
        &tr,
        &va,
        &cfg,
    );
    assert!(r2 > 0.8, "R² {r2}");
}
