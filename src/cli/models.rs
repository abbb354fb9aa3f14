//! Models as the commands use them: specs built from flags, checked up front, loaded on
//! demand and kept while the next job needs them.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::tensor::FloatDType;
use ditail::models::LoadOptions;
use ditail::models::load::lora::LoraSpec;
use ditail::models::{ClipTokenizer, Family};
use ditail::pipeline::model::scheduler_config;
use ditail::pipeline::prompt::{self, Embeddings};
use ditail::pipeline::scheduler::Ddim;
use ditail::pipeline::{Model, ModelSpec};

use super::args::ModelFlags;
use super::device::Compute;
use super::metadata::{ModelRecord, model_record};
use super::ui::Ui;

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
        bail!("--lora {spec}: the scale must be a finite number");
    }
    let path = std::path::PathBuf::from(path);
    if path.is_dir() {
        bail!(
            "--lora {spec}: {} is a folder, not a LoRA file",
            path.display()
        );
    }
    if let Err(e) = std::fs::metadata(&path) {
        // Missing, a dangling link or a link loop: the OS says which.
        bail!("--lora {spec}: cannot read {}: {e}", path.display());
    }
    if !path.is_file() {
        bail!("--lora {spec}: {} is not a regular file", path.display());
    }
    Ok(LoraSpec { path, scale })
}

/// A spec for `model` with the flags' VAE and clip skip, and LoRAs when `with_loras`.
pub fn spec(model: &str, flags: &ModelFlags, with_loras: bool) -> Result<ModelSpec> {
    let loras = if with_loras {
        flags
            .loras
            .iter()
            .map(|l| parse_lora(l))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    Ok(ModelSpec {
        model: model.to_string(),
        loras,
        vae: flags.vae.clone(),
        clip_skip: flags.clip_skip as usize,
        embeddings: flags.embeddings.clone(),
    })
}

/// A model checked without loading it.
#[derive(Clone, Debug)]
pub struct Checked {
    /// Its DDIM schedule.
    pub scheduler: Ddim,
    /// What outputs record about it.
    pub record: ModelRecord,
    /// The channels of its latents (its U-Net's input).
    pub latent_channels: usize,
    /// SD1.x or SDXL.
    pub family: ditail::models::Family,
    /// Its U-Net's configuration (which injection sites it has).
    pub unet: ditail::models::UNetConfig,
    /// The textual-inversion embeddings its prompts may name, and their folders.
    pub embeddings: Option<(Vec<std::path::PathBuf>, Arc<Embeddings>)>,
}

/// Checks a spec: the model and VAE exist, headers parse, the architecture is SD1.x or
/// SDXL and every LoRA key matches; hashes its files for the outputs' metadata.
pub fn check(spec: &ModelSpec, compute: &Compute) -> Result<Checked> {
    let opts = LoadOptions {
        dtype: compute.dtype,
    };
    let (location, plan) = spec
        .plan(opts)
        .with_context(|| format!("model {}", spec.model))?;
    let scheduler = Ddim::new(scheduler_config(&location)?);
    let record = model_record(spec, &location)?;
    let dirs = spec.embedding_dirs(&location);
    let embeddings = if dirs.is_empty() {
        None
    } else {
        let db = Embeddings::read_dirs(&dirs).context("the embeddings folders")?;
        Some((dirs, Arc::new(db)))
    };
    Ok(Checked {
        scheduler,
        record,
        latent_channels: plan.unet_config.in_channels,
        family: plan.family(),
        unet: plan.unet_config,
        embeddings,
    })
}

/// Checks the textual-inversion embeddings `prompts` name against the model's family before
/// any weights are read (an SDXL embedding in an SD1.x prompt is refused by name), and
/// returns a warning for each `embedding:name` that is not in the folder (kept as text).
pub fn check_embeddings(checked: &Checked, prompts: &[&str]) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let Some((dirs, db)) = &checked.embeddings else {
        for p in prompts.iter().filter(|p| p.contains("embedding:")) {
            warnings.push(format!(
                "the prompt \"{p}\" names an embedding, but {} has no embeddings folder (give \
                 --embeddings DIR); the words are kept as text",
                checked.record.model
            ));
        }
        return Ok(warnings);
    };
    let encoders = match checked.family {
        Family::Sd1 => 1,
        Family::Sdxl => 2,
    };
    for p in prompts {
        for name in db.unknown_references(p) {
            warnings.push(format!(
                "embedding:{name}: there is no embedding {name} in {}; the words are kept as text",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let chunks =
            prompt::tokenized_chunks(&ClipTokenizer::sd15(), &prompt::parse(p), Some(db), 1)?;
        for (_, name) in chunks.iter().flat_map(|c| &c.embeddings) {
            let e = &db.by_name[name];
            if e.widths().len() != encoders {
                let kind = if e.widths().len() == 1 {
                    "an SD1.x"
                } else {
                    "an SDXL"
                };
                bail!(
                    "embedding {name} ({}) is {kind} embedding, and {} is {}: use one trained \
                     for this model's family",
                    e.path.display(),
                    checked.record.model,
                    checked.family
                );
            }
        }
    }
    Ok(warnings)
}

/// Loaded models, at most `capacity` at a time (each SD1.5 is 2-4 GB); an SDXL model
/// (3.5 B parameters with its text encoders: 7 GB in f16, 14 in f32) is never held beside
/// another, so a source and a target never hold two copies of SDXL's text encoders and VAE.
pub struct Models<'a> {
    compute: &'a Compute,
    ui: &'a Ui,
    capacity: usize,
    loaded: Vec<(ModelSpec, Model)>,
}

impl<'a> Models<'a> {
    /// An empty cache.
    pub fn new(compute: &'a Compute, ui: &'a Ui, capacity: usize) -> Self {
        Self {
            compute,
            ui,
            capacity: capacity.max(1),
            loaded: Vec::new(),
        }
    }

    /// The model for `spec`, loading it (and dropping the least recently used) if needed.
    pub fn get(&mut self, spec: &ModelSpec) -> Result<&Model> {
        if let Some(i) = self.loaded.iter().position(|(s, _)| s == spec) {
            let entry = self.loaded.remove(i);
            self.loaded.push(entry);
        } else {
            self.loaded
                .retain(|(_, m)| m.family() != ditail::models::Family::Sdxl);
            while self.loaded.len() >= self.capacity {
                self.loaded.remove(0);
            }
            let task = self.ui.task(format!("loading {}", describe(spec)));
            let model = Model::load(
                spec,
                &self.compute.device,
                LoadOptions {
                    dtype: self.compute.dtype,
                },
            )
            .with_context(|| format!("loading model {}", spec.model))?;
            task.done(self.ui);
            if model.family() == ditail::models::Family::Sdxl {
                self.loaded.clear();
            }
            self.loaded.push((spec.clone(), model));
        }
        Ok(&self.loaded.last().expect("just pushed").1)
    }
}

/// The spec in words, for progress lines.
pub fn describe(spec: &ModelSpec) -> String {
    let mut s = spec.model.clone();
    for l in &spec.loras {
        s += &format!(" + LoRA {}:{}", l.path.display(), l.scale);
    }
    if let Some(vae) = &spec.vae {
        s += &format!(" + VAE {vae}");
    }
    s
}

/// `f16` / `f32` for records.
pub fn dtype_name(dtype: FloatDType) -> &'static str {
    match dtype {
        FloatDType::F16 => "f16",
        FloatDType::BF16 => "bf16",
        FloatDType::F64 => "f64",
        _ => "f32",
    }
}
