//! Small tensor operations shared by the networks: the text encoder's multi-head attention
//! on `[B, N, C]` tensors and PyTorch-exact nearest-neighbour resizing.

use burn::prelude::*;
use burn::tensor::module::attention as sdpa;
use burn::tensor::ops::AttentionModuleOptions;

/// Scaled dot-product attention over `heads` heads, scale `1/sqrt(head_dim)`: causal (the
/// text encoders' 77 tokens) in one call of burn's, otherwise (the metric networks' vision
/// towers) through [`crate::kernels::attention`], as the U-Net and VAE.
///
/// # Shapes
/// - `q`: `[batch, n_q, heads * head_dim]`
/// - `k`, `v`: `[batch, n_kv, heads * head_dim]`
/// - output: `[batch, n_q, heads * head_dim]`
pub fn multi_head_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    causal: bool,
) -> Tensor<3> {
    if !causal {
        // The attention kernel where the backend has one (the CPU's 512-bit products, the
        // WGSL kernel), burn's otherwise.
        return crate::kernels::attention::attention(q, k, v, heads, None);
    }
    let [b, n_q, c] = q.dims();
    let n_kv = k.dims()[1];
    let split = |t: Tensor<3>, n: usize| t.reshape([b, n, heads, c / heads]).swap_dims(1, 2);
    let (q, k, v) = (split(q, n_q), split(k, n_kv), split(v, n_kv));
    let options = AttentionModuleOptions {
        is_causal: causal,
        ..Default::default()
    };
    let out = sdpa(q, k, v, None, None, options);
    out.swap_dims(1, 2).reshape([b, n_q, c])
}

/// Source indices of PyTorch's `F.interpolate(mode="nearest")` from `from` to `to` pixels:
/// `min(floor(dst * (from / to)), from - 1)` with the scale in f32, as PyTorch computes it.
fn nearest_indices(from: usize, to: usize) -> Vec<i64> {
    let scale = from as f32 / to as f32;
    (0..to)
        .map(|dst| ((dst as f32 * scale).floor() as usize).min(from - 1) as i64)
        .collect()
}

/// Nearest-neighbour resize of `[B, C, H, W]` to `[B, C, size[0], size[1]]`, equal to
/// PyTorch's `F.interpolate(x, size=size, mode="nearest")` (and so to a 2x upsample when
/// `size` is twice the input).
pub(crate) fn resize_nearest(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let device = x.device();
    let pick = |x: Tensor<4>, dim: usize, from: usize, to: usize| {
        if from == to {
            return x;
        }
        let idx =
            Tensor::<1, Int>::from_data(TensorData::new(nearest_indices(from, to), [to]), &device);
        x.select(dim, idx)
    };
    let x = pick(x, 2, h, size[0]);
    pick(x, 3, w, size[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_indices_match_pytorch() {
        // torch.nn.functional.interpolate(torch.arange(5.)[None,None,None], size=9)
        assert_eq!(nearest_indices(5, 9), [0, 0, 1, 1, 2, 2, 3, 3, 4]);
        assert_eq!(nearest_indices(3, 6), [0, 0, 1, 1, 2, 2]);
        assert_eq!(nearest_indices(2, 3), [0, 0, 1]);
    }
}
