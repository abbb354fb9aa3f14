//! `ditail generate`: text to image with one model (also the content step of `cocktail`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use ditail::pipeline::{GenerationSettings, Model, decode, generate, to_rgb};
use image::RgbImage;

use super::args::{GenerateArgs, GenerationFlags};
use super::device::Compute;
use super::metadata::{ModelRecord, Record, dedup, embedding_records};
use super::models::{self, Models, dtype_name};
use super::output::{check_output_file, write_png};
use super::ui::Ui;

/// Checks the numbers of a text-to-image run.
pub fn check_flags(flags: &GenerationFlags) -> Result<()> {
    if flags.size < 8 || !flags.size.is_multiple_of(8) {
        bail!("--size {}: must be a positive multiple of 8", flags.size);
    }
    if flags.steps == 0 || flags.steps > 1000 {
        bail!("--steps {}: must be between 1 and 1000", flags.steps);
    }
    if !flags.omega.is_finite() {
        bail!("--omega {}: must be a finite number", flags.omega);
    }
    Ok(())
}

/// The pipeline's settings for a square image of `flags`.
pub fn settings(prompt: &str, flags: &GenerationFlags, seed: u64) -> GenerationSettings {
    GenerationSettings {
        negative_prompt: flags.negative.clone(),
        omega: flags.omega,
        steps: flags.steps,
        width: flags.size,
        height: flags.size,
        seed,
        ..GenerationSettings::new(prompt)
    }
}

/// Generates an image and its record.
pub fn render(
    model: &Model,
    record: &ModelRecord,
    prompt: &str,
    flags: &GenerationFlags,
    seed: u64,
    compute: &Compute,
    ui: &Ui,
) -> Result<(RgbImage, Record)> {
    let label = super::metadata::model_label(&record.model);
    let mut progress = ui.steps(&label);
    let latents = generate(
        model,
        &settings(prompt, flags, seed),
        &compute.device,
        &mut progress,
    )
    .context("generating")?;
    let task = ui.task("decoding");
    let img = to_rgb(decode(model, latents)?)?;
    task.done(ui);
    let record = Record {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kind: "generate".into(),
        prompt: prompt.to_string(),
        negative_prompt: flags.negative.clone(),
        model: record.clone(),
        source: None,
        ditail: None,
        seed: Some(seed),
        steps: flags.steps,
        omega: flags.omega,
        width: img.width(),
        height: img.height(),
        backend: compute.backend.to_string(),
        dtype: dtype_name(compute.dtype).into(),
        embeddings: dedup(embedding_records(model, &[prompt, &flags.negative])?),
    };
    Ok((img, record))
}

/// A seed from the clock, for runs that give none (it is recorded in the output).
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64 ^ (nanos >> 64) as u64) % 4_294_967_296
}

/// `ditail generate`: checks everything, then runs.
pub fn command<'a>(
    args: &'a GenerateArgs,
    compute: &'a Compute,
    ui: &'a Ui,
) -> Result<super::Run<'a>> {
    check_flags(&args.generation)?;
    check_output_file(&args.output, "output", Some("png"))?;
    let spec = models::spec(&args.model, &args.model_flags, true)?;
    let checked = models::check(&spec, compute)?;
    let seed = args.seed.unwrap_or_else(random_seed);
    let output: &Path = &args.output;
    Ok(Box::new(move || {
        let mut models = Models::new(compute, ui, 1);
        let model = models.get(&spec)?;
        let (img, record) = render(
            model,
            &checked.record,
            &args.prompt,
            &args.generation,
            seed,
            compute,
            ui,
        )?;
        write_png(output, &img, &record.chunks())?;
        ui.info(format!("wrote {} (seed {seed})", output.display()));
        Ok(())
    }))
}
