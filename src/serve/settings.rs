//! A job's settings as clients send them (JSON, models by catalog id), their defaults
//! (those of the repository's METHOD.md, the CLI's), the server's limits, and their
//! translation into the application layer's job: the same `DitailOptions`, `ModelSpec`s and checks as the CLI's,
//! so a job and a command with the same settings produce the same file.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ditail::app::job::Check;
use ditail::app::options::DEFAULT_LORA_SCALE;
use ditail::app::{Cell, Content, ContentKind, DitailOptions, Grid, Job};
use ditail::models::device::Compute;
use ditail::models::load::lora::LoraSpec;
use ditail::pipeline::ModelSpec;
use ditail::pipeline::settings::MIN_SIZE;
use ditail::pipeline::settings::defaults;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, Kind};

/// What the server accepts; every limit is a 4xx with its number.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Limits {
    /// Characters of one prompt.
    pub max_prompt_chars: usize,
    /// Inversion or sampling steps.
    pub max_steps: usize,
    /// The working size, in pixels.
    pub max_size: u32,
    /// Models in one job (a cocktail's m).
    pub max_models: usize,
    /// LoRAs on one model.
    pub max_loras: usize,
    /// Jobs waiting in the queue.
    pub max_queue: usize,
    /// Pixels of an uploaded image.
    pub max_image_pixels: u64,
    /// Bytes of one request.
    pub max_body_bytes: usize,
}

/// The limits of this server.
pub const LIMITS: Limits = Limits {
    max_prompt_chars: 2000,
    max_steps: 1000,
    max_size: 2048,
    max_models: 8,
    max_loras: 8,
    max_queue: 64,
    // The image readers' own limit (8192 x 8192: phone photos pass, a 30k x 30k bomb not).
    max_image_pixels: ditail::pipeline::preprocess::MAX_IMAGE_PIXELS,
    max_body_bytes: 64 << 20,
};

/// Transfer (one source, any targets) or cocktail (every model both source and target).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One source inverts; every target samples its inversion.
    #[default]
    Transfer,
    /// Every model is both source and target.
    Cocktail,
}

/// A LoRA by catalog id, with its scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraChoice {
    /// The LoRA's catalog id.
    pub id: String,
    /// Its scale (the reference's 0.7 unless given).
    #[serde(default = "default_lora_scale")]
    pub scale: f32,
}

fn default_lora_scale() -> f32 {
    DEFAULT_LORA_SCALE
}

/// A model as a job uses it: checkpoint, LoRAs, VAE, clip skip (all by catalog id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The checkpoint's catalog id.
    pub model: String,
    /// LoRAs merged into it (targets only, as the CLI).
    #[serde(default)]
    pub loras: Vec<LoraChoice>,
    /// A VAE's catalog id instead of the model's.
    #[serde(default)]
    pub vae: Option<String>,
    /// A1111's clip skip (1: none).
    #[serde(default = "one")]
    pub clip_skip: u32,
}

fn one() -> u32 {
    1
}

/// A job's settings (see the README's web app section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSettings {
    /// Transfer or cocktail.
    pub mode: Mode,
    /// Transfer: the inverting model (default: the first target).
    pub source: Option<Variant>,
    /// Transfer: the targets; cocktail: the models.
    pub targets: Vec<Variant>,
    /// Generate the content from this prompt with each source (instead of an image).
    pub content_prompt: Option<String>,
    /// Seed of generated content.
    pub seed: u64,
    /// The sampling prompt (empty: the content prompt).
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: String,
    /// The inversion prompt (default: the prompt).
    pub inv_prompt: Option<String>,
    /// The inversion negative prompt (default: the negative prompt).
    pub inv_negative_prompt: Option<String>,
    /// Condition scaling of the positive inversion prompt.
    pub alpha: f64,
    /// Condition scaling of the negative inversion prompt.
    pub beta: f64,
    /// Guidance while sampling.
    pub omega: f64,
    /// DDIM inversion steps.
    pub inv_steps: usize,
    /// DDIM sampling steps.
    pub steps: usize,
    /// Share of sampling steps that inject ResNet features.
    pub conv_ratio: f64,
    /// Share of sampling steps that inject self-attention q/k.
    pub attn_ratio: f64,
    /// `full`, `left`, `right`, `top`, `bottom`, or `painted` (the request's mask image).
    pub mask: String,
    /// The working size (the content's shorter side, in pixels).
    pub size: u32,
}

impl Default for JobSettings {
    fn default() -> Self {
        let d = DitailOptions::default();
        Self {
            mode: Mode::Transfer,
            source: None,
            targets: Vec::new(),
            content_prompt: None,
            seed: 0,
            prompt: String::new(),
            // The CLI's defaults: the same options struct's.
            negative_prompt: d.negative_prompt,
            inv_prompt: d.inv_prompt,
            inv_negative_prompt: d.inv_negative_prompt,
            alpha: d.alpha,
            beta: d.beta,
            omega: d.omega,
            inv_steps: d.inv_steps,
            steps: d.steps,
            conv_ratio: d.conv_ratio,
            attn_ratio: d.attn_ratio,
            mask: d.mask,
            size: d.size.unwrap_or(defaults::SIZE),
        }
    }
}

impl JobSettings {
    /// The sources and targets, in grid order (rows, columns).
    pub fn grid(&self) -> (Vec<Variant>, Vec<Variant>) {
        match self.mode {
            Mode::Cocktail => (self.targets.clone(), self.targets.clone()),
            Mode::Transfer => {
                let source = self
                    .source
                    .clone()
                    .or_else(|| self.targets.first().cloned())
                    .into_iter()
                    .collect();
                (source, self.targets.clone())
            }
        }
    }

    /// The prompt the targets sample with (the content prompt when none is given).
    pub fn sampling_prompt(&self) -> String {
        if self.prompt.is_empty() {
            self.content_prompt.clone().unwrap_or_default()
        } else {
            self.prompt.clone()
        }
    }

    /// Ditail's options for these settings, with `mask` as the CLI takes it (a half's name
    /// or the path of the painted mask).
    pub fn options(&self, mask: &str) -> DitailOptions {
        DitailOptions {
            negative_prompt: self.negative_prompt.clone(),
            inv_prompt: self.inv_prompt.clone().filter(|p| !p.is_empty()),
            inv_negative_prompt: self.inv_negative_prompt.clone().filter(|p| !p.is_empty()),
            alpha: self.alpha,
            beta: self.beta,
            omega: self.omega,
            inv_steps: self.inv_steps,
            steps: self.steps,
            conv_ratio: self.conv_ratio,
            attn_ratio: self.attn_ratio,
            mask: mask.to_string(),
            no_injection: false,
            sites: None,
            size: Some(self.size),
        }
    }

    /// Checks the limits and the shape of the request (models are checked by
    /// [`Variant::spec`]); `has_image` / `has_mask` say what the request carried.
    pub fn check(&self, has_image: bool, has_mask: bool) -> Result<()> {
        let l = LIMITS;
        let prompts = [
            ("prompt", Some(&self.prompt)),
            ("negative_prompt", Some(&self.negative_prompt)),
            ("inv_prompt", self.inv_prompt.as_ref()),
            ("inv_negative_prompt", self.inv_negative_prompt.as_ref()),
            ("content_prompt", self.content_prompt.as_ref()),
        ];
        for (name, text) in prompts {
            if let Some(text) = text {
                let n = text.chars().count();
                if n > l.max_prompt_chars {
                    bail!(
                        "{name} has {n} characters; the limit is {}",
                        l.max_prompt_chars
                    );
                }
                if text.contains('\0') {
                    bail!("{name} contains a NUL character");
                }
            }
        }
        if self.targets.is_empty() {
            bail!("targets: pick at least one model");
        }
        let (sources, targets) = self.grid();
        if sources.len().max(targets.len()) > l.max_models {
            bail!("{} models; the limit is {}", targets.len(), l.max_models);
        }
        for v in sources.iter().chain(&targets) {
            if v.loras.len() > l.max_loras {
                bail!(
                    "{} LoRAs on one model; the limit is {}",
                    v.loras.len(),
                    l.max_loras
                );
            }
        }
        for (name, n) in [("inv_steps", self.inv_steps), ("steps", self.steps)] {
            if n == 0 || n > l.max_steps {
                bail!("{name} {n}: must be between 1 and {}", l.max_steps);
            }
        }
        if self.size < MIN_SIZE || self.size > l.max_size || !self.size.is_multiple_of(8) {
            bail!(
                "size {}: must be a multiple of 8 from {MIN_SIZE} to {}",
                self.size,
                l.max_size
            );
        }
        match (&self.content_prompt, has_image) {
            (Some(_), true) => bail!("give a content image or content_prompt, not both"),
            (None, false) => bail!("give a content image (the `image` part) or content_prompt"),
            _ => {}
        }
        match (self.mask.as_str(), has_mask) {
            ("painted", false) => bail!("mask \"painted\" needs the `mask` part (a PNG)"),
            ("full" | "left" | "right" | "top" | "bottom" | "painted", _) => {}
            (other, _) => {
                bail!("mask {other:?}: expected full, left, right, top, bottom or painted")
            }
        }
        Ok(())
    }
}

/// A submission's files, as the job's folder holds them.
pub struct Files<'a> {
    /// The content image as uploaded, with its pixels (absent when the content is
    /// generated).
    pub content: Option<(&'a Path, RgbImage)>,
    /// The painted mask.
    pub mask: &'a Path,
    /// The folder results are written to, and the job's id that names them.
    pub output: &'a Path,
    /// The job's id, which names its results.
    pub id: &'a str,
}

impl JobSettings {
    /// The application layer's job for these settings: every check the CLI makes (the
    /// settings, the catalog's models, their steps, sites and embeddings, the content and
    /// mask shapes). The server builds it when it accepts a submission and again when the
    /// worker runs it (from the job's folder: after a restart too), with the same result.
    pub fn job(
        &self,
        catalog: &Catalog,
        labels: (&[String], &[String]),
        files: Files,
        compute: &Compute,
    ) -> Result<Job> {
        let mask = if self.mask == "painted" {
            files.mask.to_string_lossy().into_owned()
        } else {
            self.mask.clone()
        };
        let options = self.options(&mask);
        let kind = match files.content {
            Some((path, rgb)) => ContentKind::Image {
                path: path.to_path_buf(),
                rgb,
            },
            None => ContentKind::Generate {
                prompt: self.content_prompt.clone().unwrap_or_default(),
                seed: self.seed,
                options: options.content_generation(),
            },
        };
        let (sources, targets) = self.grid();
        let models = |variants: &[Variant], labels: &[String], loras: bool| {
            variants
                .iter()
                .zip(labels)
                .map(|(v, label)| Ok((v.spec(catalog, loras)?, label.clone())))
                .collect::<Result<Vec<_>>>()
        };
        let cell_path = |c: Cell| {
            let t = c.target.expect("a result's cell");
            files
                .output
                .join(format!("{}-{}-{t}.png", files.id, c.source))
        };
        let check: &mut Check = &mut |spec| ditail::app::models::check(spec, compute);
        let job = Job::grid(
            Grid {
                contents: vec![Content {
                    label: "content".into(),
                    kind,
                    prompt: None,
                }],
                sources: models(&sources, labels.0, false)?,
                targets: models(&targets, labels.1, true)?,
                prompt: &self.sampling_prompt(),
                options: &options,
                cell_path: &cell_path,
                content_path: None,
            },
            check,
        )?;
        Ok(job)
    }
}

impl Variant {
    /// The model spec this variant names, resolved through the catalog (ids only: a
    /// client cannot name a path). `with_loras` is false for a source, which inverts
    /// without LoRAs as in the CLI.
    pub fn spec(&self, catalog: &Catalog, with_loras: bool) -> Result<ModelSpec> {
        let pick = |id: &str, kind: Kind| -> Result<String> {
            let entry = catalog
                .get(id)
                .filter(|e| e.kind == kind)
                .with_context(|| format!("no {} with id {id:?} (see /api/models)", kind.name()))?;
            if !entry.usable {
                bail!(
                    "{} cannot be used: {}",
                    entry.name,
                    entry.reason.as_deref().unwrap_or("unknown")
                );
            }
            Ok(entry.path.to_string_lossy().into_owned())
        };
        if !(1..=12).contains(&self.clip_skip) {
            bail!("clip_skip {}: must be between 1 and 12", self.clip_skip);
        }
        let loras = if with_loras {
            self.loras
                .iter()
                .map(|l| {
                    if !l.scale.is_finite() || l.scale.abs() > 10.0 {
                        bail!("LoRA scale {}: must be a number from -10 to 10", l.scale);
                    }
                    Ok(LoraSpec {
                        path: pick(&l.id, Kind::Lora)?.into(),
                        scale: l.scale,
                    })
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(ModelSpec {
            model: pick(&self.model, Kind::Checkpoint)?,
            loras,
            vae: self
                .vae
                .as_deref()
                .map(|v| pick(v, Kind::Vae))
                .transpose()?,
            clip_skip: self.clip_skip as usize,
            embeddings: catalog.embedding_dirs(),
        })
    }
}
