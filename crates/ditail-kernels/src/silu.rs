//! SiLU (`x·sigmoid(x)`), the activation after every GroupNorm of the U-Net's and the
//! VAE's ResNets. On the CPU (burn-flex, f32) a kernel of our own: in place when the
//! tensor is not shared, on the thread pool, with a vectorised `exp` (`kernels/exp.rs`).
//! burn-flex maps libm's `expf` over the values one call at a time: `perf` put its SiLU at
//! 16% of a VAE decode (`expf` 8%, the map 8%).
//!
//! `DITAIL_CONV=reference` (every CPU kernel off) runs burn's own.

use burn::backend::ops::ActivationOps;
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

/// SiLU as a backend operation: burn's `silu` by default, a kernel where a backend has one.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    NdArray: cfg(feature = "ndarray"),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
)]
pub trait SiluOps: Backend {
    /// `x·sigmoid(x)`, elementwise.
    ///
    /// # Shapes
    /// - `x`: any; output: the same.
    #[fusion(default)]
    fn ditail_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::<Self>(x)
    }
}

/// burn's `silu` (`x·sigmoid(x)`).
fn reference<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let sig = <B as ActivationOps<B>>::sigmoid(x.clone());
    B::float_mul(x, sig)
}

#[cfg(feature = "flex")]
impl SiluOps for burn::backend::Flex {
    fn ditail_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if super::switches::cpu_kernels_enabled() && x.dtype() == burn::tensor::DType::F32 {
            return super::timing::timed(super::timing::Kind::Silu, 0, || cpu::silu(x));
        }
        reference::<Self>(x)
    }
}
#[cfg(feature = "ndarray")]
impl SiluOps for burn::backend::NdArray {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl SiluOps for burn_cubecl::CubeBackend {}

/// `silu(x)`, through the CPU kernel where it applies.
///
/// # Shapes
/// - `x`: any; output: the same.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as SiluOps>::ditail_silu(x.into_dispatch()))
}

#[cfg(feature = "flex")]
pub(crate) mod cpu {
    use burn::backend::Flex;
    use burn::backend::tensor::FloatTensor;
    use rayon::prelude::*;

    use crate::exp::exp1;

    /// Values per task: a few pages, enough to amortise a rayon split.
    const CHUNK: usize = 1 << 14;

    pub fn silu(x: FloatTensor<Flex>) -> FloatTensor<Flex> {
        let mut x = if x.is_contiguous() {
            x
        } else {
            x.to_contiguous()
        };
        let (start, end) = x
            .layout()
            .contiguous_offsets()
            .expect("a contiguous tensor");
        // Copies first only if another tensor shares the buffer.
        let values: &mut [f32] = &mut x.storage_mut()[start..end];
        values.par_chunks_mut(CHUNK).for_each(silu_slice);
        x
    }

    fn silu_slice(values: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected.
            return unsafe { silu_slice_avx2(values) };
        }
        silu_slice_portable(values)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn silu_slice_avx2(values: &mut [f32]) {
        silu_slice_portable(values)
    }

    #[inline(always)]
    fn silu_slice_portable(values: &mut [f32]) {
        for x in values {
            *x = silu1(*x);
        }
    }

    /// `x·sigmoid(x)`, with `e^-|x|` so that the exponential never overflows.
    #[inline(always)]
    pub(crate) fn silu1(x: f32) -> f32 {
        let e = exp1(-x.abs());
        let r = 1.0 / (1.0 + e);
        x * if x >= 0.0 { r } else { e * r }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn silu_is_within_4_ulp_of_libms() {
            // Below -87.3 `exp1` returns ~1e-38 instead of 0 (so silu ~-1e-36, not -0).
            let mut x = -87.0f32;
            while x < 90.0 {
                let want = x / (1.0 + (-x).exp());
                let got = super::silu1(x);
                assert!(
                    (got - want).abs() <= 4.0 * f32::EPSILON * want.abs().max(f32::MIN_POSITIVE),
                    "silu({x}) = {got}, libm {want}"
                );
                x += 0.0137;
            }
            assert!(super::silu1(f32::NAN).is_nan());
            assert_eq!(super::silu1(f32::INFINITY), f32::INFINITY);
        }
    }
}
