//! The DINOv2 schedules equal the official `CosineScheduler` / `build_schedulers` values stored in
//! ../shared/fixtures/schedules (float64 values in meta.json), built from its run config.

mod common;

use common::fixture;
use dinoadapt_core::objective::{CosineSchedule, ScheduleConfig};
use serde_json::Value;

fn close(name: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-15 * want.abs().max(1.0),
        "{name}: {got} vs {want}"
    );
}

#[test]
fn schedules_equal_the_official_ones() {
    let Some(dir) = fixture("schedules") else {
        return;
    };
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let rc = &meta["run_config"];
    let u = |k: &str| rc[k].as_u64().unwrap() as usize;
    let f = |k: &str| rc[k].as_f64().unwrap();
    let cfg = ScheduleConfig {
        epoch_length: u("OFFICIAL_EPOCH_LENGTH"),
        epochs: u("epochs"),
        warmup_epochs: u("warmup_epochs"),
        warmup_teacher_temp_epochs: u("warmup_teacher_temp_epochs"),
        freeze_last_layer_epochs: u("freeze_last_layer_epochs"),
        batch_size: u("batch_size_per_gpu") * u("world_size"),
        base_lr: f("base_lr"),
        min_lr: f("min_lr"),
        weight_decay: f("weight_decay"),
        weight_decay_end: f("weight_decay_end"),
        momentum_teacher: f("momentum_teacher"),
        final_momentum_teacher: f("final_momentum_teacher"),
        warmup_teacher_temp: f("warmup_teacher_temp"),
        teacher_temp: f("teacher_temp"),
    };
    close(
        "lr_peak",
        cfg.scaled_lr(),
        meta["derived"]["lr_peak"].as_f64().unwrap(),
    );
    let s = cfg.build();
    let exact = &meta["exact_values_f64"];
    for (name, sched) in [
        ("lr", &s.lr),
        ("wd", &s.wd),
        ("momentum", &s.momentum),
        ("teacher_temp", &s.teacher_temp),
        ("last_layer_lr", &s.last_layer_lr),
    ] {
        let want = exact[name].as_array().unwrap();
        assert!(want.len() > 100, "{name}");
        for (it, w) in want.iter().enumerate() {
            close(&format!("{name}[{it}]"), sched.at(it), w.as_f64().unwrap());
        }
    }
    let k = &meta["example_freeze_iters_kwargs"];
    let kf = |n: &str| k[n].as_f64().unwrap();
    let ku = |n: &str| k[n].as_u64().unwrap() as usize;
    let ex = CosineSchedule::new(
        kf("base_value"),
        kf("final_value"),
        ku("total_iters"),
        ku("warmup_iters"),
        kf("start_warmup_value"),
        ku("freeze_iters"),
    );
    for (it, w) in exact["example_freeze_iters"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        close(
            &format!("example_freeze_iters[{it}]"),
            ex.at(it),
            w.as_f64().unwrap(),
        );
    }
}

#[test]
fn parameter_groups_equal_the_official_table() {
    use dinoadapt_core::objective::param_groups::param_group;
    let Some(dir) = fixture("schedules") else {
        return;
    };
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let optim = &meta["ssl_default_config_values"]["optim"];
    let decay = optim["layerwise_decay"].as_f64().unwrap();
    let patch_mult = optim["patch_embed_lr_mult"].as_f64().unwrap();
    let table = meta["param_groups"]["table"].as_object().unwrap();
    let depth = table
        .keys()
        .filter_map(|k| {
            k.strip_prefix("backbone:blocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap()
        + 1;
    assert!(table.len() > 20);
    for (key, want) in table {
        let (module, name) = key.split_once(':').unwrap();
        let module_depth = if module == "backbone" { depth } else { 0 };
        let got = param_group(name, module_depth, decay, patch_mult);
        assert_eq!(
            got.lr_multiplier,
            want["lr_multiplier"].as_f64().unwrap(),
            "{key} lr"
        );
        assert_eq!(
            got.wd_multiplier,
            want["wd_multiplier"].as_f64().unwrap(),
            "{key} wd"
        );
        assert_eq!(
            got.is_last_layer,
            want["is_last_layer"].as_bool().unwrap(),
            "{key} last layer"
        );
    }
}
