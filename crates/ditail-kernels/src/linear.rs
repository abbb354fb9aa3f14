//! Linear layers (`x W + b` with burn's `[d_input, d_output]` weight): the U-Net's and the
//! text encoders' projections and feed-forwards go through [`linear`]. On the CPU
//! (burn-flex, f32) on a CPU with AVX-512, a GEMM of our own in 512-bit instructions
//! ([`super::sgemm512`]) with the bias folded in; everywhere else burn's matmul.
//!
//! Measured on a 2-core AVX-512 Xeon, one thread, the U-Net's shapes (`m x k x n` = tokens x
//! in x out): 89-113 GFLOP/s against the `gemm` crate's 53-84 (its 256-bit kernel, which
//! burn-flex's matmul runs on stable Rust); 2 threads 147-233. SDXL's U-Net is ~75% linear
//! layers.
//!
//! `DITAIL_LINEAR=reference` (or `DITAIL_CONV=reference`, every CPU kernel off) runs
//! burn's own.

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::nn::Linear;
use burn::prelude::*;

/// A linear layer as a backend operation: burn's matmul by default, a kernel where a
/// backend has one.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    NdArray: cfg(feature = "ndarray"),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
)]
pub trait LinearOps: Backend {
    /// `x W + bias` over the last dimension.
    ///
    /// # Shapes
    /// - `x`: `[rows, d_input]`; `weight`: `[d_input, d_output]`; `bias`: `[d_output]`
    /// - output: `[rows, d_output]`
    #[fusion(default)]
    fn ditail_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::<Self>(x, weight, Some(bias))
    }

    /// `x W` (a layer without bias, as the U-Net's q/k/v projections).
    ///
    /// # Shapes
    /// - `x`: `[rows, d_input]`; `weight`: `[d_input, d_output]`; output: `[rows, d_output]`
    #[fusion(default)]
    fn ditail_linear_nobias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::<Self>(x, weight, None)
    }
}

/// burn's product and bias add.
fn reference<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    use burn::backend::TensorMetadata;
    // The bias is reshaped before the product: under burn's fusion a reshape between the
    // product and the add ends the product's fused epilogue, and the add becomes a kernel
    // (one more dispatch, and the product's output written and read once more).
    let bias = bias.map(|b| {
        let n = b.shape().num_elements();
        B::float_reshape(b, [1, n].into())
    });
    let y = B::float_matmul(x, weight);
    match bias {
        Some(b) => B::float_add(y, b),
        None => y,
    }
}

#[cfg(feature = "flex")]
impl LinearOps for burn::backend::Flex {
    fn ditail_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[cfg(target_arch = "x86_64")]
        if kernel_enabled() && cpu::supports(&x, &weight, Some(&bias)) {
            return cpu::linear(x, weight, Some(bias));
        }
        reference::<Self>(x, weight, Some(bias))
    }

    fn ditail_linear_nobias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        #[cfg(target_arch = "x86_64")]
        if kernel_enabled() && cpu::supports(&x, &weight, None) {
            return cpu::linear(x, weight, None);
        }
        reference::<Self>(x, weight, None)
    }
}
#[cfg(feature = "ndarray")]
impl LinearOps for burn::backend::NdArray {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl LinearOps for burn_cubecl::CubeBackend {}

/// Whether the CPU kernel may be used: this CPU has AVX-512 and neither
/// `DITAIL_LINEAR=reference` nor `DITAIL_CONV=reference` is set.
pub use crate::switches::wide_gemm_enabled as kernel_enabled;

/// `layer.forward(x)`, through the CPU kernel where it applies.
///
/// # Shapes
/// - `x`: `[..., d_input]`; output: `[..., d_output]`
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    flat_then(layer, x, None)
}

/// `residual + layer.forward(x)`: on a GPU the add is part of the product's fused epilogue
/// (with the bias) instead of a kernel of its own after it, as the transformer blocks'
/// residuals need: the residual is flattened before the product, since a reshape between
/// the product and the add would end the epilogue, and so would the reshape of the
/// product's rows back to `D` dimensions before it. On the CPU it is the plain add.
///
/// # Shapes
/// - `x`: `[..., d_input]`; `residual` and output: `[..., d_output]`
pub fn linear_add<const D: usize>(layer: &Linear, x: Tensor<D>, residual: Tensor<D>) -> Tensor<D> {
    flat_then(layer, x, Some(residual))
}

/// The layer over `x`'s rows flattened, plus `residual` (flattened first), reshaped back.
fn flat_then<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    let weight = layer.weight.val();
    let [d_in, d_out] = weight.dims();
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let residual = residual.map(|r| r.reshape([rows, d_out]));
    let flat = x.reshape([rows, d_in]);
    let y = Tensor::<2>::from_dispatch(match &layer.bias {
        Some(b) => <Dispatch as LinearOps>::ditail_linear(
            flat.into_dispatch(),
            weight.into_dispatch(),
            b.val().into_dispatch(),
        ),
        None => <Dispatch as LinearOps>::ditail_linear_nobias(
            flat.into_dispatch(),
            weight.into_dispatch(),
        ),
    });
    dims[D - 1] = d_out;
    crate::plus(residual, y).reshape(dims)
}

#[cfg(all(feature = "flex", target_arch = "x86_64"))]
mod cpu {
    use burn::backend::Flex;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::{DType, TensorData};

    use crate::sgemm512::sgemm;
    use crate::timing::{Kind, timed};

    /// f32 2-D operands of matching widths.
    pub fn supports(
        x: &FloatTensor<Flex>,
        w: &FloatTensor<Flex>,
        bias: Option<&FloatTensor<Flex>>,
    ) -> bool {
        let (xs, ws) = (x.layout().shape(), w.layout().shape());
        x.dtype() == DType::F32
            && w.dtype() == DType::F32
            && bias.is_none_or(|b| {
                b.dtype() == DType::F32 && b.layout().shape().num_elements() == ws[1]
            })
            && xs.num_dims() == 2
            && ws.num_dims() == 2
            && xs[1] == ws[0]
    }

    pub fn linear(
        x: FloatTensor<Flex>,
        w: FloatTensor<Flex>,
        bias: Option<FloatTensor<Flex>>,
    ) -> FloatTensor<Flex> {
        let (x, w) = (x.to_contiguous(), w.to_contiguous());
        let bias = bias.map(|b| b.to_contiguous());
        let (m, k, n) = (
            x.layout().shape()[0],
            x.layout().shape()[1],
            w.layout().shape()[1],
        );
        let out = timed(Kind::Linear, m * k * n, || {
            sgemm(
                [m, k, n],
                x.as_slice().expect("contiguous"),
                w.as_slice().expect("contiguous"),
                bias.as_ref().map(|b| b.as_slice().expect("contiguous")),
            )
        });
        Flex::float_from_data(TensorData::new(out, [m, n]), &Default::default())
    }
}
