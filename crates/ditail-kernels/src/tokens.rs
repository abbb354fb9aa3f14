//! Pointwise layers between a feature map and tokens: the transformers' `proj_in`, from the
//! map `[batch, channels, h, w]` into tokens `[batch, h * w, channels]`, and `proj_out`,
//! from the tokens back onto the map with the residual added (SD1.x's are 1x1
//! convolutions, SDXL's linear layers: diffusers' `Transformer2DModel`). On a GPU in half
//! precision each is one matrix product that reads the other layout as a transposed
//! operand, instead of a layout copy before or after it.
//!
//! Why (issue 26): the map seen as tokens is a transposed view, and the first consumer
//! that flattens it (a linear layer, the first residual's `linear_add`) copies it; the
//! tokens seen as a map are a transposed view too, and the reshape to `[b, c, h, w]`
//! copies them: two layout kernels per transformer (32 of the 38 copies in an SD1.5 U-Net
//! step), each a write and a read of a whole activation. burn's matrix product takes row-
//! and column-major operands alike, so the layout change can be the product's:
//! - tokens `[b, hw, out]` = map`[b, in, hw]`ᵀ · Wᵀ + bias;
//! - map `[b, out, hw]` = W · tokens`[b, hw, in]`ᵀ + bias + residual, the residual in the
//!   product's fused epilogue (as `conv::im2col`'s 1x1 layers have it).
//!
//! Each output is the same sum over the input channels as the layer's. Where the path
//! does not apply (the CPU, f32, a convolution other than 1x1, stride 1, unpadded) the
//! layer runs as before, with the layout change around it.

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::prelude::*;

use crate::conv::{conv2d, conv2d_add};
use crate::linear::linear;

/// A layer that maps each position's channels on its own: a 1x1 convolution or a linear
/// layer over the channels.
#[derive(Clone, Copy, Debug)]
pub enum Pointwise<'a> {
    /// A convolution; the product path takes it where it is 1x1, stride 1, unpadded, in
    /// one group.
    Conv(&'a Conv2d),
    /// A linear layer (burn's `[d_input, d_output]` weight).
    Linear(&'a Linear),
}

impl Pointwise<'_> {
    /// The layer as `[1, out, in]` and its bias as `[out]` (zeros without one), where the
    /// product path computes it for `x`.
    fn matrix<const D: usize>(self, x: &Tensor<D>) -> Option<(Tensor<3>, Tensor<1>)> {
        if !crate::conv::kernel_enabled() || !on_gpu_in_half(x) {
            return None;
        }
        let (weight, bias) = match self {
            Pointwise::Conv(conv) => {
                let [out, inputs, kh, kw] = conv.weight.dims();
                let unpadded = matches!(
                    conv.padding,
                    PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
                );
                let pointwise = (kh, kw) == (1, 1) && conv.stride == [1, 1] && conv.groups == 1;
                if !(pointwise && unpadded) {
                    return None;
                }
                let weight = conv.weight.val().reshape([1, out, inputs]);
                (weight, conv.bias.as_ref().map(|b| b.val()))
            }
            Pointwise::Linear(layer) => {
                let weight = layer.weight.val().transpose().unsqueeze_dim(0);
                (weight, layer.bias.as_ref().map(|b| b.val()))
            }
        };
        let [_, out, _] = weight.dims();
        let bias = bias
            .unwrap_or_else(|| Tensor::<1>::zeros([out], &weight.device()).cast(weight.dtype()));
        Some((weight, bias))
    }
}

/// Whether `x` is in half precision on a cubecl device: where `conv::im2col` runs.
fn on_gpu_in_half<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return crate::conv::im2col::applies(x);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = x;
        false
    }
}

/// `layer` over the map `x`, its output as tokens.
///
/// # Shapes
/// - `x`: `[batch, in, h, w]`; output: `[batch, h * w, out]`
pub fn to_tokens(layer: Pointwise, x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    let as_tokens = |y: Tensor<4>| {
        let [_, out, _, _] = y.dims();
        y.reshape([b, out, h * w]).swap_dims(1, 2)
    };
    let Some((weight, bias)) = layer.matrix(&x) else {
        return match layer {
            Pointwise::Conv(conv) => as_tokens(conv2d(conv, x)),
            Pointwise::Linear(layer) => linear(layer, as_tokens(x)),
        };
    };
    let [_, out, _] = weight.dims();
    // The bias shaped like the product's rows before the product, so that its add joins
    // the product's fused epilogue (a reshape between them would end it).
    let bias = bias.reshape([1, 1, out]);
    let map = x.reshape([b, c, h * w]).swap_dims(1, 2);
    map.matmul(weight.swap_dims(1, 2)) + bias
}

/// `addend + layer(tokens seen as an h x w map)`.
///
/// # Shapes
/// - `tokens`: `[batch, h * w, in]`; `[h, w]`: the map's size
/// - `addend` and output: `[batch, out, h, w]`
pub fn from_tokens_add(
    layer: Pointwise,
    tokens: Tensor<3>,
    [h, w]: [usize; 2],
    addend: Tensor<4>,
) -> Tensor<4> {
    let [b, hw, _] = tokens.dims();
    let Some((weight, bias)) = layer.matrix(&tokens) else {
        let as_map = |y: Tensor<3>| {
            let [_, _, out] = y.dims();
            y.swap_dims(1, 2).reshape([b, out, h, w])
        };
        return match layer {
            Pointwise::Conv(conv) => conv2d_add(conv, as_map(tokens), addend),
            Pointwise::Linear(layer) => addend + as_map(linear(layer, tokens)),
        };
    };
    let [_, out, _] = weight.dims();
    // Bias and addend flattened before the product, for its fused epilogue (as above).
    let bias = bias.reshape([1, out, 1]);
    let addend = addend.reshape([b, out, hw]);
    let y = weight.matmul(tokens.swap_dims(1, 2)) + bias;
    crate::plus(Some(addend), y).reshape([b, out, h, w])
}
