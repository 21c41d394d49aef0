//! Key layouts of the checkpoint formats users hold, and their mapping onto the canonical
//! (official DINOv2) layout the model loads from. See `../shared/fixtures/README.md` §4.

use std::collections::BTreeMap;

use super::host_tensor::HostTensor;
use crate::vit::StateDict;

/// The naming scheme of a checkpoint's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Official DINOv2 / torch-hub (`blocks.i.attn.qkv`, `mask_token`, `ls1.gamma`).
    Official,
    /// Hugging Face transformers `Dinov2Model` / `Dinov2WithRegistersModel`.
    HuggingFace,
    /// timm `VisionTransformer` (UNI, UNI2-h): `reg_token`, no mask token.
    Timm,
    /// dinoadapt's own safetensors: canonical keys plus the architecture in the metadata.
    Native,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Official => "official DINOv2 (torch-hub)",
            Layout::HuggingFace => "Hugging Face transformers",
            Layout::Timm => "timm",
            Layout::Native => "dinoadapt native",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Layout::Official => "official",
            Layout::HuggingFace => "huggingface",
            Layout::Timm => "timm",
            Layout::Native => "native",
        }
    }
}

/// A state dict after prefix stripping and renaming.
#[derive(Debug, Clone)]
pub struct Canonical {
    pub layout: Layout,
    pub state: StateDict,
    /// Keys that belong to heads or wrappers, not to the backbone, and were left out.
    pub dropped: Vec<String>,
}

/// Keys that are classification / SSL heads around a backbone, never part of it.
fn is_head_key(k: &str) -> bool {
    [
        "head.",
        "fc_norm.",
        "classifier.",
        "dino_head.",
        "ibot_head.",
        "pooler.",
    ]
    .iter()
    .any(|p| k.starts_with(p))
}

/// Strip wrapper prefixes (`teacher.`/`student.`, `module.`, `backbone.`, `model.`, `dinov2.`)
/// and collapse chunked blocks (`blocks.<chunk>.<i>.` -> `blocks.<i>.`).
pub fn strip_wrappers(
    tensors: Vec<(String, HostTensor)>,
) -> (Vec<(String, HostTensor)>, Vec<String>) {
    let mut dropped = Vec::new();
    let mut tensors = tensors;
    // Training checkpoints carry both networks: the teacher is the one evaluated.
    for side in ["teacher.", "student."] {
        if tensors.iter().any(|(k, _)| k.starts_with(side)) {
            let (keep, drop): (Vec<_>, Vec<_>) =
                tensors.into_iter().partition(|(k, _)| k.starts_with(side));
            dropped.extend(drop.into_iter().map(|(k, _)| k));
            tensors = keep
                .into_iter()
                .map(|(k, t)| (k[side.len()..].to_string(), t))
                .collect();
            break;
        }
    }
    loop {
        let mut changed = false;
        for prefix in ["module.", "backbone.", "model.", "dinov2.", "_orig_mod."] {
            let (inside, outside): (Vec<_>, Vec<_>) =
                tensors.iter().partition(|(k, _)| k.starts_with(prefix));
            if inside.is_empty() {
                continue;
            }
            if outside.iter().all(|(k, _)| is_head_key(k)) {
                let (keep, drop): (Vec<_>, Vec<_>) = tensors
                    .into_iter()
                    .partition(|(k, _)| k.starts_with(prefix));
                dropped.extend(drop.into_iter().map(|(k, _)| k));
                tensors = keep
                    .into_iter()
                    .map(|(k, t)| (k[prefix.len()..].to_string(), t))
                    .collect();
                changed = true;
                break;
            }
        }
        if !changed {
            break;
        }
    }
    let tensors = tensors.into_iter().map(|(k, t)| (unchunk(&k), t)).collect();
    (tensors, dropped)
}

fn unchunk(key: &str) -> String {
    let parts: Vec<&str> = key.splitn(4, '.').collect();
    if parts.len() == 4
        && parts[0] == "blocks"
        && parts[1].parse::<usize>().is_ok()
        && parts[2].parse::<usize>().is_ok()
    {
        format!("blocks.{}.{}", parts[2], parts[3])
    } else {
        key.to_string()
    }
}

/// Guess the layout from the (stripped) keys.
pub fn detect_layout(keys: &[&str]) -> Option<Layout> {
    let has = |k: &str| keys.contains(&k);
    if keys
        .iter()
        .any(|k| k.starts_with("embeddings.") || k.starts_with("encoder.layer."))
    {
        Some(Layout::HuggingFace)
    } else if has("reg_token") {
        Some(Layout::Timm)
    } else if has("blocks.0.attn.qkv.weight") || has("cls_token") {
        if has("mask_token") || has("register_tokens") {
            Some(Layout::Official)
        } else {
            Some(Layout::Timm)
        }
    } else {
        None
    }
}

/// Rename a state dict of `layout` to canonical keys. Head keys are dropped and reported.
pub fn to_canonical(layout: Layout, tensors: Vec<(String, HostTensor)>) -> Canonical {
    let mut dropped = Vec::new();
    let mut state = StateDict::new();
    match layout {
        Layout::Official | Layout::Native => {
            for (k, t) in tensors {
                if is_head_key(&k) {
                    dropped.push(k);
                } else {
                    state.insert(k, t);
                }
            }
        }
        Layout::Timm => {
            for (k, t) in tensors {
                if is_head_key(&k) {
                    dropped.push(k);
                } else if k == "reg_token" {
                    state.insert("register_tokens".into(), t);
                } else {
                    state.insert(k, t);
                }
            }
            rename_packed_swiglu(&mut state);
        }
        Layout::HuggingFace => {
            let mut qkv: BTreeMap<(usize, &'static str, usize), HostTensor> = BTreeMap::new();
            let mut gate_up: BTreeMap<(usize, &'static str, usize), HostTensor> = BTreeMap::new();
            for (k, t) in tensors {
                match hf_key(&k) {
                    HfKey::Plain(c) => {
                        state.insert(c, t);
                    }
                    HfKey::Qkv(block, which, part) => {
                        qkv.insert((block, part, which), t);
                    }
                    HfKey::GateUp(block, which, part) => {
                        gate_up.insert((block, part, which), t);
                    }
                    HfKey::Head => dropped.push(k),
                    HfKey::Unknown => {
                        state.insert(k, t);
                    }
                }
            }
            concat_rows(&mut state, qkv, 3, "attn.qkv");
            concat_rows(&mut state, gate_up, 2, "mlp.w12");
        }
    }
    Canonical {
        layout,
        state,
        dropped,
    }
}

/// timm `SwiGLUPacked` uses `mlp.fc1`/`mlp.fc2` names; it is packed SwiGLU when fc1 has twice
/// the rows that fc2 has columns.
fn rename_packed_swiglu(state: &mut StateDict) {
    let blocks: Vec<String> = state
        .keys()
        .filter_map(|k| k.strip_suffix(".mlp.fc1.weight").map(str::to_string))
        .collect();
    for b in blocks {
        let fc1 = &state[&format!("{b}.mlp.fc1.weight")];
        let Some(fc2) = state.get(&format!("{b}.mlp.fc2.weight")) else {
            continue;
        };
        if fc1.shape.len() == 2 && fc2.shape.len() == 2 && fc1.shape[0] == 2 * fc2.shape[1] {
            for (from, to) in [("fc1", "w12"), ("fc2", "w3")] {
                for p in ["weight", "bias"] {
                    if let Some(t) = state.remove(&format!("{b}.mlp.{from}.{p}")) {
                        state.insert(format!("{b}.mlp.{to}.{p}"), t);
                    }
                }
            }
        }
    }
}

enum HfKey {
    Plain(String),
    /// (block, 0/1/2 for q/k/v, "weight"|"bias")
    Qkv(usize, usize, &'static str),
    /// (block, 0/1 for gate/up, "weight"|"bias")
    GateUp(usize, usize, &'static str),
    Head,
    Unknown,
}

fn hf_key(k: &str) -> HfKey {
    let plain = |s: &str| HfKey::Plain(s.to_string());
    match k {
        "embeddings.cls_token" => return plain("cls_token"),
        "embeddings.mask_token" => return plain("mask_token"),
        "embeddings.position_embeddings" => return plain("pos_embed"),
        "embeddings.register_tokens" => return plain("register_tokens"),
        _ => {}
    }
    if let Some(p) = k.strip_prefix("embeddings.patch_embeddings.projection.") {
        return HfKey::Plain(format!("patch_embed.proj.{p}"));
    }
    if let Some(p) = k.strip_prefix("layernorm.") {
        return HfKey::Plain(format!("norm.{p}"));
    }
    if is_head_key(k) {
        return HfKey::Head;
    }
    let Some(rest) = k.strip_prefix("encoder.layer.") else {
        return HfKey::Unknown;
    };
    let Some((idx, rest)) = rest.split_once('.') else {
        return HfKey::Unknown;
    };
    let Ok(b) = idx.parse::<usize>() else {
        return HfKey::Unknown;
    };
    let Some((module, param)) = rest.rsplit_once('.') else {
        return HfKey::Unknown;
    };
    let part: &'static str = match param {
        "weight" => "weight",
        "bias" => "bias",
        _ => "",
    };
    let pre = format!("blocks.{b}");
    match (module, param) {
        ("layer_scale1", "lambda1") => HfKey::Plain(format!("{pre}.ls1.gamma")),
        ("layer_scale2", "lambda1") => HfKey::Plain(format!("{pre}.ls2.gamma")),
        _ if part.is_empty() => HfKey::Unknown,
        ("norm1" | "norm2" | "mlp.fc1" | "mlp.fc2", _) => {
            HfKey::Plain(format!("{pre}.{module}.{part}"))
        }
        ("attention.attention.query" | "attention.q_proj", _) => HfKey::Qkv(b, 0, part),
        ("attention.attention.key" | "attention.k_proj", _) => HfKey::Qkv(b, 1, part),
        ("attention.attention.value" | "attention.v_proj", _) => HfKey::Qkv(b, 2, part),
        ("attention.output.dense" | "attention.o_proj", _) => {
            HfKey::Plain(format!("{pre}.attn.proj.{part}"))
        }
        ("mlp.weights_in", _) => HfKey::Plain(format!("{pre}.mlp.w12.{part}")),
        ("mlp.weights_out" | "mlp.down_proj", _) => HfKey::Plain(format!("{pre}.mlp.w3.{part}")),
        ("mlp.gate_proj", _) => HfKey::GateUp(b, 0, part),
        ("mlp.up_proj", _) => HfKey::GateUp(b, 1, part),
        _ => HfKey::Unknown,
    }
}

/// Stack split projections (q, k, v or gate, up) into one packed tensor by rows. Incomplete
/// groups are kept under their parts' canonical-looking names so the loader reports them.
fn concat_rows(
    state: &mut StateDict,
    parts: BTreeMap<(usize, &'static str, usize), HostTensor>,
    n: usize,
    name: &str,
) {
    let mut groups: BTreeMap<(usize, &'static str), Vec<(usize, HostTensor)>> = BTreeMap::new();
    for ((b, p, which), t) in parts {
        groups.entry((b, p)).or_default().push((which, t));
    }
    for ((b, p), mut ts) in groups {
        ts.sort_by_key(|(w, _)| *w);
        let key = format!("blocks.{b}.{name}.{p}");
        if ts.len() != n || ts.iter().enumerate().any(|(i, (w, _))| *w != i) {
            for (w, t) in ts {
                state.insert(format!("{key}#part{w}"), t);
            }
            continue;
        }
        let rows: usize = ts.iter().map(|(_, t)| t.shape[0]).sum();
        let mut shape = ts[0].1.shape.clone();
        shape[0] = rows;
        let data = ts.into_iter().flat_map(|(_, t)| t.data).collect();
        state.insert(key, HostTensor::new(shape, data));
    }
}

/// Split a packed (rows, ...) tensor into `n` equal row blocks.
pub fn split_rows(t: &HostTensor, n: usize) -> Vec<HostTensor> {
    let rows = t.shape[0] / n;
    let per = t.data.len() / n;
    (0..n)
        .map(|i| {
            let mut shape = t.shape.clone();
            shape[0] = rows;
            HostTensor::new(shape, t.data[i * per..(i + 1) * per].to_vec())
        })
        .collect()
}

/// Canonical keys to the Hugging Face on-disk names (`save_pretrained` legacy hub names).
pub fn to_huggingface(state: &StateDict) -> Vec<(String, HostTensor)> {
    let mut out = Vec::with_capacity(state.len() + 16);
    for (k, t) in state {
        let simple = match k.as_str() {
            "cls_token" => Some("embeddings.cls_token".to_string()),
            "mask_token" => Some("embeddings.mask_token".to_string()),
            "pos_embed" => Some("embeddings.position_embeddings".to_string()),
            "register_tokens" => Some("embeddings.register_tokens".to_string()),
            _ => None,
        };
        if let Some(s) = simple {
            out.push((s, t.clone()));
            continue;
        }
        if let Some(p) = k.strip_prefix("patch_embed.proj.") {
            out.push((
                format!("embeddings.patch_embeddings.projection.{p}"),
                t.clone(),
            ));
            continue;
        }
        if let Some(p) = k.strip_prefix("norm.") {
            out.push((format!("layernorm.{p}"), t.clone()));
            continue;
        }
        let Some(rest) = k.strip_prefix("blocks.") else {
            out.push((k.clone(), t.clone()));
            continue;
        };
        let (b, rest) = rest.split_once('.').unwrap_or((rest, ""));
        let pre = format!("encoder.layer.{b}");
        let (module, param) = rest.rsplit_once('.').unwrap_or((rest, ""));
        match module {
            "attn.qkv" => {
                for (name, part) in ["query", "key", "value"].iter().zip(split_rows(t, 3)) {
                    out.push((format!("{pre}.attention.attention.{name}.{param}"), part));
                }
            }
            "attn.proj" => out.push((format!("{pre}.attention.output.dense.{param}"), t.clone())),
            "ls1" => out.push((format!("{pre}.layer_scale1.lambda1"), t.clone())),
            "ls2" => out.push((format!("{pre}.layer_scale2.lambda1"), t.clone())),
            "mlp.w12" => out.push((format!("{pre}.mlp.weights_in.{param}"), t.clone())),
            "mlp.w3" => out.push((format!("{pre}.mlp.weights_out.{param}"), t.clone())),
            _ => out.push((format!("{pre}.{module}.{param}"), t.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> HostTensor {
        let n = shape.iter().product();
        HostTensor::new(shape.to_vec(), (0..n).map(|v| v as f32).collect())
    }

    #[test]
    fn strips_training_wrappers_and_chunks() {
        let keys = vec![
            ("teacher.backbone.blocks.1.3.norm1.weight", t(&[2])),
            ("teacher.backbone.cls_token", t(&[1, 1, 2])),
            ("teacher.dino_head.mlp.0.weight", t(&[2, 2])),
            ("student.backbone.cls_token", t(&[1, 1, 2])),
        ];
        let (out, dropped) =
            strip_wrappers(keys.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        let names: Vec<_> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["blocks.3.norm1.weight", "cls_token"]);
        assert_eq!(
            dropped,
            ["student.backbone.cls_token", "dino_head.mlp.0.weight"]
        );
    }

    #[test]
    fn huggingface_keys_round_trip_through_canonical() {
        let canonical: StateDict = [
            ("cls_token", t(&[1, 1, 4])),
            ("blocks.0.attn.qkv.weight", t(&[12, 4])),
            ("blocks.0.attn.qkv.bias", t(&[12])),
            ("blocks.0.ls1.gamma", t(&[4])),
            ("blocks.0.mlp.w12.weight", t(&[8, 4])),
            ("norm.weight", t(&[4])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let hf = to_huggingface(&canonical);
        assert!(hf
            .iter()
            .any(|(k, _)| k == "encoder.layer.0.attention.attention.value.bias"));
        let keys: Vec<&str> = hf.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(detect_layout(&keys), Some(Layout::HuggingFace));
        let back = to_canonical(Layout::HuggingFace, hf);
        assert_eq!(back.state, canonical);
    }

    #[test]
    fn detects_each_layout() {
        assert_eq!(
            detect_layout(&["cls_token", "mask_token"]),
            Some(Layout::Official)
        );
        assert_eq!(
            detect_layout(&["cls_token", "blocks.0.attn.qkv.weight"]),
            Some(Layout::Timm)
        );
        assert_eq!(
            detect_layout(&["reg_token", "cls_token"]),
            Some(Layout::Timm)
        );
        assert_eq!(detect_layout(&["conv1.weight"]), None);
    }

    #[test]
    fn timm_packed_swiglu_becomes_w12_w3() {
        let mut s: StateDict = [
            ("blocks.0.mlp.fc1.weight", t(&[10, 4])),
            ("blocks.0.mlp.fc1.bias", t(&[10])),
            ("blocks.0.mlp.fc2.weight", t(&[4, 5])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        rename_packed_swiglu(&mut s);
        let keys: Vec<_> = s.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "blocks.0.mlp.w12.bias",
                "blocks.0.mlp.w12.weight",
                "blocks.0.mlp.w3.weight"
            ]
        );
    }
}
