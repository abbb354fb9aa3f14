//! A loaded SD1.x model as the pipeline uses it: networks, tokenizer, DDIM schedule, clip
//! skip, and an identity for the metadata of inversions and outputs.

use std::path::Path;

use burn::prelude::*;
use ditail_models::load::hub::{HubOptions, is_hub_id, resolve};
use ditail_models::load::{SingleFileConfigs, load_single_file};
use ditail_models::{LoadOptions, StableDiffusion};

use crate::error::Result;
use crate::scheduler::{Ddim, SchedulerConfig};

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
}

impl Model {
    /// Loads a diffusers folder.
    pub fn load_diffusers(dir: &Path, device: &Device, opts: LoadOptions) -> Result<Self> {
        let sd = StableDiffusion::load_diffusers(dir, device, opts)?;
        let config_path = dir.join("scheduler").join("scheduler_config.json");
        let config = if config_path.is_file() {
            SchedulerConfig::from_json_file(&config_path)?
        } else {
            SchedulerConfig::default()
        };
        Ok(Self {
            sd,
            scheduler: Ddim::new(config),
            clip_skip: 0,
            name: dir.display().to_string(),
        })
    }

    /// Loads a Civitai/A1111 single-file SD1.x checkpoint with SD1.5's configurations and
    /// scheduler (see [`ditail_models::load::load_single_file`]).
    pub fn load_single_file(
        path: &Path,
        device: &Device,
        opts: LoadOptions,
        configs: &SingleFileConfigs,
    ) -> Result<Self> {
        Ok(Self {
            sd: load_single_file(path, device, opts, configs, &[])?,
            scheduler: Ddim::new(SchedulerConfig::default()),
            clip_skip: 0,
            name: path.display().to_string(),
        })
    }

    /// Loads what a user names: a single `.safetensors` file, a diffusers folder, or a
    /// Hugging Face repo id (`org/name[@revision]`, through the standard cache; see
    /// [`ditail_models::load::hub`]).
    pub fn load(spec: &str, device: &Device, opts: LoadOptions) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_file() {
            Self::load_single_file(path, device, opts, &SingleFileConfigs::default())
        } else if !path.exists() && is_hub_id(spec) {
            let half = matches!(
                opts.dtype,
                burn::tensor::FloatDType::F16 | burn::tensor::FloatDType::BF16
            );
            let dir = resolve(spec, &HubOptions::from_env(), half)?;
            let mut model = Self::load_diffusers(&dir, device, opts)?;
            model.name = spec.to_string();
            Ok(model)
        } else {
            Self::load_diffusers(path, device, opts)
        }
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

    /// The VAE's scaling factor.
    pub fn scaling_factor(&self) -> f64 {
        self.sd.vae_config.scaling_factor
    }
}
