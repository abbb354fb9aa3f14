//! What the U-Net is conditioned on besides the latents and the timestep: the text
//! embedding its cross-attention reads and, for SDXL, the added conditioning that goes
//! through the time-embedding path (diffusers' `added_cond_kwargs`: `text_embeds`, the
//! second text encoder's pooled projection, and `time_ids`, the six size numbers).
//!
//! See diffusers' `UNet2DConditionModel.get_aug_embed` for `addition_embed_type="text_time"`
//! ([`unets/unet_2d_condition.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/models/unets/unet_2d_condition.py)).

use burn::prelude::*;

/// SDXL's added conditioning, one row per batch element.
#[derive(Clone, Debug)]
pub struct AddedConditioning {
    /// The second text encoder's pooled, projected embedding, `[batch, projection_dim]`.
    pub text_embeds: Tensor<2>,
    /// `[original_height, original_width, crop_top, crop_left, target_height, target_width]`
    /// in pixels, `[batch, 6]`.
    pub time_ids: Tensor<2>,
}

/// The U-Net's conditioning: the text embedding, plus SDXL's added conditioning.
///
/// A bare `Tensor<3>` converts into it (SD1.x: no added conditioning).
#[derive(Clone, Debug)]
pub struct Conditioning {
    /// What the cross-attention reads, `[batch, tokens, cross_attention_dim]`.
    pub context: Tensor<3>,
    /// SDXL's pooled text and sizes; `None` for SD1.x.
    pub added: Option<AddedConditioning>,
}

impl From<Tensor<3>> for Conditioning {
    fn from(context: Tensor<3>) -> Self {
        Self {
            context,
            added: None,
        }
    }
}

impl Conditioning {
    /// The batch size.
    pub fn batch(&self) -> usize {
        self.context.dims()[0]
    }

    /// Concatenates conditionings along the batch (all with or all without added
    /// conditioning).
    ///
    /// # Panics
    /// If some have added conditioning and others not (a caller's mistake, never input).
    pub fn cat(parts: Vec<Conditioning>) -> Self {
        let has_added = parts.first().is_some_and(|p| p.added.is_some());
        assert!(
            parts.iter().all(|p| p.added.is_some() == has_added),
            "conditionings of one batch either all have added conditioning or none"
        );
        let (contexts, added): (Vec<_>, Vec<_>) =
            parts.into_iter().map(|p| (p.context, p.added)).unzip();
        let added = has_added.then(|| {
            let (text, ids): (Vec<_>, Vec<_>) = added
                .into_iter()
                .flatten()
                .map(|a| (a.text_embeds, a.time_ids))
                .unzip();
            AddedConditioning {
                text_embeds: Tensor::cat(text, 0),
                time_ids: Tensor::cat(ids, 0),
            }
        });
        Self {
            context: Tensor::cat(contexts, 0),
            added,
        }
    }

    /// `alpha * self - beta * other` on everything the prompts determine (the text
    /// embedding and the pooled text); the sizes are `self`'s. This is Ditail's condition
    /// scaling (METHOD.md stage 1, step 3) applied to each prompt-derived input.
    pub fn scaled(self, alpha: f64, other: Conditioning, beta: f64) -> Self {
        let added = match (self.added, other.added) {
            (Some(a), Some(b)) => Some(AddedConditioning {
                text_embeds: a.text_embeds * alpha - b.text_embeds * beta,
                time_ids: a.time_ids,
            }),
            (a, _) => a,
        };
        Self {
            context: self.context * alpha - other.context * beta,
            added,
        }
    }

    /// Casts every float tensor to `dtype`.
    pub fn cast(self, dtype: burn::tensor::DType) -> Self {
        Self {
            context: self.context.cast(dtype),
            added: self.added.map(|a| AddedConditioning {
                text_embeds: a.text_embeds.cast(dtype),
                time_ids: a.time_ids.cast(dtype),
            }),
        }
    }
}
