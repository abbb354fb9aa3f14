//! The U-Net's down, mid and up blocks, each with or without cross-attention.
//!
//! Ports diffusers' `CrossAttnDownBlock2D`, `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `UpBlock2D`, `CrossAttnUpBlock2D`, `Downsample2D` and `Upsample2D`
//! ([`unets/unet_2d_blocks.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/unets/unet_2d_blocks.py)).
//! One struct serves a block with and without attention: a plain block has no `attentions`.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

use super::time_table::StepTime;
use crate::attention::{Transformer2dConfig, Transformer2dModel};
use crate::cross_kv::CrossContext;
use crate::hook::{Controller, Site, Stage};
use crate::kernels::conv::{conv2d, conv2d_upscaled};
use crate::ops::resize_nearest;
use crate::resnet::{ResnetBlock2d, ResnetBlock2dConfig, conv3x3};

/// Shared settings of the blocks of one U-Net.
#[derive(Clone, Debug)]
pub(crate) struct BlockShape {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub cross_dim: usize,
    pub linear_projection: bool,
}

/// Heads and depth (transformer blocks) of one block's `Transformer2DModel`s.
pub(crate) type AttnShape = (usize, usize);

impl BlockShape {
    fn resnet(&self, cin: usize, cout: usize, device: &Device) -> ResnetBlock2d {
        ResnetBlock2dConfig::new(cin, cout, self.groups, self.eps)
            .with_temb_channels(Some(self.temb))
            .init(device)
    }

    fn transformer(
        &self,
        channels: usize,
        (heads, depth): AttnShape,
        device: &Device,
    ) -> Transformer2dModel {
        Transformer2dConfig::new(channels, heads, self.cross_dim, self.groups)
            .with_layers(depth)
            .with_linear_projection(self.linear_projection)
            .init(device)
    }
}

/// `Downsample2D`: a stride-2 3x3 convolution (padding 1).
#[derive(Module, Debug)]
pub struct Downsample2d {
    /// The convolution.
    pub conv: Conv2d,
}

/// `Upsample2D`: nearest-neighbour resize, then a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2d {
    /// The convolution.
    pub conv: Conv2d,
}

impl Upsample2d {
    /// # Shapes
    /// - `x`: `[batch, channels, h, w]`; output: `[batch, channels, size[0], size[1]]`.
    pub fn forward(&self, x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        match size == [2 * h, 2 * w] {
            // On a GPU the enlargement happens in the convolution's gather.
            true => conv2d_upscaled(&self.conv, x, 2),
            false => conv2d(&self.conv, resize_nearest(x, size)),
        }
    }
}

/// A down block: ResNets, each followed by a transformer when the block has cross-attention,
/// and a downsampler except in the last block.
#[derive(Module, Debug)]
pub struct DownBlock {
    /// The ResNets.
    pub resnets: Vec<ResnetBlock2d>,
    /// One transformer per ResNet (`CrossAttnDownBlock2D`) or none (`DownBlock2D`).
    pub attentions: Vec<Transformer2dModel>,
    /// The stride-2 convolution (absent in the last block).
    pub downsamplers: Vec<Downsample2d>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shape: &BlockShape,
        cin: usize,
        cout: usize,
        layers: usize,
        heads: Option<AttnShape>,
        downsample: bool,
        device: &Device,
    ) -> Self {
        Self {
            resnets: (0..layers)
                .map(|j| shape.resnet(if j == 0 { cin } else { cout }, cout, device))
                .collect(),
            attentions: heads
                .map(|h| {
                    (0..layers)
                        .map(|_| shape.transformer(cout, h, device))
                        .collect()
                })
                .unwrap_or_default(),
            downsamplers: downsample
                .then(|| Downsample2d {
                    conv: Conv2dConfig::new([cout, cout], [3, 3])
                        .with_stride([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(device),
                })
                .into_iter()
                .collect(),
        }
    }

    /// Runs the block and appends each output that the up path will take as a skip.
    pub(crate) fn forward(
        &self,
        mut x: Tensor<4>,
        time: &StepTime<'_>,
        context: CrossContext<'_>,
        block: u8,
        ctrl: &mut dyn Controller,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let layer = j as u8;
            let site = Site::Resnet {
                stage: Stage::Down,
                block,
                layer,
            };
            x = resnet_at(resnet, x, time, site, ctrl);
            if let Some(attn) = self.attentions.get(j) {
                let site = Site::SelfAttn {
                    stage: Stage::Down,
                    block,
                    layer,
                    depth: 0,
                };
                x = attn.forward(x, context, site, ctrl);
            }
            skips.push(x.clone());
        }
        for down in &self.downsamplers {
            x = conv2d(&down.conv, x);
            skips.push(x.clone());
        }
        x
    }
}

/// `resnet` at `site` over `x`, adding its projection of the step's time embedding.
fn resnet_at(
    resnet: &ResnetBlock2d,
    x: Tensor<4>,
    time: &StepTime<'_>,
    site: Site,
    ctrl: &mut dyn Controller,
) -> Tensor<4> {
    let temb = time.projection(site, resnet);
    resnet.forward_projected(x, temb, Some((site, ctrl)))
}

/// `UNetMidBlock2DCrossAttn`: ResNet, transformer, ResNet.
#[derive(Module, Debug)]
pub struct MidBlock {
    /// The two ResNets.
    pub resnets: Vec<ResnetBlock2d>,
    /// The transformer between them.
    pub attentions: Vec<Transformer2dModel>,
}

impl MidBlock {
    pub(crate) fn new(
        shape: &BlockShape,
        channels: usize,
        heads: AttnShape,
        device: &Device,
    ) -> Self {
        Self {
            resnets: (0..2)
                .map(|_| shape.resnet(channels, channels, device))
                .collect(),
            attentions: vec![shape.transformer(channels, heads, device)],
        }
    }

    pub(crate) fn forward(
        &self,
        x: Tensor<4>,
        time: &StepTime<'_>,
        context: CrossContext<'_>,
        ctrl: &mut dyn Controller,
    ) -> Tensor<4> {
        let site = |layer| Site::Resnet {
            stage: Stage::Mid,
            block: 0,
            layer,
        };
        let mut x = resnet_at(&self.resnets[0], x, time, site(0), ctrl);
        for (j, (attn, resnet)) in self.attentions.iter().zip(&self.resnets[1..]).enumerate() {
            let layer = j as u8;
            let attn_site = Site::SelfAttn {
                stage: Stage::Mid,
                block: 0,
                layer,
                depth: 0,
            };
            x = attn.forward(x, context, attn_site, ctrl);
            x = resnet_at(resnet, x, time, site(layer + 1), ctrl);
        }
        x
    }
}

/// An up block: ResNets over the features concatenated with the down path's skips, each
/// followed by a transformer when the block has cross-attention, and an upsampler except in
/// the last block.
#[derive(Module, Debug)]
pub struct UpBlock {
    /// The ResNets (`layers_per_block + 1`).
    pub resnets: Vec<ResnetBlock2d>,
    /// One transformer per ResNet (`CrossAttnUpBlock2D`) or none (`UpBlock2D`).
    pub attentions: Vec<Transformer2dModel>,
    /// The upsampler (absent in the last block).
    pub upsamplers: Vec<Upsample2d>,
}

/// Channel counts of one up block.
pub(crate) struct UpChannels {
    /// Output of the previous up block.
    pub prev: usize,
    /// This block's output.
    pub out: usize,
    /// The channels of the deepest skip this block consumes.
    pub skip_in: usize,
}

impl UpBlock {
    pub(crate) fn new(
        shape: &BlockShape,
        ch: UpChannels,
        layers: usize,
        heads: Option<AttnShape>,
        upsample: bool,
        device: &Device,
    ) -> Self {
        let n = layers + 1;
        Self {
            resnets: (0..n)
                .map(|j| {
                    let skip = if j == n - 1 { ch.skip_in } else { ch.out };
                    let cin = if j == 0 { ch.prev } else { ch.out };
                    shape.resnet(cin + skip, ch.out, device)
                })
                .collect(),
            attentions: heads
                .map(|h| {
                    (0..n)
                        .map(|_| shape.transformer(ch.out, h, device))
                        .collect()
                })
                .unwrap_or_default(),
            upsamplers: upsample
                .then(|| Upsample2d {
                    conv: conv3x3([ch.out, ch.out], device),
                })
                .into_iter()
                .collect(),
        }
    }

    /// Runs the block, popping its skips; `upsample_to` is the spatial size of the next
    /// block's first skip (diffusers resizes to it, which is a plain 2x upsample whenever
    /// the latent size is a multiple of 8).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        mut x: Tensor<4>,
        time: &StepTime<'_>,
        context: CrossContext<'_>,
        block: u8,
        ctrl: &mut dyn Controller,
        skips: &mut Vec<Tensor<4>>,
        upsample_to: Option<[usize; 2]>,
    ) -> Tensor<4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let layer = j as u8;
            let skip = skips
                .pop()
                .expect("the down path provides one skip per up ResNet");
            let site = Site::Resnet {
                stage: Stage::Up,
                block,
                layer,
            };
            // The time projection before the concatenation (see `time_projection`).
            let temb = time.projection(site, resnet);
            x = Tensor::cat(vec![x, skip], 1);
            x = resnet.forward_projected(x, temb, Some((site, &mut *ctrl)));
            if let Some(attn) = self.attentions.get(j) {
                let site = Site::SelfAttn {
                    stage: Stage::Up,
                    block,
                    layer,
                    depth: 0,
                };
                x = attn.forward(x, context, site, ctrl);
            }
        }
        if let (Some(up), Some(size)) = (self.upsamplers.first(), upsample_to) {
            x = up.forward(x, size);
        }
        x
    }
}
