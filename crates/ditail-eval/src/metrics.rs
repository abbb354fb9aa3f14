//! The per-image metrics on the networks' outputs.

use burn::prelude::*;

/// Cosine self-similarity of each image's tokens, as the reference's `attn_cosine_sim`
/// (the product of the norms clamped at `1e-8`).
///
/// # Shapes
/// - `keys`: `[batch, tokens, dim]`; output: `[batch, tokens, tokens]`
pub fn self_similarity(keys: Tensor<3>) -> Tensor<3> {
    let norms = keys.clone().powi_scalar(2).sum_dim(2).sqrt(); // [b, t, 1]
    let factor = norms.clone().matmul(norms.swap_dims(1, 2)).clamp_min(1e-8);
    keys.clone().matmul(keys.swap_dims(1, 2)) / factor
}

/// The structure distance of each pair: the mean squared difference of the two images'
/// key self-similarities (the reference's `F.mse_loss`).
///
/// # Shapes
/// - `content`, `result`: `[batch, tokens, dim]`; output: `batch` values
pub fn structure_distances(content: Tensor<3>, result: Tensor<3>) -> Vec<f64> {
    let d = self_similarity(content) - self_similarity(result);
    let b = d.dims()[0];
    let mse = d.powi_scalar(2).reshape([b as i32, -1]).mean_dim(1);
    mse.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// The CLIP score of each image with its own prompt: the diagonal of `logits_per_text`
/// divided by 100 (the reference's convention; 100 is the trained `exp(logit_scale)`, so
/// the score is the cosine similarity for OpenAI's CLIP).
///
/// # Shapes
/// - `logits_per_text`: `[n, n]`; output: `n` values
pub fn clip_scores(logits_per_text: Tensor<2>) -> Vec<f64> {
    let n = logits_per_text.dims()[0];
    let values = logits_per_text
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data");
    (0..n).map(|i| values[i * n + i] as f64 / 100.0).collect()
}
