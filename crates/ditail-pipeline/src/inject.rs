//! Ditail's feature injection as a U-Net controller (METHOD.md stage 2, step 2): the
//! positive and negative branches take the source branch's conv features at
//! `up_blocks[1].resnets[1]` and its self-attention q/k at the up-block layers above it,
//! mixed through the mask. The source's features come either from element 0 of a
//! `[source, positive, negative]` batch, or from an earlier capture-only pass of the
//! source alone (which can stop as soon as it has them). The conv features are mixed here;
//! the q/k mix is handed to the attention kernel, which applies it as it reads q and k.
//!
//! # The sites on SD1.x and SDXL
//!
//! Ditail takes its sites from Plug-and-Play (Tumanyan et al., 2023), whose rule is: the
//! spatial features of the decoder's middle ResNet at its second-lowest resolution (deep
//! enough to carry structure, not yet appearance), and the self-attention q/k of every
//! decoder layer from there to the output (where the layout of attention is set).
//!
//! | | SD1.x (64x64 latents) | SDXL (128x128 latents) |
//! |---|---|---|
//! | decoder resolutions | 8, 16, 32, 64 (`up_blocks[0..4]`) | 32, 64, 128 (`up_blocks[0..3]`) |
//! | conv features | `up_blocks.1.resnets.1` (LDM `output_blocks.4.0`), 16x16 | `up_blocks.1.resnets.1` (LDM `output_blocks.4.0`), 64x64 |
//! | self-attention q/k | `up_blocks.1.attentions.1..2`, `up_blocks.2.attentions.0..2`, `up_blocks.3.attentions.0..2`: 8 layers, one transformer block each | `up_blocks.1.attentions.1..2`, transformer blocks 0 and 1 of each: 4 layers (`up_blocks.2` has no attention) |
//!
//! SDXL's lowest decoder resolution (`up_blocks.0`, 32x32, 30 transformer blocks) plays
//! the role of SD1.x's 8x8 ResNet-only block and is left alone, as SD1.x's is. The set can
//! be changed without code edits ([`InjectionSites::parse`], the CLI's `--sites`).

use std::collections::{BTreeMap, HashMap};

use burn::prelude::*;
use ditail_models::Family;
use ditail_models::hook::{Captured, Controller, QkInjection, SelfAttnQk, Site};
use ditail_models::kernels::attention::mix_source;

use crate::error::{PipelineError, Result};
use crate::mask::Mask;

/// Where features are injected: ResNet sites get the source's conv features, self-attention
/// sites its q/k.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectionSites {
    /// ResNet sites, whose residual branch is mixed.
    pub conv: Vec<Site>,
    /// Self-attention sites, whose q and k are mixed.
    pub attn: Vec<Site>,
}

impl InjectionSites {
    /// The method's sites for a family (see the module docs).
    pub fn default_for(family: Family) -> Self {
        match family {
            Family::Sd1 => Self::from_sites(Site::ditail_sites()),
            Family::Sdxl => Self::from_sites(Site::ditail_sites_xl()),
        }
    }

    /// Sorts sites into ResNet and self-attention ones.
    pub fn from_sites(sites: impl IntoIterator<Item = Site>) -> Self {
        let (conv, attn) = sites
            .into_iter()
            .partition(|s| matches!(s, Site::Resnet { .. }));
        Self { conv, attn }
    }

    /// Reads a comma-separated list of diffusers module paths (`up_blocks.1.resnets.1`,
    /// `up_blocks.1.attentions.2.transformer_blocks.0`; see [`Site::parse`]).
    pub fn parse(list: &str) -> Result<Self> {
        let sites = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                Site::parse(s).ok_or_else(|| {
                    PipelineError::Settings(format!(
                        "injection site `{}` is not a U-Net ResNet (`up_blocks.1.resnets.1`) or \
                         self-attention layer (`up_blocks.1.attentions.1.transformer_blocks.0`)",
                        s.trim()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if sites.is_empty() {
            return Err(PipelineError::Settings(
                "the injection site list is empty (use --no-injection to inject nothing)".into(),
            ));
        }
        Ok(Self::from_sites(sites))
    }

    /// Every site, conv first.
    pub fn all(&self) -> impl Iterator<Item = Site> + '_ {
        self.conv.iter().chain(&self.attn).copied()
    }
}

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

/// The injecting controller for one U-Net forward.
pub struct Injector<'a> {
    sites: &'a InjectionSites,
    mask: &'a Mask,
    windows: Windows,
    captured: Option<BTreeMap<Site, Captured>>,
    grids: HashMap<[usize; 2], Tensor<1>>,
}

impl<'a> Injector<'a> {
    /// Injects element 0 of a `[source, positive, negative]` batch into the others.
    pub fn new(sites: &'a InjectionSites, mask: &'a Mask, windows: Windows) -> Self {
        Self {
            sites,
            mask,
            windows,
            captured: None,
            grids: HashMap::new(),
        }
    }

    /// Injects features captured from the source branch beforehand into every element of
    /// a `[positive, negative]` batch.
    pub fn with_captured(
        sites: &'a InjectionSites,
        mask: &'a Mask,
        windows: Windows,
        captured: BTreeMap<Site, Captured>,
    ) -> Self {
        Self {
            captured: Some(captured),
            ..Self::new(sites, mask, windows)
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
    fn reads_resnet(&self, at: Site) -> bool {
        self.windows.conv && self.sites.conv.contains(&at)
    }

    fn resnet(&mut self, at: Site, h: Tensor<4>) -> Tensor<4> {
        if !self.reads_resnet(at) {
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
        if !(self.windows.attn && self.sites.attn.contains(&at)) {
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
