//! `ditail invert`: the reusable inversion, saved as a latents file for `transfer
//! --from-latents` with any number of targets.

use anyhow::{Context, Result};
use ditail::pipeline::preprocess::{load_rgb, working_dims};
use ditail::pipeline::{InversionSettings, invert, latents};

use super::args::InvertArgs;
use super::device::Compute;
use ditail::app::output::check_output_file;
use ditail::app::record::model_label;
use ditail::app::{Budget, Runner};

use super::ui::{Terminal, Ui};

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
        size: args
            .size
            .unwrap_or(ditail::pipeline::settings::defaults::SIZE),
    };
    settings.validate()?;
    check_output_file(&args.output, "output", None)?;
    let rgb = load_rgb(&args.image)?;
    let spec = args.model.spec(&args.source, false)?;
    let checked = ditail::app::models::check(&spec, compute)?;
    if args.size.is_none() {
        settings.size = checked.family.native_size();
    }
    working_dims(rgb.width(), rgb.height(), settings.size)
        .with_context(|| format!("content image {}", args.image.display()))?;
    checked.scheduler.timesteps(settings.steps)?;
    Ok(Box::new(move || {
        let mut runner = Runner::new(compute.clone(), Budget::models(1));
        let source = runner.model(&spec, &model_label(&spec.model), &mut Terminal::new(ui))?;
        let mut progress = ui.steps("source");
        let inv = invert(&source, &rgb, &settings, &compute.device, &mut progress)
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
