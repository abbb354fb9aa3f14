//! A ViT in transformers' `ViTModel` layout, as `facebook/dino-vitb8` is published: the
//! structure distance of `ditail eval` compares the self-similarity of a layer's attention
//! keys (Splicing ViT, Plug-and-Play), so the forward can stop at any layer's keys.
//!
//! Ports transformers' [`models/vit/modeling_vit.py`](https://github.com/huggingface/transformers/blob/679021a6b0ded09d623a96e2bd2f822c5a548872/src/transformers/models/vit/modeling_vit.py):
//! a patch convolution, class token and position table, pre-norm layers with exact GELU
//! MLPs, a final LayerNorm. DINO's own (torch.hub) ViT computes the same with one fused
//! `qkv` projection; its keys are the middle third of that projection's output.

use std::path::Path;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use serde_json::Value;

use ditail_models::error::{ModelError, Result};
use ditail_models::json::JsonConfig;
use ditail_models::kernels::linear::linear;
use ditail_models::ops::multi_head_attention;

/// Configuration of the ViT; field names follow transformers' `ViTConfig`.
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Width of the transformer.
    #[config(default = 768)]
    pub hidden_size: usize,
    /// Width of the MLPs.
    #[config(default = 3072)]
    pub intermediate_size: usize,
    /// Number of transformer layers.
    #[config(default = 12)]
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    #[config(default = 12)]
    pub num_attention_heads: usize,
    /// Side of the (square) input image in pixels.
    #[config(default = 224)]
    pub image_size: usize,
    /// Side of a patch in pixels.
    #[config(default = 8)]
    pub patch_size: usize,
    /// Whether the query, key and value projections have biases.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// LayerNorm epsilon.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
}

impl VitConfig {
    /// DINO ViT-B/8 ([`facebook/dino-vitb8`](https://huggingface.co/facebook/dino-vitb8/blob/main/config.json)),
    /// the network of the paper's structure distance.
    pub fn dino_vitb8() -> Self {
        Self::new()
    }

    /// Reads a transformers `ViTModel` `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let j = JsonConfig::read(path)?;
        let model_type: String = j.get("model_type", "vit".to_string())?;
        if model_type != "vit" {
            return Err(j.error(format!(
                "the model is a `{model_type}`, not a ViT (`model_type` \"vit\", as \
                 facebook/dino-vitb8)"
            )));
        }
        j.expect("hidden_act", Value::from("gelu"))?;
        j.expect("num_channels", Value::from(3))?;
        let c = Self::new()
            .with_hidden_size(j.get("hidden_size", 768)?)
            .with_intermediate_size(j.get("intermediate_size", 3072)?)
            .with_num_hidden_layers(j.get("num_hidden_layers", 12)?)
            .with_num_attention_heads(j.get("num_attention_heads", 12)?)
            .with_image_size(j.get("image_size", 224)?)
            .with_patch_size(j.get("patch_size", 16)?)
            .with_qkv_bias(j.get("qkv_bias", true)?)
            .with_layer_norm_eps(j.get("layer_norm_eps", 1e-12)?);
        j.check_transformer(
            c.hidden_size,
            c.num_attention_heads,
            c.num_hidden_layers,
            Some((c.image_size, c.patch_size)),
        )?;
        Ok(c)
    }

    /// Tokens of an input: the class token and one per patch.
    pub fn tokens(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }

    /// Builds the model with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> VitModel {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let qkv = || {
            LinearConfig::new(d, d)
                .with_bias(self.qkv_bias)
                .init(device)
        };
        let p = self.patch_size;
        VitModel {
            embeddings: VitEmbeddings {
                cls_token: Initializer::Zeros.init([1, 1, d], device),
                position_embeddings: Initializer::Zeros.init([1, self.tokens(), d], device),
                patch_embeddings: VitPatchEmbeddings {
                    projection: Conv2dConfig::new([3, d], [p, p])
                        .with_stride([p, p])
                        .init(device),
                },
            },
            encoder: VitEncoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| VitLayer {
                        layernorm_before: ln(),
                        attention: VitAttention {
                            attention: VitSelfAttention {
                                query: qkv(),
                                key: qkv(),
                                value: qkv(),
                                heads: self.num_attention_heads,
                            },
                            output: VitOutputDense {
                                dense: linear(d, d),
                            },
                        },
                        layernorm_after: ln(),
                        intermediate: VitOutputDense {
                            dense: linear(d, self.intermediate_size),
                        },
                        output: VitOutputDense {
                            dense: linear(self.intermediate_size, d),
                        },
                    })
                    .collect(),
            },
            layernorm: ln(),
        }
    }
}

/// `ViTPatchEmbeddings`.
#[derive(Module, Debug)]
pub struct VitPatchEmbeddings {
    /// Patches to tokens.
    pub projection: Conv2d,
}

/// `ViTEmbeddings`.
#[derive(Module, Debug)]
pub struct VitEmbeddings {
    /// The class token, `[1, 1, hidden]`.
    pub cls_token: Param<Tensor<3>>,
    /// Learned positions, `[1, tokens, hidden]`, the class token's first.
    pub position_embeddings: Param<Tensor<3>>,
    /// The patch projection.
    pub patch_embeddings: VitPatchEmbeddings,
}

/// `ViTSelfAttention`.
#[derive(Module, Debug)]
pub struct VitSelfAttention {
    /// Query projection.
    pub query: Linear,
    /// Key projection: its output is what the structure distance compares.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Number of heads.
    pub heads: usize,
}

/// A module holding one `dense` linear layer (`ViTSelfOutput`, `ViTIntermediate`,
/// `ViTOutput`: they differ only in what the layer does around them).
#[derive(Module, Debug)]
pub struct VitOutputDense {
    /// The projection.
    pub dense: Linear,
}

/// `ViTAttention`.
#[derive(Module, Debug)]
pub struct VitAttention {
    /// Multi-head self-attention.
    pub attention: VitSelfAttention,
    /// Output projection.
    pub output: VitOutputDense,
}

/// `ViTLayer`: pre-norm attention and MLP, each with a residual.
#[derive(Module, Debug)]
pub struct VitLayer {
    /// Norm before attention.
    pub layernorm_before: LayerNorm,
    /// Attention.
    pub attention: VitAttention,
    /// Norm before the MLP.
    pub layernorm_after: LayerNorm,
    /// MLP up projection (GELU after it).
    pub intermediate: VitOutputDense,
    /// MLP down projection.
    pub output: VitOutputDense,
}

/// `ViTEncoder`.
#[derive(Module, Debug)]
pub struct VitEncoder {
    /// The layers.
    pub layer: Vec<VitLayer>,
}

/// `ViTModel` (without its optional pooler, which DINO's checkpoints leave untrained).
#[derive(Module, Debug)]
pub struct VitModel {
    /// Patch, class and position embeddings.
    pub embeddings: VitEmbeddings,
    /// The layers.
    pub encoder: VitEncoder,
    /// Final LayerNorm.
    pub layernorm: LayerNorm,
}

impl VitLayer {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let a = &self.attention.attention;
        let h = self.layernorm_before.forward(x.clone());
        let attn = multi_head_attention(
            linear(&a.query, h.clone()),
            linear(&a.key, h.clone()),
            linear(&a.value, h),
            a.heads,
            false,
        );
        let x = x + linear(&self.attention.output.dense, attn);
        let h = gelu(linear(
            &self.intermediate.dense,
            self.layernorm_after.forward(x.clone()),
        ));
        x + linear(&self.output.dense, h)
    }
}

impl VitModel {
    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    fn embed(&self, pixels: Tensor<4>) -> Result<Tensor<3>> {
        let e = &self.embeddings;
        let [b, c, h, w] = pixels.dims();
        let [_, tokens, d] = e.position_embeddings.val().dims();
        let [_, _, p, _] = e.patch_embeddings.projection.weight.val().dims();
        if c != 3 || h % p != 0 || w % p != 0 || (h / p) * (w / p) + 1 != tokens {
            return Err(ModelError::InvalidInput {
                name: "pixel_values".into(),
                reason: format!(
                    "shape [{b}, {c}, {h}, {w}], but the model takes 3 channels and {} patches \
                     of {p} pixels",
                    tokens - 1
                ),
            });
        }
        let patches = e.patch_embeddings.projection.forward(pixels);
        let patches = patches.flatten::<3>(2, 3).swap_dims(1, 2);
        let cls = e.cls_token.val().expand([b, 1, d]);
        Ok(Tensor::cat(vec![cls, patches], 1) + e.position_embeddings.val())
    }

    /// The last hidden state (after the final LayerNorm).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, image_size, image_size]` (ImageNet-normalised);
    ///   output: `[batch, tokens, hidden]`
    pub fn forward(&self, pixels: Tensor<4>) -> Result<Tensor<3>> {
        let mut x = self.embed(pixels)?;
        for layer in &self.encoder.layer {
            x = layer.forward(x);
        }
        Ok(self.layernorm.forward(x))
    }

    /// The attention keys of layer `layer` (0-based): the key projection of that layer's
    /// normed input, all heads side by side (what DINO's extractor concatenates). Layers
    /// after it are not run.
    ///
    /// # Shapes
    /// - `pixels`: as [`VitModel::forward`]; output: `[batch, tokens, hidden]`
    pub fn keys(&self, pixels: Tensor<4>, layer: usize) -> Result<Tensor<3>> {
        let Some(at) = self.encoder.layer.get(layer) else {
            return Err(ModelError::InvalidInput {
                name: "layer".into(),
                reason: format!("{layer}, but the model has {} layers", self.num_layers()),
            });
        };
        let mut x = self.embed(pixels)?;
        for l in &self.encoder.layer[..layer] {
            x = l.forward(x);
        }
        Ok(linear(
            &at.attention.attention.key,
            at.layernorm_before.forward(x),
        ))
    }
}
