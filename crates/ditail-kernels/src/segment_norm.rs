//! Normalisation over contiguous segments of a tensor in one kernel on cubecl devices (two
//! where the segments are long and too few to fill the device):
//! GroupNorm's groups (a group's channels are contiguous in NCHW) and LayerNorm's rows,
//! each with its affine and, for the ResNets' `norm → SiLU`, the SiLU.
//!
//! Why (issue 26): in burn's ops, which fusion joins, a norm took three to five kernels on
//! a GPU: the mean, a reduction; the variance of the centred values, a second reduction
//! fused with the centring or after it, as autotune picks; the element-wise normalisation,
//! affine and SiLU. Each read the whole activation, and the statistics went through memory
//! between them. SD1.5's U-Net runs 60 GroupNorms and 48 LayerNorms a step. Here one cube
//! per segment does all of it: one dispatch per norm. Where that is too few cubes (long
//! segments, few of them: SD's VAE decoding one image), each segment is cut into chunks
//! over more cubes, in two dispatches: each chunk's moments, then each chunk normalised
//! with its segment's, merged from the chunks' (`chunks_per_segment`).
//!
//! The statistics are taken in f32 whatever the input's type (a sum of f16 squares
//! overflows, `tests/gpu_f16.rs`) and as burn takes them: the mean, then the mean of the
//! squared deviations from it (not `E[x²] - E[x]²`, which cancels when the mean is large
//! against the spread). Each unit sums a strided share of the segment, read in vectors of
//! the widest size the device reads best (so that a unit has several values in flight per
//! load: a cube per segment or chunk is still few cubes for a GPU), the cube adds the
//! units' sums in shared memory (a tree); a segment or chunk is read three times by one
//! cube, the second and third reads from cache where it fits. The normalised value is
//! narrowed to the input's type before the affine, as burn's GroupNorm and `layer_norm` do.
//!
//! Pinned source for the launch conventions and the shared-memory tree: burn-cubecl 0.22.1
//! `kernel/conv/deform_conv2d.rs`, cubek-reduce 0.3.1 `routines/shared_sum.rs`.

use burn::backend::ops::ActivationOps;
use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, Shape};

/// How a norm's segments and parameters lie in the tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    /// Values in a segment (GroupNorm: channels per group × positions; LayerNorm: the row).
    pub len: usize,
    /// Segments per image, the parameters' period (GroupNorm: the groups; LayerNorm: 1).
    pub per_image: usize,
    /// Consecutive values that share a parameter (GroupNorm: a channel's positions;
    /// LayerNorm: 1).
    pub per_param: usize,
}

/// Each segment of `x` normalised (`(x - mean) / sqrt(var + eps)`), then `· gamma[p] +
/// beta[p]` with `p` the value's parameter, then SiLU when `silu`: the kernel on cubecl
/// devices, backend ops elsewhere.
///
/// # Shapes
/// - `x`: any, `len` dividing its size; `gamma`, `beta`: `[per_image * len / per_param]`
/// - output: like `x`
pub fn segment_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    segments: Segments,
    eps: f64,
    silu: bool,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as SegmentNormOps>::ditail_segment_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        segments,
        eps,
        silu,
    ))
}

/// Whether [`segment_norm`] runs its kernel for `x`, `gamma` and `beta`: on a cubecl device,
/// all three of one float type, the kernel not switched off (`DITAIL_NORM=reference` or
/// `DITAIL_CONV=reference`).
pub fn applies<const D: usize>(x: &Tensor<D>, gamma: &Tensor<1>, beta: &Tensor<1>) -> bool {
    use burn::backend::DispatchDevice;
    let same = gamma.dtype() == x.dtype() && beta.dtype() == x.dtype();
    let float = matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16);
    same && float
        && crate::switches::norm_kernel_enabled()
        && matches!(x.device().as_dispatch(), DispatchDevice::Cube(_))
}

/// Segment normalisation as a backend operation.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    NdArray: cfg(feature = "ndarray"),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
)]
pub trait SegmentNormOps: Backend {
    /// See [`segment_norm`].
    ///
    /// Under burn's fusion (every GPU backend) one opaque operation in the stream.
    ///
    /// # Shapes
    /// As [`segment_norm`].
    #[fusion(dtype = x, shape = x)]
    fn ditail_segment_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        segments: Segments,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        reference::<Self>(x, gamma, beta, segments, eps, silu)
    }
}

/// The same in backend ops: `[images, per_image, len]` statistics (f32 for f16), the
/// normalised values narrowed, the affine on `[images, params, per_param]`.
fn reference<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    Segments {
        len,
        per_image,
        per_param,
    }: Segments,
    eps: f64,
    silu: bool,
) -> FloatTensor<B> {
    let shape = x.shape();
    let dtype = x.dtype();
    let images = shape.num_elements() / (per_image * len);
    let params = per_image * len / per_param;
    let per = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([1, params, 1]));
    let (gamma, beta) = (per(gamma), per(beta));
    let xs = B::float_reshape(x, Shape::new([images, per_image, len]));
    let widened = dtype != DType::F32;
    let xs = match widened {
        true => B::float_cast(xs, FloatDType::F32),
        false => xs,
    };
    let mean = B::float_mean_dim(xs.clone(), 2);
    let centered = B::float_sub(xs, mean);
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), 2);
    let normed = B::float_div(
        centered,
        B::float_sqrt(B::float_add_scalar(var, eps.into())),
    );
    let normed = match widened {
        true => B::float_cast(normed, dtype.into()),
        false => normed,
    };
    let normed = B::float_reshape(normed, Shape::new([images, params, per_param]));
    let y = B::float_reshape(B::float_add(B::float_mul(normed, gamma), beta), shape);
    match silu {
        true => B::float_mul(y.clone(), <B as ActivationOps<B>>::sigmoid(y)),
        false => y,
    }
}

#[cfg(feature = "flex")]
impl SegmentNormOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl SegmentNormOps for burn::backend::NdArray {}

/// Cubes a norm's launch aims for where the device does not say how many multiprocessors
/// it has (wgpu does not): two for each of a 128-multiprocessor GPU's.
const TARGET_CUBES: usize = 256;

/// The fewest values a chunk of a split segment holds: eight vector loads for each of 256
/// units at the widest vectors (4), so that a chunk's cube still has loads in flight.
const MIN_CHUNK: usize = 8192;

/// How many chunks each of `count` segments of `len` values is split into: 1 (one kernel,
/// one cube a segment) where the segments alone give the device two cubes for each of its
/// `sms` multiprocessors ([`TARGET_CUBES`] where unknown), or where the segments are too
/// short to split into [`MIN_CHUNK`]s; else enough chunks to give it that many (two
/// kernels: the chunks' moments, then each chunk normalised with its segment's moments),
/// or `DITAIL_NORM=one` (never split).
///
/// Why: one cube a segment is 32 cubes for SD's VAE decoding one image (a group: a
/// million values at 512 px), a quarter of a large GPU's multiprocessors, each reading its
/// group three times. PyTorch's GroupNorm takes the statistics one block a group too, but
/// normalises over the whole grid.
pub(crate) fn chunks_per_segment(count: usize, len: usize, sms: Option<u32>) -> usize {
    let target = sms.map_or(TARGET_CUBES, |s| 2 * s as usize).max(1);
    if count >= target || !crate::switches::norm_split_enabled() {
        return 1;
    }
    target.div_ceil(count).min(len / MIN_CHUNK).max(1)
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn::backend::TensorMetadata;
    use burn::tensor::DType;
    use burn_cubecl::CubeBackend;
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::ops::numeric::empty_device_dtype;
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::ir::ElemType;
    use cubecl::prelude::*;

    use super::{SegmentNormOps, Segments};

    /// Most cubes along one axis of a launch (WGSL's and Vulkan's guaranteed minimum).
    const MAX_CUBES_PER_AXIS: usize = 65535;

    /// The sum of every unit's `value`, for every unit: a tree over `sums` (one slot per
    /// unit, `CUBE_DIM` a power of two), read back after a barrier so that the slots can
    /// be written again.
    #[cube]
    fn cube_sum(sums: &mut Shared<[f32]>, value: f32) -> f32 {
        sums[UNIT_POS as usize] = value;
        sync_cube();
        let mut active = CUBE_DIM / 2;
        while active > 0 {
            if UNIT_POS < active {
                let other = sums[(UNIT_POS + active) as usize];
                let unit = UNIT_POS as usize;
                sums[unit] += other;
            }
            sync_cube();
            active /= 2;
        }
        let total = sums[0];
        sync_cube();
        total
    }

    /// The sum of this unit's strided share of the segment's values less `shift`, or of
    /// their squares.
    #[cube]
    fn unit_share<F: Float, N: Size>(
        input: &Tensor<Vector<F, N>>,
        start: usize,
        len: usize,
        #[comptime] units: usize,
        shift: f32,
        #[comptime] squares: bool,
    ) -> f32 {
        let mut s = f32::new(0.0);
        let mut i = UNIT_POS as usize;
        while i < len {
            let v = input[start + i];
            #[unroll]
            for k in 0..N::value() {
                let d = f32::cast_from(v.extract(k)) - shift;
                if squares {
                    s += d * d;
                } else {
                    s += d;
                }
            }
            i += units;
        }
        s
    }

    /// Normalises this unit's strided share of `count` vectors from vector `start` with the
    /// segment's `mean` and `std`: narrowed to `F`, the affine of each value's parameter
    /// (`first` is the share's first value counted from the start of its image's
    /// parameters), SiLU when `silu`.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn normalize_share<F: Float, N: Size>(
        input: &Tensor<Vector<F, N>>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<Vector<F, N>>,
        start: usize,
        count: usize,
        first: usize,
        per_param: usize,
        mean: f32,
        std: f32,
        #[comptime] units: usize,
        #[comptime] silu: bool,
    ) {
        let width = N::value();
        let mut i = UNIT_POS as usize;
        while i < count {
            let v = input[start + i];
            let mut out = Vector::<F, N>::empty();
            #[unroll]
            for k in 0..width {
                let normed = F::cast_from((f32::cast_from(v.extract(k)) - mean) / std);
                let p = (first + i * width + k) / per_param;
                let mut y = normed * gamma[p] + beta[p];
                if silu {
                    y = y / (F::new(1.0) + F::exp(-y));
                }
                out.insert(k, y);
            }
            output[start + i] = out;
            i += units;
        }
    }

    /// The mean of `count` vectors of `N` values from vector `start`, and the sum of their
    /// squared deviations from it (burn's two passes), for every unit of the cube.
    #[cube]
    fn moments<F: Float, N: Size>(
        input: &Tensor<Vector<F, N>>,
        sums: &mut Shared<[f32]>,
        start: usize,
        count: usize,
        #[comptime] units: usize,
    ) -> (f32, f32) {
        let n = f32::cast_from(count * N::value());
        let share = unit_share(input, start, count, units, f32::new(0.0), false);
        let mean = cube_sum(sums, share) / n;
        let share = unit_share(input, start, count, units, mean, true);
        let m2 = cube_sum(sums, share);
        (mean, m2)
    }

    /// One cube per segment `CUBE_POS`: each unit sums a strided share of the segment's
    /// vectors, the cube adds the shares (the mean, then the squared deviations), then each
    /// unit normalises its share. `len` counts vectors of `N` values.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    fn segment_norm_kernel<F: Float, N: Size>(
        input: &Tensor<Vector<F, N>>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<Vector<F, N>>,
        segments: usize,
        len: usize,
        per_image: usize,
        per_param: usize,
        eps: f32,
        #[comptime] units: usize,
        #[comptime] silu: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let segment = CUBE_POS;
        // The same for every unit of the cube: the whole cube leaves, before any barrier.
        if segment >= segments {
            terminate!();
        }
        let start = segment * len;
        let mut sums = Shared::<[f32]>::new_slice(units);
        let (mean, m2) = moments(input, &mut sums, start, len, units);
        let std = f32::sqrt(m2 / f32::cast_from(len * N::value()) + eps);
        let first = (segment % per_image) * len * N::value();
        normalize_share(
            input, gamma, beta, output, start, len, first, per_param, mean, std, units, silu,
        );
    }

    /// Chunk `chunk` of a segment of `len` vectors cut into chunks of `per_chunk` (the last
    /// one shorter): its first vector in the segment, and its length.
    #[cube]
    fn chunk_span(chunk: usize, len: usize, per_chunk: usize) -> (usize, usize) {
        let begin = chunk * per_chunk;
        (begin, min(begin + per_chunk, len) - begin)
    }

    /// The split form's first kernel, one cube per chunk `CUBE_POS` of a segment (segment
    /// `CUBE_POS / chunks`): the chunk's mean and its sum of squared deviations, into
    /// `stats[2 CUBE_POS]` and `stats[2 CUBE_POS + 1]`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    fn chunk_moments_kernel<F: Float, N: Size>(
        input: &Tensor<Vector<F, N>>,
        stats: &mut Tensor<f32>,
        cubes: usize,
        len: usize,
        per_chunk: usize,
        chunks: usize,
        #[comptime] units: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let cube = CUBE_POS;
        if cube >= cubes {
            terminate!();
        }
        let (begin, count) = chunk_span(cube % chunks, len, per_chunk);
        let start = (cube / chunks) * len + begin;
        let mut sums = Shared::<[f32]>::new_slice(units);
        let (mean, m2) = moments(input, &mut sums, start, count, units);
        if UNIT_POS == 0 {
            stats[2 * cube] = mean;
            stats[2 * cube + 1] = m2;
        }
    }

    /// The split form's second kernel, one cube per chunk as the first: the segment's mean
    /// and variance from its chunks' (the mean of the chunks' means by their sizes; the
    /// chunks' sums of squared deviations, each plus its size times its mean's squared
    /// deviation from the segment's: exactly the segment's sum, with no cancellation),
    /// then the chunk normalised as [`segment_norm_kernel`] normalises a segment.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    fn chunk_norm_kernel<F: Float, N: Size>(
        input: &Tensor<Vector<F, N>>,
        stats: &Tensor<f32>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<Vector<F, N>>,
        cubes: usize,
        len: usize,
        per_chunk: usize,
        chunks: usize,
        per_image: usize,
        per_param: usize,
        eps: f32,
        #[comptime] units: usize,
        #[comptime] silu: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let cube = CUBE_POS;
        if cube >= cubes {
            terminate!();
        }
        let width = N::value();
        let segment = cube / chunks;
        let first_chunk = segment * chunks;
        let n = f32::cast_from(len * width);
        let mut sum = f32::new(0.0);
        for c in 0..chunks {
            let (_, vectors) = chunk_span(c, len, per_chunk);
            sum += stats[2 * (first_chunk + c)] * f32::cast_from(vectors * width);
        }
        let mean = sum / n;
        let mut m2 = f32::new(0.0);
        for c in 0..chunks {
            let (_, vectors) = chunk_span(c, len, per_chunk);
            let d = stats[2 * (first_chunk + c)] - mean;
            m2 += stats[2 * (first_chunk + c) + 1] + f32::cast_from(vectors * width) * d * d;
        }
        let std = f32::sqrt(m2 / n + eps);
        let (begin, count) = chunk_span(cube % chunks, len, per_chunk);
        let start = segment * len + begin;
        let first = ((segment % per_image) * len + begin) * width;
        normalize_share(
            input, gamma, beta, output, start, count, first, per_param, mean, std, units, silu,
        );
    }

    impl SegmentNormOps for CubeBackend {
        fn ditail_segment_norm(
            x: CubeTensor,
            gamma: CubeTensor,
            beta: CubeTensor,
            segments: Segments,
            eps: f64,
            silu: bool,
        ) -> CubeTensor {
            let x = into_contiguous(x);
            let (gamma, beta) = (into_contiguous(gamma), into_contiguous(beta));
            let output = empty_device_dtype(x.client.clone(), x.device.clone(), x.shape(), x.dtype);
            let count = x.shape().num_elements() / segments.len.max(1);
            if count == 0 {
                return output;
            }
            // Each unit loads vectors of the widest size the device reads best that
            // divides a segment (so every segment starts on a vector).
            let width = x
                .client
                .io_optimized_vector_sizes(x.dtype.size())
                .filter(|&w| segments.len.is_multiple_of(w))
                .max()
                .unwrap_or(1);
            let vectors = segments.len / width;
            let sms = x.client.properties().hardware.num_streaming_multiprocessors;
            let chunks = super::chunks_per_segment(count, segments.len, sms);
            // Every chunk non-empty: the chunks' length first, then how many it takes.
            let per_chunk = vectors.div_ceil(chunks);
            let chunks = vectors.div_ceil(per_chunk);
            // A power of two for the tree; about four vectors a unit, 32 to 256 units.
            let units = (per_chunk / 4).next_power_of_two().clamp(32, 256);
            let cubes = count * chunks;
            let across = cubes.clamp(1, MAX_CUBES_PER_AXIS);
            let cube_count = || CubeCount::Static(across as u32, cubes.div_ceil(across) as u32, 1);
            let cube_dim = CubeDim::new_1d(units as u32);
            let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
            let client = output.client.clone();
            if chunks == 1 {
                segment_norm_kernel::launch(
                    &client,
                    cube_count(),
                    cube_dim,
                    width,
                    x.into_tensor_arg(),
                    gamma.into_tensor_arg(),
                    beta.into_tensor_arg(),
                    output.clone().binding().into_tensor_arg(),
                    count,
                    vectors,
                    segments.per_image,
                    segments.per_param,
                    eps as f32,
                    units,
                    silu,
                    dtype,
                );
                return output;
            }
            let stats = empty_device_dtype(
                client.clone(),
                x.device.clone(),
                [2 * cubes].into(),
                DType::F32,
            );
            chunk_moments_kernel::launch(
                &client,
                cube_count(),
                cube_dim,
                width,
                x.clone().into_tensor_arg(),
                stats.clone().binding().into_tensor_arg(),
                cubes,
                vectors,
                per_chunk,
                chunks,
                units,
                dtype,
            );
            chunk_norm_kernel::launch(
                &client,
                cube_count(),
                cube_dim,
                width,
                x.into_tensor_arg(),
                stats.into_tensor_arg(),
                gamma.into_tensor_arg(),
                beta.into_tensor_arg(),
                output.clone().binding().into_tensor_arg(),
                cubes,
                vectors,
                per_chunk,
                chunks,
                segments.per_image,
                segments.per_param,
                eps as f32,
                units,
                silu,
                dtype,
            );
            output
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MIN_CHUNK, TARGET_CUBES, chunks_per_segment};

    /// The launches SD's norms get: split only where the segments alone are too few cubes,
    /// never into chunks under `MIN_CHUNK`, and by the device's multiprocessors where known.
    #[test]
    fn long_segments_are_split_only_where_they_are_too_few_cubes() {
        // SD1.5's VAE at 512 px, one image: 32 groups of 2^20 values, 8 chunks each.
        assert_eq!(chunks_per_segment(32, 1 << 20, None), TARGET_CUBES / 32);
        // The U-Net's first level at 64x64, batch 3: 96 groups of 40960, 3 chunks each.
        assert_eq!(chunks_per_segment(96, 40960, None), 3);
        // Batch 1: 8 chunks wanted, but 5 of 8192 values is as many as the group makes.
        assert_eq!(chunks_per_segment(32, 40960, None), 40960 / MIN_CHUNK);
        // Too short to split, or enough segments: one cube each.
        assert_eq!(chunks_per_segment(32, 2560, None), 1);
        assert_eq!(chunks_per_segment(12288, 320, None), 1);
        assert_eq!(chunks_per_segment(TARGET_CUBES, 1 << 20, None), 1);
        // An H100 (132 multiprocessors): 264 cubes wanted.
        assert_eq!(
            chunks_per_segment(32, 1 << 20, Some(132)),
            264usize.div_ceil(32)
        );
        assert_eq!(chunks_per_segment(264, 1 << 20, Some(132)), 1);
    }
}
