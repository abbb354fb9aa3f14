//! Where the networks run, chosen at run time among the backends compiled in (features
//! `flex` for the CPU, `wgpu` for Vulkan/Metal/DX12 GPUs, `cuda` for NVIDIA): the one choice
//! the `ditail` command, its web app and the C API make the same way.
//!
//! ```no_run
//! use ditail_models::device::{Backend, Compute};
//! // Auto: CUDA if a device answers, else a real wgpu GPU, else the CPU; f16 on GPUs.
//! let auto = Compute::select(None, None)?;
//! let cpu = Compute::select(Some(Backend::Cpu), None)?; // f32
//! # Ok::<(), ditail_models::ModelError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use burn::prelude::Device;
use burn::tensor::FloatDType;

use crate::error::{ModelError, Result};

/// A compute backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// burn-flex on the CPU (multi-threaded: `RAYON_NUM_THREADS` sets the threads).
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12; Mesa's lavapipe on CPU-only machines).
    Wgpu,
    /// burn-cuda (NVIDIA).
    Cuda,
}

impl Backend {
    /// The backends this build includes, best first.
    pub fn compiled() -> Vec<Backend> {
        [Backend::Cuda, Backend::Wgpu, Backend::Cpu]
            .into_iter()
            .filter(|b| b.is_compiled())
            .collect()
    }

    /// Whether this build includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Cpu => cfg!(feature = "flex"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backend's device (the default adapter for GPUs), without asking whether one
    /// answers (see [`Compute::select`] for that).
    pub fn device(self) -> Result<Device> {
        // Before any GPU device exists: cubecl reads its configuration once.
        crate::gpu::configure();
        match self {
            #[cfg(feature = "flex")]
            Backend::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(burn::tensor::DeviceIndex::Default)),
            #[allow(unreachable_patterns)]
            other => Err(ModelError::BackendNotCompiled {
                backend: other.name(),
            }),
        }
    }

    /// Device `index` of this backend (`None`: its default): the index-th adapter that
    /// `ditail devices` lists for wgpu, the index-th CUDA device (of those
    /// `CUDA_VISIBLE_DEVICES` leaves visible), the CPU only as 0.
    pub fn device_at(self, index: Option<usize>) -> Result<Device> {
        let Some(index) = index else {
            return self.device();
        };
        match self {
            Backend::Cpu if index == 0 => self.device(),
            Backend::Cpu => Err(ModelError::NoSuchDevice {
                backend: "cpu",
                index,
                found: "the CPU backend is one device, 0 (its threads: RAYON_NUM_THREADS)".into(),
            }),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => {
                use burn::tensor::DeviceKind;
                let adapters = wgpu_adapters();
                let Some(chosen) = adapters.get(index) else {
                    let listed: Vec<String> = adapters
                        .iter()
                        .enumerate()
                        .map(|(i, a)| format!("{i}: {}", a.name))
                        .collect();
                    return Err(ModelError::NoSuchDevice {
                        backend: "wgpu",
                        index,
                        found: format!("{} adapter(s) ({})", adapters.len(), listed.join(", ")),
                    });
                };
                // burn counts adapters per kind: the n-th of this adapter's kind.
                let nth = adapters[..index]
                    .iter()
                    .filter(|a| a.kind == chosen.kind)
                    .count();
                crate::gpu::configure();
                let kind = match chosen.kind.as_str() {
                    "DiscreteGpu" => DeviceKind::DiscreteGpu(nth),
                    "IntegratedGpu" => DeviceKind::IntegratedGpu(nth),
                    "VirtualGpu" => DeviceKind::VirtualGpu(nth),
                    "Cpu" => DeviceKind::Cpu,
                    _ => DeviceKind::DefaultDevice,
                };
                Ok(Device::wgpu(kind))
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda => {
                crate::gpu::configure();
                Ok(Device::cuda(burn::tensor::DeviceIndex::Specified(index)))
            }
            #[allow(unreachable_patterns)]
            other => other.device(),
        }
    }

    /// What automatic choice picks: CUDA if it is compiled in and a device answers, else a
    /// wgpu adapter that is a real GPU (software rasterisers are slower than the CPU
    /// backend) and takes this build's shaders ([`Adapter::takes_spirv`]), else the CPU.
    pub fn auto() -> Backend {
        if Backend::Cuda.is_compiled() && cuda_works() {
            Backend::Cuda
        } else if Backend::Wgpu.is_compiled()
            && wgpu_adapters().iter().any(|a| a.is_gpu && a.takes_spirv)
        {
            Backend::Wgpu
        } else {
            Backend::Cpu
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Backend::Cpu),
            "wgpu" | "vulkan" | "metal" | "dx12" => Ok(Backend::Wgpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(ModelError::UnknownBackend(s.to_string())),
        }
    }
}

/// A GPU adapter wgpu reports.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// Adapter name (e.g. "NVIDIA GeForce RTX 4090", "llvmpipe (LLVM 19.1.7, 256 bits)").
    pub name: String,
    /// Discrete, integrated, virtual, CPU (a software rasteriser) or other.
    pub kind: String,
    /// Graphics API (Vulkan, Metal, Dx12).
    pub api: String,
    /// Driver and its version.
    pub driver: String,
    /// Whether it is a real GPU (not a software rasteriser).
    pub is_gpu: bool,
    /// Whether this build's kernels compile right for it: false only in a SPIR-V build
    /// (`vulkan` feature) for a Vulkan adapter without `VK_KHR_workgroup_memory_explicit_layout`
    /// (Mesa's lavapipe, older or mobile drivers). cubecl-spirv 0.11.3 then declares each
    /// shared-memory array as a pointer to one (`lower_shared_implicit` in its
    /// `ops/memory.rs`), which the SPIR-V validator rejects ("OpInBoundsAccessChain reached
    /// non-composite type") and lavapipe's compiler crashed on; every matmul, reduction and
    /// attention kernel has shared memory. With the extension cubecl lays shared memory out
    /// explicitly, and its shaders validate.
    pub takes_spirv: bool,
}

/// The adapters wgpu finds (none when the wgpu backend is not compiled in); asked once per
/// process.
pub fn wgpu_adapters() -> &'static [Adapter] {
    static ADAPTERS: OnceLock<Vec<Adapter>> = OnceLock::new();
    ADAPTERS.get_or_init(probe_adapters)
}

fn probe_adapters() -> Vec<Adapter> {
    #[cfg(feature = "wgpu")]
    {
        // Vulkan, Metal and DX12 only: what burn's wgpu backend runs on (asking OpenGL/EGL
        // also prints display-server errors on headless machines).
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .iter()
            .map(|a| {
                let info = a.get_info();
                Adapter {
                    name: info.name.clone(),
                    kind: format!("{:?}", info.device_type),
                    api: format!("{:?}", info.backend),
                    driver: format!("{} {}", info.driver, info.driver_info)
                        .trim()
                        .to_string(),
                    is_gpu: !matches!(info.device_type, wgpu::DeviceType::Cpu),
                    takes_spirv: takes_spirv(a),
                }
            })
            .collect()
    }
    #[cfg(not(feature = "wgpu"))]
    Vec::new()
}

/// See [`Adapter::takes_spirv`]; adapters of other APIs get MSL or WGSL.
#[cfg(feature = "wgpu")]
#[allow(unsafe_code)]
fn takes_spirv(adapter: &wgpu::Adapter) -> bool {
    #[cfg(feature = "vulkan")]
    {
        // SAFETY: reads the extension list wgpu-hal keeps; nothing is created or changed.
        let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() };
        hal.is_none_or(|vk| {
            vk.physical_device_capabilities()
                .supports_extension(c"VK_KHR_workgroup_memory_explicit_layout")
        })
    }
    #[cfg(not(feature = "vulkan"))]
    {
        let _ = adapter;
        true
    }
}

/// Refuses `device` when cubecl compiles SPIR-V for it and its adapter does not take that
/// SPIR-V ([`Adapter::takes_spirv`]): a clear error before any kernel, not a driver crash.
/// Makes the device's client (no kernel), so only SPIR-V builds call it.
fn refuse_invalid_spirv(device: &Device) -> Result<()> {
    let Some(info) = crate::gpu::info(device) else {
        return Ok(());
    };
    let refused = info.compiler == crate::gpu::SPIRV_COMPILER
        && wgpu_adapters()
            .iter()
            .any(|a| a.name == info.adapter && !a.takes_spirv);
    match refused {
        true => Err(ModelError::SpirvUnsupported {
            adapter: info.adapter,
        }),
        false => Ok(()),
    }
}

/// Whether a CUDA device answers (a tiny tensor round trip); asked once per process.
/// burn-cuda panics when no driver or device is present, so the panic is caught and its
/// message silenced.
pub fn cuda_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(probe_cuda)
}

fn probe_cuda() -> bool {
    #[cfg(feature = "cuda")]
    {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok = std::panic::catch_unwind(|| {
            let device = Device::cuda(burn::tensor::DeviceIndex::Default);
            burn::prelude::Tensor::<1>::ones([1], &device).into_data();
        })
        .is_ok();
        std::panic::set_hook(hook);
        ok
    }
    #[cfg(not(feature = "cuda"))]
    false
}

/// A backend, its device and the float type of weights and activations, resolved.
#[derive(Clone, Debug)]
pub struct Compute {
    /// The backend chosen.
    pub backend: Backend,
    /// Its device.
    pub device: Device,
    /// The float type.
    pub dtype: FloatDType,
    /// Whether automatic choice found no GPU and fell back to the CPU (minutes per image:
    /// front ends say so).
    pub no_gpu: bool,
}

impl Compute {
    /// Resolves a choice. `backend` `None` picks automatically ([`Backend::auto`]); an
    /// explicit GPU backend must find a device. `dtype` `None`: f32 on the CPU, f16 on GPUs.
    pub fn select(backend: Option<Backend>, dtype: Option<FloatDType>) -> Result<Self> {
        Self::select_device(backend, dtype, None)
    }

    /// [`Compute::select`] on device `index` of the backend (see [`Backend::device_at`]).
    pub fn select_device(
        backend: Option<Backend>,
        dtype: Option<FloatDType>,
        index: Option<usize>,
    ) -> Result<Self> {
        crate::gpu::configure();
        let (backend, no_gpu) = match backend {
            None => {
                let auto = Backend::auto();
                (auto, auto == Backend::Cpu)
            }
            Some(Backend::Wgpu) if Backend::Wgpu.is_compiled() && wgpu_adapters().is_empty() => {
                return Err(ModelError::NoDevice {
                    backend: "wgpu",
                    hint: "no Vulkan, Metal or DX12 adapter found (on Linux install the GPU's \
                           Vulkan driver, or mesa-vulkan-drivers for a software one)",
                });
            }
            Some(Backend::Cuda) if Backend::Cuda.is_compiled() && !cuda_works() => {
                return Err(ModelError::NoDevice {
                    backend: "cuda",
                    hint: "no CUDA device answered (is the NVIDIA driver installed?)",
                });
            }
            Some(b) => (b, false),
        };
        let device = backend.device_at(index)?;
        if cfg!(feature = "vulkan") && backend == Backend::Wgpu {
            refuse_invalid_spirv(&device)?;
        }
        let dtype = dtype.unwrap_or(match backend {
            Backend::Cpu => FloatDType::F32,
            _ => FloatDType::F16,
        });
        Ok(Self {
            backend,
            device,
            dtype,
            no_gpu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for b in [Backend::Cpu, Backend::Wgpu, Backend::Cuda] {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        assert_eq!("Vulkan".parse::<Backend>().unwrap(), Backend::Wgpu);
        let err = "tpu".parse::<Backend>().unwrap_err().to_string();
        assert!(err.contains("`tpu`"), "{err}");
    }

    #[test]
    fn the_cpu_runs_f32_unless_told() {
        if !Backend::Cpu.is_compiled() {
            return;
        }
        let c = Compute::select(Some(Backend::Cpu), None).unwrap();
        assert_eq!(
            (c.backend, c.dtype, c.no_gpu),
            (Backend::Cpu, FloatDType::F32, false)
        );
        let c = Compute::select(Some(Backend::Cpu), Some(FloatDType::F16)).unwrap();
        assert_eq!(c.dtype, FloatDType::F16);
        assert!(Compute::select_device(Some(Backend::Cpu), None, Some(0)).is_ok());
        let err = Compute::select_device(Some(Backend::Cpu), None, Some(1)).unwrap_err();
        assert!(err.to_string().contains("cpu has no device 1"), "{err}");
    }
}
