//! The kernels' switches, read once each from the environment: which kernels may run
//! (`DITAIL_CONV`, `DITAIL_LINEAR`, `DITAIL_NORM`; the attention's `DITAIL_ATTENTION` is
//! its own choice, see [`super::attention::choice`]), in one place that every kernel asks
//! and that asks none of them.

use std::sync::OnceLock;

/// Whether the environment variable `var` is set to `value` (in any case): the kernels'
/// switches (`DITAIL_ATTENTION`, `DITAIL_CONV`), each read once by its caller.
pub fn env_is(var: &str, value: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.eq_ignore_ascii_case(value))
}

/// Whether the CPU kernels may be used: not when `DITAIL_CONV=reference` (the switch of
/// the convolution, and of the element-wise kernels that came with it).
pub fn cpu_kernels_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| !env_is("DITAIL_CONV", "reference"))
}

/// Whether the 512-bit GEMM may be used: this CPU has AVX-512 and neither
/// `DITAIL_LINEAR=reference` nor `DITAIL_CONV=reference` is set.
pub fn wide_gemm_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        #[cfg(all(feature = "flex", target_arch = "x86_64"))]
        let cpu = super::sgemm512::available();
        #[cfg(not(all(feature = "flex", target_arch = "x86_64")))]
        let cpu = false;
        cpu && cpu_kernels_enabled() && !env_is("DITAIL_LINEAR", "reference")
    })
}

/// Whether the GPU's norms run as one kernel each (`segment_norm`): not when
/// `DITAIL_NORM=reference` nor `DITAIL_CONV=reference` is set (then burn's ops, which
/// fusion joins: the comparison `scripts/gpu_bench.sh` times on a GPU).
pub fn norm_kernel_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| cpu_kernels_enabled() && !env_is("DITAIL_NORM", "reference"))
}

/// Whether the GPU's norm kernel may split long segments into chunks over several cubes
/// (two kernels; see `segment_norm::chunks_per_segment`): not when `DITAIL_NORM=one` (one
/// cube a segment, one kernel: the other form `scripts/gpu_bench.sh` times).
pub fn norm_split_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| !env_is("DITAIL_NORM", "one"))
}
