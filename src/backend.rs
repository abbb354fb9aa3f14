//! Choosing the compute backend at run time among those compiled in (cargo features
//! `flex` for the CPU, `wgpu` for Vulkan/Metal/DX12 GPUs, `cuda` for NVIDIA).

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;

/// A compute backend a user can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// burn-flex on the CPU.
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12; lavapipe on CPU-only machines).
    Wgpu,
    /// burn-cuda.
    Cuda,
}

impl Backend {
    /// The backends this build includes, best first.
    pub fn compiled() -> Vec<Backend> {
        let mut v = Vec::new();
        if cfg!(feature = "cuda") {
            v.push(Backend::Cuda);
        }
        if cfg!(feature = "wgpu") {
            v.push(Backend::Wgpu);
        }
        if cfg!(feature = "flex") {
            v.push(Backend::Cpu);
        }
        v
    }

    /// The device of this backend (the default adapter for GPUs).
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            #[cfg(feature = "flex")]
            Backend::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(burn::tensor::DeviceIndex::Default)),
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotCompiled(other)),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        })
    }
}

impl FromStr for Backend {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Backend::Cpu),
            "wgpu" | "vulkan" | "metal" | "dx12" => Ok(Backend::Wgpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(BackendError::Unknown(s.to_string())),
        }
    }
}

/// Why a backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The name is not a backend.
    #[error("unknown backend `{0}` (expected cpu, wgpu or cuda)")]
    Unknown(String),
    /// The backend exists but this build does not include it.
    #[error(
        "this build of ditail does not include the {0} backend (rebuild with `--features {0}`)"
    )]
    NotCompiled(Backend),
}
