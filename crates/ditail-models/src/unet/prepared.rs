//! A conditioning bound to one U-Net for a run's steps: the cross-attention's keys and
//! values ([`crate::cross_kv`]) and SDXL's added embedding are computed by the first
//! forward and read by the others; given the run's timesteps, so are their time embeddings
//! and every ResNet's projection of them (`time_table.rs`).

use std::cell::OnceCell;

use burn::prelude::*;

use super::time_table::{StepTime, TimeTable};
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
    /// The run's time embeddings, when its timesteps were given.
    time: Option<TimeTable>,
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
            time: None,
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
        let unet = self.unet;
        let added = self
            .added
            .get_or_init(|| unet.added_embedding(&self.cond, &sample))
            .as_ref();
        let embed = |timesteps: &[f32]| unet.silu_time_embeddings(timesteps, added, &sample);
        let time = match self.time.as_ref().and_then(|t| t.step(timestep, embed)) {
            Some(time) => time,
            None => StepTime::Own(Box::new(embed(&[timestep]).0)),
        };
        let context = CrossContext::cached(&self.cond.context, &self.kv);
        unet.forward_in(sample, time, context, ctrl)
    }

    /// The same, and the time embeddings of `timesteps` (a run's) made once: the first
    /// forward at one of them runs the time MLP over all of them, each ResNet projects
    /// all of them the first time it runs, and a forward at one of them reads its rows (on
    /// a GPU some 25 launches fewer a step for SD1.5). Each row is the product a step made
    /// of it alone: the same bits on the CPU's 512-bit GEMM, which sums each row alike
    /// however many there are; where a product of more rows sums in another order (a GPU's
    /// tuning may pick another kernel), within its rounding. Forwards at other timesteps
    /// make their own as before.
    pub fn for_timesteps(self, timesteps: &[f32]) -> Self {
        Self {
            time: Some(TimeTable::new(timesteps)),
            ..self
        }
    }

    /// How many ResNets' projections of the run's time embeddings it holds (0 without
    /// [`PreparedConditioning::for_timesteps`], or before the first forward at one of them).
    pub fn time_projections(&self) -> usize {
        self.time.as_ref().map_or(0, TimeTable::len)
    }

    /// The cross-attention keys and values kept so far, by transformer block.
    pub fn keys_values(&self) -> &KvCache {
        &self.kv
    }
}
