//! Single steps of the method, each a pure function of its inputs so that tests can run
//! any step from stored tensors: a DDIM inversion step, a Ditail sampling step and a
//! guided text-to-image step (METHOD.md stages 1 and 2).

use std::cell::OnceCell;

use burn::prelude::*;
use ditail_models::hook::{NoControl, Recorder};
use ditail_models::{Conditioning, PreparedConditioning, UNet2DConditionModel};

use crate::inject::{InjectionSites, Injector, Windows};
use crate::mask::Mask;

/// One DDIM update from `x` (at `ā_t`) to `ā_next`, given the noise estimate `eps`:
/// `x0 = (x - sqrt(1-ā_t)·eps) / sqrt(ā_t)`, result `sqrt(ā_next)·x0 + sqrt(1-ā_next)·eps`.
/// Inversion uses it with the roles reversed (from `ā_prev` up to `ā_t`).
pub fn ddim_update(x: Tensor<4>, eps: Tensor<4>, alpha_from: f64, alpha_to: f64) -> Tensor<4> {
    let x0 = (x - eps.clone() * (1.0 - alpha_from).sqrt()) / alpha_from.sqrt();
    x0 * alpha_to.sqrt() + eps * (1.0 - alpha_to).sqrt()
}

/// Classifier-free guidance `eps_neg + omega · (eps_pos - eps_neg)` from a prediction
/// whose positive and negative elements are at `first` and `first + 1`.
fn guide(pred: &Tensor<4>, first: usize, omega: f64) -> Tensor<4> {
    let eps_pos = pred.clone().narrow(0, first, 1);
    let eps_neg = pred.clone().narrow(0, first + 1, 1);
    eps_neg.clone() + (eps_pos - eps_neg) * omega
}

/// One inversion step (METHOD.md stage 1, step 4): `eps = U_S(z, t, c_inv)`, then the DDIM
/// update from `ā_prev` to `ā_t`. `cond` is `c_inv` prepared for the source's U-Net
/// ([`UNet2DConditionModel::prepare`], once for the whole inversion). Returns
/// `(z_next, eps)`.
pub fn inversion_step(
    cond: &PreparedConditioning<'_>,
    z: Tensor<4>,
    t: i64,
    alpha_prev: f64,
    alpha_t: f64,
) -> (Tensor<4>, Tensor<4>) {
    let eps = cond.forward(z.clone(), t as f32, &mut NoControl);
    (ddim_update(z, eps.clone(), alpha_prev, alpha_t), eps)
}

/// A run's timesteps as its steps hand them to the U-Net (`t as f32`), so that
/// [`PreparedConditioning::for_timesteps`]' table finds each step's by its value.
pub(crate) fn unet_timesteps(timesteps: &[i64]) -> Vec<f32> {
    timesteps.iter().map(|&t| t as f32).collect()
}

/// The three conditionings of Ditail's sampling batch, each of batch 1 (a text embedding
/// `[1, 77, hidden]` converts with `.into()`).
#[derive(Clone, Debug)]
pub struct SamplingEmbeddings {
    /// `E_T("")`, conditioning the source branch.
    pub uncond: Conditioning,
    /// `E_T(p+)`.
    pub positive: Conditioning,
    /// `E_T(p-)`.
    pub negative: Conditioning,
}

impl SamplingEmbeddings {
    /// The batches a sampling run conditions on, prepared for the target's U-Net
    /// ([`UNet2DConditionModel::prepare`]) once for all its steps.
    pub fn prepare(self, unet: &UNet2DConditionModel) -> SamplingConditions<'_> {
        SamplingConditions {
            unet,
            emb: self,
            timesteps: Vec::new(),
            batch: OnceCell::new(),
            pair: OnceCell::new(),
            source: OnceCell::new(),
        }
    }
}

/// The conditionings of a sampling run's forwards, each prepared for the target's U-Net
/// when a step first needs it: `[E(""), E(p+), E(p-)]` while the source branch is in the
/// batch, `[E(p+), E(p-)]` when it is not, and `E("")` alone for a capture pass of the
/// source (see [`sampling_step`]).
#[derive(Debug)]
pub struct SamplingConditions<'m> {
    unet: &'m UNet2DConditionModel,
    emb: SamplingEmbeddings,
    /// The run's timesteps, whose time embeddings each conditioning makes once (none: each
    /// step makes its own).
    timesteps: Vec<f32>,
    batch: OnceCell<PreparedConditioning<'m>>,
    pair: OnceCell<PreparedConditioning<'m>>,
    source: OnceCell<PreparedConditioning<'m>>,
}

impl<'m> SamplingConditions<'m> {
    /// The same, with the time embeddings of the run's `timesteps` made once by each
    /// conditioning ([`PreparedConditioning::for_timesteps`]) instead of by every step.
    pub fn for_timesteps(self, timesteps: &[i64]) -> Self {
        Self {
            timesteps: unet_timesteps(timesteps),
            ..self
        }
    }

    /// `cond` prepared for the U-Net and the run's timesteps (with none known, a table that
    /// no step finds itself in: each makes its own embedding).
    fn prepare(&self, cond: Conditioning) -> PreparedConditioning<'m> {
        self.unet.prepare(cond).for_timesteps(&self.timesteps)
    }

    /// `[E(""), E(p+), E(p-)]`.
    fn batch(&self) -> &PreparedConditioning<'m> {
        self.batch.get_or_init(|| {
            let e = &self.emb;
            let parts = vec![e.uncond.clone(), e.positive.clone(), e.negative.clone()];
            self.prepare(Conditioning::cat(parts))
        })
    }

    /// `[E(p+), E(p-)]`.
    fn pair(&self) -> &PreparedConditioning<'m> {
        self.pair.get_or_init(|| {
            let parts = vec![self.emb.positive.clone(), self.emb.negative.clone()];
            self.prepare(Conditioning::cat(parts))
        })
    }

    /// `E("")`.
    fn source(&self) -> &PreparedConditioning<'m> {
        self.source
            .get_or_init(|| self.prepare(self.emb.uncond.clone()))
    }
}

/// What one Ditail sampling step produced.
#[derive(Clone, Debug)]
pub struct SamplingStep {
    /// The latents after the step, `[1, 4, h, w]`.
    pub x: Tensor<4>,
    /// The guided noise estimate, `[1, 4, h, w]`.
    pub eps: Tensor<4>,
    /// The U-Net's raw output for the batch: `[3, 4, h, w]` (source, positive, negative)
    /// when the source branch was in the batch, else `[2, 4, h, w]`.
    pub noise_pred: Tensor<4>,
}

/// Settings of one sampling step.
#[derive(Clone, Copy, Debug)]
pub struct StepParams<'a> {
    /// The timestep.
    pub t: i64,
    /// `ā_t`.
    pub alpha_t: f64,
    /// `ā` of the next (smaller) timestep, or the final value.
    pub alpha_prev: f64,
    /// Guidance scale ω.
    pub omega: f64,
    /// Which injections are on.
    pub windows: Windows,
    /// Where to inject in the image.
    pub mask: &'a Mask,
    /// Where to inject in the U-Net.
    pub sites: &'a InjectionSites,
    /// Whether to keep the source branch in the batch even when nothing is injected (the
    /// reference's plain batch of 3; identical results, more work).
    pub always_batch_source: bool,
}

/// One Ditail sampling step (METHOD.md stage 2): T's U-Net on `[Z[t], x, x]` with
/// `[E(""), E(p+), E(p-)]` while injecting, guidance, DDIM update. `cond` holds the
/// embeddings prepared for T's U-Net ([`SamplingEmbeddings::prepare`], once a run).
///
/// The work follows what the step needs, with the same result as the reference's batch of
/// 3 every step (`always_batch_source` forces that): while attention is injected, the batch
/// of 3; while only conv features are, a capture pass of the source alone that stops after
/// the last conv site, then `[x, x]` with the captured features; with nothing injected,
/// `[x, x]`.
pub fn sampling_step(
    cond: &SamplingConditions<'_>,
    x: Tensor<4>,
    source: Tensor<4>,
    p: StepParams<'_>,
) -> SamplingStep {
    let in_batch = p.windows.attn || p.always_batch_source;
    let t = p.t as f32;
    let noise_pred = if in_batch {
        let latents = Tensor::cat(vec![source, x.clone(), x.clone()], 0);
        let mut injector = Injector::new(p.sites, p.mask, p.windows);
        cond.batch().forward(latents, t, &mut injector)
    } else {
        let latents = Tensor::cat(vec![x.clone(), x.clone()], 0);
        if p.windows.conv && !p.sites.conv.is_empty() {
            let mut capture = Recorder::capture_only(p.sites.conv.iter().copied());
            cond.source().forward(source, t, &mut capture);
            let mut injector =
                Injector::with_captured(p.sites, p.mask, p.windows, capture.captured);
            cond.pair().forward(latents, t, &mut injector)
        } else {
            cond.pair().forward(latents, t, &mut NoControl)
        }
    };
    let eps = guide(&noise_pred, if in_batch { 1 } else { 0 }, p.omega);
    SamplingStep {
        x: ddim_update(x, eps.clone(), p.alpha_t, p.alpha_prev),
        eps,
        noise_pred,
    }
}

/// One step of text-to-image with classifier-free guidance (the negative prompt is the
/// unconditional branch). `pair` is `[positive, negative]` (batch 2) prepared for the
/// model's U-Net ([`UNet2DConditionModel::prepare`], once a run). Returns
/// `(x_next, guided eps)`.
pub fn guided_step(
    pair: &PreparedConditioning<'_>,
    x: Tensor<4>,
    t: i64,
    omega: f64,
    alpha_t: f64,
    alpha_prev: f64,
) -> (Tensor<4>, Tensor<4>) {
    let latents = Tensor::cat(vec![x.clone(), x.clone()], 0);
    let pred = pair.forward(latents, t as f32, &mut NoControl);
    let eps = guide(&pred, 0, omega);
    (ddim_update(x, eps.clone(), alpha_t, alpha_prev), eps)
}
