//! What every output PNG records so it can be reproduced: an A1111-compatible `parameters`
//! text chunk (what web UIs and Civitai read) and a `ditail` chunk holding the full
//! settings as JSON. Models and LoRAs are identified by short SHA-256 hashes (A1111's
//! "Model hash": the first 10 hex digits of the file's SHA-256), cached per file in
//! `$XDG_CACHE_HOME/ditail/hashes.json` (keyed by path, size and modification time).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Context, Result};
use burn::tensor::FloatDType;
use ditail_models::device::Compute;
use ditail_models::load::Location;
use ditail_pipeline::{Inversion, ModelSpec, SamplingSettings};
use image::RgbImage;

use crate::options::GenerationOptions;
use ditail_pipeline::digest::hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A model as recorded in an output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// As the user named it (file, folder or repo id).
    pub model: String,
    /// First 10 hex digits of the SHA-256 of its weights (for a folder: of the digests of
    /// its weight files in order, text encoder, U-Net, VAE).
    pub hash: String,
    /// LoRAs merged in.
    pub loras: Vec<LoraRecord>,
    /// VAE override.
    pub vae: Option<String>,
    /// A1111 clip skip (1 = none).
    pub clip_skip: u32,
}

/// A LoRA as recorded in an output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraRecord {
    /// Its file.
    pub path: String,
    /// First 10 hex digits of its SHA-256.
    pub hash: String,
    /// Its scale.
    pub scale: f32,
}

/// The Ditail numbers of a transfer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DitailRecord {
    /// The inversion's positive prompt.
    pub inv_prompt: String,
    /// The inversion's negative prompt.
    pub inv_negative_prompt: String,
    /// Condition scaling of the positive inversion prompt.
    pub alpha: f64,
    /// Condition scaling of the negative inversion prompt.
    pub beta: f64,
    /// DDIM inversion steps.
    pub inv_steps: usize,
    /// DDIM sampling steps.
    pub steps: usize,
    /// Guidance while sampling.
    pub omega: f64,
    /// Share of sampling steps that inject ResNet features.
    pub conv_ratio: f64,
    /// Share of sampling steps that inject self-attention q/k.
    pub attn_ratio: f64,
    /// The mask as given (a half's name, or a mask file's path).
    pub mask: String,
    /// Whether nothing was injected (the ablation).
    pub no_injection: bool,
    /// The working size (the content's shorter side, in pixels).
    pub size: u32,
    /// SHA-256 of the content image's decoded pixels.
    pub content_sha256: String,
}

/// Everything an output PNG records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// ditail's version.
    pub version: String,
    /// `transfer` or `generate`.
    pub kind: String,
    /// The (sampling) prompt.
    pub prompt: String,
    /// The (sampling) negative prompt.
    pub negative_prompt: String,
    /// The model that produced the pixels (target, or the generating model).
    pub model: ModelRecord,
    /// The source model of a transfer.
    pub source: Option<ModelRecord>,
    /// The transfer's numbers.
    pub ditail: Option<DitailRecord>,
    /// Text-to-image's noise seed.
    pub seed: Option<u64>,
    /// The steps of the run that made the pixels (sampling, or text-to-image).
    pub steps: usize,
    /// Its guidance.
    pub omega: f64,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// The backend it ran on (`cpu`, `wgpu`, `cuda`).
    pub backend: String,
    /// The float type it ran in (`f32`, `f16`).
    pub dtype: String,
    /// The textual-inversion embeddings the prompts named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeddings: Vec<EmbeddingRecord>,
}

/// A textual-inversion embedding a prompt named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingRecord {
    /// Its name in the prompt.
    pub name: String,
    /// The first 12 hex digits of its file's SHA-256 (A1111's `TI hashes`).
    pub hash: String,
}

impl Record {
    /// The A1111 `parameters` text: prompt, `Negative prompt:`, then `key: value` pairs.
    pub fn a1111_parameters(&self) -> String {
        let name = |m: &ModelRecord| model_label(&m.model);
        let mut fields = vec![
            ("Steps".to_string(), self.steps.to_string()),
            ("Sampler".into(), "DDIM".into()),
            ("CFG scale".into(), self.omega.to_string()),
        ];
        if let Some(seed) = self.seed {
            fields.push(("Seed".into(), seed.to_string()));
        }
        fields.push(("Size".into(), format!("{}x{}", self.width, self.height)));
        fields.push(("Model hash".into(), self.model.hash.clone()));
        fields.push(("Model".into(), name(&self.model)));
        if let Some(vae) = &self.model.vae {
            fields.push(("VAE".into(), model_label(vae)));
        }
        if self.model.clip_skip > 1 {
            fields.push(("Clip skip".into(), self.model.clip_skip.to_string()));
        }
        if !self.model.loras.is_empty() {
            let hashes: Vec<String> = self
                .model
                .loras
                .iter()
                .map(|l| format!("{}: {}", model_label(&l.path), l.hash))
                .collect();
            fields.push(("Lora hashes".into(), format!("\"{}\"", hashes.join(", "))));
        }
        if !self.embeddings.is_empty() {
            let hashes: Vec<String> = self
                .embeddings
                .iter()
                .map(|e| format!("{}: {}", e.name, e.hash))
                .collect();
            fields.push(("TI hashes".into(), format!("\"{}\"", hashes.join(", "))));
        }
        if let (Some(source), Some(d)) = (&self.source, &self.ditail) {
            fields.push(("Ditail source".into(), name(source)));
            fields.push(("Ditail source hash".into(), source.hash.clone()));
            fields.push((
                "Ditail".into(),
                format!(
                    "\"alpha {}, beta {}, inversion steps {}, conv ratio {}, attn ratio {}, mask {}{}\"",
                    d.alpha,
                    d.beta,
                    d.inv_steps,
                    d.conv_ratio,
                    d.attn_ratio,
                    d.mask,
                    if d.no_injection { ", no injection" } else { "" }
                ),
            ));
        }
        fields.push(("Version".into(), format!("ditail {}", self.version)));
        let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!(
            "{}\nNegative prompt: {}\n{}",
            self.prompt,
            self.negative_prompt,
            fields.join(", ")
        )
    }

    /// The PNG text chunks.
    pub fn chunks(&self) -> Vec<(&'static str, String)> {
        vec![
            ("parameters", self.a1111_parameters()),
            (
                "ditail",
                serde_json::to_string(self).expect("records serialise"),
            ),
        ]
    }
}

/// The records of the embeddings `prompts` name with `model`'s embeddings (each checked
/// against its text encoders).
pub fn embedding_records(
    model: &ditail_pipeline::Model,
    prompts: &[&str],
) -> Result<Vec<EmbeddingRecord>> {
    let mut out = Vec::new();
    for p in prompts {
        for e in model.embeddings_used(p)? {
            out.push(EmbeddingRecord {
                name: e.name.clone(),
                hash: e.short_hash.clone(),
            });
        }
    }
    Ok(out)
}

/// `records` without repeats, in first-seen order.
pub fn dedup<T: PartialEq>(records: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for r in records {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// A short display name: a file's stem, a folder's name, a repo id's name.
pub fn model_label(spec: &str) -> String {
    let trimmed = spec.trim_end_matches(['/', '\\']);
    let base = trimmed.split('@').next().unwrap_or(trimmed);
    let name = Path::new(base)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| base.to_string());
    name.strip_suffix(".safetensors")
        .unwrap_or(&name)
        .to_string()
}

/// Builds a model's record (hashing its files, through the cache).
pub fn model_record(spec: &ModelSpec, location: &Location) -> Result<ModelRecord> {
    let files = match location {
        Location::File(path) => vec![path.clone()],
        Location::Folder(dir) | Location::Hub { folder: dir, .. } => folder_weight_files(dir),
    };
    let mut cache = HashCache::open();
    let hash = cache.hash(&files)?;
    let loras = spec
        .loras
        .iter()
        .map(|l| {
            Ok(LoraRecord {
                path: l.path.display().to_string(),
                hash: cache.hash(std::slice::from_ref(&l.path))?,
                scale: l.scale,
            })
        })
        .collect::<Result<_>>()?;
    cache.save();
    Ok(ModelRecord {
        model: spec.model.clone(),
        hash,
        loras,
        vae: spec.vae.clone(),
        clip_skip: spec.clip_skip as u32,
    })
}

/// The `.safetensors` files of a diffusers folder's networks, in a fixed order.
fn folder_weight_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["text_encoder", "unet", "vae"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

#[derive(Default, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// File hashes already computed, so a 2-4 GB checkpoint is hashed once.
struct HashCache {
    path: Option<PathBuf>,
    entries: BTreeMap<String, CacheEntry>,
    changed: bool,
}

/// ditail's cache folder: `$XDG_CACHE_HOME/ditail`, else `~/.cache/ditail`.
pub fn cache_dir() -> Option<PathBuf> {
    ditail_models::gpu::ditail_cache_dir()
}

/// The `ditail` record of a PNG, if it has one.
pub fn read_record(path: &Path) -> Option<Record> {
    let chunks = crate::output::read_png_text(path).ok()?;
    let (_, text) = chunks.into_iter().find(|(k, _)| k == "ditail")?;
    serde_json::from_str(&text).ok()
}

impl HashCache {
    fn open() -> Self {
        let path = cache_dir().map(|d| d.join("hashes.json"));
        let entries = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path,
            entries,
            changed: false,
        }
    }

    /// First 10 hex digits of a file's SHA-256; for several files, of the SHA-256 of their
    /// hex digests one after the other.
    fn hash(&mut self, files: &[PathBuf]) -> Result<String> {
        let full = match files {
            [one] => self.file_hash(one)?,
            _ => {
                let mut whole = Sha256::new();
                for f in files {
                    whole.update(self.file_hash(f)?.as_bytes());
                }
                hex(&whole.finalize())
            }
        };
        Ok(full[..10].to_string())
    }

    fn file_hash(&mut self, path: &Path) -> Result<String> {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let key = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        if let Some(e) = self.entries.get(&key)
            && e.size == meta.len()
            && e.mtime_ns == mtime_ns
        {
            return Ok(e.sha256.clone());
        }
        let mut file =
            std::fs::File::open(path).with_context(|| format!("hashing {}", path.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sha256 = hex(&h.finalize());
        self.entries.insert(
            key,
            CacheEntry {
                size: meta.len(),
                mtime_ns,
                sha256: sha256.clone(),
            },
        );
        self.changed = true;
        Ok(sha256)
    }

    fn save(&self) {
        let (Some(path), true) = (&self.path, self.changed) else {
            return;
        };
        // A cache that cannot be written only costs time next run.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(json) = serde_json::to_vec_pretty(&self.entries) {
            let _ = crate::output::write_atomic(path, |w| Ok(w.write_all(&json)?));
        }
    }
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

/// The record of a transfer's output; `source` is absent when the content was a saved
/// inversion (its record then names the inversion's source without a hash).
pub fn transfer_record(
    inv: &Inversion,
    sampling: &SamplingSettings,
    mask: &str,
    target: &ModelRecord,
    source: Option<&ModelRecord>,
    img: &RgbImage,
    compute: &Compute,
) -> Record {
    let source = source.cloned().unwrap_or_else(|| ModelRecord {
        model: inv.meta().source.clone(),
        hash: String::new(),
        loras: Vec::new(),
        vae: None,
        clip_skip: 1,
    });
    let inv_settings = &inv.meta().settings;
    Record {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kind: "transfer".into(),
        prompt: sampling.prompt.clone(),
        negative_prompt: sampling.negative_prompt.clone(),
        model: target.clone(),
        source: Some(source),
        ditail: Some(DitailRecord {
            inv_prompt: inv_settings.prompt.clone(),
            inv_negative_prompt: inv_settings.negative_prompt.clone(),
            alpha: inv_settings.alpha,
            beta: inv_settings.beta,
            inv_steps: inv_settings.steps,
            steps: sampling.steps,
            omega: sampling.omega,
            conv_ratio: sampling.conv_ratio,
            attn_ratio: sampling.attn_ratio,
            mask: mask.to_string(),
            no_injection: sampling.no_injection,
            size: inv_settings.size,
            content_sha256: inv.meta().image_sha256.clone(),
        }),
        seed: None,
        steps: sampling.steps,
        omega: sampling.omega,
        width: img.width(),
        height: img.height(),
        backend: compute.backend.to_string(),
        dtype: dtype_name(compute.dtype).into(),
        embeddings: Vec::new(),
    }
}

/// The record of a generated image.
pub fn generation_record(
    model: &ModelRecord,
    prompt: &str,
    options: &GenerationOptions,
    seed: u64,
    img: &RgbImage,
    compute: &Compute,
) -> Record {
    Record {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kind: "generate".into(),
        prompt: prompt.to_string(),
        negative_prompt: options.negative.clone(),
        model: model.clone(),
        source: None,
        ditail: None,
        seed: Some(seed),
        steps: options.steps,
        omega: options.omega,
        width: img.width(),
        height: img.height(),
        backend: compute.backend.to_string(),
        dtype: dtype_name(compute.dtype).into(),
        embeddings: Vec::new(),
    }
}
