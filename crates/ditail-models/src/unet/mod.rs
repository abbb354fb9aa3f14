//! The SD1.x U-Net (`UNet2DConditionModel`) with Ditail's hook sites.
//!
//! Ports diffusers' [`unets/unet_2d_condition.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/unets/unet_2d_condition.py)
//! for the SD1.x configuration space: `CrossAttnDownBlock2D`/`DownBlock2D` down blocks, the
//! cross-attention mid block, `UpBlock2D`/`CrossAttnUpBlock2D` up blocks, 1x1-conv
//! projections, GEGLU, positional time embedding. Field names are diffusers' keys, so the
//! model is its own key map.

mod blocks;
mod config;
mod embeddings;

pub use blocks::{DownBlock, Downsample2d, MidBlock, UpBlock, Upsample2d};
pub use config::UNetConfig;
pub use embeddings::{TimestepEmbedding, timestep_embedding};

use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;

use crate::hook::Controller;
use crate::kernels::conv::conv2d;
use crate::kernels::silu::silu;
use crate::resnet::conv3x3;
use blocks::{BlockShape, UpChannels};

/// The SD1.x denoising U-Net.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// Input convolution from the latent channels.
    pub conv_in: Conv2d,
    /// MLP on the sinusoidal timestep projection.
    pub time_embedding: TimestepEmbedding,
    /// The down path.
    pub down_blocks: Vec<DownBlock>,
    /// The middle block.
    pub mid_block: MidBlock,
    /// The up path.
    pub up_blocks: Vec<UpBlock>,
    /// Final GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution to the latent channels.
    pub conv_out: Conv2d,
    /// Width of the sinusoidal projection (`block_out_channels[0]`).
    pub time_proj_dim: usize,
    /// Whether the projection is `[cos | sin]`.
    pub flip_sin_to_cos: bool,
    /// diffusers' `freq_shift`.
    pub freq_shift: f64,
}

impl UNetConfig {
    /// Builds the U-Net with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> UNet2DConditionModel {
        let ch = &self.block_out_channels;
        let n = ch.len();
        let shape = BlockShape {
            temb: ch[0] * 4,
            groups: self.norm_num_groups,
            eps: self.norm_eps,
            cross_dim: self.cross_attention_dim,
            transformer_layers: self.transformer_layers_per_block,
        };
        let heads = |i: usize, kind: &str| {
            kind.starts_with("CrossAttn")
                .then(|| self.num_attention_heads[i])
        };

        let down_blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                let h = heads(i, &self.down_block_types[i]);
                DownBlock::new(
                    &shape,
                    cin,
                    ch[i],
                    self.layers_per_block,
                    h,
                    i + 1 < n,
                    device,
                )
            })
            .collect();

        let mut prev = ch[n - 1];
        let up_blocks = (0..n)
            .map(|i| {
                let out = ch[n - 1 - i];
                let skip_in = ch[n - 1 - (i + 1).min(n - 1)];
                let h = heads(n - 1 - i, &self.up_block_types[i]);
                let block = UpBlock::new(
                    &shape,
                    UpChannels { prev, out, skip_in },
                    self.layers_per_block,
                    h,
                    i + 1 < n,
                    device,
                );
                prev = out;
                block
            })
            .collect();

        UNet2DConditionModel {
            conv_in: conv3x3([self.in_channels, ch[0]], device),
            time_embedding: TimestepEmbedding::new(ch[0], ch[0] * 4, device),
            down_blocks,
            mid_block: MidBlock::new(&shape, ch[n - 1], self.num_attention_heads[n - 1], device),
            up_blocks,
            conv_norm_out: GroupNormConfig::new(self.norm_num_groups, ch[0])
                .with_epsilon(self.norm_eps)
                .init(device),
            conv_out: conv3x3([ch[0], self.out_channels], device),
            time_proj_dim: ch[0],
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
        }
    }
}

impl UNet2DConditionModel {
    /// Predicts the noise in `sample` at `timestep`, conditioned on `context`, calling
    /// `ctrl` at every ResNet and self-attention site.
    ///
    /// Any latent size works: where it is not a multiple of 8, upsampled features are
    /// resized to the skip connection's size, as diffusers does. When `ctrl` reports
    /// [`Controller::finished`] after a block, the forward stops there and returns that
    /// block's output instead of the noise prediction.
    ///
    /// # Shapes
    /// - `sample`: `[batch, in_channels, height, width]`
    /// - `context`: `[batch, tokens, cross_attention_dim]`
    /// - output: `[batch, out_channels, height, width]`
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timestep: f32,
        context: Tensor<3>,
        ctrl: &mut dyn Controller,
    ) -> Tensor<4> {
        let device = sample.device();
        let proj = timestep_embedding(
            &[timestep],
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift as f32,
        );
        let proj = Tensor::<2>::from_data(TensorData::new(proj, [1, self.time_proj_dim]), &device)
            .cast(sample.dtype());
        let temb = self.time_embedding.forward(proj);

        let mut x = conv2d(&self.conv_in, sample);
        let mut skips = vec![x.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            x = block.forward(x, &temb, &context, i as u8, ctrl, &mut skips);
            if ctrl.finished() {
                return x;
            }
        }
        x = self.mid_block.forward(x, &temb, &context, ctrl);
        if ctrl.finished() {
            return x;
        }
        for (i, block) in self.up_blocks.iter().enumerate() {
            let remaining = skips.len().saturating_sub(block.resnets.len());
            let upsample_to = (remaining > 0).then(|| {
                let [_, _, h, w] = skips[remaining - 1].dims();
                [h, w]
            });
            x = block.forward(x, &temb, &context, i as u8, ctrl, &mut skips, upsample_to);
            if ctrl.finished() {
                return x;
            }
        }
        conv2d(&self.conv_out, silu(self.conv_norm_out.forward(x)))
    }
}
