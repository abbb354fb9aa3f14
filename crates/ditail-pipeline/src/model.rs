//! A loaded model (SD1.x or SDXL) as the pipeline uses it: networks, tokenizers, DDIM
//! schedule, clip skip, and an identity for the metadata of inversions and outputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use ditail_models::clip::Insert;
use ditail_models::load::lora::LoraSpec;
use ditail_models::load::{Location, ModelPlan, locate_model, plan_model, plan_vae_spec};
use ditail_models::tokenizer::MAX_LEN;
use ditail_models::{AddedConditioning, Conditioning, Family, LoadOptions, StableDiffusion};

use crate::error::{PipelineError, Result};
use crate::prompt::{self, Embedding, Embeddings};
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
    /// what many anime models expect). SDXL always reads at least the penultimate layer
    /// (its default, diffusers' `clip_skip=None`), so there 1 and 2 are the same and 3 is
    /// diffusers' `clip_skip=1`.
    pub clip_skip: usize,
    /// Folders of textual-inversion embeddings that prompts may name (a name in an earlier
    /// folder wins); none: the `embeddings` folder of the A1111 or ComfyUI installation a
    /// single-file model sits in, if there is one ([`default_embeddings_dir`]).
    pub embeddings: Vec<PathBuf>,
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
            embeddings: Vec::new(),
        }
    }

    /// The embeddings folders: the spec's, else the default beside a model file.
    pub fn embedding_dirs(&self, location: &Location) -> Vec<PathBuf> {
        if !self.embeddings.is_empty() {
            return self.embeddings.clone();
        }
        match location {
            Location::File(path) => default_embeddings_dir(path).into_iter().collect(),
            _ => Vec::new(),
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
    /// the architecture is SD1.x or SDXL base and fits its configuration (no inpainting,
    /// instruct-pix2pix or depth U-Net; every U-Net and VAE tensor of the configured shape),
    /// every LoRA key matches a weight.
    pub fn plan(&self, opts: LoadOptions) -> Result<(Location, ModelPlan)> {
        let skipped = self.layers_skipped()?;
        let location = locate_model(&self.model, opts)?;
        let mut plan = plan_model(&location, opts, &self.loras)?;
        let layers = plan.text_config.num_hidden_layers;
        if skipped >= layers {
            return Err(PipelineError::Settings(format!(
                "clip skip {}: {}'s text encoder has {layers} layers, so at most {layers}",
                self.clip_skip, self.model
            )));
        }
        if let Some(vae) = &self.vae {
            plan.vae = plan_vae_spec(vae, opts)?;
            // The replacement must give latents the U-Net reads.
            plan.check(location.path())?;
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

/// Where A1111 and ComfyUI keep embeddings for a checkpoint file at `model`: ComfyUI's
/// `models/embeddings` beside `models/checkpoints`, A1111's `embeddings` at the top of the
/// installation (`models/Stable-diffusion/` is two levels down). The first that exists.
pub fn default_embeddings_dir(model: &Path) -> Option<PathBuf> {
    let folder = model.parent()?;
    [folder.parent(), folder.parent().and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(|d| d.join("embeddings"))
        .find(|d| d.is_dir())
}

/// One checkpoint, ready to run.
#[derive(Debug)]
pub struct Model {
    sd: StableDiffusion,
    scheduler: Ddim,
    clip_skip: usize,
    name: String,
    location: Location,
    embeddings: Option<Arc<Embeddings>>,
}

impl Model {
    /// Loads what a user names (see [`ModelSpec`]): the checkpoint (single file, diffusers
    /// folder or hub id, see [`ditail_models::load::locate_model`]) with its LoRAs merged,
    /// then the VAE override if any.
    pub fn load(spec: &ModelSpec, device: &Device, opts: LoadOptions) -> Result<Self> {
        let (location, plan) = spec.plan(opts)?;
        let scheduler = Ddim::new(scheduler_config(&location)?);
        let dirs = spec.embedding_dirs(&location);
        let embeddings = if dirs.is_empty() {
            None
        } else {
            Some(Arc::new(Embeddings::read_dirs(&dirs)?))
        };
        Ok(Self {
            sd: plan.load(device, opts)?,
            scheduler,
            clip_skip: spec.clip_skip,
            name: spec.model.clone(),
            location,
            embeddings,
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
            embeddings: None,
        }
    }

    /// The textual-inversion embeddings prompts may name (replacing any the model had).
    pub fn set_embeddings(&mut self, embeddings: Option<Arc<Embeddings>>) {
        self.embeddings = embeddings;
    }

    /// The textual-inversion embeddings prompts may name.
    pub fn embeddings(&self) -> Option<&Embeddings> {
        self.embeddings.as_deref()
    }

    /// The embeddings `prompt` names, each checked against the text encoders' widths.
    pub fn embeddings_used(&self, prompt: &str) -> Result<Vec<&Embedding>> {
        let Some(db) = self.embeddings.as_deref() else {
            return Ok(Vec::new());
        };
        let chunks =
            prompt::tokenized_chunks(&self.sd.tokenizer, &prompt::parse(prompt), Some(db), 1)?;
        let mut used: Vec<&Embedding> = Vec::new();
        for (_, name) in chunks.iter().flat_map(|c| &c.embeddings) {
            let e = &db.by_name[name];
            e.check_fits(&self.text_widths())?;
            if !used.iter().any(|u| u.name == e.name) {
                used.push(e);
            }
        }
        Ok(used)
    }

    /// The text encoders' widths (SD1.x: one; SDXL: two).
    fn text_widths(&self) -> Vec<usize> {
        let mut w = vec![self.sd.text_encoder.hidden_size()];
        if let Some(second) = &self.sd.text_encoder_2 {
            w.push(second.model.hidden_size());
        }
        w
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

    /// The model's family.
    pub fn family(&self) -> Family {
        self.sd.family()
    }

    /// `E_M(p)`: the text encoder's output for a prompt (SDXL: both encoders' penultimate
    /// hidden states side by side; see [`Model::condition`] for the pooled embedding).
    /// Prompts are read as AUTOMATIC1111 reads them ([`crate::prompt`]): weights, `BREAK`,
    /// any length in 77-token chunks laid end to end.
    ///
    /// # Shapes
    /// - output: `[1, 77 * chunks, cross_attention_dim]`
    pub fn encode_prompt(&self, prompt: &str, device: &Device) -> Result<Tensor<3>> {
        Ok(self.encode(prompt, device)?.0)
    }

    /// Chunks' ids as a `[chunks, 77]` tensor.
    fn chunk_ids(chunks: &[prompt::Chunk], device: &Device) -> Tensor<2, Int> {
        let ids: Vec<i64> = chunks
            .iter()
            .flat_map(|c| c.ids.iter().map(|&i| i64::from(i)))
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(ids, [chunks.len(), MAX_LEN]), device)
    }

    /// The embeddings' vectors for text encoder `encoder`, where the chunks have them.
    fn inserts(
        &self,
        chunks: &[prompt::Chunk],
        encoder: usize,
        device: &Device,
    ) -> Result<Vec<Insert>> {
        let mut out = Vec::new();
        for (row, chunk) in chunks.iter().enumerate() {
            for (start, name) in &chunk.embeddings {
                let db =
                    (self.embeddings.as_deref()).expect("chunks name embeddings of a database");
                let e = &db.by_name[name];
                e.check_fits(&self.text_widths())?;
                out.push(Insert {
                    row,
                    start: *start,
                    values: e.tensor(encoder, device),
                });
            }
        }
        Ok(out)
    }

    /// One encoder's chunk encodings `[chunks, 77, width]`, weighted, end to end.
    fn weighted(z: Tensor<3>, chunks: &[prompt::Chunk]) -> Tensor<3> {
        let weights: Vec<Vec<f32>> = chunks.iter().map(|c| c.weights.clone()).collect();
        let [n, len, width] = z.dims();
        prompt::emphasis::apply(z, &weights).reshape([1, n * len, width])
    }

    /// The text embedding and, for SDXL, the pooled one (diffusers'
    /// `StableDiffusionXLPipeline.encode_prompt` for a plain prompt; A1111's chunks and
    /// emphasis otherwise, the pooled embedding from the first chunk, unweighted, as A1111
    /// takes it).
    fn encode(&self, prompt: &str, device: &Device) -> Result<(Tensor<3>, Option<Tensor<2>>)> {
        let pieces = prompt::parse(prompt);
        let db = self.embeddings.as_deref();
        let mut chunks_1 = prompt::tokenized_chunks(&self.sd.tokenizer, &pieces, db, 1)?;
        prompt::check_length("prompt", prompt, chunks_1.len())?;
        let Some(second) = &self.sd.text_encoder_2 else {
            let skip = self.clip_skip.saturating_sub(1);
            let ids = Self::chunk_ids(&chunks_1, device);
            let inserts = self.inserts(&chunks_1, 0, device)?;
            let z = (self.sd.text_encoder).forward_inserted(ids, &inserts, skip)?;
            return Ok((Self::weighted(z, &chunks_1), None));
        };
        let skip = self.clip_skip.max(2) - 1;
        // The second tokenizer reads a typed `!` as its padding token (as transformers
        // does), which can shift a chunk boundary: both encoders get as many chunks.
        let chunks_2 = prompt::tokenized_chunks(&second.tokenizer, &pieces, db, chunks_1.len())?;
        if chunks_1.len() < chunks_2.len() {
            chunks_1 = prompt::tokenized_chunks(&self.sd.tokenizer, &pieces, db, chunks_2.len())?;
        }
        let (ids_1, ids_2) = (
            Self::chunk_ids(&chunks_1, device),
            Self::chunk_ids(&chunks_2, device),
        );
        let (inserts_1, inserts_2) = (
            self.inserts(&chunks_1, 0, device)?,
            self.inserts(&chunks_2, 1, device)?,
        );
        let (h1, _) = (self.sd.text_encoder).forward_xl_inserted(ids_1, &inserts_1, skip)?;
        let (h2, pooled) = (second.model).forward_xl_inserted(ids_2, &inserts_2, skip)?;
        let context = Tensor::cat(
            vec![Self::weighted(h1, &chunks_1), Self::weighted(h2, &chunks_2)],
            2,
        );
        Ok((context, pooled.map(|p| p.narrow(0, 0, 1))))
    }

    /// The U-Net's conditioning for `prompt` on an image of `[height, width]` pixels: the
    /// text embedding and, for SDXL, the pooled embedding and the size conditioning
    /// `(height, width)` as original and target size with no crop (diffusers' defaults for
    /// an image generated or inverted at that size).
    pub fn condition(
        &self,
        prompt: &str,
        [height, width]: [usize; 2],
        device: &Device,
    ) -> Result<Conditioning> {
        let (context, pooled) = self.encode(prompt, device)?;
        let added = pooled.map(|text_embeds| {
            let (h, w) = (height as f32, width as f32);
            let time_ids =
                Tensor::<2>::from_data(TensorData::new(vec![h, w, 0.0, 0.0, h, w], [1, 6]), device)
                    .cast(text_embeds.dtype());
            AddedConditioning {
                text_embeds,
                time_ids,
            }
        });
        Ok(Conditioning { context, added })
    }

    /// [`Model::condition`] for prompts that go into one batch (or one sum): a prompt with
    /// fewer chunks than the longest is padded with the empty prompt's encoding, chunk by
    /// chunk, as A1111 does with its "pad prompt/negative prompt" option, so every context
    /// has the same length.
    pub fn conditions(
        &self,
        prompts: &[&str],
        size: [usize; 2],
        device: &Device,
    ) -> Result<Vec<Conditioning>> {
        let mut out = prompts
            .iter()
            .map(|p| self.condition(p, size, device))
            .collect::<Result<Vec<_>>>()?;
        let len = |c: &Conditioning| c.context.dims()[1];
        let longest = out.iter().map(len).max().unwrap_or(MAX_LEN);
        if out.iter().all(|c| len(c) == longest) {
            return Ok(out);
        }
        let empty = self.encode("", device)?.0;
        for c in &mut out {
            let missing = (longest - len(c)) / MAX_LEN;
            if missing > 0 {
                let mut parts = vec![c.context.clone()];
                parts.extend(std::iter::repeat_n(empty.clone(), missing));
                c.context = Tensor::cat(parts, 1);
            }
        }
        Ok(out)
    }

    /// The float type of the weights; inputs are cast to it.
    pub fn dtype(&self) -> burn::tensor::DType {
        self.sd.unet.conv_in.weight.val().dtype()
    }

    /// The float type of the VAE: the model's, except f32 for an SDXL VAE that overflows in
    /// half precision (`force_upcast`, see [`ditail_models::VaeConfig::force_upcast`]).
    pub fn vae_dtype(&self) -> burn::tensor::DType {
        self.sd.vae.decoder.conv_in.weight.val().dtype()
    }

    /// The VAE's scaling factor.
    pub fn scaling_factor(&self) -> f64 {
        self.sd.vae_config.scaling_factor
    }
}
