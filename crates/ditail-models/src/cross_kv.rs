//! The keys and values of the U-Net's cross-attention layers, projected once a run.
//!
//! Each transformer block's cross-attention (`attn2`) projects the text tokens into its keys
//! and values (`to_k`, `to_v`; diffusers' `Attention`, whose processor does so on every call).
//! The tokens are the same at every step of a run, so those projections are too: a
//! [`KvCache`] keeps each block's pair after the first forward that makes it, and later
//! forwards read it. That is two products fewer a transformer block and step (SD1.5: 32 of a
//! step's 282; SDXL: 140), and the same values: the pair a step reads is the one the first
//! step computed from the same tokens with the same weights. Where the attention reads keys
//! and values laid out per head (the flash path: SPIR-V, MSL, CUDA), the pair is kept so
//! laid out ([`KeysValues`]), and a step's attention skips two more kernels a block.
//!
//! The cache belongs to one U-Net and one conditioning: the U-Net keeps it in
//! [`crate::unet::PreparedConditioning`], which borrows the model, so that keys one model
//! projected never reach another's attention.

use std::cell::RefCell;
use std::collections::BTreeMap;

use burn::prelude::*;

use crate::attention::Attention;
use crate::hook::Site;
use crate::kernels::attention::KeysValues;

/// The cross-attention keys and values of one conditioning, by transformer block (named by
/// the [`Site`] of its self-attention, `attn1`).
#[derive(Debug, Default)]
pub struct KvCache {
    pairs: RefCell<BTreeMap<Site, KeysValues>>,
}

impl KvCache {
    /// How many transformer blocks' keys and values it holds.
    pub fn len(&self) -> usize {
        self.pairs.borrow().len()
    }

    /// How many of them are laid out per head (the flash path's layout, see
    /// [`KeysValues`]).
    pub fn per_head(&self) -> usize {
        self.pairs
            .borrow()
            .values()
            .filter(|kv| kv.per_head())
            .count()
    }

    /// Whether it holds none yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the cross-attention layers of one forward read: the text tokens, and where a run
/// keeps them, the keys and values projected from them.
#[derive(Clone, Copy, Debug)]
pub struct CrossContext<'a> {
    tokens: &'a Tensor<3>,
    cache: Option<&'a KvCache>,
}

impl<'a> CrossContext<'a> {
    /// The tokens alone: each layer projects them when it runs.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, tokens, cross_attention_dim]`
    pub fn new(tokens: &'a Tensor<3>) -> Self {
        Self {
            tokens,
            cache: None,
        }
    }

    /// The tokens, with `cache` keeping each layer's keys and values across forwards.
    /// `cache` must hold only projections of these `tokens` by the U-Net that runs.
    pub(crate) fn cached(tokens: &'a Tensor<3>, cache: &'a KvCache) -> Self {
        Self {
            tokens,
            cache: Some(cache),
        }
    }

    /// `attn`'s keys and values over the tokens, for the transformer block whose
    /// self-attention is at `site`.
    pub(crate) fn keys_values(self, site: Site, attn: &Attention) -> KeysValues {
        let project = || attn.keys_values(self.tokens.clone());
        let Some(cache) = self.cache else {
            return project();
        };
        if let Some(pair) = cache.pairs.borrow().get(&site) {
            return pair.clone();
        }
        let pair = project();
        cache.pairs.borrow_mut().insert(site, pair.clone());
        pair
    }
}

impl<'a> From<&'a Tensor<3>> for CrossContext<'a> {
    fn from(tokens: &'a Tensor<3>) -> Self {
        Self::new(tokens)
    }
}
