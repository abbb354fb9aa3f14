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

/// Multi-head attention of `[batch, tokens, heads * head_dim]` tensors through burn's
/// `attention` op, with the injection applied first.
pub(crate) fn attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mix: QkMix<B>,
    heads: usize,
) -> FloatTensor<B> {
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
