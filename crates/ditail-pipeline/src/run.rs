//! The whole method as a library API: invert once, sample many, generate, decode.
//!
//! ```no_run
//! # use ditail_pipeline::*;
//! # fn demo(source: &Model, target: &Model, device: &burn::prelude::Device) -> Result<()> {
//! let image = preprocess::load_rgb("photo.png".as_ref())?;
//! let inv = invert(source, &image, &InversionSettings::new("a photo of a cat"), device, &mut |_| true)?;
//! let latents = sample(target, &inv, &SamplingSettings::new("a photo of a cat"), device, &mut |_| true)?;
//! let rgb = to_rgb(decode(target, latents)?)?; // 8-bit RGB
//! rgb.save("styled.png").expect("writable");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use burn::prelude::*;
use image::RgbImage;

use crate::digest::image_hash;
use crate::error::{PipelineError, Result};
use crate::finite::FiniteChecks;
use crate::inject::InjectionSites;
use crate::inject::Windows;
use crate::inversion::{Inversion, InversionMeta};
use crate::model::Model;
use crate::noise::gaussian;
use crate::preprocess::preprocess;
use crate::settings::{GenerationSettings, InversionSettings, SamplingSettings};
use crate::steps::{
    SamplingEmbeddings, StepParams, guided_step, inversion_step, sampling_step, unet_timesteps,
};
use ditail_models::Conditioning;

/// Which long phase a progress report belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// DDIM inversion with the source model.
    Inversion,
    /// Injected sampling with the target model.
    Sampling,
    /// Text-to-image.
    Generation,
}

/// A progress report, sent after every step; return `false` from the callback to cancel.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// The phase.
    pub phase: Phase,
    /// Steps done.
    pub step: usize,
    /// Steps in the phase.
    pub total: usize,
    /// Latents worth showing after this step (`[1, 4, h, w]`, the model's float type):
    /// while sampling or generating the step's prediction of the clean latents `x0`, while
    /// inverting the latents reached so far (which grow noisier). Callers that want a
    /// preview project it to RGB; the rest ignore it at no cost.
    pub preview: Option<&'a Tensor<4>>,
}

/// `x0 = (x - sqrt(1-ā_t)·eps) / sqrt(ā_t)`: a step's prediction of the clean latents.
fn predicted_x0(x: Tensor<4>, eps: Tensor<4>, alpha_t: f64) -> Tensor<4> {
    (x - eps * (1.0 - alpha_t).sqrt()) / alpha_t.sqrt()
}

fn cancelled(progress: &mut dyn FnMut(Progress) -> bool, p: Progress<'_>) -> Result<()> {
    if progress(p) {
        Ok(())
    } else {
        Err(PipelineError::Cancelled)
    }
}

/// Inverts `image` with `source` (METHOD.md stage 1).
pub fn invert(
    source: &Model,
    image: &RgbImage,
    settings: &InversionSettings,
    device: &Device,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Inversion> {
    settings.validate()?;
    let timesteps = source.scheduler().timesteps(settings.steps)?;
    let pixels = preprocess(image, settings.size, device)?.cast(source.vae_dtype());
    let [_, _, h, w] = pixels.dims();
    let z0 = (source.sd().vae.encode_mean(pixels) * source.scaling_factor()).cast(source.dtype());
    let [positive, negative]: [Conditioning; 2] = source
        .conditions(
            &[&settings.prompt, &settings.negative_prompt],
            [h, w],
            device,
        )?
        .try_into()
        .expect("two prompts");
    let cond = positive.scaled(settings.alpha, negative, settings.beta);
    let latents = invert_latents(source, z0.clone(), cond, &timesteps, progress)?;
    Inversion::new(
        z0,
        latents,
        InversionMeta {
            source: source.name().to_string(),
            settings: settings.clone(),
            image_sha256: image_hash(image),
            family: Some(source.family()),
        },
    )
}

/// The inversion loop from `z0` under condition `cond` over `timesteps` (any order; run
/// increasing), keeping every `Z[t]`.
pub fn invert_latents(
    source: &Model,
    z0: Tensor<4>,
    cond: Conditioning,
    timesteps: &[i64],
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<BTreeMap<i64, Tensor<4>>> {
    let mut ts = timesteps.to_vec();
    ts.sort_unstable();
    let mut z = z0;
    let mut out = BTreeMap::new();
    let mut alpha_prev = source.scheduler().final_alpha_cumprod();
    let cond = source
        .sd()
        .unet
        .prepare(cond)
        .for_timesteps(&unet_timesteps(&ts));
    let mut finite = FiniteChecks::new(source, "inversion", ts.len());
    for (i, &t) in ts.iter().enumerate() {
        let alpha_t = source.scheduler().alpha(t);
        z = inversion_step(&cond, z, t, alpha_prev, alpha_t).0;
        finite.after_step(&z, i + 1)?;
        out.insert(t, z.clone());
        alpha_prev = alpha_t;
        cancelled(
            progress,
            Progress {
                phase: Phase::Inversion,
                step: i + 1,
                total: ts.len(),
                preview: Some(&z),
            },
        )?;
    }
    finite.finish()?;
    Ok(out)
}

/// Checks that `inv` can serve a sampling run of `settings` with `target`, before any
/// network runs: the latent channels match, every sampling timestep is an inversion
/// timestep, and a mask image has the content's shape (see [`crate::Mask::check_shape`]).
/// Returns the sampling timesteps.
pub fn check_compatible(
    target: &Model,
    inv: &Inversion,
    settings: &SamplingSettings,
) -> Result<Vec<i64>> {
    settings.validate()?;
    if let Err(PipelineError::Settings(reason)) = settings.mask.check_shape(inv.pixel_size()) {
        return Err(PipelineError::InversionMismatch {
            what: "mask shape",
            reason,
        });
    }
    let family = inv.meta().family.unwrap_or(ditail_models::Family::Sd1);
    if family != target.family() {
        return Err(PipelineError::InversionMismatch {
            what: "model family",
            reason: format!(
                "the inversion is in {family}'s latent space and the target {} is {}",
                target.name(),
                target.family()
            ),
        });
    }
    let (channels, wanted) = (inv.z0().dims()[1], target.sd().unet_config.in_channels);
    if channels != wanted {
        return Err(PipelineError::InversionMismatch {
            what: "latent channels",
            reason: format!(
                "the latents have {channels} channels, the target's U-Net takes {wanted}"
            ),
        });
    }
    let timesteps = target.scheduler().timesteps(settings.steps)?;
    if let Some(t) = timesteps.iter().find(|t| !inv.latents().contains_key(t)) {
        return Err(PipelineError::InversionMismatch {
            what: "step count",
            reason: format!(
                "sampling with {} steps needs Z[{t}], which an inversion with {} steps does not have \
                 (sampling timesteps must be inversion timesteps: e.g. equal counts, or 100 and 50)",
                settings.steps,
                inv.meta().settings.steps
            ),
        });
    }
    Ok(timesteps)
}

/// The sites `settings` names, else the method's for the target's family; fails naming a
/// site the target's U-Net does not have.
pub fn injection_sites(target: &Model, settings: &SamplingSettings) -> Result<InjectionSites> {
    let sites = match &settings.sites {
        Some(sites) => sites.clone(),
        None => InjectionSites::default_for(target.family()),
    };
    if let Some(bad) = sites.all().find(|&s| !target.sd().unet_config.has_site(s)) {
        return Err(PipelineError::Settings(format!(
            "injection site `{bad}` does not exist in {}'s U-Net ({})",
            target.name(),
            target.family()
        )));
    }
    Ok(sites)
}

/// Samples with `target` from an inversion while injecting the source branch's features
/// (METHOD.md stage 2). Returns the final latents `[1, 4, h, w]`.
pub fn sample(
    target: &Model,
    inv: &Inversion,
    settings: &SamplingSettings,
    device: &Device,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Tensor<4>> {
    let timesteps = check_compatible(target, inv, settings)?;
    let sites = injection_sites(target, settings)?;
    let pixels = inv.pixel_size();
    let size = [pixels.1 as usize, pixels.0 as usize];
    let [uncond, positive, negative]: [Conditioning; 3] = target
        .conditions(
            &["", &settings.prompt, &settings.negative_prompt],
            size,
            device,
        )?
        .try_into()
        .expect("three prompts");
    let cond = SamplingEmbeddings {
        uncond,
        positive,
        negative,
    }
    .prepare(&target.sd().unet)
    .for_timesteps(&timesteps);
    let (conv_steps, attn_steps) = settings.window_steps();
    let ratio = target.scheduler().step_ratio(settings.steps);
    // A saved inversion is f32; the target may run in f16.
    let dtype = target.dtype();
    let mut x = inv.latents()[&timesteps[0]].clone().cast(dtype);
    let mut finite = FiniteChecks::new(target, "sampling", timesteps.len());
    for (i, &t) in timesteps.iter().enumerate() {
        let params = StepParams {
            t,
            alpha_t: target.scheduler().alpha(t),
            alpha_prev: target.scheduler().alpha(t - ratio),
            omega: settings.omega,
            windows: Windows {
                conv: i < conv_steps,
                attn: i < attn_steps,
            },
            mask: &settings.mask,
            sites: &sites,
            always_batch_source: settings.always_batch_source,
        };
        let source = inv.latents()[&t].clone().cast(dtype);
        let step = sampling_step(&cond, x.clone(), source, params);
        let x0 = predicted_x0(x, step.eps, params.alpha_t);
        x = step.x;
        finite.after_step(&x, i + 1)?;
        cancelled(
            progress,
            Progress {
                phase: Phase::Sampling,
                step: i + 1,
                total: timesteps.len(),
                preview: Some(&x0),
            },
        )?;
    }
    finite.finish()?;
    Ok(x)
}

/// Text-to-image with DDIM and guidance, from seeded noise (see [`crate::noise`]).
/// Returns the final latents `[1, 4, height/8, width/8]`.
pub fn generate(
    model: &Model,
    settings: &GenerationSettings,
    device: &Device,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Tensor<4>> {
    settings.validate()?;
    let timesteps = model.scheduler().timesteps(settings.steps)?;
    let (h, w) = (settings.height as usize / 8, settings.width as usize / 8);
    let noise = Tensor::<4>::from_data(
        TensorData::new(gaussian(settings.seed, 4 * h * w), [1, 4, h, w]),
        device,
    )
    .cast(model.dtype());
    let size = [settings.height as usize, settings.width as usize];
    let [positive, negative]: [Conditioning; 2] = model
        .conditions(&[&settings.prompt, &settings.negative_prompt], size, device)?
        .try_into()
        .expect("two prompts");
    generate_from(
        model,
        noise,
        positive,
        negative,
        settings.omega,
        &timesteps,
        settings.steps,
        progress,
    )
}

/// The text-to-image loop from given noise and embeddings.
#[allow(clippy::too_many_arguments)]
pub fn generate_from(
    model: &Model,
    noise: Tensor<4>,
    positive: Conditioning,
    negative: Conditioning,
    omega: f64,
    timesteps: &[i64],
    steps: usize,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Tensor<4>> {
    let ratio = model.scheduler().step_ratio(steps);
    let pair = model
        .sd()
        .unet
        .prepare(Conditioning::cat(vec![positive, negative]))
        .for_timesteps(&unet_timesteps(timesteps));
    let mut x = noise;
    let mut finite = FiniteChecks::new(model, "generation", timesteps.len());
    for (i, &t) in timesteps.iter().enumerate() {
        let (a_t, a_prev) = (
            model.scheduler().alpha(t),
            model.scheduler().alpha(t - ratio),
        );
        let (next, eps) = guided_step(&pair, x.clone(), t, omega, a_t, a_prev);
        let x0 = predicted_x0(x, eps, a_t);
        x = next;
        finite.after_step(&x, i + 1)?;
        cancelled(
            progress,
            Progress {
                phase: Phase::Generation,
                step: i + 1,
                total: timesteps.len(),
                preview: Some(&x0),
            },
        )?;
    }
    finite.finish()?;
    Ok(x)
}

/// Decodes latents to an image in [0, 1]: `clamp(VAE.decode(x / s) / 2 + 0.5, 0, 1)`,
/// failing instead of returning NaN or infinite values (which would be written as black
/// pixels): a VAE can overflow in f16 where the U-Net did not.
///
/// # Shapes
/// - `latents`: `[1, 4, h, w]`; output `[1, 3, 8h, 8w]`.
pub fn decode(model: &Model, latents: Tensor<4>) -> Result<Tensor<4>> {
    let latents = latents.cast(model.vae_dtype());
    let img = model.sd().vae.decode(latents / model.scaling_factor());
    let mut finite = FiniteChecks::new(model, "VAE decoding", 1);
    finite.after_step(&img, 1)?;
    finite.finish()?;
    Ok((img / 2.0 + 0.5).clamp(0.0, 1.0))
}

/// An image tensor in [0, 1] as 8-bit RGB, rounded as diffusers' `numpy_to_pil` does.
///
/// # Shapes
/// - `image`: `[1, 3, H, W]`
pub fn to_rgb(image: Tensor<4>) -> Result<RgbImage> {
    let [_, c, h, w] = image.dims();
    if c != 3 {
        return Err(PipelineError::Settings(format!(
            "an image has 3 channels, this tensor {c}"
        )));
    }
    let values: Vec<f32> = image
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| PipelineError::Settings(format!("reading the image back: {e:?}")))?;
    let plane = h * w;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, p) in img.pixels_mut().enumerate() {
        for ch in 0..3 {
            p.0[ch] = (values[ch * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(img)
}
