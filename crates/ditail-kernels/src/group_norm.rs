//! GroupNorm, optionally followed by SiLU (every ResNet of the U-Net and the VAE: `norm1` →
//! SiLU → `conv1`). On the CPU (burn-flex, f32) a kernel of our own: per (image, group), the
//! mean and variance in f64 over the group's values (contiguous in NCHW), then one pass
//! writing `x·scale + shift` per channel, SiLU fused.
//!
//! burn's GroupNorm is seven tensor passes (mean, subtract, square, mean, divide, scale,
//! shift), each allocating, and SiLU one more: `DITAIL_KERNEL_TIMES=1` put burn's own ops at
//! a quarter of a 256 px VAE decode (128-channel 256x256 maps) and 0.26-0.63 s of a U-Net
//! forward at 64x64 latents.
//!
//! On cubecl devices (GPUs) one kernel per norm ([`crate::segment_norm`]: a group's channels
//! are contiguous, so each group is a segment), SiLU included.
//!
//! `DITAIL_CONV=reference` (every kernel off) runs burn's own.

use burn::backend::ops::ActivationOps;
use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, Shape};

use super::segment_norm::{self, Segments};
use super::silu::silu;

/// GroupNorm (+ SiLU) as a backend operation: burn's ops by default, a kernel where a
/// backend has one.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    NdArray: cfg(feature = "ndarray"),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
)]
pub trait GroupNormOps: Backend {
    /// `(x - mean) / sqrt(var + eps) · gamma + beta` over each image's `groups` groups of
    /// channels, then SiLU when `silu`.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, ..]`; `gamma`, `beta`: `[channels]`; output: like `x`.
    #[fusion(default)]
    fn ditail_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        reference::<Self>(x, gamma, beta, groups, eps, silu)
    }
}

/// burn's GroupNorm in backend ops (the steps of `burn::nn::GroupNorm::forward`: the
/// statistics of an f16 input in f32, then narrowed back before the affine), then SiLU.
fn reference<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> FloatTensor<B> {
    let shape = x.shape();
    let (n, c) = (shape[0], shape[1]);
    let per_channel: usize = (2..shape.num_dims()).map(|d| shape[d]).product();
    // The affine's reshapes come first: under burn's fusion a reshape of another tensor
    // between the element-wise steps below ends their fused kernel (measured: two more
    // dispatches per norm, each a read and write of the whole activation).
    let per = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([1, c, 1]));
    let (gamma, beta) = (per(gamma), per(beta));
    // `[n, groups, chunks, len / chunks]`: the statistics are means over the last two
    // dimensions ([`chunks_of`]), which broadcast back onto `xg` as they are.
    let len = c / groups * per_channel;
    let chunks = chunks_of(len);
    let xg = B::float_reshape(x, Shape::new([n, groups, chunks, len / chunks]));
    // As burn: a sum of f16 squares overflows, so f16 statistics are taken in f32.
    let widened = xg.dtype() == DType::F16;
    let xg = match widened {
        true => B::float_cast(xg, FloatDType::F32),
        false => xg,
    };
    let mean = group_mean::<B>(xg.clone());
    let centered = B::float_sub(xg, mean);
    let var = group_mean::<B>(B::float_mul(centered.clone(), centered.clone()));
    let std = B::float_sqrt(B::float_add_scalar(var, eps.into()));
    let normed = B::float_div(centered, std);
    let normed = match widened {
        true => B::float_cast(normed, FloatDType::F16),
        false => normed,
    };
    let normed = B::float_reshape(normed, Shape::new([n, c, per_channel]));
    let y = B::float_add(B::float_mul(normed, gamma), beta);
    let y = B::float_reshape(y, shape);
    match silu {
        true => B::float_mul(y.clone(), <B as ActivationOps<B>>::sigmoid(y)),
        false => y,
    }
}

/// Longest group [`group_mean`] reduces in one pass.
///
/// On wgpu through Mesa's lavapipe 22.3 (no subgroups) burn-cubecl's reduction of f32 rows
/// goes wrong near 2^16 values, fused or not: 96 rows of 61440 came out within 3e-6 of
/// the CPU's means, rows of 65520 drifted to 5e-4, and a quarter of the rows of 65536 (three
/// quarters of 163840, the VAE's 524288) were wrong (2026-12-07; Mesa 25 with subgroups
/// was right). SD1.5's U-Net at 512 px has groups of at most 40960 values (10 channels x
/// 64x64), which stay in one pass.
const SINGLE_PASS_MAX: usize = 48 << 10;

/// Values per chunk of a longer group.
const REDUCE_CHUNK: usize = 4096;

/// Into how many equal chunks a group of `len` values is cut: 1 up to
/// [`SINGLE_PASS_MAX`], else chunks of [`REDUCE_CHUNK`] (or the largest common divisor of
/// the two, from 256 up).
fn chunks_of(len: usize) -> usize {
    let chunk = gcd(len, REDUCE_CHUNK);
    match len <= SINGLE_PASS_MAX || chunk < 256 {
        true => 1,
        false => len / chunk,
    }
}

/// The mean of each group of `[n, g, chunks, chunk]`, `[n, g, 1, 1]`: the chunks' means,
/// then their mean (equal chunks, so the same mean). The shape keeps the chunks' dimension
/// so that the mean broadcasts onto the group without a reshape, which under burn's fusion
/// would end the fused kernel of the steps around it.
fn group_mean<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let chunks = x.shape()[2];
    let mean = B::float_mean_dim(x, 3);
    match chunks {
        1 => mean,
        _ => B::float_mean_dim(mean, 2),
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(feature = "flex")]
impl GroupNormOps for burn::backend::Flex {
    fn ditail_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        if super::switches::cpu_kernels_enabled()
            && [&x, &gamma, &beta].iter().all(|t| t.dtype() == DType::F32)
        {
            return super::timing::timed(super::timing::Kind::GroupNorm, 0, || {
                cpu::group_norm(x, gamma, beta, groups, eps, silu)
            });
        }
        reference::<Self>(x, gamma, beta, groups, eps, silu)
    }
}
#[cfg(feature = "ndarray")]
impl GroupNormOps for burn::backend::NdArray {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl GroupNormOps for burn_cubecl::CubeBackend {}

/// `norm.forward(x)`, then SiLU when `then_silu`, through the CPU kernel where it applies.
///
/// # Shapes
/// - `x`: `[batch, channels, ..]`; output: the same.
///
/// # Panics
/// As `GroupNorm::forward`: if `x`'s channels are not the layer's.
pub fn group_norm<const D: usize>(norm: &GroupNorm, x: Tensor<D>, then_silu: bool) -> Tensor<D> {
    burn::tensor::assert_shape!(x, [_, norm.num_channels, ..]);
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        let y = norm.forward(x);
        return if then_silu { silu(y) } else { y };
    };
    let (gamma, beta) = (gamma.val(), beta.val());
    if segment_norm::applies(&x, &gamma, &beta) {
        // On a GPU one kernel (`segment_norm`): a group's channels are contiguous.
        let channels = norm.num_channels;
        let per_channel = x.dims()[2..].iter().product::<usize>();
        let segments = Segments {
            len: channels / norm.num_groups * per_channel,
            per_image: norm.num_groups,
            per_param: per_channel,
        };
        return segment_norm::segment_norm(x, gamma, beta, segments, norm.epsilon, then_silu);
    }
    Tensor::from_dispatch(<Dispatch as GroupNormOps>::ditail_group_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        norm.num_groups,
        norm.epsilon,
        then_silu,
    ))
}

#[cfg(feature = "flex")]
mod cpu {
    use burn::backend::Flex;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::TensorData;
    use rayon::prelude::*;

    use crate::out_ptr::OutPtr;
    use crate::silu::cpu::silu1;

    pub fn group_norm(
        x: FloatTensor<Flex>,
        gamma: FloatTensor<Flex>,
        beta: FloatTensor<Flex>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Flex> {
        let (x, gamma, beta) = (
            x.to_contiguous(),
            gamma.to_contiguous(),
            beta.to_contiguous(),
        );
        let shape = x.layout().shape().clone();
        let (n, c) = (shape[0], shape[1]);
        let per_channel: usize = (2..shape.num_dims()).map(|d| shape[d]).product();
        let xv: &[f32] = x.as_slice().expect("contiguous");
        let (gv, bv): (&[f32], &[f32]) = (
            gamma.as_slice().expect("contiguous"),
            beta.as_slice().expect("contiguous"),
        );
        let cg = c / groups;
        let len = n * c * per_channel;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let dst = OutPtr::spare(&mut out);
        (0..n * groups).into_par_iter().for_each(|task| {
            let g = task % groups;
            let at = task * cg * per_channel;
            let values = &xv[at..][..cg * per_channel];
            // Two passes in f64 (the group stays in cache for the second and the write).
            let count = values.len() as f64;
            let mean = lane_sum(values, |v| v) / count;
            let var = lane_sum(values, |v| (v - mean) * (v - mean)) / count;
            let rstd = 1.0 / (var + eps).sqrt();
            for k in 0..cg {
                let ch = g * cg + k;
                let scale = (gv[ch] as f64 * rstd) as f32;
                let shift = (bv[ch] as f64 - mean * gv[ch] as f64 * rstd) as f32;
                let src = &values[k * per_channel..][..per_channel];
                // SAFETY: channel ch of this image: inside `out`'s capacity, written by
                // this task only (raw writes: the memory is not initialised yet).
                let row = unsafe {
                    std::slice::from_raw_parts_mut(dst.get().add(at + k * per_channel), per_channel)
                };
                affine_row(row, src, scale, shift, silu);
            }
        });
        // SAFETY: the tasks cover every (image, group), each group's channels whole.
        unsafe { out.set_len(len) };
        Flex::float_from_data(TensorData::new(out, shape), &Default::default())
    }

    /// `Σ f(v)` in f64 over eight interleaved partial sums (a single running sum is one
    /// dependent add per value; these vectorise).
    #[inline(always)]
    fn lane_sum(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
        let mut lanes = [0f64; 8];
        let mut chunks = values.chunks_exact(8);
        for chunk in &mut chunks {
            for (s, &v) in lanes.iter_mut().zip(chunk) {
                *s += f(v as f64);
            }
        }
        lanes.iter().sum::<f64>() + chunks.remainder().iter().map(|&v| f(v as f64)).sum::<f64>()
    }

    fn affine_row(out: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was detected.
                return unsafe { affine_row_avx512(out, src, scale, shift, silu) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the features were detected.
                return unsafe { affine_row_avx2(out, src, scale, shift, silu) };
            }
        }
        affine_row_portable(out, src, scale, shift, silu)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn affine_row_avx512(out: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) {
        affine_row_portable(out, src, scale, shift, silu)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn affine_row_avx2(out: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) {
        affine_row_portable(out, src, scale, shift, silu)
    }

    #[inline(always)]
    fn affine_row_portable(out: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) {
        if silu {
            for (o, &x) in out.iter_mut().zip(src) {
                *o = silu1(x * scale + shift);
            }
        } else {
            for (o, &x) in out.iter_mut().zip(src) {
                *o = x * scale + shift;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_groups_are_cut_into_equal_chunks() {
        // SD1.5's U-Net at 512 px (10 channels x 64x64), SDXL's at 1024 px (10 x 128x128),
        // the 512 px VAE's (8 x 256x256), a length with no usable common divisor.
        for (len, chunks) in [(40960, 1), (163840, 40), (524288, 128), (3 * 65537, 1)] {
            assert_eq!(chunks_of(len), chunks, "{len}");
            assert_eq!(len % chunks, 0);
        }
        assert_eq!(chunks_of(SINGLE_PASS_MAX), 1);
        assert!(chunks_of(SINGLE_PASS_MAX + 4096) > 1);
    }
}
