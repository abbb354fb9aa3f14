//! CLIP's vision tower (`CLIPVisionTransformer`), for the CLIP score of `ditail eval`.
//!
//! Ports transformers' [`models/clip/modeling_clip.py`](https://github.com/huggingface/transformers/blob/679021a6b0ded09d623a96e2bd2f822c5a548872/src/transformers/models/clip/modeling_clip.py):
//! a patch convolution without bias, a learned class token and position table, a LayerNorm
//! before the encoder (`pre_layrnorm`, spelled as in the weight files), the text tower's
//! pre-norm layers without the causal mask, and `post_layernorm` on the class token.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig};
use burn::prelude::*;
use serde_json::Value;

use ditail_models::clip::ClipEncoder;
use ditail_models::error::{ModelError, Result};
use ditail_models::json::JsonConfig;

/// Configuration of the vision tower; field names follow transformers' `vision_config`.
#[derive(Config, Debug)]
pub struct ClipVisionConfig {
    /// Width of the transformer.
    #[config(default = 1024)]
    pub hidden_size: usize,
    /// Width of the MLPs.
    #[config(default = 4096)]
    pub intermediate_size: usize,
    /// Number of transformer layers.
    #[config(default = 24)]
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    #[config(default = 16)]
    pub num_attention_heads: usize,
    /// Side of the (square) input image in pixels.
    #[config(default = 224)]
    pub image_size: usize,
    /// Side of a patch in pixels.
    #[config(default = 14)]
    pub patch_size: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// OpenAI CLIP ViT-L/14's vision tower
    /// ([`openai/clip-vit-large-patch14`](https://huggingface.co/openai/clip-vit-large-patch14/blob/main/config.json)).
    pub fn vit_l14() -> Self {
        Self::new()
    }

    /// Reads a transformers `vision_config` object (or a `CLIPVisionModel`'s config).
    pub fn from_json(j: &JsonConfig) -> Result<Self> {
        j.expect("hidden_act", Value::from("quick_gelu"))?;
        j.expect("num_channels", Value::from(3))?;
        let c = Self::new()
            .with_hidden_size(j.get("hidden_size", 1024)?)
            .with_intermediate_size(j.get("intermediate_size", 4096)?)
            .with_num_hidden_layers(j.get("num_hidden_layers", 24)?)
            .with_num_attention_heads(j.get("num_attention_heads", 16)?)
            .with_image_size(j.get("image_size", 224)?)
            .with_patch_size(j.get("patch_size", 14)?)
            .with_layer_norm_eps(j.get("layer_norm_eps", 1e-5)?);
        j.check_transformer(
            c.hidden_size,
            c.num_attention_heads,
            c.num_hidden_layers,
            Some((c.image_size, c.patch_size)),
        )?;
        Ok(c)
    }

    /// Patches per side of the input.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Builds the tower with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> ClipVisionTransformer {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let p = self.patch_size;
        ClipVisionTransformer {
            embeddings: ClipVisionEmbeddings {
                class_embedding: Initializer::Zeros.init([d], device),
                patch_embedding: Conv2dConfig::new([3, d], [p, p])
                    .with_stride([p, p])
                    .with_bias(false)
                    .init(device),
                position_embedding: EmbeddingConfig::new(self.grid() * self.grid() + 1, d)
                    .init(device),
            },
            pre_layrnorm: ln(),
            encoder: ClipEncoder::init(
                [d, self.intermediate_size],
                self.num_hidden_layers,
                self.num_attention_heads,
                self.layer_norm_eps,
                device,
            ),
            post_layernorm: ln(),
        }
    }
}

/// `CLIPVisionEmbeddings`.
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings {
    /// The class token.
    pub class_embedding: Param<Tensor<1>>,
    /// Patches to tokens (no bias).
    pub patch_embedding: Conv2d,
    /// Learned positions, the class token's first.
    pub position_embedding: Embedding,
}

/// `CLIPVisionTransformer`.
#[derive(Module, Debug)]
pub struct ClipVisionTransformer {
    /// Patch, class and position embeddings.
    pub embeddings: ClipVisionEmbeddings,
    /// LayerNorm before the encoder (transformers' spelling).
    pub pre_layrnorm: LayerNorm,
    /// Transformer layers.
    pub encoder: ClipEncoder,
    /// LayerNorm of the pooled class token.
    pub post_layernorm: LayerNorm,
}

impl ClipVisionTransformer {
    /// The encoder's last hidden state and the pooled (post-normed) class token.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, image_size, image_size]`, normalised as CLIP's processor does
    /// - output: `[batch, 1 + grid^2, hidden]` and `[batch, hidden]`
    pub fn forward(&self, pixels: Tensor<4>) -> Result<(Tensor<3>, Tensor<2>)> {
        let e = &self.embeddings;
        let [b, c, h, w] = pixels.dims();
        let positions = e.position_embedding.weight.val().dims()[0];
        let [_, _, p, _] = e.patch_embedding.weight.val().dims();
        if c != 3 || h != w || (h / p) * (w / p) + 1 != positions || h % p != 0 {
            return Err(ModelError::InvalidInput {
                name: "pixel_values".into(),
                reason: format!(
                    "shape [{b}, {c}, {h}, {w}], but the model takes 3 channels and {} patches \
                     of {p} pixels",
                    positions - 1
                ),
            });
        }
        let d = e.class_embedding.val().dims()[0];
        let patches = e.patch_embedding.forward(pixels); // [b, d, g, g]
        let patches = patches.flatten::<3>(2, 3).swap_dims(1, 2); // [b, g*g, d]
        let class = e.class_embedding.val().reshape([1, 1, d]).expand([b, 1, d]);
        let x = Tensor::cat(vec![class, patches], 1)
            + e.position_embedding.weight.val().unsqueeze_dim::<3>(0);
        let mut x = self.pre_layrnorm.forward(x);
        for layer in &self.encoder.layers {
            x = layer.forward(x, false);
        }
        let pooled = x.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
        Ok((x, self.post_layernorm.forward(pooled)))
    }
}
