//! The Stable Diffusion U-Net (`UNet2DConditionModel`) with Ditail's hook sites.
//!
//! Ports diffusers' [`unets/unet_2d_condition.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/unets/unet_2d_condition.py)
//! for the configuration space of SD1.x and SDXL: `CrossAttnDownBlock2D`/`DownBlock2D` down
//! blocks, the cross-attention mid block, `UpBlock2D`/`CrossAttnUpBlock2D` up blocks,
//! transformer depths per block, 1x1-conv or linear projections, GEGLU, positional time
//! embedding, and SDXL's `text_time` added embedding. SD1.5 and SDXL are presets of one
//! config ([`UNetConfig::sd15`], [`UNetConfig::sdxl`]). Field names are diffusers' keys, so
//! the model is its own key map.

mod blocks;
mod conditioning;
mod config;
mod embeddings;
mod prepared;
mod time_table;

pub use blocks::{DownBlock, Downsample2d, MidBlock, UpBlock, Upsample2d};
pub use conditioning::{AddedConditioning, Conditioning};
pub use config::UNetConfig;
pub use embeddings::TimestepEmbedding;
pub(crate) use embeddings::timestep_embedding;
pub use prepared::PreparedConditioning;

use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;

use crate::cross_kv::CrossContext;
use crate::hook::Controller;
use crate::kernels::conv::conv2d;
use crate::kernels::group_norm::group_norm;
use crate::kernels::silu::silu;
use crate::resnet::conv3x3;
use blocks::{BlockShape, UpChannels};
use time_table::StepTime;

/// The denoising U-Net.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// Input convolution from the latent channels.
    pub conv_in: Conv2d,
    /// MLP on the sinusoidal timestep projection.
    pub time_embedding: TimestepEmbedding,
    /// SDXL's MLP on `[pooled text | projected sizes]`, added to the time embedding
    /// (`None` for SD1.x).
    pub add_embedding: Option<TimestepEmbedding>,
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
    /// Width of the sinusoidal projection of each size number (SDXL's
    /// `addition_time_embed_dim`; 0 without an added embedding).
    pub add_time_proj_dim: usize,
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
            linear_projection: self.use_linear_projection,
        };
        let depth = &self.transformer_layers_per_block;
        // Heads and depth of a block's transformers, if it has any; an up block takes the
        // depth of the down block it mirrors (diffusers' reversed list).
        let attn = |i: usize, kind: &str| {
            kind.starts_with("CrossAttn")
                .then(|| (self.num_attention_heads[i], depth[i]))
        };

        let down_blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                let h = attn(i, &self.down_block_types[i]);
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
                let h = attn(n - 1 - i, &self.up_block_types[i]);
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
            add_embedding: self
                .projection_class_embeddings_input_dim
                .filter(|_| self.has_added_conditioning())
                .map(|input| TimestepEmbedding::new(input, ch[0] * 4, device)),
            down_blocks,
            mid_block: MidBlock::new(
                &shape,
                ch[n - 1],
                (self.num_attention_heads[n - 1], depth[n - 1]),
                device,
            ),
            up_blocks,
            conv_norm_out: GroupNormConfig::new(self.norm_num_groups, ch[0])
                .with_epsilon(self.norm_eps)
                .init(device),
            conv_out: conv3x3([ch[0], self.out_channels], device),
            time_proj_dim: ch[0],
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            add_time_proj_dim: self.addition_time_embed_dim.unwrap_or(0),
        }
    }
}

impl UNet2DConditionModel {
    /// Whether the U-Net needs SDXL's added conditioning.
    pub fn has_added_conditioning(&self) -> bool {
        self.add_embedding.is_some()
    }

    /// A host array as a tensor in `like`'s float type on its device: converted on the
    /// host, not cast by a kernel (one fewer a step on a GPU in f16).
    fn upload(values: Vec<f32>, shape: [usize; 2], like: &Tensor<4>) -> Tensor<2> {
        Tensor::<2>::from_data(
            TensorData::new(values, shape),
            (&like.device(), like.dtype()),
        )
    }

    /// The time embeddings of `timesteps` after the SiLU that every ResNet's projection
    /// reads, each plus SDXL's added embedding `added` when there is one; and how many rows
    /// each timestep has.
    ///
    /// # Shapes
    /// - `added`: `[batch, temb]`
    /// - output: `[timesteps, temb]` without added conditioning (1 row a timestep), else
    ///   `[timesteps * batch, temb]` (`batch` rows a timestep)
    fn silu_time_embeddings(
        &self,
        timesteps: &[f32],
        added: Option<&Tensor<2>>,
        like: &Tensor<4>,
    ) -> (Tensor<2>, usize) {
        let n = timesteps.len();
        let proj = timestep_embedding(
            timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift as f32,
        );
        let temb = self
            .time_embedding
            .forward(Self::upload(proj, [n, self.time_proj_dim], like));
        let (temb, rows) = match added {
            None => (temb, 1),
            // One step's: `[1, temb]` broadcast over the batch, with no reshape between the
            // add and the SiLU (under burn's fusion a reshape there would end their fused
            // kernel, one kernel more for every plain SDXL forward).
            Some(added) if n == 1 => (temb + added.clone(), added.dims()[0]),
            Some(added) => {
                let [b, e] = added.dims();
                let each = temb.reshape([n, 1, e]) + added.clone().reshape([1, b, e]);
                (each.reshape([n * b, e]), b)
            }
        };
        (silu(temb), rows)
    }

    /// SDXL's added embedding of `cond` (diffusers' `get_aug_embed`, `text_time`): the same
    /// at every step of a run, so a [`PreparedConditioning`] computes it once. `None` for a
    /// U-Net without one (SD1.x).
    ///
    /// # Panics
    /// If the U-Net needs added conditioning and `cond` has none.
    ///
    /// # Shapes
    /// - output: `[batch, temb]`
    fn added_embedding(&self, cond: &Conditioning, like: &Tensor<4>) -> Option<Tensor<2>> {
        let add = self.add_embedding.as_ref()?;
        let added = cond
            .added
            .as_ref()
            .expect("this U-Net (SDXL) needs the pooled text embedding and the size conditioning");
        // diffusers: `add_time_proj(time_ids.flatten())` reshaped to one row per element,
        // after the pooled text: `[text_embeds | proj(id_0) | ... | proj(id_5)]`.
        let [b, n] = added.time_ids.dims();
        let ids: Vec<f32> = added
            .time_ids
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 after conversion");
        let d = self.add_time_proj_dim;
        let proj = timestep_embedding(&ids, d, self.flip_sin_to_cos, self.freq_shift as f32);
        let sizes = Self::upload(proj, [b, n * d], like);
        let input = Tensor::cat(vec![added.text_embeds.clone().cast(like.dtype()), sizes], 1);
        Some(add.forward(input))
    }

    /// Predicts the noise in `sample` at `timestep`, conditioned on `cond` (a text
    /// embedding `Tensor<3>` converts into it; SDXL needs [`Conditioning::added`] too),
    /// calling `ctrl` at every ResNet and self-attention site.
    ///
    /// Any latent size works: where it is not a multiple of 8, upsampled features are
    /// resized to the skip connection's size, as diffusers does. When `ctrl` reports
    /// [`Controller::finished`] after a block, the forward stops there and returns that
    /// block's output instead of the noise prediction.
    ///
    /// Each call projects the text into every cross-attention layer's keys and values (and
    /// SDXL's pooled text and sizes into the added embedding); a run that conditions many
    /// steps alike prepares the conditioning once instead
    /// ([`UNet2DConditionModel::prepare`]), and the steps after the first skip that work.
    ///
    /// # Panics
    /// If the U-Net needs added conditioning and `cond` has none (check
    /// [`UNet2DConditionModel::has_added_conditioning`]; the pipeline always provides it).
    ///
    /// # Shapes
    /// - `sample`: `[batch, in_channels, height, width]`
    /// - `cond.context`: `[batch, tokens, cross_attention_dim]`
    /// - `cond.added`: `text_embeds` `[batch, pooled]`, `time_ids` `[batch, 6]`
    /// - output: `[batch, out_channels, height, width]`
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timestep: f32,
        cond: impl Into<Conditioning>,
        ctrl: &mut dyn Controller,
    ) -> Tensor<4> {
        let cond = cond.into();
        let added = self.added_embedding(&cond, &sample);
        let (temb, _) = self.silu_time_embeddings(&[timestep], added.as_ref(), &sample);
        let context = CrossContext::new(&cond.context);
        self.forward_in(sample, StepTime::Own(Box::new(temb)), context, ctrl)
    }

    /// [`UNet2DConditionModel::forward`] with the time embedding `time` made beforehand
    /// (after the SiLU that every ResNet's projection reads, or a run's table of them), and
    /// the cross-attention reading `context` (the text tokens, and a run's keys and values
    /// where it keeps them).
    fn forward_in(
        &self,
        sample: Tensor<4>,
        time: StepTime<'_>,
        context: CrossContext<'_>,
        ctrl: &mut dyn Controller,
    ) -> Tensor<4> {
        let mut x = conv2d(&self.conv_in, sample);
        let mut skips = vec![x.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            x = block.forward(x, &time, context, i as u8, ctrl, &mut skips);
            if ctrl.finished() {
                return x;
            }
        }
        x = self.mid_block.forward(x, &time, context, ctrl);
        if ctrl.finished() {
            return x;
        }
        for (i, block) in self.up_blocks.iter().enumerate() {
            let remaining = skips.len().saturating_sub(block.resnets.len());
            let upsample_to = (remaining > 0).then(|| {
                let [_, _, h, w] = skips[remaining - 1].dims();
                [h, w]
            });
            x = block.forward(x, &time, context, i as u8, ctrl, &mut skips, upsample_to);
            if ctrl.finished() {
                return x;
            }
        }
        conv2d(&self.conv_out, group_norm(&self.conv_norm_out, x, true))
    }
}
