//! LayerNorm over the last dimension in half precision, in steps that burn's fusion joins
//! into three kernels on a GPU (two fused reductions and one fused element-wise pass).
//!
//! burn's `LayerNorm::forward` widens an f16 input and its parameters to f32 on every call,
//! normalises, then narrows: the parameters' two casts are kernels of their own and the
//! narrowing a third (six dispatches a norm; the U-Net's transformer blocks run 48 norms a
//! step). Here the statistics are taken in f32 as burn takes them (a sum of f16 squares
//! overflows), the normalised values are narrowed, and the affine runs in the parameters'
//! own type, as [`crate::group_norm`] does: three dispatches, the same values to f16's
//! rounding. f32 inputs take burn's own forward (the CPU path, no casts there).
//!
//! Pinned source: burn-nn 0.22.1 `modules/norm/layer.rs` (`accumulation_dtype`).

use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::DType;

/// `norm.forward(x)` with `epsilon` (the layer's: burn keeps it private), half-precision
/// inputs in fusion-friendly steps.
///
/// # Shapes
/// - `x`: `[..., d_model]`; output: the same.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
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
