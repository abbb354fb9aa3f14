//! Settings of a Ditail run, with METHOD.md's defaults (the reference demo's), validated
//! before any network runs.

use crate::error::{PipelineError, Result};
use crate::mask::Mask;

/// The smallest working size (the shorter side, in pixels): the latents, an eighth of it,
/// are then at least 4 x 4 before the U-Net halves them. Every face takes sizes that are
/// multiples of 8 from here (the web app's field, the CLI's `--size`, the C API's `size`).
pub const MIN_SIZE: u32 = 32;

/// The reference's default negative prompt.
pub const DEFAULT_NEGATIVE: &str = "worst quality, blurry, NSFW";

/// The method's defaults (the reference demo's, METHOD.md), in one place: the settings'
/// constructors, the CLI's flags, the web app's `/api/defaults` and the C API's
/// `*_default_*()` functions all read them.
pub mod defaults {
    /// Condition scaling α of the positive inversion prompt.
    pub const ALPHA: f64 = 2.0;
    /// Condition scaling β of the negative inversion prompt.
    pub const BETA: f64 = 0.5;
    /// Classifier-free guidance ω while sampling.
    pub const OMEGA: f64 = 15.0;
    /// DDIM inversion steps, sampling steps and text-to-image steps.
    pub const STEPS: usize = 50;
    /// Share of sampling steps that inject ResNet features.
    pub const CONV_RATIO: f64 = 0.8;
    /// Share of sampling steps that inject self-attention q/k.
    pub const ATTN_RATIO: f64 = 0.5;
    /// The working size (SD1.x's; SDXL works at 1024).
    pub const SIZE: u32 = 512;
    /// Guidance of `ditail generate` (text to image), diffusers' usual 7.5.
    pub const GENERATION_OMEGA: f64 = 7.5;
}

/// Fails when a prompt holds a NUL character: it is never meant (a binary file pasted into
/// a manifest), and records and tools that read text as C strings would cut the prompt there;
/// or when it is longer than ditail encodes ([`crate::prompt::MAX_CHUNKS`]).
pub fn check_prompt(what: &str, prompt: &str) -> Result<()> {
    if let Some(at) = prompt.find('\0') {
        return Err(PipelineError::Settings(format!(
            "the {what} holds a NUL character (U+0000) at byte {at}: {:?}",
            prompt.chars().take(80).collect::<String>()
        )));
    }
    crate::prompt::check(what, prompt)
}

/// Fails unless the guidance scale is finite and there is at least one step.
fn check_guidance(what: &str, omega: f64, steps: usize) -> Result<()> {
    if !omega.is_finite() {
        return Err(PipelineError::Settings(format!(
            "omega {omega} must be finite"
        )));
    }
    if steps == 0 {
        return Err(PipelineError::Settings(format!(
            "{what} steps must be at least 1"
        )));
    }
    Ok(())
}

/// How the content image is inverted with the source model.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InversionSettings {
    /// Positive inversion prompt (defaults to the sampling prompt).
    pub prompt: String,
    /// Negative inversion prompt.
    pub negative_prompt: String,
    /// Condition scaling α on the positive embedding.
    pub alpha: f64,
    /// Condition scaling β on the negative embedding.
    pub beta: f64,
    /// DDIM inversion steps `N_inv`.
    pub steps: usize,
    /// The image's shorter side is resized to this (then cropped to multiples of 8).
    pub size: u32,
}

impl InversionSettings {
    /// METHOD.md's defaults with the given prompt.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: DEFAULT_NEGATIVE.into(),
            alpha: defaults::ALPHA,
            beta: defaults::BETA,
            steps: defaults::STEPS,
            size: defaults::SIZE,
        }
    }

    /// METHOD.md's defaults with the sampling run's prompts (the inversion prompts
    /// default to the sampling pair).
    pub fn for_sampling(sampling: &SamplingSettings) -> Self {
        Self {
            negative_prompt: sampling.negative_prompt.clone(),
            ..Self::new(sampling.prompt.clone())
        }
    }

    /// Checks ranges and prompts.
    pub fn validate(&self) -> Result<()> {
        check_prompt("inversion prompt", &self.prompt)?;
        check_prompt("inversion negative prompt", &self.negative_prompt)?;
        if !self.alpha.is_finite() || !self.beta.is_finite() {
            return Err(PipelineError::Settings(format!(
                "alpha {} and beta {} must be finite",
                self.alpha, self.beta
            )));
        }
        if self.steps == 0 {
            return Err(PipelineError::Settings(
                "inversion steps must be at least 1".into(),
            ));
        }
        if self.size < MIN_SIZE || !self.size.is_multiple_of(8) {
            return Err(PipelineError::Settings(format!(
                "working size {}: must be a multiple of 8 from {MIN_SIZE}",
                self.size
            )));
        }
        Ok(())
    }
}

/// How the target model samples.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingSettings {
    /// Positive prompt p+.
    pub prompt: String,
    /// Negative prompt p-.
    pub negative_prompt: String,
    /// Classifier-free guidance scale ω.
    pub omega: f64,
    /// Sampling steps `N_spl`.
    pub steps: usize,
    /// Share of sampling steps that inject conv features.
    pub conv_ratio: f64,
    /// Share of sampling steps that inject self-attention q/k.
    pub attn_ratio: f64,
    /// Where to inject.
    pub mask: Mask,
    /// Skip injection entirely (ablation).
    pub no_injection: bool,
    /// Keep the source branch in every step's batch, as the reference does (same result,
    /// more work; for comparisons).
    pub always_batch_source: bool,
    /// Where in the U-Net to inject; `None`: the method's sites for the target's family
    /// ([`crate::inject::InjectionSites::default_for`]).
    pub sites: Option<crate::inject::InjectionSites>,
}

impl SamplingSettings {
    /// METHOD.md's defaults with the given prompt.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: DEFAULT_NEGATIVE.into(),
            omega: defaults::OMEGA,
            steps: defaults::STEPS,
            conv_ratio: defaults::CONV_RATIO,
            attn_ratio: defaults::ATTN_RATIO,
            mask: Mask::Full,
            no_injection: false,
            always_batch_source: false,
            sites: None,
        }
    }

    /// Checks ranges, prompts and the mask.
    pub fn validate(&self) -> Result<()> {
        check_prompt("prompt", &self.prompt)?;
        check_prompt("negative prompt", &self.negative_prompt)?;
        for (name, r) in [
            ("conv ratio", self.conv_ratio),
            ("attn ratio", self.attn_ratio),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(PipelineError::Settings(format!(
                    "{name} {r} is outside [0, 1]"
                )));
            }
        }
        check_guidance("sampling", self.omega, self.steps)?;
        self.mask.validate()
    }

    /// The number of leading sampling steps that inject conv and attention features.
    pub fn window_steps(&self) -> (usize, usize) {
        if self.no_injection {
            return (0, 0);
        }
        let n = self.steps as f64;
        (
            (self.conv_ratio * n).floor() as usize,
            (self.attn_ratio * n).floor() as usize,
        )
    }
}

/// Text-to-image (`generate`): a content made by the source model, or plain generation.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationSettings {
    /// Positive prompt.
    pub prompt: String,
    /// Negative prompt.
    pub negative_prompt: String,
    /// Classifier-free guidance scale.
    pub omega: f64,
    /// DDIM steps.
    pub steps: usize,
    /// Image width in pixels, a positive multiple of 8.
    pub width: u32,
    /// Image height in pixels, a positive multiple of 8.
    pub height: u32,
    /// The noise seed (see [`crate::noise`]: the same seed gives the same image on every
    /// backend).
    pub seed: u64,
}

impl GenerationSettings {
    /// The `ditail generate` defaults with the given prompt: guidance 7.5, 50 steps,
    /// 512 x 512, seed 0.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: DEFAULT_NEGATIVE.into(),
            omega: defaults::GENERATION_OMEGA,
            steps: defaults::STEPS,
            width: defaults::SIZE,
            height: defaults::SIZE,
            seed: 0,
        }
    }

    /// Checks the size, steps, guidance and prompts.
    pub fn validate(&self) -> Result<()> {
        check_prompt("prompt", &self.prompt)?;
        check_prompt("negative prompt", &self.negative_prompt)?;
        let (w, h) = (self.width, self.height);
        if w % 8 != 0 || h % 8 != 0 || w == 0 || h == 0 {
            return Err(PipelineError::Settings(format!(
                "image size {w}x{h} must be positive multiples of 8"
            )));
        }
        check_guidance("generation", self.omega, self.steps)?;
        Ok(())
    }
}
