//! Picking the backend and float type (`--backend`, `--dtype`), and `ditail devices`.

use anyhow::Result;
use burn::tensor::{DType, FloatDType};
pub use ditail::models::device::Compute;
use ditail::models::device::{Backend, cuda_works, wgpu_adapters};
use ditail::models::gpu;

use super::args::{BackendArg, DtypeArg};
use super::out::outln;
use super::ui::Ui;

/// Resolves `--backend`, `--dtype` and `--device` (see [`Compute::select_device`]), warning when automatic
/// choice falls back to the CPU.
pub fn select(
    backend: BackendArg,
    dtype: Option<DtypeArg>,
    device: Option<usize>,
    ui: &Ui,
) -> Result<Compute> {
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
    let compute = Compute::select_device(backend, dtype, device)?;
    if compute.no_gpu {
        ui.warn(
            "no GPU found (see `ditail devices`); running on the CPU, which takes minutes per image",
        );
    }
    if compute.backend != Backend::Cpu
        && let Some(cache) = gpu::configure().filter(|c| c.fresh)
    {
        ui.info(format!(
            "first run with this kernel cache: the GPU kernels are tuned for each new shape \
             (a few seconds each, once); results are kept in {}",
            cache.dir.display()
        ));
    }
    Ok(compute)
}

/// What a GPU device offers and which attention the U-Net runs there: the compiler cubecl
/// uses (SPIR-V, MSL, WGSL, CUDA), its f16 / tensor-core / subgroup support; where WGSL is
/// compiled the fused WGSL kernel is run once per storage type to find out whether the
/// driver takes it (`ditail_models::kernels::attention`). A device that could not be made
/// reports why.
fn gpu_report(device: ditail::models::Result<burn::prelude::Device>) -> Vec<String> {
    use ditail::models::kernels::attention::{AttentionChoice, choice, kernel_enabled};
    let device = match device {
        Ok(device) => device,
        Err(e) => return vec![e.to_string()],
    };
    let info = gpu_info(&device);
    let Some(info) = info else {
        return vec!["the device did not answer".into()];
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut lines = vec![
        format!("compiler: {}", info.compiler),
        format!(
            "f16 arithmetic: {}; f16 tensor cores (cooperative matrix): {}; subgroups: {} \
             (width {}-{})",
            yes(info.f16),
            yes(info.cooperative_matrix),
            yes(info.subgroups),
            info.subgroup_size.0,
            info.subgroup_size.1
        ),
    ];
    let attention = if !kernel_enabled() {
        "reference (DITAIL_ATTENTION=reference)".to_string()
    } else if choice() == AttentionChoice::Flash {
        "burn-cubecl's autotuned flash attention, Ditail's q/k mix before it \
         (DITAIL_ATTENTION=flash)"
            .to_string()
    } else if info.compiler == gpu::WGSL_COMPILER {
        wgsl_attention(&device)
    } else {
        "burn-cubecl's autotuned flash attention, Ditail's q/k mix before it".to_string()
    };
    lines.push(format!("attention: {attention}"));
    lines
}

/// [`gpu::info`], `None` when the device does not answer (a driver that panics included).
fn gpu_info(device: &burn::prelude::Device) -> Option<gpu::GpuInfo> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gpu::info(device)))
        .ok()
        .flatten()
}

/// Whether the fused WGSL attention runs on `device`, per storage type.
fn wgsl_attention(device: &burn::prelude::Device) -> String {
    use ditail::models::kernels::attention::kernel_applies;
    let runs = |dtype| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kernel_applies(device, dtype, 40)
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
    outln!("backends in this build: {}", names.join(", "));
    if compiled.contains(&Backend::Wgpu) {
        let adapters = wgpu_adapters();
        outln!("wgpu adapters ({}):", adapters.len());
        if adapters.is_empty() {
            outln!("  none (no Vulkan, Metal or DX12 driver answered)");
        }
        // Each adapter's own device (`--device i`); burn's default device is one of them.
        let default = Backend::Wgpu
            .device()
            .ok()
            .and_then(|d| gpu_info(&d))
            .map(|info| info.adapter);
        for (i, a) in adapters.iter().enumerate() {
            let mark = match default.as_deref() == Some(a.name.as_str()) {
                true => " (the default: --backend wgpu without --device)",
                false => "",
            };
            outln!(
                "  {i}: {} [{}, {}] {}{mark}",
                a.name,
                a.kind,
                a.api,
                a.driver
            );
            if !a.takes_spirv {
                outln!(
                    "     not usable by this SPIR-V build: no VK_KHR_workgroup_memory_explicit_layout \
                     (a build without the `vulkan` feature runs it through WGSL)"
                );
                continue;
            }
            for line in gpu_report(Backend::Wgpu.device_at(Some(i))) {
                outln!("     {line}");
            }
        }
    } else {
        outln!("wgpu: not in this build (rebuild with `--features wgpu`)");
    }
    if compiled.contains(&Backend::Cuda) {
        let state = if cuda_works() {
            "a device answered"
        } else {
            "no device answered"
        };
        outln!("cuda: {state}");
        if cuda_works() {
            for line in gpu_report(Backend::Cuda.device()) {
                outln!("  {line}");
            }
        }
    } else {
        outln!("cuda: not in this build (rebuild with `--features cuda`)");
    }
    if compiled.iter().any(|b| *b != Backend::Cpu)
        && let Some(cache) = gpu::configure()
    {
        outln!("GPU kernel tuning cache: {}", cache.dir.display());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    outln!("cpu: burn-flex, {threads} threads");
    let auto = match Backend::auto() {
        Backend::Cpu => {
            "cpu (no GPU adapter; software adapters are slower than the CPU backend)".into()
        }
        gpu => gpu.to_string(),
    };
    outln!("--backend auto picks: {auto}");
    outln!(
        "model families: Stable Diffusion 1.x (512 px), Stable Diffusion XL base (1024 px; its \
         VAE runs in f32 under --dtype f16 unless it is the fp16-fix); source and target of \
         one family"
    );
    Ok(())
}
