//! A loaded SD1.x model as the pipeline uses it: networks, tokenizer, DDIM schedule, clip
//! skip, and an identity for the metadata of inversions and outputs.

use burn::prelude::*;
use ditail_models::load::lora::LoraSpec;
use ditail_models::load::{Location, ModelPlan, locate_model, plan_model, plan_vae_spec};
use ditail_models::{LoadOptions, StableDiffusion};

use crate::error::Result;
use crate::scheduler::{Ddim, SchedulerConfig};

/// A model as a user names it: checkpoint, LoRAs, VAE override and clip skip.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelSpec {
    /// A single `.safetensors` file, a diffusers folder or a hub repo id.
    pub model: String,
    /// LoRAs merged into the weights at load, each with its scale.
    pub loras: Vec<LoraSpec>,
    /// A VAE to use instead of the model's own (file, folder or repo id).
    pub vae: Option<String>,
    /// Layers of the text encoder to skip (0: none; 1: A1111's "Clip skip: 2").
    pub clip_skip: usize,
}

impl ModelSpec {
    /// The model alone: no LoRA, its own VAE, no clip skip.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Resolves and checks everything that can be checked without reading weights: the
    /// model and VAE exist (hub ids are fetched into the cache), file headers are valid,
    /// the architecture is SD1.x, every LoRA key matches a weight.
    pub fn plan(&self, opts: LoadOptions) -> Result<(Location, ModelPlan)> {
        let location = locate_model(&self.model, opts)?;
        let mut plan = plan_model(&location, opts, &self.loras)?;
        if let Some(vae) = &self.vae {
            plan.vae = plan_vae_spec(vae, opts)?;
        }
        Ok((location, plan))
    }
}

/// The DDIM schedule of a located model: its `scheduler/scheduler_config.json` when it is
/// a diffusers folder that has one, else SD1.5's.
pub fn scheduler_config(location: &Location) -> Result<SchedulerConfig> {
    let path = location
        .folder()
        .map(|dir| dir.join("scheduler").join("scheduler_config.json"));
    Ok(match path {
        Some(path) if path.is_file() => SchedulerConfig::from_json_file(&path)?,
        _ => SchedulerConfig::default(),
    })
}

/// One checkpoint, ready to run.
#[derive(Debug)]
pub struct Model {
    /// The networks and tokenizer.
    pub sd: StableDiffusion,
    /// The noise schedule (from `scheduler/scheduler_config.json`, else SD1.5's).
    pub scheduler: Ddim,
    /// Layers of the text encoder to skip (0: none; 1: A1111's "Clip skip: 2").
    pub clip_skip: usize,
    /// How the model is named in metadata (path or hub id).
    pub name: String,
    /// Where its files are.
    pub location: Location,
}

impl Model {
    /// Loads what a user names (see [`ModelSpec`]): the checkpoint (single file, diffusers
    /// folder or hub id, see [`ditail_models::load::locate_model`]) with its LoRAs merged,
    /// then the VAE override if any.
    pub fn load(spec: &ModelSpec, device: &Device, opts: LoadOptions) -> Result<Self> {
        let (location, plan) = spec.plan(opts)?;
        let scheduler = Ddim::new(scheduler_config(&location)?);
        Ok(Self {
            sd: plan.load(device, opts)?,
            scheduler,
            clip_skip: spec.clip_skip,
            name: spec.model.clone(),
            location,
        })
    }

    /// `E_M(p)`: the text encoder's output for a prompt.
    ///
    /// # Shapes
    /// - output: `[1, 77, hidden]`
    pub fn encode_prompt(&self, prompt: &str, device: &Device) -> Result<Tensor<3>> {
        let ids = self.sd.tokenizer.encode(prompt)?;
        let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
        let n = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), device);
        Ok(self.sd.text_encoder.forward(ids, self.clip_skip)?)
    }

    /// The float type of the weights; inputs are cast to it.
    pub fn dtype(&self) -> burn::tensor::DType {
        self.sd.unet.conv_in.weight.val().dtype()
    }

    /// The VAE's scaling factor.
    pub fn scaling_factor(&self) -> f64 {
        self.sd.vae_config.scaling_factor
    }
}
