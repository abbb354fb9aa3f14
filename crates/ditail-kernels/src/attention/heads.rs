//! The flash path's operands in one kernel each: `[batch, tokens, heads * head_dim]` laid
//! out as `[batch, heads, tokens, width]` for cubek, with Ditail's q/k mix, the zero
//! padding to the tiles' width and q's rescaling applied as the values are copied; and its
//! output back, without the padding, in one more.
//!
//! In tensor ops the same took a kernel per step, and none of them fuse (they run inside
//! the attention's opaque operation, below burn's fusion): for a 40-wide head the mix
//! (two to four kernels), the scaling, a fill of zeros and the concatenation with them for
//! q, most of that again for k, the zeros, concatenation and layout copy for v, and a
//! slice and a layout copy for the output. Here it is one launch per tensor, which the
//! layout copies cubek's `[batch, heads, tokens, width]` needs cost anyway.
//!
//! Each mixed value is computed in the tensors' dtype and in the reference's order
//! (`target + (source - target) * mask`, then the scale), so it rounds as the tensor ops
//! did; `tests/attention_flash.rs` holds the whole path against the reference.
//!
//! Pinned source: cubek-attention 0.3.1 `components/global/layout.rs` (how cubek reads
//! `[batch, heads, tokens, width]`), burn-cubecl 0.22.1 `kernel/conv/deform_conv2d.rs` (the
//! launch conventions `conv/columns.rs` follows too).

use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, ir::ElemType};

/// Where a tensor's mixed-in source values are.
pub(super) enum Source<'a> {
    /// Nothing is mixed in.
    None,
    /// Batch element 0 is the source (and is kept); the others are targets.
    InBatch,
    /// A separate `[1, tokens, heads * head_dim]` source; every element is a target.
    Separate(&'a CubeTensor),
}

/// The kernel's mix modes (comptime: each mode compiles to its own kernel).
const KEEP: u32 = 0;
const IN_BATCH: u32 = 1;
const SEPARATE: u32 = 2;

/// A target value with its source value mixed in: the source where no mask weighs it,
/// else `target + (source - target) * mask[token]`.
#[cube]
fn mixed<F: Float>(
    target: F,
    source: F,
    mask: &Tensor<F>,
    token: usize,
    #[comptime] masked: bool,
) -> F {
    if masked {
        target + (source - target) * mask[token * mask.stride(0)]
    } else {
        source
    }
}

/// One unit per element `(b, h, t, j)` of `out` `[batch, heads, tokens, width]`: column
/// `h * head_dim + j` of token `t` of `x` (mixed and scaled), or zero in the padding
/// (`j >= head_dim`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn heads_kernel<F: Float>(
    x: &Tensor<F>,
    source: &Tensor<F>,
    mask: &Tensor<F>,
    out: &mut Tensor<F>,
    head_dim: usize,
    scale: f32,
    #[comptime] mode: u32,
    #[comptime] masked: bool,
    #[define(F)] _dtype: ElemType,
) {
    let (heads, tokens, width) = (out.shape(1), out.shape(2), out.shape(3));
    if ABSOLUTE_POS >= out.shape(0) * heads * tokens * width {
        terminate!();
    }
    let j = ABSOLUTE_POS % width;
    let rest = ABSOLUTE_POS / width;
    let t = rest % tokens;
    let rest = rest / tokens;
    let h = rest % heads;
    let b = rest / heads;

    let mut value = F::new(0.0);
    if j < head_dim {
        let column = h * head_dim + j;
        let row = t * x.stride(1) + column * x.stride(2);
        value = x[b * x.stride(0) + row];
        if mode == IN_BATCH {
            if b > 0 {
                value = mixed::<F>(value, x[row], mask, t, masked);
            }
        } else if mode == SEPARATE {
            let at = t * source.stride(1) + column * source.stride(2);
            value = mixed::<F>(value, source[at], mask, t, masked);
        }
        value *= F::cast_from(scale);
    }
    out[ABSOLUTE_POS] = value;
}

/// `x` `[batch, tokens, heads * head_dim]` as a new contiguous `[batch, heads, tokens,
/// width]`: `source` mixed into its targets by `mask` (`[tokens]`, `None`: a copy of the
/// source), zero columns from `head_dim` to `width`, every value times `scale`. `source`
/// and `mask` must have `x`'s dtype.
pub(super) fn heads(
    x: &CubeTensor,
    heads: usize,
    width: usize,
    scale: f32,
    source: Source,
    mask: Option<&CubeTensor>,
) -> CubeTensor {
    let s = x.shape();
    let (b, n, head_dim) = (s[0], s[1], s[2] / heads);
    // One head with nothing to change (the VAE's attention) is already laid out so.
    if heads == 1 && width == head_dim && scale == 1.0 && matches!(source, Source::None) {
        return single_head(x.clone(), [b, 1, n, head_dim]);
    }
    let out = empty_device_dtype(
        x.client.clone(),
        x.device.clone(),
        [b, heads, n, width].into(),
        x.dtype,
    );
    let (mode, source) = match source {
        Source::None => (KEEP, x),
        Source::InBatch => (IN_BATCH, x),
        Source::Separate(t) => (SEPARATE, t),
    };
    let masked = mode != KEEP && mask.is_some();
    let units = b * heads * n * width;
    let cube_dim = CubeDim::new(&x.client, units);
    let cube_count = calculate_cube_count_elemwise(&x.client, units, cube_dim);
    heads_kernel::launch(
        &out.client,
        cube_count,
        cube_dim,
        x.clone().into_tensor_arg(),
        source.clone().into_tensor_arg(),
        // Unread where nothing is masked: `x` stands in.
        mask.unwrap_or(x).clone().into_tensor_arg(),
        out.clone().binding().into_tensor_arg(),
        head_dim,
        scale,
        mode,
        masked,
        burn::backend::cubecl::dtype_to_storage_type(x.dtype),
    );
    out
}

/// A one-head tensor reshaped to `shape` (`[batch, 1, tokens, width]` and back): no copy
/// where it is contiguous.
fn single_head<const D: usize>(t: CubeTensor, shape: [usize; D]) -> CubeTensor {
    CubeBackend::float_reshape(t, shape.into())
}

/// One unit per element `(b, t, h * head_dim + j)` of `out` `[batch, tokens, heads *
/// head_dim]`: element `(b, h, t, j)` of the attention's `[batch, heads, tokens, width]`.
#[cube(launch)]
fn tokens_kernel<F: Float>(
    per_head: &Tensor<F>,
    out: &mut Tensor<F>,
    head_dim: usize,
    #[define(F)] _dtype: ElemType,
) {
    let (tokens, channels) = (out.shape(1), out.shape(2));
    if ABSOLUTE_POS >= out.shape(0) * tokens * channels {
        terminate!();
    }
    let column = ABSOLUTE_POS % channels;
    let rest = ABSOLUTE_POS / channels;
    let t = rest % tokens;
    let b = rest / tokens;
    let (h, j) = (column / head_dim, column % head_dim);
    out[ABSOLUTE_POS] = per_head[b * per_head.stride(0)
        + h * per_head.stride(1)
        + t * per_head.stride(2)
        + j * per_head.stride(3)];
}

/// The attention's output `[batch, heads, tokens, width]` back as `[batch, tokens, heads *
/// head_dim]`, the padding columns (`head_dim..width`) left out: one copy.
pub(super) fn tokens(per_head: &CubeTensor, head_dim: usize) -> CubeTensor {
    let s = per_head.shape();
    let (b, heads, n) = (s[0], s[1], s[2]);
    if heads == 1 && s[3] == head_dim {
        return single_head(per_head.clone(), [b, n, head_dim]);
    }
    let out = empty_device_dtype(
        per_head.client.clone(),
        per_head.device.clone(),
        [b, n, heads * head_dim].into(),
        per_head.dtype,
    );
    let units = b * n * heads * head_dim;
    let cube_dim = CubeDim::new(&per_head.client, units);
    let cube_count = calculate_cube_count_elemwise(&per_head.client, units, cube_dim);
    tokens_kernel::launch(
        &out.client,
        cube_count,
        cube_dim,
        per_head.clone().into_tensor_arg(),
        out.clone().binding().into_tensor_arg(),
        head_dim,
        burn::backend::cubecl::dtype_to_storage_type(per_head.dtype),
    );
    out
}
