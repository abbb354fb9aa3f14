//! The SD1.x VAE (`AutoencoderKL`): the encoder's posterior mean and the decoder.
//!
//! Ports diffusers' [`autoencoders/autoencoder_kl.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/autoencoders/autoencoder_kl.py)
//! and [`autoencoders/vae.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/autoencoders/vae.py).
//! Ditail encodes deterministically (the posterior mean, never a sample), so the log-variance
//! half of the encoder's output is dropped.

use std::path::Path;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::prelude::*;
use serde_json::Value;

use crate::attention::{Attention, AttentionConfig};
use crate::error::Result;
use crate::json::JsonConfig;
use crate::kernels::conv::{conv2d, conv2d_upscaled};
use crate::kernels::group_norm::group_norm;
use crate::resnet::{ResnetBlock2d, ResnetBlock2dConfig, conv1x1, conv3x3};

/// Configuration of a Stable Diffusion VAE (SD1.x and SDXL have the same structure); field
/// names follow diffusers' `vae/config.json`.
#[derive(Config, Debug)]
pub struct VaeConfig {
    /// Image channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Decoded image channels.
    #[config(default = 3)]
    pub out_channels: usize,
    /// Channels of each encoder block (the decoder mirrors them).
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder block (decoder blocks have one more).
    #[config(default = 2)]
    pub layers_per_block: usize,
    /// Latent channels.
    #[config(default = 4)]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// Multiplier from the VAE's latents to the U-Net's (`z = scaling_factor * mean`).
    #[config(default = 0.18215)]
    pub scaling_factor: f64,
    /// Whether the VAE must run in f32 when the model runs in half precision: SDXL's VAE
    /// overflows in f16 as shipped (`force_upcast: true`); the fp16-fix VAE
    /// (`madebyollin/sdxl-vae-fp16-fix`) says `false`. diffusers' SD1.x pipelines ignore it.
    #[config(default = true)]
    pub force_upcast: bool,
}

/// GroupNorm epsilon of every VAE norm (diffusers hard-codes 1e-6 for the VAE).
const VAE_EPS: f64 = 1e-6;

impl VaeConfig {
    /// Stable Diffusion 1.5's VAE
    /// ([`vae/config.json`](https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/vae/config.json)).
    pub fn sd15() -> Self {
        Self::new(vec![128, 256, 512, 512])
    }

    /// Stable Diffusion XL 1.0's VAE
    /// ([`vae/config.json`](https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/main/vae/config.json)):
    /// SD1.5's structure with its own scaling factor.
    pub fn sdxl() -> Self {
        Self::sd15().with_scaling_factor(0.13025)
    }

    /// Reads a diffusers `vae/config.json`, rejecting unsupported variants by name.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        Self::from_json(&JsonConfig::read(path)?)
    }

    /// See [`VaeConfig::from_json_file`].
    pub fn from_json(j: &JsonConfig) -> Result<Self> {
        let d = Self::sd15();
        let ch: Vec<usize> = j.get("block_out_channels", d.block_out_channels)?;
        for (key, kind) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            let types: Vec<String> = j.get(key, vec![kind.to_string(); ch.len()])?;
            if types.len() != ch.len() || types.iter().any(|t| t != kind) {
                return Err(j.error(format!(
                    "`{key}` must list `{kind}` once per block_out_channels entry, found {types:?}"
                )));
            }
        }
        j.expect("act_fn", Value::from("silu"))?;
        j.expect("use_quant_conv", Value::Bool(true))?;
        j.expect("use_post_quant_conv", Value::Bool(true))?;
        j.expect("mid_block_add_attention", Value::Bool(true))?;
        let config = Self::new(ch)
            .with_in_channels(j.get("in_channels", 3)?)
            .with_out_channels(j.get("out_channels", 3)?)
            .with_layers_per_block(j.get("layers_per_block", 2)?)
            .with_latent_channels(j.get("latent_channels", 4)?)
            .with_norm_num_groups(j.get("norm_num_groups", 32)?)
            .with_scaling_factor(j.get("scaling_factor", 0.18215)?)
            .with_force_upcast(j.get("force_upcast", true)?);
        config.validate().map_err(|r| j.error(r))?;
        Ok(config)
    }

    /// Checks that the numbers describe a buildable network.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.block_out_channels.is_empty() || self.layers_per_block == 0 {
            return Err(
                "block_out_channels must be non-empty and layers_per_block at least 1".into(),
            );
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| self.norm_num_groups == 0 || c == 0 || c % self.norm_num_groups != 0)
        {
            return Err(format!(
                "block_out_channels value {c} is not a positive multiple of norm_num_groups {}",
                self.norm_num_groups
            ));
        }
        Ok(())
    }

    fn resnet(&self, cin: usize, cout: usize, device: &Device) -> ResnetBlock2d {
        ResnetBlock2dConfig::new(cin, cout, self.norm_num_groups, VAE_EPS).init(device)
    }

    fn mid_block(&self, c: usize, device: &Device) -> VaeMidBlock {
        VaeMidBlock {
            resnets: vec![self.resnet(c, c, device), self.resnet(c, c, device)],
            attentions: vec![
                AttentionConfig::new(c, 1, c)
                    .with_qkv_bias(true)
                    .with_norm_groups(Some(self.norm_num_groups))
                    .with_norm_eps(VAE_EPS)
                    .init(device),
            ],
        }
    }

    fn norm(&self, c: usize, device: &Device) -> GroupNorm {
        GroupNormConfig::new(self.norm_num_groups, c)
            .with_epsilon(VAE_EPS)
            .init(device)
    }

    /// Builds the VAE with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> AutoencoderKl {
        let ch = &self.block_out_channels;
        let n = ch.len();
        let layers = self.layers_per_block;
        let latent = self.latent_channels;

        let down_blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                EncoderBlock {
                    resnets: (0..layers)
                        .map(|j| self.resnet(if j == 0 { cin } else { ch[i] }, ch[i], device))
                        .collect(),
                    downsamplers: (i + 1 < n)
                        .then(|| VaeDownsample {
                            // diffusers pads right and bottom by one, then convolves unpadded.
                            conv: Conv2dConfig::new([ch[i], ch[i]], [3, 3])
                                .with_stride([2, 2])
                                .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
                                .init(device),
                        })
                        .into_iter()
                        .collect(),
                }
            })
            .collect();

        let mut prev = ch[n - 1];
        let up_blocks = (0..n)
            .map(|i| {
                let out = ch[n - 1 - i];
                let block = DecoderBlock {
                    resnets: (0..=layers)
                        .map(|j| self.resnet(if j == 0 { prev } else { out }, out, device))
                        .collect(),
                    upsamplers: (i + 1 < n)
                        .then(|| VaeUpsample {
                            conv: conv3x3([out, out], device),
                        })
                        .into_iter()
                        .collect(),
                };
                prev = out;
                block
            })
            .collect();

        AutoencoderKl {
            encoder: VaeEncoder {
                conv_in: conv3x3([self.in_channels, ch[0]], device),
                down_blocks,
                mid_block: self.mid_block(ch[n - 1], device),
                conv_norm_out: self.norm(ch[n - 1], device),
                conv_out: conv3x3([ch[n - 1], 2 * latent], device),
            },
            quant_conv: conv1x1([2 * latent, 2 * latent], device),
            post_quant_conv: conv1x1([latent, latent], device),
            decoder: VaeDecoder {
                conv_in: conv3x3([latent, ch[n - 1]], device),
                mid_block: self.mid_block(ch[n - 1], device),
                up_blocks,
                conv_norm_out: self.norm(ch[0], device),
                conv_out: conv3x3([ch[0], self.out_channels], device),
            },
            latent_channels: latent,
            scaling_factor: self.scaling_factor,
        }
    }
}

/// The encoder's stride-2 downsampler (`downsamplers.0.conv`).
#[derive(Module, Debug)]
pub struct VaeDownsample {
    /// The convolution (asymmetric padding: right and bottom).
    pub conv: Conv2d,
}

/// The decoder's 2x nearest upsampler followed by a convolution (`upsamplers.0.conv`).
#[derive(Module, Debug)]
pub struct VaeUpsample {
    /// The convolution.
    pub conv: Conv2d,
}

/// `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct EncoderBlock {
    /// The ResNets.
    pub resnets: Vec<ResnetBlock2d>,
    /// The downsampler (absent in the last block).
    pub downsamplers: Vec<VaeDownsample>,
}

/// `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// The ResNets.
    pub resnets: Vec<ResnetBlock2d>,
    /// The upsampler (absent in the last block).
    pub upsamplers: Vec<VaeUpsample>,
}

/// `UNetMidBlock2D` of the VAE: ResNet, spatial self-attention, ResNet.
#[derive(Module, Debug)]
pub struct VaeMidBlock {
    /// The two ResNets.
    pub resnets: Vec<ResnetBlock2d>,
    /// The single-head attention between them.
    pub attentions: Vec<Attention>,
}

impl VaeMidBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.resnets[0].forward(x, None, None);
        let x = self.attentions[0].forward_spatial(x);
        self.resnets[1].forward(x, None, None)
    }
}

/// The VAE encoder.
#[derive(Module, Debug)]
pub struct VaeEncoder {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// The down path.
    pub down_blocks: Vec<EncoderBlock>,
    /// The middle block.
    pub mid_block: VaeMidBlock,
    /// Final GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution to mean and log-variance.
    pub conv_out: Conv2d,
}

/// The VAE decoder.
#[derive(Module, Debug)]
pub struct VaeDecoder {
    /// Input convolution from the latents.
    pub conv_in: Conv2d,
    /// The middle block.
    pub mid_block: VaeMidBlock,
    /// The up path.
    pub up_blocks: Vec<DecoderBlock>,
    /// Final GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution to image channels.
    pub conv_out: Conv2d,
}

/// The SD1.x VAE.
#[derive(Module, Debug)]
pub struct AutoencoderKl {
    /// The encoder.
    pub encoder: VaeEncoder,
    /// 1x1 convolution on the encoder's moments.
    pub quant_conv: Conv2d,
    /// 1x1 convolution on the latents before decoding.
    pub post_quant_conv: Conv2d,
    /// The decoder.
    pub decoder: VaeDecoder,
    /// Latent channels.
    pub latent_channels: usize,
    /// `scaling_factor` from the config (0.18215 for SD1.x).
    pub scaling_factor: f64,
}

impl AutoencoderKl {
    /// The posterior mean of `image` (unscaled: multiply by `scaling_factor` for the U-Net).
    ///
    /// # Shapes
    /// - `image`: `[batch, 3, height, width]` in [-1, 1], sides multiples of 8
    /// - output: `[batch, latent_channels, height / 8, width / 8]`
    pub fn encode_mean(&self, image: Tensor<4>) -> Tensor<4> {
        let e = &self.encoder;
        let mut x = conv2d(&e.conv_in, image);
        for block in &e.down_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None, None);
            }
            for down in &block.downsamplers {
                x = conv2d(&down.conv, x);
            }
        }
        x = e.mid_block.forward(x);
        x = conv2d(&e.conv_out, group_norm(&e.conv_norm_out, x, true));
        let moments = conv2d(&self.quant_conv, x);
        moments.narrow(1, 0, self.latent_channels)
    }

    /// Decodes unscaled latents (divide the U-Net's by `scaling_factor` first) to an image
    /// in roughly [-1, 1].
    ///
    /// # Shapes
    /// - `latents`: `[batch, latent_channels, h, w]`
    /// - output: `[batch, 3, 8 * h, 8 * w]`
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let d = &self.decoder;
        let mut x = conv2d(&d.conv_in, conv2d(&self.post_quant_conv, latents));
        x = d.mid_block.forward(x);
        for block in &d.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None, None);
            }
            for up in &block.upsamplers {
                // On a GPU the enlargement happens in the convolution's gather.
                x = conv2d_upscaled(&up.conv, x, 2);
            }
        }
        conv2d(&d.conv_out, group_norm(&d.conv_norm_out, x, true))
    }
}
