//! Running a job on the backend that `--device` names.

use burn::tensor::backend::Backend;
use dinoadapt_core::backend::{CpuBackend, DeviceSpec};
use dinoadapt_core::vit::MatmulPrecision;

/// The matmul precision for a device: f32-accurate everywhere unless `tf32` allows CUDA's
/// tensor-core TF32 products (faster, ~1e-3 from PyTorch's f32).
pub fn matmul_precision(spec: DeviceSpec, tf32: bool) -> MatmulPrecision {
    match spec {
        DeviceSpec::Cuda(_) if !tf32 => MatmulPrecision::Split,
        _ => MatmulPrecision::Backend,
    }
}

/// A piece of work generic over the backend.
pub trait BackendJob {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

/// Run `job` on the device `spec` names.
pub fn on_device<J: BackendJob>(spec: DeviceSpec, job: J) -> anyhow::Result<J::Output> {
    match spec {
        DeviceSpec::Cpu => job.run::<CpuBackend>(Default::default()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => job.run::<dinoadapt_core::backend::CudaBackend>(
            burn::backend::cuda::CudaDevice::new(index),
        ),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => anyhow::bail!(
            "this dinoadapt was built without CUDA; rebuild with `cargo build --release \
             --features cuda` or use --device cpu"
        ),
    }
}

/// How many slices of a batch to run at once: one per CPU thread on the CPU (see
/// `VisionTransformer::forward_features_chunked`), the whole batch on a GPU.
pub fn batch_chunks(spec: DeviceSpec) -> usize {
    match spec {
        DeviceSpec::Cpu => rayon::current_num_threads(),
        DeviceSpec::Cuda(_) => 1,
    }
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
/// iterations ~25% faster, at the cost of holding the peak memory until the process ends.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any worker thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
