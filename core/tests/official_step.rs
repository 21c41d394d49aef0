//! Training-step parity with the official DINOv2 loop: three iterations of `train.py` +
//! `SSLMetaArch` on a tiny model (`tests/fixtures/official_step`, made by its `generate.py` from
//! the official code) against three `Trainer::step`s from the same weights, batches, masks and
//! schedule values: every logged loss term, the gradient norms per student module, and every
//! student and teacher weight after each iteration. Variants: Sinkhorn-Knopp centering with the
//! iBOT head shared with the DINO head, and softmax centering with a separate iBOT head; the
//! student runs whole and in chunks.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::HostTensor;
use dinoadapt_core::objective::head::{DinoHead, DinoHeadConfig};
use dinoadapt_core::objective::masking::BatchMasks;
use dinoadapt_core::objective::ScheduleConfig;
use dinoadapt_core::train::{
    Centering, CropBatch, OptimConfig, SslLossConfig, SslModel, StepValues, Trainer,
};
use dinoadapt_core::vit::{
    FfnConfig, PosEmbedInterpolation, StateDict, VisionTransformer, VitConfig,
};
use serde_json::Value;

type AB = Autodiff<Flex>;

fn fixture_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures/official_step")
}

struct Fixture {
    tensors: HashMap<String, HostTensor>,
    meta: Value,
    variant: Value,
}

impl Fixture {
    fn load(variant: &str) -> Self {
        let dir = fixture_dir();
        let (tensors, _) = read_safetensors(&dir.join(format!("{variant}.safetensors"))).unwrap();
        let meta: Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        let variant = meta["variants"][variant].clone();
        Fixture {
            tensors: tensors.into_iter().collect(),
            meta,
            variant,
        }
    }

    fn get(&self, key: &str) -> &HostTensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no `{key}`"))
    }

    fn scalar(&self, key: &str) -> f64 {
        self.get(key).data[0] as f64
    }

    /// `prefix.*` with the prefix removed.
    fn state(&self, prefix: &str) -> StateDict {
        let p = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|r| (r.to_string(), v.clone())))
            .collect()
    }

    fn usize(&self, key: &str) -> usize {
        self.meta[key].as_u64().unwrap() as usize
    }

    fn cfg(&self, path: &[&str]) -> &Value {
        path.iter().fold(&self.variant["config"], |v, k| &v[*k])
    }

    fn cfg_f64(&self, path: &[&str]) -> f64 {
        self.cfg(path).as_f64().unwrap()
    }

    fn cfg_usize(&self, path: &[&str]) -> usize {
        self.cfg(path).as_u64().unwrap() as usize
    }

    fn vit_config(&self) -> VitConfig {
        let shape = &self.meta["shape"];
        let d = shape["embed_dim"].as_u64().unwrap() as usize;
        let patch = shape["patch_size"].as_u64().unwrap() as usize;
        let mut c = VitConfig::preset("vits14_reg").unwrap();
        c.embed_dim = d;
        c.depth = shape["depth"].as_u64().unwrap() as usize;
        c.num_heads = shape["num_heads"].as_u64().unwrap() as usize;
        c.patch_size = patch;
        c.pos_grid = shape["img_size"].as_u64().unwrap() as usize / patch;
        c.num_register_tokens = self.usize("num_register_tokens");
        c.ffn = FfnConfig::mlp(d, shape["mlp_ratio"].as_f64().unwrap());
        c.drop_path_rate = 0.0;
        // The training config's position-embedding resampling (the local crops use it).
        let offset = self.cfg_f64(&["student", "interpolate_offset"]);
        c.interpolation = match (
            self.cfg(&["student", "interpolate_antialias"]).as_bool(),
            offset,
        ) {
            (Some(true), _) => PosEmbedInterpolation::BicubicAntialias,
            (_, o) if o > 0.0 => PosEmbedInterpolation::OffsetBicubic { offset: o },
            _ => PosEmbedInterpolation::Bicubic,
        };
        c
    }

    fn head_config(&self, section: &str) -> DinoHeadConfig {
        DinoHeadConfig::new(self.meta["shape"]["embed_dim"].as_u64().unwrap() as usize)
            .with_num_prototypes(self.cfg_usize(&[section, "head_n_prototypes"]))
            .with_hidden_dim(self.cfg_usize(&[section, "head_hidden_dim"]))
            .with_bottleneck_dim(self.cfg_usize(&[section, "head_bottleneck_dim"]))
            .with_nlayers(self.cfg_usize(&[section, "head_nlayers"]))
    }

    fn separate_ibot_head(&self) -> bool {
        self.variant["separate_ibot_head"].as_bool().unwrap()
    }

    /// The initial student, from the official initialisation.
    fn student(&self) -> SslModel<AB> {
        let device = Default::default();
        let backbone = VisionTransformer::from_state(
            &self.vit_config(),
            &self.state("init.backbone"),
            &device,
        )
        .unwrap();
        let dino_head = DinoHead::from_state(
            &self.head_config("dino"),
            &self.state("init.dino_head"),
            &device,
        )
        .unwrap();
        let ibot_head = self.separate_ibot_head().then(|| {
            DinoHead::from_state(
                &self.head_config("ibot"),
                &self.state("init.ibot_head"),
                &device,
            )
            .unwrap()
        });
        SslModel {
            backbone,
            dino_head,
            ibot_head,
        }
    }

    fn loss_config(&self) -> SslLossConfig {
        SslLossConfig {
            centering: match self.variant["centering"].as_str().unwrap() {
                "sinkhorn_knopp" => Centering::SinkhornKnopp,
                "centering" => Centering::Softmax,
                other => panic!("centering {other}"),
            },
            koleo_weight: self.cfg_f64(&["dino", "koleo_loss_weight"]),
            ..SslLossConfig::default()
        }
    }

    fn optim_config(&self) -> OptimConfig {
        OptimConfig {
            clip_grad: self.cfg_f64(&["optim", "clip_grad"]),
            layerwise_decay: self.cfg_f64(&["optim", "layerwise_decay"]),
            patch_embed_lr_mult: self.cfg_f64(&["optim", "patch_embed_lr_mult"]),
            adamw_beta1: self.cfg_f64(&["optim", "adamw_beta1"]),
            adamw_beta2: self.cfg_f64(&["optim", "adamw_beta2"]),
        }
    }

    /// The run's schedules as dinoadapt builds them from the official settings (the fixture
    /// sets `optim.lr` directly: a batch of 1024 makes the sqrt scaling 1).
    fn schedules(&self) -> ScheduleConfig {
        ScheduleConfig {
            epoch_length: self.cfg_usize(&["train", "OFFICIAL_EPOCH_LENGTH"]),
            epochs: self.cfg_usize(&["optim", "epochs"]),
            warmup_epochs: self.cfg_usize(&["optim", "warmup_epochs"]),
            warmup_teacher_temp_epochs: self.cfg_usize(&["teacher", "warmup_teacher_temp_epochs"]),
            freeze_last_layer_epochs: self.cfg_usize(&["optim", "freeze_last_layer_epochs"]),
            batch_size: 1024,
            base_lr: self.cfg_f64(&["optim", "lr"]),
            min_lr: self.cfg_f64(&["optim", "min_lr"]),
            weight_decay: self.cfg_f64(&["optim", "weight_decay"]),
            weight_decay_end: self.cfg_f64(&["optim", "weight_decay_end"]),
            momentum_teacher: self.cfg_f64(&["teacher", "momentum_teacher"]),
            final_momentum_teacher: self.cfg_f64(&["teacher", "final_momentum_teacher"]),
            warmup_teacher_temp: self.cfg_f64(&["teacher", "warmup_teacher_temp"]),
            teacher_temp: self.cfg_f64(&["teacher", "teacher_temp"]),
        }
    }

    /// The official schedule values of iteration `it` (float64, from meta.json).
    fn official_values(&self, it: usize) -> StepValues {
        let s = &self.variant["schedule_float64"];
        let v = |name: &str| s[format!("it{it}.schedule.{name}")].as_f64().unwrap();
        StepValues {
            lr: v("lr"),
            last_layer_lr: v("last_layer_lr"),
            wd: v("wd"),
            momentum: v("momentum"),
            teacher_temp: v("teacher_temp"),
            backbone_frozen: false,
        }
    }

    fn batch(&self, it: usize) -> CropBatch<Flex> {
        let device = Default::default();
        let tensor4 = |key: &str| {
            let t = self.get(&format!("it{it}.{key}"));
            let shape: [usize; 4] = t.shape.clone().try_into().unwrap();
            Tensor::<Flex, 4>::from_data(TensorData::new(t.data.clone(), shape), &device)
        };
        let masks = self.get(&format!("it{it}.masks"));
        let tokens = masks.shape[1];
        CropBatch {
            global: tensor4("global_crops"),
            local: Some(tensor4("local_crops")),
            masks: BatchMasks {
                masks: masks
                    .data
                    .chunks(tokens)
                    .map(|r| r.iter().map(|&v| v > 0.5).collect())
                    .collect(),
                indices: self
                    .get(&format!("it{it}.mask_indices"))
                    .data
                    .iter()
                    .map(|&v| v.round() as usize)
                    .collect(),
                weights: self.get(&format!("it{it}.masks_weight")).data.clone(),
                upperbound: self.scalar(&format!("it{it}.upperbound")).round() as usize,
            },
        }
    }
}

/// A model's weights under the official `SSLMetaArch` module names.
fn official_state<B: burn::tensor::backend::Backend>(m: &SslModel<B>) -> StateDict {
    let mut s = StateDict::new();
    let mut put = |prefix: &str, state: StateDict| {
        s.extend(state.into_iter().map(|(k, v)| (format!("{prefix}.{k}"), v)));
    };
    put("backbone", m.backbone.to_state());
    put("dino_head", m.dino_head.to_state());
    if let Some(h) = &m.ibot_head {
        put("ibot_head", h.to_state());
    }
    s
}

/// The largest |ours - official| over every weight of `who` after iteration `it`, and the
/// largest over the key third of the qkv biases, whose gradient is exactly zero (softmax ignores
/// a constant added to a row of logits): float32 rounding noise there is normalised by AdamW into
/// steps of about lr in any float32 implementation, the official code's included.
fn weight_errors(fx: &Fixture, ours: &StateDict, who: &str, it: usize) -> (f64, f64, String) {
    let d = fx.meta["shape"]["embed_dim"].as_u64().unwrap() as usize;
    let reference = fx.state(&format!("it{it}.{who}"));
    assert_eq!(
        reference.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>(),
        "{who} parameters after iteration {it}"
    );
    let (mut worst, mut worst_key_bias, mut at) = (0f64, 0f64, String::new());
    for (k, r) in &reference {
        let o = &ours[k];
        assert_eq!(o.shape, r.shape, "{k}");
        for (i, (a, b)) in o.data.iter().zip(&r.data).enumerate() {
            let e = (*a as f64 - *b as f64).abs();
            if k.ends_with("attn.qkv.bias") && (d..2 * d).contains(&i) {
                worst_key_bias = worst_key_bias.max(e);
            } else if e > worst {
                worst = e;
                at = format!("{k}[{i}]");
            }
        }
    }
    (worst, worst_key_bias, at)
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn three_official_iterations(variant: &str, chunks: usize) {
    let fx = Fixture::load(variant);
    let mut trainer = Trainer::new(fx.student(), fx.loss_config(), fx.optim_config());
    trainer.chunks = chunks;
    let schedules = fx.schedules().build();
    let mut lr_sum = 0.0;
    for it in 0..fx.usize("iterations") {
        let v = fx.official_values(it);
        // dinoadapt's schedules give the official values.
        for (ours, official, name) in [
            (schedules.lr.at(it), v.lr, "lr"),
            (
                schedules.last_layer_lr.at(it),
                v.last_layer_lr,
                "last_layer_lr",
            ),
            (schedules.wd.at(it), v.wd, "wd"),
            (schedules.momentum.at(it), v.momentum, "momentum"),
            (
                schedules.teacher_temp.at(it),
                v.teacher_temp,
                "teacher_temp",
            ),
        ] {
            assert!(
                (ours - official).abs() < 1e-12,
                "it {it} {name}: {ours} vs {official}"
            );
        }
        lr_sum += v.lr.max(v.last_layer_lr);

        let r = trainer.step(&fx.batch(it), v);
        let loss = |name: &str| fx.scalar(&format!("it{it}.loss.{name}"));
        for (ours, name) in [
            (r.loss.total, "loss_accumulator"),
            (
                r.loss.terms.value("dino_local_crops_loss"),
                "dino_local_crops_loss",
            ),
            (
                r.loss.terms.value("dino_global_crops_loss"),
                "dino_global_crops_loss",
            ),
            (r.loss.terms.value("koleo_loss"), "koleo_loss"),
            (r.loss.terms.value("ibot_loss"), "ibot_loss"),
        ] {
            let e = relative(ours, loss(name));
            eprintln!("{variant} chunks {chunks} it {it} {name}: relative error {e:.2e}");
            assert!(
                e <= 1e-5,
                "{variant} it {it} {name}: {ours} vs {} ({e:.2e})",
                loss(name)
            );
        }
        let norm = |name: &str| fx.scalar(&format!("it{it}.grad_norm.{name}"));
        let mut norms = vec![
            (r.grad_norm_backbone, "backbone"),
            (r.grad_norm_dino_head, "dino_head"),
        ];
        if fx.separate_ibot_head() {
            norms.push((r.grad_norm_ibot_head, "ibot_head"));
        }
        for (ours, name) in norms {
            let e = relative(ours, norm(name));
            eprintln!("{variant} chunks {chunks} it {it} grad norm {name}: relative error {e:.2e}");
            assert!(
                e <= 1e-5,
                "{variant} it {it} grad norm {name}: {ours} vs {} ({e:.2e})",
                norm(name)
            );
        }

        for (who, state) in [
            ("student", official_state(&trainer.student)),
            ("teacher", official_state(&trainer.teacher)),
        ] {
            let (worst, key_bias, at) = weight_errors(&fx, &state, who, it);
            eprintln!("{variant} chunks {chunks} it {it} {who}: max |w - official| {worst:.2e} at {at}; key bias {key_bias:.2e}");
            assert!(
                worst <= 1e-5,
                "{variant} it {it} {who}: {worst:.2e} at {at}"
            );
            // No AdamW step moves a weight by much more than its lr.
            assert!(
                key_bias <= 3.0 * lr_sum + 1e-5,
                "{variant} it {it} {who} key bias {key_bias}"
            );
        }
    }
}

#[test]
fn sinkhorn_knopp_with_shared_ibot_head_matches_three_official_iterations() {
    three_official_iterations("sinkhorn_shared", 1);
}

#[test]
fn softmax_centering_with_separate_ibot_head_matches_three_official_iterations() {
    three_official_iterations("softmax_separate", 1);
}

#[test]
fn a_chunked_student_matches_the_official_iterations_too() {
    three_official_iterations("sinkhorn_shared", 2);
}

#[test]
fn head_state_round_trips_through_the_official_names() {
    let fx = Fixture::load("softmax_separate");
    let device = Default::default();
    let state = fx.state("init.ibot_head");
    let head = DinoHead::<Flex>::from_state(&fx.head_config("ibot"), &state, &device).unwrap();
    assert_eq!(head.to_state(), state);
}
