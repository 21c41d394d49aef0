//! The burn backends dinoadapt runs on, the `--device` spelling that picks one at run time, and
//! the dispatch that runs a backend-generic job on the device named.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;

use crate::vit::MatmulPrecision;

/// The CPU backend: burn's `flex` (SIMD + gemm + rayon), the fastest CPU backend measured here.
pub type CpuBackend = burn::backend::Flex;

/// The CUDA backend (cargo feature `cuda`; loads libcuda/NVRTC at run time).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// burn's wgpu backend (cargo feature `wgpu`): CubeCL kernels through Vulkan, Metal or DX12.
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Wgpu;

/// A device named on the command line: `cpu`, `cuda:N` (`cuda` = `cuda:0`) or `wgpu:N` (`wgpu` =
/// `wgpu:0`, the default adapter: a GPU, else a software Vulkan driver such as Mesa's lavapipe;
/// `wgpu:N` for N > 0: the N-th discrete GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Wgpu(usize),
}

/// The wgpu device of `wgpu:N`.
#[cfg(feature = "wgpu")]
pub fn wgpu_device(index: usize) -> burn::backend::wgpu::WgpuDevice {
    use burn::backend::wgpu::WgpuDevice;
    match index {
        0 => WgpuDevice::DefaultDevice,
        n => WgpuDevice::DiscreteGpu(n),
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu(0)),
            _ => {
                let index = |prefix: &str| s.strip_prefix(prefix).and_then(|n| n.parse().ok());
                index("cuda:")
                    .map(DeviceSpec::Cuda)
                    .or_else(|| index("wgpu:").map(DeviceSpec::Wgpu))
                    .ok_or_else(|| format!("unknown device `{s}`: use `cpu`, `cuda:N` or `wgpu:N`"))
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Wgpu(n) => write!(f, "wgpu:{n}"),
        }
    }
}

/// The devices of a data-parallel run from `--devices`: a comma-separated list (`cuda:0,cuda:1`,
/// `cpu,cpu`), a count (`4`: that many devices of the kind `single` names, CPU replicas sharing
/// the host's cores), or `all` (every CUDA device the driver lists). All of one kind.
pub fn device_list(spec: &str, single: DeviceSpec) -> Result<Vec<DeviceSpec>, String> {
    let spec = spec.trim();
    let devices: Vec<DeviceSpec> = if spec == "all" {
        match cuda_devices() {
            CudaDevices::Found(d) if !d.is_empty() => {
                d.iter().map(|d| DeviceSpec::Cuda(d.index)).collect()
            }
            CudaDevices::Found(_) => {
                return Err("--devices all: the driver lists no CUDA device".into())
            }
            CudaDevices::Unavailable(why) => return Err(format!("--devices all: {why}")),
            CudaDevices::NotBuilt => {
                return Err(
                    "--devices all counts CUDA devices, and this dinoadapt was built \
                            without CUDA (`--features cuda`); name the devices instead"
                        .into(),
                )
            }
        }
    } else if let Ok(n) = spec.parse::<usize>() {
        if n == 0 {
            return Err("--devices 0: name at least one device".into());
        }
        (0..n)
            .map(|i| match single {
                DeviceSpec::Cpu => DeviceSpec::Cpu,
                DeviceSpec::Cuda(_) => DeviceSpec::Cuda(i),
                DeviceSpec::Wgpu(_) => DeviceSpec::Wgpu(i),
            })
            .collect()
    } else {
        spec.split(',')
            .map(|d| d.trim().parse())
            .collect::<Result<_, _>>()?
    };
    let kind = |d: &DeviceSpec| std::mem::discriminant(d);
    if devices.iter().any(|d| kind(d) != kind(&devices[0])) {
        return Err(format!(
            "--devices {spec}: one run uses one kind of device (all `cpu`, all `cuda:N` or all \
             `wgpu:N`)"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &devices {
        if *d != DeviceSpec::Cpu && !seen.insert(*d) {
            return Err(format!("--devices {spec}: {d} is named twice"));
        }
    }
    Ok(devices)
}

/// Whether this build can run on CUDA devices.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// A piece of work generic over the backend, run by [`on_device`] on the backend a
/// [`DeviceSpec`] names. Its output carries its own errors (e.g. `Output = Result<T, E>`).
pub trait BackendJob {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// The device named cannot be used by this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceUnavailable {
    /// A CUDA device was named in a build without the `cuda` feature.
    #[error(
        "this dinoadapt was built without CUDA; rebuild with `cargo build --release \
         --features cuda` or use --device cpu"
    )]
    NoCuda,
    /// A wgpu device was named in a build without the `wgpu` feature.
    #[error(
        "this dinoadapt was built without the wgpu backend; rebuild with `cargo build \
         --release --features wgpu` or use --device cpu"
    )]
    NoWgpu,
    /// A run named devices of several kinds (or none).
    #[error("one run uses devices of one kind: all `cpu`, all `cuda:N` or all `wgpu:N`")]
    Mixed,
    /// Data parallelism over several wgpu devices.
    #[error(
        "training on several wgpu devices is not available: burn 0.21's wgpu runtime (CubeCL \
         0.10) cannot move tensors from one wgpu device to another, so its collective cannot \
         average gradients across them; train on one wgpu device, or on several cuda devices"
    )]
    WgpuReplicas,
}

/// A piece of training work generic over an autodiff backend, on one or more devices of it (one
/// per data-parallel replica).
pub trait TrainingJob {
    type Output;
    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Self::Output;
}

/// Run `job` with autodiff on the devices `specs` name, all of one kind.
pub fn on_training_devices<J: TrainingJob>(
    specs: &[DeviceSpec],
    job: J,
) -> Result<J::Output, DeviceUnavailable> {
    /// A training job as a job on the backend under autodiff (whose devices are the same).
    struct Training<J>(J);

    impl<J: TrainingJob> DevicesJob for Training<J> {
        type Output = J::Output;

        fn run<B: Backend>(self, devices: Vec<B::Device>) -> J::Output {
            self.0.run::<burn::backend::Autodiff<B>>(devices)
        }
    }

    if matches!(one_kind(specs)?, DeviceSpec::Wgpu(_)) && specs.len() > 1 {
        return Err(DeviceUnavailable::WgpuReplicas);
    }
    on_devices(specs, Training(job))
}

/// The first of `specs`, when there is one and all are of its kind.
fn one_kind(specs: &[DeviceSpec]) -> Result<DeviceSpec, DeviceUnavailable> {
    let first = *specs.first().ok_or(DeviceUnavailable::Mixed)?;
    let kind = std::mem::discriminant(&first);
    if specs.iter().any(|s| std::mem::discriminant(s) != kind) {
        return Err(DeviceUnavailable::Mixed);
    }
    Ok(first)
}

/// The `N` of `cuda:N` / `wgpu:N`.
#[allow(dead_code)] // without the cuda and wgpu features
fn index(spec: &DeviceSpec) -> usize {
    match spec {
        DeviceSpec::Cuda(i) | DeviceSpec::Wgpu(i) => *i,
        DeviceSpec::Cpu => 0,
    }
}

/// A piece of work generic over the backend on one or more devices of it at once (inference
/// shared among devices, one model per device), run by [`on_devices`].
pub trait DevicesJob {
    type Output;
    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Run `job` on the devices `specs` name, all of one kind. Unlike training, several wgpu
/// devices are fine: each runs its own model and nothing moves between them.
pub fn on_devices<J: DevicesJob>(
    specs: &[DeviceSpec],
    job: J,
) -> Result<J::Output, DeviceUnavailable> {
    match one_kind(specs)? {
        DeviceSpec::Cpu => Ok(job.run::<CpuBackend>(vec![Default::default(); specs.len()])),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => Ok(job.run::<CudaBackend>(
            specs
                .iter()
                .map(|s| burn::backend::cuda::CudaDevice::new(index(s)))
                .collect(),
        )),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(DeviceUnavailable::NoCuda),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(_) => {
            Ok(job.run::<WgpuBackend>(specs.iter().map(|s| wgpu_device(index(s))).collect()))
        }
        #[cfg(not(feature = "wgpu"))]
        DeviceSpec::Wgpu(_) => Err(DeviceUnavailable::NoWgpu),
    }
}

/// Run `job` on the device `spec` names.
pub fn on_device<J: BackendJob>(spec: DeviceSpec, job: J) -> Result<J::Output, DeviceUnavailable> {
    /// A one-device job as a job on a list of one device.
    struct One<J>(J);

    impl<J: BackendJob> DevicesJob for One<J> {
        type Output = J::Output;

        fn run<B: Backend>(self, devices: Vec<B::Device>) -> J::Output {
            let device = devices.into_iter().next().expect("one device");
            self.0.run::<B>(device)
        }
    }

    on_devices(&[spec], One(job))
}

/// The matmul precision for a device: f32-accurate everywhere unless `tf32` allows CUDA's
/// tensor-core TF32 products (faster, ~1e-3 from PyTorch's f32).
pub fn matmul_precision(spec: DeviceSpec, tf32: bool) -> MatmulPrecision {
    match spec {
        DeviceSpec::Cuda(_) if !tf32 => MatmulPrecision::Split,
        _ => MatmulPrecision::Backend,
    }
}

/// How many chunks of a batch to run at once: one per CPU thread on the CPU (see
/// `VisionTransformer::forward_features_chunked`), the whole batch on a GPU.
pub fn batch_chunks(spec: DeviceSpec) -> usize {
    match spec {
        DeviceSpec::Cpu => rayon::current_num_threads(),
        DeviceSpec::Cuda(_) | DeviceSpec::Wgpu(_) => 1,
    }
}

/// A CUDA device the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// The `N` of `--device cuda:N`.
    pub index: usize,
    pub name: String,
    /// Total device memory in bytes.
    pub total_memory: u64,
}

/// What this build can see of CUDA (`dinoadapt doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaDevices {
    /// Built without the `cuda` feature.
    NotBuilt,
    /// Built with CUDA, but the driver could not be loaded or queried: why.
    Unavailable(String),
    /// The devices the driver lists (possibly none).
    Found(Vec<CudaDeviceInfo>),
}

/// The CUDA devices of this machine, asked of the driver without creating a context; never
/// panics (a driver library that cannot be loaded is `Unavailable`).
pub fn cuda_devices() -> CudaDevices {
    #[cfg(feature = "cuda")]
    {
        // cudarc panics when it cannot load libcuda: keep that message off stderr.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let probed = std::panic::catch_unwind(probe_cuda);
        std::panic::set_hook(hook);
        match probed {
            Ok(Ok(devices)) => CudaDevices::Found(devices),
            Ok(Err(e)) => CudaDevices::Unavailable(e),
            Err(_) => CudaDevices::Unavailable(
                "the CUDA driver library (libcuda) could not be loaded".into(),
            ),
        }
    }
    #[cfg(not(feature = "cuda"))]
    CudaDevices::NotBuilt
}

#[cfg(feature = "cuda")]
fn probe_cuda() -> Result<Vec<CudaDeviceInfo>, String> {
    use cudarc::driver::result::{self, device};
    let driver = |what: &str, e: cudarc::driver::DriverError| format!("{what}: {e}");
    result::init().map_err(|e| driver("cuInit", e))?;
    let count = device::get_count().map_err(|e| driver("counting devices", e))?;
    (0..count)
        .map(|i| {
            let dev = device::get(i).map_err(|e| driver("cuDeviceGet", e))?;
            let name = device::get_name(dev).map_err(|e| driver("cuDeviceGetName", e))?;
            // SAFETY: `dev` was returned by `device::get`.
            let total =
                unsafe { device::total_mem(dev) }.map_err(|e| driver("cuDeviceTotalMem", e))?;
            Ok(CudaDeviceInfo {
                index: i as usize,
                name,
                total_memory: total as u64,
            })
        })
        .collect()
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Keep freed memory in the process during training and curation. Both allocate and free
/// tensors of tens to hundreds of MB every iteration or block (prototype logits, activations,
/// score blocks); glibc serves those with mmap/munmap, so the kernel zeroes fresh pages each time
/// (20% of a ViT-S/14 CPU iteration). Serving them from the heap and never trimming it makes
/// iterations ~25% faster, at the cost of holding the peak memory until the process ends. Not
/// for embedding: its 256 MiB top pad makes the heap outgrow a 512 MiB address-space limit
/// (`ulimit -v`, tests/bad_input_corpus.rs), although it made a ViT-S/14 forward ~13% faster.
/// A process-wide allocator setting: a program calls it once, before any worker thread starts.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any worker thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
    }

    #[test]
    fn device_lists_by_name_or_count() {
        use DeviceSpec::{Cpu, Cuda};
        assert_eq!(
            device_list("cuda:0, cuda:2", Cpu),
            Ok(vec![Cuda(0), Cuda(2)])
        );
        assert_eq!(device_list("2", Cpu), Ok(vec![Cpu, Cpu]));
        assert_eq!(
            device_list("3", Cuda(5)),
            Ok(vec![Cuda(0), Cuda(1), Cuda(2)])
        );
        assert!(device_list("cpu,cuda:0", Cpu)
            .unwrap_err()
            .contains("one kind"));
        assert!(device_list("cuda:1,cuda:1", Cpu)
            .unwrap_err()
            .contains("twice"));
        assert!(device_list("0", Cpu).is_err());
        if !CUDA_BUILT {
            assert!(device_list("all", Cpu)
                .unwrap_err()
                .contains("without CUDA"));
        }
    }

    struct Which;

    impl BackendJob for Which {
        type Output = String;

        fn run<B: Backend>(self, _device: B::Device) -> String {
            std::any::type_name::<B>().to_string()
        }
    }

    #[test]
    fn backend_jobs_run_on_the_device_named() {
        let cpu = on_device(DeviceSpec::Cpu, Which).unwrap();
        assert_eq!(cpu, std::any::type_name::<CpuBackend>());
        if !CUDA_BUILT {
            let err = on_device(DeviceSpec::Cuda(0), Which).unwrap_err();
            assert_eq!(err, DeviceUnavailable::NoCuda);
            assert_eq!(
                err.to_string(),
                "this dinoadapt was built without CUDA; rebuild with `cargo build --release \
                 --features cuda` or use --device cpu"
            );
        }
        assert_eq!(
            matmul_precision(DeviceSpec::Cuda(0), false),
            MatmulPrecision::Split
        );
        assert_eq!(
            matmul_precision(DeviceSpec::Cuda(0), true),
            MatmulPrecision::Backend
        );
        assert_eq!(
            matmul_precision(DeviceSpec::Cpu, false),
            MatmulPrecision::Backend
        );
        assert_eq!(batch_chunks(DeviceSpec::Cuda(1)), 1);
        assert_eq!(batch_chunks(DeviceSpec::Cpu), rayon::current_num_threads());
    }

    struct Replicas;

    impl TrainingJob for Replicas {
        type Output = usize;

        fn run<B: burn::tensor::backend::AutodiffBackend>(self, devices: Vec<B::Device>) -> usize {
            devices.len()
        }
    }

    #[test]
    fn training_jobs_get_one_device_per_replica_and_several_wgpu_devices_are_refused() {
        use DeviceSpec::{Cpu, Wgpu};
        assert_eq!(on_training_devices(&[Cpu, Cpu], Replicas), Ok(2));
        assert_eq!(
            on_training_devices(&[Cpu, Wgpu(0)], Replicas),
            Err(DeviceUnavailable::Mixed)
        );
        let err = on_training_devices(&[Wgpu(0), Wgpu(1)], Replicas).unwrap_err();
        assert_eq!(err, DeviceUnavailable::WgpuReplicas);
        assert!(err.to_string().contains("cannot move tensors"), "{err}");
    }

    #[test]
    fn doctor_lists_no_cuda_devices_in_a_cpu_build() {
        if !CUDA_BUILT {
            assert_eq!(cuda_devices(), CudaDevices::NotBuilt);
        } else {
            // Any machine: devices or a reason, never a panic.
            let _ = cuda_devices();
        }
    }
}
