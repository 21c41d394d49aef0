//! `dinoadapt inspect` reports every fixture checkpoint as its producer described it
//! (meta.json / config.json), in every weight format the fixture ships.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (file, expected layout, embed_dim, depth, heads, patch, registers, swiglu, interpolation)
type Expectation = (
    String,
    &'static str,
    u64,
    u64,
    u64,
    u64,
    u64,
    bool,
    &'static str,
);

fn expectations(dir: &Path) -> Vec<Expectation> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let meta = json(&dir.join("meta.json"));
    if name.starts_with("hf_") {
        let c = json(&dir.join("config.json"));
        let reg = c["num_register_tokens"].as_u64().unwrap_or(0);
        let interp = if c["model_type"] == "dinov2_with_registers" {
            "bicubic-antialias"
        } else {
            "bicubic"
        };
        vec![(
            "model.safetensors".into(),
            "huggingface",
            c["hidden_size"].as_u64().unwrap(),
            c["num_hidden_layers"].as_u64().unwrap(),
            c["num_attention_heads"].as_u64().unwrap(),
            c["patch_size"].as_u64().unwrap(),
            reg,
            c["use_swiglu_ffn"].as_bool().unwrap(),
            interp,
        )]
    } else if name.starts_with("official_") {
        let k = &meta["constructor_kwargs"];
        let interp = if k["interpolate_antialias"].as_bool().unwrap() {
            "bicubic-antialias"
        } else {
            "offset-bicubic"
        };
        ["model.pth", "model.safetensors"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    "official",
                    k["embed_dim"].as_u64().unwrap(),
                    k["depth"].as_u64().unwrap(),
                    k["num_heads"].as_u64().unwrap(),
                    k["patch_size"].as_u64().unwrap(),
                    k["num_register_tokens"].as_u64().unwrap_or(0),
                    k["ffn_layer"].as_str().unwrap().starts_with("swiglu"),
                    interp,
                )
            })
            .collect()
    } else {
        let a = &meta["model_args"];
        ["pytorch_model.bin", "model.safetensors"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    "timm",
                    a["embed_dim"].as_u64().unwrap(),
                    a["depth"].as_u64().unwrap(),
                    a["num_heads"].as_u64().unwrap(),
                    a["patch_size"].as_u64().unwrap(),
                    a["reg_tokens"].as_u64().unwrap_or(0),
                    a["mlp_layer"].as_str().unwrap_or("").contains("SwiGLU"),
                    "bicubic-antialias",
                )
            })
            .collect()
    }
}

#[test]
fn inspect_reports_every_fixture_checkpoint() {
    let Some(fixtures) = fixtures() else { return };
    let mut checked = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("hf_") || name.starts_with("official_") || name.starts_with("timm_"))
        {
            continue;
        }
        let meta = json(&dir.join("meta.json"));
        let params: u64 = meta["weight_keys"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product::<u64>()
            })
            .sum();
        for (file, layout, d, depth, heads, patch, reg, swiglu, interp) in expectations(&dir) {
            let mut args = vec![
                "inspect".to_string(),
                "--json".into(),
                "--model".into(),
                dir.join(&file).display().to_string(),
            ];
            if layout == "official" {
                // Official checkpoints cannot tell their head count.
                args.extend(["--num-heads".into(), heads.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let v: Value = serde_json::from_str(&ok(&args)).unwrap();
            let a = &v["architecture"];
            assert_eq!(v["layout"], layout, "{name}/{file}");
            assert_eq!(a["embed_dim"], d, "{name}/{file}");
            assert_eq!(a["depth"], depth, "{name}/{file}");
            assert_eq!(a["num_heads"], heads, "{name}/{file}");
            assert_eq!(a["patch_size"], patch, "{name}/{file}");
            assert_eq!(a["num_register_tokens"], reg, "{name}/{file}");
            assert_eq!(
                a["ffn"]["kind"] == "swi_glu",
                swiglu,
                "{name}/{file}: {}",
                a["ffn"]
            );
            assert_eq!(v["interpolation"], interp, "{name}/{file}");
            assert_eq!(v["num_params"], params, "{name}/{file}");
            checked += 1;
        }
    }
    assert!(checked >= 13, "checked {checked} checkpoint files");
}

#[test]
fn official_head_count_defaults_to_dim_over_64_and_says_so() {
    let Some(fixtures) = fixtures() else { return };
    // D=64 and no --num-heads: one head, reported as the default.
    let v: Value = serde_json::from_str(&ok(&[
        "inspect",
        "--json",
        "--model",
        p(&fixtures.join("official_dinov2/model.pth")),
    ]))
    .unwrap();
    assert_eq!(v["architecture"]["num_heads"], 1);
    assert_eq!(v["num_heads_source"], "default: embed_dim / 64");
}

#[test]
fn presets_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    ok(&[
        "export",
        "--random-init",
        "--preset",
        "vits14_reg",
        "--to",
        "huggingface",
        "--out",
        p(&out),
    ]);
    let v: Value = serde_json::from_str(&ok(&["inspect", "--json", "--model", p(&out)])).unwrap();
    assert_eq!(v["preset"], "vits14_reg");
    assert_eq!(v["layout"], "huggingface");
    assert_eq!(v["num_params"], 22_058_112u64);
}
