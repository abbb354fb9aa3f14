//! Ditail's feature injection as a U-Net controller (METHOD.md stage 2, step 2): the
//! positive and negative branches take the source branch's conv features at
//! `up_blocks[1].resnets[1]` and its self-attention q/k at 8 up-block layers, mixed
//! through the mask. The source's features come either from element 0 of a
//! `[source, positive, negative]` batch, or from an earlier capture-only pass of the
//! source alone (which can stop as soon as it has them).

use std::collections::{BTreeMap, HashMap};

use burn::prelude::*;
use ditail_models::hook::{Captured, Controller, Site};

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

    /// Mixes the source into the target elements of `x`: with `src` given, every element
    /// is a target; else element 0 is the source and is kept. `shape_m` lays the `[h*w]`
    /// mask out to broadcast against `x`.
    fn mix<const D: usize>(
        &mut self,
        x: Tensor<D>,
        src: Option<Tensor<D>>,
        grid: [usize; 2],
        shape_m: impl Fn(Tensor<1>) -> Tensor<D>,
    ) -> Tensor<D> {
        let b = x.dims()[0];
        let (src, rest, keep_src) = match src {
            Some(src) => (src, x, false),
            None => (x.clone().narrow(0, 0, 1), x.narrow(0, 1, b - 1), true),
        };
        let mixed = if self.mask.is_full() {
            src.clone().expand(rest.dims())
        } else {
            let (device, dtype) = (rest.device(), rest.dtype());
            let mask = self.mask;
            let m = self
                .grids
                .entry(grid)
                .or_insert_with(|| mask.tensor(grid[0], grid[1], &device).cast(dtype))
                .clone();
            rest.clone() + (src.clone() - rest) * shape_m(m)
        };
        if keep_src {
            Tensor::cat(vec![src, mixed], 0)
        } else {
            mixed
        }
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
        let [_, _, gh, gw] = h.dims();
        self.mix(h, src, [gh, gw], |m| m.reshape([1, 1, gh, gw]))
    }

    fn self_attn(
        &mut self,
        at: Site,
        grid: [usize; 2],
        q: Tensor<3>,
        k: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        if !(self.windows.attn && attn_site(at)) {
            return (q, k);
        }
        let (src_q, src_k) = match self.captured.as_ref().map(|c| c.get(&at)) {
            Some(Some(Captured::SelfAttn { q, k })) => (Some(q.clone()), Some(k.clone())),
            Some(_) => panic!("no captured source q/k for {at:?}"),
            None => (None, None),
        };
        let n = grid[0] * grid[1];
        let q = self.mix(q, src_q, grid, |m| m.reshape([1, n, 1]));
        let k = self.mix(k, src_k, grid, |m| m.reshape([1, n, 1]));
        (q, k)
    }
}
