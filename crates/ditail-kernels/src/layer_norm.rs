//! LayerNorm over the last dimension: on cubecl devices (GPUs) one kernel per norm
//! ([`crate::segment_norm`], each row a segment); elsewhere, in half precision, in steps
//! that burn's fusion would join; f32 elsewhere takes burn's own forward (the CPU path).
//!
//! burn's `LayerNorm::forward` widens an f16 input and its parameters to f32 on every call,
//! normalises, then narrows: the parameters' two casts are kernels of their own and the
//! narrowing a third (six dispatches a norm on a GPU; the U-Net's transformer blocks run 48
//! norms a step). The steps here take the statistics in f32 as burn takes them (a sum of
//! f16 squares overflows), narrow the normalised values, and run the affine in the
//! parameters' own type, as [`crate::group_norm`] does: three dispatches under fusion (the
//! GPU path before the kernel), the same values to f16's rounding.
//!
//! Pinned source: burn-nn 0.22.1 `modules/norm/layer.rs` (`accumulation_dtype`).

use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::DType;

use crate::segment_norm::{self, Segments};

/// `norm.forward(x)` with `epsilon` (the layer's: burn keeps it private): the kernel on a
/// GPU, half-precision inputs elsewhere in fusion-friendly steps.
///
/// # Shapes
/// - `x`: `[..., d_model]`; output: the same.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    let (gamma, beta) = (norm.gamma.val(), norm.beta.as_ref().map(|b| b.val()));
    if segment_norm::applies(&x, &gamma, beta.as_ref().unwrap_or(&gamma)) {
        // On a GPU one kernel (`segment_norm`): each row a segment, a parameter a value.
        let beta = beta.unwrap_or_else(|| gamma.zeros_like());
        let segments = Segments {
            len: x.dims()[D - 1],
            per_image: 1,
            per_param: 1,
        };
        return segment_norm::segment_norm(x, gamma, beta, segments, epsilon, false);
    }
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return norm.forward(x);
    }
    // The parameters' reshapes first: a reshape between the element-wise steps below
    // would end their fused kernel.
    let gamma = norm.gamma.val().cast(dtype);
    let [d_model] = gamma.dims();
    let mut dims = [1; D];
    dims[D - 1] = d_model;
    let gamma = gamma.reshape(dims);
    let beta = norm
        .beta
        .as_ref()
        .map(|b| b.val().cast(dtype).reshape(dims));
    let x = x.cast(DType::F32);
    let mean = x.clone().mean_dim(D - 1);
    let centered = x - mean;
    let var = (centered.clone() * centered.clone()).mean_dim(D - 1);
    let normed = (centered / (var + epsilon).sqrt()).cast(dtype) * gamma;
    match beta {
        Some(beta) => normed + beta,
        None => normed,
    }
}
