//! The U-Net's time embedding: sinusoidal projection (`Timesteps`) and its MLP
//! (`TimestepEmbedding`).
//!
//! Ports diffusers' `get_timestep_embedding`, `Timesteps` and `TimestepEmbedding`
//! ([`models/embeddings.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/embeddings.py)).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::kernels::linear::linear;

/// Sinusoidal embedding of timesteps, computed on the host in f32 in the same order of
/// operations as diffusers, so it matches bit for bit up to the sin/cos implementation.
///
/// Returns `[timesteps.len(), dim]` values, row-major: `[cos | sin]` when `flip_sin_to_cos`
/// (SD1.x), else `[sin | cos]`; an odd `dim` gets a zero column at the end.
pub(crate) fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f32,
) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f32.ln()) * i as f32 / (half as f32 - shift)).exp())
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args = freqs.iter().map(|f| t * f);
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.map(|a| (a.sin(), a.cos())).unzip();
        let (first, second) = if flip_sin_to_cos {
            (cos, sin)
        } else {
            (sin, cos)
        };
        out.extend(first);
        out.extend(second);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// Projection from the sinusoidal width to the embedding width.
    pub linear_1: Linear,
    /// Second projection.
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    pub(crate) fn new(input: usize, dim: usize, device: &Device) -> Self {
        Self {
            linear_1: LinearConfig::new(input, dim).init(device),
            linear_2: LinearConfig::new(dim, dim).init(device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, input]`; output: `[batch, dim]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        // `kernels::linear`: the bias in the product's fused epilogue on a GPU.
        linear(&self.linear_2, silu(linear(&self.linear_1, x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_layout_is_cos_then_sin() {
        let e = timestep_embedding(&[0.0, 1.0], 4, true, 0.0);
        // t = 0: cos = 1, sin = 0 for both frequencies.
        assert_eq!(&e[..4], &[1.0, 1.0, 0.0, 0.0]);
        // t = 1: frequencies 1 and 10000^(-1/2) = 0.01.
        let expect = [1f32.cos(), 0.01f32.cos(), 1f32.sin(), 0.01f32.sin()];
        for (a, b) in e[4..].iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
