//! Running a job on the backend that `--device` names: the library's dispatch
//! (`dinoadapt_core::backend`) with jobs that return `anyhow` errors.

use burn::tensor::backend::Backend;
use dinoadapt_core::backend::{self, DeviceSpec};

pub use dinoadapt_core::backend::{batch_chunks, keep_freed_memory, matmul_precision};

/// A piece of work generic over the backend.
pub trait BackendJob {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

/// A program job as a library job: its `anyhow` result is the library job's output.
struct Adapter<J>(J);

impl<J: BackendJob> backend::BackendJob for Adapter<J> {
    type Output = anyhow::Result<J::Output>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        self.0.run::<B>(device)
    }
}

/// Run `job` on the device `spec` names.
pub fn on_device<J: BackendJob>(spec: DeviceSpec, job: J) -> anyhow::Result<J::Output> {
    backend::on_device(spec, Adapter(job))?
}

/// A piece of work generic over the backend, on one or more devices of it at once.
pub trait DevicesJob {
    type Output;
    fn run<B: Backend>(self, devices: Vec<B::Device>) -> anyhow::Result<Self::Output>;
}

impl<J: DevicesJob> backend::DevicesJob for Adapter<J> {
    type Output = anyhow::Result<J::Output>;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Self::Output {
        self.0.run::<B>(devices)
    }
}

/// Run `job` on the devices `specs` name (all of one kind).
pub fn on_devices<J: DevicesJob>(specs: &[DeviceSpec], job: J) -> anyhow::Result<J::Output> {
    backend::on_devices(specs, Adapter(job))?
}
