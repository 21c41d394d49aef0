//! The DINOv2 student/teacher pair and one forward pass of the objective, as the official
//! `SSLMetaArch.forward_backward` computes it: the teacher sees the two global crops, the student
//! sees the masked global crops and the local crops; DINO cross-entropy between each student crop
//! and the other global crops' teacher targets, iBOT on the masked patches, KoLeo on the student's
//! global class tokens.

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Distribution, ElementConversion, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::batch_chunks::{frozen_tokens, ChunkedStudent};
use super::loss_terms::{LossTerms, DINO_GLOBAL, DINO_LOCAL, GRAM, IBOT, KOLEO};
use super::replicas::{sum_over, sum_values, Replicas};
use crate::objective::gram::{gram_loss, GramConfig};
use crate::objective::head::{DinoHead, DinoHeadConfig};
use crate::objective::losses::{
    dino_cross_entropy, ibot_masked_loss, koleo, sinkhorn_knopp_split, SinkhornStep, SoftmaxCenter,
};
use crate::objective::masking::BatchMasks;
use crate::vit::stochastic_depth::{with_image_draws, ImageSpan};
use crate::vit::{VisionTransformer, VitFeatures};

/// Backbone plus the DINO head and, optionally, a separate iBOT head (the official default
/// shares the DINO head).
#[derive(Module, Debug)]
pub struct SslModel<B: Backend> {
    pub backbone: VisionTransformer<B>,
    pub dino_head: DinoHead<B>,
    pub ibot_head: Option<DinoHead<B>>,
}

impl<B: Backend> SslModel<B> {
    /// Fresh heads on `backbone`.
    pub fn new(
        backbone: VisionTransformer<B>,
        dino_head: &DinoHeadConfig,
        ibot_head: Option<&DinoHeadConfig>,
        device: &B::Device,
    ) -> Self {
        SslModel {
            backbone,
            dino_head: dino_head.init(device),
            ibot_head: ibot_head.map(|c| c.init(device)),
        }
    }

    /// The head that scores masked patches.
    pub fn ibot(&self) -> &DinoHead<B> {
        self.ibot_head.as_ref().unwrap_or(&self.dino_head)
    }
}

/// How teacher logits become targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Centering {
    /// Sinkhorn-Knopp (DINOv2's `train.centering: sinkhorn_knopp`).
    SinkhornKnopp,
    /// Softmax with an EMA centre (DINO v1, DINOv2's `centering`).
    Softmax,
}

/// Weights and temperatures of the objective (official defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SslLossConfig {
    pub dino_weight: f64,
    pub ibot_weight: f64,
    pub koleo_weight: f64,
    pub student_temp: f64,
    pub centering: Centering,
    pub sinkhorn_iterations: usize,
    /// EMA momentum of the softmax centres.
    pub center_momentum: f64,
    /// Gram anchoring (DINOv3), off by default.
    pub gram: GramConfig,
}

impl Default for SslLossConfig {
    fn default() -> Self {
        SslLossConfig {
            dino_weight: 1.0,
            ibot_weight: 1.0,
            koleo_weight: 0.1,
            student_temp: 0.1,
            centering: Centering::SinkhornKnopp,
            sinkhorn_iterations: 3,
            center_momentum: 0.9,
            gram: GramConfig::default(),
        }
    }
}

/// The softmax-centering state of the DINO and iBOT losses ([1, K] each).
#[derive(Debug, Clone)]
pub struct Centers<B: Backend> {
    pub dino: SoftmaxCenter<B>,
    pub ibot: SoftmaxCenter<B>,
}

impl<B: Backend> Centers<B> {
    /// Zero centres for the DINO head's and the iBOT head's prototypes (the same head's when it
    /// is shared).
    pub fn zeros(
        dino_prototypes: usize,
        ibot_prototypes: usize,
        momentum: f64,
        device: &B::Device,
    ) -> Self {
        Centers {
            dino: SoftmaxCenter::new(Tensor::zeros([1, dino_prototypes], device), momentum),
            ibot: SoftmaxCenter::new(Tensor::zeros([1, ibot_prototypes], device), momentum),
        }
    }
}

/// One multi-crop batch of `n` images, crop-major as the official collate builds it.
#[derive(Debug, Clone)]
pub struct CropBatch<B: Backend> {
    /// [2n, C, H, W]: first global crop of every image, then the second.
    pub global: Tensor<B, 4>,
    /// [L n, C, h, w]: local crop j of every image, for j in 0..L; `None` without local crops.
    pub local: Option<Tensor<B, 4>>,
    /// iBOT masks of the 2n global crops.
    pub masks: BatchMasks,
}

impl<B: Backend> CropBatch<B> {
    /// Source images in the batch.
    pub fn images(&self) -> usize {
        self.global.dims()[0] / 2
    }

    /// Local crops per image.
    pub fn local_crops(&self) -> usize {
        self.local
            .as_ref()
            .map(|l| l.dims()[0] / self.images().max(1))
            .unwrap_or(0)
    }
}

/// The total loss, its terms by name as the official `loss_dict` logs them
/// ([`super::loss_terms`]), and the collapse diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LossReport {
    pub total: f64,
    pub terms: LossTerms,
    /// Mean entropy (nats) of the teacher's class-token targets.
    pub teacher_entropy: f64,
    /// Mean over dimensions of the std over the batch of the student's global class tokens.
    pub cls_std: f64,
}

/// The differentiable total loss and its report.
pub struct SslOutput<B: AutodiffBackend> {
    pub loss: Tensor<B, 1>,
    pub report: LossReport,
    /// With a chunked student, its chunks' graphs: the backbone's gradients come from
    /// [`ChunkedStudent::backward`] after the loss's backward.
    pub chunked: Option<ChunkedStudent<B>>,
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem::<f64>()
}

/// Mean row entropy of probabilities [N, K].
fn entropy<B: Backend>(p: &Tensor<B, 2>) -> f64 {
    let h = (p.clone() * p.clone().clamp_min(1e-30).log())
        .sum_dim(1)
        .mean()
        .neg();
    scalar(&h)
}

/// Mean over dimensions of the std over rows of [N, D], the rows of every replica together.
fn feature_std<B: Backend>(x: &Tensor<B, 2>, replicas: Option<&dyn Replicas<B>>) -> f64 {
    let device = x.device();
    let n = sum_values(replicas, &[x.dims()[0] as f64], &device)[0];
    if n < 2.0 {
        return 0.0;
    }
    let mean = sum_over(replicas, x.clone().sum_dim(0)).div_scalar(n);
    let var =
        sum_over(replicas, (x.clone() - mean).powf_scalar(2.0).sum_dim(0)).div_scalar(n - 1.0);
    scalar(&var.sqrt().mean())
}

/// Rows `indices` of the patch tokens [B, N, D] flattened to [B N, D].
fn gather_patches<B: Backend>(patches: Tensor<B, 3>, indices: &Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let [b, n, d] = patches.dims();
    patches.reshape([b * n, d]).select(0, indices.clone())
}

/// How the student's crops of different sizes go through the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropForward {
    /// One forward per crop size (global, then local).
    PerSize,
    /// Global and local crops packed into one sequence with block-diagonal attention
    /// ([`crate::vit::packed`]), as the official code's `forward_nested`: the same losses, and
    /// 1.13-1.16x the training throughput of `PerSize` on CPU (ViT-S/14, 2x224 + 8x98 crops,
    /// batch 8, whole batch, `dinoadapt-dev bench train --crop-forward both --chunks 1`).
    #[default]
    Packed,
}

/// How the student runs in one iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StudentPass {
    /// The backbone outside the autodiff graph (head warm-up): only the heads learn.
    pub frozen: bool,
    pub forward: CropForward,
    /// Chunks of the batch (by image) that go through the backbones at once, one per thread
    /// ([`super::chunks`]); 1 runs the whole batch in one pass, as on a GPU.
    pub chunks: usize,
    /// The student's global crops are left unmasked (distillation, DINOv2 §5: the iBOT loss
    /// still compares the student's and the teacher's tokens at the mask's positions).
    pub unmasked: bool,
    /// The seed of the iteration's stochastic depth draws, which are keyed by image
    /// ([`with_image_draws`]); `None` takes it from the backend's RNG.
    pub draw_seed: Option<u64>,
    /// Where the batch starts in the global batch: rank x images for a data-parallel
    /// replica, 0 on one device. An image draws the same stochastic depth on any replica.
    pub first_image: usize,
}

/// Final tokens of the global crops (with the iBOT mask) and of the local crops.
pub(super) fn crop_features<B: Backend>(
    backbone: &VisionTransformer<B>,
    global: Tensor<B, 4>,
    mask: Tensor<B, 2, Bool>,
    local: Option<Tensor<B, 4>>,
    forward: CropForward,
) -> (VitFeatures<B>, Option<VitFeatures<B>>) {
    match (local, forward) {
        (Some(l), CropForward::Packed) => {
            let mut f = backbone.forward_packed(vec![(global, Some(mask)), (l, None)]);
            let local = f.pop();
            (f.pop().expect("two groups"), local)
        }
        (local, _) => (
            backbone.forward_features(global, Some(mask), &[]),
            local.map(|l| backbone.forward_features(l, None, &[])),
        ),
    }
}

/// What the student backbone gives the objective.
struct StudentTokens<B: AutodiffBackend> {
    /// Class tokens of the global crops [2n, D].
    cls: Tensor<B, 2>,
    /// All patch tokens of the (masked) global crops [2n, N, D], for Gram anchoring.
    global_patches: Tensor<B, 3>,
    /// The masked patch tokens [M, D].
    patches: Tensor<B, 2>,
    /// Class tokens of the local crops [L n, D].
    local: Option<Tensor<B, 2>>,
    /// With more than one chunk: the chunks' graphs, waiting for the gradient of the tokens.
    chunked: Option<ChunkedStudent<B>>,
}

/// The student backbone over the batch: whole, or in chunks. With `frozen`, the backbone runs
/// outside the autodiff graph (head warm-up).
fn student_tokens<B: AutodiffBackend>(
    backbone: &VisionTransformer<B>,
    batch: &CropBatch<B::InnerBackend>,
    mask: Tensor<B::InnerBackend, 2, Bool>,
    indices: &Tensor<B::InnerBackend, 1, Int>,
    pass: StudentPass,
) -> StudentTokens<B> {
    let StudentPass {
        frozen,
        forward,
        chunks,
        unmasked,
        draw_seed,
        first_image,
    } = pass;
    let mask = if unmasked {
        mask.clone().bool_and(mask.bool_not())
    } else {
        mask
    };
    if frozen {
        let t = frozen_tokens(&backbone.valid(), batch, mask, forward, chunks);
        return StudentTokens {
            cls: Tensor::from_inner(t.cls),
            global_patches: Tensor::from_inner(t.patches.clone()),
            patches: Tensor::from_inner(gather_patches(t.patches, indices)),
            local: t.local.map(Tensor::from_inner),
            chunked: None,
        };
    }
    let indices = Tensor::from_inner(indices.clone());
    // The seed of the stochastic depth draws, given or from the backend's RNG (which the run
    // seeds every iteration): the keep decisions are drawn on the host, so the efficient
    // form's kept images are known without reading a device tensor back at every block.
    let seed = draw_seed.unwrap_or_else(|| {
        Tensor::<B::InnerBackend, 1>::random(
            [1],
            Distribution::Uniform(0.0, 1.0),
            &batch.global.device(),
        )
        .into_scalar()
        .elem::<f64>()
        .to_bits()
    });
    let span = ImageSpan {
        first: first_image,
        count: batch.images(),
    };
    if chunks > 1 && batch.images() > 1 {
        let chunked = ChunkedStudent::forward(backbone, batch, mask, forward, chunks, seed, span);
        let t = chunked.tokens.clone();
        return StudentTokens {
            cls: t.cls,
            global_patches: t.patches.clone(),
            patches: gather_patches(t.patches, &indices),
            local: t.local,
            chunked: Some(chunked),
        };
    }
    let (g, local) = with_image_draws(seed, span, || {
        crop_features(
            backbone,
            Tensor::from_inner(batch.global.clone()),
            Tensor::from_inner(mask),
            batch.local.clone().map(Tensor::from_inner),
            forward,
        )
    });
    StudentTokens {
        cls: g.cls(),
        global_patches: g.patches(),
        patches: gather_patches(g.patches(), &indices),
        local: local.map(|l| l.cls()),
        chunked: None,
    }
}

/// Split `x` [a + b + ..., K] into consecutive row blocks of the given sizes.
fn split_rows<B: Backend>(x: Tensor<B, 2>, sizes: &[usize]) -> Vec<Tensor<B, 2>> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&n| {
            let part = x.clone().slice(start..start + n);
            start += n;
            part
        })
        .collect()
}

/// Head logits for the given row blocks: one call of the shared head, or the DINO head on the
/// class tokens and the iBOT head on the patches.
fn head_logits<B: Backend>(
    model: &SslModel<B>,
    cls: Vec<Tensor<B, 2>>,
    patches: Option<Tensor<B, 2>>,
) -> (Vec<Tensor<B, 2>>, Option<Tensor<B, 2>>) {
    let cls_sizes: Vec<usize> = cls.iter().map(|t| t.dims()[0]).collect();
    match (&model.ibot_head, patches) {
        (None, Some(p)) => {
            let m = p.dims()[0];
            let mut sizes = cls_sizes.clone();
            sizes.push(m);
            let mut rows = cls;
            rows.push(p);
            let mut out = split_rows(model.dino_head.forward(Tensor::cat(rows, 0)), &sizes);
            let patches = out.pop();
            (out, patches)
        }
        (_, patches) => {
            let out = split_rows(model.dino_head.forward(Tensor::cat(cls, 0)), &cls_sizes);
            (out, patches.map(|p| model.ibot().forward(p)))
        }
    }
}

/// One forward pass of the DINOv2 objective. The teacher runs without gradients; `pass` says
/// whether the student backbone is in the graph and how its crops go through it. With
/// `gram_targets` (the Gram teacher's patch tokens of the global crops on the student's grid,
/// [2n, N, D]), the Gram anchoring term is added with `cfg.gram`'s weight.
#[allow(clippy::too_many_arguments)]
pub fn ssl_forward<B: AutodiffBackend>(
    student: &SslModel<B>,
    teacher: &SslModel<B::InnerBackend>,
    batch: &CropBatch<B::InnerBackend>,
    teacher_temp: f64,
    cfg: &SslLossConfig,
    centers: &mut Centers<B::InnerBackend>,
    pass: StudentPass,
    gram_targets: Option<Tensor<B::InnerBackend, 3>>,
    replicas: Option<&dyn Replicas<B::InnerBackend>>,
) -> SslOutput<B> {
    let device = batch.global.device();
    let n2 = batch.global.dims()[0];
    let n = n2 / 2;
    let masks = &batch.masks;
    let tokens = masks.masks.first().map(|m| m.len()).unwrap_or(0);
    let m = masks.indices.len();
    let flat: Vec<bool> = masks.masks.iter().flatten().copied().collect();
    let mask =
        Tensor::<B::InnerBackend, 2, Bool>::from_data(TensorData::new(flat, [n2, tokens]), &device);
    let indices = Tensor::<B::InnerBackend, 1, Int>::from_data(
        TensorData::new(
            masks.indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [m],
        ),
        &device,
    );

    // Teacher: class tokens with the two global crops swapped, and the masked patch tokens.
    let t = teacher
        .backbone
        .forward_features_chunked(batch.global.clone(), &[], pass.chunks);
    let t_cls = t.cls();
    let t_cls = Tensor::cat(vec![t_cls.clone().slice(n..n2), t_cls.slice(0..n)], 0);
    let t_patches = (m > 0).then(|| gather_patches(t.patches(), &indices));
    let (mut t_cls_logits, t_patch_logits) = head_logits(teacher, vec![t_cls], t_patches);
    let t_cls_logits = t_cls_logits.remove(0);
    let k_dino = t_cls_logits.dims()[1];
    let k_ibot = teacher.ibot().last_layer_g.dims()[0];
    // Across replicas, the batch statistics are those of the global batch: n2 x world
    // class-token rows, and every replica's masked patches.
    let world = replicas.map_or(1, |r| r.world());
    let m_global = sum_values(replicas, &[m as f64], &device)[0].round() as usize;
    let sum_replicas = |x: Tensor<B::InnerBackend, 2>| sum_over(replicas, x);
    let (t_dino, t_ibot) = match cfg.centering {
        Centering::SinkhornKnopp => {
            let step = SinkhornStep {
                prototypes: k_dino,
                teacher_temp,
                n_iterations: cfg.sinkhorn_iterations,
                n_samples: n2 * world,
            };
            let dino = sinkhorn_knopp_split(Some(t_cls_logits), &step, &sum_replicas, &device)
                .expect("class-token targets");
            let ibot = if m_global > 0 {
                let step = SinkhornStep {
                    prototypes: k_ibot,
                    teacher_temp,
                    n_iterations: cfg.sinkhorn_iterations,
                    n_samples: m_global,
                };
                sinkhorn_knopp_split(t_patch_logits, &step, &sum_replicas, &device)
            } else {
                None
            };
            (dino, ibot)
        }
        Centering::Softmax => {
            let mean_row = |sum: Tensor<B::InnerBackend, 2>, rows: usize| {
                sum_replicas(sum).div_scalar(rows.max(1) as f64)
            };
            let d = centers.dino.targets(t_cls_logits.clone(), teacher_temp);
            centers
                .dino
                .record(mean_row(t_cls_logits.sum_dim(0), n2 * world));
            let mut i = None;
            if m_global > 0 {
                let local_sum = match &t_patch_logits {
                    Some(p) => p.clone().sum_dim(0),
                    None => Tensor::zeros([1, k_ibot], &device),
                };
                i = t_patch_logits.map(|p| centers.ibot.targets(p, teacher_temp));
                centers.ibot.record(mean_row(local_sum, m_global));
            }
            (d, i)
        }
    };
    let teacher_entropy = entropy(&t_dino);
    let teacher_entropy = sum_values(replicas, &[teacher_entropy], &device)[0] / world as f64;

    // Student.
    let StudentTokens {
        cls: s_cls,
        global_patches: s_global_patches,
        patches: s_patches,
        local: s_local,
        chunked,
    } = student_tokens::<B>(&student.backbone, batch, mask, &indices, pass);
    let cls_std = feature_std(&s_cls.clone().inner(), replicas);
    let mut rows = Vec::new();
    if let Some(l) = &s_local {
        rows.push(l.clone());
    }
    rows.push(s_cls.clone());
    let (mut logits, s_patch_logits) = head_logits(student, rows, (m > 0).then_some(s_patches));
    let s_global = logits.pop().expect("global logits");
    let s_local_logits = logits.pop();

    let n_local = batch.local_crops();
    let terms = ((n_local * 2).max(1) + 2) as f64;
    let teacher_list: Vec<Tensor<B, 2>> = t_dino
        .clone()
        .chunk(2, 0)
        .into_iter()
        .map(Tensor::from_inner)
        .collect();
    let t_dino = Tensor::<B, 2>::from_inner(t_dino);
    let st = cfg.student_temp;

    let dino_global = dino_cross_entropy(&[s_global], &[t_dino], st).mul_scalar(2.0 / terms);
    let mut loss = dino_global.clone().mul_scalar(cfg.dino_weight);
    let mut report = LossReport {
        teacher_entropy,
        cls_std,
        ..LossReport::default()
    };
    let logged = &mut report.terms;
    // The DINOv2 terms, always reported (0 where a batch has none).
    logged.set(DINO_LOCAL, 0.0);
    logged.set(DINO_GLOBAL, scalar(&dino_global.clone().inner()));
    logged.set(KOLEO, 0.0);
    logged.set(IBOT, 0.0);
    if let (Some(l), true) = (s_local_logits, n_local > 0) {
        let dino_local =
            dino_cross_entropy(&l.chunk(n_local, 0), &teacher_list, st).div_scalar(terms);
        logged.set(DINO_LOCAL, scalar(&dino_local.clone().inner()));
        loss = loss + dino_local.mul_scalar(cfg.dino_weight);
    }
    if cfg.koleo_weight > 0.0 && n >= 2 {
        let halves = s_cls.chunk(2, 0);
        let k = halves
            .into_iter()
            .map(|h| koleo(h).0)
            .reduce(|a, b| a + b)
            .expect("two global crops")
            .mul_scalar(cfg.koleo_weight);
        logged.set(KOLEO, scalar(&k.clone().inner()) / 2.0);
        loss = loss + k;
    }
    if let (Some(s), Some(t)) = (s_patch_logits, t_ibot) {
        let weights =
            Tensor::<B, 1>::from_data(TensorData::new(masks.weights.clone(), [m]), &device);
        let ibot = ibot_masked_loss(s, Tensor::from_inner(t), weights, n2, st);
        logged.set(IBOT, scalar(&ibot.clone().inner()) / 2.0);
        loss = loss + ibot.mul_scalar(cfg.ibot_weight);
    }
    if let Some(targets) = gram_targets {
        let gram = gram_loss(s_global_patches, Tensor::from_inner(targets), &cfg.gram);
        logged.set(GRAM, scalar(&gram.clone().inner()));
        loss = loss + gram.mul_scalar(cfg.gram.weight);
    }
    report.total = scalar(&loss.clone().inner());
    if world > 1 {
        // The global batch's figures: every term is a mean over equal shards.
        let mut values: Vec<f64> = report.terms.iter().map(|(_, v)| v).collect();
        values.push(report.total);
        let mean: Vec<f64> = sum_values(replicas, &values, &device)
            .into_iter()
            .map(|v| v / world as f64)
            .collect();
        let names: Vec<&'static str> = report.terms.iter().map(|(n, _)| n).collect();
        for (name, v) in names.into_iter().zip(&mean) {
            report.terms.set(name, *v);
        }
        report.total = mean[mean.len() - 1];
    }
    SslOutput {
        loss,
        report,
        chunked,
    }
}
