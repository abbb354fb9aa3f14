//! The im2col columns of a band of a convolution's output rows, in one kernel on cubecl
//! devices: each unit reads one input pixel's `kh * kw` window, with the zero padding as
//! bounds checks, and writes its column entries. The input may be enlarged by nearest
//! neighbour on the way (the upsamplers' `interpolate(scale_factor=2)` before their
//! convolution): the window reads the small map where the enlarged one would repeat it, so
//! the enlarged map is never made.
//!
//! In tensor ops the same columns took three kernels and a copy of the input: the padded
//! input (a fill, then a copy into its interior), then the windows (a strided view) copied
//! into the columns; under burn's fusion none of the three joins another. SD1.5's U-Net has
//! 52 padded convolutions a step and its VAE decoder 33.
//!
//! Pinned source for the launch conventions: burn-cubecl 0.22.1
//! `kernel/conv/deform_conv2d.rs` (its `deform_im2col`, which this follows without the
//! offsets and interpolation).

use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::ops::PadMode;

/// The columns of output rows `rows[0]..rows[0] + rows[1]` ([`ColumnsOps::ditail_columns`])
/// of `x` enlarged `upscale` times by nearest neighbour (1: as it is): the kernel on cubecl
/// devices, tensor ops elsewhere.
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]`; `padding`: `[top, bottom, left, right]`
/// - output: `[batch, channels * kh * kw, rows[1] * ow]`
pub fn columns(
    x: Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    rows: [usize; 2],
    upscale: usize,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as ColumnsOps>::ditail_columns(
        x.into_dispatch(),
        kernel,
        stride,
        padding,
        rows,
        upscale,
    ))
}

/// [`columns`] in tensor ops on any device (padding, a strided view, a copy), for tests.
///
/// # Shapes
/// As [`columns`].
pub fn columns_reference(
    x: Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    rows: [usize; 2],
    upscale: usize,
) -> Tensor<3> {
    Tensor::from_dispatch(reference::<Dispatch>(
        x.into_dispatch(),
        kernel,
        stride,
        padding,
        rows,
        upscale,
    ))
}

/// A band of im2col columns as a backend operation.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    NdArray: cfg(feature = "ndarray"),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
)]
pub trait ColumnsOps: Backend {
    /// The columns of output rows `rows[0]..rows[0] + rows[1]` of a convolution with a
    /// `kernel` window, `stride` and zero `padding` over `x` enlarged `upscale` times by
    /// nearest neighbour: entry `(b, (c * kh + i) * kw + j, r * ow + o)` is the padded,
    /// enlarged input at `(b, c, (rows[0] + r) * sy + i, o * sx + j)`, which is `x` at
    /// `(b, c, y / upscale, x / upscale)` for `(y, x)` inside the enlarged map.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, h, w]`; `padding`: `[top, bottom, left, right]`
    /// - output: `[batch, channels * kh * kw, rows[1] * ow]`, `ow = (w * upscale + left +
    ///   right - kw) / sx + 1`
    #[fusion(dtype = x, shape = columns_shape(x, kernel, stride, padding, rows, upscale))]
    fn ditail_columns(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 4],
        rows: [usize; 2],
        upscale: usize,
    ) -> FloatTensor<Self> {
        reference::<Self>(x, kernel, stride, padding, rows, upscale)
    }
}

/// The shape [`ColumnsOps::ditail_columns`] returns.
fn columns_shape(
    x: &Shape,
    [kh, kw]: &[usize; 2],
    [_, sx]: &[usize; 2],
    [_, _, left, right]: &[usize; 4],
    [_, n]: &[usize; 2],
    upscale: &usize,
) -> Shape {
    let ow = (x[3] * upscale + left + right - kw) / sx + 1;
    Shape::new([x[0], x[1] * kh * kw, n * ow])
}

/// The columns in tensor ops: enlarge (each value repeated `upscale` times along both
/// axes), pad, the band's input rows, their windows as a strided view, one copy.
fn reference<B: Backend>(
    x: FloatTensor<B>,
    [kh, kw]: [usize; 2],
    [sy, sx]: [usize; 2],
    [top, bottom, left, right]: [usize; 4],
    [r0, n]: [usize; 2],
    upscale: usize,
) -> FloatTensor<B> {
    let out = columns_shape(
        &x.shape(),
        &[kh, kw],
        &[sy, sx],
        &[top, bottom, left, right],
        &[r0, n],
        &upscale,
    );
    let x = match upscale {
        1 => x,
        u => {
            let [b, c, h, w] = x.shape().dims();
            let x = B::float_reshape(x, Shape::new([b, c, h, 1, w, 1]));
            let x = B::float_expand(x, Shape::new([b, c, h, u, w, u]));
            B::float_reshape(x, Shape::new([b, c, h * u, w * u]))
        }
    };
    let padded = B::float_pad(
        x,
        &[(0, 0), (0, 0), (top, bottom), (left, right)],
        PadMode::Constant(0.0),
    );
    let s = padded.shape();
    let y0 = r0 * sy;
    let band = B::float_slice(
        padded,
        &[
            (0..s[0]).into(),
            (0..s[1]).into(),
            (y0..y0 + (n - 1) * sy + kh).into(),
            (0..s[3]).into(),
        ],
    );
    // `[batch, c, n, ow, kh, kw]` -> `[batch, c, kh, kw, n, ow]`.
    let windows = B::float_unfold(B::float_unfold(band, 2, kh, sy), 3, kw, sx);
    let windows = B::float_permute(windows, &[0, 1, 4, 5, 2, 3]);
    B::float_reshape(windows, out)
}

#[cfg(feature = "flex")]
impl ColumnsOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl ColumnsOps for burn::backend::NdArray {}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn::backend::TensorMetadata;
    use burn_cubecl::CubeBackend;
    use burn_cubecl::ops::numeric::empty_device_dtype;
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::prelude::*;
    use cubecl::{calculate_cube_count_elemwise, ir::ElemType};

    use super::{ColumnsOps, columns_shape};

    /// One unit per input pixel of the band's windows `(b, c, r, o)`: its `kh * kw` column
    /// entries, zero where the window reaches into the padding.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    fn columns_kernel<F: Float>(
        input: &Tensor<F>,
        columns: &mut Tensor<F>,
        row0: usize,
        rows: usize,
        ow: usize,
        kh: usize,
        kw: usize,
        sy: usize,
        sx: usize,
        top: usize,
        left: usize,
        upscale: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let channels = input.shape(1);
        // The enlarged map's size.
        let (h, w) = (input.shape(2) * upscale, input.shape(3) * upscale);
        let units = input.shape(0) * channels * rows * ow;
        if ABSOLUTE_POS >= units {
            terminate!();
        }
        let o = ABSOLUTE_POS % ow;
        let rest = ABSOLUTE_POS / ow;
        let r = rest % rows;
        let rest = rest / rows;
        let c = rest % channels;
        let b = rest / channels;

        let in_base = b * input.stride(0) + c * input.stride(1);
        let mut at = b * columns.stride(0)
            + c * kh * kw * columns.stride(1)
            + (r * ow + o) * columns.stride(2);
        // The window's corner in padded coordinates.
        let y0 = (row0 + r) * sy;
        let x0 = o * sx;
        for i in 0..kh {
            for j in 0..kw {
                let (py, px) = (y0 + i, x0 + j);
                let mut value = F::new(0.0);
                if py >= top && px >= left {
                    let (y, x) = (py - top, px - left);
                    if y < h && x < w {
                        let (y, x) = (y / upscale, x / upscale);
                        value = input[in_base + y * input.stride(2) + x * input.stride(3)];
                    }
                }
                columns[at] = value;
                at += columns.stride(1);
            }
        }
    }

    impl ColumnsOps for CubeBackend {
        fn ditail_columns(
            x: CubeTensor,
            kernel: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 4],
            rows: [usize; 2],
            upscale: usize,
        ) -> CubeTensor {
            let shape = columns_shape(&x.shape(), &kernel, &stride, &padding, &rows, &upscale);
            let ow = shape[2] / rows[1];
            let output = empty_device_dtype(x.client.clone(), x.device.clone(), shape, x.dtype);
            let units = x.shape()[0] * x.shape()[1] * rows[1] * ow;
            let cube_dim = CubeDim::new(&x.client, units);
            let cube_count = calculate_cube_count_elemwise(&x.client, units, cube_dim);
            let dtype = x.dtype;
            columns_kernel::launch(
                &output.client,
                cube_count,
                cube_dim,
                x.into_tensor_arg(),
                output.clone().binding().into_tensor_arg(),
                rows[0],
                rows[1],
                ow,
                kernel[0],
                kernel[1],
                stride[0],
                stride[1],
                padding[0],
                padding[2],
                upscale,
                burn::backend::cubecl::dtype_to_storage_type(dtype),
            );
            output
        }
    }
}
