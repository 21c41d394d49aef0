//! The DINOv2 losses equal the official `DINOLoss`, `iBOTPatchLoss` and `KoLeoLoss` outputs stored
//! in ../shared/fixtures/losses (sizes and temperatures read from its meta.json).

mod common;

use std::collections::BTreeMap;

use burn::backend::Flex;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use common::fixture;
use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::HostTensor;
use dinoadapt_core::objective::losses::{
    dino_cross_entropy, ibot_mask_weights, ibot_masked_loss, koleo, sinkhorn_knopp, SoftmaxCenter,
};
use dinoadapt_core::objective::masking::{collate_masks, MaskingGenerator, PyRandom};
use serde_json::Value;

type B = Flex;

struct Io(BTreeMap<String, HostTensor>);

impl Io {
    fn t2(&self, k: &str) -> Tensor<B, 2> {
        let t = &self.0[k];
        let cols = *t.shape.last().unwrap();
        Tensor::from_data(
            TensorData::new(t.data.clone(), [t.data.len() / cols, cols]),
            &Default::default(),
        )
    }
    fn t1(&self, k: &str) -> Tensor<B, 1> {
        let t = &self.0[k];
        Tensor::from_data(
            TensorData::new(t.data.clone(), [t.data.len()]),
            &Default::default(),
        )
    }
    fn check<const D: usize>(&self, k: &str, got: Tensor<B, D>, tol: f32) {
        let want = &self.0[k].data;
        let got = got.into_data().to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len(), "{k}: size");
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        eprintln!("{k}: max error {err:.2e}");
        assert!(err <= tol, "{k}: error {err:e}");
    }
}

#[test]
fn losses_equal_the_official_ones() {
    let Some(dir) = fixture("losses") else { return };
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let p = &meta["params"];
    let f = |k: &str| p[k].as_f64().unwrap();
    let u = |k: &str| p[k].as_u64().unwrap() as usize;
    let (tt, ts, m) = (f("teacher_temp"), f("student_temp"), f("center_momentum"));
    let n_local = u("n_local_crops");
    let n_iter = u("sinkhorn_n_iterations");
    let denom = (u("n_global_crops_loss_terms") + u("n_local_crops_loss_terms")) as f64;
    let io = Io(read_safetensors(&dir.join("io.safetensors"))
        .unwrap()
        .0
        .into_iter()
        .collect());
    let tol = 1e-5;

    // DINO targets.
    let teacher = io.t2("teacher_dino_logits");
    let rows = teacher.dims()[0];
    let sk = sinkhorn_knopp(teacher.clone(), tt, n_iter, rows);
    io.check("dino_sk_targets", sk.clone(), tol);
    let mut center = SoftmaxCenter::new(io.t2("dino_center_init"), m);
    let centered = center.targets(teacher.clone(), tt);
    io.check("dino_centered_targets", centered.clone(), tol);
    center.update(teacher);
    io.check(
        "dino_centered_targets_step2",
        center.targets(io.t2("teacher_dino_logits_step2"), tt),
        tol,
    );
    io.check("dino_center_after_update", center.current(), tol);

    // DINO losses, for both kinds of targets.
    let global = io.t2("student_dino_global_logits");
    let local = io.t2("student_dino_local_logits");
    for (tag, targets) in [("sk", sk), ("centered", centered)] {
        let local_raw = dino_cross_entropy(
            &local.clone().chunk(n_local, 0),
            &targets.clone().chunk(2, 0),
            ts,
        );
        let global_raw = dino_cross_entropy(std::slice::from_ref(&global), &[targets], ts);
        io.check(
            &format!("dino_local_loss_raw_{tag}"),
            local_raw.clone(),
            tol,
        );
        io.check(
            &format!("dino_global_loss_raw_{tag}"),
            global_raw.clone(),
            tol,
        );
        io.check(
            &format!("dino_local_crops_loss_{tag}"),
            local_raw.div_scalar(denom),
            tol,
        );
        io.check(
            &format!("dino_global_crops_loss_{tag}"),
            global_raw.mul_scalar(2.0).div_scalar(denom),
            tol,
        );
    }

    // iBOT.
    let t_ibot = io.t2("teacher_ibot_logits_masked");
    let s_ibot = io.t2("student_ibot_logits_masked");
    let n_masked = io.0["n_masked_patches"].data[0].round() as usize;
    let ibot_sk = sinkhorn_knopp(t_ibot.clone(), tt, n_iter, n_masked);
    io.check("ibot_sk_targets", ibot_sk.clone(), tol);
    let mut ibot_center = SoftmaxCenter::new(io.t2("ibot_center_init"), m);
    let ibot_centered = ibot_center.targets(t_ibot.clone(), tt);
    io.check("ibot_centered_targets", ibot_centered.clone(), tol);
    ibot_center.update(t_ibot);
    io.check("ibot_center_after_update", ibot_center.current(), tol);
    let masks_f = io.t2("masks");
    let [n_images, n_tokens] = masks_f.dims();
    let masks: Tensor<B, 2, Bool> = masks_f.greater_elem(0.5);
    let indices: Vec<i64> = io.0["mask_indices_list"]
        .data
        .iter()
        .map(|v| v.round() as i64)
        .collect();
    let indices =
        Tensor::<B, 1, Int>::from_data(TensorData::new(indices, [n_masked]), &Default::default());
    let default_weights = ibot_mask_weights(masks)
        .reshape([n_images * n_tokens])
        .select(0, indices);
    io.check("masks_weight", default_weights.clone(), 1e-7);
    for (tag, targets) in [("sk", ibot_sk), ("centered", ibot_centered)] {
        let loss = ibot_masked_loss(
            s_ibot.clone(),
            targets.clone(),
            io.t1("masks_weight"),
            n_images,
            ts,
        );
        io.check(&format!("ibot_loss_{tag}"), loss.clone(), tol);
        // SSLMetaArch scales by loss_scales (2) and ibot_loss_scale (1/2): a net factor of 1.
        io.check(
            &format!("ibot_loss_{tag}_as_accumulated"),
            loss.mul_scalar(2.0 * 0.5),
            tol,
        );
        let with_default = ibot_masked_loss(
            s_ibot.clone(),
            targets,
            default_weights.clone(),
            n_images,
            ts,
        );
        io.check(
            &format!("ibot_loss_{tag}_default_weights"),
            with_default,
            tol,
        );
    }

    // KoLeo on each global-crop chunk of class tokens.
    let cls = io.t2("koleo_student_cls_tokens");
    let chunks = cls.clone().chunk(2, 0);
    let mut sum = None;
    for (i, c) in chunks.into_iter().enumerate() {
        let (loss, nn) = koleo(c);
        io.check(&format!("koleo_loss_chunk{i}"), loss.clone(), tol);
        let want: Vec<i64> = io.0[&format!("koleo_nn_index_chunk{i}")]
            .data
            .iter()
            .map(|v| v.round() as i64)
            .collect();
        let got: Vec<i64> = nn.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(got, want, "koleo nearest neighbours, chunk {i}");
        sum = Some(match sum {
            Some(s) => s + loss,
            None => loss,
        });
    }
    io.check(
        "koleo_loss_weighted_sum",
        sum.unwrap().mul_scalar(f("koleo_loss_weight")),
        tol,
    );
    io.check("koleo_loss_all_rows", koleo(cls).0, tol);
}

#[test]
fn block_masks_equal_the_official_sample_bit_for_bit() {
    let Some(dir) = fixture("losses") else { return };
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let p = &meta["params"];
    let io = Io(read_safetensors(&dir.join("io.safetensors"))
        .unwrap()
        .0
        .into_iter()
        .collect());
    let masks = &io.0["masks"];
    let (n_images, n_tokens) = (masks.shape[0], masks.shape[1]);
    let g = &p["mask_generator"];
    let grid = g["input_size"][0].as_u64().unwrap() as usize;
    assert_eq!(grid * grid, n_tokens);
    let generator = MaskingGenerator {
        height: grid,
        width: g["input_size"][1].as_u64().unwrap() as usize,
        min_num_patches: g["min_num_patches"].as_f64().unwrap(),
        max_num_patches: g["max_num_patches"].as_f64().unwrap(),
        log_aspect_ratio: (
            g["log_aspect_ratio"][0].as_f64().unwrap(),
            g["log_aspect_ratio"][1].as_f64().unwrap(),
        ),
    };
    let ratio = (
        p["mask_ratio_min_max"][0].as_f64().unwrap() as f32,
        p["mask_ratio_min_max"][1].as_f64().unwrap() as f32,
    );
    let mut rng = PyRandom::seed(p["python_random_seed_for_masks"].as_u64().unwrap());
    let got = collate_masks(
        &mut rng,
        &generator,
        n_images,
        p["mask_sample_probability"].as_f64().unwrap(),
        ratio,
    );
    let flat: Vec<f32> = got
        .masks
        .iter()
        .flatten()
        .map(|b| *b as u8 as f32)
        .collect();
    assert_eq!(flat, masks.data, "masks");
    let idx: Vec<usize> = io.0["mask_indices_list"]
        .data
        .iter()
        .map(|v| v.round() as usize)
        .collect();
    assert_eq!(got.indices, idx, "mask_indices_list");
    assert_eq!(got.weights, io.0["masks_weight"].data, "masks_weight");
    assert_eq!(
        got.indices.len(),
        io.0["n_masked_patches"].data[0].round() as usize
    );
    assert_eq!(got.upperbound as u64, p["upperbound"].as_u64().unwrap());
}
