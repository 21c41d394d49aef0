//! The burn backends dinoadapt runs on, and the `--device` spelling that picks one at run time.

use std::fmt;
use std::str::FromStr;

/// The CPU backend: burn's `flex` (SIMD + gemm + rayon), the fastest CPU backend measured here.
pub type CpuBackend = burn::backend::Flex;

/// The CUDA backend (cargo feature `cuda`; loads libcuda/NVRTC at run time).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// A device named on the command line: `cpu` or `cuda:N` (`cuda` = `cuda:0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`: use `cpu` or `cuda:N`")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build can run on CUDA devices.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

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
}
