//! Models as users name them: a single `.safetensors` file (Civitai / A1111), a diffusers
//! folder, or a Hugging Face repo id (`org/name[@revision]`); and VAE overrides named the
//! same way.

use std::path::{Path, PathBuf};

use super::diffusers::plan_vae;
use super::hub::{HubOptions, is_hub_id, resolve, resolve_vae};
use super::lora::LoraSpec;
use super::model::{LoadOptions, StableDiffusion};
use super::plan::{ModelPlan, VaePlan};
use super::single_file::{SingleFileConfigs, plan_single_file, plan_vae_file};
use crate::error::{ModelError, Result};

/// Where a model's files are, once a user's spec is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A single-file checkpoint.
    File(PathBuf),
    /// A diffusers folder.
    Folder(PathBuf),
    /// A hub repo id and its snapshot folder in the cache.
    Hub {
        /// The id as given (`org/name[@revision]`).
        id: String,
        /// The diffusers folder it resolved to.
        folder: PathBuf,
    },
}

impl Location {
    /// The diffusers folder, if the model is one (a hub snapshot is).
    pub fn folder(&self) -> Option<&Path> {
        match self {
            Location::File(_) => None,
            Location::Folder(p) | Location::Hub { folder: p, .. } => Some(p),
        }
    }

    /// The file or folder the model's weights are in.
    pub fn path(&self) -> &Path {
        match self {
            Location::File(p) | Location::Folder(p) | Location::Hub { folder: p, .. } => p,
        }
    }
}

/// Whether a spec that does not exist was meant as a file (`dir/model.safetensors`), so
/// that it is reported missing instead of looked up on the hub.
fn names_a_file(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    [".safetensors", ".ckpt", ".pt", ".pth", ".bin"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// The error for a symbolic link that leads nowhere (dangling, or a loop), which would
/// otherwise read as "no such file".
fn broken_link(path: &Path) -> Option<ModelError> {
    path.symlink_metadata().ok()?;
    let source = std::fs::metadata(path).err()?;
    Some(ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Resolves a model spec: an existing file or folder, else a hub repo id (downloaded into
/// the standard cache unless it is there or `HF_HUB_OFFLINE` is set).
pub fn locate_model(spec: &str, opts: LoadOptions) -> Result<Location> {
    let path = Path::new(spec);
    if path.is_file() {
        Ok(Location::File(path.to_path_buf()))
    } else if path.is_dir() {
        Ok(Location::Folder(path.to_path_buf()))
    } else if let Some(e) = broken_link(path) {
        Err(e)
    } else if is_hub_id(spec) && !names_a_file(spec) {
        // Say why a path-like spec went to the hub: a mistyped relative folder reads as
        // `org/name` too.
        let folder =
            resolve(spec, &HubOptions::from_env(), opts.prefers_half()).map_err(|e| match e {
                ModelError::Hub { id, reason } => ModelError::Hub {
                    reason: format!(
                        "{reason} (there is no file or folder `{spec}` in {}, so it was read \
                         as a Hugging Face repo id; --offline or HF_HUB_OFFLINE=1 never downloads)",
                        std::env::current_dir().map_or_else(
                            |_| "the current folder".into(),
                            |d| d.display().to_string()
                        )
                    ),
                    id,
                },
                e => e,
            })?;
        Ok(Location::Hub {
            id: spec.to_string(),
            folder,
        })
    } else {
        Err(ModelError::NotFound {
            spec: spec.to_string(),
            expected: "a .safetensors checkpoint, a diffusers folder or a repo id",
        })
    }
}

/// Plans loading a located model with `loras` merged in (headers, architecture and LoRA
/// keys checked; nothing read); single files use SD1.5's configurations.
pub fn plan_model(location: &Location, opts: LoadOptions, loras: &[LoraSpec]) -> Result<ModelPlan> {
    match location {
        Location::File(path) => plan_single_file(path, &SingleFileConfigs::default(), loras),
        Location::Folder(dir) | Location::Hub { folder: dir, .. } => {
            StableDiffusion::plan_diffusers(dir, opts, loras)
        }
    }
}

/// Plans loading a VAE override: a single file (a VAE alone with or without
/// `first_stage_model.`, or a whole checkpoint whose VAE is taken), a diffusers VAE folder
/// (with `config.json`), a diffusers model folder (its `vae/`), or a hub repo id of either
/// kind.
pub fn plan_vae_spec(spec: &str, opts: LoadOptions) -> Result<VaePlan> {
    let path = Path::new(spec);
    let dir = if path.is_file() {
        return plan_vae_file(path, &SingleFileConfigs::default().vae);
    } else if path.is_dir() {
        if path.join("config.json").is_file() || !path.join("vae").is_dir() {
            path.to_path_buf()
        } else {
            path.join("vae")
        }
    } else if let Some(e) = broken_link(path) {
        return Err(e);
    } else if is_hub_id(spec) && !names_a_file(spec) {
        resolve_vae(spec, &HubOptions::from_env(), opts.prefers_half())?
    } else {
        return Err(ModelError::NotFound {
            spec: spec.to_string(),
            expected: "a VAE .safetensors file, a diffusers VAE or model folder, or a repo id",
        });
    };
    plan_vae(&dir, opts)
}
