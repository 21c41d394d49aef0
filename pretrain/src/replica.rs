//! A run over several devices of one machine (`train.devices`): one thread per device, each
//! running the recipe as one replica ([`crate::run`]) on its shard of every batch, joined by
//! burn's collective operations (feature `collective`). Rank 0's state is every replica's start
//! (fresh, continued or resumed), so the replicas stay identical; rank 0 writes the run's files.

use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::backend::{AutodiffBackend, Backend};
use dinoadapt_core::checkpoint::HostTensor;
use dinoadapt_core::train::replicas::{broadcast_from_lead, Replicas};
use dinoadapt_core::train::Trainer;

use crate::run::RunError;

/// One replica of a data-parallel run, as its thread sees it.
pub struct Replica<B: Backend> {
    pub replicas: Arc<dyn Replicas<B>>,
}

impl<B: Backend> Replica<B> {
    pub fn rank(&self) -> usize {
        self.replicas.rank()
    }

    pub fn world(&self) -> usize {
        self.replicas.world()
    }

    /// Every replica takes rank 0's whole state (weights, moments, centres), through the
    /// collective: replicas on other devices or in other processes start identical.
    pub(crate) fn start_from_lead<A>(&self, trainer: &mut Trainer<A>) -> Result<(), RunError>
    where
        A: AutodiffBackend<InnerBackend = B>,
    {
        let (tensors, steps) = trainer.save_state();
        let mut state: HashMap<String, HostTensor> = tensors.into_iter().collect();
        let device = trainer.teacher.backbone.device();
        broadcast_from_lead(self.replicas.as_ref(), &mut state, &device);
        if self.rank() == 0 {
            return Ok(());
        }
        trainer
            .load_state(&state, &steps)
            .map_err(|e| RunError::Config(format!("replica {}: rank 0's state: {e}", self.rank())))
    }
}

/// Runs the recipe on `devices`, one replica per device on its own thread, and returns rank 0's
/// summary. The first replica to fail ends the run with its error (the others may be waiting
/// in a reduction: they are not joined).
#[cfg(feature = "collective")]
pub fn run_data_parallel<A>(
    recipe: &crate::Recipe,
    options: &crate::RunOptions,
    devices: Vec<A::Device>,
) -> Result<crate::RunSummary, RunError>
where
    A: AutodiffBackend,
{
    use dinoadapt_core::train::replicas::collective::CollectivePeer;

    let world = devices.len();
    if world < 2 {
        let device = devices
            .into_iter()
            .next()
            .ok_or_else(|| RunError::Config("train.devices names no device".into()))?;
        return crate::run::<A>(recipe, options, &device);
    }
    let (send, receive) = std::sync::mpsc::channel();
    for (rank, device) in devices.into_iter().enumerate() {
        let (recipe, options, send) = (recipe.clone(), options.clone(), send.clone());
        std::thread::Builder::new()
            .name(format!("replica-{rank}"))
            .spawn(move || {
                let body = || {
                    CollectivePeer::register::<A::InnerBackend>(rank, world, &device)
                        .map_err(RunError::Config)
                        .and_then(|peer| {
                            let replica = Replica {
                                replicas: Arc::new(peer),
                            };
                            let out = crate::run::run_replica::<A>(
                                &recipe,
                                &options,
                                &device,
                                Some(&replica),
                            );
                            if out.is_ok() {
                                peer.finish::<A::InnerBackend>().map_err(RunError::Config)?;
                            }
                            out
                        })
                };
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
                    .unwrap_or_else(|panic| {
                        let what = dinoadapt_core::error_text::panic_message(panic.as_ref());
                        Err(RunError::Config(format!("stopped: {what}")))
                    });
                let _ = send.send((rank, result));
            })
            .map_err(|e| RunError::Config(format!("cannot start replica {rank}: {e}")))?;
    }
    drop(send);
    let mut lead = None;
    for _ in 0..world {
        let (rank, result) = receive
            .recv()
            .map_err(|_| RunError::Config("a replica thread ended without a result".into()))?;
        let summary = result.map_err(|e| match e {
            RunError::Config(m) => RunError::Config(format!("replica {rank}: {m}")),
            other => other,
        })?;
        if rank == 0 {
            lead = Some(summary);
        }
    }
    Ok(lead.expect("rank 0 reported"))
}
