//! One type for every dense head: its configuration (serde: the program writes it to
//! `head.json`), the module, its forward pass, and its weights as named host tensors.

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use dinoadapt_core::checkpoint::{HostTensor, NamedTensors};
use dinoadapt_core::train::param_paths::{restore, snapshot};
use serde::{Deserialize, Serialize};

use super::dpt::{DptHead, DptHeadConfig};
use super::error::{DenseError, DenseResult};
use super::linear::{LinearHead, LinearHeadConfig};

/// What a dense head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenseTask {
    /// Per-pixel classes (logits → probabilities).
    Segment,
    /// Per-pixel heights in metres.
    Canopy,
}

/// The configuration of any dense head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DenseHeadConfig {
    /// DINOv2's linear head (1 layer) or its multi-layer variant (4 layers).
    Linear(LinearHeadConfig),
    /// The DPT head (4 layers), bins or plain regression.
    Dpt(DptHeadConfig),
}

impl DenseHeadConfig {
    pub fn task(&self) -> DenseTask {
        match self {
            DenseHeadConfig::Linear(_) => DenseTask::Segment,
            DenseHeadConfig::Dpt(_) => DenseTask::Canopy,
        }
    }

    /// Backbone layers the head reads (the last ones of its input).
    pub fn layers(&self) -> usize {
        match self {
            DenseHeadConfig::Linear(c) => c.layers,
            DenseHeadConfig::Dpt(_) => 4,
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            DenseHeadConfig::Linear(c) => c.dim,
            DenseHeadConfig::Dpt(c) => c.dim,
        }
    }

    /// Channels of [`DenseHead::predict`]: classes (probabilities) or 1 (metres).
    pub fn output_channels(&self) -> usize {
        match self {
            DenseHeadConfig::Linear(c) => c.classes,
            DenseHeadConfig::Dpt(_) => 1,
        }
    }

    pub fn check(&self) -> DenseResult<()> {
        match self {
            DenseHeadConfig::Linear(c) => c.check(),
            DenseHeadConfig::Dpt(c) => c.check(),
        }
    }

    /// A freshly initialised head (seed the backend first for a reproducible one).
    pub fn init<B: Backend>(&self, device: &B::Device) -> DenseResult<DenseHead<B>> {
        self.check()?;
        Ok(match self {
            DenseHeadConfig::Linear(c) => DenseHead::Linear(c.init(device)),
            DenseHeadConfig::Dpt(c) => DenseHead::Dpt(c.init(device)),
        })
    }

    /// Check that `tokens` dims [batch, layers, 1 + patches, dim] fit this head and `grid`.
    pub fn check_input(&self, dims: [usize; 4], grid: (usize, usize)) -> DenseResult<()> {
        let [_, layers, tokens, dim] = dims;
        if dim != self.dim() {
            return Err(DenseError::Shape(format!(
                "the features have dimension {dim}, the head takes {}",
                self.dim()
            )));
        }
        if layers < self.layers() {
            return Err(DenseError::Shape(format!(
                "the head reads {} layers, the features have {layers}",
                self.layers()
            )));
        }
        if tokens != 1 + grid.0 * grid.1 {
            return Err(DenseError::Shape(format!(
                "{tokens} tokens per layer do not make a class token + a {}x{} patch grid",
                grid.0, grid.1
            )));
        }
        Ok(())
    }
}

/// A dense head of either kind.
// Built once per run and moved rarely: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum DenseHead<B: Backend> {
    Linear(LinearHead<B>),
    Dpt(DptHead<B>),
}

impl<B: Backend> DenseHead<B> {
    /// The training output [batch, channels, size.0, size.1]: class logits (segment) or
    /// heights in metres (canopy) of `tokens` [batch, layers, 1 + patches, dim].
    pub fn forward(
        &self,
        config: &DenseHeadConfig,
        tokens: Tensor<B, 4>,
        grid: (usize, usize),
        size: (usize, usize),
    ) -> Tensor<B, 4> {
        match (self, config) {
            (DenseHead::Linear(h), _) => h.forward(tokens, grid, size),
            (DenseHead::Dpt(h), DenseHeadConfig::Dpt(c)) => {
                h.forward(tokens, grid, size, &c.output)
            }
            (DenseHead::Dpt(_), DenseHeadConfig::Linear(_)) => {
                panic!("a DPT head run with a linear head's configuration")
            }
        }
    }

    /// The prediction [batch, channels, size.0, size.1]: class probabilities (segment) or
    /// heights in metres (canopy).
    pub fn predict(
        &self,
        config: &DenseHeadConfig,
        tokens: Tensor<B, 4>,
        grid: (usize, usize),
        size: (usize, usize),
    ) -> Tensor<B, 4> {
        let y = self.forward(config, tokens, grid, size);
        match config.task() {
            DenseTask::Segment => softmax(y, 1),
            DenseTask::Canopy => y,
        }
    }

    /// The weights (and BatchNorm running statistics) by dotted path, for safetensors.
    pub fn to_named(&self) -> NamedTensors {
        snapshot(self)
    }

    /// The head of `config` with the weights of [`to_named`](Self::to_named).
    pub fn from_named(
        config: &DenseHeadConfig,
        tensors: NamedTensors,
        device: &B::Device,
    ) -> DenseResult<Self> {
        let map: HashMap<String, HostTensor> = tensors.into_iter().collect();
        Ok(restore(config.init::<B>(device)?, &map, device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense::bins::{BinNorm, Bins};
    use crate::dense::dpt::DptOutput;
    use burn::backend::Flex;

    #[test]
    fn weights_round_trip_through_named_tensors_and_json() {
        let device = Default::default();
        let tokens = Tensor::<Flex, 4>::random(
            [1, 4, 1 + 4, 6],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let configs = [
            DenseHeadConfig::Linear(LinearHeadConfig::new(6, 3).with_layers(4)),
            DenseHeadConfig::Dpt(
                DptHeadConfig::new(
                    6,
                    DptOutput::Bins(Bins::new(8, 0.0, 20.0, BinNorm::Softmax).unwrap()),
                )
                .with_features(4)
                .with_scale_channels([2, 2, 4, 4])
                .with_head_channels(2),
            ),
        ];
        for config in configs {
            let json = serde_json::to_string(&config).unwrap();
            let back: DenseHeadConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, config, "{json}");
            let a = config.init::<Flex>(&device).unwrap();
            let b = DenseHead::<Flex>::from_named(&back, a.to_named(), &device).unwrap();
            let (ya, yb) = (
                a.predict(&config, tokens.clone(), (2, 2), (14, 14)),
                b.predict(&config, tokens.clone(), (2, 2), (14, 14)),
            );
            assert_eq!(ya.dims()[1], config.output_channels());
            assert_eq!(
                ya.into_data().to_vec::<f32>().unwrap(),
                yb.into_data().to_vec::<f32>().unwrap()
            );
            // A missing tensor is an error, not silently fresh weights.
            let mut partial = a.to_named();
            partial.pop();
            assert!(DenseHead::<Flex>::from_named(&config, partial, &device).is_err());
        }
        assert!(DenseHeadConfig::Linear(LinearHeadConfig::new(6, 3))
            .check_input([1, 1, 5, 7], (2, 2))
            .is_err());
    }
}
