//! Hugging Face hub repo ids (`runwayml/stable-diffusion-v1-5`, `org/name@revision`) for
//! diffusers-format models, through the `hf-hub` crate and its standard cache (`$HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`), shared with Python's `huggingface_hub`.
//!
//! Files already in the cache are used without any network access; with `HF_HUB_OFFLINE=1`
//! nothing is downloaded and a missing file is an error naming it and the cache folder.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{ModelError, Result};

/// Where the cache is and whether the network may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubOptions {
    /// The hub cache folder (the one holding `models--org--name/`).
    pub cache_dir: PathBuf,
    /// Never download (`HF_HUB_OFFLINE`).
    pub offline: bool,
}

/// Set by [`set_offline`]: never download, whatever the environment says.
static OFFLINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Never download in this process from now on (the CLI's `--offline`, the C API's
/// `ditail_set_offline`: a switch an embedder can set without touching the environment).
pub fn set_offline(offline: bool) {
    OFFLINE.store(offline, std::sync::atomic::Ordering::SeqCst);
}

impl HubOptions {
    /// From the environment, as `huggingface_hub` reads it: `HF_HOME`, `HF_HUB_OFFLINE`
    /// (or [`set_offline`]).
    pub fn from_env() -> Self {
        let offline = OFFLINE.load(std::sync::atomic::Ordering::SeqCst)
            || std::env::var("HF_HUB_OFFLINE")
                .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"));
        Self {
            cache_dir: Cache::from_env().path().clone(),
            offline,
        }
    }
}

/// Whether `spec` reads as a hub repo id (`org/name`, optionally `@revision`) rather than a
/// local path: it does not exist locally and has exactly one `/` before any `@`.
pub fn is_hub_id(spec: &str) -> bool {
    if Path::new(spec).exists() {
        return false;
    }
    let id = spec.split('@').next().unwrap_or(spec);
    let mut parts = id.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// What a repo must hold: config files (the first one's folder is returned), optional
/// files, and weights as (folder, stem) pairs.
struct Layout {
    required: &'static [&'static str],
    optional: &'static [&'static str],
    weights: &'static [(&'static str, &'static str)],
    /// More of the same, fetched when the first required file (`model_index.json`) names
    /// the given component (SDXL's second text encoder).
    when: Option<(&'static str, &'static Layout)>,
}

/// What an SDXL pipeline repo adds: the second text encoder and its tokenizer (whose
/// `special_tokens_map.json` says it pads with `!`).
const SDXL_EXTRA: Layout = Layout {
    required: &["text_encoder_2/config.json"],
    optional: &[
        "tokenizer_2/vocab.json",
        "tokenizer_2/merges.txt",
        "tokenizer_2/special_tokens_map.json",
        "tokenizer_2/tokenizer_config.json",
    ],
    weights: &[("text_encoder_2", "model")],
    when: None,
};

/// A diffusers pipeline repo (SD1.x, or SDXL with [`SDXL_EXTRA`]).
const PIPELINE: Layout = Layout {
    required: &[
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
    ],
    optional: &[
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
    ],
    weights: &[
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ],
    when: Some(("text_encoder_2", &SDXL_EXTRA)),
};

/// A VAE repo (`stabilityai/sd-vae-ft-mse`): the model at the repo's root.
const VAE_ROOT: Layout = Layout {
    required: &["config.json"],
    optional: &[],
    weights: &[("", "diffusion_pytorch_model")],
    when: None,
};

/// The VAE of a pipeline repo.
const VAE_OF_PIPELINE: Layout = Layout {
    required: &["vae/config.json"],
    optional: &[],
    weights: &[("vae", "diffusion_pytorch_model")],
    when: None,
};

/// A transformers model repo (`openai/clip-vit-large-patch14`, `facebook/dino-vitb8`): the
/// model at the root, a tokenizer beside it where it has one.
const TRANSFORMERS_ROOT: Layout = Layout {
    required: &["config.json"],
    optional: &["vocab.json", "merges.txt"],
    weights: &[("", "model")],
    when: None,
};

/// Makes a transformers model repo available locally (the metric networks of `ditail
/// eval`) and returns the folder holding its `config.json` and `model.safetensors`.
pub fn resolve_transformers(spec: &str, opts: &HubOptions) -> Result<PathBuf> {
    resolve_layout(spec, opts, false, &TRANSFORMERS_ROOT)
}

/// Makes a diffusers repo available locally (cache first, then download unless offline)
/// and returns its snapshot folder, ready for `StableDiffusion::load_diffusers`.
/// `prefer_half` picks the `.fp16.safetensors` weights first.
pub fn resolve(spec: &str, opts: &HubOptions, prefer_half: bool) -> Result<PathBuf> {
    resolve_layout(spec, opts, prefer_half, &PIPELINE)
}

/// Makes a VAE available locally and returns the folder holding its `config.json`: the
/// repo's root for a VAE repo, else the `vae/` folder of a pipeline repo.
pub fn resolve_vae(spec: &str, opts: &HubOptions, prefer_half: bool) -> Result<PathBuf> {
    resolve_layout(spec, opts, prefer_half, &VAE_ROOT)
        .or_else(|root| resolve_layout(spec, opts, prefer_half, &VAE_OF_PIPELINE).map_err(|_| root))
}

fn resolve_layout(
    spec: &str,
    opts: &HubOptions,
    prefer_half: bool,
    layout: &Layout,
) -> Result<PathBuf> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id, rev.to_string()),
        None => (spec, "main".to_string()),
    };
    let repo = Repo::with_revision(id.to_string(), RepoType::Model, revision);
    let cache = Cache::new(opts.cache_dir.clone()).repo(repo.clone());
    let err = |reason: String| ModelError::Hub {
        id: spec.to_string(),
        reason,
    };
    let api = if opts.offline {
        None
    } else {
        Some(
            ApiBuilder::from_cache(Cache::new(opts.cache_dir.clone()))
                .with_progress(true)
                .build()
                .map_err(|e| err(format!("cannot set up the hub client: {e}")))?
                .repo(repo),
        )
    };
    let fetch = |file: &str| -> std::result::Result<PathBuf, String> {
        if let Some(p) = cache.get(file) {
            return Ok(p);
        }
        match &api {
            None => Err(format!(
                "`{file}` is not in the Hugging Face cache at {} and downloads are off \
                 (HF_HUB_OFFLINE, --offline or ditail_set_offline)",
                opts.cache_dir.display()
            )),
            Some(api) => api.get(file).map_err(|e| {
                format!(
                    "`{file}` is not in the cache at {} and could not be downloaded: {e}",
                    opts.cache_dir.display()
                )
            }),
        }
    };

    let index = fetch(layout.required[0]).map_err(err)?;
    let mut parts = vec![layout];
    if let Some((component, extra)) = layout.when {
        let names = std::fs::read_to_string(&index)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|j| j.get(component).is_some_and(|v| !v.is_null()));
        if names {
            parts.push(extra);
        }
    }
    // The index is fetched already; fetching it again is a cache hit.
    for file in parts.iter().flat_map(|p| p.required) {
        fetch(file).map_err(err)?;
    }
    for file in parts.iter().flat_map(|p| p.optional) {
        let _ = fetch(file);
    }
    for (dir, stem) in parts.iter().flat_map(|p| p.weights) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names = [
            format!("{prefix}{stem}.safetensors"),
            format!("{prefix}{stem}.fp16.safetensors"),
        ];
        if prefer_half {
            names.reverse();
        }
        // Weights already cached in either precision are used before anything is downloaded.
        if names.iter().any(|n| cache.get(n).is_some()) {
            continue;
        }
        let mut tried = Vec::new();
        let found = names.iter().any(|n| match fetch(n) {
            Ok(_) => true,
            Err(e) => {
                tried.push(e);
                false
            }
        });
        if !found {
            return Err(err(tried.join("; ")));
        }
    }
    Ok(index
        .parent()
        .expect("a cached file has a folder")
        .to_path_buf())
}
