//! The single-threaded GEMM inside the CPU kernels' tasks (the convolutions' products of
//! weights and tiles, attention's `Q Kᵀ` and `P V`): on CPUs with AVX-512 (unless
//! `DITAIL_LINEAR=reference`) [`super::sgemm512::single`]'s 512-bit kernel; elsewhere the
//! `gemm` crate (256-bit on stable Rust).
//!
//! Measured on one core of a 2-core AVX-512 Xeon (FMA peak 188 GFLOP/s a core,
//! `examples/fma_peak.rs`), on the U-Net's and the VAE's shapes (`cargo run --release -p
//! ditail-kernels --features flex --example bench_gemm`): 128-161 GFLOP/s against the `gemm`
//! crate's 84-91 (112-131 in builds with debug assertions, whose pointer checks the
//! microkernel's loop pays).

/// Whether [`product`] runs the 512-bit kernel here.
pub fn wide() -> bool {
    cfg!(target_arch = "x86_64") && super::switches::wide_gemm_enabled()
}

/// `c = a b` (`c += a b` with `accumulate`): `a` `[m, k]` with rows of stride `lda`, `b`
/// `[k, n]` with value (`i`, `j`) at `b + i·rs + j·cs`, `c` `[m, n]` with rows of stride
/// `ldc`.
///
/// # Safety
/// `b` points at a readable `k x n` matrix with those strides, `c` at `m` rows of `n`
/// values that no other thread touches during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product(
    a: &[f32],
    lda: usize,
    [m, k, n]: [usize; 3],
    b: *const f32,
    [rs, cs]: [usize; 2],
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    assert!(m == 0 || a.len() >= (m - 1) * lda + k);
    #[cfg(target_arch = "x86_64")]
    if wide() {
        use super::sgemm512::single::{Right, Start};
        // SAFETY: the caller's promises; the kernel is enabled only with AVX-512.
        unsafe {
            super::sgemm512::single::gemm(
                a,
                lda,
                [m, k, n],
                Right::Strided(b, [rs, cs]),
                c,
                ldc,
                match accumulate {
                    true => Start::Accumulate,
                    false => Start::Bias(None),
                },
            )
        };
        return;
    }
    // SAFETY: the caller's promises; `a` holds m rows of k values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            1,
            lda as isize,
            b,
            cs as isize,
            rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
