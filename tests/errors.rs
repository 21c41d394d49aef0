//! Bad checkpoints give clear errors (file, what is wrong, what to do), never a panic.

mod common;

use std::path::Path;

use common::*;

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = dinoadapt(args);
    assert_eq!(out.status.code(), Some(2), "exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

fn truncate(src: &Path, dst: &Path, keep: f64) {
    let bytes = std::fs::read(src).unwrap();
    std::fs::write(dst, &bytes[..(bytes.len() as f64 * keep) as usize]).unwrap();
}

#[test]
fn truncated_checkpoints_are_clear_errors() {
    let Some(fixtures) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (src, name) in [
        ("official_dinov2/model.pth", "cut.pth"),
        ("timm_uni/pytorch_model.bin", "cut.bin"),
        ("hf_dinov2/model.safetensors", "cut.safetensors"),
    ] {
        let dst = dir.path().join(name);
        truncate(&fixtures.join(src), &dst, 0.6);
        fails_with(&["inspect", "--model", p(&dst)], &[name, "not a valid"]);
    }
    // Issue 18, defect 12: a cut safetensors file says so, with sizes (not the parser's
    // "incomplete metadata" / "invalid header length").
    for (keep, needle) in [(0.6, "tensor data than the"), (0.0005, "the header is")] {
        let dst = dir.path().join("cut.safetensors");
        truncate(&fixtures.join("hf_dinov2/model.safetensors"), &dst, keep);
        fails_with(&["inspect", "--model", p(&dst)], &["truncated", needle]);
    }
}

#[test]
fn misnamed_weights_name_the_missing_and_unexpected_keys() {
    let Some(fixtures) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(fixtures.join("official_dinov2/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&src).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                if k == "norm.weight" {
                    "final_norm.weight".to_string()
                } else {
                    k
                },
                v,
            )
        })
        .collect();
    let path = dir.path().join("renamed.safetensors");
    safetensors::serialize_to_file(renamed, None, &path).unwrap();
    fails_with(
        &["inspect", "--model", p(&path), "--num-heads", "4"],
        &["renamed.safetensors", "norm.weight", "final_norm.weight"],
    );
}

#[test]
fn a_wrong_head_count_or_preset_is_a_clear_error() {
    let Some(fixtures) = fixtures() else { return };
    let model = fixtures.join("official_dinov2/model.pth");
    fails_with(
        &["inspect", "--model", p(&model), "--num-heads", "5"],
        &["not divisible by num_heads 5"],
    );
    fails_with(
        &["inspect", "--model", p(&model), "--preset", "vits14"],
        &[
            "model.pth",
            "missing weights",
            "more)",
            "depth=12",
            "--preset",
        ],
    );
}

#[test]
fn files_that_are_not_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"hello, this is not a checkpoint at all").unwrap();
    fails_with(
        &["inspect", "--model", p(&junk)],
        &["junk.pth", "neither safetensors nor"],
    );
    let other = dir.path().join("resnet.safetensors");
    let w = vec![0u8; 16];
    let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &w).unwrap();
    safetensors::serialize_to_file(vec![("conv1.weight", v)], None, &other).unwrap();
    fails_with(
        &["inspect", "--model", p(&other)],
        &["resnet.safetensors", "not a ViT checkpoint"],
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails_with(
        &["inspect", "--model", p(&empty)],
        &["no checkpoint in this folder"],
    );
}
