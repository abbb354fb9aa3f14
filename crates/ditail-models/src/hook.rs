//! Ditail's hook into the U-Net: a controller passed to every forward, called at typed sites.
//!
//! Ditail injects the source branch's ResNet features and self-attention q/k into the
//! target branches (see the repository's `METHOD.md`). Rather than forking the model or swapping
//! module `forward`s at run time, as the reference does
//! ([MAPS-research/Ditail `src/ditail_utils.py`](https://github.com/MAPS-research/Ditail/blob/e4ddad286a78720b277282fddd334f4654f53819/src/ditail_utils.py)),
//! the U-Net calls a [`Controller`] at every ResNet and every self-attention layer, tagged
//! with a [`Site`]. Run state lives in the controller, never in the weights.

use std::collections::BTreeMap;

use burn::prelude::*;

// Defined with the attention kernels that take it; a controller hands it to them.
pub use crate::kernels::attention::{QkInjection, inject_reference};

/// Which part of the U-Net a block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// `down_blocks`.
    Down,
    /// `mid_block` (its block index is always 0).
    Mid,
    /// `up_blocks`.
    Up,
}

/// Where in the U-Net a controller call comes from.
///
/// `SelfAttn { stage: Up, block: 1, layer: 2, depth: 0 }` is diffusers'
/// `up_blocks.1.attentions.2.transformer_blocks.0.attn1`; `Resnet { stage: Up, block: 1,
/// layer: 1 }` is `up_blocks.1.resnets.1` (LDM: `output_blocks.4.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// A ResNet block's residual branch, after `conv2` and before the shortcut is added.
    Resnet {
        /// Down, mid or up.
        stage: Stage,
        /// Index in `down_blocks` / `up_blocks` (0 for the mid block).
        block: u8,
        /// Index in the block's `resnets`.
        layer: u8,
    },
    /// A self-attention layer (`attn1` of a transformer block), after the q/k projections.
    SelfAttn {
        /// Down, mid or up.
        stage: Stage,
        /// Index in `down_blocks` / `up_blocks` (0 for the mid block).
        block: u8,
        /// Index in the block's `attentions`.
        layer: u8,
        /// Index in the `Transformer2DModel`'s `transformer_blocks` (SD1.x has one per
        /// layer; SDXL stacks 2 or 10).
        depth: u8,
    },
}

impl Site {
    /// The stage this site is in.
    pub fn stage(self) -> Stage {
        match self {
            Site::Resnet { stage, .. } | Site::SelfAttn { stage, .. } => stage,
        }
    }

    /// The diffusers module path of the site, e.g. `up_blocks.1.resnets.1` or
    /// `up_blocks.1.attentions.2.transformer_blocks.0.attn1`; [`Site::parse`] reads it back.
    pub fn diffusers_path(self) -> String {
        let block_path = |stage, block| match stage {
            Stage::Down => format!("down_blocks.{block}"),
            Stage::Mid => "mid_block".to_string(),
            Stage::Up => format!("up_blocks.{block}"),
        };
        match self {
            Site::Resnet {
                stage,
                block,
                layer,
            } => format!("{}.resnets.{layer}", block_path(stage, block)),
            Site::SelfAttn {
                stage,
                block,
                layer,
                depth,
            } => format!(
                "{}.attentions.{layer}.transformer_blocks.{depth}.attn1",
                block_path(stage, block)
            ),
        }
    }

    /// Reads a diffusers module path as [`Site::diffusers_path`] writes it; for
    /// self-attention, `....attentions.L` alone means its first transformer block. `None` if
    /// the text names no ResNet or self-attention layer.
    pub fn parse(path: &str) -> Option<Site> {
        let parts: Vec<&str> = path.trim().split('.').collect();
        let (stage, block, rest) = match parts.as_slice() {
            ["down_blocks", b, rest @ ..] => (Stage::Down, b.parse().ok()?, rest),
            ["up_blocks", b, rest @ ..] => (Stage::Up, b.parse().ok()?, rest),
            ["mid_block", rest @ ..] => (Stage::Mid, 0, rest),
            _ => return None,
        };
        match rest {
            ["resnets", l] => Some(Site::Resnet {
                stage,
                block,
                layer: l.parse().ok()?,
            }),
            ["attentions", l, tail @ ..] => {
                let depth = match tail {
                    [] => 0,
                    ["transformer_blocks", d] | ["transformer_blocks", d, "attn1"] => {
                        d.parse().ok()?
                    }
                    _ => return None,
                };
                Some(Site::SelfAttn {
                    stage,
                    block,
                    layer: l.parse().ok()?,
                    depth,
                })
            }
            _ => None,
        }
    }

    /// The same self-attention layer in transformer block `depth` (ResNets are returned
    /// unchanged).
    pub fn at_depth(self, depth: u8) -> Site {
        match self {
            Site::SelfAttn {
                stage,
                block,
                layer,
                ..
            } => Site::SelfAttn {
                stage,
                block,
                layer,
                depth,
            },
            resnet => resnet,
        }
    }

    /// The 9 sites Ditail injects into on SD1.x (`METHOD.md`, stage 2): the conv
    /// features of `up_blocks[1].resnets[1]` and the self-attention q/k of 8 up-block
    /// layers. The first element is the conv site; the rest are the attention sites in
    /// forward order.
    pub fn ditail_sites() -> [Site; 9] {
        let attn = |block, layer| Site::SelfAttn {
            stage: Stage::Up,
            block,
            layer,
            depth: 0,
        };
        [
            Site::Resnet {
                stage: Stage::Up,
                block: 1,
                layer: 1,
            },
            attn(1, 1),
            attn(1, 2),
            attn(2, 0),
            attn(2, 1),
            attn(2, 2),
            attn(3, 0),
            attn(3, 1),
            attn(3, 2),
        ]
    }

    /// The 5 sites Ditail injects into on SDXL, by the SD1.x rule (see the pipeline
    /// crate's `inject` module): the conv features of `up_blocks[1].resnets[1]` (LDM
    /// `output_blocks.4.0`, the same position as SD1.x's: the middle ResNet of the
    /// decoder's second-lowest resolution) and the self-attention q/k of every transformer
    /// block from there up: `up_blocks[1].attentions[1..2]`, two blocks each (SDXL's last
    /// up block has no attention). The first element is the conv site.
    pub fn ditail_sites_xl() -> [Site; 5] {
        let attn = |layer, depth| Site::SelfAttn {
            stage: Stage::Up,
            block: 1,
            layer,
            depth,
        };
        [
            Site::Resnet {
                stage: Stage::Up,
                block: 1,
                layer: 1,
            },
            attn(1, 0),
            attn(1, 1),
            attn(2, 0),
            attn(2, 1),
        ]
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.diffusers_path())
    }
}

/// Run state handed to the U-Net's forward; called at every [`Site`].
///
/// Both methods default to the identity, so a controller implements only what it needs.
pub trait Controller {
    /// A ResNet's residual branch after `conv2`, before the shortcut is added.
    ///
    /// # Shapes
    /// - `h`: `[batch, channels, height, width]`; the return value must have the same shape.
    fn resnet(&mut self, _at: Site, h: Tensor<4>) -> Tensor<4> {
        h
    }

    /// Whether [`Controller::resnet`] may read or change the branch at `at`. Where it may
    /// not, the ResNet adds its shortcut inside `conv2`'s product (one kernel fewer on a
    /// GPU) and does not call it. The default, `true`, is right for any controller.
    fn reads_resnet(&self, _at: Site) -> bool {
        true
    }

    /// A self-attention layer's q and k after projection, before the heads are split.
    /// `grid` is the layer's `[height, width]`, so that spatial masks can be laid on tokens.
    ///
    /// A controller may replace `q`/`k` outright, or ask for an injection
    /// ([`SelfAttnQk::inject`]), which the attention kernel applies as it reads q and k
    /// (see [`crate::kernels::attention`]): no mixed copy of q or k is ever made.
    ///
    /// # Shapes
    /// - `qk.q`, `qk.k`: `[batch, tokens, inner_dim]`, `tokens = height * width`, token
    ///   `n = row * width + col`; the returned tensors must have the same shapes.
    fn self_attn(&mut self, _at: Site, _grid: [usize; 2], qk: SelfAttnQk) -> SelfAttnQk {
        qk
    }

    /// Whether the controller has all it needs from this forward. Asked after every U-Net
    /// block; `true` ends the forward early, whose output is then the hidden state at that
    /// point, not a noise prediction, and is to be ignored (a capture-only pass).
    fn finished(&self) -> bool {
        false
    }
}

/// The controller of a plain forward: changes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoControl;

impl Controller for NoControl {
    fn reads_resnet(&self, _at: Site) -> bool {
        false
    }
}

/// A self-attention layer's projected q and k, and the injection to apply to them.
#[derive(Clone, Debug)]
pub struct SelfAttnQk {
    /// The queries, `[batch, tokens, inner_dim]`.
    pub q: Tensor<3>,
    /// The keys, `[batch, tokens, inner_dim]`.
    pub k: Tensor<3>,
    /// The source's q/k to mix into the targets' inside the attention kernel; `None`: the
    /// layer attends with `q` and `k` as they are.
    pub inject: Option<QkInjection>,
}

impl SelfAttnQk {
    /// q and k with nothing to inject.
    pub fn new(q: Tensor<3>, k: Tensor<3>) -> Self {
        Self { q, k, inject: None }
    }

    /// The q and k the attention will see: the injection applied with ordinary tensor ops
    /// (the reference the kernel is tested against), for controllers that record them.
    pub fn resolved(self) -> (Tensor<3>, Tensor<3>) {
        match self.inject {
            None => (self.q, self.k),
            Some(inject) => inject_reference(self.q, self.k, inject),
        }
    }
}

/// What a [`Recorder`] captured at one site.
// A handful of captures live at once; boxing the pair would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Captured {
    /// A ResNet residual branch, `[batch, channels, height, width]`.
    Resnet(Tensor<4>),
    /// Self-attention q and k, each `[batch, tokens, inner_dim]`.
    SelfAttn {
        /// The projected queries.
        q: Tensor<3>,
        /// The projected keys.
        k: Tensor<3>,
    },
}

/// A controller that records the tensors at the sites it is asked to watch, unchanged.
///
/// Used by tests to compare every site against diffusers, and by anyone who wants to look
/// at the features Ditail injects.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    watch: Option<Vec<Site>>,
    stop_when_done: bool,
    /// The captured tensors, by site (the last call wins if a site is visited twice).
    pub captured: BTreeMap<Site, Captured>,
}

impl Recorder {
    /// Records every site.
    pub fn all() -> Self {
        Self::default()
    }

    /// Records only the given sites.
    pub fn sites(sites: impl IntoIterator<Item = Site>) -> Self {
        Self {
            watch: Some(sites.into_iter().collect()),
            stop_when_done: false,
            captured: BTreeMap::new(),
        }
    }

    /// Records only the given sites and ends the forward as soon as it has them all (a
    /// capture-only pass: the forward's output is then not a noise prediction).
    pub fn capture_only(sites: impl IntoIterator<Item = Site>) -> Self {
        Self {
            stop_when_done: true,
            ..Self::sites(sites)
        }
    }

    fn watches(&self, at: Site) -> bool {
        self.watch.as_ref().is_none_or(|w| w.contains(&at))
    }
}

impl Controller for Recorder {
    fn reads_resnet(&self, at: Site) -> bool {
        self.watches(at)
    }

    fn resnet(&mut self, at: Site, h: Tensor<4>) -> Tensor<4> {
        if self.watches(at) {
            self.captured.insert(at, Captured::Resnet(h.clone()));
        }
        h
    }

    fn self_attn(&mut self, at: Site, _grid: [usize; 2], qk: SelfAttnQk) -> SelfAttnQk {
        if self.watches(at) {
            self.captured.insert(
                at,
                Captured::SelfAttn {
                    q: qk.q.clone(),
                    k: qk.k.clone(),
                },
            );
        }
        qk
    }

    /// A [`Recorder::capture_only`] recorder is finished once it has all its sites.
    fn finished(&self) -> bool {
        self.stop_when_done
            && self
                .watch
                .as_ref()
                .is_some_and(|w| w.iter().all(|s| self.captured.contains_key(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ditail_sites_are_the_methods_nine() {
        let paths: Vec<String> = Site::ditail_sites()
            .iter()
            .map(|s| s.diffusers_path())
            .collect();
        let attn = |b, l| format!("up_blocks.{b}.attentions.{l}.transformer_blocks.0.attn1");
        let mut want = vec!["up_blocks.1.resnets.1".to_string()];
        want.extend(
            [
                (1, 1),
                (1, 2),
                (2, 0),
                (2, 1),
                (2, 2),
                (3, 0),
                (3, 1),
                (3, 2),
            ]
            .map(|(b, l)| attn(b, l)),
        );
        assert_eq!(paths, want);
    }

    #[test]
    fn paths_parse_back() {
        for site in Site::ditail_sites()
            .into_iter()
            .chain(Site::ditail_sites_xl())
        {
            assert_eq!(Site::parse(&site.diffusers_path()), Some(site));
        }
        let mid = Site::parse("mid_block.attentions.0").unwrap();
        assert_eq!(
            mid.diffusers_path(),
            "mid_block.attentions.0.transformer_blocks.0.attn1"
        );
        assert_eq!(
            Site::parse("down_blocks.2.attentions.1.transformer_blocks.7"),
            Some(Site::SelfAttn {
                stage: Stage::Down,
                block: 2,
                layer: 1,
                depth: 7
            })
        );
        for bad in [
            "",
            "up_blocks",
            "up_blocks.x.resnets.1",
            "up_blocks.1.resnets",
            "up_blocks.1.attentions.0.attn2",
            "unet.up_blocks.1.resnets.1",
        ] {
            assert_eq!(Site::parse(bad), None, "{bad}");
        }
    }
}
