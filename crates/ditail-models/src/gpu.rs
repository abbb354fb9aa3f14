//! The GPU backends' run-time settings and what a GPU device offers: where cubecl keeps
//! its autotune results (so a user pays the tuning once per device and shape, not once per
//! run), which compiler serves a device (SPIR-V, MSL, WGSL, CUDA) and its hardware
//! features (f16, cooperative matrices, subgroups), and what some GPU work cost it
//! (`dispatches.rs`: kernels launched, pool memory, each kernel's device time).
//!
//! `DITAIL_FUSION=off` turns burn's operation fusion off (every operation its own kernel), to
//! compare or to step around a fusion fault.
//!
//! cubecl reads its configuration once, from `cubecl.toml` (or `burn.toml`'s `[cubecl]`)
//! in the working directory or a parent, then `CUBECL_*` variables. Its default cache is
//! the `target/` folder of the nearest Cargo project, which an installed `ditail` does not
//! have; [`configure`] keeps whatever a user configured and moves only that default to
//! ditail's cache folder. It must run before any GPU device is made, so [`crate::device`]
//! calls it first.
//!
//! Pinned sources: cubecl-runtime 0.11.3 `config/{base,environment}.rs`,
//! cubecl-environment 0.11.3 `persistence/root.rs`, cubecl-wgpu 0.11.3 `runtime.rs`
//! (`runtime_name`: `wgpu<spirv>`, `wgpu<msl>`, `wgpu<wgsl>`).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Where kernel tuning results are kept, and whether this process is the first to use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TuningCache {
    /// The folder (cubecl keeps one database per named environment inside).
    pub dir: PathBuf,
    /// Whether the folder was empty or missing when the process started: the first run on a
    /// device tunes each kernel shape it meets (seconds to a minute, once).
    pub fresh: bool,
}

/// ditail's cache folder for GPU kernels: `$DITAIL_GPU_CACHE`, else
/// `$XDG_CACHE_HOME/ditail/gpu`, else `~/.cache/ditail/gpu` (`%LOCALAPPDATA%\ditail\gpu` on
/// Windows).
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("DITAIL_GPU_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(ditail_cache_dir()?.join("gpu")),
    }
}

/// ditail's cache folder (file hashes, converted weights, kernel tunings):
/// `$XDG_CACHE_HOME/ditail`, else `~/.cache/ditail` (`%LOCALAPPDATA%\ditail` on Windows).
pub fn ditail_cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .or_else(|| var("LOCALAPPDATA").map(PathBuf::from))?;
    Some(base.join("ditail"))
}

fn is_empty_dir(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// Points cubecl's caches at ditail's folder unless the user configured a place, once per
/// process; the cache in use (`None` without a GPU backend in the build, or when the
/// configuration was already read, e.g. by a device made before this call).
pub fn configure() -> Option<&'static TuningCache> {
    static CACHE: OnceLock<Option<TuningCache>> = OnceLock::new();
    CACHE.get_or_init(configure_once).as_ref()
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn configure_once() -> Option<TuningCache> {
    use cubecl::config::cache::CacheConfig;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    // Only the default moves: a `cubecl.toml` naming `local`, `global` or a directory
    // is kept.
    if matches!(config.environment.path, CacheConfig::Target)
        && let Some(dir) = default_cache_dir()
    {
        config.environment.path = CacheConfig::Directory(dir);
    }
    let dir = config.environment.path.root();
    let fresh = is_empty_dir(&dir);
    if crate::kernels::switches::env_is("DITAIL_FUSION", "off") {
        // Before any device exists: each device takes its fusers from the registry.
        for name in burn_cubecl::fusion::BUILTIN_NAMES {
            let _ = burn_cubecl::fusion::remove(name);
        }
    }
    CubeClRuntimeConfig::try_set(config).then_some(TuningCache { dir, fresh })
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn configure_once() -> Option<TuningCache> {
    None
}

pub use crate::kernels::{SPIRV_COMPILER, WGSL_COMPILER};

mod dispatches;
pub use dispatches::{Dispatches, KernelTimes};
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use dispatches::{count_dispatches, profile_dispatches};

/// What a GPU device offers the kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    /// The device's name as its driver gives it (a wgpu adapter's name).
    pub adapter: String,
    /// cubecl's runtime name: `wgpu<spirv>`, `wgpu<msl>`, [`WGSL_COMPILER`], `cuda`, ...
    pub compiler: String,
    /// Whether kernels can compute in f16.
    pub f16: bool,
    /// Whether the device has f16 cooperative-matrix (tensor-core) instructions for matmul
    /// and the accelerated flash attention.
    pub cooperative_matrix: bool,
    /// Whether subgroup (plane) operations are available.
    pub subgroups: bool,
    /// Subgroup widths, smallest and largest.
    pub subgroup_size: (u32, u32),
}

/// `device`'s cubecl client, or `None` when it is not a cubecl GPU device.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn cube_client(device: &burn::prelude::Device) -> Option<cubecl::client::Client> {
    use burn::backend::DispatchDevice;

    // A build without a CPU backend has no other variant.
    #[allow(irrefutable_let_patterns)]
    let DispatchDevice::Cube(cube) = device.as_dispatch() else {
        return None;
    };
    Some(cube.client())
}

/// What `device` offers, or `None` when it is not a cubecl GPU device in this build.
pub fn info(device: &burn::prelude::Device) -> Option<GpuInfo> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        use cubecl::features::Plane;
        use cubecl::features::TypeUsage;
        use cubecl::ir::{ElemType, FloatKind};

        configure();
        let client = cube_client(device)?;
        let props = client.properties();
        let f16 = ElemType::Float(FloatKind::F16);
        let features = &props.features;
        Some(GpuInfo {
            adapter: props.identity.name.clone(),
            compiler: client.name().to_string(),
            f16: features
                .types
                .elem
                .get(&f16)
                .is_some_and(|usage| usage.contains(TypeUsage::Arithmetic)),
            cooperative_matrix: features
                .matmul
                .cmma
                .iter()
                .any(|c| c.a_type == f16 && c.b_type == f16),
            subgroups: features.plane.contains(Plane::Ops),
            subgroup_size: (props.hardware.plane_size_min, props.hardware.plane_size_max),
        })
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = device;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_under_ditails_folder() {
        // Read, not set: tests share the process environment.
        if std::env::var_os("DITAIL_GPU_CACHE").is_none()
            && let Some(dir) = default_cache_dir()
        {
            assert!(dir.ends_with("ditail/gpu"), "{}", dir.display());
        }
    }
}
