//! Choosing the backend and float type at run time, as the `ditail` command does
//! (`--backend`, `--dtype`): among the backends compiled in (features `flex`, `wgpu`, `cuda`).

use burn::prelude::Device;
use burn::tensor::FloatDType;

use crate::error::{Error, Result, Status};

/// Where the networks run.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// CUDA if built in and a device answers, else a wgpu GPU adapter (not a software
    /// one), else the CPU.
    Auto = 0,
    /// The CPU (burn-flex, multi-threaded: `RAYON_NUM_THREADS` sets the threads).
    Cpu = 1,
    /// wgpu: Vulkan, Metal or DX12 (on Linux without a GPU, Mesa's lavapipe).
    Wgpu = 2,
    /// CUDA (NVIDIA; only in builds with the `cuda` feature).
    Cuda = 3,
}

impl Backend {
    /// The backend with this code, if there is one.
    pub fn from_code(code: i32) -> Option<Backend> {
        [Backend::Auto, Backend::Cpu, Backend::Wgpu, Backend::Cuda]
            .into_iter()
            .find(|b| *b as i32 == code)
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    fn compiled(self) -> bool {
        match self {
            Backend::Auto => true,
            Backend::Cpu => cfg!(feature = "flex"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }
}

/// The float type of the weights and activations.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// f32 on the CPU, f16 on GPUs.
    Auto = 0,
    /// 32-bit floats.
    F32 = 1,
    /// 16-bit floats (GPUs; slow on the CPU).
    F16 = 2,
}

impl Dtype {
    /// The dtype with this code, if there is one.
    pub fn from_code(code: i32) -> Option<Dtype> {
        [Dtype::Auto, Dtype::F32, Dtype::F16]
            .into_iter()
            .find(|d| *d as i32 == code)
    }
}

/// A backend and dtype, resolved (never `Auto`), with the device.
#[derive(Debug)]
pub(crate) struct Compute {
    pub backend: Backend,
    pub dtype: FloatDType,
    pub device: Device,
}

impl Compute {
    /// Resolves a choice: `Auto` picks as documented on [`Backend::Auto`]; an explicit GPU
    /// backend must answer.
    pub fn new(backend: Backend, dtype: Dtype) -> Result<Self> {
        if !backend.compiled() {
            return Err(Error::new(
                Status::Backend,
                format!(
                    "this build of ditail does not include the {0} backend (rebuild with the \
                     `{0}` feature)",
                    backend.name()
                ),
            ));
        }
        let backend = match backend {
            Backend::Auto => {
                if Backend::Cuda.compiled() && cuda_works() {
                    Backend::Cuda
                } else if Backend::Wgpu.compiled() && wgpu_gpu(false) {
                    Backend::Wgpu
                } else {
                    Backend::Cpu
                }
            }
            Backend::Wgpu if !wgpu_gpu(true) => {
                return Err(Error::new(
                    Status::Backend,
                    "wgpu: no Vulkan, Metal or DX12 adapter found (on Linux install the GPU's \
                     Vulkan driver, or mesa-vulkan-drivers for a software one)",
                ));
            }
            Backend::Cuda if !cuda_works() => {
                return Err(Error::new(
                    Status::Backend,
                    "cuda: no CUDA device answered (is the NVIDIA driver installed?)",
                ));
            }
            other => other,
        };
        let device = device(backend)?;
        let dtype = match (dtype, backend) {
            (Dtype::F16, _) => FloatDType::F16,
            (Dtype::F32, _) | (Dtype::Auto, Backend::Cpu) => FloatDType::F32,
            (Dtype::Auto, _) => FloatDType::F16,
        };
        Ok(Self {
            backend,
            dtype,
            device,
        })
    }

    /// The dtype as C names it.
    pub fn dtype_code(&self) -> Dtype {
        match self.dtype {
            FloatDType::F16 => Dtype::F16,
            _ => Dtype::F32,
        }
    }
}

fn device(backend: Backend) -> Result<Device> {
    match backend {
        #[cfg(feature = "flex")]
        Backend::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        Backend::Cuda => Ok(Device::cuda(burn::tensor::DeviceIndex::Default)),
        #[allow(unreachable_patterns)]
        other => Err(Error::new(
            Status::Backend,
            format!(
                "this build of ditail does not include the {} backend",
                other.name()
            ),
        )),
    }
}

/// Whether wgpu finds an adapter (`any`: of any kind; else a real GPU, not a software
/// rasteriser); asked once per process.
fn wgpu_gpu(any: bool) -> bool {
    #[cfg(feature = "wgpu")]
    {
        static ADAPTERS: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
        let adapters = ADAPTERS.get_or_init(|| {
            // Vulkan, Metal and DX12 only: what burn's wgpu backend runs on.
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: wgpu::Backends::PRIMARY,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
                .iter()
                .map(|a| !matches!(a.get_info().device_type, wgpu::DeviceType::Cpu))
                .collect()
        });
        adapters.iter().any(|&gpu| any || gpu)
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = any;
        false
    }
}

/// Whether a CUDA device answers (a tiny round trip; burn-cuda panics without a driver, and
/// the caller's guard keeps that panic quiet); asked once per process.
fn cuda_works() -> bool {
    #[cfg(feature = "cuda")]
    {
        static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *WORKS.get_or_init(|| {
            std::panic::catch_unwind(|| {
                let device = Device::cuda(burn::tensor::DeviceIndex::Default);
                burn::prelude::Tensor::<1>::ones([1], &device).into_data();
            })
            .is_ok()
        })
    }
    #[cfg(not(feature = "cuda"))]
    false
}
