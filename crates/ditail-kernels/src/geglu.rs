//! GEGLU (`hidden · gelu(gate)`, the two halves of the projection's last axis), the
//! activation of every transformer feed-forward in the U-Net. On the CPU (burn-flex, f32)
//! a kernel of our own: one pass over the projection's rows, GELU's `erf` vectorised.
//!
//! burn's way is three passes: `chunk` into two strided views, `gelu` mapping libm's `erff`
//! one value at a time over the gate (into a new tensor), then the product of a strided
//! view and that tensor; `perf` of a U-Net forward put `erff` and those maps at 3-4%.
//!
//! The CDF is Numerical Recipes' `erfcc` (Press et al., *Numerical Recipes in C*, 2nd ed.,
//! §6.2: a Chebyshev fit of `erfc(z)·e^{z²}` in `t = 1/(1 + z/2)`, fractional error below
//! 1.2e-7 for every `z >= 0`), so both tails keep their relative accuracy. GELU here is the
//! exact GELU (`x·Φ(x)`, PyTorch's `approximate="none"`), not the tanh form.
//!
//! `DITAIL_CONV=reference` (every CPU kernel off) runs burn's own.

use burn::backend::ops::ActivationOps;
use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::Slice;

/// GEGLU as a backend operation: burn's ops by default, a kernel where a backend has one.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    NdArray: cfg(feature = "ndarray"),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
)]
pub trait GegluOps: Backend {
    /// `x[.., :n] · gelu(x[.., n:])`, the last axis `2n` long.
    ///
    /// # Shapes
    /// - `x`: `[.., 2n]`; output: `[.., n]`.
    #[fusion(default)]
    fn ditail_geglu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::<Self>(x)
    }
}

/// burn's ops: the two halves sliced, `gelu` (erf) on the second, their product.
fn reference<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let shape = x.shape();
    let (rank, n) = (shape.num_dims(), shape[shape.num_dims() - 1] / 2);
    let half = |x: FloatTensor<B>, start: usize| {
        let slices: Vec<Slice> = (0..rank)
            .map(|d| match d == rank - 1 {
                true => Slice::new(start as isize, Some((start + n) as isize), 1),
                false => Slice::new(0, None, 1),
            })
            .collect();
        B::float_slice(x, &slices)
    };
    let (hidden, gate) = (half(x.clone(), 0), half(x, n));
    B::float_mul(hidden, <B as ActivationOps<B>>::gelu(gate))
}

#[cfg(feature = "flex")]
impl GegluOps for burn::backend::Flex {
    fn ditail_geglu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if super::switches::cpu_kernels_enabled() && x.dtype() == burn::tensor::DType::F32 {
            return super::timing::timed(super::timing::Kind::Geglu, 0, || cpu::geglu(x));
        }
        reference::<Self>(x)
    }
}
#[cfg(feature = "ndarray")]
impl GegluOps for burn::backend::NdArray {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl GegluOps for burn_cubecl::CubeBackend {}

/// `x[.., :n] · gelu(x[.., n:])`, through the CPU kernel where it applies.
///
/// # Shapes
/// - `x`: `[.., 2n]`; output: `[.., n]`.
///
/// # Panics
/// If the last axis is odd.
pub fn geglu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let last = x.dims()[D - 1];
    assert!(
        last.is_multiple_of(2),
        "GEGLU needs an even last axis, not {last}"
    );
    Tensor::from_dispatch(<Dispatch as GegluOps>::ditail_geglu(x.into_dispatch()))
}

#[cfg(feature = "flex")]
mod cpu {
    use burn::backend::Flex;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::TensorData;
    use rayon::prelude::*;

    use crate::exp::exp1;
    use crate::out_ptr::OutPtr;

    /// Output values per task: a few pages, enough to amortise a rayon split.
    const CHUNK: usize = 1 << 14;

    pub fn geglu(x: FloatTensor<Flex>) -> FloatTensor<Flex> {
        let x = x.to_contiguous();
        let mut shape = x.layout().shape().clone();
        let rank = shape.num_dims();
        let n = shape[rank - 1] / 2;
        shape[rank - 1] = n;
        let values: &[f32] = x.as_slice().expect("contiguous");
        let rows = if n == 0 { 0 } else { values.len() / (2 * n) };
        let mut out: Vec<f32> = Vec::with_capacity(rows * n);
        let dst = OutPtr::spare(&mut out);
        let rows_per = CHUNK.div_ceil(n.max(1)).max(1);
        (0..rows.div_ceil(rows_per))
            .into_par_iter()
            .for_each(|task| {
                let (r0, r1) = (task * rows_per, ((task + 1) * rows_per).min(rows));
                for r in r0..r1 {
                    let (hidden, gate) = values[r * 2 * n..][..2 * n].split_at(n);
                    // SAFETY: row r of the output (n values inside its capacity), written by
                    // this task only; the memory is not initialised yet, so it is only written.
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * n), n) };
                    geglu_row(row, hidden, gate);
                }
            });
        // SAFETY: the tasks wrote every row.
        unsafe { out.set_len(rows * n) };
        Flex::float_from_data(TensorData::new(out, shape), &Default::default())
    }

    fn geglu_row(out: &mut [f32], hidden: &[f32], gate: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was detected.
                return unsafe { geglu_row_avx512(out, hidden, gate) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the features were detected.
                return unsafe { geglu_row_avx2(out, hidden, gate) };
            }
        }
        geglu_row_portable(out, hidden, gate)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn geglu_row_avx512(out: &mut [f32], hidden: &[f32], gate: &[f32]) {
        geglu_row_portable(out, hidden, gate)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn geglu_row_avx2(out: &mut [f32], hidden: &[f32], gate: &[f32]) {
        geglu_row_portable(out, hidden, gate)
    }

    #[inline(always)]
    fn geglu_row_portable(out: &mut [f32], hidden: &[f32], gate: &[f32]) {
        for ((o, &h), &g) in out.iter_mut().zip(hidden).zip(gate) {
            *o = h * gelu1(g);
        }
    }

    /// `x·Φ(x)` (`Φ` the standard normal CDF, `0.5·erfc(-x/√2)`).
    // The coefficients as published (some have more digits than f32 keeps).
    #[allow(clippy::excessive_precision)]
    #[inline(always)]
    pub(super) fn gelu1(x: f32) -> f32 {
        let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let t = 1.0 / (1.0 + 0.5 * z);
        // erfc(z) = t·exp(-z² + P(t)) (Numerical Recipes' `erfcc`).
        let mut p = 0.170_872_77_f32;
        p = p * t - 0.822_152_23;
        p = p * t + 1.488_515_87;
        p = p * t - 1.135_203_98;
        p = p * t + 0.278_868_07;
        p = p * t - 0.186_288_06;
        p = p * t + 0.096_784_18;
        p = p * t + 0.374_091_96;
        p = p * t + 1.000_023_68;
        p = p * t - 1.265_512_23;
        // Past z = 9.3 erfc is below f32's normal range; the clamp keeps `exp1`'s argument
        // in its range (x·Φ(x) is then 0 or x to f32 precision).
        // The exponent p - z² as p - x²/2 in one fused multiply-add (`-x/2` is exact): a
        // rounded z² alone put ~1e-6 relative error into the tail (z² ~ 6 at x = -3.4).
        let half_erfc = 0.5 * t * exp1((-0.5 * x).mul_add(x, p).max(-87.0));
        x * if x >= 0.0 { 1.0 - half_erfc } else { half_erfc }
    }

    #[cfg(test)]
    mod tests {
        /// `x·Φ(x)` in f64 with libm's `erfc`.
        fn want(x: f32) -> f64 {
            let x = x as f64;
            x * 0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
        }

        #[test]
        fn gelu_is_exact_gelu_to_a_few_ulp() {
            // Where GELU is not vanishing: relative to the value (measured: 6.1 ulp at worst,
            // in the negative tail near x = -4; libm's `erff` through burn: ~1-2).
            let mut worst = 0f64;
            let mut x = -4.0f32;
            while x < 12.0 {
                let (got, want) = (super::gelu1(x) as f64, want(x));
                worst = worst.max((got - want).abs() / want.abs().max(f64::MIN_POSITIVE));
                x += 0.001_37;
            }
            assert!(
                worst < 8.0 * f32::EPSILON as f64,
                "relative error {worst:e}"
            );
            // The far negative tail (|x·Φ(x)| < 3e-4): within a few ulp of x.
            let mut x = -20.0f32;
            while x < -4.0 {
                let (got, want) = (super::gelu1(x) as f64, want(x));
                assert!(
                    (got - want).abs() < 2.0 * f32::EPSILON as f64 * (x.abs() as f64) * 1e-4,
                    "gelu({x}) = {got:e}, want {want:e}"
                );
                x += 0.0137;
            }
            assert!(super::gelu1(f32::NAN).is_nan());
            assert_eq!(super::gelu1(0.0), 0.0);
        }
    }
}
