//! What loading makes, and how: the whole model ([`StableDiffusion`], with SDXL's
//! [`SecondTextEncoder`]) and the [`LoadOptions`] its weights are read with. The loaders
//! (`diffusers`, `single_file`) and the plans (`plan`) build these; they are defined here,
//! apart from all of them, so that no loader and plan import each other.

use burn::tensor::FloatDType;

use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKl, VaeConfig};

/// How to load weights.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Float type of the model's parameters; file tensors are converted to it on load.
    pub dtype: FloatDType,
}

impl LoadOptions {
    /// Whether half-precision weight files (`.fp16.safetensors`) are the better match.
    pub fn prefers_half(self) -> bool {
        matches!(self.dtype, FloatDType::F16 | FloatDType::BF16)
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: FloatDType::F32,
        }
    }
}

/// SDXL's second text encoder with its tokenizer.
#[derive(Debug)]
pub struct SecondTextEncoder {
    /// Its tokenizer (pads with `!`).
    pub tokenizer: ClipTokenizer,
    /// OpenCLIP ViT-bigG/14 as `CLIPTextModelWithProjection`.
    pub model: ClipTextModel,
    /// Its configuration.
    pub config: ClipTextConfig,
}

/// A whole model: tokenizer, text encoder, VAE and U-Net, and SDXL's second text encoder.
#[derive(Debug)]
pub struct StableDiffusion {
    /// Prompt tokenizer.
    pub tokenizer: ClipTokenizer,
    /// CLIP text encoder.
    pub text_encoder: ClipTextModel,
    /// VAE.
    pub vae: AutoencoderKl,
    /// Denoising U-Net.
    pub unet: UNet2DConditionModel,
    /// The U-Net's configuration.
    pub unet_config: UNetConfig,
    /// The VAE's configuration.
    pub vae_config: VaeConfig,
    /// The text encoder's configuration.
    pub text_config: ClipTextConfig,
    /// SDXL's second text encoder (`None` for SD1.x).
    pub text_encoder_2: Option<SecondTextEncoder>,
}
