//! Diffusion Cocktail (Ditail): DDIM inversion with condition scaling, then sampling with a
//! target model while the source branch's features are injected (the repository's `METHOD.md`).
//!
//! - [`scheduler`]: DDIM timesteps and alphas from a `scheduler_config.json`;
//! - [`preprocess`]: Pillow-exact resizing and cropping of the content image, [`jpeg`]
//!   Pillow-exact JPEG decoding;
//! - [`prompt`]: prompts as AUTOMATIC1111 reads them (weights, `BREAK`, long prompts);
//! - [`mask`], [`inject`]: where and how features are injected (a U-Net controller);
//! - [`steps`]: single inversion, sampling and text-to-image steps;
//! - [`run`]: the whole method: [`invert`], [`sample`], [`generate`], [`decode`], [`to_rgb`];
//! - [`inversion`]: what [`invert`] makes, reusable for any target;
//! - [`latents`]: saving and loading inversions.

pub mod digest;
pub mod error;
mod finite;
pub mod inject;
pub mod inversion;
pub mod jpeg;
pub mod latents;
pub mod mask;
pub mod model;
pub mod noise;
pub mod preprocess;
pub mod prompt;
pub mod resample;
pub mod run;
pub mod scheduler;
pub mod settings;
pub mod steps;

pub use ditail_models::load::lora::LoraSpec;
pub use error::{PipelineError, Result};
pub use inject::InjectionSites;
pub use inversion::{Inversion, InversionMeta};
pub use mask::Mask;
pub use model::{Model, ModelSpec};
pub use run::{Phase, Progress, decode, generate, invert, sample, to_rgb};
pub use settings::{GenerationSettings, InversionSettings, SamplingSettings};
