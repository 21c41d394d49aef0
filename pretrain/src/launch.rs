//! How a `pretrain` command runs: on one device, on several devices of this machine (one replica
//! each, [`crate::replica`]), or as one process of a run over processes ([`crate::nodes`]); on
//! whichever backend the devices name.

use burn::tensor::backend::AutodiffBackend;
use dinoadapt_core::backend::{on_training_devices, DeviceSpec, TrainingJob};

use crate::nodes::NodeLaunch;
use crate::run::RunError;
use crate::{Recipe, RunOptions, RunSummary};

/// Runs `recipe` on `devices` (one or, for data parallelism, several of one kind), or, with
/// `launch`, as one process of a run over processes on the first of them.
pub fn pretrain_on(
    recipe: &Recipe,
    options: &RunOptions,
    devices: &[DeviceSpec],
    launch: Option<&NodeLaunch>,
) -> Result<RunSummary, RunError> {
    if launch.is_some() && devices.len() > 1 {
        return Err(RunError::Config(
            "a run over processes uses one device per process (`train.device`); launch one \
             process per GPU instead of naming several with train.devices"
                .into(),
        ));
    }
    let devices: Vec<DeviceSpec> = match (launch, devices) {
        // Under Slurm a CUDA run takes GPU SLURM_LOCALID, or the only one CUDA_VISIBLE_DEVICES
        // leaves it.
        (Some(l), [DeviceSpec::Cuda(_)]) if l.local_id.is_some() => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
            let only_one = !visible.is_empty() && !visible.contains(',');
            vec![DeviceSpec::Cuda(if only_one {
                0
            } else {
                l.local_id.unwrap_or(0)
            })]
        }
        _ => devices.to_vec(),
    };
    let job = Pretrain {
        recipe,
        options,
        launch,
    };
    on_training_devices(&devices, job).map_err(|e| RunError::Config(e.to_string()))?
}

struct Pretrain<'a> {
    recipe: &'a Recipe,
    options: &'a RunOptions,
    launch: Option<&'a NodeLaunch>,
}

impl TrainingJob for Pretrain<'_> {
    type Output = Result<RunSummary, RunError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let Pretrain {
            recipe,
            options,
            launch,
        } = self;
        #[cfg(feature = "collective")]
        {
            if let Some(launch) = launch {
                return crate::nodes::run_across_processes::<B>(
                    recipe,
                    options,
                    &devices[0],
                    launch,
                );
            }
            if devices.len() > 1 {
                // Replicas on the CPU share its cores: each runs its shard in one pass.
                let options = RunOptions {
                    batch_chunks: 1,
                    ..options.clone()
                };
                return crate::replica::run_data_parallel::<B>(recipe, &options, devices);
            }
        }
        #[cfg(not(feature = "collective"))]
        if launch.is_some() || devices.len() > 1 {
            return Err(RunError::Config(
                "this dinoadapt was built without data parallelism; rebuild with `cargo build \
                 --release --features collective`"
                    .into(),
            ));
        }
        crate::run::<B>(recipe, options, &devices[0])
    }
}
