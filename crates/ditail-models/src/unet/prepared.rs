//! A conditioning bound to one U-Net for a run's steps: the cross-attention's keys and
//! values ([`crate::cross_kv`]) and SDXL's added embedding are computed by the first
//! forward and read by the others.

use std::cell::OnceCell;

use burn::prelude::*;

use super::{Conditioning, UNet2DConditionModel};
use crate::cross_kv::{CrossContext, KvCache};
use crate::hook::Controller;

/// A [`Conditioning`] prepared for the forwards of one U-Net
/// ([`UNet2DConditionModel::prepare`]).
///
/// It borrows the U-Net, so the keys and values it keeps can only be read by the model that
/// projected them. It holds them for the whole run: per batch element and transformer
/// block, two `[77, heads * head_dim]` tensors (SD1.5 in f16: 3.8 MB an element; SDXL:
/// 26 MB). What it keeps has the float type of the first forward's sample, which is the
/// model's in every run.
#[derive(Debug)]
pub struct PreparedConditioning<'m> {
    unet: &'m UNet2DConditionModel,
    cond: Conditioning,
    kv: KvCache,
    /// SDXL's added embedding (`None` for SD1.x), once the first forward made it.
    added: OnceCell<Option<Tensor<2>>>,
}

impl UNet2DConditionModel {
    /// Binds `cond` to this U-Net for a run's steps: [`PreparedConditioning::forward`] is
    /// [`UNet2DConditionModel::forward`] with `cond`, the same values, but only its first
    /// call projects the text into the cross-attention's keys and values (2 products a
    /// transformer block) and, for SDXL, the pooled text and sizes into the added embedding
    /// (a read of the sizes from the device, a concatenation and 2 products).
    pub fn prepare(&self, cond: impl Into<Conditioning>) -> PreparedConditioning<'_> {
        PreparedConditioning {
            unet: self,
            cond: cond.into(),
            kv: KvCache::default(),
            added: OnceCell::new(),
        }
    }
}

impl PreparedConditioning<'_> {
    /// The U-Net's noise prediction for `sample` at `timestep` under this conditioning,
    /// calling `ctrl` at every site: [`UNet2DConditionModel::forward`].
    ///
    /// # Panics
    /// As [`UNet2DConditionModel::forward`].
    ///
    /// # Shapes
    /// - `sample`: `[batch, in_channels, height, width]`, the batch of the conditioning
    /// - output: `[batch, out_channels, height, width]`
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timestep: f32,
        ctrl: &mut dyn Controller,
    ) -> Tensor<4> {
        let added = self
            .added
            .get_or_init(|| self.unet.added_embedding(&self.cond, &sample));
        let context = CrossContext::cached(&self.cond.context, &self.kv);
        self.unet
            .forward_in(sample, timestep, added.clone(), context, ctrl)
    }

    /// The cross-attention keys and values kept so far, by transformer block.
    pub fn keys_values(&self) -> &KvCache {
        &self.kv
    }
}
