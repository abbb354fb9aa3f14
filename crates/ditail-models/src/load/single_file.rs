//! Civitai/A1111 single-file checkpoints, SD1.x (LDM key layout) and SDXL (Stability's
//! `sgm` layout: `conditioner.embedders.{0,1}`), and single-file VAEs.
//!
//! The file is memory-mapped once; each tensor is renamed through [`super::ldm`] and
//! converted to the model's float type when applied, so the checkpoint is never held twice.
//! EMA copies (`model_ema.*`) and the LDM scheduler buffers (`betas`, `alphas_cumprod`, ...)
//! are ignored; the tokenizers (CLIP's vocabulary; SDXL's second pads with `!`) and the
//! scheduler (SD1.5's, which SDXL shares) are shipped with ditail.

use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;

use super::ldm::{self, Architecture};
use super::lora::{LoraSet, LoraSpec};
use super::model::{LoadOptions, StableDiffusion};
use super::plan::{ComponentPlan, ModelPlan, SecondEncoderPlan, VaePlan};
use super::{Component, Source, TensorEntry, WeightFile, check_dtypes};
use crate::Family;
use crate::clip::ClipTextConfig;
use crate::error::{ModelError, Result};
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNetConfig;
use crate::vae::{AutoencoderKl, VaeConfig};

/// The configurations a single file is loaded with (SD1.5's or SDXL's unless overridden:
/// the file does not say, e.g., how many attention heads there are).
#[derive(Clone, Debug)]
pub struct SingleFileConfigs {
    /// U-Net.
    pub unet: UNetConfig,
    /// VAE.
    pub vae: VaeConfig,
    /// Text encoder (SDXL: the first).
    pub text: ClipTextConfig,
    /// SDXL's second text encoder (unused for SD1.x files).
    pub text_2: ClipTextConfig,
}

impl Default for SingleFileConfigs {
    /// SD1.5's.
    fn default() -> Self {
        Self {
            unet: UNetConfig::sd15(),
            vae: VaeConfig::sd15(),
            text: ClipTextConfig::sd15(),
            text_2: ClipTextConfig::sdxl_bigg(),
        }
    }
}

impl SingleFileConfigs {
    /// SDXL 1.0 base's.
    pub fn sdxl() -> Self {
        Self {
            unet: UNetConfig::sdxl(),
            vae: VaeConfig::sdxl(),
            text: ClipTextConfig::sd15(),
            text_2: ClipTextConfig::sdxl_bigg(),
        }
    }

    /// These configurations if they are of `family`, else that family's standard ones.
    fn for_family(&self, family: Family) -> Self {
        match (family, self.unet.family() == family) {
            (_, true) => self.clone(),
            (Family::Sd1, false) => Self::default(),
            (Family::Sdxl, false) => Self::sdxl(),
        }
    }
}

/// Refuses `.ckpt` / `.pt` / `.pth` / `.bin` files (PyTorch pickles) with the command that
/// converts them.
pub fn reject_pickle(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if matches!(ext.as_deref(), Some("ckpt" | "pt" | "pth" | "bin")) {
        return Err(ModelError::Pickle {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The family of a checkpoint `file`; fails unless it is SD1.x or SDXL base, naming what it
/// is otherwise.
pub fn check_architecture(file: &WeightFile) -> Result<Family> {
    let shape = |k: &str| {
        file.tensors()
            .iter()
            .find(|e| e.name == k)
            .map(|e| e.shape.clone())
    };
    match ldm::detect(file.tensors().iter().map(|e| e.name.as_str()), shape) {
        Architecture::Sd1 => Ok(Family::Sd1),
        Architecture::Sdxl => Ok(Family::Sdxl),
        Architecture::Unsupported(found) => Err(ModelError::UnsupportedArchitecture {
            path: file.path().to_path_buf(),
            found,
        }),
    }
}

/// A tensor under its diffusers name; the VAE attention's 1x1 convolutions become the
/// linears the model has.
fn renamed(file: &Arc<WeightFile>, entry: &TensorEntry, key: String) -> (String, Source) {
    let mut source = Source::whole(file, entry);
    if ldm::vae_conv_to_linear(&key) && entry.shape.len() == 4 {
        source.reshape = Some(entry.shape[..2].to_vec());
    }
    (key, source)
}

/// The tensors of one component under diffusers names.
fn component_sources(
    file: &Arc<WeightFile>,
    component: Component,
    configs: &SingleFileConfigs,
) -> Vec<(String, Source)> {
    let mut out = Vec::new();
    for entry in file.tensors() {
        let Some((c, rest)) = ldm::component_of(&entry.name) else {
            continue;
        };
        if c != component {
            continue;
        }
        if c == Component::TextEncoder2 {
            out.extend(openclip_sources(file, entry, rest));
            continue;
        }
        let key = match c {
            Component::Unet => ldm::unet_key(rest, configs.unet.layers_per_block),
            Component::Vae => ldm::vae_key(rest, configs.vae.block_out_channels.len()),
            Component::TextEncoder => Some(ldm::text_key(rest)),
            // Single-file checkpoints hold only SD's three networks.
            _ => None,
        };
        // Unmapped keys keep their LDM name, so the mismatch report shows them.
        out.push(renamed(
            file,
            entry,
            key.unwrap_or_else(|| entry.name.clone()),
        ));
    }
    out
}

/// The sources an OpenCLIP tensor of SDXL's second text encoder feeds (see
/// [`ldm::openclip_key`]); an unknown key keeps its name for the mismatch report.
fn openclip_sources(
    file: &Arc<WeightFile>,
    entry: &TensorEntry,
    rest: &str,
) -> Vec<(String, Source)> {
    let Some(parts) = ldm::openclip_key(rest) else {
        return vec![(entry.name.clone(), Source::whole(file, entry))];
    };
    parts
        .into_iter()
        .map(|part| {
            let mut source = Source::whole(file, entry);
            if let (Some(i), Some(&rows)) = (part.third, entry.shape.first()) {
                let third = rows / 3;
                source.rows = Some(i * third..(i + 1) * third);
            }
            source.transpose = part.transpose;
            (part.key, source)
        })
        .collect()
}

/// Plans loading a single-file checkpoint (SD1.x or SDXL), merging `loras` into its U-Net
/// and text encoders: the header, the architecture and every LoRA key are checked here.
/// `configs` are used when they are of the file's family, else that family's standard
/// ones.
pub fn plan_single_file(
    path: &Path,
    configs: &SingleFileConfigs,
    loras: &[LoraSpec],
) -> Result<ModelPlan> {
    reject_pickle(path)?;
    let file = WeightFile::open(path)?;
    let family = check_architecture(&file)?;
    let configs = &configs.for_family(family);
    let mut loras = LoraSet::open(loras)?;
    loras.check_family(family)?;
    let desc = path.display().to_string();
    let mut text_sources = component_sources(&file, Component::TextEncoder, configs);
    let mut unet_sources = component_sources(&file, Component::Unet, configs);
    let vae_sources = component_sources(&file, Component::Vae, configs);
    check_dtypes(Component::TextEncoder, &text_sources)?;
    check_dtypes(Component::Unet, &unet_sources)?;
    check_dtypes(Component::Vae, &vae_sources)?;
    loras.attach(Component::TextEncoder, &mut text_sources);
    let text_2_sources = match family {
        Family::Sdxl => {
            let mut sources = component_sources(&file, Component::TextEncoder2, configs);
            check_dtypes(Component::TextEncoder2, &sources)?;
            loras.attach(Component::TextEncoder2, &mut sources);
            Some(sources)
        }
        Family::Sd1 => None,
    };
    loras.attach_unet(&mut unet_sources, &configs.unet);
    loras.check_all_used()?;
    let plan = |sources| ComponentPlan {
        sources,
        desc: desc.clone(),
    };
    let model = ModelPlan {
        tokenizer: ClipTokenizer::sd15(),
        text_config: configs.text.clone(),
        text: plan(text_sources),
        unet_config: configs.unet.clone(),
        unet: plan(unet_sources),
        vae: VaePlan {
            config: configs.vae.clone(),
            weights: plan(vae_sources),
        },
        text_2: text_2_sources.map(|sources| SecondEncoderPlan {
            tokenizer: ClipTokenizer::sdxl_second(),
            config: configs.text_2.clone(),
            weights: plan(sources),
        }),
    };
    model.check(path)?;
    Ok(model)
}

/// Loads a single-file checkpoint, merging `loras` into its U-Net and text encoders (see
/// [`plan_single_file`]).
pub fn load_single_file(
    path: &Path,
    device: &Device,
    opts: LoadOptions,
    configs: &SingleFileConfigs,
    loras: &[LoraSpec],
) -> Result<StableDiffusion> {
    plan_single_file(path, configs, loras)?.load(device, opts)
}

/// Plans loading a single-file VAE: LDM names without a prefix
/// (`vae-ft-mse-840000-ema-pruned.safetensors` style), or a whole checkpoint's
/// `first_stage_model.*` (its other networks are skipped).
pub fn plan_vae_file(path: &Path, config: &VaeConfig) -> Result<VaePlan> {
    reject_pickle(path)?;
    let file = WeightFile::open(path)?;
    let blocks = config.block_out_channels.len();
    let whole_checkpoint = file
        .tensors()
        .iter()
        .any(|e| e.name.starts_with("first_stage_model."));
    let sources = file
        .tensors()
        .iter()
        .filter(|e| {
            if whole_checkpoint {
                e.name.starts_with("first_stage_model.")
            } else {
                !e.name.starts_with("model_ema.") && !e.name.starts_with("loss.")
            }
        })
        .map(|e| {
            let rest = e.name.strip_prefix("first_stage_model.").unwrap_or(&e.name);
            renamed(
                &file,
                e,
                ldm::vae_key(rest, blocks).unwrap_or_else(|| e.name.clone()),
            )
        })
        .collect::<Vec<_>>();
    check_dtypes(Component::Vae, &sources)?;
    Ok(VaePlan {
        config: config.clone(),
        weights: ComponentPlan {
            sources,
            desc: path.display().to_string(),
        },
    })
}

/// Loads a single-file VAE (see [`plan_vae_file`]).
pub fn load_vae_file(
    path: &Path,
    device: &Device,
    opts: LoadOptions,
    config: &VaeConfig,
) -> Result<AutoencoderKl> {
    plan_vae_file(path, config)?.load(device, opts)
}
