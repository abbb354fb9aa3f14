//! `ditail transfer`: one content image (or a saved inversion) into one target model. The
//! job type here also serves `batch` and `cocktail`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::Tensor;
use ditail::pipeline::{
    InjectionSites, Inversion, InversionSettings, Mask, Model, ModelSpec, SamplingSettings, decode,
    invert, latents,
    preprocess::{load_rgb, working_dims},
    sample, to_rgb,
};
use image::RgbImage;

use super::args::{DitailFlags, GenerationFlags, TransferArgs};
use super::device::Compute;
use super::generate::render;
use super::metadata::{DitailRecord, ModelRecord, Record, dedup, embedding_records};
use super::models::{self, Checked, Models, check_embeddings, dtype_name};
use super::output::{check_output_file, write_png};
use super::ui::Ui;

/// What is transferred.
pub enum Content {
    /// An image, inverted with the source model.
    Image {
        /// Its file.
        path: PathBuf,
        /// Its pixels.
        rgb: RgbImage,
    },
    /// A saved inversion (`--from-latents`).
    Latents(Box<Inversion>),
    /// Generated from a prompt by the source model first (batch rows without an image).
    Generate {
        /// The content prompt.
        prompt: String,
        /// The noise seed.
        seed: u64,
        /// Text-to-image numbers.
        flags: GenerationFlags,
    },
}

/// A checked transfer, ready to run.
pub struct TransferJob {
    pub content: Content,
    pub source: ModelSpec,
    pub target: ModelSpec,
    pub inversion: InversionSettings,
    pub sampling: SamplingSettings,
    /// The mask as given (for the record).
    pub mask: String,
    pub output: PathBuf,
    pub save_latents: Option<PathBuf>,
    pub save_noise: Option<PathBuf>,
    /// The models' records (the source's is absent with `--from-latents`).
    pub source_record: Option<ModelRecord>,
    pub target_record: ModelRecord,
    /// What to tell the user before running (embeddings named but not found).
    pub warnings: Vec<String>,
}

/// Inversion and sampling settings from the flags, validated.
pub fn settings(
    prompt: &str,
    flags: &DitailFlags,
) -> Result<(InversionSettings, SamplingSettings)> {
    let mask = Mask::parse(&flags.mask).with_context(|| format!("--mask {}", flags.mask))?;
    let sampling = SamplingSettings {
        prompt: prompt.to_string(),
        negative_prompt: flags.negative_prompt.clone(),
        omega: flags.omega,
        steps: flags.steps,
        conv_ratio: flags.conv_ratio,
        attn_ratio: flags.attn_ratio,
        mask,
        no_injection: flags.no_injection,
        always_batch_source: false,
        sites: flags
            .sites
            .as_deref()
            .map(InjectionSites::parse)
            .transpose()
            .with_context(|| format!("--sites {}", flags.sites.as_deref().unwrap_or("")))?,
    };
    let inversion = InversionSettings {
        prompt: flags
            .inv_prompt
            .clone()
            .unwrap_or_else(|| prompt.to_string()),
        negative_prompt: flags
            .inv_negative_prompt
            .clone()
            .unwrap_or_else(|| flags.negative_prompt.clone()),
        alpha: flags.alpha,
        beta: flags.beta,
        steps: flags.inv_steps,
        size: flags.size.unwrap_or(512),
    };
    // Sampling first: its prompt is the one given (the inversion's defaults to it).
    sampling.validate()?;
    inversion.validate()?;
    Ok((inversion, sampling))
}

/// Fails unless every injection site `sampling` names exists in `target`'s U-Net.
pub fn check_sites(sampling: &SamplingSettings, target: &Checked) -> Result<()> {
    let Some(sites) = &sampling.sites else {
        return Ok(());
    };
    if let Some(bad) = sites.all().find(|&s| !target.unet.has_site(s)) {
        bail!(
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
        bail!(
            "the source {} is {} and the target {} is {}: Ditail inverts with one and samples              with the other, and their latents are not interchangeable; pick two models of one              family",
            source.record.model,
            source.family,
            target.record.model,
            target.family
        );
    }
    let inv = source.scheduler.timesteps(inv_steps)?;
    let spl = target.scheduler.timesteps(steps)?;
    if let Some(t) = spl.iter().find(|t| !inv.contains(t)) {
        bail!(
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

/// Where the content comes from.
pub enum ContentArg<'a> {
    /// An image file.
    Image(&'a Path),
    /// A latents file (`--from-latents`).
    Latents(&'a Path),
    /// A prompt the source model renders first.
    Generate {
        prompt: String,
        seed: u64,
        flags: GenerationFlags,
    },
}

/// Checks a transfer's inputs (nothing runs): content, models, LoRAs, steps, outputs.
/// `check` checks a model (see [`models::check`]; batches memoise it).
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    content: ContentArg,
    prompt: &str,
    source: Option<ModelSpec>,
    target: ModelSpec,
    flags: &DitailFlags,
    output: &Path,
    compute: &Compute,
    check: &mut dyn FnMut(&ModelSpec) -> Result<Checked>,
) -> Result<TransferJob> {
    let (mut inversion, sampling) = settings(prompt, flags)?;
    check_output_file(output, "output", Some("png"))?;
    let target_checked = check(&target)?;
    let mut warnings = check_embeddings(
        &target_checked,
        &[&sampling.prompt, &sampling.negative_prompt],
    )?;
    if flags.size.is_none() {
        inversion.size = target_checked.family.native_size();
    }
    check_sites(&sampling, &target_checked)?;
    let mut from_source = |content: Content| -> Result<_> {
        let source = source.clone().context("give a --source model")?;
        let checked = check(&source)?;
        check_steps(&checked, &target_checked, inversion.steps, sampling.steps)?;
        warnings.extend(check_embeddings(
            &checked,
            &[&inversion.prompt, &inversion.negative_prompt],
        )?);
        Ok((content, source, Some(checked.record)))
    };
    let (content, source, source_record) = match content {
        ContentArg::Image(path) => {
            let rgb = load_rgb(path)?;
            check_content(path, &rgb, inversion.size, &sampling.mask, &flags.mask)?;
            from_source(Content::Image {
                path: path.to_path_buf(),
                rgb,
            })?
        }
        ContentArg::Generate {
            prompt,
            seed,
            flags: gen_flags,
        } => {
            super::generate::check_flags(&gen_flags)?;
            let dims = working_dims(gen_flags.size, gen_flags.size, inversion.size)
                .context("the generated content")?;
            check_mask_shape(&sampling.mask, &flags.mask, dims)?;
            from_source(Content::Generate {
                prompt,
                seed,
                flags: gen_flags,
            })?
        }
        ContentArg::Latents(path) => {
            let (inv, _) = latents::load(path, &compute.device)
                .with_context(|| format!("--from-latents {}", path.display()))?;
            let family = inv.meta().family.unwrap_or(ditail::models::Family::Sd1);
            if family != target_checked.family {
                bail!(
                    "--from-latents {}: the inversion is in {family}'s latent space and the \
                     target {} is {}",
                    path.display(),
                    target_checked.record.model,
                    target_checked.family
                );
            }
            let [_, channels, _, _] = inv.z0().dims();
            if channels != target_checked.latent_channels {
                bail!(
                    "--from-latents {}: its latents have {channels} channels, the target's U-Net \
                     takes {}",
                    path.display(),
                    target_checked.latent_channels
                );
            }
            check_mask_shape(&sampling.mask, &flags.mask, inv.pixel_size())?;
            let timesteps = target_checked.scheduler.timesteps(sampling.steps)?;
            if let Some(t) = timesteps.iter().find(|t| !inv.latents().contains_key(t)) {
                bail!(
                    "--from-latents {}: sampling with --steps {} needs Z[{t}], which this inversion \
                     ({} steps) does not have",
                    path.display(),
                    sampling.steps,
                    inv.meta().settings.steps
                );
            }
            let source = ModelSpec::new(inv.meta().source.clone());
            (Content::Latents(Box::new(inv)), source, None)
        }
    };
    Ok(TransferJob {
        content,
        source,
        target,
        inversion,
        sampling,
        mask: flags.mask.clone(),
        output: output.to_path_buf(),
        save_latents: None,
        save_noise: None,
        source_record,
        target_record: target_checked.record,
        warnings,
    })
}

/// Samples `target` from `inv` and decodes: the image and the final latents.
pub fn sample_image(
    target: &Model,
    inv: &Inversion,
    sampling: &SamplingSettings,
    compute: &Compute,
    ui: &Ui,
) -> Result<(RgbImage, Tensor<4>)> {
    let mut progress = ui.steps("target");
    let latents =
        sample(target, inv, sampling, &compute.device, &mut progress).context("sampling")?;
    let task = ui.task("decoding");
    let img = to_rgb(decode(target, latents.clone())?)?;
    task.done(ui);
    Ok((img, latents))
}

/// The record of a transfer's output.
pub fn transfer_record(
    inv: &Inversion,
    sampling: &SamplingSettings,
    mask: &str,
    target: &ModelRecord,
    source: Option<&ModelRecord>,
    img: &RgbImage,
    compute: &Compute,
) -> Record {
    let source = source.cloned().unwrap_or_else(|| ModelRecord {
        model: inv.meta().source.clone(),
        hash: String::new(),
        loras: Vec::new(),
        vae: None,
        clip_skip: 1,
    });
    let inv_settings = &inv.meta().settings;
    Record {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kind: "transfer".into(),
        prompt: sampling.prompt.clone(),
        negative_prompt: sampling.negative_prompt.clone(),
        model: target.clone(),
        source: Some(source),
        ditail: Some(DitailRecord {
            inv_prompt: inv_settings.prompt.clone(),
            inv_negative_prompt: inv_settings.negative_prompt.clone(),
            alpha: inv_settings.alpha,
            beta: inv_settings.beta,
            inv_steps: inv_settings.steps,
            steps: sampling.steps,
            omega: sampling.omega,
            conv_ratio: sampling.conv_ratio,
            attn_ratio: sampling.attn_ratio,
            mask: mask.to_string(),
            no_injection: sampling.no_injection,
            size: inv_settings.size,
            content_sha256: inv.meta().image_sha256.clone(),
        }),
        seed: None,
        steps: sampling.steps,
        omega: sampling.omega,
        width: img.width(),
        height: img.height(),
        backend: compute.backend.to_string(),
        dtype: dtype_name(compute.dtype).into(),
        embeddings: Vec::new(),
    }
}

impl TransferJob {
    /// Inverts (unless the content is an inversion already), samples, decodes and writes;
    /// the main output is written last, so that its presence means the job is complete.
    pub fn run(self, models: &mut Models, compute: &Compute, ui: &Ui) -> Result<()> {
        for w in &self.warnings {
            ui.warn(w);
        }
        let inv_prompts: [&str; 2] = [&self.inversion.prompt, &self.inversion.negative_prompt];
        let mut embeddings = Vec::new();
        let inv = match self.content {
            Content::Latents(inv) => *inv,
            Content::Image { ref rgb, ref path } => {
                let source = models.get(&self.source)?;
                embeddings.extend(embedding_records(source, &inv_prompts)?);
                let mut progress = ui.steps("source");
                invert(source, rgb, &self.inversion, &compute.device, &mut progress)
                    .with_context(|| format!("inverting {}", path.display()))?
            }
            Content::Generate {
                ref prompt,
                seed,
                ref flags,
            } => {
                let source = models.get(&self.source)?;
                embeddings.extend(embedding_records(source, &inv_prompts)?);
                let record = self.source_record.as_ref().expect("checked source");
                let (rgb, _) = render(source, record, prompt, flags, seed, compute, ui)?;
                let mut progress = ui.steps("source");
                invert(
                    source,
                    &rgb,
                    &self.inversion,
                    &compute.device,
                    &mut progress,
                )
                .context("inverting the generated content")?
            }
        };
        let target = models.get(&self.target)?;
        let prompts: [&str; 2] = [&self.sampling.prompt, &self.sampling.negative_prompt];
        embeddings.extend(embedding_records(target, &prompts)?);
        let (img, latents) = sample_image(target, &inv, &self.sampling, compute, ui)?;
        if let Some(path) = &self.save_latents {
            latents::save(path, &inv, Some(&latents))
                .with_context(|| format!("--save-latents {}", path.display()))?;
            ui.info(format!("wrote {}", path.display()));
        }
        if let Some(path) = &self.save_noise {
            let noise = to_rgb(decode(target, inv.start().clone())?)?;
            write_png(path, &noise, &[])?;
            ui.info(format!("wrote {}", path.display()));
        }
        let mut record = transfer_record(
            &inv,
            &self.sampling,
            &self.mask,
            &self.target_record,
            self.source_record.as_ref(),
            &img,
            compute,
        );
        record.embeddings = dedup(embeddings);
        write_png(&self.output, &img, &record.chunks())?;
        ui.info(format!("wrote {}", self.output.display()));
        Ok(())
    }
}

/// `ditail transfer`.
pub fn prepare_command(args: &TransferArgs, compute: &Compute) -> Result<TransferJob> {
    let target_name = args
        .target
        .clone()
        .or_else(|| args.source.clone())
        .context("give --target (or --source, which it defaults to)")?;
    let source = match &args.source {
        Some(s) => Some(models::spec(s, &args.model, false)?),
        None => None,
    };
    let target = models::spec(&target_name, &args.model, true)?;
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
    let mut job = prepare(
        content,
        &args.prompt,
        source,
        target,
        &args.ditail,
        &args.output,
        compute,
        &mut |spec| models::check(spec, compute),
    )?;
    if let Some(p) = &args.save_latents {
        check_output_file(p, "--save-latents", None)?;
        job.save_latents = Some(p.clone());
    }
    if let Some(p) = &args.save_noise {
        check_output_file(p, "--save-noise", Some("png"))?;
        job.save_noise = Some(p.clone());
    }
    Ok(job)
}
