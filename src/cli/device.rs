//! Picking the backend and float type (`--backend`, `--dtype`), and `ditail devices`.

use anyhow::Result;
use burn::tensor::{DType, FloatDType};
pub use ditail::models::device::Compute;
use ditail::models::device::{Backend, cuda_works, wgpu_adapters};

use super::args::{BackendArg, DtypeArg};
use super::ui::Ui;

/// Resolves `--backend` and `--dtype` (see [`Compute::select`]), warning when automatic
/// choice falls back to the CPU.
pub fn select(backend: BackendArg, dtype: Option<DtypeArg>, ui: &Ui) -> Result<Compute> {
    let backend = match backend {
        BackendArg::Auto => None,
        BackendArg::Cpu => Some(Backend::Cpu),
        BackendArg::Wgpu => Some(Backend::Wgpu),
        BackendArg::Cuda => Some(Backend::Cuda),
    };
    let dtype = dtype.map(|d| match d {
        DtypeArg::F16 => FloatDType::F16,
        DtypeArg::F32 => FloatDType::F32,
    });
    let compute = Compute::select(backend, dtype)?;
    if compute.no_gpu {
        ui.warn(
            "no GPU found (see `ditail devices`); running on the CPU, which takes minutes per image",
        );
    }
    Ok(compute)
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
    let auto = match Backend::auto() {
        Backend::Cpu => {
            "cpu (no GPU adapter; software adapters are slower than the CPU backend)".into()
        }
        gpu => gpu.to_string(),
    };
    println!("--backend auto picks: {auto}");
    println!(
        "model families: Stable Diffusion 1.x (512 px), Stable Diffusion XL base (1024 px; its \
         VAE runs in f32 under --dtype f16 unless it is the fp16-fix); source and target of \
         one family"
    );
    Ok(())
}
