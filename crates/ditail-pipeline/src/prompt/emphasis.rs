//! Emphasis as AUTOMATIC1111 applies it by default ("Original", its
//! [`modules/sd_emphasis.py`](https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/82a973c04367123ae98bd9abdf80d9eda9b910e2/modules/sd_emphasis.py)):
//! each token's hidden state is multiplied by its weight, then the whole chunk is scaled so
//! that its mean is the unweighted one. ComfyUI's default instead interpolates towards the
//! empty prompt's encoding and does not rescale; its numbers differ.

use burn::prelude::*;

/// Applies the weights of each chunk.
///
/// The two means are taken on the host in f64: a chunk's mean is a small difference of
/// large sums, so in f32 (A1111's) the summation order alone moves the ratio, by 3e-3 on
/// the test models; one read of 77 x width values per chunk, once per prompt.
///
/// # Shapes
/// - `z`: `[chunks, 77, width]`, one text encoder's hidden states
/// - `weights`: one row of 77 per chunk
/// - output: as `z`
pub fn apply(z: Tensor<3>, weights: &[Vec<f32>]) -> Tensor<3> {
    // Unweighted prompts stay bit for bit what diffusers computes.
    if weights.iter().flatten().all(|&w| w == 1.0) {
        return z;
    }
    let [n, len, width] = z.dims();
    let device = z.device();
    let values: Vec<f32> = z
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data");
    let factors: Vec<f32> = values
        .chunks(len * width)
        .zip(weights)
        .map(|(chunk, w)| {
            let (mut plain, mut weighted) = (0f64, 0f64);
            for (row, &wt) in chunk.chunks(width).zip(w) {
                let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
                plain += sum;
                weighted += sum * f64::from(wt);
            }
            (plain / weighted) as f32
        })
        .collect();
    let w = Tensor::<2>::from_data(TensorData::new(weights.concat(), [n, len]), &device)
        .cast(z.dtype())
        .unsqueeze_dim::<3>(2);
    let f = Tensor::<1>::from_data(TensorData::new(factors, [n]), &device)
        .cast(z.dtype())
        .reshape([n, 1, 1]);
    z * w * f
}
