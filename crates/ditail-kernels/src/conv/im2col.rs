//! Half-precision convolutions on a GPU as one matrix product (im2col): the input's windows
//! gathered into `[batch, in * kh * kw, oh * ow]` columns by one kernel (`columns.rs`, the
//! padding as bounds checks), multiplied by the weights seen as `[out, in * kh * kw]`, in
//! bands of output rows that bound the columns' memory.
//!
//! Why (issue 26, `tests/gpu_f16.rs`): burn-cubecl's direct convolution sums its products
//! in the tensor's own type, and for a dense 3x3 layer it is the only candidate burn's
//! autotune has where the adapter has no cooperative matrices (every WGSL adapter: DX12,
//! browsers, lavapipe; Vulkan without SPIR-V). In f16, SD's 1280-channel 3x3 layer (11520
//! products a sum) came out with an RMS error of 1.5e-2 of its output, about 50 times the
//! output's own rounding, and the full-size U-Net 2.0e-2 off at its largest difference.
//! burn's matrix product accumulates in f32 (2.1e-4 at the same depth, the rounding of its
//! f16 result), so the layer through it is as exact as f16 storage allows. It also trades
//! the direct kernel, which reads each input `kh * kw` times through caches, for burn's
//! tiled, autotuned product: the trade ggml measured 14x faster for its own convolutions.
//!
//! 1x1 layers take the product directly (no columns): burn's autotune may pick the direct
//! kernel for them too, and a 2560-channel shortcut sums 2560 products. f32 stays on burn's
//! convolution (its direct kernel sums f32 in f32). `DITAIL_CONV=reference` turns this path
//! off.

use burn::backend::DispatchDevice;
use burn::prelude::*;
use burn::tensor::DType;

use super::columns::columns;

/// Most bytes the columns of one band may take: SD1.5's VAE decoder at 512 px would stack
/// 128 channels x 9 taps x 512 x 512 = 604 MB of f16 columns in one product.
const BAND_BYTES: usize = 128 << 20;

/// Whether [`conv2d`] computes this layer: a half-precision input on a cubecl device (wgpu,
/// CUDA).
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(x.dtype(), DType::F16 | DType::BF16)
        && matches!(x.device().as_dispatch(), DispatchDevice::Cube(_))
}

/// The convolution as im2col and one matrix product per band of output rows, plus `addend`
/// (in the product's fused epilogue where the output is one band), over `x` enlarged
/// `upscale` times by nearest neighbour (1: as it is) in the gather.
///
/// # Shapes
/// - `x`: `[batch, in, h, w]`; `weight`: `[out, in, kh, kw]`; `bias`: `[out]`
/// - `padding`: `[top, bottom, left, right]`
/// - `addend`: broadcastable to the output
/// - output: `[batch, out, oh, ow]`, as `super::ConvOps::ditail_conv2d`'s over the
///   enlarged `[batch, in, h * upscale, w * upscale]`
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    [sy, sx]: [usize; 2],
    [top, bottom, left, right]: [usize; 4],
    addend: Option<Tensor<4>>,
    upscale: usize,
) -> Tensor<4> {
    let [batch, channels, h, w] = x.dims();
    let (h, w) = (h * upscale, w * upscale);
    let [out, _, kh, kw] = weight.dims();
    let (ph, pw) = (h + top + bottom, w + left + right);
    let (oh, ow) = ((ph - kh) / sy + 1, (pw - kw) / sx + 1);
    // `[1, out, in * kh * kw]`: row-major `[out, in, kh, kw]` is already that matrix, its
    // columns ordered channel-major, then tap, as the windows below are.
    let weights = weight.reshape([1, out, channels * kh * kw]);
    let bias = bias.reshape([1, out, 1]);
    let row_bytes = batch * channels * kh * kw * ow * x.dtype().size();
    // A power of two: SD's maps are, so the bands come out equal and one product shape
    // serves them all (each new shape is tuned, and compiled, once per device).
    let fit = (BAND_BYTES / row_bytes.max(1)).max(1);
    let rows = (1usize << fit.ilog2()).min(oh);
    // The addend flattened like the product's output, before the product: a reshape
    // between the product and the add would end the fused epilogue. Several bands add it
    // after joining them.
    let (flat_addend, addend) = match addend {
        Some(a) if rows >= oh => {
            let [ab, ac, ah, aw] = a.dims();
            (Some(a.reshape([ab, ac, ah * aw])), None)
        }
        a => (None, a),
    };
    let product = |columns: Tensor<3>, n: usize| {
        let y = weights.clone().matmul(columns) + bias.clone();
        crate::plus(flat_addend.clone(), y).reshape([batch, out, n, ow])
    };
    let y = if (kh, kw, sy, sx, ph, pw, upscale) == (1, 1, 1, 1, h, w, 1) {
        // A 1x1 layer is a product on the channels as they are: no columns to build.
        product(x.reshape([batch, channels, h * w]), oh)
    } else {
        let bands: Vec<Tensor<4>> = (0..oh)
            .step_by(rows)
            .map(|r0| {
                let n = (r0 + rows).min(oh) - r0;
                let padding = [top, bottom, left, right];
                let window = columns(x.clone(), [kh, kw], [sy, sx], padding, [r0, n], upscale);
                product(window, n)
            })
            .collect();
        match bands.len() {
            1 => bands.into_iter().next().expect("one band"),
            _ => Tensor::cat(bands, 2),
        }
    };
    crate::plus(addend, y)
}
