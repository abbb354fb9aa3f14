//! What a job is asked to do, as plain values: how each model is modified
//! ([`ModelOptions`]), Ditail's numbers ([`DitailOptions`]) and text-to-image numbers
//! ([`GenerationOptions`]), with the method's defaults (`ditail_pipeline::settings::defaults`)
//! and their checks. With the `clap` feature they are the command line's flag groups, so
//! a flag, its doc and its default are written once.

use std::path::PathBuf;

use ditail_models::Family;
use ditail_models::load::lora::LoraSpec;
use ditail_pipeline::settings::{DEFAULT_NEGATIVE, MIN_SIZE, defaults};
use ditail_pipeline::{
    GenerationSettings, InjectionSites, InversionSettings, Mask, ModelSpec, SamplingSettings,
};

use crate::{Context, Result, refuse};

/// How a model is modified at load: LoRAs, VAE, clip skip.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Model options"))]
pub struct ModelOptions {
    /// A LoRA merged into the (target) model, FILE or FILE:SCALE [scale default 0.7];
    /// repeatable.
    #[cfg_attr(feature = "clap", arg(long = "lora", value_name = "FILE[:SCALE]"))]
    pub loras: Vec<String>,
    /// A VAE to use instead of the model's: a VAE .safetensors, a diffusers folder or a repo id.
    #[cfg_attr(feature = "clap", arg(long, value_name = "MODEL"))]
    pub vae: Option<String>,
    /// Text-encoder layers to skip, A1111 style: 1 = none (the default), 2 = penultimate.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=12)))]
    pub clip_skip: u32,
    /// A folder of textual-inversion embeddings (.safetensors) that prompts name, A1111
    /// style ("EasyNegative") or ComfyUI style ("embedding:EasyNegative"); repeatable
    /// [default: the `embeddings` folder of the A1111 or ComfyUI installation the model
    /// file is in].
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub embeddings: Vec<PathBuf>,
}

impl ModelOptions {
    /// A spec for `model` with these options' VAE, clip skip and embeddings, and their
    /// LoRAs when `with_loras` (a source inverts without them, as the reference does).
    pub fn spec(&self, model: &str, with_loras: bool) -> Result<ModelSpec> {
        let loras = if with_loras {
            self.loras
                .iter()
                .map(|l| parse_lora(l))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(ModelSpec {
            model: model.to_string(),
            loras,
            vae: self.vae.clone(),
            clip_skip: self.clip_skip as usize,
            embeddings: self.embeddings.clone(),
        })
    }
}

/// Ditail's numbers (defaults: the reference demo's, METHOD.md).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Ditail options"))]
pub struct DitailOptions {
    /// Negative prompt p-.
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT", default_value = DEFAULT_NEGATIVE))]
    pub negative_prompt: String,
    /// Positive prompt for inversion [default: --prompt].
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT"))]
    pub inv_prompt: Option<String>,
    /// Negative prompt for inversion [default: --negative-prompt].
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT"))]
    pub inv_negative_prompt: Option<String>,
    /// Condition scaling of the positive inversion prompt.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::ALPHA))]
    pub alpha: f64,
    /// Condition scaling of the negative inversion prompt.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::BETA))]
    pub beta: f64,
    /// Classifier-free guidance scale while sampling.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::OMEGA))]
    pub omega: f64,
    /// DDIM inversion steps.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = defaults::STEPS))]
    pub inv_steps: usize,
    /// DDIM sampling steps (each must be an inversion timestep).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = defaults::STEPS))]
    pub steps: usize,
    /// Share of sampling steps that inject ResNet features.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::CONV_RATIO))]
    pub conv_ratio: f64,
    /// Share of sampling steps that inject self-attention q/k.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::ATTN_RATIO))]
    pub attn_ratio: f64,
    /// Where to inject: full, left, right, top, bottom, or a grayscale PNG (white = inject).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "MASK", default_value = "full")
    )]
    pub mask: String,
    /// Inject nothing (ablation: plain inversion + sampling).
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_injection: bool,
    /// Where in the U-Net to inject, as comma-separated diffusers module paths (ResNets
    /// `up_blocks.1.resnets.1`, self-attention `up_blocks.1.attentions.2.transformer_blocks.0`);
    /// default: the method's sites for the target's family (SD1.x: 1 ResNet + 8 attention
    /// layers; SDXL: 1 + 4).
    #[cfg_attr(feature = "clap", arg(long, value_name = "LIST"))]
    pub sites: Option<String>,
    /// The image's shorter side is resized to N pixels (then cropped to multiples of 8);
    /// default: the target's family's native size, 512 (SD1.x) or 1024 (SDXL).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub size: Option<u32>,
}

impl Default for DitailOptions {
    fn default() -> Self {
        Self {
            negative_prompt: DEFAULT_NEGATIVE.into(),
            inv_prompt: None,
            inv_negative_prompt: None,
            alpha: defaults::ALPHA,
            beta: defaults::BETA,
            omega: defaults::OMEGA,
            inv_steps: defaults::STEPS,
            steps: defaults::STEPS,
            conv_ratio: defaults::CONV_RATIO,
            attn_ratio: defaults::ATTN_RATIO,
            mask: "full".into(),
            no_injection: false,
            sites: None,
            size: None,
        }
    }
}

impl DitailOptions {
    /// The pipeline's inversion and sampling settings for a transfer described by
    /// `prompt`, validated (the inversion's size is the SD1.x size until the target's
    /// family is known: see [`crate::Job`]).
    pub fn settings(&self, prompt: &str) -> Result<(InversionSettings, SamplingSettings)> {
        let mask = Mask::parse(&self.mask).with_context(|| format!("--mask {}", self.mask))?;
        let sampling = SamplingSettings {
            prompt: prompt.to_string(),
            negative_prompt: self.negative_prompt.clone(),
            omega: self.omega,
            steps: self.steps,
            conv_ratio: self.conv_ratio,
            attn_ratio: self.attn_ratio,
            mask,
            no_injection: self.no_injection,
            always_batch_source: false,
            sites: self
                .sites
                .as_deref()
                .map(InjectionSites::parse)
                .transpose()
                .with_context(|| format!("--sites {}", self.sites.as_deref().unwrap_or("")))?,
        };
        let inversion = InversionSettings {
            prompt: self
                .inv_prompt
                .clone()
                .unwrap_or_else(|| prompt.to_string()),
            negative_prompt: self
                .inv_negative_prompt
                .clone()
                .unwrap_or_else(|| self.negative_prompt.clone()),
            alpha: self.alpha,
            beta: self.beta,
            steps: self.inv_steps,
            size: self.size.unwrap_or(defaults::SIZE),
        };
        // Sampling first: its prompt is the one given (the inversion's defaults to it).
        sampling.validate()?;
        inversion.validate()?;
        Ok((inversion, sampling))
    }

    /// The numbers of the content a source generates from a prompt for this transfer: the
    /// transfer's negative prompt, steps and size (default: the family's, as the
    /// transfer's), text-to-image guidance.
    pub fn content_generation(&self) -> GenerationOptions {
        GenerationOptions {
            negative: self.negative_prompt.clone(),
            omega: defaults::GENERATION_OMEGA,
            steps: self.steps,
            size: self.size,
        }
    }
}

/// Text-to-image numbers.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct GenerationOptions {
    /// Negative prompt.
    #[cfg_attr(feature = "clap", arg(long = "negative-prompt", value_name = "TEXT",
          default_value = DEFAULT_NEGATIVE))]
    pub negative: String,
    /// Classifier-free guidance scale.
    #[cfg_attr(feature = "clap", arg(long = "omega", default_value_t = defaults::GENERATION_OMEGA))]
    pub omega: f64,
    /// DDIM steps.
    #[cfg_attr(feature = "clap", arg(long = "steps", value_name = "N", default_value_t = defaults::STEPS))]
    pub steps: usize,
    /// Image side in pixels (square; a multiple of 8); default: the model's family's native
    /// size, 512 (SD1.x) or 1024 (SDXL).
    #[cfg_attr(feature = "clap", arg(long = "size", value_name = "N"))]
    pub size: Option<u32>,
}

impl GenerationOptions {
    /// Checks the numbers (before any model loads).
    pub fn check(&self) -> Result<()> {
        if let Some(size) = self.size
            && (size < MIN_SIZE || !size.is_multiple_of(8))
        {
            refuse!("--size {size}: must be a multiple of 8 from {MIN_SIZE}");
        }
        if self.steps == 0 || self.steps > 1000 {
            refuse!("--steps {}: must be between 1 and 1000", self.steps);
        }
        if !self.omega.is_finite() {
            refuse!("--omega {}: must be a finite number", self.omega);
        }
        Ok(())
    }

    /// The image's side for a model of `family`.
    pub fn size_for(&self, family: Family) -> u32 {
        self.size.unwrap_or(family.native_size())
    }

    /// The pipeline's settings for a square image of these numbers with a model of `family`.
    pub fn settings(&self, prompt: &str, seed: u64, family: Family) -> GenerationSettings {
        let size = self.size_for(family);
        GenerationSettings {
            negative_prompt: self.negative.clone(),
            omega: self.omega,
            steps: self.steps,
            width: size,
            height: size,
            seed,
            ..GenerationSettings::new(prompt)
        }
    }
}

/// The LoRA scale when none is given (the reference's).
pub const DEFAULT_LORA_SCALE: f32 = 0.7;

/// Parses `FILE` or `FILE:SCALE` (the scale is taken from after the last `:` only when it
/// reads as a number, so Windows paths like `C:\loras\x.safetensors` work).
pub fn parse_lora(spec: &str) -> Result<LoraSpec> {
    let (path, scale) = match spec.rsplit_once(':') {
        Some((path, scale)) if !path.is_empty() && scale.parse::<f32>().is_ok() => {
            (path, scale.parse::<f32>().expect("checked"))
        }
        _ => (spec, DEFAULT_LORA_SCALE),
    };
    if !scale.is_finite() {
        refuse!("--lora {spec}: the scale must be a finite number");
    }
    let path = std::path::PathBuf::from(path);
    if path.is_dir() {
        refuse!(
            "--lora {spec}: {} is a folder, not a LoRA file",
            path.display()
        );
    }
    if let Err(e) = std::fs::metadata(&path) {
        // Missing, a dangling link or a link loop: the OS says which.
        refuse!("--lora {spec}: cannot read {}: {e}", path.display());
    }
    if !path.is_file() {
        refuse!("--lora {spec}: {} is not a regular file", path.display());
    }
    Ok(LoraSpec { path, scale })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_without_a_size_takes_the_familys_and_a_given_size_wins() {
        let mut o = DitailOptions::default().content_generation();
        assert_eq!(o.size, None);
        let sd1 = o.settings("p", 1, Family::Sd1);
        let sdxl = o.settings("p", 1, Family::Sdxl);
        assert_eq!((sd1.width, sd1.height), (512, 512));
        assert_eq!((sdxl.width, sdxl.height), (1024, 1024));
        o.size = Some(64);
        assert_eq!(o.settings("p", 1, Family::Sdxl).width, 64);
        o.size = Some(60);
        assert!(o.check().unwrap_err().to_string().contains("--size 60"));
    }
}
