//! Picking the backend and float type (`--backend`, `--dtype`), and `ditail devices`.

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use ditail::backend::Backend;

use super::args::{BackendArg, DtypeArg};
use super::ui::Ui;

/// Where and how the networks run.
#[derive(Clone, Debug)]
pub struct Compute {
    /// The backend chosen.
    pub backend: Backend,
    /// Its device.
    pub device: Device,
    /// The float type.
    pub dtype: FloatDType,
}

/// A GPU adapter wgpu reports.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// Adapter name (e.g. "NVIDIA GeForce RTX 4090", "llvmpipe (LLVM 19.1.7, 256 bits)").
    pub name: String,
    /// Discrete, integrated, virtual, CPU (a software rasteriser) or other.
    pub kind: String,
    /// Graphics API (Vulkan, Metal, Dx12, Gl).
    pub api: String,
    /// Driver and its version.
    pub driver: String,
    /// Whether it is a real GPU (not a software rasteriser).
    pub is_gpu: bool,
}

/// The adapters wgpu finds (empty when the wgpu backend is not compiled in); asked once.
pub fn wgpu_adapters() -> Vec<Adapter> {
    static ADAPTERS: std::sync::OnceLock<Vec<Adapter>> = std::sync::OnceLock::new();
    ADAPTERS.get_or_init(probe_adapters).clone()
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
                }
            })
            .collect()
    }
    #[cfg(not(feature = "wgpu"))]
    Vec::new()
}

/// Whether a CUDA device answers (a tiny tensor round trip; burn-cuda panics when no driver
/// or device is present, so the panic is caught and silenced); asked once.
pub fn cuda_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(probe_cuda)
}

fn probe_cuda() -> bool {
    #[cfg(feature = "cuda")]
    {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok = std::panic::catch_unwind(|| {
            let device = Device::cuda(burn::tensor::DeviceIndex::Default);
            Tensor::<1>::ones([1], &device).into_data();
        })
        .is_ok();
        std::panic::set_hook(hook);
        ok
    }
    #[cfg(not(feature = "cuda"))]
    false
}

/// Resolves `--backend` and `--dtype`.
pub fn select(backend: BackendArg, dtype: Option<DtypeArg>, ui: &Ui) -> Result<Compute> {
    let compiled = Backend::compiled();
    let backend = match backend {
        BackendArg::Auto => {
            if compiled.contains(&Backend::Cuda) && cuda_works() {
                Backend::Cuda
            } else if compiled.contains(&Backend::Wgpu) && wgpu_adapters().iter().any(|a| a.is_gpu)
            {
                Backend::Wgpu
            } else {
                ui.warn(
                    "no GPU found (see `ditail devices`); running on the CPU, which takes minutes per image",
                );
                Backend::Cpu
            }
        }
        BackendArg::Cpu => Backend::Cpu,
        BackendArg::Wgpu => {
            if compiled.contains(&Backend::Wgpu) && wgpu_adapters().is_empty() {
                bail!(
                    "--backend wgpu: no Vulkan, Metal or DX12 adapter found (on Linux install the GPU's \
                     Vulkan driver, or mesa-vulkan-drivers for a software one)"
                );
            }
            Backend::Wgpu
        }
        BackendArg::Cuda => {
            if compiled.contains(&Backend::Cuda) && !cuda_works() {
                bail!("--backend cuda: no CUDA device answered (is the NVIDIA driver installed?)");
            }
            Backend::Cuda
        }
    };
    let device = backend.device()?;
    let dtype = match (dtype, backend) {
        (Some(DtypeArg::F16), _) => FloatDType::F16,
        (Some(DtypeArg::F32), _) => FloatDType::F32,
        (None, Backend::Cpu) => FloatDType::F32,
        (None, _) => FloatDType::F16,
    };
    Ok(Compute {
        backend,
        device,
        dtype,
    })
}

/// Which attention the U-Net runs on the default wgpu adapter: the fused WGSL kernel is
/// run once per storage type to find out (`ditail_models::kernels::attention`).
fn wgpu_attention() -> String {
    use ditail::models::kernels::attention::{kernel_applies, kernel_enabled};
    if !kernel_enabled() {
        return "reference (DITAIL_ATTENTION=reference)".into();
    }
    let Ok(device) = Backend::Wgpu.device() else {
        return "reference".into();
    };
    let runs = |dtype| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kernel_applies(&device, dtype, 40)
        }))
        .unwrap_or(false)
    };
    let types: Vec<&str> = [(DType::F32, "f32"), (DType::F16, "f16")]
        .into_iter()
        .filter(|&(dtype, _)| runs(dtype))
        .map(|(_, name)| name)
        .collect();
    match types.is_empty() {
        true => "reference (the fused kernel does not run on this adapter)".into(),
        false => format!("fused WGSL kernel ({})", types.join(", ")),
    }
}

/// `ditail devices`.
pub fn list() -> Result<()> {
    let compiled = Backend::compiled();
    let names: Vec<String> = compiled.iter().map(|b| b.to_string()).collect();
    println!("backends in this build: {}", names.join(", "));
    if compiled.contains(&Backend::Wgpu) {
        let adapters = wgpu_adapters();
        println!("wgpu adapters ({}):", adapters.len());
        if adapters.is_empty() {
            println!("  none (no Vulkan, Metal or DX12 driver answered)");
        }
        for (i, a) in adapters.iter().enumerate() {
            println!("  {i}: {} [{}, {}] {}", a.name, a.kind, a.api, a.driver);
        }
        if !adapters.is_empty() {
            println!("attention on wgpu: {}", wgpu_attention());
        }
    } else {
        println!("wgpu: not in this build (rebuild with `--features wgpu`)");
    }
    if compiled.contains(&Backend::Cuda) {
        let state = if cuda_works() {
            "a device answered"
        } else {
            "no device answered"
        };
        println!("cuda: {state}");
    } else {
        println!("cuda: not in this build (rebuild with `--features cuda`)");
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cpu: burn-flex, {threads} threads");
    let auto = if compiled.contains(&Backend::Cuda) && cuda_works() {
        "cuda"
    } else if wgpu_adapters().iter().any(|a| a.is_gpu) {
        "wgpu"
    } else {
        "cpu (no GPU adapter; software adapters are slower than the CPU backend)"
    };
    println!("--backend auto picks: {auto}");
    Ok(())
}
