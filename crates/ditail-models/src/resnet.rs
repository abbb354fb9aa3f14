//! `ResnetBlock2D`, shared by the U-Net (with a time embedding) and the VAE (without).
//!
//! Ports diffusers' `ResnetBlock2D`
//! ([`models/resnet.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/resnet.py))
//! for `time_embedding_norm="default"`, `output_scale_factor=1`, SiLU.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::hook::{Controller, Site};
use crate::kernels::conv::{conv2d, conv2d_add};
use crate::kernels::group_norm::group_norm;
use crate::kernels::linear::linear;

/// Shape of one ResNet block.
#[derive(Config, Debug)]
pub struct ResnetBlock2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (a 1x1 `conv_shortcut` is added when they differ from the input's).
    pub out_channels: usize,
    /// Width of the time embedding, or `None` for the VAE's blocks.
    pub temb_channels: Option<usize>,
    /// GroupNorm groups for both norms.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
}

/// A ResNet block: two GroupNorm-SiLU-conv3x3 stages plus an optional time embedding.
#[derive(Module, Debug)]
pub struct ResnetBlock2d {
    /// GroupNorm before `conv1`.
    pub norm1: GroupNorm,
    /// First 3x3 convolution.
    pub conv1: Conv2d,
    /// Projection of the time embedding onto the channels (U-Net only).
    pub time_emb_proj: Option<Linear>,
    /// GroupNorm before `conv2`.
    pub norm2: GroupNorm,
    /// Second 3x3 convolution.
    pub conv2: Conv2d,
    /// 1x1 convolution on the shortcut when the channel count changes.
    pub conv_shortcut: Option<Conv2d>,
}

pub(crate) fn conv3x3(channels: [usize; 2], device: &Device) -> Conv2d {
    Conv2dConfig::new(channels, [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

pub(crate) fn conv1x1(channels: [usize; 2], device: &Device) -> Conv2d {
    Conv2dConfig::new(channels, [1, 1]).init(device)
}

impl ResnetBlock2dConfig {
    /// Builds the block with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> ResnetBlock2d {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let norm = |c| {
            GroupNormConfig::new(self.groups, c)
                .with_epsilon(self.eps)
                .init(device)
        };
        ResnetBlock2d {
            norm1: norm(cin),
            conv1: conv3x3([cin, cout], device),
            time_emb_proj: self
                .temb_channels
                .map(|t| LinearConfig::new(t, cout).init(device)),
            norm2: norm(cout),
            conv2: conv3x3([cout, cout], device),
            conv_shortcut: (cin != cout).then(|| conv1x1([cin, cout], device)),
        }
    }
}

impl ResnetBlock2d {
    /// Runs the block; `hook` (U-Net only) sees the residual branch before the add.
    /// `silu_temb` is the time embedding after its SiLU: diffusers' block applies the SiLU
    /// itself, the U-Net here once for all its blocks (the same values; on a GPU one
    /// small kernel a step instead of one a block).
    ///
    /// # Shapes
    /// - `x`: `[batch, in_channels, height, width]`
    /// - `silu_temb`: `[batch, temb_channels]` (or `[1, temb_channels]`, broadcast)
    /// - output: `[batch, out_channels, height, width]`
    pub fn forward(
        &self,
        x: Tensor<4>,
        silu_temb: Option<Tensor<2>>,
        hook: Option<(Site, &mut dyn Controller)>,
    ) -> Tensor<4> {
        let temb = self.time_projection(silu_temb);
        self.forward_projected(x, temb, hook)
    }

    /// The block's projection of the time embedding (`silu_temb` as [`Self::forward`]
    /// takes it), shaped to add to conv1's output; `None` without an embedding or a
    /// projection.
    ///
    /// An up block queues it before concatenating the block's input with its skip: queued
    /// after the concatenation (burn fuses that into an element-wise kernel), its bias add
    /// ran as a kernel of its own on a GPU, one a block.
    ///
    /// # Shapes
    /// - `silu_temb`: `[batch, temb_channels]`; output: `[batch, out_channels, 1, 1]`
    pub fn time_projection(&self, silu_temb: Option<Tensor<2>>) -> Option<Tensor<4>> {
        let (proj, silu_temb) = (self.time_emb_proj.as_ref()?, silu_temb?);
        // `kernels::linear`, not `Linear::forward`: burn's reshapes the bias between the
        // product and its add, which then runs as a kernel of its own, and the
        // projection's output is copied before conv1's epilogue can add it.
        let t = linear(proj, silu_temb);
        let [b, c] = t.dims();
        Some(t.reshape([b, c, 1, 1]))
    }

    /// [`Self::forward`] with the time embedding already projected
    /// ([`Self::time_projection`]).
    ///
    /// # Shapes
    /// - `x`: `[batch, in_channels, height, width]`; `temb`: `[batch, out_channels, 1, 1]`
    /// - output: `[batch, out_channels, height, width]`
    pub fn forward_projected(
        &self,
        x: Tensor<4>,
        temb: Option<Tensor<4>>,
        hook: Option<(Site, &mut dyn Controller)>,
    ) -> Tensor<4> {
        // The time embedding and, where no controller reads the branch before the
        // shortcut ([`Controller::reads_resnet`]), the shortcut are added in the
        // convolutions' fused epilogues on a GPU (`conv2d_add`), not by kernels of their
        // own.
        //
        // The shortcut first: queued between conv2's column gather and its product, its
        // product ended burn's fused stream there, and conv2's epilogue could no longer take
        // the add (one kernel more per block with a shortcut).
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv2d(conv, x.clone()),
            None => x.clone(),
        };
        let normed = group_norm(&self.norm1, x, true);
        let h = match temb {
            Some(t) => conv2d_add(&self.conv1, normed, t),
            None => conv2d(&self.conv1, normed),
        };
        let normed = group_norm(&self.norm2, h, true);
        match hook {
            Some((site, ctrl)) if ctrl.reads_resnet(site) => {
                let h = ctrl.resnet(site, conv2d(&self.conv2, normed));
                shortcut + h
            }
            _ => conv2d_add(&self.conv2, normed, shortcut),
        }
    }
}
