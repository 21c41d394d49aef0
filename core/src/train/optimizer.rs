//! AdamW with a learning rate and weight decay per parameter, as PyTorch's `torch.optim.AdamW`
//! computes them when every parameter group carries its own `lr` and `weight_decay` (the official
//! DINOv2 `apply_optim_scheduler`). burn's optimizers take one learning rate for the whole module,
//! so this one is written here. Its state is keyed by parameter path, so it saves and restores
//! across processes.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::param_paths::PathStack;
use crate::checkpoint::{HostTensor, NamedTensors};

/// `torch.optim.AdamW` hyper-parameters other than lr and weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    /// The official DINOv2 settings (`adamw_beta1` 0.9, `adamw_beta2` 0.999, eps 1e-8).
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// The learning rate and weight decay of one parameter for this step; `None` leaves the
/// parameter and its state untouched (a frozen parameter).
pub type Hyper = Option<(f64, f64)>;

/// One parameter's moments, flattened.
#[derive(Debug, Clone)]
struct Moments<B: Backend> {
    exp_avg: Tensor<B, 1>,
    exp_avg_sq: Tensor<B, 1>,
    step: u64,
}

/// AdamW over the parameters of an autodiff module, keyed by dotted path.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    state: HashMap<String, Moments<B>>,
}

struct Step<'a, B: AutodiffBackend, F: Fn(&str) -> Hyper> {
    path: PathStack,
    grads: &'a mut GradientsParams,
    state: &'a mut HashMap<String, Moments<B::InnerBackend>>,
    config: AdamWConfig,
    hyper: F,
}

impl<B: AutodiffBackend, F: Fn(&str) -> Hyper> ModuleMapper<B> for Step<'_, B, F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let grad = self.grads.remove::<B::InnerBackend, D>(id);
        let name = self.path.current();
        let (Some(grad), Some((lr, wd))) = (grad, (self.hyper)(&name)) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let p = tensor.inner().reshape([n]);
        let g = grad.reshape([n]);
        let c = self.config;
        let moments = self.state.remove(&name).unwrap_or_else(|| Moments {
            exp_avg: g.zeros_like(),
            exp_avg_sq: g.zeros_like(),
            step: 0,
        });
        let step = moments.step + 1;
        // torch: param.mul_(1 - lr * wd); exp_avg.lerp_(grad, 1 - beta1);
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
        // param.addcdiv_(exp_avg, exp_avg_sq.sqrt() / sqrt(bc2) + eps, -lr / bc1)
        let p = p.mul_scalar(1.0 - lr * wd);
        let exp_avg =
            moments.exp_avg.clone() + (g.clone() - moments.exp_avg).mul_scalar(1.0 - c.beta1);
        let exp_avg_sq =
            moments.exp_avg_sq.mul_scalar(c.beta2) + (g.clone() * g).mul_scalar(1.0 - c.beta2);
        let bc1 = 1.0 - c.beta1.powi(step as i32);
        let bc2 = 1.0 - c.beta2.powi(step as i32);
        let denom = exp_avg_sq
            .clone()
            .sqrt()
            .div_scalar(bc2.sqrt())
            .add_scalar(c.eps);
        let p = p - (exp_avg.clone() / denom).mul_scalar(lr / bc1);
        self.state.insert(
            name,
            Moments {
                exp_avg,
                exp_avg_sq,
                step,
            },
        );
        let mut t = Tensor::<B, D>::from_inner(p.reshape(shape));
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            state: HashMap::new(),
        }
    }

    /// Drops the moments of the parameter at `path` (one whose shape changed, such as a
    /// resampled position embedding): it starts again from zero moments and step 0.
    pub fn forget(&mut self, path: &str) {
        self.state.remove(path);
    }

    /// One step over `module` with `grads` (consumed); `hyper(path)` gives each parameter's lr and
    /// weight decay.
    pub fn step<AB, M>(
        &mut self,
        module: M,
        mut grads: GradientsParams,
        hyper: impl Fn(&str) -> Hyper,
    ) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut mapper = Step::<AB, _> {
            path: PathStack::default(),
            grads: &mut grads,
            state: &mut self.state,
            config: self.config,
            hyper,
        };
        module.map(&mut mapper)
    }

    /// The state as named host tensors (`exp_avg.<path>`, `exp_avg_sq.<path>`) and the step count
    /// of each parameter.
    pub fn save(&self) -> (NamedTensors, Vec<(String, u64)>) {
        let host = |t: &Tensor<B, 1>| {
            let data = t.to_data().convert::<f32>().into_vec::<f32>().expect("f32");
            HostTensor::new(vec![data.len()], data)
        };
        let mut names: Vec<&String> = self.state.keys().collect();
        names.sort();
        let mut tensors = Vec::with_capacity(2 * names.len());
        let mut steps = Vec::with_capacity(names.len());
        for name in names {
            let m = &self.state[name];
            tensors.push((format!("exp_avg.{name}"), host(&m.exp_avg)));
            tensors.push((format!("exp_avg_sq.{name}"), host(&m.exp_avg_sq)));
            steps.push((name.clone(), m.step));
        }
        (tensors, steps)
    }

    /// Rebuild the state written by [`save`](Self::save). Returns the name of the first
    /// parameter whose moments are missing.
    pub fn load(
        config: AdamWConfig,
        tensors: &HashMap<String, HostTensor>,
        steps: &[(String, u64)],
        device: &B::Device,
    ) -> Result<Self, String> {
        let tensor = |key: String| {
            tensors
                .get(&key)
                .map(|t| {
                    Tensor::<B, 1>::from_data(TensorData::new(t.data.clone(), [t.numel()]), device)
                })
                .ok_or(key)
        };
        let mut state = HashMap::with_capacity(steps.len());
        for (name, step) in steps {
            state.insert(
                name.clone(),
                Moments {
                    exp_avg: tensor(format!("exp_avg.{name}"))?,
                    exp_avg_sq: tensor(format!("exp_avg_sq.{name}"))?,
                    step: *step,
                },
            );
        }
        Ok(AdamW { config, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};

    type AB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        a: Linear<B>,
        b: Linear<B>,
    }

    /// torch.optim.AdamW, two steps, one parameter element by hand:
    /// p=1, g=0.5 then g=-1, lr=0.1, wd=0.05.
    #[test]
    fn matches_torch_adamw_by_hand() {
        let (b1, b2, eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
        let (lr, wd) = (0.1, 0.05);
        let mut p = 1.0f64;
        let (mut m, mut v) = (0.0f64, 0.0f64);
        for (t, g) in [(1, 0.5f64), (2, -1.0)] {
            p *= 1.0 - lr * wd;
            m += (g - m) * (1.0 - b1);
            v = v * b2 + g * g * (1.0 - b2);
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            p -= lr / bc1 * m / (v.sqrt() / bc2.sqrt() + eps);
        }

        let device = Default::default();
        let mut model = Two::<AB> {
            a: LinearConfig::new(1, 1).with_bias(false).init(&device),
            b: LinearConfig::new(1, 1).with_bias(false).init(&device),
        };
        model.a.weight = Param::from_tensor(Tensor::from_data([[1.0f32]], &device));
        let mut opt = AdamW::<Flex>::new(AdamWConfig::default());
        for g in [0.5f32, -1.0] {
            // loss = g * a(x=1) + 0 * b: d/da = g
            let x = Tensor::<AB, 2>::from_data([[1.0f32]], &device);
            let loss = model.a.forward(x.clone()).mul_scalar(g).sum()
                + model.b.forward(x).sum().mul_scalar(0.0);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            // b is frozen: untouched and without state.
            model = opt.step(model, grads, |name| {
                (!name.starts_with("b.")).then_some((lr, wd))
            });
        }
        let got = model.a.weight.val().into_scalar() as f64;
        assert!((got - p).abs() < 1e-6, "{got} vs {p}");
        let (tensors, steps) = opt.save();
        assert_eq!(steps, vec![("a.weight".to_string(), 2)]);
        assert_eq!(tensors.len(), 2);
        let map: HashMap<_, _> = tensors.into_iter().collect();
        let back = AdamW::<Flex>::load(AdamWConfig::default(), &map, &steps, &device).unwrap();
        assert_eq!(back.save().1, steps);
    }
}
