//! Per-parameter learning-rate and weight-decay multipliers, as the official
//! `get_params_groups_with_decay` assigns them: layer-wise lr decay, a patch-embedding lr
//! multiplier, no weight decay on biases, norms and LayerScale, and the DINO head's last layer
//! marked for its own (frozen-at-first) schedule.

/// What the optimizer applies to one parameter each step:
/// lr = (last_layer_lr if `is_last_layer` else lr) * `lr_multiplier`,
/// weight decay = wd * `wd_multiplier`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamGroup {
    pub lr_multiplier: f64,
    pub wd_multiplier: f64,
    pub is_last_layer: bool,
}

/// The layer id of a backbone parameter: 0 for the embeddings and tokens, i + 1 for block i,
/// depth + 1 for everything after the blocks.
fn layer_id(name: &str, depth: usize) -> usize {
    let embedding = [
        "pos_embed",
        "patch_embed",
        "mask_token",
        "cls_token",
        "register_tokens",
    ];
    if embedding.iter().any(|e| name.contains(e)) {
        return 0;
    }
    if let Some(pos) = name.find("blocks.") {
        if !name.contains("residual.") {
            let mut parts = name[pos..].split('.').skip(1);
            // Chunked checkpoints (`blocks.<chunk>.<i>.`) carry the global index second.
            let first = parts.next().and_then(|p| p.parse::<usize>().ok());
            let second = parts.next().and_then(|p| p.parse::<usize>().ok());
            if let Some(i) = second.or(first) {
                return i + 1;
            }
        }
    }
    depth + 1
}

/// The multipliers of parameter `name` (canonical names, without a `backbone.` prefix) of a
/// module with `depth` blocks (0 for heads, whose multipliers are all 1).
pub fn param_group(
    name: &str,
    depth: usize,
    layer_decay: f64,
    patch_embed_lr_mult: f64,
) -> ParamGroup {
    let mut lr_multiplier = if depth > 0 {
        layer_decay.powf((depth + 1 - layer_id(name, depth)) as f64)
    } else {
        1.0
    };
    if name.contains("patch_embed") {
        lr_multiplier *= patch_embed_lr_mult;
    }
    let no_decay = name.ends_with(".bias") || name.contains("norm") || name.contains("gamma");
    ParamGroup {
        lr_multiplier,
        wd_multiplier: if no_decay { 0.0 } else { 1.0 },
        is_last_layer: name.contains("last_layer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_decay_from_the_top_and_tokens_keep_weight_decay() {
        let g = |n: &str| param_group(n, 12, 0.9, 0.2);
        assert_eq!(g("norm.weight").lr_multiplier, 1.0);
        assert_eq!(g("blocks.11.mlp.fc1.weight").lr_multiplier, 0.9);
        assert_eq!(
            g("blocks.3.5.attn.qkv.weight"),
            g("blocks.5.attn.qkv.weight")
        );
        assert_eq!(g("cls_token").wd_multiplier, 1.0);
        assert_eq!(g("blocks.0.ls1.gamma").wd_multiplier, 0.0);
        assert!(
            (g("patch_embed.proj.weight").lr_multiplier - 0.9f64.powf(13.0) * 0.2).abs() < 1e-15
        );
        assert!(param_group("last_layer.weight_g", 0, 0.9, 0.2).is_last_layer);
    }
}
