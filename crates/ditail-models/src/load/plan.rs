//! A model's weights located and checked, with nothing read yet: configurations parsed,
//! file headers validated, architecture detected, LoRA modules matched to weights. Planning
//! is cheap (headers only), so a command can check every model it will need before the
//! first one runs; [`ModelPlan::load`] then reads and converts the tensors.

use burn::prelude::*;

use super::model::{LoadOptions, SecondTextEncoder, StableDiffusion};
use super::{Component, Source, load_sources};
use crate::clip::ClipTextConfig;
use crate::error::Result;
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNetConfig;
use crate::vae::{AutoencoderKl, VaeConfig};

/// One network's tensors under the model's (diffusers) names.
#[derive(Clone, Debug)]
pub struct ComponentPlan {
    /// The tensors, LoRA updates attached.
    pub sources: Vec<(String, Source)>,
    /// The files they come from, for messages.
    pub desc: String,
}

impl ComponentPlan {
    fn load_into<M: burn_store::ModuleSnapshot>(
        self,
        module: &mut M,
        component: Component,
        opts: LoadOptions,
    ) -> Result<()> {
        load_sources(module, component, self.sources, &self.desc, opts.dtype)
    }
}

/// A VAE ready to load.
#[derive(Clone, Debug)]
pub struct VaePlan {
    /// Its configuration.
    pub config: VaeConfig,
    /// Its tensors.
    pub weights: ComponentPlan,
}

impl VaePlan {
    /// Reads and converts the VAE's tensors.
    pub fn load(self, device: &Device, opts: LoadOptions) -> Result<AutoencoderKl> {
        let mut vae = self.config.init(device);
        self.weights.load_into(&mut vae, Component::Vae, opts)?;
        Ok(vae)
    }

    /// Loads the VAE and returns it with its configuration.
    pub fn load_with_config(
        self,
        device: &Device,
        opts: LoadOptions,
    ) -> Result<(AutoencoderKl, VaeConfig)> {
        let config = self.config.clone();
        Ok((self.load(device, opts)?, config))
    }
}

/// SDXL's second text encoder ready to load.
#[derive(Clone, Debug)]
pub struct SecondEncoderPlan {
    /// Its tokenizer (pads with `!`).
    pub tokenizer: ClipTokenizer,
    /// Its configuration (`CLIPTextModelWithProjection`).
    pub config: ClipTextConfig,
    /// Its tensors.
    pub weights: ComponentPlan,
}

/// A whole model (SD1.x or SDXL) ready to load.
#[derive(Clone, Debug)]
pub struct ModelPlan {
    /// The prompt tokenizer (already built: it is small).
    pub tokenizer: ClipTokenizer,
    /// Text encoder configuration.
    pub text_config: ClipTextConfig,
    /// Text encoder tensors.
    pub text: ComponentPlan,
    /// U-Net configuration.
    pub unet_config: UNetConfig,
    /// U-Net tensors.
    pub unet: ComponentPlan,
    /// The VAE.
    pub vae: VaePlan,
    /// SDXL's second text encoder (`None` for SD1.x).
    pub text_2: Option<SecondEncoderPlan>,
}

impl ModelPlan {
    /// Fails unless Ditail can run the model `path` names: the U-Net reads and writes the
    /// VAE's latents (not an inpainting, instruct-pix2pix or depth model) and every U-Net and
    /// VAE tensor has the shape the configuration gives it. Headers only; planners call it,
    /// and whoever swaps the VAE calls it again.
    pub fn check(&self, path: &std::path::Path) -> Result<()> {
        super::fit::check_latent_channels(path, &self.unet_config, &self.vae.config)?;
        super::fit::check_unet(&self.unet_config, &self.unet.sources)?;
        super::fit::check_vae(&self.vae.config, &self.vae.weights.sources)
    }

    /// The family the U-Net's configuration says the model is.
    pub fn family(&self) -> crate::Family {
        self.unet_config.family()
    }

    /// Reads and converts every tensor, network by network.
    pub fn load(self, device: &Device, opts: LoadOptions) -> Result<StableDiffusion> {
        let family = self.family();
        let mut text_encoder = self.text_config.init(device);
        self.text
            .load_into(&mut text_encoder, Component::TextEncoder, opts)?;
        let text_encoder_2 = match self.text_2 {
            Some(plan) => {
                let mut model = plan.config.init(device);
                plan.weights
                    .load_into(&mut model, Component::TextEncoder2, opts)?;
                Some(SecondTextEncoder {
                    tokenizer: plan.tokenizer,
                    model,
                    config: plan.config,
                })
            }
            None => None,
        };
        let vae_config = self.vae.config.clone();
        // SDXL's VAE overflows in half precision unless it says otherwise (fp16-fix).
        let vae_opts = match family == crate::Family::Sdxl && vae_config.force_upcast {
            true => LoadOptions::default(),
            false => opts,
        };
        let vae = self.vae.load(device, vae_opts)?;
        let mut unet = self.unet_config.init(device);
        self.unet.load_into(&mut unet, Component::Unet, opts)?;
        Ok(StableDiffusion {
            tokenizer: self.tokenizer,
            text_encoder,
            vae,
            unet,
            unet_config: self.unet_config,
            vae_config,
            text_config: self.text_config,
            text_encoder_2,
        })
    }
}
