//! The CLIP text encoders of SD1.x and SDXL: `CLIPTextModel` (OpenAI's ViT-L/14 text tower,
//! SD1.x's only encoder and SDXL's first) and `CLIPTextModelWithProjection` (OpenCLIP's
//! ViT-bigG/14 text tower, SDXL's second, whose pooled output is projected).
//!
//! Ports transformers' [`models/clip/modeling_clip.py`](https://github.com/huggingface/transformers/blob/679021a6b0ded09d623a96e2bd2f822c5a548872/src/transformers/models/clip/modeling_clip.py):
//! token + position embeddings, pre-norm transformer layers with causal self-attention and
//! quick-GELU (OpenAI) or GELU (OpenCLIP) MLPs, final layer norm, pooling at the end-of-text
//! token and the optional text projection. Field names are the transformers keys.

use std::path::Path;

use burn::module::Param;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::embedding;

use crate::error::{ModelError, Result};
use crate::json::JsonConfig;
use crate::kernels::linear::linear;
use crate::ops::multi_head_attention;

/// Rows per chunk of the token-embedding table.
///
/// SD's table is 49408x768 f32 (152 MB), larger than the 128 MiB one buffer may hold on
/// WebGPU-limited adapters, so it is stored in chunks of at most 16384 rows (48 MiB).
pub(crate) const EMBEDDING_CHUNK_ROWS: usize = 16384;

/// Configuration of the text encoder; field names follow transformers' `config.json`.
#[derive(Config, Debug)]
pub struct ClipTextConfig {
    /// Vocabulary size (49408 for CLIP's BPE).
    #[config(default = 49408)]
    pub vocab_size: usize,
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
    /// Length of the position table (the prompt length, 77).
    #[config(default = 77)]
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// The MLPs' activation: `quick_gelu` (OpenAI CLIP) or `gelu` (OpenCLIP bigG, SDXL's
    /// second encoder).
    #[config(default = "String::from(\"quick_gelu\")")]
    pub hidden_act: String,
    /// Width of the text projection when the model is a `CLIPTextModelWithProjection`
    /// (SDXL's second encoder); `None` for a plain `CLIPTextModel`.
    #[config(default = "None")]
    pub projection_dim: Option<usize>,
    /// `eos_token_id` of the config: where the pooled output is taken (see
    /// [`pool_position`]).
    #[config(default = 2)]
    pub eos_token_id: u32,
}

/// Where transformers pools a prompt's hidden states: for the legacy `eos_token_id` 2 of
/// OpenAI's and SDXL's configs at the highest token id (the first `<|endoftext|>`, the last
/// vocabulary entry), else at the first `eos_token_id`.
pub fn pool_position(ids: &[u32], eos_token_id: u32) -> usize {
    if eos_token_id == 2 {
        let max = ids.iter().copied().max().unwrap_or(0);
        ids.iter().position(|&t| t == max).unwrap_or(0)
    } else {
        ids.iter()
            .position(|&t| t == eos_token_id)
            .unwrap_or(ids.len().saturating_sub(1))
    }
}

impl ClipTextConfig {
    /// SD1.x's text encoder, OpenAI CLIP ViT-L/14
    /// ([`text_encoder/config.json`](https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/text_encoder/config.json)).
    pub fn sd15() -> Self {
        Self::new()
    }

    /// Reads a transformers `text_encoder/config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        Self::from_json(&JsonConfig::read(path)?)
    }

    /// SDXL's second text encoder, OpenCLIP ViT-bigG/14 as `CLIPTextModelWithProjection`
    /// ([`text_encoder_2/config.json`](https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/main/text_encoder_2/config.json)).
    pub fn sdxl_bigg() -> Self {
        Self::new()
            .with_hidden_size(1280)
            .with_intermediate_size(5120)
            .with_num_hidden_layers(32)
            .with_num_attention_heads(20)
            .with_hidden_act("gelu".into())
            .with_projection_dim(Some(1280))
    }

    /// See [`ClipTextConfig::from_json_file`].
    pub fn from_json(j: &JsonConfig) -> Result<Self> {
        let act: String = j.get("hidden_act", "quick_gelu".to_string())?;
        if act != "quick_gelu" && act != "gelu" {
            return Err(j.error(format!(
                "unsupported `hidden_act` = {act:?}: CLIP text encoders use \"quick_gelu\" (OpenAI) or \"gelu\" (OpenCLIP)"
            )));
        }
        let architectures: Vec<String> = j.get("architectures", vec![])?;
        let projected = architectures
            .iter()
            .any(|a| a == "CLIPTextModelWithProjection");
        let c = Self::new()
            .with_vocab_size(j.get("vocab_size", 49408)?)
            .with_hidden_size(j.get("hidden_size", 768)?)
            .with_intermediate_size(j.get("intermediate_size", 3072)?)
            .with_num_hidden_layers(j.get("num_hidden_layers", 12)?)
            .with_num_attention_heads(j.get("num_attention_heads", 12)?)
            .with_max_position_embeddings(j.get("max_position_embeddings", 77)?)
            .with_layer_norm_eps(j.get("layer_norm_eps", 1e-5)?)
            .with_hidden_act(act)
            .with_eos_token_id(j.get("eos_token_id", 2)?);
        let c = match projected {
            true => {
                let dim = j.get("projection_dim", c.hidden_size)?;
                c.with_projection_dim(Some(dim))
            }
            false => c,
        };
        j.check_transformer(
            c.hidden_size,
            c.num_attention_heads,
            c.num_hidden_layers,
            None,
        )?;
        Ok(c)
    }

    /// Builds the encoder with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> ClipTextModel {
        ClipTextModel {
            text_model: self.init_transformer(device),
            text_projection: self.projection_dim.map(|p| {
                LinearConfig::new(self.hidden_size, p)
                    .with_bias(false)
                    .init(device)
            }),
            eos_token_id: self.eos_token_id,
        }
    }

    /// The text transformer alone (`CLIPModel`'s `text_model`), uninitialised.
    pub fn init_transformer(&self, device: &Device) -> ClipTextTransformer {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let chunks = self.vocab_size.div_ceil(EMBEDDING_CHUNK_ROWS);
        let token_embedding = TokenEmbedding {
            weight: (0..chunks)
                .map(|c| {
                    let rows = EMBEDDING_CHUNK_ROWS.min(self.vocab_size - c * EMBEDDING_CHUNK_ROWS);
                    Initializer::Zeros.init([rows, d], device)
                })
                .collect(),
        };
        let encoder = ClipEncoder::init(
            [d, self.intermediate_size],
            self.num_hidden_layers,
            self.num_attention_heads,
            self.layer_norm_eps,
            device,
        )
        .with_gelu(self.hidden_act == "gelu");
        ClipTextTransformer {
            embeddings: ClipTextEmbeddings {
                token_embedding,
                position_embedding: burn::nn::EmbeddingConfig::new(self.max_position_embeddings, d)
                    .init(device),
            },
            encoder,
            final_layer_norm: ln(),
        }
    }
}

/// The token-embedding table, stored as row chunks (`weight.0`, `weight.1`, ...) of at
/// most `EMBEDDING_CHUNK_ROWS` rows; the loader splits the file's single `weight`.
#[derive(Module, Debug)]
pub struct TokenEmbedding {
    /// The table's row chunks, in order.
    pub weight: Vec<Param<Tensor<2>>>,
}

impl TokenEmbedding {
    /// Looks up token ids across the chunks.
    ///
    /// # Shapes
    /// - `ids`: `[batch, tokens]`; output: `[batch, tokens, hidden]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        if let [only] = self.weight.as_slice() {
            return embedding(only.val(), ids);
        }
        let mut offset = 0i64;
        let mut out: Option<Tensor<3>> = None;
        for chunk in &self.weight {
            let rows = chunk.val().dims()[0] as i64;
            let local = ids.clone() - offset;
            let inside = local
                .clone()
                .greater_equal_elem(0)
                .bool_and(local.clone().lower_elem(rows));
            let picked = embedding(chunk.val(), local.clamp(0, rows - 1));
            let picked = picked * inside.float().unsqueeze_dim::<3>(2);
            out = Some(match out {
                Some(acc) => acc + picked,
                None => picked,
            });
            offset += rows;
        }
        out.expect("a token embedding has at least one chunk")
    }
}

/// Vectors that take the place of token embeddings: a textual-inversion embedding's
/// vectors written into one prompt's token positions, before the positions are added.
#[derive(Clone, Debug)]
pub struct Insert {
    /// Which prompt of the batch.
    pub row: usize,
    /// The first token position it replaces.
    pub start: usize,
    /// `[vectors, hidden_size]`, one per replaced position.
    pub values: Tensor<2>,
}

/// `CLIPTextEmbeddings`.
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings {
    /// Token table.
    pub token_embedding: TokenEmbedding,
    /// Learned position table.
    pub position_embedding: burn::nn::Embedding,
}

/// `CLIPAttention`: causal multi-head self-attention.
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub heads: usize,
}

/// `CLIPMLP` with quick-GELU or GELU.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// Up projection.
    pub fc1: Linear,
    /// Down projection.
    pub fc2: Linear,
    /// Whether the activation is GELU (OpenCLIP) rather than quick-GELU (OpenAI).
    pub gelu: bool,
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP, each with a residual.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// Self-attention.
    pub self_attn: ClipAttention,
    /// Norm before attention.
    pub layer_norm1: LayerNorm,
    /// MLP.
    pub mlp: ClipMlp,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm,
}

/// `CLIPEncoder`.
#[derive(Module, Debug)]
pub struct ClipEncoder {
    /// The transformer layers.
    pub layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    /// `layers` pre-norm layers of width `hidden` with MLPs of `intermediate`, with
    /// uninitialised weights.
    pub fn init(
        [hidden, intermediate]: [usize; 2],
        layers: usize,
        heads: usize,
        layer_norm_eps: f64,
        device: &Device,
    ) -> Self {
        let ln = || {
            LayerNormConfig::new(hidden)
                .with_epsilon(layer_norm_eps)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let layers = (0..layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(hidden, hidden),
                    k_proj: linear(hidden, hidden),
                    v_proj: linear(hidden, hidden),
                    out_proj: linear(hidden, hidden),
                    heads,
                },
                layer_norm1: ln(),
                mlp: ClipMlp {
                    fc1: linear(hidden, intermediate),
                    fc2: linear(intermediate, hidden),
                    gelu: false,
                },
                layer_norm2: ln(),
            })
            .collect();
        Self { layers }
    }

    /// The same layers with GELU MLPs (OpenCLIP) instead of quick-GELU.
    pub fn with_gelu(mut self, gelu: bool) -> Self {
        for layer in &mut self.layers {
            layer.mlp.gelu = gelu;
        }
        self
    }
}

/// `CLIPTextTransformer`.
#[derive(Module, Debug)]
pub struct ClipTextTransformer {
    /// Embeddings.
    pub embeddings: ClipTextEmbeddings,
    /// Transformer layers.
    pub encoder: ClipEncoder,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm,
}

/// `CLIPTextModel`, or `CLIPTextModelWithProjection` when it has a `text_projection` (the
/// children are named as in the weight files' keys).
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// The text transformer.
    pub text_model: ClipTextTransformer,
    /// The projection of the pooled output (no bias); SDXL's second encoder only.
    pub text_projection: Option<Linear>,
    /// Where the pooled output is taken (see [`pool_position`]).
    pub eos_token_id: u32,
}

impl ClipEncoderLayer {
    /// One layer; `causal` masks future tokens (the text tower), the vision tower attends
    /// to every patch.
    ///
    /// # Shapes
    /// - `x`, output: `[batch, tokens, hidden]`
    pub fn forward(&self, x: Tensor<3>, causal: bool) -> Tensor<3> {
        let a = &self.self_attn;
        let h = self.layer_norm1.forward(x.clone());
        let attn = multi_head_attention(
            linear(&a.q_proj, h.clone()),
            linear(&a.k_proj, h.clone()),
            linear(&a.v_proj, h),
            a.heads,
            causal,
        );
        let x = x + linear(&a.out_proj, attn);
        let h = linear(&self.mlp.fc1, self.layer_norm2.forward(x.clone()));
        let h = match self.mlp.gelu {
            true => gelu(h),
            false => h.clone() * sigmoid(h * 1.702),
        };
        x + linear(&self.mlp.fc2, h)
    }
}

impl ClipTextTransformer {
    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        self.encoder.layers.len()
    }

    /// The final-layer-normed hidden states with the last `skip` layers dropped (see
    /// [`ClipTextModel::forward`]).
    ///
    /// # Shapes
    /// - `ids`: `[batch, tokens]` with `tokens <= max_position_embeddings`
    /// - output: `[batch, tokens, hidden_size]`
    pub fn forward(&self, ids: Tensor<2, Int>, skip: usize) -> Result<Tensor<3>> {
        let (hidden, _) = self.hidden_states(ids, &[], skip, false)?;
        Ok(self.final_layer_norm.forward(hidden))
    }

    /// The hidden state with the last `skip` layers dropped, not normalised (what SDXL
    /// reads), and with `last` the final-layer-normed output of the last layer too;
    /// `inserts` replace token embeddings first.
    ///
    /// # Shapes
    /// - `ids`: `[batch, tokens]`; outputs: `[batch, tokens, hidden_size]`
    pub fn hidden_states(
        &self,
        ids: Tensor<2, Int>,
        inserts: &[Insert],
        skip: usize,
        last: bool,
    ) -> Result<(Tensor<3>, Option<Tensor<3>>)> {
        let [b, n] = ids.dims();
        let max_pos = self.embeddings.position_embedding.weight.val().dims()[0];
        if n > max_pos {
            return Err(ModelError::InvalidInput {
                name: "input_ids".into(),
                reason: format!("{n} tokens, but the encoder has {max_pos} positions"),
            });
        }
        if skip >= self.num_layers() {
            return Err(ModelError::InvalidInput {
                name: "clip skip".into(),
                reason: format!(
                    "skipping {skip} of {} layers leaves none",
                    self.num_layers()
                ),
            });
        }
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..n as i64, &device)
            .reshape([1, n])
            .expand([b, n]);
        let mut tokens = self.embeddings.token_embedding.forward(ids);
        let hidden = tokens.dims()[2];
        for insert in inserts {
            let [k, width] = insert.values.dims();
            if insert.row >= b || insert.start + k > n || width != hidden {
                return Err(ModelError::InvalidInput {
                    name: "embedding".into(),
                    reason: format!(
                        "{k} vectors of width {width} at token {} of prompt {} do not fit \
                         [{b}, {n}, {hidden}]",
                        insert.start, insert.row
                    ),
                });
            }
            let values = insert
                .values
                .clone()
                .cast(tokens.dtype())
                .unsqueeze_dim::<3>(0);
            tokens = tokens.slice_assign(
                [
                    insert.row..insert.row + 1,
                    insert.start..insert.start + k,
                    0..hidden,
                ],
                values,
            );
        }
        let mut x = tokens + self.embeddings.position_embedding.forward(positions);
        let keep = self.num_layers() - skip;
        for layer in &self.encoder.layers[..keep] {
            x = layer.forward(x, true);
        }
        if !last {
            return Ok((x, None));
        }
        let mut y = x.clone();
        for layer in &self.encoder.layers[keep..] {
            y = layer.forward(y, true);
        }
        Ok((x, Some(self.final_layer_norm.forward(y))))
    }
}

impl ClipTextModel {
    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        self.text_model.num_layers()
    }

    /// Encodes token ids. `skip` drops the last `skip` layers and applies the final layer
    /// norm to the output of the layer before them: 0 is the ordinary last hidden state,
    /// 1 the penultimate layer (diffusers' `clip_skip=1`, A1111's "Clip skip: 2").
    ///
    /// # Shapes
    /// - `ids`: `[batch, tokens]` with `tokens <= max_position_embeddings`
    /// - output: `[batch, tokens, hidden_size]`
    pub fn forward(&self, ids: Tensor<2, Int>, skip: usize) -> Result<Tensor<3>> {
        self.text_model.forward(ids, skip)
    }

    /// [`ClipTextModel::forward`] with token embeddings replaced by `inserts`
    /// (textual-inversion embeddings).
    ///
    /// # Shapes
    /// - `ids`: `[batch, tokens]`; output: `[batch, tokens, hidden_size]`
    pub fn forward_inserted(
        &self,
        ids: Tensor<2, Int>,
        inserts: &[Insert],
        skip: usize,
    ) -> Result<Tensor<3>> {
        let (hidden, _) = self.text_model.hidden_states(ids, inserts, skip, false)?;
        Ok(self.text_model.final_layer_norm.forward(hidden))
    }

    /// The hidden size (the width of a token's vector).
    pub fn hidden_size(&self) -> usize {
        self.text_model
            .embeddings
            .position_embedding
            .weight
            .val()
            .dims()[1]
    }

    /// What SDXL reads from an encoder: the hidden state with the last `skip` layers
    /// dropped, without the final layer norm (diffusers' `hidden_states[-(skip + 1)]`;
    /// SDXL's default is `skip = 1`, the penultimate layer), and, when the model has a
    /// projection, the projected pooled output (`text_embeds`: the final-layer-normed last
    /// hidden state at each prompt's [`pool_position`]).
    ///
    /// # Shapes
    /// - `ids`: `[batch, tokens]`
    /// - outputs: `[batch, tokens, hidden_size]` and `[batch, projection_dim]`
    pub fn forward_xl(
        &self,
        ids: Tensor<2, Int>,
        skip: usize,
    ) -> Result<(Tensor<3>, Option<Tensor<2>>)> {
        self.forward_xl_inserted(ids, &[], skip)
    }

    /// [`ClipTextModel::forward_xl`] with token embeddings replaced by `inserts`.
    ///
    /// # Shapes
    /// - `ids`: `[batch, tokens]`
    /// - outputs: `[batch, tokens, hidden_size]` and `[batch, projection_dim]`
    pub fn forward_xl_inserted(
        &self,
        ids: Tensor<2, Int>,
        inserts: &[Insert],
        skip: usize,
    ) -> Result<(Tensor<3>, Option<Tensor<2>>)> {
        let Some(projection) = &self.text_projection else {
            return Ok((
                self.text_model.hidden_states(ids, inserts, skip, false)?.0,
                None,
            ));
        };
        let [b, n] = ids.dims();
        let host: Vec<u32> = ids
            .clone()
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| ModelError::InvalidInput {
                name: "input_ids".into(),
                reason: format!("{e:?}"),
            })?
            .into_iter()
            .map(|t| t as u32)
            .collect();
        let (hidden, last) = self.text_model.hidden_states(ids, inserts, skip, true)?;
        let last = last.expect("asked for the last layer");
        let d = last.dims()[2];
        let pooled = host
            .chunks(n.max(1))
            .take(b)
            .enumerate()
            .map(|(i, row)| {
                let at = pool_position(row, self.eos_token_id);
                last.clone()
                    .slice([i..i + 1, at..at + 1, 0..d])
                    .reshape([1, d])
            })
            .collect();
        Ok((hidden, Some(projection.forward(Tensor::cat(pooled, 0)))))
    }
}
