//! The metric networks of `ditail eval`: CLIP (`CLIPModel`), DINO (`ViTModel`) and
//! pytorch-fid's InceptionV3.
//!
//! CLIP and DINO are named as a transformers folder (`config.json`, `model.safetensors`,
//! and for CLIP the tokenizer's `vocab.json`/`merges.txt`), a hub id, or a single
//! `.safetensors` file, which then takes the standard network's configuration (CLIP
//! ViT-L/14, DINO ViT-B/8). InceptionV3 is a `.safetensors` file of pytorch-fid's weights
//! (its `.pth` is a pickle: the error prints the one-line conversion). Weights of another
//! network fail with the keys that do not fit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::FloatDType;

use super::clip_model::{ClipConfig, ClipModel};
use super::inception::InceptionV3;
use super::vit::{VitConfig, VitModel};
use ditail_models::error::{ModelError, Result};
use ditail_models::load::WeightFiles;
use ditail_models::load::hub::{self, HubOptions};
use ditail_models::load::reject_pickle;
use ditail_models::load::{Component, WeightFile, describe, load_into};
use ditail_models::tokenizer::ClipTokenizer;

/// The metric networks load in f32: the metrics compare small differences.
const DTYPE: FloatDType = FloatDType::F32;

/// Where a transformers model's files are.
enum Found {
    /// A folder with `config.json`.
    Folder(PathBuf),
    /// Weights alone.
    File(PathBuf),
}

fn locate(spec: &str, hub_opts: &HubOptions) -> Result<Found> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(Found::Folder(path.to_path_buf()));
    }
    if path.is_file() {
        reject_pickle(path)?;
        return Ok(Found::File(path.to_path_buf()));
    }
    if hub::is_hub_id(spec) {
        return hub::resolve_transformers(spec, hub_opts).map(Found::Folder);
    }
    Err(ModelError::NotFound {
        spec: spec.to_string(),
        expected: "a transformers model folder, a .safetensors file or a Hugging Face repo id",
    })
}

fn open_all(paths: &[PathBuf]) -> Result<Vec<Arc<WeightFile>>> {
    paths.iter().map(|p| WeightFile::open(p)).collect()
}

/// The weights of a transformers folder (`model.safetensors`, sharded or not).
fn folder_weights(dir: &Path, what: &'static str) -> Result<Vec<Arc<WeightFile>>> {
    open_all(&WeightFiles::find(dir, "model", what, DTYPE)?.files)
}

/// A CLIP model and the tokenizer of its prompts.
#[derive(Debug)]
pub struct Clip {
    /// The model.
    pub model: ClipModel,
    /// Its tokenizer (the folder's, else CLIP's own vocabulary, which ditail ships).
    pub tokenizer: ClipTokenizer,
}

/// A CLIP model located and checked (configuration parsed, file headers read, a key only
/// a `CLIPModel` has found), nothing loaded yet: cheap, so a command checks it before its
/// long work.
#[derive(Clone, Debug)]
pub struct ClipPlan {
    config: ClipConfig,
    files: Vec<Arc<WeightFile>>,
    tokenizer: ClipTokenizer,
}

/// Locates and checks a `CLIPModel` (folder, hub id or `.safetensors` file of ViT-L/14).
pub fn plan_clip(spec: &str, hub_opts: &HubOptions) -> Result<ClipPlan> {
    let (config, files, tokenizer) = match locate(spec, hub_opts)? {
        Found::Folder(dir) => {
            let config = ClipConfig::from_json_file(&dir.join("config.json"))?;
            let tokenizer = if dir.join("vocab.json").is_file() {
                ClipTokenizer::from_dir(&dir)?
            } else {
                ClipTokenizer::sd15()
            };
            (config, folder_weights(&dir, "CLIP weights")?, tokenizer)
        }
        Found::File(path) => (
            ClipConfig::vit_l14(),
            open_all(&[path])?,
            ClipTokenizer::sd15(),
        ),
    };
    expect_key(&files, Component::ClipModel, "visual_projection.weight")?;
    Ok(ClipPlan {
        config,
        files,
        tokenizer,
    })
}

impl ClipPlan {
    /// Reads the weights.
    pub fn load(self, device: &Device) -> Result<Clip> {
        let mut model = self.config.init(device);
        load_into(&mut model, Component::ClipModel, &self.files, DTYPE)?;
        model.logit_scale = scalar(&self.files, "logit_scale")?;
        Ok(Clip {
            model,
            tokenizer: self.tokenizer,
        })
    }
}

/// Loads a `CLIPModel` (see [`plan_clip`]).
pub fn load_clip(spec: &str, device: &Device, hub_opts: &HubOptions) -> Result<Clip> {
    plan_clip(spec, hub_opts)?.load(device)
}

/// Fails, naming the files, unless they hold `key`: a quick check that they are weights of
/// the expected network before anything is read.
fn expect_key(files: &[Arc<WeightFile>], component: Component, key: &str) -> Result<()> {
    if files
        .iter()
        .any(|f| f.tensors().iter().any(|e| e.name == key))
    {
        return Ok(());
    }
    Err(ModelError::WeightsMismatch {
        component: component.name(),
        source_desc: describe(files),
        details: format!(
            "\n  missing from the files (not a {} checkpoint?):\n    {key}",
            component.name()
        ),
    })
}

/// The 0-d (or one-element) tensor `key` of `files`, as f32.
fn scalar(files: &[Arc<WeightFile>], key: &str) -> Result<f32> {
    for file in files {
        if let Some(e) = file.tensors().iter().find(|e| e.name == key) {
            let values = ditail_models::load::decode_f32(file.raw(e), e.dtype);
            return match values.as_slice() {
                [v] if v.is_finite() => Ok(*v),
                _ => Err(ModelError::InvalidInput {
                    name: format!("{}: `{key}`", file.path().display()),
                    reason: format!("expected one finite number, found {values:?}"),
                }),
            };
        }
    }
    Err(ModelError::WeightsMismatch {
        component: Component::ClipModel.name(),
        source_desc: describe(files),
        details: format!("\n  missing from the files (1):\n    {key}"),
    })
}

/// A ViT located and checked (see [`ClipPlan`]).
#[derive(Clone, Debug)]
pub struct VitPlan {
    config: VitConfig,
    files: Vec<Arc<WeightFile>>,
}

/// Locates and checks a DINO `ViTModel` (folder, hub id or `.safetensors` file of ViT-B/8).
pub fn plan_vit(spec: &str, hub_opts: &HubOptions) -> Result<VitPlan> {
    let (config, files) = match locate(spec, hub_opts)? {
        Found::Folder(dir) => (
            VitConfig::from_json_file(&dir.join("config.json"))?,
            folder_weights(&dir, "ViT weights")?,
        ),
        Found::File(path) => (VitConfig::dino_vitb8(), open_all(&[path])?),
    };
    expect_key(&files, Component::Vit, "embeddings.cls_token")?;
    Ok(VitPlan { config, files })
}

impl VitPlan {
    /// Reads the weights.
    pub fn load(self, device: &Device) -> Result<VitModel> {
        let mut model = self.config.init(device);
        load_into(&mut model, Component::Vit, &self.files, DTYPE)?;
        Ok(model)
    }
}

/// Loads a DINO `ViTModel` (see [`plan_vit`]).
pub fn load_vit(spec: &str, device: &Device, hub_opts: &HubOptions) -> Result<VitModel> {
    plan_vit(spec, hub_opts)?.load(device)
}

/// Loads pytorch-fid's InceptionV3 from a `.safetensors` file of its weights
/// (`pt_inception-2015-12-05-6726825d.pth`, converted).
pub fn load_inception(path: &Path, device: &Device) -> Result<InceptionV3> {
    if !path.is_file() {
        return Err(ModelError::NotFound {
            spec: path.display().to_string(),
            expected: "a .safetensors file of pytorch-fid's InceptionV3 weights",
        });
    }
    reject_pickle(path)?;
    let mut model = InceptionV3::init(device);
    load_into(
        &mut model,
        Component::Inception,
        &[WeightFile::open(path)?],
        DTYPE,
    )?;
    Ok(model)
}
