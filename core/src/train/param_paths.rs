//! Parameters by their dotted module path (`backbone.blocks.3.attn.qkv.weight`): the names the
//! optimizer's parameter groups, its saved state and the training checkpoints use. Paths come
//! from burn's module traversal, so they are stable across runs and processes, unlike
//! `ParamId`s.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::checkpoint::{HostTensor, NamedTensors};

/// The dotted path of the parameter being visited, kept as a stack of module names.
#[derive(Debug, Default, Clone)]
pub struct PathStack {
    parts: Vec<String>,
}

impl PathStack {
    pub fn enter(&mut self, name: &str) {
        self.parts.push(name.to_string());
    }

    pub fn exit(&mut self) {
        self.parts.pop();
    }

    pub fn current(&self) -> String {
        self.parts.join(".")
    }
}

struct Names {
    path: PathStack,
    out: Vec<(ParamId, String)>,
}

impl<B: Backend> ModuleVisitor<B> for Names {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push((param.id, self.path.current()));
    }
}

/// Every float parameter's id and dotted path, in traversal order.
pub fn param_names<B: Backend, M: Module<B>>(module: &M) -> Vec<(ParamId, String)> {
    let mut v = Names {
        path: PathStack::default(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

struct Snapshot {
    path: PathStack,
    out: NamedTensors,
}

impl<B: Backend> ModuleVisitor<B> for Snapshot {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let data = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("float parameters convert to f32");
        self.out
            .push((self.path.current(), HostTensor::new(shape, data)));
    }
}

/// Every float parameter copied to the host, by dotted path.
pub fn snapshot<B: Backend, M: Module<B>>(module: &M) -> NamedTensors {
    let mut v = Snapshot {
        path: PathStack::default(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Draws every lazily initialised parameter of `module` now: burn initialises a parameter at its
/// first use, so without this the values depend on what else drew from the backend's RNG
/// before that use (another replica's thread, an iteration's seeding).
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    module.visit(&mut Materialize);
}

/// Why a snapshot could not be loaded back into a module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RestoreError {
    #[error("parameter `{0}` is missing from the saved state")]
    Missing(String),
    #[error(
        "parameter `{name}` has shape {found:?} in the saved state, the model needs {expected:?}"
    )]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

struct Restore<'a, B: Backend> {
    path: PathStack,
    tensors: &'a HashMap<String, HostTensor>,
    device: B::Device,
    error: Option<RestoreError>,
}

impl<B: Backend> ModuleMapper<B> for Restore<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.current();
        let (id, tensor, mapper) = param.consume();
        let expected = tensor.dims().to_vec();
        let tensor = match self.tensors.get(&name) {
            None => {
                self.error.get_or_insert(RestoreError::Missing(name));
                tensor
            }
            Some(t) if t.shape != expected => {
                self.error.get_or_insert(RestoreError::Shape {
                    name,
                    expected,
                    found: t.shape.clone(),
                });
                tensor
            }
            Some(t) => {
                let require_grad = tensor.is_require_grad();
                let fresh = Tensor::<B, D>::from_data(
                    TensorData::new(t.data.clone(), t.shape.clone()),
                    &self.device,
                );
                if require_grad {
                    fresh.require_grad()
                } else {
                    fresh
                }
            }
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Replace every float parameter of `module` by the tensor of the same path in `tensors`,
/// keeping parameter ids (so optimizer state keyed by id stays valid).
pub fn restore<B: Backend, M: Module<B>>(
    module: M,
    tensors: &HashMap<String, HostTensor>,
    device: &B::Device,
) -> Result<M, RestoreError> {
    let mut m = Restore::<B> {
        path: PathStack::default(),
        tensors,
        device: device.clone(),
        error: None,
    };
    let module = module.map(&mut m);
    match m.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vit::{VisionTransformer, VitConfig};
    use burn::backend::Flex;

    #[test]
    fn paths_follow_the_official_names_and_round_trip() {
        let cfg = VitConfig::tiny("vits14_reg", 16, 2, 2);
        let device = Default::default();
        let a = VisionTransformer::<Flex>::init(&cfg, &device);
        let names: Vec<String> = param_names::<Flex, _>(&a)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert!(
            names.contains(&"blocks.1.attn.qkv.weight".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"blocks.0.ls1.gamma".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"cls_token".to_string()), "{names:?}");
        assert!(names.contains(&"register_tokens".to_string()), "{names:?}");

        let saved: HashMap<String, HostTensor> = snapshot::<Flex, _>(&a).into_iter().collect();
        let b = VisionTransformer::<Flex>::init(&cfg, &device);
        let b = restore(b, &saved, &device).unwrap();
        assert_eq!(snapshot::<Flex, _>(&b), snapshot::<Flex, _>(&a));

        let mut partial = saved.clone();
        partial.remove("norm.gamma");
        let c = VisionTransformer::<Flex>::init(&cfg, &device);
        assert_eq!(
            restore(c, &partial, &device).unwrap_err(),
            RestoreError::Missing("norm.gamma".into())
        );
    }
}
