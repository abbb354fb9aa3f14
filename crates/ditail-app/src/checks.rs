//! The checks a transfer passes before any weights load: sources and targets of one
//! family whose timesteps agree, injection sites that exist, content images and masks
//! of workable shapes. Every face runs these (through [`crate::Job`]), so a job refused
//! by one is refused by all, with the same words.

use std::path::Path;

use ditail_pipeline::Mask;
use ditail_pipeline::SamplingSettings;
use ditail_pipeline::preprocess::working_dims;
use image::RgbImage;

use crate::models::Checked;
use crate::{Context, Result, refuse};

/// Fails unless every injection site `sampling` names exists in `target`'s U-Net.
pub fn check_sites(sampling: &SamplingSettings, target: &Checked) -> Result<()> {
    let Some(sites) = &sampling.sites else {
        return Ok(());
    };
    if let Some(bad) = sites.all().find(|&s| !target.unet.has_site(s)) {
        refuse!(
            "--sites: `{bad}` does not exist in {}'s U-Net ({})",
            target.record.model,
            target.family
        );
    }
    Ok(())
}

/// Fails unless `source` and `target` are of one family (their latents are not
/// interchangeable) and every sampling timestep of `target` is an inversion timestep of
/// `source`.
pub fn check_steps(
    source: &Checked,
    target: &Checked,
    inv_steps: usize,
    steps: usize,
) -> Result<()> {
    if source.family != target.family {
        refuse!(
            "the source {} is {} and the target {} is {}: Ditail inverts with one and samples \
             with the other, and their latents are not interchangeable; pick two models of one \
             family",
            source.record.model,
            source.family,
            target.record.model,
            target.family
        );
    }
    let inv = source.scheduler.timesteps(inv_steps)?;
    let spl = target.scheduler.timesteps(steps)?;
    if let Some(t) = spl.iter().find(|t| !inv.contains(t)) {
        refuse!(
            "--steps {steps} needs timestep {t}, which --inv-steps {inv_steps} does not produce \
             (sampling timesteps must be inversion timesteps: use equal counts, or e.g. 100 and 50)"
        );
    }
    Ok(())
}

/// Fails unless a content image can be worked at `size` (see [`working_dims`]) and the
/// mask, if it is an image, has its aspect ratio.
pub fn check_content(
    path: &Path,
    rgb: &RgbImage,
    size: u32,
    mask: &Mask,
    mask_spec: &str,
) -> Result<()> {
    let dims = working_dims(rgb.width(), rgb.height(), size)
        .with_context(|| format!("content image {}", path.display()))?;
    check_mask_shape(mask, mask_spec, dims)
}

/// [`Mask::check_shape`] for the mask given as `--mask spec`.
pub fn check_mask_shape(mask: &Mask, spec: &str, dims: (u32, u32)) -> Result<()> {
    mask.check_shape(dims)
        .with_context(|| format!("--mask {spec}"))
}
