//! Ditail's feature injection as a U-Net controller (METHOD.md stage 2, step 2): the
//! positive and negative branches take the source branch's conv features at
//! `up_blocks[1].resnets[1]` and its self-attention q/k at 8 up-block layers, mixed
//! through the mask. The source's features come either from element 0 of a
//! `[source, positive, negative]` batch, or from an earlier capture-only pass of the
//! source alone (which can stop as soon as it has them). The conv features are mixed here;
//! the q/k mix is handed to the attention kernel, which applies it as it reads q and k.

use std::collections::{BTreeMap, HashMap};

use burn::prelude::*;
use ditail_models::hook::{Captured, Controller, QkInjection, SelfAttnQk, Site};
use ditail_models::kernels::attention::mix_source;

use crate::mask::Mask;

/// Which injections are active at the current step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Windows {
    /// Conv features are injected.
    pub conv: bool,
    /// Self-attention q/k are injected.
    pub attn: bool,
}

impl Windows {
    /// Whether anything is injected (the source branch is needed).
    pub fn any(self) -> bool {
        self.conv || self.attn
    }
}

/// The site of the conv injection.
pub fn conv_site() -> Site {
    Site::ditail_sites()[0]
}

fn attn_site(at: Site) -> bool {
    Site::ditail_sites()[1..].contains(&at)
}

/// The injecting controller for one U-Net forward.
pub struct Injector<'a> {
    mask: &'a Mask,
    windows: Windows,
    captured: Option<BTreeMap<Site, Captured>>,
    grids: HashMap<[usize; 2], Tensor<1>>,
}

impl<'a> Injector<'a> {
    /// Injects element 0 of a `[source, positive, negative]` batch into the others.
    pub fn new(mask: &'a Mask, windows: Windows) -> Self {
        Self {
            mask,
            windows,
            captured: None,
            grids: HashMap::new(),
        }
    }

    /// Injects features captured from the source branch beforehand into every element of
    /// a `[positive, negative]` batch.
    pub fn with_captured(
        mask: &'a Mask,
        windows: Windows,
        captured: BTreeMap<Site, Captured>,
    ) -> Self {
        Self {
            captured: Some(captured),
            ..Self::new(mask, windows)
        }
    }

    /// The mask on a `grid`, `[h * w]`, on the device and in the dtype of `like` (made once
    /// per grid size).
    fn grid<const D: usize>(&mut self, grid: [usize; 2], like: &Tensor<D>) -> Tensor<1> {
        let mask = self.mask;
        self.grids
            .entry(grid)
            .or_insert_with(|| {
                mask.tensor(grid[0], grid[1], &like.device())
                    .cast(like.dtype())
            })
            .clone()
    }

    /// Mixes the source's conv features into the target elements of `x` (`[b, c, h, w]`):
    /// with `src` given, every element is a target; else element 0 is the source and is
    /// kept.
    fn mix(&mut self, x: Tensor<4>, src: Option<Tensor<4>>) -> Tensor<4> {
        let [_, _, gh, gw] = x.dims();
        let mask = (!self.mask.is_full()).then(|| self.grid([gh, gw], &x).reshape([1, 1, gh, gw]));
        mix_source(x, src, mask)
    }
}

impl Controller for Injector<'_> {
    fn resnet(&mut self, at: Site, h: Tensor<4>) -> Tensor<4> {
        if !(self.windows.conv && at == conv_site()) {
            return h;
        }
        let src = match self.captured.as_ref().map(|c| c.get(&at)) {
            Some(Some(Captured::Resnet(src))) => Some(src.clone()),
            Some(_) => panic!("no captured source features for {at:?}"),
            None => None,
        };
        self.mix(h, src)
    }

    /// Asks the attention kernel to read the targets' q and k as the masked mix with the
    /// source's (no mixed copy is made; see `ditail_models::kernels::attention`).
    fn self_attn(&mut self, at: Site, grid: [usize; 2], mut qk: SelfAttnQk) -> SelfAttnQk {
        if !(self.windows.attn && attn_site(at)) {
            return qk;
        }
        let source = match self.captured.as_ref().map(|c| c.get(&at)) {
            Some(Some(Captured::SelfAttn { q, k })) => Some((q.clone(), k.clone())),
            Some(_) => panic!("no captured source q/k for {at:?}"),
            None => None,
        };
        let mask = (!self.mask.is_full()).then(|| self.grid(grid, &qk.q));
        qk.inject = Some(QkInjection { source, mask });
        qk
    }
}
