//! The DINOv2 losses, computed as the official code computes them (`dinov2/loss/*.py`, see
//! `../shared/fixtures/README.md` §7): DINO class-token cross-entropy with Sinkhorn-Knopp or
//! softmax centering of the teacher, the iBOT masked-patch loss, and KoLeo.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use super::cpu_cross_entropy;
use crate::cpu_autodiff::is_cpu_autodiff;

/// Sinkhorn-Knopp targets for teacher logits [N, K] (`sinkhorn_knopp_teacher`). `n_samples` is
/// the B the columns are normalised to: N for DINO, the total number of masked patches for iBOT.
/// As in the reference there is no max-subtraction before `exp`.
pub fn sinkhorn_knopp<B: Backend>(
    teacher: Tensor<B, 2>,
    teacher_temp: f64,
    n_iterations: usize,
    n_samples: usize,
) -> Tensor<B, 2> {
    let [_, k] = teacher.dims();
    let device = teacher.device();
    let step = SinkhornStep {
        prototypes: k,
        teacher_temp,
        n_iterations,
        n_samples,
    };
    sinkhorn_knopp_split(Some(teacher), &step, &|x| x, &device).expect("targets of the rows")
}

/// The settings of one Sinkhorn-Knopp call over a batch that may be split across replicas.
#[derive(Debug, Clone, Copy)]
pub struct SinkhornStep {
    /// K.
    pub prototypes: usize,
    pub teacher_temp: f64,
    pub n_iterations: usize,
    /// B: the rows of the whole (global) batch.
    pub n_samples: usize,
}

/// Sinkhorn-Knopp over a batch whose rows are split across replicas, as the official
/// `SinkhornKnopp` runs under `torch.distributed`: the total and the prototype (row) sums of Q
/// are summed over the replicas by `sum_replicas` (the identity on one device); the column
/// normalisation is per sample and stays local. `teacher` holds this replica's rows, `None`
/// when it has none (a shard without masked patches), in which case it adds zeros to the sums
/// and gets no targets. Every replica makes the same calls of `sum_replicas`, in the same order.
pub fn sinkhorn_knopp_split<B: Backend>(
    teacher: Option<Tensor<B, 2>>,
    step: &SinkhornStep,
    sum_replicas: &dyn Fn(Tensor<B, 2>) -> Tensor<B, 2>,
    device: &B::Device,
) -> Option<Tensor<B, 2>> {
    let q = teacher.map(|t| t.div_scalar(step.teacher_temp).exp().transpose()); // [K, N]
    let k = step.prototypes as f64;
    let b = step.n_samples as f64;
    let local_total = match &q {
        Some(q) => q.clone().sum().reshape([1, 1]),
        None => Tensor::zeros([1, 1], device),
    };
    let total = sum_replicas(local_total);
    let mut q = q.map(|q| q / total);
    for _ in 0..step.n_iterations {
        let local_rows = match &q {
            Some(q) => q.clone().sum_dim(1), // [K, 1]
            None => Tensor::zeros([step.prototypes, 1], device),
        };
        let rows = sum_replicas(local_rows);
        q = q.map(|q| {
            let q = (q / rows).div_scalar(k);
            let cols = q.clone().sum_dim(0); // [1, N]
            (q / cols).div_scalar(b)
        });
    }
    q.map(|q| q.mul_scalar(b).transpose())
}

/// Softmax centering of the teacher with an EMA centre, updated lazily as the reference does:
/// [`update`](Self::update) records the batch statistic, and the EMA is applied at the start of
/// the next [`targets`](Self::targets) call.
#[derive(Debug, Clone)]
pub struct SoftmaxCenter<B: Backend> {
    /// [1, K]
    pub center: Tensor<B, 2>,
    pub momentum: f64,
    pending: Option<Tensor<B, 2>>,
}

impl<B: Backend> SoftmaxCenter<B> {
    pub fn new(center: Tensor<B, 2>, momentum: f64) -> Self {
        SoftmaxCenter {
            center,
            momentum,
            pending: None,
        }
    }

    fn apply_pending(&mut self) {
        if let Some(stat) = self.pending.take() {
            self.center = self.center.clone().mul_scalar(self.momentum)
                + stat.mul_scalar(1.0 - self.momentum);
        }
    }

    /// softmax((teacher - center) / temp) over K, for teacher logits [N, K].
    pub fn targets(&mut self, teacher: Tensor<B, 2>, teacher_temp: f64) -> Tensor<B, 2> {
        self.apply_pending();
        softmax((teacher - self.center.clone()).div_scalar(teacher_temp), 1)
    }

    /// Record the batch statistic: the mean teacher row (sum over rows / (rows x world size)).
    pub fn update(&mut self, teacher: Tensor<B, 2>) {
        let n = teacher.dims()[0] as f64;
        self.record(teacher.sum_dim(0).div_scalar(n));
    }

    /// Record a batch statistic computed elsewhere (the mean teacher row [1, K] of a global
    /// batch, reduced over replicas).
    pub fn record(&mut self, mean_row: Tensor<B, 2>) {
        self.pending = Some(mean_row);
    }

    /// The centre with any pending update applied.
    pub fn current(&mut self) -> Tensor<B, 2> {
        self.apply_pending();
        self.center.clone()
    }
}

/// `DINOLoss.forward`: -Σ_students Σ_teachers mean_rows(Σ_k t · log_softmax(s / τ_s)).
/// On the CPU student, one fused op per student ([`cpu_cross_entropy`]).
pub fn dino_cross_entropy<B: Backend>(
    students: &[Tensor<B, 2>],
    teachers: &[Tensor<B, 2>],
    student_temp: f64,
) -> Tensor<B, 1> {
    let mut total: Option<Tensor<B, 1>> = None;
    for s in students {
        let rows = s.dims()[0];
        let s = match cpu_cross_entropy::soft_cross_entropy(
            s.clone(),
            teachers,
            &vec![1.0 / rows as f32; rows],
            student_temp,
        ) {
            Ok(term) => {
                total = Some(match total {
                    Some(acc) => acc + term,
                    None => term,
                });
                continue;
            }
            Err(s) => s,
        };
        let lsm = log_softmax(s.div_scalar(student_temp), 1);
        for t in teachers {
            let term = (t.clone() * lsm.clone()).sum_dim(1).mean().neg();
            total = Some(match total {
                Some(acc) => acc + term,
                None => term,
            });
        }
    }
    total.expect("at least one student and one teacher")
}

/// `iBOTPatchLoss.forward_masked`: -Σ_i w_i Σ_k t_ik log_softmax(s_i/τ_s)_k / n_images, over the
/// gathered masked patches [M, K] with their weights [M] (1 / masked patches of their image);
/// `n_images` counts every global-crop image, masked or not.
/// On the CPU student, one fused op ([`cpu_cross_entropy`]).
pub fn ibot_masked_loss<B: Backend>(
    student: Tensor<B, 2>,
    targets: Tensor<B, 2>,
    weights: Tensor<B, 1>,
    n_images: usize,
    student_temp: f64,
) -> Tensor<B, 1> {
    if is_cpu_autodiff(&student) {
        // The weights [M] read back once: this is the CPU.
        let w = weights.clone().into_data().convert::<f32>();
        let w = w.as_slice::<f32>().expect("f32 weights");
        let w: Vec<f32> = w.iter().map(|w| w / n_images as f32).collect();
        let targets = std::slice::from_ref(&targets);
        if let Ok(loss) =
            cpu_cross_entropy::soft_cross_entropy(student.clone(), targets, &w, student_temp)
        {
            return loss;
        }
    }
    let per_patch = (targets * log_softmax(student.div_scalar(student_temp), 1)).sum_dim(1); // [M, 1]
    let weighted = per_patch.squeeze_dim::<1>(1) * weights;
    weighted.sum().neg().div_scalar(n_images as f64)
}

/// The iBOT weights of each masked patch: 1 / max(1, masked patches of its image), for a flat
/// [B, N] mask, in the order of the masked entries (row-major).
pub fn ibot_mask_weights<B: Backend>(masks: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
    let per_image = masks
        .clone()
        .int()
        .sum_dim(1)
        .float()
        .clamp_min(1.0)
        .recip(); // [B, 1]
    let [b, n] = masks.dims();
    per_image.expand([b, n])
}

/// KoLeo loss on rows [N, D] (`KoLeoLoss`): L2-normalise, find each row's nearest neighbour by
/// dot product (the diagonal excluded), and return -mean(log(‖x - x_nn + 1e-8‖ + 1e-8)) with the
/// neighbour indices.
pub fn koleo<B: Backend>(x: Tensor<B, 2>) -> (Tensor<B, 1>, Tensor<B, 1, Int>) {
    const EPS: f64 = 1e-8;
    let [n, _] = x.dims();
    let device = x.device();
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(EPS);
    let x = x / norm;
    let dots = x.clone().matmul(x.clone().transpose());
    let eye = Tensor::<B, 2, Int>::eye(n, &device).equal_elem(1);
    let dots = dots.mask_fill(eye, -1.0);
    let nn = dots.argmax(1).squeeze_dim::<1>(1);
    let neighbours = x.clone().select(0, nn.clone());
    let dist = (x - neighbours)
        .add_scalar(EPS)
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt();
    let loss = dist.add_scalar(EPS).log().mean().neg();
    (loss, nn)
}
