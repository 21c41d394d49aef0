//! Gated-attention MIL (ABMIL; Ilse et al. 2018) as CLAM's `Attn_Net_Gated` and PORPOISE's
//! `MIL_Attention_FC_surv` build it:
//!
//! ```text
//! h = Dropout(ReLU(fc(x)))                      per tile, [N, hidden]
//! a = tanh(V h), b = sigmoid(U h)               [N, attention]
//! s = w · (a ⊙ b)                               one score per tile, [N]
//! α = softmax(s) over the bag's tiles
//! z = Dropout(ReLU(rho(Σ α_i h_i)))             the slide embedding, [hidden]
//! out = classifier([z, covariates])             1 risk (Cox) or n_bins hazard logits (NLL)
//! ```
//!
//! One bag per forward (bags differ in size); a batch is the stack of its bags' outputs.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Config, Debug)]
pub struct AbmilConfig {
    /// Feature dimension of a tile (e.g. 384 for ViT-S/14, 1024 for ViT-L/14).
    pub d_input: usize,
    /// Outputs: 1 (Cox risk) or the number of time bins (NLL hazard logits).
    pub outputs: usize,
    /// Width of the per-tile embedding (PORPOISE "small": 256).
    #[config(default = 256)]
    pub hidden: usize,
    /// Width of the attention branches V and U.
    #[config(default = 256)]
    pub attention: usize,
    /// Dropout after the tile fc, in the attention branches and after rho (training only).
    #[config(default = 0.25)]
    pub dropout: f64,
    /// Slide-level covariates concatenated to the slide embedding before the output layer.
    #[config(default = 0)]
    pub covariates: usize,
    /// Seed of the initial weights (drawn on the host, so every device starts alike).
    #[config(default = 0)]
    pub seed: u64,
}

/// A linear layer with Xavier-uniform weights (as PORPOISE's `initialize_weights`, uniform
/// instead of normal) and zero bias, drawn from `rng`.
fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    rng: &mut StdRng,
    device: &B::Device,
) -> Linear<B> {
    let a = (6.0 / (d_in + d_out) as f64).sqrt() as f32;
    let w: Vec<f32> = (0..d_in * d_out).map(|_| rng.random_range(-a..a)).collect();
    let mut l = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Zeros)
        .init(device);
    l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device));
    l
}

#[derive(Module, Debug)]
pub struct Abmil<B: Backend> {
    pub fc: Linear<B>,
    pub attention_a: Linear<B>,
    pub attention_b: Linear<B>,
    pub attention_c: Linear<B>,
    pub rho: Linear<B>,
    pub classifier: Linear<B>,
    pub dropout: Dropout,
}

/// The output of one bag.
#[derive(Debug, Clone)]
pub struct AbmilOutput<B: Backend> {
    /// [outputs]: the risk, or the hazard logits.
    pub out: Tensor<B, 1>,
    /// [N]: the attention of each tile (softmax over the bag, sums to 1).
    pub attention: Tensor<B, 1>,
}

impl AbmilConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Abmil<B> {
        let rng = &mut StdRng::seed_from_u64(self.seed);
        Abmil {
            fc: linear(self.d_input, self.hidden, rng, device),
            attention_a: linear(self.hidden, self.attention, rng, device),
            attention_b: linear(self.hidden, self.attention, rng, device),
            attention_c: linear(self.attention, 1, rng, device),
            rho: linear(self.hidden, self.hidden, rng, device),
            classifier: linear(self.hidden + self.covariates, self.outputs, rng, device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl<B: Backend> Abmil<B> {
    /// Feature dimension of a tile.
    pub fn d_input(&self) -> usize {
        self.fc.weight.dims()[0]
    }

    /// Number of covariates the output layer takes beside the slide embedding.
    pub fn covariates(&self) -> usize {
        self.classifier.weight.dims()[0] - self.rho.weight.dims()[1]
    }

    /// One bag: `bag` [N, d_input], `covariates` [covariates] (None when the head has none).
    pub fn forward(&self, bag: Tensor<B, 2>, covariates: Option<Tensor<B, 1>>) -> AbmilOutput<B> {
        let h = self.dropout.forward(relu(self.fc.forward(bag)));
        let a = self
            .dropout
            .forward(self.attention_a.forward(h.clone()).tanh());
        let b = self
            .dropout
            .forward(sigmoid(self.attention_b.forward(h.clone())));
        let scores = self.attention_c.forward(a * b); // [N, 1]
        let alpha = softmax(scores, 0); // [N, 1]
        let pooled = (h * alpha.clone()).sum_dim(0); // [1, hidden]
        let z = self.dropout.forward(relu(self.rho.forward(pooled)));
        let z = match covariates {
            Some(c) => Tensor::cat(vec![z, c.unsqueeze::<2>()], 1),
            None => z,
        };
        AbmilOutput {
            out: self.classifier.forward(z).flatten(0, 1),
            attention: alpha.flatten(0, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn attention_is_a_distribution_and_bags_of_any_size_pass() {
        let device = Default::default();
        let m = AbmilConfig::new(6, 4)
            .with_hidden(8)
            .with_attention(5)
            .with_covariates(2)
            .init::<Flex>(&device);
        assert_eq!(m.d_input(), 6);
        assert_eq!(m.covariates(), 2);
        for n in [1usize, 3, 17] {
            let x: Vec<f32> = (0..n * 6)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
                .collect();
            let bag = Tensor::<Flex, 2>::from_data(TensorData::new(x, [n, 6]), &device);
            let cov = Tensor::<Flex, 1>::from_floats([0.5, -1.0], &device);
            let o = m.forward(bag, Some(cov));
            assert_eq!(o.out.dims(), [4]);
            let a = o.attention.into_data().into_vec::<f32>().unwrap();
            assert_eq!(a.len(), n);
            assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(a.iter().all(|&v| v > 0.0));
        }
    }

    #[test]
    fn a_bag_of_identical_tiles_attends_uniformly_and_equals_one_tile() {
        let device = Default::default();
        let m = AbmilConfig::new(3, 1).init::<Flex>(&device);
        let one = Tensor::<Flex, 2>::from_floats([[0.3, -0.2, 0.9]], &device);
        let four = one.clone().repeat_dim(0, 4);
        let (a, b) = (m.forward(one, None), m.forward(four, None));
        let a_out = a.out.into_data().into_vec::<f32>().unwrap()[0];
        let b_out = b.out.into_data().into_vec::<f32>().unwrap()[0];
        assert!((a_out - b_out).abs() < 1e-5);
        let att = b.attention.into_data().into_vec::<f32>().unwrap();
        assert!(att.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    }
}
