//! Diffusers model folders: `unet/`, `vae/`, `text_encoder/`, `tokenizer/` (and SDXL's
//! `text_encoder_2/`, `tokenizer_2/`), each with its `config.json` and weights
//! (`*.safetensors`, the `.fp16.safetensors` variant, or shards listed in
//! `*.safetensors.index.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::FloatDType;

use super::lora::{LoraSet, LoraSpec};
use super::model::{LoadOptions, StableDiffusion};
use super::plan::{ComponentPlan, ModelPlan, SecondEncoderPlan, VaePlan};
use super::{Component, WeightFile, check_dtypes, describe, folder_sources, load_into};
use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::error::{ModelError, Result};
use crate::json::JsonConfig;
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKl, VaeConfig};

/// The weight files chosen for one component folder.
#[derive(Clone, Debug)]
pub struct WeightFiles {
    /// The files (several when sharded).
    pub files: Vec<PathBuf>,
}

impl WeightFiles {
    /// Picks the weights in `dir` named `stem` (`diffusion_pytorch_model` or `model`):
    /// full precision first when loading f32, the `fp16` variant first when loading f16,
    /// either when only one exists; a sharded index is followed.
    pub fn find(dir: &Path, stem: &str, what: &'static str, dtype: FloatDType) -> Result<Self> {
        let half_first = LoadOptions { dtype }.prefers_half();
        let mut variants = [
            format!("{stem}.safetensors"),
            format!("{stem}.fp16.safetensors"),
        ];
        if half_first {
            variants.reverse();
        }
        for name in &variants {
            let single = dir.join(name);
            if single.is_file() {
                return Ok(Self {
                    files: vec![single],
                });
            }
            let index = dir.join(format!("{name}.index.json"));
            if index.is_file() {
                return Self::from_index(dir, &index);
            }
        }
        let pickles = [
            format!("{stem}.bin"),
            format!("{stem}.fp16.bin"),
            format!("{stem}.ckpt"),
        ];
        if let Some(p) = pickles.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                what,
                looked_for: format!(
                    "{} (found {}, a PyTorch pickle, which ditail does not unpickle; convert it with \
                     `python -c \"import torch, safetensors.torch as s; s.save_file(torch.load('{}', weights_only=True), '{}')\"`)",
                    variants.join(", "),
                    p.display(),
                    p.display(),
                    dir.join(&variants[0]).display()
                ),
            });
        }
        Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            what,
            looked_for: variants
                .iter()
                .flat_map(|v| [v.clone(), format!("{v}.index.json")])
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn from_index(dir: &Path, index: &Path) -> Result<Self> {
        let j = JsonConfig::read(index)?;
        let map: std::collections::BTreeMap<String, String> =
            j.get("weight_map", Default::default())?;
        let mut files: Vec<PathBuf> = map.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(j.error("`weight_map` lists no files"));
        }
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(j.error(format!("shard {} is listed but missing", missing.display())));
        }
        Ok(Self { files })
    }

    /// Opens every file (headers only).
    pub fn open(&self) -> Result<Vec<Arc<WeightFile>>> {
        self.files.iter().map(|f| WeightFile::open(f)).collect()
    }
}

fn config_path(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("config.json");
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            what: "model config",
            looked_for: "config.json".into(),
        })
    }
}

/// A component folder's configuration and tensors.
fn plan_folder<C>(
    dir: &Path,
    stem: &str,
    what: &'static str,
    opts: LoadOptions,
    read_config: impl Fn(&Path) -> Result<C>,
) -> Result<(C, Vec<Arc<WeightFile>>)> {
    let config = read_config(&config_path(dir)?)?;
    let files = WeightFiles::find(dir, stem, what, opts.dtype)?.open()?;
    Ok((config, files))
}

/// A component's tensors with the LoRA updates attached (the U-Net's matched by its
/// diffusers and its LDM module names, given its configuration).
fn component_plan(
    files: &[Arc<WeightFile>],
    component: Component,
    lora: Option<(&mut LoraSet, Option<&UNetConfig>)>,
) -> Result<ComponentPlan> {
    let mut sources = folder_sources(files, component);
    check_dtypes(component, &sources)?;
    match lora {
        Some((lora, Some(unet))) => lora.attach_unet(&mut sources, unet),
        Some((lora, None)) => lora.attach(component, &mut sources),
        None => {}
    }
    Ok(ComponentPlan {
        sources,
        desc: describe(files),
    })
}

/// Plans loading a diffusers `vae/` folder.
pub fn plan_vae(dir: &Path, opts: LoadOptions) -> Result<VaePlan> {
    let (config, files) = plan_folder(
        dir,
        "diffusion_pytorch_model",
        "VAE weights",
        opts,
        VaeConfig::from_json_file,
    )?;
    Ok(VaePlan {
        config,
        weights: component_plan(&files, Component::Vae, None)?,
    })
}

/// Loads a diffusers `unet/` folder.
pub fn load_unet(
    dir: &Path,
    device: &Device,
    opts: LoadOptions,
) -> Result<(UNet2DConditionModel, UNetConfig)> {
    let (config, files) = plan_folder(
        dir,
        "diffusion_pytorch_model",
        "U-Net weights",
        opts,
        UNetConfig::from_json_file,
    )?;
    let mut model = config.init(device);
    load_into(&mut model, Component::Unet, &files, opts.dtype)?;
    Ok((model, config))
}

/// Loads a diffusers `vae/` folder.
pub fn load_vae(
    dir: &Path,
    device: &Device,
    opts: LoadOptions,
) -> Result<(AutoencoderKl, VaeConfig)> {
    plan_vae(dir, opts)?.load_with_config(device, opts)
}

/// Loads a transformers `text_encoder/` (or SDXL's `text_encoder_2/`) folder.
pub fn load_text_encoder(
    dir: &Path,
    device: &Device,
    opts: LoadOptions,
) -> Result<(ClipTextModel, ClipTextConfig)> {
    let (config, files) = plan_folder(
        dir,
        "model",
        "text encoder weights",
        opts,
        ClipTextConfig::from_json_file,
    )?;
    let mut model = config.init(device);
    let component = match config.projection_dim {
        Some(_) => Component::TextEncoder2,
        None => Component::TextEncoder,
    };
    load_into(&mut model, component, &files, opts.dtype)?;
    Ok((model, config))
}

/// The second tokenizer of an SDXL diffusers folder: its `tokenizer_2/` when present, else
/// the shipped CLIP vocabulary padding with `!` (SDXL's).
pub fn load_tokenizer_2(model_dir: &Path) -> Result<ClipTokenizer> {
    let dir = model_dir.join("tokenizer_2");
    if dir.join("vocab.json").is_file() {
        ClipTokenizer::from_dir_or_pad(&dir, "!")
    } else {
        Ok(ClipTokenizer::sdxl_second())
    }
}

/// The tokenizer of a diffusers folder: its `tokenizer/` when present, else the shipped
/// CLIP vocabulary (SD1.x and SDXL checkpoints all use it).
pub fn load_tokenizer(model_dir: &Path) -> Result<ClipTokenizer> {
    let dir = model_dir.join("tokenizer");
    if dir.join("vocab.json").is_file() {
        ClipTokenizer::from_dir(&dir)
    } else {
        Ok(ClipTokenizer::sd15())
    }
}

/// Fails unless the text encoders' widths are what the U-Net reads: the cross-attention
/// width (SDXL: the two hidden sizes side by side) and, for SDXL, the added embedding's
/// input (the pooled projection plus six projected sizes).
fn check_text_widths(
    dir: &Path,
    unet: &UNetConfig,
    text: &ClipTextConfig,
    text_2: Option<&ClipTextConfig>,
) -> Result<()> {
    let err = |reason: String| ModelError::Config {
        path: dir.to_path_buf(),
        reason,
    };
    let width = text.hidden_size + text_2.map_or(0, |t| t.hidden_size);
    if width != unet.cross_attention_dim {
        let what = match text_2 {
            Some(_) => "the text encoders' hidden sizes add up to",
            None => "the text encoder's hidden_size is",
        };
        return Err(err(format!(
            "{what} {width}, but the U-Net's cross_attention_dim is {}",
            unet.cross_attention_dim
        )));
    }
    match (unet.has_added_conditioning(), text_2) {
        (true, None) => Err(err(
            "the U-Net is SDXL's (addition_embed_type \"text_time\") but the folder has no \
             text_encoder_2/"
                .into(),
        )),
        (false, Some(_)) => Err(err(
            "the folder has a text_encoder_2/ but its U-Net takes no pooled text (not SDXL)".into(),
        )),
        (true, Some(t2)) => {
            let pooled = t2.projection_dim.unwrap_or(0);
            let sizes = 6 * unet.addition_time_embed_dim.unwrap_or(0);
            let want = unet.projection_class_embeddings_input_dim.unwrap_or(0);
            if t2.projection_dim.is_none() || pooled + sizes != want {
                return Err(err(format!(
                    "text_encoder_2 must be a CLIPTextModelWithProjection whose projection_dim \
                     ({pooled}) plus 6 x addition_time_embed_dim ({sizes}) is the U-Net's \
                     projection_class_embeddings_input_dim ({want})"
                )));
            }
            Ok(())
        }
        (false, None) => Ok(()),
    }
}

impl StableDiffusion {
    /// The model's family (SD1.x or SDXL).
    pub fn family(&self) -> crate::Family {
        self.unet_config.family()
    }

    /// Plans loading a diffusers folder (`model_index.json` beside `unet/`, `vae/`,
    /// `text_encoder/`) with `loras` merged into the U-Net and text encoder: configurations,
    /// file headers and LoRA key matches are checked, no weight is read.
    pub fn plan_diffusers(dir: &Path, opts: LoadOptions, loras: &[LoraSpec]) -> Result<ModelPlan> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                what: "diffusers model folder",
                looked_for: "a folder with unet/, vae/ and text_encoder/".into(),
            });
        }
        let (text_config, text_files) = plan_folder(
            &dir.join("text_encoder"),
            "model",
            "text encoder weights",
            opts,
            ClipTextConfig::from_json_file,
        )?;
        let (unet_config, unet_files) = plan_folder(
            &dir.join("unet"),
            "diffusion_pytorch_model",
            "U-Net weights",
            opts,
            UNetConfig::from_json_file,
        )?;
        let second = dir.join("text_encoder_2");
        let text_2 = match second.is_dir() {
            true => Some(plan_folder(
                &second,
                "model",
                "second text encoder weights",
                opts,
                ClipTextConfig::from_json_file,
            )?),
            false => None,
        };
        check_text_widths(
            dir,
            &unet_config,
            &text_config,
            text_2.as_ref().map(|t| &t.0),
        )?;
        let vae = plan_vae(&dir.join("vae"), opts)?;
        let mut lora = LoraSet::open(loras)?;
        lora.check_family(unet_config.family())?;
        let text = component_plan(&text_files, Component::TextEncoder, Some((&mut lora, None)))?;
        let text_2 = match text_2 {
            Some((config, files)) => Some(SecondEncoderPlan {
                tokenizer: load_tokenizer_2(dir)?,
                config,
                weights: component_plan(&files, Component::TextEncoder2, Some((&mut lora, None)))?,
            }),
            None => None,
        };
        let unet = component_plan(
            &unet_files,
            Component::Unet,
            Some((&mut lora, Some(&unet_config))),
        )?;
        lora.check_all_used()?;
        let plan = ModelPlan {
            tokenizer: load_tokenizer(dir)?,
            text_config,
            text,
            unet_config,
            unet,
            vae,
            text_2,
        };
        plan.check(dir)?;
        Ok(plan)
    }

    /// Loads a diffusers folder (see [`StableDiffusion::plan_diffusers`]).
    pub fn load_diffusers(
        dir: &Path,
        device: &Device,
        opts: LoadOptions,
        loras: &[LoraSpec],
    ) -> Result<Self> {
        Self::plan_diffusers(dir, opts, loras)?.load(device, opts)
    }
}
