//! A loaded SD1.x model as the pipeline uses it: networks, tokenizer, DDIM schedule, clip
//! skip, and an identity for the metadata of inversions and outputs.

use burn::prelude::*;
use ditail_models::load::lora::LoraSpec;
use ditail_models::load::{Location, ModelPlan, locate_model, plan_model, plan_vae_spec};
use ditail_models::{LoadOptions, StableDiffusion};

use crate::error::{PipelineError, Result};
use crate::scheduler::{Ddim, SchedulerConfig};

/// A model as a user names it: checkpoint, LoRAs, VAE override and clip skip.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// A single `.safetensors` file, a diffusers folder or a hub repo id.
    pub model: String,
    /// LoRAs merged into the weights at load, each with its scale.
    pub loras: Vec<LoraSpec>,
    /// A VAE to use instead of the model's own (file, folder or repo id).
    pub vae: Option<String>,
    /// Clip skip as A1111 and Civitai count it: the text encoder's output is that of its
    /// `clip_skip`-th layer from the end (1: the last layer, no skip; 2: the penultimate,
    /// what many anime models expect).
    pub clip_skip: usize,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self::new("")
    }
}

impl ModelSpec {
    /// The model alone: no LoRA, its own VAE, clip skip 1 (the last layer).
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            loras: Vec::new(),
            vae: None,
            clip_skip: 1,
        }
    }

    /// The text encoder layers to drop from the end (`clip_skip - 1`), checked.
    fn layers_skipped(&self) -> Result<usize> {
        match self.clip_skip {
            0 => Err(PipelineError::Settings(
                "clip skip 0: it counts from 1 (1 uses the text encoder's last layer, 2 the one \
                 before, as in A1111)"
                    .into(),
            )),
            n => Ok(n - 1),
        }
    }

    /// Resolves and checks everything that can be checked without reading weights: the
    /// model and VAE exist (hub ids are fetched into the cache), file headers are valid,
    /// the architecture is SD1.x, every LoRA key matches a weight.
    pub fn plan(&self, opts: LoadOptions) -> Result<(Location, ModelPlan)> {
        self.layers_skipped()?;
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
    sd: StableDiffusion,
    scheduler: Ddim,
    clip_skip: usize,
    name: String,
    location: Location,
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

    /// A model from networks already in memory (built or changed by the caller), with
    /// SD1.5's schedule and clip skip 1; `name` is what metadata records.
    pub fn from_networks(sd: StableDiffusion, name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            sd,
            scheduler: Ddim::new(SchedulerConfig::default()),
            clip_skip: 1,
            location: Location::Folder(name.clone().into()),
            name,
        }
    }

    /// The networks and tokenizer.
    pub fn sd(&self) -> &StableDiffusion {
        &self.sd
    }

    /// The networks, to change (e.g. to scale a layer for a test or an experiment).
    pub fn sd_mut(&mut self) -> &mut StableDiffusion {
        &mut self.sd
    }

    /// The noise schedule (from `scheduler/scheduler_config.json`, else SD1.5's).
    pub fn scheduler(&self) -> &Ddim {
        &self.scheduler
    }

    /// Clip skip as A1111 counts it (see [`ModelSpec::clip_skip`]).
    pub fn clip_skip(&self) -> usize {
        self.clip_skip
    }

    /// How the model is named in metadata (path or hub id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its files are.
    pub fn location(&self) -> &Location {
        &self.location
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
        Ok(self
            .sd
            .text_encoder
            .forward(ids, self.clip_skip.saturating_sub(1))?)
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
