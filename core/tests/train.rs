//! The training engine on a tiny model: gradients of each loss against finite differences, one
//! iteration's effects (head warm-up freezes the backbone, the teacher follows the student), and
//! an exact continuation from saved state.

use std::collections::HashMap;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use dinoadapt_core::objective::gram::GramConfig;
use dinoadapt_core::objective::head::DinoHeadConfig;
use dinoadapt_core::objective::losses::{dino_cross_entropy, ibot_masked_loss, koleo};
use dinoadapt_core::objective::masking::{collate_masks, MaskingGenerator, PyRandom};
use dinoadapt_core::train::loss_terms::{DINO_GLOBAL, DINO_LOCAL, GRAM, IBOT, KOLEO};
use dinoadapt_core::train::param_paths::snapshot;
use dinoadapt_core::train::{
    CropBatch, OptimConfig, SslLossConfig, SslModel, StepReport, StepValues, Trainer,
};
use dinoadapt_core::vit::{FfnConfig, VisionTransformer, VitConfig};

type AB = Autodiff<Flex>;

/// The backend's RNG is one per process: tests that seed it and compare runs take turns.
fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn host(t: Tensor<Flex, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// Central differences of `f` at `x` [r, c] for the given entries, against autodiff.
fn check_gradient(
    x: Tensor<Flex, 2>,
    entries: &[usize],
    f: impl Fn(Tensor<AB, 2>) -> Tensor<AB, 1>,
) {
    let device = x.device();
    let dims = x.dims();
    let xa = Tensor::<AB, 2>::from_inner(x.clone()).require_grad();
    let grads = f(xa.clone()).backward();
    let analytic = host(xa.grad(&grads).expect("gradient"));
    let base = host(x);
    let eps = 1e-2f32;
    for &i in entries {
        let at = |delta: f32| {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::<AB, 2>::from_data(TensorData::new(v, dims), &device);
            f(t).into_scalar() as f64
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        let a = analytic[i] as f64;
        let tol = 2e-3 + 2e-2 * numeric.abs().max(a.abs());
        assert!(
            (numeric - a).abs() < tol,
            "entry {i}: finite difference {numeric}, autodiff {a}"
        );
    }
}

fn random(shape: [usize; 2], std: f64) -> Tensor<Flex, 2> {
    Tensor::random(shape, Distribution::Normal(0.0, std), &Default::default())
}

#[test]
fn dino_loss_gradient_matches_finite_differences() {
    let _rng = rng_lock();
    <Flex as Backend>::seed(&Default::default(), 1);
    let teacher = burn::tensor::activation::softmax(random([6, 10], 1.0), 1);
    let teacher = Tensor::<AB, 2>::from_inner(teacher);
    check_gradient(random([6, 10], 1.0), &[0, 7, 23, 59], |s| {
        dino_cross_entropy(&s.chunk(2, 0), &teacher.clone().chunk(2, 0), 0.5)
    });
}

#[test]
fn ibot_loss_gradient_matches_finite_differences() {
    let _rng = rng_lock();
    <Flex as Backend>::seed(&Default::default(), 2);
    let targets = burn::tensor::activation::softmax(random([5, 8], 1.0), 1);
    let targets = Tensor::<AB, 2>::from_inner(targets);
    let w = Tensor::<AB, 1>::from_data(
        [0.5f32, 0.5, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
        &Default::default(),
    );
    check_gradient(random([5, 8], 1.0), &[1, 12, 30, 39], |s| {
        ibot_masked_loss(s, targets.clone(), w.clone(), 4, 0.3)
    });
}

#[test]
fn koleo_gradient_matches_finite_differences() {
    let _rng = rng_lock();
    <Flex as Backend>::seed(&Default::default(), 3);
    check_gradient(random([6, 4], 1.0), &[0, 5, 11, 22], |x| koleo(x).0);
}

fn tiny_config() -> VitConfig {
    let mut c = VitConfig::preset("vits14_reg").unwrap();
    c.embed_dim = 16;
    c.depth = 2;
    c.num_heads = 2;
    c.pos_grid = 4;
    c.patch_size = 4;
    c.ffn = FfnConfig::mlp(16, 2.0);
    c
}

fn head() -> DinoHeadConfig {
    DinoHeadConfig::new(16)
        .with_num_prototypes(32)
        .with_hidden_dim(24)
        .with_bottleneck_dim(8)
}

fn trainer(seed: u64) -> Trainer<AB> {
    let device = Default::default();
    <AB as Backend>::seed(&device, seed);
    let backbone = VisionTransformer::<AB>::init(&tiny_config(), &device);
    let student = SslModel::new(backbone, &head(), None, &device);
    Trainer::new(student, SslLossConfig::default(), OptimConfig::default())
}

fn batch(step: u64) -> CropBatch<Flex> {
    let device = Default::default();
    <Flex as Backend>::seed(&device, 100 + step);
    let n = 4;
    let global = Tensor::random([2 * n, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let local = Tensor::random([2 * n, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let mut rng = PyRandom::seed(step);
    let masks = collate_masks(
        &mut rng,
        &MaskingGenerator::dinov2(4),
        2 * n,
        0.5,
        (0.1, 0.5),
    );
    CropBatch {
        global,
        local: Some(local),
        masks,
    }
}

fn values(backbone_frozen: bool) -> StepValues {
    StepValues {
        lr: 1e-3,
        last_layer_lr: 1e-3,
        wd: 0.04,
        momentum: 0.9,
        teacher_temp: 0.07,
        backbone_frozen,
    }
}

fn by_name(t: Vec<(String, dinoadapt_core::checkpoint::HostTensor)>) -> HashMap<String, Vec<f32>> {
    t.into_iter().map(|(k, v)| (k, v.data)).collect()
}

#[test]
fn a_new_trainer_s_teacher_is_a_copy_of_the_student() {
    let _rng = rng_lock();
    let t = trainer(3);
    let student = by_name(snapshot::<AB, _>(&t.student));
    let teacher = by_name(snapshot::<Flex, _>(&t.teacher));
    assert_eq!(student.len(), teacher.len());
    for (k, v) in &student {
        assert_eq!(teacher.get(k), Some(v), "{k}");
    }
}

#[test]
fn head_warm_up_leaves_the_backbone_and_moves_the_heads() {
    let _rng = rng_lock();
    let mut t = trainer(5);
    let before = by_name(snapshot::<AB, _>(&t.student));
    let teacher_before = by_name(snapshot::<Flex, _>(&t.teacher));
    let r = t.step(&batch(0), values(true));
    assert!(r.loss.total.is_finite(), "{r:?}");
    assert!(
        r.loss.terms.value(DINO_LOCAL) > 0.0
            && r.loss.terms.value(IBOT) > 0.0
            && r.loss.terms.value(KOLEO).is_finite()
    );
    let after = by_name(snapshot::<AB, _>(&t.student));
    for (k, v) in &after {
        let changed = before[k] != *v;
        let frozen = k.starts_with("backbone.");
        assert_eq!(changed, !frozen, "{k}");
    }
    // teacher = 0.9 teacher + 0.1 student, so the heads moved a tenth of the way.
    let k = "dino_head.mlp.0.bias";
    for ((t0, t1), s) in teacher_before[k]
        .iter()
        .zip(&by_name(snapshot::<Flex, _>(&t.teacher))[k])
        .zip(&after[k])
    {
        assert!((0.9 * t0 + 0.1 * s - t1).abs() < 1e-6);
    }
}

#[test]
fn joint_training_updates_the_backbone_and_reports_clipped_norms() {
    let _rng = rng_lock();
    let mut t = trainer(6);
    let before = by_name(snapshot::<AB, _>(&t.student));
    let r = t.step(&batch(0), values(false));
    assert!(
        r.grad_norm_backbone > 0.0 && r.grad_norm_dino_head > 0.0,
        "{r:?}"
    );
    let after = by_name(snapshot::<AB, _>(&t.student));
    assert_ne!(
        before["backbone.blocks.1.attn.qkv.weight"],
        after["backbone.blocks.1.attn.qkv.weight"]
    );
    // As in DINOv2, the prototypes' weight_g trains too.
    assert_ne!(
        before["dino_head.last_layer_g"],
        after["dino_head.last_layer_g"]
    );
}

#[test]
fn saved_state_continues_the_run_exactly() {
    let _rng = rng_lock();
    let mut straight = trainer(7);
    for s in 0..2 {
        straight.step(&batch(s), values(false));
    }
    let (tensors, steps) = straight.save_state();
    for s in 2..4 {
        straight.step(&batch(s), values(false));
    }

    let mut resumed = trainer(99);
    let map: HashMap<_, _> = tensors.into_iter().collect();
    resumed.load_state(&map, &steps).unwrap();
    for s in 2..4 {
        resumed.step(&batch(s), values(false));
    }
    let (a, b) = (
        by_name(snapshot::<AB, _>(&straight.student)),
        by_name(snapshot::<AB, _>(&resumed.student)),
    );
    for (k, v) in &a {
        let err = v
            .iter()
            .zip(&b[k])
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err <= 1e-6, "{k}: {err}");
    }
}

#[test]
fn backbone_gradient_matches_finite_differences() {
    let _rng = rng_lock();
    let device = Default::default();
    <AB as Backend>::seed(&device, 11);
    let model = VisionTransformer::<AB>::init(&tiny_config(), &device);
    let weights = Tensor::<AB, 2>::random([2, 16], Distribution::Normal(0.0, 1.0), &device);
    // Through patch embedding, attention, MLP, LayerScale and both norms, for cls and patches.
    check_gradient(
        random([2, 3 * 8 * 8], 1.0),
        &[0, 17, 100, 191, 250, 383],
        |x| {
            let x = x.reshape([2, 3, 8, 8]);
            let f = model.forward_features(x, None, &[]);
            let patches = f.patches().sum_dim(1).reshape([2, 16]);
            (f.cls() * weights.clone()).sum() + (patches * weights.clone()).sum().mul_scalar(0.1)
        },
    );
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// One iteration of two same-seed trainers, the second with its batch in `chunks` chunks.
fn whole_and_chunked(seed: u64, chunks: usize, frozen: bool) -> [(StepReport, Trainer<AB>); 2] {
    [1, chunks].map(|k| {
        let mut t = trainer(seed);
        t.chunks = k;
        (t.step(&batch(0), values(frozen)), t)
    })
}

#[test]
fn a_chunked_student_takes_the_whole_batch_step() {
    let _rng = rng_lock();
    for frozen in [false, true] {
        let [(whole, a), (chunked, b)] = whole_and_chunked(12, 3, frozen);
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(1.0);
        let (l, m) = (whole.loss, chunked.loss);
        for (x, y) in [
            (l.total, m.total),
            (l.terms.value(DINO_LOCAL), m.terms.value(DINO_LOCAL)),
            (l.terms.value(DINO_GLOBAL), m.terms.value(DINO_GLOBAL)),
            (l.terms.value(KOLEO), m.terms.value(KOLEO)),
            (l.terms.value(IBOT), m.terms.value(IBOT)),
            (whole.grad_norm_backbone, chunked.grad_norm_backbone),
            (whole.grad_norm_dino_head, chunked.grad_norm_dino_head),
        ] {
            assert!(close(x, y), "frozen {frozen}: {whole:?} vs {chunked:?}");
        }
        let (a, b) = (
            by_name(snapshot::<AB, _>(&a.student)),
            by_name(snapshot::<AB, _>(&b.student)),
        );
        for (k, v) in &a {
            let err = max_abs_diff(v, &b[k]);
            assert!(err <= 1e-5, "frozen {frozen}, {k}: {err}");
        }
    }
}

fn gram_trainer(seed: u64, teacher_scale: f64) -> Trainer<AB> {
    let mut t = trainer(seed);
    t.loss.gram = GramConfig {
        weight: 2.0,
        start_iteration: 1,
        update_every: 2,
        teacher_scale,
        ..GramConfig::default()
    };
    t
}

/// Gram anchoring in the loop: off before its start iteration, then a term of its own in the
/// total that the student's gradient sees; a whole and a chunked batch agree; the Gram teacher
/// is part of the saved state, so a run continues exactly.
#[test]
fn gram_anchoring_joins_the_objective_at_its_start_and_resumes_exactly() {
    let _rng = rng_lock();
    let mut t = gram_trainer(21, 1.0);
    assert!(!t.refresh_gram_teacher(0));
    let before = t.step(&batch(0), values(false));
    assert_eq!(before.loss.terms.value(GRAM), 0.0);
    assert!(t.refresh_gram_teacher(1));
    let at_start = t.step(&batch(1), values(false));
    // The Gram teacher is the EMA teacher of one step before: close, but not equal.
    assert!(at_start.loss.terms.value(GRAM) > 0.0, "{at_start:?}");
    let terms = at_start.loss.terms.value(DINO_GLOBAL)
        + at_start.loss.terms.value(DINO_LOCAL)
        + 2.0 * at_start.loss.terms.value(KOLEO)
        + 2.0 * at_start.loss.terms.value(IBOT)
        + 2.0 * at_start.loss.terms.value(GRAM);
    assert!(
        (at_start.loss.total - terms).abs() <= 1e-5 * terms.abs(),
        "{at_start:?}"
    );

    // Whole against chunked batch with the Gram term (and a higher-resolution Gram teacher).
    let [a, b] = [1, 2].map(|chunks| {
        let mut t = gram_trainer(22, 1.5);
        t.chunks = chunks;
        t.step(&batch(0), values(false));
        t.refresh_gram_teacher(1);
        t.step(&batch(1), values(false))
    });
    assert!(
        (a.loss.terms.value(GRAM) - b.loss.terms.value(GRAM)).abs()
            <= 1e-5 * a.loss.terms.value(GRAM).max(1e-3),
        "{a:?} vs {b:?}"
    );
    assert!((a.grad_norm_backbone - b.grad_norm_backbone).abs() <= 1e-4 * a.grad_norm_backbone);

    // Save after step 2, continue 2..5 (a refresh at 3) straight and from the saved state.
    let run = |t: &mut Trainer<AB>, steps: std::ops::Range<u64>| {
        steps
            .map(|s| {
                t.refresh_gram_teacher(s as usize);
                t.step(&batch(s), values(false)).loss.terms.value(GRAM)
            })
            .collect::<Vec<_>>()
    };
    let mut straight = gram_trainer(23, 1.0);
    run(&mut straight, 0..2);
    let (tensors, steps) = straight.save_state();
    assert!(tensors.iter().any(|(k, _)| k.starts_with("gram_teacher.")));
    let grams = run(&mut straight, 2..5);
    let mut resumed = gram_trainer(98, 1.0);
    let map: HashMap<_, _> = tensors.into_iter().collect();
    resumed.load_state(&map, &steps).unwrap();
    assert_eq!(run(&mut resumed, 2..5), grams);
    let (a, b) = (
        by_name(snapshot::<AB, _>(&straight.student)),
        by_name(snapshot::<AB, _>(&resumed.student)),
    );
    for (k, v) in &a {
        assert!(max_abs_diff(v, &b[k]) <= 1e-6, "{k}");
    }
}

/// Distillation: a larger frozen teacher (its own width and depth, the same prototypes) gives
/// the targets; it never changes, the student's EMA does, and on a repeated batch the loss
/// falls. The EMA is part of the saved state.
#[test]
fn distillation_keeps_the_teacher_frozen_and_its_loss_falls() {
    let _rng = rng_lock();
    let device = Default::default();
    <AB as Backend>::seed(&device, 31);
    let mut big = tiny_config();
    big.embed_dim = 24;
    big.depth = 3;
    big.ffn = FfnConfig::mlp(24, 2.0);
    let teacher_head = DinoHeadConfig::new(24)
        .with_num_prototypes(32)
        .with_hidden_dim(24)
        .with_bottleneck_dim(8);
    let teacher = SslModel::new(
        VisionTransformer::<Flex>::init(&big, &device),
        &teacher_head,
        None,
        &device,
    );
    let before = by_name(snapshot::<Flex, _>(&teacher));
    let mut t = trainer(32);
    t.distill_from(teacher);
    let ema0 = by_name(snapshot::<Flex, _>(t.output()));
    let fast = StepValues {
        lr: 3e-3,
        last_layer_lr: 3e-3,
        ..values(false)
    };
    let losses: Vec<f64> = (0..25)
        .map(|_| t.step(&batch(0), fast).loss.total)
        .collect();
    let after = by_name(snapshot::<Flex, _>(&t.teacher));
    assert_eq!(before, after, "the frozen teacher changed");
    let ema = by_name(snapshot::<Flex, _>(t.output()));
    assert!(
        ema.iter().any(|(k, v)| max_abs_diff(v, &ema0[k]) > 0.0),
        "the student's EMA did not move"
    );
    let (first, last) = (
        losses[..3].iter().sum::<f64>(),
        losses[22..].iter().sum::<f64>(),
    );
    assert!(last < first, "the loss did not fall: {losses:?}");
    let (tensors, _) = t.save_state();
    assert!(tensors.iter().any(|(k, _)| k.starts_with("student_ema.")));
}
