//! A [`Job`]: what to run, checked. Contents (images, prompts to generate from, or a saved
//! inversion), sources that invert them, targets that sample each inversion, Ditail's
//! settings and where every output goes. A job is built only through its constructors,
//! which make every check that needs no weights (settings, files, architectures, LoRA
//! keys, embeddings, timesteps, sites, image and mask shapes, outputs) and fill in the
//! family's defaults, so a job that exists can run; [`crate::Runner`] runs it.

use std::path::{Path, PathBuf};

use ditail_models::Family;
use ditail_models::device::Compute;
use ditail_pipeline::preprocess::{load_rgb, working_dims};
use ditail_pipeline::{Inversion, InversionSettings, ModelSpec, SamplingSettings, latents};
use image::RgbImage;

use crate::checks::{check_content, check_mask_shape, check_sites, check_steps};
use crate::models::{Checked, check_embeddings};
use crate::options::{DitailOptions, GenerationOptions};
use crate::output::check_output_file;
use crate::record::{ModelRecord, dedup, model_label};
use crate::sink::Cell;
use crate::{Context, Result, refuse};

/// Where a content comes from.
pub enum ContentKind {
    /// An image, inverted by each source.
    Image {
        /// Its file.
        path: PathBuf,
        /// Its pixels.
        rgb: RgbImage,
    },
    /// Generated from a prompt by each source first.
    Generate {
        /// The content prompt.
        prompt: String,
        /// The noise seed.
        seed: u64,
        /// Text-to-image numbers.
        options: GenerationOptions,
    },
    /// A saved inversion (sampled by the targets; the job has no source model).
    Latents(Box<Inversion>),
}

/// One content of a job.
pub struct Content {
    /// Its name in outputs and messages.
    pub label: String,
    /// Where it comes from.
    pub kind: ContentKind,
    /// The prompt that describes this content, for both inversion and sampling, when the
    /// job's prompts differ per content (a cocktail of several images).
    pub prompt: Option<String>,
}

/// A model of a job: what to load, its record, its label.
#[derive(Clone, Debug)]
pub struct JobModel {
    /// What to load.
    pub spec: ModelSpec,
    /// What outputs record about it.
    pub record: ModelRecord,
    /// Its name in the job (file names, progress).
    pub label: String,
}

/// Where a job's files go.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// Each result, `[content][source][target]`.
    pub cells: Vec<Vec<Vec<PathBuf>>>,
    /// Each generated content, `[content][source]`, when they are kept.
    pub contents: Option<Vec<Vec<PathBuf>>>,
    /// The inversion and final latents of a one-cell job.
    pub save_latents: Option<PathBuf>,
    /// The inverted noise, decoded, of a one-cell job.
    pub save_noise: Option<PathBuf>,
}

/// A checked job, ready to run.
pub struct Job {
    /// The contents.
    pub contents: Vec<Content>,
    /// The models that invert (or generate) each content; empty for a saved inversion.
    pub sources: Vec<JobModel>,
    /// The models that sample each inversion.
    pub targets: Vec<JobModel>,
    /// Inversion settings (the size filled in from the family).
    pub inversion: InversionSettings,
    /// Sampling settings.
    pub sampling: SamplingSettings,
    /// The mask as given (for the records).
    pub mask: String,
    /// Where its files go.
    pub outputs: Outputs,
    /// What to tell the user before running (embeddings named but not found).
    pub warnings: Vec<String>,
}

/// The contents, models and outputs of a grid job (see [`Job::grid`]).
pub struct Grid<'a> {
    /// The contents (images or prompts to generate from).
    pub contents: Vec<Content>,
    /// The sources, with their labels.
    pub sources: Vec<(ModelSpec, String)>,
    /// The targets, with their labels.
    pub targets: Vec<(ModelSpec, String)>,
    /// The prompt the settings are built with (a content's own prompt replaces it).
    pub prompt: &'a str,
    /// Ditail's numbers.
    pub options: &'a DitailOptions,
    /// Each result's file.
    pub cell_path: &'a dyn Fn(Cell) -> PathBuf,
    /// Each generated content's file, when they are kept.
    pub content_path: Option<&'a dyn Fn(Cell) -> PathBuf>,
}

/// Checks a model without loading it (a batch memoises this).
pub type Check<'a> = dyn FnMut(&ModelSpec) -> Result<Checked> + 'a;

impl Job {
    /// Checks a grid: every content with every source and every target. Nothing loads.
    pub fn grid(grid: Grid<'_>, check: &mut Check<'_>) -> Result<Job> {
        let Grid {
            contents,
            sources,
            targets,
            prompt,
            options,
            cell_path,
            content_path,
        } = grid;
        let (mut inversion, sampling) = options.settings(prompt)?;
        if sources.is_empty() || targets.is_empty() || contents.is_empty() {
            refuse!("a job needs a content, a source and a target");
        }
        let mut warnings = Vec::new();
        let mut checked = |models: &[(ModelSpec, String)]| -> Result<Vec<(JobModel, Checked)>> {
            models
                .iter()
                .map(|(spec, label)| {
                    let c = check(spec)?;
                    let model = JobModel {
                        spec: spec.clone(),
                        record: c.record.clone(),
                        label: label.clone(),
                    };
                    Ok((model, c))
                })
                .collect()
        };
        let source_checked = checked(&sources)?;
        let target_checked = checked(&targets)?;
        for (_, t) in &target_checked {
            check_sites(&sampling, t)?;
        }
        for (_, s) in &source_checked {
            for (_, t) in &target_checked {
                check_steps(s, t, inversion.steps, sampling.steps)?;
            }
        }
        let prompt_of = |c: &Content, given: &str| c.prompt.clone().unwrap_or(given.to_string());
        for c in &contents {
            for (_, t) in &target_checked {
                let p = prompt_of(c, &sampling.prompt);
                warnings.extend(check_embeddings(t, &[&p, &sampling.negative_prompt])?);
            }
            for (_, s) in &source_checked {
                let p = prompt_of(c, &inversion.prompt);
                warnings.extend(check_embeddings(s, &[&p, &inversion.negative_prompt])?);
            }
        }
        if options.size.is_none() {
            inversion.size = target_checked[0].1.family.native_size();
        }
        for c in &contents {
            match &c.kind {
                ContentKind::Image { path, rgb } => {
                    check_content(path, rgb, inversion.size, &sampling.mask, &options.mask)?
                }
                ContentKind::Generate {
                    options: generation,
                    ..
                } => {
                    generation.check()?;
                    let side = generation.size_for(target_checked[0].1.family);
                    let dims = working_dims(side, side, inversion.size)
                        .context("the generated content")?;
                    check_mask_shape(&sampling.mask, &options.mask, dims)?;
                }
                ContentKind::Latents(_) => refuse!("a grid's contents are images or prompts"),
            }
        }
        // One warning per embedding, however many models and contents name it.
        let warnings = dedup(warnings);
        let (n, m) = (sources.len(), targets.len());
        let cell = |content, source, target| Cell {
            content,
            source,
            target,
        };
        let outputs = Outputs {
            cells: (0..contents.len())
                .map(|c| {
                    (0..n)
                        .map(|s| (0..m).map(|t| cell_path(cell(c, s, Some(t)))).collect())
                        .collect()
                })
                .collect(),
            contents: content_path.map(|path| {
                (0..contents.len())
                    .map(|c| (0..n).map(|s| path(cell(c, s, None))).collect())
                    .collect()
            }),
            ..Outputs::default()
        };
        Ok(Job {
            contents,
            sources: source_checked.into_iter().map(|(m, _)| m).collect(),
            targets: target_checked.into_iter().map(|(m, _)| m).collect(),
            inversion,
            sampling,
            mask: options.mask.clone(),
            outputs,
            warnings,
        })
    }

    /// Checks one transfer (`ditail transfer`, a batch row): one content into one target,
    /// written to `output` (a PNG path, checked writable). Nothing loads.
    #[allow(clippy::too_many_arguments)]
    pub fn transfer(
        content: ContentArg,
        prompt: &str,
        source: Option<ModelSpec>,
        target: ModelSpec,
        options: &DitailOptions,
        output: &Path,
        compute: &Compute,
        check: &mut Check<'_>,
    ) -> Result<Job> {
        check_output_file(output, "output", Some("png"))?;
        let kind = match content {
            ContentArg::Latents(path) => {
                return Self::from_latents(path, prompt, target, options, output, compute, check);
            }
            ContentArg::Image(path) => ContentKind::Image {
                path: path.to_path_buf(),
                rgb: load_rgb(path)?,
            },
            ContentArg::Generate {
                prompt,
                seed,
                options,
            } => ContentKind::Generate {
                prompt,
                seed,
                options,
            },
        };
        let source = source.context("give a --source model")?;
        let out = output.to_path_buf();
        let labels = |spec: &ModelSpec| (spec.clone(), model_label(&spec.model));
        Self::grid(
            Grid {
                contents: vec![Content {
                    label: "content".into(),
                    kind,
                    prompt: None,
                }],
                sources: vec![labels(&source)],
                targets: vec![labels(&target)],
                prompt,
                options,
                cell_path: &|_| out.clone(),
                content_path: None,
            },
            check,
        )
    }

    /// A transfer from a saved inversion: its family, channels and timesteps checked
    /// against the target.
    fn from_latents(
        path: &Path,
        prompt: &str,
        target: ModelSpec,
        options: &DitailOptions,
        output: &Path,
        compute: &Compute,
        check: &mut Check<'_>,
    ) -> Result<Job> {
        let (inversion, sampling) = options.settings(prompt)?;
        let checked = check(&target)?;
        let warnings = check_embeddings(&checked, &[&sampling.prompt, &sampling.negative_prompt])?;
        check_sites(&sampling, &checked)?;
        let (inv, _) = latents::load(path, &compute.device)
            .with_context(|| format!("--from-latents {}", path.display()))?;
        let family = inv.meta().family.unwrap_or(Family::Sd1);
        if family != checked.family {
            refuse!(
                "--from-latents {}: the inversion is in {family}'s latent space and the \
                 target {} is {}",
                path.display(),
                checked.record.model,
                checked.family
            );
        }
        let [_, channels, _, _] = inv.z0().dims();
        if channels != checked.latent_channels {
            refuse!(
                "--from-latents {}: its latents have {channels} channels, the target's U-Net \
                 takes {}",
                path.display(),
                checked.latent_channels
            );
        }
        check_mask_shape(&sampling.mask, &options.mask, inv.pixel_size())?;
        let timesteps = checked.scheduler.timesteps(sampling.steps)?;
        if let Some(t) = timesteps.iter().find(|t| !inv.latents().contains_key(t)) {
            refuse!(
                "--from-latents {}: sampling with --steps {} needs Z[{t}], which this inversion \
                 ({} steps) does not have",
                path.display(),
                sampling.steps,
                inv.meta().settings.steps
            );
        }
        Ok(Job {
            contents: vec![Content {
                label: "content".into(),
                kind: ContentKind::Latents(Box::new(inv)),
                prompt: None,
            }],
            sources: Vec::new(),
            targets: vec![JobModel {
                label: model_label(&target.model),
                spec: target,
                record: checked.record,
            }],
            inversion,
            sampling,
            mask: options.mask.clone(),
            outputs: Outputs {
                cells: vec![vec![vec![output.to_path_buf()]]],
                ..Outputs::default()
            },
            warnings,
        })
    }

    /// Also writes the inversion and final latents (a one-cell job only).
    pub fn save_latents(&mut self, path: &Path) -> Result<()> {
        check_output_file(path, "--save-latents", None)?;
        self.outputs.save_latents = Some(path.to_path_buf());
        Ok(())
    }

    /// Also writes the inverted noise, decoded (a one-cell job only).
    pub fn save_noise(&mut self, path: &Path) -> Result<()> {
        check_output_file(path, "--save-noise", Some("png"))?;
        self.outputs.save_noise = Some(path.to_path_buf());
        Ok(())
    }

    /// The denoising steps the job runs (for job-wide progress): each content's generation
    /// and inversion per source, each sampling per cell.
    pub fn total_steps(&self) -> usize {
        let sources = self.sources.len().max(1);
        let per_source: usize = self
            .contents
            .iter()
            .map(|c| match &c.kind {
                ContentKind::Image { .. } => self.inversion.steps,
                ContentKind::Generate { options, .. } => options.steps + self.inversion.steps,
                ContentKind::Latents(_) => 0,
            })
            .sum();
        sources * per_source
            + self.contents.len() * sources * self.targets.len() * self.sampling.steps
    }

    /// The first result's file (a one-cell job's output).
    pub fn output(&self) -> &Path {
        &self.outputs.cells[0][0][0]
    }
}

/// Where a transfer's content comes from, before it is checked.
pub enum ContentArg<'a> {
    /// An image file.
    Image(&'a Path),
    /// A latents file (`--from-latents`).
    Latents(&'a Path),
    /// A prompt the source model renders first.
    Generate {
        /// The content prompt.
        prompt: String,
        /// The noise seed.
        seed: u64,
        /// Text-to-image numbers.
        options: GenerationOptions,
    },
}
