//! `CLIPModel`: both CLIP towers and their projections into the shared embedding space,
//! for the CLIP score of `ditail eval` (text-image cosine similarity times the learned
//! logit scale, as transformers' `logits_per_text`).
//!
//! Ports transformers' [`CLIPModel`](https://github.com/huggingface/transformers/blob/679021a6b0ded09d623a96e2bd2f822c5a548872/src/transformers/models/clip/modeling_clip.py);
//! the text tower is the one SD uses ([`ditail_models::clip`]), the vision tower
//! [`super::clip_vision`].

use std::path::Path;

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::clip_vision::{ClipVisionConfig, ClipVisionTransformer};
use ditail_models::clip::{ClipTextConfig, ClipTextTransformer};
use ditail_models::error::{ModelError, Result};
use ditail_models::json::JsonConfig;

/// Configuration of a `CLIPModel`; field names follow transformers' `CLIPConfig`.
#[derive(Config, Debug)]
pub struct ClipConfig {
    /// The text tower (`text_config`).
    pub text_config: ClipTextConfig,
    /// The vision tower (`vision_config`).
    pub vision_config: ClipVisionConfig,
    /// Width of the shared embedding space.
    #[config(default = 768)]
    pub projection_dim: usize,
    /// The text config's `eos_token_id`: 2 is the legacy value of OpenAI's checkpoints, for
    /// which transformers pools at the highest token id (`<|endoftext|>` is the last entry
    /// of CLIP's vocabulary); otherwise at the first occurrence of this id.
    #[config(default = 2)]
    pub eos_token_id: u32,
}

impl ClipConfig {
    /// OpenAI CLIP ViT-L/14 ([`openai/clip-vit-large-patch14`](https://huggingface.co/openai/clip-vit-large-patch14/blob/main/config.json)),
    /// the model of the paper's CLIP score.
    pub fn vit_l14() -> Self {
        Self::new(ClipTextConfig::sd15(), ClipVisionConfig::vit_l14())
    }

    /// Reads a transformers `CLIPModel` `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let j = JsonConfig::read(path)?;
        let arch: Vec<String> = j.get("architectures", vec![])?;
        if !arch.is_empty() && !arch.iter().any(|a| a == "CLIPModel") {
            return Err(j.error(format!(
                "the model is a {}, not a CLIPModel (both towers with projections)",
                arch.join(", ")
            )));
        }
        let text = j.child("text_config")?;
        Ok(Self::new(
            ClipTextConfig::from_json(&text)?,
            ClipVisionConfig::from_json(&j.child("vision_config")?)?,
        )
        .with_projection_dim(j.get("projection_dim", 768)?)
        .with_eos_token_id(text.get("eos_token_id", 2)?))
    }

    /// Builds the model with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> ClipModel {
        let projection = |i| {
            LinearConfig::new(i, self.projection_dim)
                .with_bias(false)
                .init(device)
        };
        ClipModel {
            text_model: self.text_config.init_transformer(device),
            vision_model: self.vision_config.init(device),
            text_projection: projection(self.text_config.hidden_size),
            visual_projection: projection(self.vision_config.hidden_size),
            logit_scale: 100f32.ln(),
            eos_token_id: self.eos_token_id,
        }
    }
}

/// `CLIPModel`.
#[derive(Module, Debug)]
pub struct ClipModel {
    /// The text tower.
    pub text_model: ClipTextTransformer,
    /// The vision tower.
    pub vision_model: ClipVisionTransformer,
    /// Pooled text to the shared space (no bias).
    pub text_projection: Linear,
    /// Pooled image to the shared space (no bias).
    pub visual_projection: Linear,
    /// The learned temperature, as stored (its `exp` multiplies the cosine similarity). A
    /// 0-d tensor in the files, read by the loader apart from the module's tensors.
    pub logit_scale: f32,
    /// See [`ClipConfig::eos_token_id`].
    pub eos_token_id: u32,
}

impl ClipModel {
    /// Projected text embeddings (`get_text_features`), not normalised.
    ///
    /// # Shapes
    /// - `ids`: `batch` prompts of equal length (at most the position table's);
    ///   output: `[batch, projection_dim]`
    pub fn text_features(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor<2>> {
        let b = ids.len();
        let n = ids.first().map_or(0, Vec::len);
        if b == 0 || n == 0 || ids.iter().any(|row| row.len() != n) {
            return Err(ModelError::InvalidInput {
                name: "input_ids".into(),
                reason: "expected at least one prompt, all of the same token length".into(),
            });
        }
        let flat: Vec<i64> = ids.iter().flatten().map(|&t| t as i64).collect();
        let tensor = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, n]), device);
        let hidden = self.text_model.forward(tensor, 0)?;
        let d = hidden.dims()[2];
        let pooled = ids
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let at = ditail_models::clip::pool_position(row, self.eos_token_id);
                hidden
                    .clone()
                    .slice([i..i + 1, at..at + 1, 0..d])
                    .reshape([1, d])
            })
            .collect();
        Ok(self.text_projection.forward(Tensor::cat(pooled, 0)))
    }

    /// Projected image embeddings (`get_image_features`), not normalised.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, image_size, image_size]`; output: `[batch, projection_dim]`
    pub fn image_features(&self, pixels: Tensor<4>) -> Result<Tensor<2>> {
        let (_, pooled) = self.vision_model.forward(pixels)?;
        Ok(self.visual_projection.forward(pooled))
    }

    /// `logits_per_text`: `exp(logit_scale)` times the cosine similarity of every text with
    /// every image.
    ///
    /// # Shapes
    /// - `text`: `[texts, projection_dim]`, `image`: `[images, projection_dim]`;
    ///   output: `[texts, images]`
    pub fn logits_per_text(&self, text: Tensor<2>, image: Tensor<2>) -> Tensor<2> {
        let unit = |t: Tensor<2>| {
            let norm = t.clone().powi_scalar(2).sum_dim(1).sqrt();
            t / norm
        };
        unit(text).matmul(unit(image).transpose()) * self.logit_scale.exp()
    }
}
