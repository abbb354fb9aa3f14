//! Attention layers: diffusers' `Attention` (self and cross), the GEGLU feed-forward,
//! `BasicTransformerBlock` and `Transformer2DModel`.
//!
//! Ports [`models/attention_processor.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/attention_processor.py)
//! (default processor), [`models/attention.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/attention.py)
//! and [`transformers/transformer_2d.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/transformers/transformer_2d.py)
//! for SD1.x and SDXL: 1x1-conv (SD1.x) or linear (SDXL) `proj_in`/`proj_out`, one or more
//! transformer blocks, GEGLU.

use burn::nn::conv::Conv2d;
use burn::nn::{
    Dropout, DropoutConfig, GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::prelude::*;

use crate::cross_kv::CrossContext;
use crate::hook::{Controller, SelfAttnQk, Site};
use crate::kernels::attention::{KeysValues, attention, attention_over};
use crate::kernels::geglu::geglu;
use crate::kernels::group_norm::group_norm;
use crate::kernels::layer_norm::layer_norm;
use crate::kernels::linear::{linear, linear_add};
use crate::kernels::tokens::{Pointwise, from_tokens_add, to_tokens};
use crate::resnet::conv1x1;

/// Shape of one attention layer.
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Width of the queries (and of the output).
    pub query_dim: usize,
    /// Width of the keys/values' source; `None` for self-attention.
    pub cross_attention_dim: Option<usize>,
    /// Number of heads.
    pub heads: usize,
    /// Width of one head.
    pub dim_head: usize,
    /// Whether q/k/v projections have a bias (the VAE's do, the U-Net's don't).
    #[config(default = false)]
    pub qkv_bias: bool,
    /// GroupNorm groups applied to a `[B, C, H, W]` input first (the VAE's mid block).
    pub norm_groups: Option<usize>,
    /// Epsilon of that GroupNorm.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// Multi-head attention with diffusers' parameter names.
#[derive(Module, Debug)]
pub struct Attention {
    /// Optional GroupNorm on spatial input (VAE).
    pub group_norm: Option<GroupNorm>,
    /// Query projection.
    pub to_q: Linear,
    /// Key projection.
    pub to_k: Linear,
    /// Value projection.
    pub to_v: Linear,
    /// Output projection (diffusers' `to_out.0`; `to_out.1` is dropout).
    pub to_out: Vec<Linear>,
    /// Number of heads.
    pub heads: usize,
}

impl AttentionConfig {
    /// Builds the layer with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> Attention {
        let inner = self.heads * self.dim_head;
        let kv_dim = self.cross_attention_dim.unwrap_or(self.query_dim);
        let proj = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        Attention {
            group_norm: self.norm_groups.map(|g| {
                GroupNormConfig::new(g, self.query_dim)
                    .with_epsilon(self.norm_eps)
                    .init(device)
            }),
            to_q: proj(self.query_dim, inner, self.qkv_bias),
            to_k: proj(kv_dim, inner, self.qkv_bias),
            to_v: proj(kv_dim, inner, self.qkv_bias),
            to_out: vec![proj(inner, self.query_dim, true)],
            heads: self.heads,
        }
    }
}

impl Attention {
    /// Attention of `x` over `context`, or over itself when `None`. `hook` is called with
    /// the projected q and k of a self-attention layer (`context` `None`) over a `[height,
    /// width]` grid; an injection it asks for is applied inside the attention kernel. A
    /// cross-attention calls no hook: Ditail injects into self-attention only.
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, query_dim]`
    /// - `context`: `[batch, context_tokens, cross_attention_dim]`
    /// - output: `[batch, tokens, query_dim]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        hook: Option<(Site, [usize; 2], &mut dyn Controller)>,
    ) -> Tensor<3> {
        let kv = context.map(|c| self.keys_values(c));
        self.forward_then(x, kv, hook, None)
    }

    /// `residual + self.forward(x, context, hook)`, the add in the output projection's
    /// fused epilogue on a GPU ([`crate::kernels::linear::linear_add`]).
    ///
    /// # Shapes
    /// As [`Attention::forward`]; `residual`: like the output.
    pub fn forward_add(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        hook: Option<(Site, [usize; 2], &mut dyn Controller)>,
        residual: Tensor<3>,
    ) -> Tensor<3> {
        let kv = context.map(|c| self.keys_values(c));
        self.forward_then(x, kv, hook, Some(residual))
    }

    /// The keys and values a cross-attention layer takes from `context` (`to_k`, `to_v`),
    /// laid out as the attention on their device reads them ([`KeysValues`]);
    /// [`crate::cross_kv`] keeps them across a run's steps.
    ///
    /// # Shapes
    /// - `context`: `[batch, context_tokens, cross_attention_dim]`
    pub fn keys_values(&self, context: Tensor<3>) -> KeysValues {
        let (k, v) = self.project_kv(context);
        KeysValues::new(k, v, self.heads)
    }

    /// `to_k` and `to_v` of `x`.
    fn project_kv(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        (linear(&self.to_k, x.clone()), linear(&self.to_v, x))
    }

    /// Attention of `x` over `kv` (a cross-attention's keys and values, projected
    /// beforehand), or over itself when `None`; the residual, if any, in the output
    /// projection's epilogue.
    fn forward_then(
        &self,
        x: Tensor<3>,
        kv: Option<KeysValues>,
        hook: Option<(Site, [usize; 2], &mut dyn Controller)>,
        residual: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let q = linear(&self.to_q, x.clone());
        let out = match kv {
            Some(kv) => attention_over(q, kv, self.heads),
            None => {
                let (k, v) = self.project_kv(x);
                let qk = match hook {
                    Some((site, grid, ctrl)) => ctrl.self_attn(site, grid, SelfAttnQk::new(q, k)),
                    None => SelfAttnQk::new(q, k),
                };
                attention(qk.q, qk.k, v, self.heads, qk.inject)
            }
        };
        match residual {
            Some(r) => linear_add(&self.to_out[0], out, r),
            None => linear(&self.to_out[0], out),
        }
    }

    /// Cross-attention of `x` over keys and values projected beforehand
    /// ([`Attention::keys_values`]), plus `residual` in the output projection's epilogue.
    ///
    /// # Shapes
    /// - `x`, `residual`, output: `[batch, tokens, query_dim]`
    pub fn forward_kv_add(&self, x: Tensor<3>, kv: KeysValues, residual: Tensor<3>) -> Tensor<3> {
        self.forward_then(x, Some(kv), None, Some(residual))
    }

    /// The VAE's spatial self-attention: GroupNorm, single-head attention over all pixels,
    /// output projection, residual.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]`; output: the same.
    pub fn forward_spatial(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let normed = match &self.group_norm {
            Some(norm) => group_norm(norm, x.clone(), false),
            None => x.clone(),
        };
        let tokens = normed.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.forward(tokens, None, None);
        x + out.swap_dims(1, 2).reshape([b, c, h, w])
    }
}

/// GEGLU feed-forward: `net.0.proj` to twice the inner width, `h * gelu(gate)`, `net.2`.
#[derive(Module, Debug)]
pub struct GegluProj {
    /// The projection to `2 * inner` (hidden and gate halves).
    pub proj: Linear,
}

/// One element of diffusers' `FeedForward.net`, kept at its index so the keys match.
#[derive(Module, Debug)]
pub enum FeedForwardLayer {
    /// `net.0`: the GEGLU projection.
    Geglu(GegluProj),
    /// `net.1`: dropout, inert at inference and without weights.
    Dropout(Dropout),
    /// `net.2`: the output projection.
    Out(Linear),
}

/// diffusers' `FeedForward` with `activation_fn="geglu"`, `mult=4`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// GEGLU, dropout, output projection.
    pub net: Vec<FeedForwardLayer>,
}

impl FeedForward {
    fn new(dim: usize, device: &Device) -> Self {
        let inner = 4 * dim;
        Self {
            net: vec![
                FeedForwardLayer::Geglu(GegluProj {
                    proj: LinearConfig::new(dim, 2 * inner).init(device),
                }),
                FeedForwardLayer::Dropout(DropoutConfig::new(0.0).init()),
                FeedForwardLayer::Out(LinearConfig::new(inner, dim).init(device)),
            ],
        }
    }

    /// # Shapes
    /// - `x`: `[batch, tokens, dim]`; output: the same.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_then(x, None)
    }

    /// `residual + self.forward(x)`, the add in the output projection's fused epilogue on a
    /// GPU ([`crate::kernels::linear::linear_add`]).
    ///
    /// # Shapes
    /// - `x`, `residual`: `[batch, tokens, dim]`; output: the same.
    pub fn forward_add(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.forward_then(x, Some(residual))
    }

    fn forward_then(&self, x: Tensor<3>, mut residual: Option<Tensor<3>>) -> Tensor<3> {
        self.net.iter().fold(x, |x, layer| match layer {
            FeedForwardLayer::Geglu(g) => geglu(linear(&g.proj, x)),
            FeedForwardLayer::Dropout(_) => x,
            FeedForwardLayer::Out(out) => match residual.take() {
                Some(r) => linear_add(out, x, r),
                None => linear(out, x),
            },
        })
    }
}

/// The transformer blocks' LayerNorm epsilon (diffusers' `norm_eps` default, which SD1.5's
/// and SDXL's U-Nets keep).
const NORM_EPS: f64 = 1e-5;

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention, feed-forward, each
/// after a LayerNorm and with a residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    /// LayerNorm before self-attention.
    pub norm1: LayerNorm,
    /// Self-attention (Ditail's q/k site).
    pub attn1: Attention,
    /// LayerNorm before cross-attention.
    pub norm2: LayerNorm,
    /// Cross-attention over the text embedding.
    pub attn2: Attention,
    /// LayerNorm before the feed-forward.
    pub norm3: LayerNorm,
    /// GEGLU feed-forward.
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(dim: usize, heads: usize, cross_dim: usize, device: &Device) -> Self {
        let ln = || {
            LayerNormConfig::new(dim)
                .with_epsilon(NORM_EPS)
                .init(device)
        };
        let attn = |cross| {
            AttentionConfig::new(dim, heads, dim / heads)
                .with_cross_attention_dim(cross)
                .init(device)
        };
        Self {
            norm1: ln(),
            attn1: attn(None),
            norm2: ln(),
            attn2: attn(Some(cross_dim)),
            norm3: ln(),
            ff: FeedForward::new(dim, device),
        }
    }

    /// The block at `hook`'s site; the cross-attention's keys and values come from
    /// `context` (projected here, or kept from an earlier step of the run).
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, dim]`, `context`: `[batch, 77, cross_dim]`; output: like `x`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: CrossContext<'_>,
        hook: (Site, [usize; 2], &mut dyn Controller),
    ) -> Tensor<3> {
        let norm = |n: &LayerNorm, x| layer_norm(n, NORM_EPS, x);
        let site = hook.0;
        // Each residual is added in its sublayer's output projection (one fused kernel on
        // a GPU, not a product and an add).
        let x = self
            .attn1
            .forward_add(norm(&self.norm1, x.clone()), None, Some(hook), x);
        let normed = norm(&self.norm2, x.clone());
        let kv = context.keys_values(site, &self.attn2);
        let x = self.attn2.forward_kv_add(normed, kv, x);
        self.ff.forward_add(norm(&self.norm3, x.clone()), x)
    }
}

/// Shape of one `Transformer2DModel`.
#[derive(Config, Debug)]
pub struct Transformer2dConfig {
    /// Channels of the feature map (= heads * head width in SD1.x).
    pub channels: usize,
    /// Number of heads.
    pub heads: usize,
    /// Width of the text embedding.
    pub cross_attention_dim: usize,
    /// GroupNorm groups of the input norm.
    pub norm_groups: usize,
    /// Number of transformer blocks (SD1.x: 1; SDXL: 1, 2 or 10).
    #[config(default = 1)]
    pub layers: usize,
    /// Whether `proj_in`/`proj_out` are linear layers over tokens (SDXL,
    /// `use_linear_projection=true`) instead of 1x1 convolutions over the map (SD1.x).
    #[config(default = false)]
    pub linear_projection: bool,
}

/// A `Transformer2DModel`'s `proj_in` or `proj_out`: a 1x1 convolution (SD1.x) or a linear
/// layer (SDXL). Both hold `weight` and `bias` under the same key; the variant decides the
/// shape the file must have (`[c, c, 1, 1]` or `[c, c]`).
#[derive(Module, Debug)]
pub enum Projection {
    /// A 1x1 convolution on `[batch, channels, height, width]`.
    Conv(Conv2d),
    /// A linear layer on `[batch, tokens, channels]`.
    Linear(Linear),
}

impl Projection {
    /// The layer as `kernels::tokens` takes it.
    fn pointwise(&self) -> Pointwise<'_> {
        match self {
            Projection::Conv(conv) => Pointwise::Conv(conv),
            Projection::Linear(layer) => Pointwise::Linear(layer),
        }
    }
}

/// diffusers' `Transformer2DModel` (the continuous-input variant).
#[derive(Module, Debug)]
pub struct Transformer2dModel {
    /// GroupNorm of the input (eps 1e-6).
    pub norm: GroupNorm,
    /// Projection into the transformer width.
    pub proj_in: Projection,
    /// The transformer blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    /// Projection back to the feature map's channels.
    pub proj_out: Projection,
}

impl Transformer2dConfig {
    /// Builds the layer with uninitialised weights, to be loaded.
    pub fn init(&self, device: &Device) -> Transformer2dModel {
        let c = self.channels;
        let proj = || match self.linear_projection {
            true => Projection::Linear(LinearConfig::new(c, c).init(device)),
            false => Projection::Conv(conv1x1([c, c], device)),
        };
        Transformer2dModel {
            norm: GroupNormConfig::new(self.norm_groups, c)
                .with_epsilon(1e-6)
                .init(device),
            proj_in: proj(),
            transformer_blocks: (0..self.layers)
                .map(|_| {
                    BasicTransformerBlock::new(c, self.heads, self.cross_attention_dim, device)
                })
                .collect(),
            proj_out: proj(),
        }
    }
}

impl Transformer2dModel {
    /// Runs the transformer over the feature map; `site` (at depth 0) tags the
    /// self-attention of the first block for the controller, [`Site::at_depth`] the others.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]`, `context`: the text tokens
    ///   `[batch, 77, cross_dim]` (a `&Tensor<3>`), or a run's [`CrossContext`]
    /// - output: `[batch, channels, height, width]`
    pub fn forward<'c>(
        &self,
        x: Tensor<4>,
        context: impl Into<CrossContext<'c>>,
        site: Site,
        ctrl: &mut dyn Controller,
    ) -> Tensor<4> {
        let context = context.into();
        let [_, _, h, w] = x.dims();
        let normed = group_norm(&self.norm, x.clone(), false);
        // On a GPU the layout changes between map and tokens are the projections'
        // products' (`kernels::tokens`), not copies.
        let mut y = to_tokens(self.proj_in.pointwise(), normed);
        for (depth, block) in self.transformer_blocks.iter().enumerate() {
            let site = site.at_depth(depth as u8);
            y = block.forward(y, context, (site, [h, w], &mut *ctrl));
        }
        // The residual in the product's fused epilogue on a GPU.
        from_tokens_add(self.proj_out.pointwise(), y, [h, w], x)
    }
}
