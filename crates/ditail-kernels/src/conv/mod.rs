//! 2-D convolution for the networks (every `Conv2d` of the U-Net and the VAE goes through
//! [`conv2d`]). On the CPU (burn-flex, f32) a kernel of our own ([`flex`]): a direct
//! implicit GEMM on the NCHW layout, which reads the weights where they are and writes the
//! output in place, with the bias folded into the GEMM; its products ([`super::product`]) run in
//! 512-bit instructions on CPUs with AVX-512, where 1x1 convolutions take the kernel too
//! (each is then one product on the image's channels). Everywhere else (GPUs, f16, 1x1
//! convolutions on other CPUs, which burn-flex runs as one GEMM on NCHW with the same
//! 256-bit product) burn's own `conv2d`.
//!
//! Why (issue 14, measured with `perf` on the U-Net): burn-flex's general convolution
//! transposes the weights into a new buffer on every call (`[out, in, kh, kw]` to `[out,
//! kh, kw, in]`: 59 MB for one 1280-channel 3x3 layer), converts the input to NHWC,
//! builds per-tile im2col buffers and scatters the GEMM's result back to NCHW one value at
//! a time. The kernel here keeps the weights as the GEMM's left operand (`[out, in*kh*kw]`
//! is already row-major), builds only a tile of im2col rows (shifted copies of input rows),
//! and lets the GEMM write into the output's NCHW rows.
//!
//! 3x3 stride-1 convolutions with outputs of 16x16 and more (and 256 positions over the
//! batch) use Winograd ([`winograd`]): F(4x4, 3x3) (4x fewer multiplications) where the
//! batch makes at least 48 of its tiles, F(2x2, 3x3) (2.25x fewer) below (the rules and
//! their measurements: `flex.rs`, `WINOGRAD_MIN_POSITIONS`, `F4_MIN_TILES`).
//!
//! On a GPU, f16 layers run as im2col and one matrix product ([`im2col`]):
//! burn's direct convolution sums f16 products in f16.
//!
//! `DITAIL_CONV=reference` in the environment turns the kernels off, `DITAIL_CONV=direct`
//! Winograd only (for comparisons and as an escape hatch).

#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod columns;
#[cfg(feature = "flex")]
pub mod flex;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod im2col;
#[cfg(feature = "flex")]
pub mod winograd;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::ops::ModuleOps;
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

/// Convolution as a backend operation: burn's `conv2d` by default, a kernel where a backend
/// has one.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    NdArray: cfg(feature = "ndarray"),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
)]
pub trait ConvOps: Backend {
    /// A 2-D convolution with bias, groups 1 and dilation 1.
    ///
    /// # Shapes
    /// - `x`: `[batch, in, h, w]`; `weight`: `[out, in, kh, kw]`; `bias`: `[out]`
    /// - `padding`: `[top, bottom, left, right]`
    /// - output: `[batch, out, oh, ow]`, with `oh = (h + top + bottom - kh) / stride[0] + 1`
    ///   and `ow = (w + left + right - kw) / stride[1] + 1`
    #[fusion(default)]
    fn ditail_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Self> {
        reference::<Self>(x, weight, bias, stride, padding)
    }
}

/// burn's convolution with these arguments.
fn reference<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    stride: [usize; 2],
    [top, bottom, left, right]: [usize; 4],
) -> FloatTensor<B> {
    let options = ConvOptions::new_with_padding(stride, [(top, bottom), (left, right)], [1, 1], 1);
    <B as ModuleOps<B>>::conv2d(x, weight, Some(bias), options)
}

#[cfg(feature = "flex")]
impl ConvOps for burn::backend::Flex {
    fn ditail_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Self> {
        if kernel_enabled() && flex::supports(&x, &weight, &bias) {
            LAUNCHES.fetch_add(1, Ordering::Relaxed);
            return flex::conv2d(x, weight, bias, stride, padding);
        }
        reference::<Self>(x, weight, bias, stride, padding)
    }
}
#[cfg(feature = "ndarray")]
impl ConvOps for burn::backend::NdArray {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl ConvOps for burn_cubecl::CubeBackend {}

static LAUNCHES: AtomicUsize = AtomicUsize::new(0);
static WINOGRAD_LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// How many times this process has run the CPU kernels, and of those Winograd's (tests
/// use them to know which path answered).
pub fn kernel_launches() -> (usize, usize) {
    (
        LAUNCHES.load(Ordering::Relaxed),
        WINOGRAD_LAUNCHES.load(Ordering::Relaxed),
    )
}

/// Whether the kernel may be used: not when `DITAIL_CONV=reference`.
pub use crate::switches::cpu_kernels_enabled as kernel_enabled;

/// Whether 3x3 stride-1 convolutions may use Winograd: not when
/// `DITAIL_CONV=direct`. Measured on the development machine (2 AVX2 cores, SD1.5 weights,
/// BENCHMARKS.md): VAE decode to 256 px 5.1 s direct, 3.3 s Winograd; U-Net at 32x32
/// latents batch 3 5.6 s and 4.4 s; batch 1 2.3 s both (its layers at 16x16 have few
/// tiles); at 64x64 latents batch 1 within the runs' spread.
pub fn winograd_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| !crate::switches::env_is("DITAIL_CONV", "direct"))
}

/// `conv.forward(x)`, through the CPU kernel where it applies.
///
/// # Shapes
/// - `x`: `[batch, in, h, w]`; output as `Conv2d::forward`'s.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv2d_then(conv, x, None, 1)
}

/// `addend + conv.forward(x)`: on a GPU in half precision (the im2col path) the add is part
/// of the product's fused epilogue, with the bias, instead of a kernel of its own after it,
/// as the ResNets' time embedding and residuals and the transformers' residuals need; else
/// the plain add.
///
/// # Shapes
/// - `x`: `[batch, in, h, w]`; `addend`: broadcastable to the output (`[batch, out, oh,
///   ow]`, or `[batch, out, 1, 1]`); output as `Conv2d::forward`'s.
pub fn conv2d_add(conv: &Conv2d, x: Tensor<4>, addend: Tensor<4>) -> Tensor<4> {
    conv2d_then(conv, x, Some(addend), 1)
}

/// `conv.forward` over `x` enlarged `scale` times by nearest neighbour (PyTorch's
/// `interpolate(scale_factor=scale, mode="nearest")`, the upsamplers' resize): on a GPU in
/// half precision (the im2col path) the enlargement happens in the columns' gather and the
/// enlarged map is never made (for SD1.5's VAE decoder at 512 px, 128 MiB of f16 before its
/// last block); elsewhere the enlarged map, then the convolution.
///
/// # Shapes
/// - `x`: `[batch, in, h, w]`; output as `Conv2d::forward`'s over `[batch, in, h * scale,
///   w * scale]`.
pub fn conv2d_upscaled(conv: &Conv2d, x: Tensor<4>, scale: usize) -> Tensor<4> {
    conv2d_then(conv, x, None, scale)
}

/// The layer's bias; zeros for a layer without one (InceptionV3's, BatchNorm after): one
/// value per output channel, so that every convolution takes the same kernel.
fn bias_of(conv: &Conv2d) -> Tensor<1> {
    match &conv.bias {
        Some(bias) => bias.val(),
        None => {
            let weight = conv.weight.val();
            Tensor::<1>::zeros([weight.dims()[0]], &weight.device()).cast(weight.dtype())
        }
    }
}

/// `addend + conv.forward(x enlarged upscale times)`: the im2col path where it applies
/// (the enlargement in its gather), else the enlarged map through `ditail_conv2d`, or
/// through burn's forward for the layers that op does not take (groups, dilation, `Same`
/// padding).
fn conv2d_then(
    conv: &Conv2d,
    x: Tensor<4>,
    addend: Option<Tensor<4>>,
    upscale: usize,
) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, bottom, left, right]),
        PaddingConfig2d::Valid => Some([0; 4]),
        PaddingConfig2d::Same => None,
    };
    let plain = conv.groups == 1 && conv.dilation == [1, 1];
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(padding) = padding
        && plain
        && kernel_enabled()
        && im2col::applies(&x)
    {
        let (weight, bias) = (conv.weight.val(), bias_of(conv));
        return im2col::conv2d(x, weight, bias, conv.stride, padding, addend, upscale);
    }
    let x = enlarged(x, upscale);
    let (Some(padding), true) = (padding, plain) else {
        return crate::plus(addend, conv.forward(x));
    };
    let y = Tensor::from_dispatch(<Dispatch as ConvOps>::ditail_conv2d(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        bias_of(conv).into_dispatch(),
        conv.stride,
        padding,
    ));
    crate::plus(addend, y)
}

/// `x` enlarged `scale` times by nearest neighbour, each value repeated along both axes
/// (1: `x` as it is).
fn enlarged(x: Tensor<4>, scale: usize) -> Tensor<4> {
    if scale == 1 {
        return x;
    }
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, scale, w, scale])
        .reshape([b, c, h * scale, w * scale])
}

/// [`conv2d`] through burn's convolution, never the kernel (for tests and comparisons).
///
/// # Shapes
/// As [`conv2d`].
pub fn conv2d_reference(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv.forward(x)
}
