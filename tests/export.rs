//! Checkpoints out: the native format and the Hugging Face layout load back with the same
//! weights and give the same features.

mod common;

use common::*;
use serde_json::Value;

/// cls features of `model` on the fixture's native and interpolated inputs.
fn features(
    model: &std::path::Path,
    extra: &[&str],
    pixels: &std::path::Path,
    key: &str,
    out: &std::path::Path,
) -> Vec<f32> {
    let mut args = vec![
        "embed",
        "--model",
        p(model),
        "--pixels",
        p(pixels),
        "--pixels-key",
        key,
        "--output",
        p(out),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    ok(&args);
    let t = read_tensors(out);
    let mut v = t["cls"].1.clone();
    v.extend_from_slice(&t["patch"].1);
    v
}

#[test]
fn huggingface_export_of_a_huggingface_checkpoint_is_the_same_file_content() {
    let Some(fixtures) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    for name in ["hf_dinov2", "hf_dinov2_reg", "hf_dinov2_swiglu"] {
        let src = fixtures.join(name);
        let out = dir.path().join(name);
        ok(&[
            "export",
            "--model",
            p(&src),
            "--to",
            "huggingface",
            "--out",
            p(&out),
        ]);
        let a = read_tensors(&src.join("model.safetensors"));
        let b = read_tensors(&out.join("model.safetensors"));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (k, (shape, data)) in &a {
            assert_eq!(&b[k].0, shape, "{name} {k}");
            assert_eq!(&b[k].1, data, "{name} {k}");
        }
        let ca: Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap())
                .unwrap();
        let cb: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        for k in [
            "model_type",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "patch_size",
            "image_size",
            "use_swiglu_ffn",
            "layer_norm_eps",
            "qkv_bias",
        ] {
            assert_eq!(ca[k], cb[k], "{name} config {k}");
        }
        assert_eq!(ca["mlp_ratio"].as_f64(), cb["mlp_ratio"].as_f64(), "{name}");
        // A whole ratio is written as an int, as transformers' config dataclass requires.
        if cb["mlp_ratio"].as_f64().is_some_and(|r| r.fract() == 0.0) {
            assert!(
                cb["mlp_ratio"].is_u64(),
                "{name}: mlp_ratio {}",
                cb["mlp_ratio"]
            );
        }
        assert_eq!(
            ca.get("num_register_tokens"),
            cb.get("num_register_tokens"),
            "{name}"
        );
    }
}

#[test]
fn official_weights_round_trip_through_native_and_huggingface() {
    let Some(fixtures) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    for name in ["official_dinov2_reg", "official_dinov2_swiglu"] {
        let src = fixtures.join(name).join("model.pth");
        let io = fixtures.join(name).join("io.safetensors");
        let native = dir.path().join(format!("{name}-native"));
        let hf = dir.path().join(format!("{name}-hf"));
        for (to, out) in [("native", &native), ("huggingface", &hf)] {
            ok(&[
                "export",
                "--model",
                p(&src),
                "--num-heads",
                "4",
                "--to",
                to,
                "--out",
                p(out),
            ]);
        }
        let v: Value =
            serde_json::from_str(&ok(&["inspect", "--json", "--model", p(&native)])).unwrap();
        assert_eq!(v["layout"], "native");
        assert_eq!(
            v["architecture"]["num_heads"], 4,
            "the native config carries the head count"
        );
        let f = |m: &std::path::Path, extra: &[&str], key: &str, tag: &str| {
            features(
                m,
                extra,
                &io,
                key,
                &dir.path().join(format!("{name}-{tag}.safetensors")),
            )
        };
        let reference = f(&src, &["--num-heads", "4"], "x", "ref");
        assert!(max_abs_diff(&reference, &f(&native, &[], "x", "native")) == 0.0);
        assert!(max_abs_diff(&reference, &f(&hf, &[], "x", "hf")) < 1e-6);
        // At another size too when the interpolation modes agree (registers: antialiased).
        if name.ends_with("_reg") {
            let a = f(&src, &["--num-heads", "4"], "x_interp0", "ref-i");
            let b = f(&hf, &[], "x_interp0", "hf-i");
            assert!(max_abs_diff(&a, &b) < 1e-6);
        }
    }
}

#[test]
fn architectures_transformers_cannot_express_are_refused() {
    let Some(fixtures) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dinoadapt(&[
        "export",
        "--model",
        p(&fixtures.join("timm_uni2h")),
        "--to",
        "huggingface",
        "--out",
        p(&dir.path().join("x")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_embed_class"));
    // The native format holds it.
    ok(&[
        "export",
        "--model",
        p(&fixtures.join("timm_uni2h")),
        "--to",
        "native",
        "--out",
        p(&dir.path().join("n")),
    ]);
}
