//! The DINO and iBOT projection heads (`dinov2/layers/dino_head.py`): an MLP to a bottleneck,
//! L2 normalisation, then a weight-normalised prototype layer, so the logits are scaled cosine
//! similarities to the prototypes. New heads are initialised as the official `DINOHead`: MLP
//! weights truncated-normal(0.02) with zero biases, the prototype directions `weight_v` with
//! PyTorch's default linear init, `weight_g` at 1 (and, as in DINOv2, `weight_g` trains).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::checkpoint::HostTensor;
use crate::vit::init::timm_linear;
use crate::vit::{StateDict, WeightError};

/// Configuration of a DINO / iBOT head (defaults of the official `ssl_default_config`).
#[derive(Config, Debug)]
pub struct DinoHeadConfig {
    /// Backbone width.
    pub in_dim: usize,
    /// Number of prototypes K (65536 in DINOv2; up to 131072).
    #[config(default = 65536)]
    pub num_prototypes: usize,
    #[config(default = 2048)]
    pub hidden_dim: usize,
    #[config(default = 256)]
    pub bottleneck_dim: usize,
    /// Linear layers in the MLP (GELU between them).
    #[config(default = 3)]
    pub nlayers: usize,
}

/// MLP -> L2 normalise -> weight-normalised prototypes (no bias).
#[derive(Module, Debug)]
pub struct DinoHead<B: Backend> {
    pub mlp: Vec<Linear<B>>,
    /// Weight-norm direction `weight_v`, stored [bottleneck, K] (burn's input-major layout).
    pub last_layer_v: Param<Tensor<B, 2>>,
    /// Weight-norm magnitude `weight_g` per prototype, [K] (initialised to 1; trained, with the
    /// last layer's learning rate and weight decay, as in DINOv2).
    pub last_layer_g: Param<Tensor<B, 1>>,
}

impl DinoHeadConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> DinoHead<B> {
        let n = self.nlayers.max(1);
        let mlp = (0..n)
            .map(|i| {
                let d_in = if i == 0 { self.in_dim } else { self.hidden_dim };
                let d_out = if i == n - 1 {
                    self.bottleneck_dim
                } else {
                    self.hidden_dim
                };
                timm_linear(d_in, d_out, true, device)
            })
            .collect();
        let v = LinearConfig::new(self.bottleneck_dim, self.num_prototypes)
            .with_bias(false)
            .init::<B>(device)
            .weight;
        DinoHead {
            mlp,
            last_layer_v: v,
            last_layer_g: Param::from_tensor(Tensor::ones([self.num_prototypes], device)),
        }
    }
}

/// The official key of MLP layer `i` of `n`: `mlp` alone for one layer, else the index in the
/// `nn.Sequential` with a GELU between layers (`mlp.0`, `mlp.2`, ...).
fn mlp_key(i: usize, n: usize) -> String {
    if n == 1 {
        "mlp".into()
    } else {
        format!("mlp.{}", 2 * i)
    }
}

impl<B: Backend> DinoHead<B> {
    /// A head from its official state dict (`mlp.0.weight`, ..., `last_layer.weight_g` [K, 1],
    /// `last_layer.weight_v` [K, bottleneck]; also the `parametrizations.weight.original0/1`
    /// names of `torch.nn.utils.parametrizations.weight_norm`), checked against `config`.
    pub fn from_state(
        config: &DinoHeadConfig,
        state: &StateDict,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let n = config.nlayers.max(1);
        let get = |keys: &[String], shape: Vec<usize>| -> Result<&HostTensor, WeightError> {
            let t = keys
                .iter()
                .find_map(|k| state.get(k))
                .ok_or_else(|| WeightError::Missing(vec![keys[0].clone()]))?;
            // [K] and [K, 1] are the same weight_g.
            let squeezed = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
            if squeezed(&t.shape) != squeezed(&shape) {
                return Err(WeightError::Shape {
                    key: keys[0].clone(),
                    expected: shape,
                    found: t.shape.clone(),
                });
            }
            Ok(t)
        };
        let mut mlp = Vec::with_capacity(n);
        for i in 0..n {
            let d_in = if i == 0 {
                config.in_dim
            } else {
                config.hidden_dim
            };
            let d_out = if i == n - 1 {
                config.bottleneck_dim
            } else {
                config.hidden_dim
            };
            let key = mlp_key(i, n);
            let w = get(&[format!("{key}.weight")], vec![d_out, d_in])?;
            let b = get(&[format!("{key}.bias")], vec![d_out])?;
            mlp.push(Linear {
                weight: Param::from_tensor(
                    Tensor::<B, 2>::from_data(
                        TensorData::new(w.data.clone(), [d_out, d_in]),
                        device,
                    )
                    .transpose(),
                ),
                bias: Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(b.data.clone(), [d_out]),
                    device,
                ))),
            });
        }
        let (k, bn) = (config.num_prototypes, config.bottleneck_dim);
        let g = get(
            &[
                "last_layer.weight_g".into(),
                "last_layer.parametrizations.weight.original0".into(),
            ],
            vec![k, 1],
        )?;
        let v = get(
            &[
                "last_layer.weight_v".into(),
                "last_layer.parametrizations.weight.original1".into(),
            ],
            vec![k, bn],
        )?;
        Ok(DinoHead {
            mlp,
            last_layer_v: Param::from_tensor(
                Tensor::<B, 2>::from_data(TensorData::new(v.data.clone(), [k, bn]), device)
                    .transpose(),
            ),
            last_layer_g: Param::from_tensor(Tensor::from_data(
                TensorData::new(g.data.clone(), [k]),
                device,
            )),
        })
    }

    /// The head's official state dict (the inverse of [`from_state`](Self::from_state), with
    /// the `weight_g` / `weight_v` names of `torch.nn.utils.weight_norm`).
    pub fn to_state(&self) -> StateDict {
        let mut s = StateDict::new();
        let n = self.mlp.len();
        for (i, layer) in self.mlp.iter().enumerate() {
            let key = mlp_key(i, n);
            let [d_in, d_out] = layer.weight.dims();
            s.insert(
                format!("{key}.weight"),
                HostTensor::from_tensor(layer.weight.val().transpose(), vec![d_out, d_in]),
            );
            if let Some(b) = &layer.bias {
                s.insert(
                    format!("{key}.bias"),
                    HostTensor::from_tensor(b.val(), vec![d_out]),
                );
            }
        }
        let [bn, k] = self.last_layer_v.dims();
        s.insert(
            "last_layer.weight_v".into(),
            HostTensor::from_tensor(self.last_layer_v.val().transpose(), vec![k, bn]),
        );
        s.insert(
            "last_layer.weight_g".into(),
            HostTensor::from_tensor(self.last_layer_g.val(), vec![k, 1]),
        );
        s
    }

    /// Bottleneck features, L2-normalised (eps 1e-12 as in f32): [N, bottleneck].
    pub fn embed(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.mlp.len() - 1;
        let mut x = x;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = gelu(x);
            }
        }
        let norm = x
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        x / norm
    }

    /// The prototype weights W = g * v / ||v|| (norm of each prototype's column), [bottleneck, K].
    pub fn prototypes(&self) -> Tensor<B, 2> {
        let v = self.last_layer_v.val();
        let norm = v.clone().powf_scalar(2.0).sum_dim(0).sqrt(); // [1, K]
        v / norm * self.last_layer_g.val().unsqueeze_dim::<2>(0)
    }

    /// Logits over the prototypes: [N, K].
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.embed(x).matmul(self.prototypes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    #[test]
    fn logits_are_scaled_cosine_similarities() {
        let device = Default::default();
        let head = DinoHeadConfig::new(16)
            .with_num_prototypes(32)
            .with_hidden_dim(24)
            .with_bottleneck_dim(8)
            .init::<Flex>(&device);
        assert_eq!(head.mlp.len(), 3);
        let x = Tensor::<Flex, 2>::random([5, 16], Distribution::Normal(0.0, 3.0), &device);
        let logits = head.forward(x.clone());
        assert_eq!(logits.dims(), [5, 32]);
        let max = logits.clone().abs().max().into_scalar();
        assert!(max <= 1.0 + 1e-5, "{max}");
        // The bottleneck rows have unit norm...
        let rows = head.embed(x).powf_scalar(2.0).sum_dim(1).sqrt();
        assert!((rows - 1.0).abs().max().into_scalar() < 1e-5);
        // ...and each prototype column has norm g.
        let norms = head.prototypes().powf_scalar(2.0).sum_dim(0).sqrt();
        assert!((norms - 1.0).abs().max().into_scalar() < 1e-5);
    }
}
