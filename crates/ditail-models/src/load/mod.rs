//! Loading weights into the networks.
//!
//! The networks' field names are the diffusers keys, so a diffusers file maps onto a model
//! one to one. Three small adjustments are made, each documented where it is done:
//! PyTorch's `[out, in]` linear weights and `weight`/`bias` norm names (burn-store's
//! `PyTorchToBurnAdapter`), the CLIP token table split into row chunks
//! (`clip::EMBEDDING_CHUNK_ROWS`), and the VAE attention's pre-0.14 diffusers
//! names (`query`, `key`, `value`, `proj_attn`).

mod diffusers;
mod fit;
pub mod hub;
mod ldm;
pub mod lora;
mod lora_term;
mod model;
mod plan;
mod safetensors;
mod single_file;
mod source;
mod spec;

pub use self::diffusers::{
    WeightFiles, load_text_encoder, load_tokenizer, load_tokenizer_2, load_unet, load_vae, plan_vae,
};
pub use self::model::{LoadOptions, SecondTextEncoder, StableDiffusion};
pub use self::plan::{ComponentPlan, ModelPlan, SecondEncoderPlan, VaePlan};
pub use self::safetensors::{TensorEntry, WeightFile, decode_f32};
pub use self::single_file::{
    SingleFileConfigs, check_architecture, load_single_file, load_vae_file, plan_single_file,
    plan_vae_file, reject_pickle,
};
pub use self::source::{Fault, Source};
pub use self::spec::{Location, locate_model, plan_model, plan_vae_spec};

use std::sync::Arc;

use burn::tensor::FloatDType;
use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter};

use crate::clip::EMBEDDING_CHUNK_ROWS;
use crate::error::{ModelError, Result};

/// Which network a set of weights is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The CLIP text encoder (SDXL: the first, ViT-L/14).
    TextEncoder,
    /// SDXL's second text encoder (OpenCLIP ViT-bigG/14 with its projection).
    TextEncoder2,
    /// The VAE.
    Vae,
    /// The U-Net.
    Unet,
    /// A transformers `CLIPModel` (both towers), for the CLIP score.
    ClipModel,
    /// A transformers `ViTModel` (DINO), for the structure distance.
    Vit,
    /// pytorch-fid's InceptionV3, for FID.
    Inception,
}

impl Component {
    /// The diffusers sub-folder name, also used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
            Component::Vae => "vae",
            Component::Unet => "unet",
            Component::ClipModel => "CLIP model",
            Component::Vit => "ViT",
            Component::Inception => "InceptionV3",
        }
    }

    /// Keys that files may carry and the model does not need.
    fn harmless_unused(self, key: &str) -> bool {
        match self {
            // A buffer (0..77) that older transformers versions saved.
            Component::TextEncoder | Component::TextEncoder2 => {
                key == "text_model.embeddings.position_ids"
            }
            // The position buffers, and the temperature, which is no module tensor (a 0-d
            // tensor, read apart by `ditail_eval::nets::load`).
            Component::ClipModel => {
                key.ends_with("embeddings.position_ids") || key == "logit_scale"
            }
            // The pooler: DINO's checkpoints carry an untrained one, the distance never uses it.
            Component::Vit => key.starts_with("pooler."),
            // BatchNorm counters, and the classifier, which FID does not use.
            Component::Inception => {
                key.ends_with(".num_batches_tracked")
                    || key.starts_with("fc.")
                    || key.starts_with("AuxLogits.")
            }
            Component::Vae | Component::Unet => false,
        }
    }

    /// The model-side tensors a file key feeds: usually the key itself.
    fn model_keys(
        self,
        key: &str,
        shape: &[usize],
    ) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        if matches!(
            self,
            Component::TextEncoder | Component::TextEncoder2 | Component::ClipModel
        ) && key == "text_model.embeddings.token_embedding.weight"
            && !shape.is_empty()
        {
            let rows = shape[0];
            return (0..rows.div_ceil(EMBEDDING_CHUNK_ROWS))
                .map(|c| {
                    let start = c * EMBEDDING_CHUNK_ROWS;
                    (
                        format!("{key}.{c}"),
                        Some(start..rows.min(start + EMBEDDING_CHUNK_ROWS)),
                    )
                })
                .collect();
        }
        if self == Component::Vae {
            for (old, new) in [
                (".query.", ".to_q."),
                (".key.", ".to_k."),
                (".value.", ".to_v."),
                (".proj_attn.", ".to_out.0."),
            ] {
                if key.contains("mid_block.attentions.0") && key.contains(old) {
                    return vec![(key.replacen(old, new, 1), None)];
                }
            }
        }
        vec![(key.to_string(), None)]
    }
}

/// How many keys an error message lists before summarising.
const LIST_LIMIT: usize = 25;

fn list(label: &str, keys: &[String]) -> String {
    let mut s = format!("\n  {label} ({}):", keys.len());
    for k in keys.iter().take(LIST_LIMIT) {
        s.push_str("\n    ");
        s.push_str(k);
    }
    if keys.len() > LIST_LIMIT {
        s.push_str(&format!("\n    ... and {} more", keys.len() - LIST_LIMIT));
    }
    s
}

/// The tensors of diffusers-format files, under the model's names.
///
/// A text encoder's keys get the `text_model.` prefix where they lack it: transformers 5
/// saves `CLIPTextModel` without it (`encoder.layers.0...`, `final_layer_norm.weight`), as
/// some single-file checkpoints do (see `ldm::text_key`); older versions keep it.
pub fn folder_sources(files: &[Arc<WeightFile>], component: Component) -> Vec<(String, Source)> {
    files
        .iter()
        .flat_map(|file| {
            file.tensors().iter().map(move |e| {
                let name = match component {
                    Component::TextEncoder | Component::TextEncoder2 => ldm::text_key(&e.name),
                    _ => e.name.clone(),
                };
                (name, Source::whole(file, e))
            })
        })
        .collect()
}

/// Loads every tensor of `files` (a diffusers folder's) into `module`; see `load_sources`.
pub fn load_into<M: ModuleSnapshot>(
    module: &mut M,
    component: Component,
    files: &[Arc<WeightFile>],
    dtype: FloatDType,
) -> Result<()> {
    load_sources(
        module,
        component,
        folder_sources(files, component),
        &describe(files),
        dtype,
    )
}

/// The files' paths, for messages.
pub fn describe(files: &[Arc<WeightFile>]) -> String {
    files
        .iter()
        .map(|f| f.path().display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fails, naming the file and key, if a tensor of `sources` that the model would take is
/// not of a float type (integer and bool tensors cannot be weights); headers only.
pub(crate) fn check_dtypes(component: Component, sources: &[(String, Source)]) -> Result<()> {
    for (key, source) in sources {
        if !component.harmless_unused(key) {
            self::safetensors::check_float(source.file.path(), &source.entry)?;
        }
    }
    Ok(())
}

/// Loads tensors given under diffusers names into `module`, converting to `dtype`.
///
/// Fails, naming the file and key, on a NaN or infinite value (see [`Source::into_pack`]).
/// Fails, naming the keys, when the model needs a tensor the sources lack, when they hold
/// a tensor the model has no place for (but known harmless ones), or when shapes
/// disagree; the module is then not to be used. `desc` names the sources in messages.
pub(crate) fn load_sources<M: ModuleSnapshot>(
    module: &mut M,
    component: Component,
    sources: Vec<(String, Source)>,
    desc: &str,
    dtype: FloatDType,
) -> Result<()> {
    let fault = Fault::default();
    let mut packs = Vec::new();
    for (key, source) in sources {
        if component.harmless_unused(&key) {
            continue;
        }
        for (name, rows) in component.model_keys(&key, &source.shape()) {
            // A source that already takes some rows (a third of OpenCLIP's fused q/k/v)
            // keeps them.
            let source = Source {
                rows: rows.or_else(|| source.rows.clone()),
                ..source.clone()
            };
            packs.push(source.into_pack(name, dtype, &fault)?);
        }
    }
    let result = module.apply(packs, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if let Some(e) = fault.take() {
        return Err(e);
    }

    let mut details = String::new();
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(path, _)| path.clone())
        .collect();
    if !missing.is_empty() {
        details += &list("missing from the files", &missing);
    }
    if !result.unused.is_empty() {
        details += &list("in the files but not in the model", &result.unused);
    }
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        details += &list("could not be applied", &errors);
    }
    if details.is_empty() {
        Ok(())
    } else {
        Err(ModelError::WeightsMismatch {
            component: component.name(),
            source_desc: desc.to_string(),
            details,
        })
    }
}
