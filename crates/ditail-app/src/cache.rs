//! What a [`crate::Runner`] keeps between jobs: loaded models within a budget (a count and
//! bytes, least recently used out, an SDXL model never beside another) and recent
//! inversions, so that sampling another target from the same content, source and inversion
//! settings never inverts again.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::FloatDType;
use ditail_models::device::Compute;
use ditail_models::{Family, LoadOptions};
use ditail_pipeline::{Inversion, Model, ModelSpec};

use crate::record::EmbeddingRecord;
use crate::{Context, Result};

/// How much a [`ModelCache`] may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Models held at most (at least 1: the one in use).
    pub models: usize,
    /// Bytes of weights held at most; the newcomer's size is guessed from those loaded, so
    /// that two models never exceed it at the peak of a load.
    pub bytes: u64,
}

impl Budget {
    /// At most `models` models, whatever their size (the command line: a source and a
    /// target).
    pub fn models(models: usize) -> Self {
        Self {
            models,
            bytes: u64::MAX,
        }
    }

    /// At most `bytes` of weights (the web app: `--memory`).
    pub fn bytes(bytes: u64) -> Self {
        Self {
            models: usize::MAX,
            bytes,
        }
    }
}

/// Loaded models, least recently used last out. An SDXL model (3.5 B parameters with its
/// text encoders: 7 GB in f16, 14 in f32) is never held beside another, so a source and a
/// target never hold two copies of SDXL's text encoders and VAE.
pub struct ModelCache {
    budget: Budget,
    loaded: Vec<(ModelSpec, Arc<Model>, u64)>,
}

impl ModelCache {
    /// An empty cache.
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            loaded: Vec::new(),
        }
    }

    /// The model for `spec`, loading it (after `on_load`) and dropping others if needed.
    pub fn get(
        &mut self,
        spec: &ModelSpec,
        compute: &Compute,
        on_load: impl FnOnce(),
    ) -> Result<Arc<Model>> {
        if let Some(i) = self.loaded.iter().position(|(s, _, _)| s == spec) {
            let entry = self.loaded.remove(i);
            let model = entry.1.clone();
            self.loaded.push(entry);
            return Ok(model);
        }
        on_load();
        self.loaded.retain(|(_, m, _)| m.family() != Family::Sdxl);
        let guess = self.held_bytes() / self.loaded.len().max(1) as u64;
        while !self.loaded.is_empty()
            && (self.loaded.len() >= self.budget.models.max(1)
                || self.held_bytes().saturating_add(guess) > self.budget.bytes)
        {
            self.loaded.remove(0);
        }
        let model = Model::load(
            spec,
            &compute.device,
            LoadOptions {
                dtype: compute.dtype,
            },
        )
        .with_context(|| format!("loading model {}", spec.model))?;
        if model.family() == Family::Sdxl {
            self.loaded.clear();
        }
        let size = model_bytes(&model, compute.dtype);
        let model = Arc::new(model);
        self.loaded.push((spec.clone(), model.clone(), size));
        Ok(model)
    }

    /// Whether the model for `spec` is loaded.
    pub fn holds(&self, spec: &ModelSpec) -> bool {
        self.loaded.iter().any(|(s, _, _)| s == spec)
    }

    /// Drops every model (before work that needs the memory, such as scoring).
    pub fn clear(&mut self) {
        self.loaded.clear();
    }

    fn held_bytes(&self) -> u64 {
        self.loaded.iter().map(|e| e.2).sum()
    }
}

/// The memory a loaded model's weights take.
fn model_bytes(model: &Model, dtype: FloatDType) -> u64 {
    let params = model.sd().unet.num_params()
        + model.sd().vae.num_params()
        + model.sd().text_encoder.num_params();
    let width = if matches!(dtype, FloatDType::F16 | FloatDType::BF16) {
        2
    } else {
        4
    };
    (params * width) as u64
}

/// Inversions kept for reuse (each is every `Z[t]` of one content: ~3 MB at 512 px).
const KEEP_INVERSIONS: usize = 16;

/// An inversion and the embeddings its prompts used (for the records of its transfers).
pub type Kept = (Arc<Inversion>, Vec<EmbeddingRecord>);

/// Recent inversions by key (content, source spec, inversion settings), most recent last.
#[derive(Default)]
pub struct InversionCache {
    kept: Vec<(String, Kept)>,
}

impl InversionCache {
    /// The inversion kept under `key`, if any.
    pub fn get(&mut self, key: &str) -> Option<Kept> {
        let i = self.kept.iter().position(|(k, _)| k == key)?;
        let entry = self.kept.remove(i);
        let kept = entry.1.clone();
        self.kept.push(entry);
        Some(kept)
    }

    /// Keeps `inv` under `key`, dropping the oldest beyond the limit.
    pub fn keep(&mut self, key: String, kept: Kept) {
        if self.kept.len() >= KEEP_INVERSIONS {
            self.kept.remove(0);
        }
        self.kept.push((key, kept));
    }
}
