//! One DINOv2 training iteration, as the official `train.py` loop runs it: forward and backward
//! of the objective, gradient clipping per student module, AdamW with each parameter's lr and
//! weight decay from the schedules and its multipliers, then the EMA teacher update.

use std::collections::HashMap;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::batch_chunks::add_gradients;
use super::clip::{clip_to_norm, squared_grad_norm};
use super::optimizer::{AdamW, AdamWConfig};
use super::param_paths::{param_names, restore, snapshot};
use super::replicas::{average_gradients, lead_values, Replicas};
use super::ssl::{
    ssl_forward, Centers, CropBatch, CropForward, LossReport, SslLossConfig, SslModel, StudentPass,
};
use crate::checkpoint::{HostTensor, NamedTensors};
use crate::objective::ema::ema_update;
use crate::objective::gram::{resample_grid, resample_images};
use crate::objective::param_groups::{param_group, ParamGroup};
use crate::vit::VisionTransformer;

/// Optimisation settings that are not schedules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Max global gradient norm per student module (0 disables clipping).
    pub clip_grad: f64,
    /// Layer-wise lr decay of the backbone blocks.
    pub layerwise_decay: f64,
    /// Extra lr multiplier of the patch embedding.
    pub patch_embed_lr_mult: f64,
    pub adamw_beta1: f64,
    pub adamw_beta2: f64,
}

impl Default for OptimConfig {
    /// The official `ssl_default_config` values.
    fn default() -> Self {
        OptimConfig {
            clip_grad: 3.0,
            layerwise_decay: 0.9,
            patch_embed_lr_mult: 0.2,
            adamw_beta1: 0.9,
            adamw_beta2: 0.999,
        }
    }
}

/// The schedule values of one iteration.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepValues {
    pub lr: f64,
    pub last_layer_lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub teacher_temp: f64,
    /// Head warm-up: the backbone gets no gradient and no update.
    pub backbone_frozen: bool,
}

/// What one iteration reports.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepReport {
    pub loss: LossReport,
    /// Gradient norms before clipping.
    pub grad_norm_backbone: f64,
    pub grad_norm_dino_head: f64,
    pub grad_norm_ibot_head: f64,
}

/// Student, teacher, optimizer and centring state of a run.
pub struct Trainer<B: AutodiffBackend> {
    pub student: SslModel<B>,
    pub teacher: SslModel<B::InnerBackend>,
    pub optimizer: AdamW<B::InnerBackend>,
    pub centers: Centers<B::InnerBackend>,
    pub loss: SslLossConfig,
    pub optim: OptimConfig,
    /// How the student's crops go through the backbone (per size or packed).
    pub crop_forward: CropForward,
    /// Chunks of the batch that go through the backbones at once ([`super::chunks`]): one per
    /// thread on a CPU, 1 (the default) on a GPU.
    pub chunks: usize,
    /// The Gram anchoring teacher: a snapshot of the EMA teacher's backbone, taken by
    /// [`refresh_gram_teacher`](Self::refresh_gram_teacher); `None` until the first one.
    pub gram_teacher: Option<VisionTransformer<B::InnerBackend>>,
    /// Distillation ([`distill_from`](Self::distill_from)): the EMA of the student, the run's
    /// output model, while `teacher` stays frozen.
    pub student_ema: Option<SslModel<B::InnerBackend>>,
    /// The other replicas of a data-parallel run ([`super::replicas`]); `None` on one device.
    pub replicas: Option<Arc<dyn Replicas<B::InnerBackend>>>,
    /// The seed of the next step's stochastic depth draws; `None` takes it from the backend's
    /// RNG. Data-parallel replicas share one seed per iteration.
    pub draw_seed: Option<u64>,
    groups: HashMap<String, ParamGroup>,
}

/// The multipliers of every student parameter, by path.
fn groups_of<B: AutodiffBackend>(
    student: &SslModel<B>,
    optim: &OptimConfig,
) -> HashMap<String, ParamGroup> {
    let depth = student.backbone.config.depth;
    param_names::<B, _>(student)
        .into_iter()
        .map(|(_, name)| {
            let group = match name.strip_prefix("backbone.") {
                Some(rest) => param_group(
                    rest,
                    depth,
                    optim.layerwise_decay,
                    optim.patch_embed_lr_mult,
                ),
                None => param_group(&name, 0, 1.0, optim.patch_embed_lr_mult),
            };
            (name, group)
        })
        .collect()
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A run whose teacher starts as a copy of the student.
    pub fn new(student: SslModel<B>, loss: SslLossConfig, optim: OptimConfig) -> Self {
        let teacher = student.valid();
        let device = student.backbone.device();
        let k = student.dino_head.last_layer_g.dims()[0];
        let k_ibot = student.ibot().last_layer_g.dims()[0];
        let groups = groups_of(&student, &optim);
        Trainer {
            teacher,
            optimizer: AdamW::new(AdamWConfig {
                beta1: optim.adamw_beta1,
                beta2: optim.adamw_beta2,
                eps: 1e-8,
            }),
            centers: Centers::zeros(k, k_ibot, loss.center_momentum, &device),
            student,
            loss,
            optim,
            crop_forward: CropForward::default(),
            chunks: 1,
            gram_teacher: None,
            student_ema: None,
            replicas: None,
            draw_seed: None,
            groups,
        }
    }

    /// The lr multiplier, weight decay multiplier and last-layer flag of a student parameter.
    pub fn group(&self, name: &str) -> Option<ParamGroup> {
        self.groups.get(name).copied()
    }

    /// Distillation (DINOv2 §5): `teacher` (a larger model with its DINO/iBOT heads, frozen:
    /// it is never updated) gives the targets, the student's global crops go unmasked, and an
    /// EMA of the student, started from the student, becomes the run's output model.
    pub fn distill_from(&mut self, teacher: SslModel<B::InnerBackend>) {
        self.teacher = teacher;
        self.student_ema = Some(self.student.valid());
    }

    /// Resamples the position embeddings of every backbone (student, teacher, the student's
    /// EMA and the Gram teacher) once to a `grid` x `grid` patch grid, as a stage at a new
    /// global crop size does; the optimizer forgets the student table's moments (its shape
    /// changed). A frozen distillation teacher keeps its own table.
    pub fn resample_pos_embed(&mut self, grid: usize) {
        if self.student.backbone.config.pos_grid == grid {
            return;
        }
        let student = self.student.clone();
        self.student = SslModel {
            backbone: student.backbone.with_pos_grid(grid),
            ..student
        };
        if self.student_ema.is_none() {
            let teacher = self.teacher.clone();
            self.teacher = SslModel {
                backbone: teacher.backbone.with_pos_grid(grid),
                ..teacher
            };
        }
        if let Some(ema) = self.student_ema.take() {
            self.student_ema = Some(SslModel {
                backbone: ema.backbone.with_pos_grid(grid),
                ..ema
            });
        }
        if let Some(gram) = self.gram_teacher.take() {
            self.gram_teacher = Some(gram.with_pos_grid(grid));
        }
        self.optimizer.forget("backbone.pos_embed");
    }

    /// The model the run produces: the EMA teacher, or in distillation the student's EMA.
    pub fn output(&self) -> &SslModel<B::InnerBackend> {
        self.student_ema.as_ref().unwrap_or(&self.teacher)
    }

    /// Before iteration `iteration`: loads the Gram teacher from the EMA teacher when the
    /// Gram schedule says so ([`GramConfig::refresh_at`](crate::objective::gram::GramConfig));
    /// whether it did.
    pub fn refresh_gram_teacher(&mut self, iteration: usize) -> bool {
        if !self.loss.gram.refresh_at(iteration) {
            return false;
        }
        self.gram_teacher = Some(self.output().backbone.clone());
        true
    }

    /// The Gram teacher's patch tokens of the global crops on the student's grid [2n, N, D].
    fn gram_targets(
        &self,
        batch: &CropBatch<B::InnerBackend>,
    ) -> Option<burn::tensor::Tensor<B::InnerBackend, 3>> {
        let gram = self.gram_teacher.as_ref()?;
        if !self.loss.gram.enabled() {
            return None;
        }
        let [_, _, h, w] = batch.global.dims();
        let grid = gram.grid_of(h, w);
        let scale = self.loss.gram.teacher_scale;
        let p = gram.config.patch_size;
        let images = if scale > 1.0 {
            // The larger view, a whole number of patches.
            let size = |x: usize| ((x as f64 * scale / p as f64).round() as usize).max(1) * p;
            resample_images(batch.global.clone(), (size(h), size(w)))
        } else {
            batch.global.clone()
        };
        let [_, _, hh, ww] = images.dims();
        let patches = gram
            .forward_features_chunked(images, &[], self.chunks)
            .patches();
        Some(resample_grid(patches, gram.grid_of(hh, ww), grid, false))
    }

    /// One iteration on `batch`.
    pub fn step(&mut self, batch: &CropBatch<B::InnerBackend>, v: StepValues) -> StepReport {
        let gram_targets = self.gram_targets(batch);
        let out = ssl_forward(
            &self.student,
            &self.teacher,
            batch,
            v.teacher_temp,
            &self.loss,
            &mut self.centers,
            StudentPass {
                frozen: v.backbone_frozen,
                forward: self.crop_forward,
                chunks: self.chunks,
                unmasked: self.student_ema.is_some(),
                draw_seed: self.draw_seed,
                first_image: self.replicas.as_ref().map_or(0, |r| r.rank()) * batch.images(),
            },
            gram_targets,
            self.replicas.as_deref(),
        );
        let mut raw = out.loss.backward();
        let chunked = out.chunked.map(|s| s.backward(&mut raw));
        let mut grads = GradientsParams::from_grads(raw, &self.student);
        if let Some(backbone) = chunked {
            add_gradients::<B, _>(&self.student.backbone, backbone, &mut grads);
        }
        if let Some(replicas) = &self.replicas {
            let device = self.teacher.backbone.device();
            average_gradients::<B, _, _>(&self.student, &mut grads, replicas.as_ref(), &device);
        }
        let max = if self.optim.clip_grad > 0.0 {
            self.optim.clip_grad
        } else {
            f64::INFINITY
        };
        let student = &self.student;
        let squares = [
            squared_grad_norm::<B, _>(&student.backbone, &grads),
            squared_grad_norm::<B, _>(&student.dino_head, &grads),
            student
                .ibot_head
                .as_ref()
                .map_or(0.0, |h| squared_grad_norm::<B, _>(h, &grads)),
        ];
        // Every replica holds the same averaged gradients; it clips with rank 0's norms, which
        // its own (atomic, unordered) GPU sums would only match to the last bits.
        let device = self.teacher.backbone.device();
        let squares = lead_values(self.replicas.as_deref(), &squares, &device);
        let [grad_norm_backbone, grad_norm_dino_head, grad_norm_ibot_head] =
            [squares[0].sqrt(), squares[1].sqrt(), squares[2].sqrt()];
        clip_to_norm::<B, _>(&student.backbone, &mut grads, grad_norm_backbone, max);
        clip_to_norm::<B, _>(&student.dino_head, &mut grads, grad_norm_dino_head, max);
        if let Some(h) = &student.ibot_head {
            clip_to_norm::<B, _>(h, &mut grads, grad_norm_ibot_head, max);
        }
        let groups = &self.groups;
        let hyper = |name: &str| {
            // Head warm-up: the backbone stays as it is. (The prototype layer's weight_g trains,
            // as in DINOv2, with the last layer's schedule.)
            if v.backbone_frozen && name.starts_with("backbone.") {
                return None;
            }
            let g = groups.get(name)?;
            let lr = if g.is_last_layer {
                v.last_layer_lr
            } else {
                v.lr
            };
            Some((lr * g.lr_multiplier, v.wd * g.wd_multiplier))
        };
        self.student = self.optimizer.step(self.student.clone(), grads, hyper);
        match self.student_ema.take() {
            Some(ema) => {
                self.student_ema = Some(ema_update(ema, &self.student.valid(), v.momentum));
            }
            None => {
                self.teacher = ema_update(self.teacher.clone(), &self.student.valid(), v.momentum);
            }
        }
        StepReport {
            loss: out.report,
            grad_norm_backbone,
            grad_norm_dino_head,
            grad_norm_ibot_head,
        }
    }

    /// Everything needed to continue the run exactly: tensors by name (`student.`, `teacher.`,
    /// `optimizer.`, `center.` prefixes) and the optimizer's per-parameter step counts.
    pub fn save_state(&mut self) -> (NamedTensors, Vec<(String, u64)>) {
        let mut tensors = NamedTensors::new();
        let prefixed = |prefix: &str, t: NamedTensors| {
            t.into_iter()
                .map(move |(k, v)| (format!("{prefix}.{k}"), v))
                .collect::<Vec<_>>()
        };
        tensors.extend(prefixed("student", snapshot::<B, _>(&self.student)));
        tensors.extend(prefixed(
            "teacher",
            snapshot::<B::InnerBackend, _>(&self.teacher),
        ));
        let (opt, steps) = self.optimizer.save();
        tensors.extend(prefixed("optimizer", opt));
        let host = |t: burn::tensor::Tensor<B::InnerBackend, 2>| {
            let shape = t.dims().to_vec();
            HostTensor::new(
                shape,
                t.into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .expect("f32"),
            )
        };
        if let Some(ema) = &self.student_ema {
            tensors.extend(prefixed("student_ema", snapshot::<B::InnerBackend, _>(ema)));
        }
        if let Some(gram) = &self.gram_teacher {
            tensors.extend(prefixed(
                "gram_teacher",
                snapshot::<B::InnerBackend, _>(gram),
            ));
        }
        tensors.push(("center.dino".into(), host(self.centers.dino.current())));
        tensors.push(("center.ibot".into(), host(self.centers.ibot.current())));
        (tensors, steps)
    }

    /// Restore [`save_state`](Self::save_state) into this trainer (same architecture).
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, HostTensor>,
        steps: &[(String, u64)],
    ) -> Result<(), String> {
        self.load_weights(tensors)?;
        self.load_optimizer(tensors, steps)?;
        let inner_device = self.teacher.backbone.device();
        let ema = with_prefix(tensors, "student_ema");
        if !ema.is_empty() {
            let start = self.student.valid();
            self.student_ema =
                Some(restore(start, &ema, &inner_device).map_err(|e| format!("student EMA: {e}"))?);
        }
        let gram = with_prefix(tensors, "gram_teacher");
        self.gram_teacher = if gram.is_empty() {
            None
        } else {
            Some(
                restore(self.teacher.backbone.clone(), &gram, &inner_device)
                    .map_err(|e| format!("gram teacher: {e}"))?,
            )
        };
        let center = |name: &str| {
            tensors
                .get(name)
                .map(|t| {
                    burn::tensor::Tensor::<B::InnerBackend, 2>::from_data(
                        burn::tensor::TensorData::new(t.data.clone(), t.shape.clone()),
                        &inner_device,
                    )
                })
                .ok_or_else(|| format!("`{name}` is missing"))
        };
        self.centers.dino.center = center("center.dino")?;
        self.centers.ibot.center = center("center.ibot")?;
        Ok(())
    }

    /// The student and teacher of a saved state (backbones and DINO/iBOT heads), as a run
    /// that continues another run starts: its optimizer, centres and schedules start afresh.
    pub fn load_weights(&mut self, tensors: &HashMap<String, HostTensor>) -> Result<(), String> {
        let device = self.student.backbone.device();
        let inner_device = self.teacher.backbone.device();
        self.student = restore(
            self.student.clone(),
            &with_prefix(tensors, "student"),
            &device,
        )
        .map_err(|e| format!("student: {e}"))?;
        self.teacher = restore(
            self.teacher.clone(),
            &with_prefix(tensors, "teacher"),
            &inner_device,
        )
        .map_err(|e| format!("teacher: {e}"))?;
        Ok(())
    }

    /// The AdamW moments and per-parameter step counts of a saved state.
    pub fn load_optimizer(
        &mut self,
        tensors: &HashMap<String, HostTensor>,
        steps: &[(String, u64)],
    ) -> Result<(), String> {
        let inner_device = self.teacher.backbone.device();
        self.optimizer = AdamW::load(
            self.optimizer.config,
            &with_prefix(tensors, "optimizer"),
            steps,
            &inner_device,
        )
        .map_err(|k| format!("optimizer state `{k}` is missing"))?;
        Ok(())
    }
}

/// The tensors under `prefix.`, with the prefix taken off.
fn with_prefix(tensors: &HashMap<String, HostTensor>, prefix: &str) -> HashMap<String, HostTensor> {
    let p = format!("{prefix}.");
    tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&p).map(|r| (r.to_string(), v.clone())))
        .collect()
}
