//! The U-Net's configuration, read from a diffusers `unet/config.json`.

use std::path::Path;

use burn::prelude::*;
use serde_json::Value;

use crate::error::Result;
use crate::json::JsonConfig;

/// Configuration of a Stable Diffusion U-Net (SD1.x and SDXL); field names follow
/// diffusers' `config.json`.
#[derive(Config, Debug)]
pub struct UNetConfig {
    /// Latent channels in.
    #[config(default = 4)]
    pub in_channels: usize,
    /// Latent channels out.
    #[config(default = 4)]
    pub out_channels: usize,
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, one per resolution.
    pub down_block_types: Vec<String>,
    /// `UpBlock2D` or `CrossAttnUpBlock2D`, one per resolution, deepest first.
    pub up_block_types: Vec<String>,
    /// Channels of each down block (the up path mirrors them).
    pub block_out_channels: Vec<usize>,
    /// ResNets per down block (up blocks have one more).
    #[config(default = 2)]
    pub layers_per_block: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Width of the text embedding the cross-attention reads.
    #[config(default = 768)]
    pub cross_attention_dim: usize,
    /// Attention heads per down block. SD1.x configs store this as `attention_head_dim`
    /// (a diffusers misnomer kept for compatibility); `num_attention_heads` wins if set.
    pub num_attention_heads: Vec<usize>,
    /// Transformer blocks per `Transformer2DModel`, one count per down block (SD1.x: 1
    /// everywhere; SDXL: 1, 2, 10). The up blocks take the list reversed, the mid block its
    /// last value.
    pub transformer_layers_per_block: Vec<usize>,
    /// Whether the transformers' `proj_in`/`proj_out` are linear layers (SDXL) rather than
    /// 1x1 convolutions (SD1.x).
    #[config(default = false)]
    pub use_linear_projection: bool,
    /// Width of the sinusoidal projection of each of SDXL's six micro-conditioning numbers
    /// (`addition_time_embed_dim`, 256); `None` without an added embedding (SD1.x).
    #[config(default = "None")]
    pub addition_time_embed_dim: Option<usize>,
    /// Input width of SDXL's `add_embedding` (`projection_class_embeddings_input_dim`: the
    /// pooled text embedding plus six projected numbers, 2816); `None` for SD1.x.
    #[config(default = "None")]
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Whether the timestep projection is `[cos | sin]`.
    #[config(default = true)]
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the timestep projection.
    #[config(default = 0.0)]
    pub freq_shift: f64,
}

impl UNetConfig {
    /// Stable Diffusion 1.5's U-Net
    /// ([`unet/config.json`](https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/unet/config.json)).
    pub fn sd15() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self::new(
            s(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            s(&[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]),
            vec![320, 640, 1280, 1280],
            vec![8; 4],
            vec![1; 4],
        )
    }

    /// Stable Diffusion XL 1.0's U-Net
    /// ([`unet/config.json`](https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/main/unet/config.json)):
    /// three resolutions, no attention in the first down and last up block, transformer
    /// depths 1 / 2 / 10, linear projections, pooled-text and size conditioning (`text_time`).
    pub fn sdxl() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self::new(
            s(&[
                "DownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
            ]),
            s(&["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]),
            vec![320, 640, 1280],
            vec![5, 10, 20],
            vec![1, 2, 10],
        )
        .with_cross_attention_dim(2048)
        .with_use_linear_projection(true)
        .with_addition_time_embed_dim(Some(256))
        .with_projection_class_embeddings_input_dim(Some(2816))
    }

    /// Whether the U-Net takes SDXL's added conditioning (pooled text and sizes).
    pub fn has_added_conditioning(&self) -> bool {
        self.addition_time_embed_dim.is_some()
    }

    /// Whether a U-Net of this configuration visits `site` (so sites are checked before any
    /// weight is read).
    pub fn has_site(&self, site: crate::Site) -> bool {
        use crate::{Site, Stage};
        let n = self.block_out_channels.len();
        let layers = self.layers_per_block;
        let (stage, block) = match site {
            Site::Resnet { stage, block, .. } | Site::SelfAttn { stage, block, .. } => {
                (stage, block as usize)
            }
        };
        // (resnets, transformer depth if the block has attention)
        let shape = match stage {
            Stage::Down if block < n => (
                layers,
                self.down_block_types[block]
                    .starts_with("CrossAttn")
                    .then(|| (layers, self.transformer_layers_per_block[block])),
            ),
            Stage::Mid if block == 0 => (2, Some((1, self.transformer_layers_per_block[n - 1]))),
            Stage::Up if block < n => (
                layers + 1,
                self.up_block_types[block]
                    .starts_with("CrossAttn")
                    .then(|| (layers + 1, self.transformer_layers_per_block[n - 1 - block])),
            ),
            _ => return false,
        };
        match (site, shape) {
            (Site::Resnet { layer, .. }, (resnets, _)) => (layer as usize) < resnets,
            (Site::SelfAttn { layer, depth, .. }, (_, Some((attns, d)))) => {
                (layer as usize) < attns && (depth as usize) < d
            }
            (Site::SelfAttn { .. }, (_, None)) => false,
        }
    }

    /// The model family: SDXL when the U-Net takes the added conditioning, else SD1.x.
    pub fn family(&self) -> crate::Family {
        match self.has_added_conditioning() {
            true => crate::Family::Sdxl,
            false => crate::Family::Sd1,
        }
    }

    /// Reads a diffusers `unet/config.json`, rejecting what this port does not implement
    /// (with the key and value named) rather than running a different network.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let j = JsonConfig::read(path)?;
        Self::from_json(&j)
    }

    /// See [`UNetConfig::from_json_file`].
    pub fn from_json(j: &JsonConfig) -> Result<Self> {
        let d = Self::sd15();
        let down: Vec<String> = j.get("down_block_types", d.down_block_types)?;
        let up: Vec<String> = j.get("up_block_types", d.up_block_types)?;
        let ch: Vec<usize> = j.get("block_out_channels", d.block_out_channels)?;
        let n = ch.len();
        if n == 0 || down.len() != n || up.len() != n {
            return Err(j.error(format!(
                "block_out_channels, down_block_types and up_block_types must have the same non-zero length (found {n}, {}, {})",
                down.len(),
                up.len()
            )));
        }
        for t in &down {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(j.error(format!("unsupported down block type `{t}` (SD1.x and SDXL use CrossAttnDownBlock2D and DownBlock2D)")));
            }
        }
        for t in &up {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(j.error(format!(
                    "unsupported up block type `{t}` (SD1.x and SDXL use UpBlock2D and CrossAttnUpBlock2D)"
                )));
            }
        }
        let heads = match j.raw("num_attention_heads").filter(|v| !v.is_null()) {
            Some(_) => j.per_block("num_attention_heads", n)?,
            None => match j.raw("attention_head_dim") {
                Some(_) => j.per_block("attention_head_dim", n)?,
                None => vec![8; n],
            },
        };
        j.expect("only_cross_attention", Value::Bool(false))?;
        j.expect("dual_cross_attention", Value::Bool(false))?;
        j.expect("center_input_sample", Value::Bool(false))?;
        j.expect("class_embed_type", Value::Null)?;
        let added = match j.raw("addition_embed_type") {
            None | Some(Value::Null) => None,
            Some(v) if v == "text_time" => Some((
                j.get("addition_time_embed_dim", 0usize)?,
                j.get("projection_class_embeddings_input_dim", 0usize)?,
            )),
            Some(v) => {
                return Err(j.error(format!(
                    "unsupported `addition_embed_type` = {v}: ditail implements none (SD1.x) and \"text_time\" (SDXL)"
                )));
            }
        };
        j.expect("addition_embed_type_num_heads", Value::from(64))?;
        j.expect("reverse_transformer_layers_per_block", Value::Null)?;
        j.expect("encoder_hid_dim", Value::Null)?;
        j.expect("time_cond_proj_dim", Value::Null)?;
        j.expect("resnet_time_scale_shift", Value::from("default"))?;
        j.expect("time_embedding_type", Value::from("positional"))?;
        j.expect("act_fn", Value::from("silu"))?;
        j.expect("mid_block_type", Value::from("UNetMidBlock2DCrossAttn"))?;
        j.expect("conv_in_kernel", Value::from(3))?;
        j.expect("conv_out_kernel", Value::from(3))?;
        j.expect("downsample_padding", Value::from(1))?;
        j.expect("mid_block_scale_factor", Value::from(1))?;
        if let Some(v) = j
            .raw("transformer_layers_per_block")
            .filter(|v| !v.is_u64() && !v.is_array())
        {
            return Err(j.error(format!(
                "transformer_layers_per_block must be an integer or one integer per block, found {v}"
            )));
        }
        if let Some(v) = j.raw("layers_per_block").filter(|v| !v.is_u64()) {
            return Err(j.error(format!(
                "layers_per_block must be one integer (SD1.x and SDXL), found {v}"
            )));
        }
        let depths = match j.raw("transformer_layers_per_block") {
            None | Some(Value::Null) => vec![1; n],
            Some(_) => j.per_block("transformer_layers_per_block", n)?,
        };

        let config = Self::new(down, up, ch, heads, depths)
            .with_in_channels(j.get("in_channels", 4)?)
            .with_out_channels(j.get("out_channels", 4)?)
            .with_layers_per_block(j.get("layers_per_block", 2)?)
            .with_norm_num_groups(j.get("norm_num_groups", 32)?)
            .with_norm_eps(j.get("norm_eps", 1e-5)?)
            .with_cross_attention_dim(j.get("cross_attention_dim", 768)?)
            .with_use_linear_projection(j.get("use_linear_projection", false)?)
            .with_addition_time_embed_dim(added.map(|a| a.0))
            .with_projection_class_embeddings_input_dim(added.map(|a| a.1))
            .with_flip_sin_to_cos(j.get("flip_sin_to_cos", true)?)
            .with_freq_shift(j.get("freq_shift", 0.0)?);
        config.validate().map_err(|reason| j.error(reason))?;
        Ok(config)
    }

    /// Checks that the numbers describe a buildable network (divisibility of groups and
    /// heads), so that `init` cannot panic on a config that parsed.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.layers_per_block == 0 || self.transformer_layers_per_block.contains(&0) {
            return Err(
                "layers_per_block and transformer_layers_per_block must be at least 1".into(),
            );
        }
        let n = self.block_out_channels.len();
        if self.num_attention_heads.len() != n || self.transformer_layers_per_block.len() != n {
            return Err("one head count and one transformer depth per block are needed".into());
        }
        if let Some(t) = self.addition_time_embed_dim {
            let input = self.projection_class_embeddings_input_dim.unwrap_or(0);
            if t == 0 || input <= 6 * t {
                return Err(format!(
                    "addition_time_embed_dim {t} and projection_class_embeddings_input_dim {input} \
                     leave no room for the pooled text embedding (input = pooled width + 6 x time dim)"
                ));
            }
        }
        if self.norm_num_groups == 0 {
            return Err("norm_num_groups must be at least 1".into());
        }
        for (&c, &h) in self
            .block_out_channels
            .iter()
            .zip(&self.num_attention_heads)
        {
            if c == 0 || c % self.norm_num_groups != 0 {
                return Err(format!(
                    "block_out_channels value {c} is not a positive multiple of norm_num_groups {}",
                    self.norm_num_groups
                ));
            }
            if h == 0 || c % h != 0 {
                return Err(format!(
                    "block_out_channels value {c} is not divisible by its head count {h}"
                ));
            }
        }
        Ok(())
    }
}
