//! `dinoadapt pretrain` end to end on the shared MNIST digits: a run killed with SIGKILL and
//! resumed ends exactly where the uninterrupted run ends; outputs (metrics Parquet + PNG, teacher
//! backbone, summary) are there; continued pre-training from the produced teacher freezes the
//! backbone through the head warm-up; misuse is refused with a clear message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    dinoadapt, max_abs_diff, ok, p, pretrain_steps, read_tensors, shared, tiny_pretrain_recipe,
};
use polars::prelude::{ParquetReader, SerReader};

/// A small recipe over the shared MNIST validation digits.
fn recipe(dir: &Path, shared: &Path, extra: &str) -> PathBuf {
    let digits = shared.join("data/mnist5k/val");
    let text = format!(
        r#"
[model]
arch = "vits14"
embed_dim = 32
depth = 2
num_heads = 2
patch_size = 4
img_size = 28
mlp_ratio = 2.0
# Official LayerScale 1e-5 sits at the uniform fixed point at this scale and the guard stops the
# run (recipes/mnist_tiny.toml says why).
layerscale = 0.0
{extra}

[heads]
prototypes = 128
hidden_dim = 64
bottleneck_dim = 32

[data]
images = ["{digits}"]
batch_size = 8

[crops]
global_size = 28
local_size = 12
local_crops = 2

[optim]
epochs = 40
epoch_length = 4
warmup_epochs = 1

[train]
output_dir = "run"
checkpoint_every = 4
keep_last = 5
"#,
        digits = digits.display()
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn checkpoints_in(out: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let step = p
                .file_name()?
                .to_str()?
                .strip_prefix("step-")?
                .parse()
                .ok()?;
            Some((step, p))
        })
        .collect();
    v.sort();
    v
}

fn teacher(out: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    read_tensors(&out.join("teacher/model.safetensors"))
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // With stochastic depth: on a CPU each batch goes through the student in slices, one per
    // thread, and each slice draws its drop masks from its own seeded generator.
    let r = recipe(tmp.path(), &shared, "drop_path_rate = 0.2");
    let r = r.to_str().unwrap();

    // Uninterrupted.
    let straight = tmp.path().join("straight");
    let json = ok(&[
        "pretrain",
        "--recipe",
        r,
        "--output",
        straight.to_str().unwrap(),
    ]);
    assert!(json.contains("\"steps\":160"), "{json}");
    assert!(straight.join("metrics.png").is_file());
    assert!(straight.join("summary.json").is_file());
    let metrics =
        ParquetReader::new(std::fs::File::open(straight.join("metrics.parquet")).unwrap())
            .finish()
            .unwrap();
    assert_eq!(metrics.height(), 160);
    for col in [
        "loss_total",
        "dino_local_crops_loss",
        "ibot_loss",
        "koleo_loss",
        "lr",
        "wd",
        "momentum",
        "teacher_temp",
        "teacher_entropy",
        "cls_std",
        "grad_norm_backbone",
    ] {
        assert!(metrics.column(col).is_ok(), "{col} missing");
    }

    // Killed with SIGKILL once its first checkpoint exists, then resumed.
    let killed = tmp.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dinoadapt"))
        .args([
            "pretrain",
            "--recipe",
            r,
            "--output",
            killed.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = killed.join("checkpoints/step-00000004/state.json");
    let t0 = Instant::now();
    while !first.is_file() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().ok(); // SIGKILL
    child.wait().unwrap();
    let (at, _) = checkpoints_in(&killed)
        .pop()
        .expect("a checkpoint before the kill");
    assert!(at < 160, "the run finished before it could be killed");

    // Without --resume the folder is refused rather than overwritten.
    let out = dinoadapt(&[
        "pretrain",
        "--recipe",
        r,
        "--output",
        killed.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    let json = ok(&[
        "pretrain",
        "--recipe",
        r,
        "--output",
        killed.to_str().unwrap(),
        "--resume",
    ]);
    assert!(json.contains("\"steps\":160"), "{json}");
    let (a, b) = (teacher(&straight), teacher(&killed));
    assert_eq!(a.len(), b.len());
    for (k, (shape, v)) in &a {
        assert_eq!(&b[k].0, shape);
        let err = v
            .iter()
            .zip(&b[k].1)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err <= 1e-6, "{k}: resumed run differs by {err}");
    }
    let resumed = ParquetReader::new(std::fs::File::open(killed.join("metrics.parquet")).unwrap())
        .finish()
        .unwrap();
    assert_eq!(resumed.height(), 160);
    assert_eq!(
        resumed.column("step").unwrap(),
        metrics.column("step").unwrap()
    );
}

#[test]
fn continued_pretraining_keeps_the_backbone_through_the_head_warm_up() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let r = recipe(tmp.path(), &shared, "");
    ok(&[
        "pretrain",
        "--recipe",
        r.to_str().unwrap(),
        "--output",
        first.to_str().unwrap(),
        "--set",
        "train.max_steps=4",
    ]);

    // Start from the teacher the first run wrote; fresh heads warm up for 4 iterations.
    let extra = format!(
        "checkpoint = {:?}",
        first.join("teacher").display().to_string()
    );
    let dir = tmp.path().join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let r2 = recipe(&dir, &shared, &extra);
    let out = dir.join("run");
    let warm = tmp.path().join("warm");
    ok(&[
        "pretrain",
        "--recipe",
        r2.to_str().unwrap(),
        "--output",
        warm.to_str().unwrap(),
        "--set",
        "train.max_steps=4",
        "--set",
        "train.head_warmup_iterations=4",
    ]);
    let (before, after) = (teacher(&first), teacher(&warm));
    for (k, (_, v)) in &before {
        let err = v
            .iter()
            .zip(&after[k].1)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err <= 1e-6, "{k} moved by {err} during the head warm-up");
    }
    // Joint training after the warm-up moves it.
    ok(&[
        "pretrain",
        "--recipe",
        r2.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--set",
        "train.max_steps=8",
        "--set",
        "train.head_warmup_iterations=4",
    ]);
    let joint = teacher(&out);
    let moved = before
        .iter()
        .any(|(k, (_, v))| v.iter().zip(&joint[k].1).any(|(x, y)| (x - y).abs() > 1e-6));
    assert!(moved, "the backbone did not train after the warm-up");
}

#[test]
fn recipe_mistakes_are_reported() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), &shared, "");
    let out = dinoadapt(&[
        "pretrain",
        "--recipe",
        r.to_str().unwrap(),
        "--set",
        "optim.bse_lr=1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bse_lr"));
    let out = dinoadapt(&[
        "pretrain",
        "--recipe",
        r.to_str().unwrap(),
        "--set",
        "crops.global_size=30",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of the patch size"));
}

#[test]
fn pretraining_reads_volume_slices_and_raster_chips_online() {
    let Some(shared) = shared() else { return };
    let volume = shared.join("data/nifti/anatomical.nii");
    let raster = shared.join("data/satellite/rgbn.tif");

    let sources = [
        format!(
            "[data.source]\ndomain = \"radiology\"\npaths = [{:?}]\naxis = \"coronal\"\nsize = 64",
            volume.display().to_string()
        ),
        format!(
            "[data.source]\ndomain = \"satellite\"\npaths = [{:?}]\nbands = [3, 2, 1]\nchip_size = 48\nchips_per_epoch = 12",
            raster.display().to_string()
        ),
    ];
    for data in &sources {
        let dir = tempfile::tempdir().unwrap();
        let recipe = tiny_pretrain_recipe(dir.path(), data);
        let out = ok(&["pretrain", "--recipe", recipe.to_str().unwrap(), "--quiet"]);
        assert_eq!(pretrain_steps(dir.path()), 3, "{out}");
    }

    // A domain no plugin registers, a key its domain does not take, and the keys of the
    // former layout are refused with what to write instead.
    let refused = |data: String, expected: &str| {
        let dir = tempfile::tempdir().unwrap();
        let recipe = tiny_pretrain_recipe(dir.path(), &data);
        let out = dinoadapt(&["pretrain", "--recipe", recipe.to_str().unwrap(), "--quiet"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    };
    let path = volume.display().to_string();
    refused(
        format!("[data.source]\ndomain = \"microscopy\"\npaths = [{path:?}]"),
        "the domains are pathology, radiology, satellite",
    );
    refused(
        format!("[data.source]\ndomain = \"radiology\"\npaths = [{path:?}]\nvolume_size = 64"),
        "unknown field `volume_size`",
    );
    refused(
        format!("volumes = [{path:?}]"),
        "`[data.source]` with `domain = \"radiology\"`",
    );
}

/// Issue 18, defect 11: `--resume` with a changed recipe (lr × 50, batch 8 -> 4) continued
/// silently, and `--resume` on a folder without checkpoints started afresh. Both are refused
/// with what differs; where the run goes on (device) and where it stops are not changes.
#[test]
fn resume_refuses_another_recipe_and_a_folder_without_checkpoints() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), &shared, "");
    let r = r.to_str().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let pretrain = |extra: &[&str]| {
        let mut args = vec!["pretrain", "--recipe", r, "--output", o, "--quiet"];
        args.extend(extra);
        dinoadapt(&args)
    };
    let empty = pretrain(&["--resume"]);
    assert_eq!(empty.status.code(), Some(2));
    let err = String::from_utf8_lossy(&empty.stderr);
    assert!(err.contains("holds no checkpoint"), "{err}");
    assert!(pretrain(&["--set", "train.max_steps=4"]).status.success());
    for (set, key) in [
        ("optim.base_lr=0.2", "optim.base_lr: 0.004 -> 0.2"),
        ("data.batch_size=4", "data.batch_size: 8 -> 4"),
    ] {
        let changed = pretrain(&["--resume", "--set", "train.max_steps=8", "--set", set]);
        assert_eq!(changed.status.code(), Some(2));
        let err = String::from_utf8_lossy(&changed.stderr);
        assert!(err.contains("another recipe") && err.contains(key), "{err}");
        assert!(
            !err.contains("max_steps"),
            "where a run stops may change: {err}"
        );
    }
    let longer = pretrain(&["--resume", "--set", "train.max_steps=8", "--device", "cpu"]);
    assert!(longer.status.success());
    assert_eq!(checkpoints_in(&out).last().unwrap().0, 8);
}

/// `pretrain` of `recipe` into `out` with the `KEY=VALUE` overrides `sets`.
fn pretrain(recipe: &Path, out: &Path, sets: &[&str]) {
    let mut args = vec![
        "pretrain",
        "--recipe",
        recipe.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    ok(&args);
}

/// Continued pre-training from a timm/UNI-style checkpoint, which has no mask token: iBOT
/// trains one from zeros and it is saved with the teacher. Gram anchoring joins at its start
/// iteration, logged as its own `gram_loss` column.
#[test]
fn a_checkpoint_without_a_mask_token_trains_one_and_gram_anchoring_is_logged() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let uni = shared.join("fixtures/timm_uni/model.safetensors");
    let r = recipe(
        tmp.path(),
        &shared,
        &format!("checkpoint = {:?}", uni.display().to_string()),
    );
    let out = tmp.path().join("uni");
    pretrain(
        &r,
        &out,
        &[
            "train.max_steps=6",
            "crops.global_size=32",
            "crops.local_size=16",
            "loss.gram.weight=1.0",
            "loss.gram.start_iteration=3",
        ],
    );
    let t = teacher(&out);
    let (shape, token) = t
        .iter()
        .find(|(k, _)| k.ends_with("mask_token"))
        .map(|(_, v)| v)
        .expect("a mask token in the teacher");
    assert_eq!(shape, &vec![1, 64]);
    assert!(
        token.iter().any(|v| *v != 0.0),
        "the mask token did not train"
    );

    let file = std::fs::File::open(out.join("metrics.parquet")).unwrap();
    let df = ParquetReader::new(file).finish().unwrap();
    let gram = df.column("gram_loss").unwrap().f64().unwrap().clone();
    let gram: Vec<f64> = (0..gram.len()).map(|i| gram.get(i).unwrap()).collect();
    assert_eq!(&gram[..3], &[0.0, 0.0, 0.0], "{gram:?}");
    assert!(gram[3..].iter().all(|g| *g > 0.0), "{gram:?}");
}

/// A run continued from a previous run's folder carries student, teacher and both heads over
/// bit-exactly, and the optimizer state with `train.resume_optimizer`: after one iteration at
/// lr 0 and teacher momentum 1 (which change no weight) the new checkpoint holds the old
/// weights, and the AdamW step counts went on from the old ones (or restarted without it).
#[test]
fn a_run_continues_from_a_run_with_its_heads_and_optimizer_state() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), &shared, "");
    let first = tmp.path().join("first");
    pretrain(&r, &first, &["train.max_steps=4"]);
    let dir = tmp.path().join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let r2 = recipe(
        &dir,
        &shared,
        &format!("checkpoint = {:?}", first.display().to_string()),
    );
    let state = |out: &Path, step: usize| {
        let d = out.join(format!("checkpoints/step-{step:08}"));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("state.json")).unwrap()).unwrap();
        let steps: std::collections::BTreeMap<String, u64> = json["optimizer_steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
            .collect();
        (read_tensors(&d.join("state.safetensors")), steps)
    };
    let (before, before_steps) = state(&first, 4);
    for (resume_optimizer, name) in [(true, "carried"), (false, "fresh")] {
        let out = tmp.path().join(name);
        pretrain(
            &r2,
            &out,
            &[
                "train.max_steps=1",
                "train.checkpoint_every=1",
                &format!("train.resume_optimizer={resume_optimizer}"),
                "optim.base_lr=0.0",
                "optim.min_lr=0.0",
                "teacher.momentum_teacher=1.0",
                "teacher.final_momentum_teacher=1.0",
            ],
        );
        let (after, after_steps) = state(&out, 1);
        let mut weights = 0;
        for (k, (_, v)) in &before {
            if k.starts_with("student.") || k.starts_with("teacher.") {
                assert_eq!(&after[k].1, v, "{name}: {k} not carried over bit-exactly");
                weights += 1;
            }
        }
        assert!(before.keys().any(|k| k.starts_with("student.dino_head.")));
        assert!(weights > 40, "{weights} tensors compared");
        // A parameter without a gradient in an iteration (the mask token when nothing was
        // masked) is not stepped.
        for (k, n) in &after_steps {
            let was = before_steps.get(k).copied().unwrap_or(0);
            if resume_optimizer {
                assert!(*n == was || *n == was + 1, "{name}: {k} at {n}, was {was}");
            } else {
                assert!(*n <= 1, "{name}: {k} at {n}");
            }
        }
        if resume_optimizer {
            let total = |m: &std::collections::BTreeMap<String, u64>| m.values().sum::<u64>();
            assert!(total(&after_steps) > total(&before_steps), "{name}");
        }
    }
}

/// Distillation from a previous run into a smaller student: the teacher run's folder is named
/// in `[distillation]`, the student (16-d, one block) trains against it, and the run writes the
/// student's EMA to `student/`, which `embed` then uses like any model.
#[test]
fn a_smaller_student_is_distilled_from_a_run() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), &shared, "");
    let big = tmp.path().join("big");
    pretrain(&r, &big, &["train.max_steps=4"]);
    let small = tmp.path().join("small");
    pretrain(
        &r,
        &small,
        &[
            "train.max_steps=4",
            "model.embed_dim=16",
            "model.depth=1",
            &format!("distillation.teacher={:?}", big.display().to_string()),
        ],
    );
    assert!(!small.join("teacher").exists());
    let student = read_tensors(&small.join("student/model.safetensors"));
    let (shape, _) = student
        .iter()
        .find(|(k, _)| k.ends_with("cls_token"))
        .map(|(_, v)| v)
        .unwrap();
    assert_eq!(shape.last(), Some(&16));
    let features = tmp.path().join("f.safetensors");
    ok(&[
        "embed",
        "--model",
        small.join("student").to_str().unwrap(),
        shared.join("data/mnist5k/val/3").to_str().unwrap(),
        "-o",
        features.to_str().unwrap(),
        "--resize",
        "28",
        "--crop-size",
        "28",
        "--quiet",
    ]);
    let f = read_tensors(&features);
    assert_eq!(f["cls"].0[1], 16);

    // A teacher that is not a run is refused with what to do.
    let err = common::dinoadapt(&[
        "pretrain",
        "--recipe",
        r.to_str().unwrap(),
        "--output",
        tmp.path().join("bad").to_str().unwrap(),
        "--set",
        &format!(
            "distillation.teacher={:?}",
            shared.join("fixtures/hf_dinov2_reg").display().to_string()
        ),
    ]);
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && text.contains("head_warmup_iterations"),
        "{text}"
    );
}

/// A high-resolution stage after the main schedule, in one run: the position embeddings are
/// resampled once to the stage's grid (28 px -> 56 px: 7 -> 14 patches a side), the kNN of the
/// model as it stood is measured at the new size first (the baseline) and at the end, and a
/// run stopped inside the stage resumes to the same weights as one that was not.
#[test]
fn a_high_resolution_stage_resamples_once_and_resumes_exactly() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), &shared, "");
    let digits = shared.join("data/mnist5k");
    let mut text = std::fs::read_to_string(&r).unwrap();
    text.push_str(&format!(
        r#"
[monitor]
train = {:?}
val = {:?}
max_per_class = 10

[[stages]]
name = "high-res"
iterations = 3
[stages.crops]
global_size = 56
[stages.optim]
warmup_epochs = 0
"#,
        digits.join("train").display().to_string(),
        digits.join("val").display().to_string()
    ));
    std::fs::write(&r, text).unwrap();
    let short = [
        "--set",
        "optim.epochs=1",
        "--set",
        "train.checkpoint_every=2",
    ];
    let straight = tmp.path().join("straight");
    let mut args = vec![
        "pretrain",
        "--recipe",
        r.to_str().unwrap(),
        "--output",
        straight.to_str().unwrap(),
    ];
    args.extend(short);
    ok(&args);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["steps"], 7);
    let whens: Vec<String> = summary["knn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}@{}", p["when"].as_str().unwrap(), p["step"]))
        .collect();
    for want in [
        "start@0",
        "stage main end@4",
        "stage high-res start (56 px)@4",
        "end@7",
    ] {
        assert!(whens.iter().any(|w| w == want), "{want} not in {whens:?}");
    }
    let teacher_tensors = teacher(&straight);
    let (shape, _) = teacher_tensors
        .iter()
        .find(|(k, _)| k.ends_with("pos_embed"))
        .map(|(_, v)| v)
        .unwrap();
    assert_eq!(
        shape[1],
        1 + 14 * 14,
        "the table is stored at the stage's grid"
    );

    // Stopped at iteration 5 (inside the stage), then resumed.
    let resumed = tmp.path().join("resumed");
    let mut args = vec![
        "pretrain",
        "--recipe",
        r.to_str().unwrap(),
        "--output",
        resumed.to_str().unwrap(),
        "--set",
        "train.max_steps=5",
    ];
    args.extend(short);
    ok(&args);
    let mut args = vec![
        "pretrain",
        "--recipe",
        r.to_str().unwrap(),
        "--output",
        resumed.to_str().unwrap(),
        "--resume",
    ];
    args.extend(short);
    ok(&args);
    let (a, b) = (teacher(&straight), teacher(&resumed));
    for (k, (_, v)) in &a {
        assert_eq!(v, &b[k].1, "{k} differs after the resume");
    }
}

/// N-channel inputs: grayscale slices of a volume (1 channel) and all four bands of an RGB +
/// near-infrared raster, each continued from an RGB checkpoint whose patch embedding is grown
/// (mean-repeat; a band map copying R, G, B and starting NIR at zero). The teacher records its
/// channels; the embedding commands, which feed RGB, refuse it with the reason.
#[test]
fn pretraining_takes_one_channel_slices_and_four_band_chips() {
    let Some(shared) = shared() else { return };
    let checkpoint = shared.join("fixtures/hf_dinov2_reg").display().to_string();
    let volume = shared
        .join("data/nifti/anatomical.nii")
        .display()
        .to_string();
    let raster = shared.join("data/satellite/rgbn.tif").display().to_string();
    let cases = [
        (
            format!("[data.source]\ndomain = \"radiology\"\npaths = [{volume:?}]\nsize = 56"),
            vec![
                "model.in_chans=1",
                "crops.mean=[0.5]",
                "crops.std=[0.25]",
                "model.channel_names=[\"MR\"]",
            ],
            1,
        ),
        (
            format!(
                "[data.source]\ndomain = \"satellite\"\npaths = [{raster:?}]\nbands = [1, 2, 3, 4]\nchip_size = 56\nchips_per_epoch = 12"
            ),
            vec![
                "model.in_chans=4",
                "crops.mean=[0.5, 0.5, 0.5, 0.5]",
                "crops.std=[0.25, 0.25, 0.25, 0.25]",
                "model.channel_map=[0, 1, 2, -1]",
                "model.channel_names=[\"red\", \"green\", \"blue\", \"nir\"]",
            ],
            4,
        ),
    ];
    for (data, sets, channels) in cases {
        let dir = tempfile::tempdir().unwrap();
        let recipe = tiny_pretrain_recipe(dir.path(), &data);
        let mut args = vec![
            "pretrain".to_string(),
            "--recipe".into(),
            recipe.display().to_string(),
            "--quiet".into(),
        ];
        let model = format!("model.checkpoint={checkpoint:?}");
        for s in [
            model.as_str(),
            "crops.global_size=28",
            "crops.local_size=14",
        ]
        .into_iter()
        .chain(sets.iter().copied())
        {
            args.extend(["--set".to_string(), s.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args);
        assert_eq!(pretrain_steps(dir.path()), 3);
        let teacher = dir.path().join("run/teacher");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(teacher.join("config.json")).unwrap())
                .unwrap();
        let arch = &config["dinoadapt"];
        assert_eq!(arch["in_chans"], channels, "{arch}");
        assert_eq!(
            arch["channels"]["names"].as_array().unwrap().len(),
            channels,
            "{arch}"
        );
        let weights = read_tensors(&teacher.join("model.safetensors"));
        let (shape, _) = weights
            .iter()
            .find(|(k, _)| k.contains("patch_embed") && k.ends_with("weight"))
            .map(|(_, v)| v)
            .unwrap();
        assert_eq!(shape[1], channels, "patch embedding {shape:?}");

        let out = dinoadapt(&[
            "embed",
            "--model",
            teacher.to_str().unwrap(),
            shared
                .join("data/pathology/he_tile_240.png")
                .to_str()
                .unwrap(),
            "-o",
            dir.path().join("f.safetensors").to_str().unwrap(),
        ]);
        if channels == 1 {
            // `embed` feeds image files to a one-channel model as gray.
            assert!(out.status.success());
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains(&format!("takes {channels} input channels")),
                "{err}"
            );
        }
    }
}

/// `checkpoint` grown as `channels` (`model.in_chans`, its normalisation) by one iteration of
/// `recipe` at lr 0 with teacher momentum 1: the grown model as grown, in `run/teacher`.
fn grow_at_lr_zero(recipe: &Path, checkpoint: &Path, channels: &[&str]) {
    let mut sets = vec![
        format!("model.checkpoint={:?}", checkpoint.display().to_string()),
        "crops.global_size=28".into(),
        "crops.local_size=14".into(),
        "train.max_steps=1".into(),
        "optim.base_lr=0.0".into(),
        "optim.min_lr=0.0".into(),
        "teacher.momentum_teacher=1.0".into(),
        "teacher.final_momentum_teacher=1.0".into(),
    ];
    sets.extend(channels.iter().map(|c| c.to_string()));
    let mut args = vec!["pretrain", "--recipe", p(recipe), "--quiet"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    ok(&args);
}

/// A one-channel model grown from an RGB checkpoint (mean-repeat), taken as it is (one
/// iteration at lr 0, teacher momentum 1): `embed` feeds it gray digits normalised with its
/// recorded mean and std, and its class tokens are those of the RGB checkpoint on the same
/// digits with the same normalisation on each of R, G and B.
#[test]
fn a_grown_gray_model_embeds_gray_images_as_its_rgb_source_does() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = shared.join("fixtures/hf_dinov2_reg");
    let volume = shared
        .join("data/nifti/anatomical.nii")
        .display()
        .to_string();
    let recipe = tiny_pretrain_recipe(
        dir.path(),
        &format!("[data.source]\ndomain = \"radiology\"\npaths = [{volume:?}]\nsize = 56"),
    );
    grow_at_lr_zero(
        &recipe,
        &checkpoint,
        &["model.in_chans=1", "crops.mean=[0.5]", "crops.std=[0.25]"],
    );
    let digits = shared.join("data/mnist5k/val/3");
    let embed = |model: &Path, out: &str, extra: &[&str]| {
        let f = dir.path().join(out);
        let mut args = vec![
            "embed",
            "--model",
            model.to_str().unwrap(),
            digits.to_str().unwrap(),
            "-o",
            f.to_str().unwrap(),
            "--resize",
            "28",
            "--crop-size",
            "28",
            "--quiet",
        ];
        args.extend(extra);
        ok(&args);
        read_tensors(&f)["cls"].clone()
    };
    let gray = embed(&dir.path().join("run/teacher"), "gray.safetensors", &[]);
    let rgb = embed(
        &checkpoint,
        "rgb.safetensors",
        &["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"],
    );
    assert_eq!(gray.0, rgb.0);
    let diff = gray
        .1
        .iter()
        .zip(&rgb.1)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("gray model vs its RGB source, class tokens: max |diff| {diff:.2e}");
    assert!(diff < 1e-4, "class tokens differ by {diff}");

    // Volumes: `radiology embed` feeds the one-channel model each slice once (gray, the
    // default for it), normalised with its record; three channels are refused with the reason.
    let slices = dir.path().join("slices");
    let teacher = dir.path().join("run/teacher");
    let rad = |extra: &[&str]| {
        let mut args = vec![
            "radiology",
            "embed",
            "--model",
            p(&teacher),
            &volume,
            "--size",
            "28",
            "--step",
            "16",
            "-o",
            p(&slices),
            "--quiet",
        ];
        args.extend(extra);
        dinoadapt(&args)
    };
    assert!(rad(&[]).status.success());
    let feats = std::fs::read_dir(&slices)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| {
            f.extension().is_some_and(|e| e == "safetensors")
                && f.file_stem().is_some_and(|s| s != "volumes")
        })
        .expect("a volume's slice features");
    let (shape, cls) = read_tensors(&feats)["cls"].clone();
    assert_eq!(shape[1], 64);
    assert!(cls.iter().all(|v| v.is_finite()));
    let refused = rad(&["--channels", "repeat"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("takes 1 input channel"), "{err}");
}

#[test]
fn a_grown_band_model_embeds_rasters_as_its_rgb_source_does() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = shared.join("fixtures/hf_dinov2_reg");
    let raster = shared.join("data/satellite/rgbn.tif");
    let recipe = tiny_pretrain_recipe(
        dir.path(),
        &format!(
            "[data.source]\ndomain = \"satellite\"\npaths = [{:?}]\nbands = [1, 2, 3, 4]\n\
             chip_size = 56\nchips_per_epoch = 8",
            raster.display().to_string()
        ),
    );
    // R, G, B copy the RGB kernels and near-infrared starts at zero; the recorded
    // normalisation is ImageNet's on R, G, B: at lr 0 the grown model is the RGB model
    // whatever the NIR band holds.
    grow_at_lr_zero(
        &recipe,
        &checkpoint,
        &[
            "model.in_chans=4",
            "model.channel_map=[0, 1, 2, -1]",
            "crops.mean=[0.485, 0.456, 0.406, 0.5]",
            "crops.std=[0.229, 0.224, 0.225, 0.25]",
        ],
    );
    let embed = |model: &Path, bands: &str, out: &str| {
        let f = dir.path().join(out);
        let args = [
            "satellite",
            "embed",
            "--model",
            p(model),
            p(&raster),
            "--size",
            "56",
            "--bands",
            bands,
            "-o",
            p(&f),
            "--quiet",
        ];
        (dinoadapt(&args), f)
    };
    let (out, f) = embed(
        &dir.path().join("run/teacher"),
        "1,2,3,4",
        "bands.safetensors",
    );
    assert!(out.status.success());
    let four = read_tensors(&f)["cls"].clone();
    let (out, f) = embed(&checkpoint, "1,2,3", "rgb.safetensors");
    assert!(out.status.success());
    let rgb = read_tensors(&f)["cls"].clone();
    assert_eq!(four.0, rgb.0);
    let diff = max_abs_diff(&four.1, &rgb.1);
    eprintln!(
        "4-band model vs its RGB source on a raster's chips, class tokens: max |diff| {diff:.2e}"
    );
    assert!(diff < 1e-4, "class tokens differ by {diff}");
    // Three bands into the four-channel model: refused with the reason.
    let (out, _) = embed(
        &dir.path().join("run/teacher"),
        "1,2,3",
        "three.safetensors",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("records 4 channels"), "{err}");
}
