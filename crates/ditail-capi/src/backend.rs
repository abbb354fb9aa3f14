//! The backend and float type as C names them, resolved by the choice the `ditail` command
//! makes (`ditail_models::device`): among the backends compiled in (features `flex`, `wgpu`,
//! `cuda`).

use burn::prelude::Device;
use burn::tensor::FloatDType;
use ditail_models::device;

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
    /// The same, as the application layer takes it (`ditail_transfer_file`'s runner).
    pub selected: device::Compute,
}

impl Compute {
    /// Resolves a choice as [`device::Compute::select`] does: `Auto` picks as documented
    /// on [`Backend::Auto`]; an explicit GPU backend must answer.
    pub fn new(backend: Backend, dtype: Dtype) -> Result<Self> {
        let choice = match backend {
            Backend::Auto => None,
            Backend::Cpu => Some(device::Backend::Cpu),
            Backend::Wgpu => Some(device::Backend::Wgpu),
            Backend::Cuda => Some(device::Backend::Cuda),
        };
        let dtype = match dtype {
            Dtype::Auto => None,
            Dtype::F32 => Some(FloatDType::F32),
            Dtype::F16 => Some(FloatDType::F16),
        };
        let c = device::Compute::select(choice, dtype)
            .map_err(|e| Error::new(Status::Backend, e.to_string()))?;
        Ok(Self {
            backend: match c.backend {
                device::Backend::Cpu => Backend::Cpu,
                device::Backend::Wgpu => Backend::Wgpu,
                device::Backend::Cuda => Backend::Cuda,
            },
            dtype: c.dtype,
            device: c.device.clone(),
            selected: c,
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
