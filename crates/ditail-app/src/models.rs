//! Models as jobs use them: checked up front without loading (files, architecture, LoRA
//! keys, embeddings), hashed for the records, described for progress lines.

use std::sync::Arc;

use crate::{Context, Result, refuse};
use ditail_models::LoadOptions;
use ditail_models::{ClipTokenizer, Family};
use ditail_pipeline::ModelSpec;
use ditail_pipeline::model::scheduler_config;
use ditail_pipeline::prompt::{self, Embeddings};
use ditail_pipeline::scheduler::Ddim;

use crate::record::{ModelRecord, model_record};
use ditail_models::device::Compute;

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
    pub family: ditail_models::Family,
    /// Its U-Net's configuration (which injection sites it has).
    pub unet: ditail_models::UNetConfig,
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
                refuse!(
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
