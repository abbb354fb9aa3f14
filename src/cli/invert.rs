//! `ditail invert`: the reusable inversion, saved as a latents file for `transfer
//! --from-latents` with any number of targets.

use anyhow::{Context, Result};
use ditail::pipeline::preprocess::{load_rgb, working_dims};
use ditail::pipeline::{InversionSettings, invert, latents};

use super::args::InvertArgs;
use super::device::Compute;
use super::models::{self, Models};
use super::output::check_output_file;
use super::ui::Ui;

/// Checks everything, then returns the run.
pub fn command<'a>(
    args: &'a InvertArgs,
    compute: &'a Compute,
    ui: &'a Ui,
) -> Result<super::Run<'a>> {
    if !args.model.loras.is_empty() {
        anyhow::bail!("--lora merges into the target model; an inversion has only a source");
    }
    let mut settings = InversionSettings {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        alpha: args.alpha,
        beta: args.beta,
        steps: args.inv_steps,
        size: args.size.unwrap_or(512),
    };
    settings.validate()?;
    check_output_file(&args.output, "output", None)?;
    let rgb = load_rgb(&args.image)?;
    let spec = models::spec(&args.source, &args.model, false)?;
    let checked = models::check(&spec, compute)?;
    if args.size.is_none() {
        settings.size = checked.family.native_size();
    }
    working_dims(rgb.width(), rgb.height(), settings.size)
        .with_context(|| format!("content image {}", args.image.display()))?;
    checked.scheduler.timesteps(settings.steps)?;
    Ok(Box::new(move || {
        let mut models = Models::new(compute, ui, 1);
        let source = models.get(&spec)?;
        let mut progress = ui.steps("source");
        let inv = invert(source, &rgb, &settings, &compute.device, &mut progress)
            .with_context(|| format!("inverting {}", args.image.display()))?;
        latents::save(&args.output, &inv, None)
            .with_context(|| format!("writing {}", args.output.display()))?;
        ui.info(format!(
            "wrote {} ({} latents of {} steps)",
            args.output.display(),
            inv.latents().len(),
            settings.steps
        ));
        Ok(())
    }))
}
