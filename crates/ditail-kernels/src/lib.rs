//! ditail's kernels: operations with a hand-written kernel on some backends and a reference in ordinary
//! tensor ops everywhere else, wired through burn's backend extensions: one trait per
//! operation, implemented for every backend dispatch can hold, so that `Tensor` code calls
//! it once and the backend of the tensors picks the implementation.
//!
//! - [`attention`]: multi-head attention with Ditail's q/k injection fused in; a
//!   flash-style WGSL kernel (`shaders/attention.wgsl`) on wgpu;
//! - [`conv`]: 2-D convolution; a direct implicit-GEMM kernel and Winograd on the CPU;
//! - [`linear`]: linear layers; a 512-bit GEMM on CPUs with AVX-512 ([`sgemm512`], whose
//!   single-threaded form also runs the convolutions' products);
//! - [`group_norm`]: GroupNorm, SiLU fused where it follows; two passes on the CPU;
//! - [`layer_norm`]: LayerNorm in half precision, in steps burn's fusion joins on a GPU;
//! - [`segment_norm`]: GroupNorm's groups and LayerNorm's rows normalised in one kernel
//!   per norm on a GPU;
//! - [`geglu`]: the transformers' feed-forward activation; one pass with a vectorised
//!   `erf` on the CPU;
//! - [`silu`]: the ResNets' activation; in place with a vectorised `exp` on the CPU;
//! - [`tokens`]: the transformers' pointwise layers between a feature map and tokens, the
//!   layout change in their products on a GPU;
//! - [`timing`]: each kind's share of a forward (`DITAIL_KERNEL_TIMES=1`);
//! - [`switches`]: which kernels may run (the environment's `DITAIL_*` switches).

//!
//! Every `unsafe` block of ditail's networks is here (pointer arithmetic of the CPU
//! kernels, SIMD intrinsics, launches), each with the reason it is sound; the networks'
//! crate (`ditail-models`) calls these as safe functions.
//!
//! The building blocks below the operations (`product`, `sgemm512`, `conv::winograd`,
//! the launch counters) are public for the kernel tests and benchmarks of the root package
//! and this crate's examples, not behind a `testing` feature: a feature that only tests
//! turn on would give this crate two feature sets, and `cargo build -p ditail-capi` (or
//! maturin's build of the Python package) after a test build would compile it and every
//! crate above it again.

pub mod attention;
pub mod conv;
#[cfg(feature = "flex")]
mod exp;
pub mod geglu;
pub mod group_norm;
pub mod layer_norm;
pub mod linear;
#[cfg(feature = "flex")]
mod out_ptr;
#[cfg(feature = "flex")]
pub mod product;
pub mod segment_norm;
#[cfg(all(feature = "flex", target_arch = "x86_64"))]
pub mod sgemm512;
pub mod silu;
pub mod switches;
pub mod timing;
pub mod tokens;

/// `addend + y`, or `y` without an addend: the residuals and time embedding the linear and
/// convolution layers add in their products' epilogues (`linear::linear_add`,
/// `conv::conv2d_add`). In that order because the callers added them so before; an add of
/// two values is commutative, so the same bits either way.
fn plus<const D: usize>(
    addend: Option<burn::prelude::Tensor<D>>,
    y: burn::prelude::Tensor<D>,
) -> burn::prelude::Tensor<D> {
    match addend {
        Some(a) => a + y,
        None => y,
    }
}

/// cubecl's runtime name for a wgpu device whose kernels it compiles to WGSL (the others:
/// `wgpu<spirv>`, `wgpu<msl>`, `cuda`, ...).
pub const WGSL_COMPILER: &str = "wgpu<wgsl>";

/// cubecl's runtime name for a wgpu device whose kernels it compiles to SPIR-V (Vulkan
/// adapters in a build with the `vulkan` feature).
pub const SPIRV_COMPILER: &str = "wgpu<spirv>";

/// Whether cubecl compiles `device`'s kernels to WGSL.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn compiles_wgsl(device: &burn_cubecl::CubeDevice) -> bool {
    device.client().name() == WGSL_COMPILER
}
