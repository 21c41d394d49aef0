//! Moving weights between a [`VisionTransformer`] and a state dict in the canonical layout.
//!
//! The canonical layout is the official DINOv2 (torch-hub) naming and PyTorch shapes: linear
//! weights (out, in), the patch embedding as a (D, C, p, p) convolution, packed qkv, SwiGLU as
//! `mlp.w12` / `mlp.w3`. Every checkpoint format maps its keys onto this layout.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::config::{FfnConfig, VitConfig};
use super::layers::{Attention, Block, Ffn, LayerScale, Mlp, SwiGlu};
use super::model::VisionTransformer;
use crate::checkpoint::HostTensor;

/// Tensors by canonical name.
pub type StateDict = BTreeMap<String, HostTensor>;

/// What is wrong between a state dict and an architecture.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightError {
    #[error("missing weights {0:?}")]
    Missing(Vec<String>),
    #[error("missing weights {missing:?} and unexpected weights {unexpected:?}")]
    Mismatch {
        missing: Vec<String>,
        unexpected: Vec<String>,
    },
    #[error("unexpected weights {0:?}")]
    Unexpected(Vec<String>),
    #[error("weight `{key}` has shape {found:?}, expected {expected:?}")]
    Shape {
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// Every canonical key the architecture needs, with its PyTorch shape.
pub fn expected_keys(cfg: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.embed_dim;
    let p = cfg.patch_size;
    let mut keys: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, d]),
        ("pos_embed".into(), vec![1, cfg.pos_embed_rows(), d]),
        (
            "patch_embed.proj.weight".into(),
            vec![d, cfg.in_chans, p, p],
        ),
        ("patch_embed.proj.bias".into(), vec![d]),
    ];
    if cfg.num_register_tokens > 0 {
        keys.push((
            "register_tokens".into(),
            vec![1, cfg.num_register_tokens, d],
        ));
    }
    if cfg.mask_token {
        keys.push(("mask_token".into(), vec![1, d]));
    }
    let linear =
        |keys: &mut Vec<(String, Vec<usize>)>, name: String, o: usize, i: usize, bias: bool| {
            keys.push((format!("{name}.weight"), vec![o, i]));
            if bias {
                keys.push((format!("{name}.bias"), vec![o]));
            }
        };
    for b in 0..cfg.depth {
        let pre = format!("blocks.{b}");
        for n in ["norm1", "norm2"] {
            keys.push((format!("{pre}.{n}.weight"), vec![d]));
            keys.push((format!("{pre}.{n}.bias"), vec![d]));
        }
        linear(&mut keys, format!("{pre}.attn.qkv"), 3 * d, d, cfg.qkv_bias);
        linear(&mut keys, format!("{pre}.attn.proj"), d, d, cfg.proj_bias);
        if cfg.layer_scale {
            keys.push((format!("{pre}.ls1.gamma"), vec![d]));
            keys.push((format!("{pre}.ls2.gamma"), vec![d]));
        }
        match cfg.ffn {
            FfnConfig::Mlp { hidden } => {
                linear(&mut keys, format!("{pre}.mlp.fc1"), hidden, d, cfg.ffn_bias);
                linear(&mut keys, format!("{pre}.mlp.fc2"), d, hidden, cfg.ffn_bias);
            }
            FfnConfig::SwiGlu { hidden } => {
                linear(
                    &mut keys,
                    format!("{pre}.mlp.w12"),
                    2 * hidden,
                    d,
                    cfg.ffn_bias,
                );
                linear(&mut keys, format!("{pre}.mlp.w3"), d, hidden, cfg.ffn_bias);
            }
        }
    }
    keys.push(("norm.weight".into(), vec![d]));
    keys.push(("norm.bias".into(), vec![d]));
    keys
}

/// Check that `state` holds exactly the keys and shapes `cfg` needs.
pub fn check_state(cfg: &VitConfig, state: &StateDict) -> Result<(), WeightError> {
    let expected = expected_keys(cfg);
    let missing: Vec<String> = expected
        .iter()
        .filter(|(k, _)| !state.contains_key(k))
        .map(|(k, _)| k.clone())
        .collect();
    let unexpected: Vec<String> = state
        .keys()
        .filter(|k| !expected.iter().any(|(e, _)| e == *k))
        .cloned()
        .collect();
    match (missing.is_empty(), unexpected.is_empty()) {
        (false, false) => {
            return Err(WeightError::Mismatch {
                missing,
                unexpected,
            })
        }
        (false, true) => return Err(WeightError::Missing(missing)),
        (true, false) => return Err(WeightError::Unexpected(unexpected)),
        (true, true) => {}
    }
    for (k, shape) in &expected {
        let found = &state[k].shape;
        if found != shape {
            return Err(WeightError::Shape {
                key: k.clone(),
                expected: shape.clone(),
                found: found.clone(),
            });
        }
    }
    Ok(())
}

struct Reader<'a, B: Backend> {
    state: &'a StateDict,
    device: &'a B::Device,
}

impl<B: Backend> Reader<'_, B> {
    fn tensor<const D: usize>(&self, key: &str, shape: [usize; D]) -> Tensor<B, D> {
        let t = &self.state[key];
        Tensor::from_data(TensorData::new(t.data.clone(), shape), self.device)
    }

    fn param<const D: usize>(&self, key: &str) -> Param<Tensor<B, D>> {
        let shape: [usize; D] = self.state[key]
            .shape
            .clone()
            .try_into()
            .expect("checked rank");
        Param::from_tensor(self.tensor(key, shape))
    }

    /// A PyTorch (out, in[, ...]) weight as burn's (in, out) linear weight.
    fn linear(&self, name: &str) -> Linear<B> {
        let w = &self.state[&format!("{name}.weight")];
        let out = w.shape[0];
        let inp = w.data.len() / out;
        let mut t = vec![0f32; w.data.len()];
        for o in 0..out {
            for i in 0..inp {
                t[i * out + o] = w.data[o * inp + i];
            }
        }
        let weight = Tensor::from_data(TensorData::new(t, [inp, out]), self.device);
        let bias_key = format!("{name}.bias");
        Linear {
            weight: Param::from_tensor(weight),
            bias: self
                .state
                .get(&bias_key)
                .map(|_| self.param::<1>(&bias_key)),
        }
    }

    fn norm(&self, name: &str, eps: f64) -> LayerNorm<B> {
        let d = self.state[&format!("{name}.weight")].numel();
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(self.device);
        ln.gamma = self.param(&format!("{name}.weight"));
        ln.beta = Some(self.param(&format!("{name}.bias")));
        ln
    }
}

impl<B: Backend> VisionTransformer<B> {
    /// Build the model from canonical weights, after checking every key and shape.
    pub fn from_state(
        config: &VitConfig,
        state: &StateDict,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        check_state(config, state)?;
        let r = Reader::<B> { state, device };
        let eps = config.norm_eps;
        let blocks = (0..config.depth)
            .map(|b| {
                let pre = format!("blocks.{b}");
                let ls = |n: &str| {
                    config.layer_scale.then(|| LayerScale {
                        gamma: r.param(&format!("{pre}.{n}.gamma")),
                    })
                };
                let mlp = match config.ffn {
                    FfnConfig::Mlp { .. } => Ffn::Mlp(Mlp {
                        fc1: r.linear(&format!("{pre}.mlp.fc1")),
                        fc2: r.linear(&format!("{pre}.mlp.fc2")),
                    }),
                    FfnConfig::SwiGlu { hidden } => Ffn::SwiGlu(SwiGlu {
                        w12: r.linear(&format!("{pre}.mlp.w12")),
                        w3: r.linear(&format!("{pre}.mlp.w3")),
                        hidden,
                    }),
                };
                Block {
                    norm1: r.norm(&format!("{pre}.norm1"), eps),
                    attn: Attention {
                        qkv: r.linear(&format!("{pre}.attn.qkv")),
                        proj: r.linear(&format!("{pre}.attn.proj")),
                        num_heads: config.num_heads,
                    },
                    ls1: ls("ls1"),
                    norm2: r.norm(&format!("{pre}.norm2"), eps),
                    mlp,
                    ls2: ls("ls2"),
                    norm_eps: eps,
                    drop_path: config.drop_path_of_block(b),
                    drop_path_form: Default::default(),
                }
            })
            .collect();
        Ok(VisionTransformer {
            patch_embed: r.linear("patch_embed.proj"),
            cls_token: r.param("cls_token"),
            register_tokens: (config.num_register_tokens > 0).then(|| r.param("register_tokens")),
            mask_token: config.mask_token.then(|| r.param("mask_token")),
            pos_embed: r.param("pos_embed"),
            blocks,
            norm: r.norm("norm", eps),
            config: config.clone(),
            precision: Default::default(),
        })
    }

    /// The weights in the canonical layout (PyTorch shapes, official DINOv2 names).
    pub fn to_state(&self) -> StateDict {
        let mut s = StateDict::new();
        let cfg = &self.config;
        let put_linear = |s: &mut StateDict, name: &str, l: &Linear<B>, shape: Vec<usize>| {
            let w = l.weight.val().transpose();
            s.insert(
                format!("{name}.weight"),
                HostTensor::from_tensor(w, shape.clone()),
            );
            if let Some(b) = &l.bias {
                s.insert(
                    format!("{name}.bias"),
                    HostTensor::from_tensor(b.val(), vec![shape[0]]),
                );
            }
        };
        let norm = |s: &mut StateDict, name: &str, n: &LayerNorm<B>| {
            let d = n.gamma.dims()[0];
            s.insert(
                format!("{name}.weight"),
                HostTensor::from_tensor(n.gamma.val(), vec![d]),
            );
            if let Some(b) = &n.beta {
                s.insert(
                    format!("{name}.bias"),
                    HostTensor::from_tensor(b.val(), vec![d]),
                );
            }
        };
        let d = cfg.embed_dim;
        let p = cfg.patch_size;
        put_linear(
            &mut s,
            "patch_embed.proj",
            &self.patch_embed,
            vec![d, cfg.in_chans, p, p],
        );
        s.insert(
            "cls_token".into(),
            HostTensor::from_tensor(self.cls_token.val(), vec![1, 1, d]),
        );
        if let Some(r) = &self.register_tokens {
            s.insert(
                "register_tokens".into(),
                HostTensor::from_tensor(r.val(), vec![1, cfg.num_register_tokens, d]),
            );
        }
        if let Some(m) = &self.mask_token {
            s.insert(
                "mask_token".into(),
                HostTensor::from_tensor(m.val(), vec![1, d]),
            );
        }
        s.insert(
            "pos_embed".into(),
            HostTensor::from_tensor(self.pos_embed.val(), vec![1, cfg.pos_embed_rows(), d]),
        );
        for (b, block) in self.blocks.iter().enumerate() {
            let pre = format!("blocks.{b}");
            norm(&mut s, &format!("{pre}.norm1"), &block.norm1);
            norm(&mut s, &format!("{pre}.norm2"), &block.norm2);
            put_linear(
                &mut s,
                &format!("{pre}.attn.qkv"),
                &block.attn.qkv,
                vec![3 * d, d],
            );
            put_linear(
                &mut s,
                &format!("{pre}.attn.proj"),
                &block.attn.proj,
                vec![d, d],
            );
            for (n, ls) in [("ls1", &block.ls1), ("ls2", &block.ls2)] {
                if let Some(ls) = ls {
                    s.insert(
                        format!("{pre}.{n}.gamma"),
                        HostTensor::from_tensor(ls.gamma.val(), vec![d]),
                    );
                }
            }
            match &block.mlp {
                Ffn::Mlp(m) => {
                    let h = m.fc1.weight.dims()[1];
                    put_linear(&mut s, &format!("{pre}.mlp.fc1"), &m.fc1, vec![h, d]);
                    put_linear(&mut s, &format!("{pre}.mlp.fc2"), &m.fc2, vec![d, h]);
                }
                Ffn::SwiGlu(g) => {
                    let h = g.hidden;
                    put_linear(&mut s, &format!("{pre}.mlp.w12"), &g.w12, vec![2 * h, d]);
                    put_linear(&mut s, &format!("{pre}.mlp.w3"), &g.w3, vec![d, h]);
                }
            }
        }
        norm(&mut s, "norm", &self.norm);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn tiny() -> VitConfig {
        VitConfig::tiny("vitg14_reg", 32, 2, 3)
    }

    #[test]
    fn state_round_trips_through_the_model() {
        let cfg = tiny();
        let device = Default::default();
        let model = VisionTransformer::<Flex>::init(&cfg, &device);
        let state = model.to_state();
        check_state(&cfg, &state).unwrap();
        let again = VisionTransformer::<Flex>::from_state(&cfg, &state, &device).unwrap();
        assert_eq!(again.to_state(), state);
        let n: usize = state.values().map(|t| t.numel()).sum();
        assert_eq!(n, cfg.num_params());
    }

    #[test]
    fn reports_missing_unexpected_and_misshapen_weights() {
        let cfg = tiny();
        let device = Default::default();
        let state = VisionTransformer::<Flex>::init(&cfg, &device).to_state();
        let mut s = state.clone();
        s.remove("blocks.1.ls2.gamma");
        assert_eq!(
            check_state(&cfg, &s),
            Err(WeightError::Missing(vec!["blocks.1.ls2.gamma".into()]))
        );
        let mut s = state.clone();
        s.insert("head.weight".into(), HostTensor::new(vec![1], vec![0.0]));
        assert!(
            matches!(check_state(&cfg, &s), Err(WeightError::Unexpected(k)) if k == ["head.weight"])
        );
        let mut s = state;
        s.insert("norm.bias".into(), HostTensor::new(vec![3], vec![0.0; 3]));
        assert!(
            matches!(check_state(&cfg, &s), Err(WeightError::Shape { key, .. }) if key == "norm.bias")
        );
    }
}
