//! `ditail transfer`: one content image (or a saved inversion) into one target model, as a
//! one-cell [`Job`] of the application layer.

use anyhow::{Context, Result, bail};
use ditail::app::job::Check;
use ditail::app::{ContentArg, Job, Runner};

use super::args::TransferArgs;
use super::device::Compute;
use super::ui::{Terminal, Ui};

/// Checks `ditail transfer`'s inputs (nothing runs): the job.
pub fn prepare_command(args: &TransferArgs, compute: &Compute) -> Result<Job> {
    let target_name = args
        .target
        .clone()
        .or_else(|| args.source.clone())
        .context("give --target (or --source, which it defaults to)")?;
    let source = match &args.source {
        Some(s) => Some(args.model.spec(s, false)?),
        None => None,
    };
    let target = args.model.spec(&target_name, true)?;
    let content = match (&args.from_latents, &args.image) {
        (Some(path), image) => {
            if image.is_some() {
                eprintln!(
                    "warning: IMAGE is ignored with --from-latents (the latents hold the content)"
                );
            }
            ContentArg::Latents(path)
        }
        (None, Some(path)) => ContentArg::Image(path),
        (None, None) => bail!("give a content IMAGE or --from-latents"),
    };
    let check: &mut Check = &mut |spec| ditail::app::models::check(spec, compute);
    let mut job = Job::transfer(
        content,
        &args.prompt,
        source,
        target,
        &args.ditail,
        &args.output,
        compute,
        check,
    )?;
    if let Some(p) = &args.save_latents {
        job.save_latents(p)?;
    }
    if let Some(p) = &args.save_noise {
        job.save_noise(p)?;
    }
    Ok(job)
}

/// Runs a checked transfer on the terminal.
pub fn run(job: &Job, runner: &mut Runner, ui: &Ui) -> Result<()> {
    runner.run(job, &mut Terminal::new(ui))?;
    Ok(())
}
