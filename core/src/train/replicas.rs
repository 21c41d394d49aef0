//! Data parallelism: one student/teacher replica per device (or per process), each with an equal
//! shard of the global batch, kept identical by reducing across replicas what the official code
//! reduces across GPUs:
//!
//! - the gradients, averaged before clipping and the optimizer step (`DistributedDataParallel`);
//! - the Sinkhorn-Knopp sums over the batch (`SinkhornKnopp`'s `all_reduce` of the total and of
//!   the prototype sums, and of the number of masked patches for iBOT);
//! - the softmax-centering statistic (`update_center`'s `all_reduce` of the batch sum);
//! - the logged figures, so that every replica reports the global batch;
//! - and, beyond what the official code needs, the gradient norms that clipping divides by: a
//!   GPU sums a tensor with atomic adds, in no fixed order, so replicas holding the same averaged
//!   gradients can compute norms that differ in the last bits, and their weights would drift
//!   apart; every replica clips with rank 0's norms ([`lead_values`]).
//!
//! KoLeo stays per replica, as in the official code. A [`Replicas`] says how a tensor is summed
//! over the replicas; burn's collective operations do it in [`collective`] (feature
//! `collective`). Without one, a trainer is the only replica.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::checkpoint::HostTensor;

/// The replicas of a data-parallel run, as one of them sees them.
pub trait Replicas<B: Backend>: Send + Sync {
    /// Replicas in all (devices x processes).
    fn world(&self) -> usize;
    /// This replica's rank, 0-based; rank r holds images [r n, (r + 1) n) of the global batch.
    fn rank(&self) -> usize;
    /// The element-wise sum of `x` over every replica. All replicas call it with tensors of the
    /// same shape, in the same order.
    fn sum(&self, x: Tensor<B, 1>) -> Tensor<B, 1>;
}

/// The element-wise sum over the replicas of a tensor of any rank (itself without replicas).
pub fn sum_over<B: Backend, const D: usize>(
    replicas: Option<&dyn Replicas<B>>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match replicas {
        Some(r) if r.world() > 1 => {
            let shape = x.shape();
            r.sum(x.reshape([-1])).reshape(shape)
        }
        _ => x,
    }
}

/// Host numbers summed over the replicas (one small reduction).
pub fn sum_values<B: Backend>(
    replicas: Option<&dyn Replicas<B>>,
    values: &[f64],
    device: &B::Device,
) -> Vec<f64> {
    match replicas {
        Some(r) if r.world() > 1 && !values.is_empty() => {
            let x =
                Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device);
            r.sum(x)
                .into_data()
                .convert::<f64>()
                .into_vec::<f64>()
                .expect("f64 values")
        }
        _ => values.to_vec(),
    }
}

/// Rank 0's host numbers on every replica (a sum to which the others add zeros, so exact for
/// values an f32 holds).
pub fn lead_values<B: Backend>(
    replicas: Option<&dyn Replicas<B>>,
    values: &[f64],
    device: &B::Device,
) -> Vec<f64> {
    match replicas {
        Some(r) if r.world() > 1 && r.rank() != 0 => {
            sum_values(Some(r), &vec![0.0; values.len()], device)
        }
        _ => sum_values(replicas, values, device),
    }
}

/// Rank 0's values of `tensors` on every replica: each replica passes its own tensors of the
/// same names and shapes, and gets rank 0's back (a sum to which the other replicas add zeros,
/// so exact), in reductions of at most 16 M values.
pub fn broadcast_from_lead<B: Backend>(
    replicas: &dyn Replicas<B>,
    tensors: &mut HashMap<String, HostTensor>,
    device: &B::Device,
) {
    if replicas.world() < 2 {
        return;
    }
    const CHUNK: usize = 1 << 24;
    let lead = replicas.rank() == 0;
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    let mut start = 0;
    while start < names.len() {
        let mut end = start;
        let mut len = 0;
        while end < names.len() && (end == start || len + tensors[&names[end]].data.len() <= CHUNK)
        {
            len += tensors[&names[end]].data.len();
            end += 1;
        }
        let mut flat = Vec::with_capacity(len);
        for name in &names[start..end] {
            let data = &tensors[name].data;
            if lead {
                flat.extend_from_slice(data);
            } else {
                flat.resize(flat.len() + data.len(), 0.0);
            }
        }
        let summed = replicas
            .sum(Tensor::<B, 1>::from_data(
                TensorData::new(flat, [len]),
                device,
            ))
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 values");
        let mut at = 0;
        for name in &names[start..end] {
            let t = tensors.get_mut(name).expect("listed");
            let n = t.data.len();
            t.data.copy_from_slice(&summed[at..at + n]);
            at += n;
        }
        start = end;
    }
}

/// Every float parameter of a module, in the module's (deterministic) order, and whether it
/// has a gradient here.
struct ParamList<'a> {
    grads: &'a GradientsParams,
    params: Vec<(ParamId, bool)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ParamList<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let has = self.grads.get::<B::InnerBackend, D>(param.id).is_some();
        self.params.push((param.id, has));
    }
}

/// Takes the listed gradients out of `grads`, flattened.
struct TakeFlat<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    wanted: &'a HashMap<ParamId, usize>,
    parts: Vec<(usize, Tensor<B::InnerBackend, 1>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for TakeFlat<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(&slot) = self.wanted.get(&param.id) else {
            return;
        };
        let flat = match self.grads.remove::<B::InnerBackend, D>(param.id) {
            Some(g) => g.reshape([-1]),
            // Another replica has a gradient for it and this one has none (e.g. the mask token
            // of a shard without masked crops): its share is zero.
            None => {
                let value = param.val();
                Tensor::zeros([value.shape().num_elements()], &value.device())
            }
        };
        self.parts.push((slot, flat));
    }
}

/// Puts the averaged gradients back.
struct PutBack<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    averaged: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for PutBack<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.averaged.remove(&param.id) {
            self.grads.register(param.id, g.reshape(param.val().dims()));
        }
    }
}

/// Averages `module`'s gradients over the replicas, as `DistributedDataParallel` does before
/// the optimizer: a parameter gets the mean of every replica's gradient (zero for a replica
/// that has none), and has a gradient after it when any replica had one. Two reductions: which
/// parameters have gradients anywhere, then all of them flattened into one tensor.
pub fn average_gradients<B, I, M>(
    module: &M,
    grads: &mut GradientsParams,
    replicas: &dyn Replicas<I>,
    device: &I::Device,
) where
    B: AutodiffBackend<InnerBackend = I>,
    I: Backend,
    M: AutodiffModule<B>,
{
    let world = replicas.world();
    if world < 2 {
        return;
    }
    let mut list = ParamList {
        grads,
        params: Vec::new(),
    };
    module.visit(&mut list);
    let present: Vec<f64> = list
        .params
        .iter()
        .map(|&(_, has)| f64::from(u8::from(has)))
        .collect();
    let anywhere = sum_values(Some(replicas), &present, device);
    let wanted: HashMap<ParamId, usize> = list
        .params
        .iter()
        .zip(&anywhere)
        .filter(|(_, &count)| count > 0.5)
        .enumerate()
        .map(|(slot, ((id, _), _))| (*id, slot))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let mut take = TakeFlat::<B> {
        grads,
        wanted: &wanted,
        parts: Vec::new(),
    };
    module.visit(&mut take);
    let mut parts = take.parts;
    parts.sort_by_key(|(slot, _)| *slot);
    let sizes: Vec<usize> = parts.iter().map(|(_, t)| t.dims()[0]).collect();
    let flat = Tensor::cat(parts.into_iter().map(|(_, t)| t).collect(), 0);
    let mean = replicas.sum(flat).div_scalar(world as f64);
    let mut by_slot = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for n in sizes {
        by_slot.push(mean.clone().slice(start..start + n));
        start += n;
    }
    let mut averaged = HashMap::new();
    for (id, slot) in wanted {
        averaged.insert(id, by_slot[slot].clone());
    }
    module.visit(&mut PutBack::<B> { grads, averaged });
}

/// Replicas joined by burn's collective operations (`burn-collective`): one peer per replica,
/// each on its own thread, registered with the same configuration before its first step.
#[cfg(feature = "collective")]
pub mod collective {
    use burn::collective::{self as coll, CollectiveConfig, PeerId, ReduceOperation};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorPrimitive};

    use super::Replicas;

    /// One replica of a run over `world` replicas.
    #[derive(Debug, Clone, Copy)]
    pub struct CollectivePeer {
        rank: usize,
        world: usize,
    }

    /// Where this process sits in a run spread over processes (nodes): burn-collective's
    /// global level, one node per process.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct NodeSetup {
        /// This process's rank among the `nodes` processes.
        pub node: usize,
        pub nodes: usize,
        /// Replicas (devices) in each process.
        pub devices_per_node: usize,
        /// The orchestrator, `host:port` (started by node 0, [`start_orchestrator`]).
        pub orchestrator: String,
        /// The address the other nodes reach this one at, `host:port`; the port serves this
        /// node's tensors.
        pub address: String,
    }

    impl CollectivePeer {
        /// Registers this thread's replica `rank` of `world` on `device`; returns once every
        /// replica has registered.
        pub fn register<B: Backend>(
            rank: usize,
            world: usize,
            device: &B::Device,
        ) -> Result<Self, String> {
            let config = CollectiveConfig::default().with_num_devices(world);
            coll::register::<B>(PeerId::from(rank), device.clone(), config)
                .map_err(|e| format!("replica {rank} of {world}: registration failed: {e:?}"))?;
            Ok(CollectivePeer { rank, world })
        }

        /// Registers replica `local` of this process's `node.devices_per_node` in a run over
        /// `node.nodes` processes; returns once every replica of every node has registered.
        pub fn register_node<B: Backend>(
            local: usize,
            node: &NodeSetup,
            device: &B::Device,
        ) -> Result<Self, String> {
            let port = node
                .address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .ok_or_else(|| format!("node address `{}` is not host:port", node.address))?;
            let address = |a: &str| -> Result<burn_communication::Address, String> {
                format!("ws://{a}").parse()
            };
            let config = CollectiveConfig::default()
                .with_num_devices(node.devices_per_node)
                .with_num_nodes(node.nodes as u32)
                .with_global_address(address(&node.orchestrator)?)
                .with_node_address(address(&node.address)?)
                .with_data_service_port(port);
            let world = node.nodes * node.devices_per_node;
            let rank = node.node * node.devices_per_node + local;
            coll::register::<B>(PeerId::from(rank), device.clone(), config).map_err(|e| {
                format!(
                    "replica {rank} of {world} (node {} of {}): registration with the \
                     orchestrator at {} failed: {e:?}",
                    node.node, node.nodes, node.orchestrator
                )
            })?;
            Ok(CollectivePeer { rank, world })
        }

        /// Leaves the collective (every replica, after its last step).
        pub fn finish<B: Backend>(self) -> Result<(), String> {
            coll::finish_collective::<B>(PeerId::from(self.rank))
                .map_err(|e| format!("replica {}: {e:?}", self.rank))
        }
    }

    /// Serves burn-collective's global orchestrator on `port` (every interface), on a thread
    /// of its own, for the life of the process.
    pub fn start_orchestrator(port: u16) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the orchestrator's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("orchestrator".into())
            .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
            .map_err(|e| format!("cannot start the orchestrator: {e}"))?;
        Ok(())
    }

    impl<B: Backend> Replicas<B> for CollectivePeer {
        fn world(&self) -> usize {
            self.world
        }

        fn rank(&self) -> usize {
            self.rank
        }

        fn sum(&self, x: Tensor<B, 1>) -> Tensor<B, 1> {
            // Across nodes, the ring all-reduce slices a tensor into one part per node: a
            // shorter one (a count, a loss) is padded with zeros.
            let n = x.dims()[0];
            let x = if n < self.world {
                let pad = Tensor::zeros([self.world - n], &x.device());
                Tensor::cat(vec![x, pad], 0)
            } else {
                x
            };
            let summed = coll::all_reduce::<B>(
                PeerId::from(self.rank),
                x.into_primitive().tensor(),
                ReduceOperation::Sum,
            )
            .unwrap_or_else(|e| {
                panic!(
                    "replica {} of {}: the all-reduce failed ({e:?}); a replica stopped",
                    self.rank, self.world
                )
            });
            Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed)).slice(0..n)
        }
    }
}
