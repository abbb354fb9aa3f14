//! The reference attention, generic over the backend: Ditail's q/k mix in ordinary tensor
//! ops, then burn's `attention` op per head, in query chunks.
//!
//! The mix follows the reference implementation's `mask * source + (1 - mask) * target`
//! written as `target + (source - target) * mask` ([MAPS-research/Ditail
//! `src/ditail_utils.py`](https://github.com/MAPS-research/Ditail/blob/e4ddad286a78720b277282fddd334f4654f53819/src/ditail_utils.py)).

use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Shape, Slice};

use super::QkMix;

/// Largest score matrix (elements, over batch and heads) one attention call may need.
///
/// 2^24 f32 scores are 64 MiB: half of the 128 MiB that WebGPU-limited adapters (and
/// lavapipe) allow in one buffer. Longer queries are processed in row chunks, which gives
/// the same result since each query row's softmax is independent of the others.
const SCORE_BUDGET: usize = 1 << 24;

fn dims3<B: Backend>(t: &FloatTensor<B>) -> [usize; 3] {
    let shape = t.shape();
    [shape[0], shape[1], shape[2]]
}

/// Rows `start..end` of dimension `dim` of `t`.
pub(super) fn rows<B: Backend>(
    t: FloatTensor<B>,
    dim: usize,
    start: usize,
    end: usize,
) -> FloatTensor<B> {
    let rank = t.shape().num_dims();
    let slices: Vec<Slice> = (0..rank)
        .map(|d| match d == dim {
            true => Slice::new(start as isize, Some(end as isize), 1),
            false => Slice::new(0, None, 1),
        })
        .collect();
    B::float_slice(t, &slices)
}

/// Mixes the source into the targets of `x`: with `source` given every element is a
/// target, else element 0 is the source and is kept; each target becomes
/// `x + (source - x) * mask`, or the source itself without a mask.
///
/// # Shapes
/// - `x`: `[batch, ...]`; `source`: `[1, ...]`; `mask`: broadcastable against one element
/// - output: like `x`
pub(crate) fn mix_source<B: Backend>(
    x: FloatTensor<B>,
    source: Option<FloatTensor<B>>,
    mask: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let b = x.shape()[0];
    let (source, targets, kept) = match source {
        Some(source) => (source, x, None),
        None if b == 1 => return x,
        None => (
            rows::<B>(x.clone(), 0, 0, 1),
            rows::<B>(x.clone(), 0, 1, b),
            Some(rows::<B>(x, 0, 0, 1)),
        ),
    };
    let mixed = match mask {
        None => B::float_expand(source, targets.shape()),
        Some(mask) => {
            let delta = B::float_mul(B::float_sub(source, targets.clone()), mask);
            B::float_add(targets, delta)
        }
    };
    match kept {
        Some(source) => B::float_cat(vec![source, mixed], 0),
        None => mixed,
    }
}

/// q and k with `mix` applied.
pub(crate) fn inject_qk<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    mix: QkMix<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    match mix.parts() {
        None => (q, k),
        Some((source, mask)) => {
            let (sq, sk) = source.unzip();
            // The `[tokens]` mask weighs whole token rows of `[batch, tokens, inner]`.
            let n = q.shape()[1];
            let mask = mask.map(|m| B::float_reshape(m, Shape::new([1, n, 1])));
            (
                mix_source::<B>(q, sq, mask.clone()),
                mix_source::<B>(k, sk, mask),
            )
        }
    }
}

/// `x` laid out per head, each head's columns zero-padded to `width` (the flash path's
/// layout, `AttentionOps::ditail_attention_heads`), in tensor ops.
///
/// # Shapes
/// - `x`: `[batch, tokens, heads * head_dim]`; output: `[batch, heads, tokens, width]`
pub(crate) fn heads<B: Backend>(x: FloatTensor<B>, heads: usize, width: usize) -> FloatTensor<B> {
    let [b, n, c] = dims3::<B>(&x);
    let d = c / heads;
    let split = B::float_reshape(x, Shape::new([b, n, heads, d]));
    let padded = match width > d {
        true => {
            let zeros = B::float_zeros(
                Shape::new([b, n, heads, width - d]),
                &split.device(),
                split.dtype().into(),
            );
            B::float_cat(vec![split, zeros], 3)
        }
        false => split,
    };
    B::float_swap_dims(padded, 1, 2)
}

/// Keys or values laid out per head ([`heads`]) back as tokens, the padding left out; a
/// tensor of tokens as it is.
///
/// # Shapes
/// - `x`: `[batch, heads, tokens, width]` or `[batch, tokens, heads * head_dim]`
/// - output: `[batch, tokens, heads * head_dim]`
fn tokens<B: Backend>(x: FloatTensor<B>, head_dim: usize) -> FloatTensor<B> {
    let shape = x.shape();
    if shape.num_dims() != 4 {
        return x;
    }
    let (b, heads, n) = (shape[0], shape[1], shape[2]);
    let x = rows::<B>(x, 3, 0, head_dim);
    B::float_reshape(
        B::float_swap_dims(x, 1, 2),
        Shape::new([b, n, heads * head_dim]),
    )
}

/// Multi-head attention of `[batch, tokens, heads * head_dim]` tensors through burn's
/// `attention` op, with the injection applied first. Keys and values laid out per head
/// ([`heads`]) are laid back first.
pub(crate) fn attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mix: QkMix<B>,
    heads: usize,
) -> FloatTensor<B> {
    let head_dim = q.shape()[2] / heads.max(1);
    let (k, v) = (tokens::<B>(k, head_dim), tokens::<B>(v, head_dim));
    let (q, k) = inject_qk::<B>(q, k, mix);
    let [b, n_q, c] = dims3::<B>(&q);
    let n_kv = k.shape()[1];
    let split = |t: FloatTensor<B>, n: usize| {
        B::float_swap_dims(
            B::float_reshape(t, Shape::new([b, n, heads, c / heads])),
            1,
            2,
        )
    };
    let (q, k, v) = (split(q, n_q), split(k, n_kv), split(v, n_kv));
    let sdpa = |q, k, v| B::attention(q, k, v, None, None, AttentionModuleOptions::default());

    let chunk = (SCORE_BUDGET / (b * heads * n_kv).max(1)).max(1);
    let out = if chunk >= n_q {
        sdpa(q, k, v)
    } else {
        let parts = (0..n_q)
            .step_by(chunk)
            .map(|start| {
                let q = rows::<B>(q.clone(), 2, start, (start + chunk).min(n_q));
                sdpa(q, k.clone(), v.clone())
            })
            .collect();
        B::float_cat(parts, 2)
    };
    B::float_reshape(B::float_swap_dims(out, 1, 2), Shape::new([b, n_q, c]))
}
