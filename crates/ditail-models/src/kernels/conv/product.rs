//! The GEMM under both CPU convolutions: `C (+)= W B` with `W` a convolution's (or
//! Winograd's transformed) row-major weights `[out, k]` and `B` a tile's right operand. On
//! CPUs with AVX-512 (unless `DITAIL_LINEAR=reference`) [`super::super::sgemm512::single`]'s
//! 512-bit kernel; elsewhere the `gemm` crate (256-bit on stable Rust).
//!
//! Measured on one core of a 2-core AVX-512 Xeon (FMA peak 188 GFLOP/s a core,
//! `examples/fma_peak.rs`), on the U-Net's and the VAE's shapes (`cargo run --release -p
//! ditail-models --features flex --example bench_gemm`): 128-161 GFLOP/s against the `gemm`
//! crate's 84-91 (112-131 in builds with debug assertions, whose pointer checks the
//! microkernel's loop pays).

/// Whether [`product`] runs the 512-bit kernel here.
pub fn wide() -> bool {
    cfg!(target_arch = "x86_64") && super::super::linear::kernel_enabled()
}

/// `c = w[rows] b` (`c += ...` with `accumulate`): `w` row-major `[m, k]` (its first row
/// the first of the product), `b` `[k, n]` with rows of stride `ldb`, `c` `[m, n]` with
/// rows of stride `ldc`.
///
/// # Safety
/// `b` points at `k` rows of `n` readable values, `c` at `m` rows of `n` values that no
/// other thread touches during the call.
pub unsafe fn product(
    w: &[f32],
    [m, k]: [usize; 2],
    b: *const f32,
    [ldb, n]: [usize; 2],
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    assert!(w.len() >= m * k);
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: the caller's promises; the kernel is enabled only with AVX-512.
        unsafe {
            super::super::sgemm512::single::gemm(w, k, [m, k, n], b, ldb, c, ldc, accumulate)
        };
        return;
    }
    // SAFETY: the caller's promises; `w` holds m rows of k values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            w.as_ptr(),
            1,
            k as isize,
            b,
            1,
            ldb as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
