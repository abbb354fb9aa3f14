//! The [`Runner`]: runs any [`Job`] on one device, with one model cache and one inversion
//! cache kept between jobs, reporting to a [`Sink`]. The order is the same for every face:
//! every inversion first (source by source: each content, generated first if it is a
//! prompt), then every target (the one still loaded first) samples each inversion; each
//! result is decoded, recorded and written as soon as it is done.

use std::sync::Arc;

use ditail_models::device::Compute;
use ditail_pipeline::digest::{hex, image_hash};
use ditail_pipeline::{
    InversionSettings, Model, ModelSpec, Progress, SamplingSettings, decode, generate, invert,
    latents, sample, to_rgb,
};
use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::cache::{Budget, InversionCache, Kept, ModelCache};
use crate::job::{ContentKind, Job, JobModel};
use crate::options::GenerationOptions;
use crate::output::write_png;
use crate::record::{
    EmbeddingRecord, Record, dedup, embedding_records, generation_record, transfer_record,
};
use crate::sink::{Cell, Sink, Stage, Written};
use crate::{Context, Result};

/// Runs jobs on one device.
pub struct Runner {
    compute: Compute,
    models: ModelCache,
    inversions: InversionCache,
}

impl Runner {
    /// A runner on `compute` holding at most `budget` of models.
    pub fn new(compute: Compute, budget: Budget) -> Self {
        Self {
            compute,
            models: ModelCache::new(budget),
            inversions: InversionCache::default(),
        }
    }

    /// The device and float type it runs on.
    pub fn compute(&self) -> &Compute {
        &self.compute
    }

    /// Drops every loaded model (before other work that needs the memory).
    pub fn release_models(&mut self) {
        self.models.clear();
    }

    /// The model for `spec`, loaded unless the cache holds it.
    pub fn model(
        &mut self,
        spec: &ModelSpec,
        label: &str,
        sink: &mut dyn Sink,
    ) -> Result<Arc<Model>> {
        let mut loading = false;
        let model = self.models.get(spec, &self.compute, || {
            loading = true;
            sink.stage(Stage::Loading { label, spec });
        });
        if loading {
            sink.stage_done();
        }
        model
    }

    /// Generates an image with `model` (`ditail generate`, and a job's content): the image
    /// and its record.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &mut self,
        model: &JobModel,
        prompt: &str,
        options: &GenerationOptions,
        seed: u64,
        cell: Cell,
        sink: &mut dyn Sink,
    ) -> Result<(RgbImage, Record)> {
        let loaded = self.model(&model.spec, &model.label, sink)?;
        let latents = generate(
            &loaded,
            &options.settings(prompt, seed, loaded.family()),
            &self.compute.device,
            &mut |p: Progress| sink.step(p, cell),
        )
        .context("generating")?;
        sink.stage(Stage::Decoding { cell });
        let img = to_rgb(decode(&loaded, latents)?)?;
        sink.stage_done();
        let mut record =
            generation_record(&model.record, prompt, options, seed, &img, &self.compute);
        record.embeddings = dedup(embedding_records(&loaded, &[prompt, &options.negative])?);
        Ok((img, record))
    }

    /// Runs `job`: every file it names is written, or the error says what stopped it
    /// (a cancellation through [`Sink::step`] included).
    pub fn run(&mut self, job: &Job, sink: &mut dyn Sink) -> Result<()> {
        for w in &job.warnings {
            sink.warn(w);
        }
        let inversions = self.invert_all(job, sink)?;
        // The target still loaded first (a cocktail's last source is its last target).
        let mut order: Vec<usize> = (0..job.targets.len()).collect();
        if let Some(i) = order
            .iter()
            .position(|&t| self.models.holds(&job.targets[t].spec))
        {
            let t = order.remove(i);
            order.insert(0, t);
        }
        for t in order {
            let target = &job.targets[t];
            let model = self.model(&target.spec, &target.label, sink)?;
            for (c, content) in job.contents.iter().enumerate() {
                let sampling = with_prompt(&job.sampling, content.prompt.as_deref());
                // The embeddings the sampling prompts name: the same for every source.
                let sampled =
                    embedding_records(&model, &[&sampling.prompt, &sampling.negative_prompt])?;
                for (s, (inv, inv_embeddings)) in inversions[c].iter().enumerate() {
                    let cell = Cell {
                        content: c,
                        source: s,
                        target: Some(t),
                    };
                    let latents = sample(&model, inv, &sampling, &self.compute.device, &mut |p| {
                        sink.step(p, cell)
                    })
                    .context("sampling")?;
                    sink.stage(Stage::Decoding { cell });
                    let img = to_rgb(decode(&model, latents.clone())?)?;
                    sink.stage_done();
                    if let Some(path) = &job.outputs.save_latents {
                        latents::save(path, inv, Some(&latents))
                            .with_context(|| format!("--save-latents {}", path.display()))?;
                        sink.wrote(Written::Latents(path));
                    }
                    if let Some(path) = &job.outputs.save_noise {
                        let noise = to_rgb(decode(&model, inv.start().clone())?)?;
                        write_png(path, &noise, &[])?;
                        sink.wrote(Written::Noise(path));
                    }
                    let source = job.sources.get(s).map(|m| &m.record);
                    let mut record = transfer_record(
                        inv,
                        &sampling,
                        &job.mask,
                        &target.record,
                        source,
                        &img,
                        &self.compute,
                    );
                    let mut embeddings = inv_embeddings.clone();
                    embeddings.extend(sampled.iter().cloned());
                    record.embeddings = dedup(embeddings);
                    // Written last: a result's presence means its cell is complete.
                    let path = &job.outputs.cells[c][s][t];
                    write_png(path, &img, &record.chunks())?;
                    sink.wrote(Written::Result {
                        cell,
                        path,
                        image: &img,
                    });
                }
            }
        }
        Ok(())
    }

    /// Every content's inversion by every source, `[content][source]`, with the
    /// embeddings their prompts used: kept from earlier jobs where the content, the source
    /// and the settings are the same.
    fn invert_all(&mut self, job: &Job, sink: &mut dyn Sink) -> Result<Vec<Vec<Kept>>> {
        let mut out: Vec<Vec<Kept>> = job.contents.iter().map(|_| Vec::new()).collect();
        for (c, content) in job.contents.iter().enumerate() {
            if let ContentKind::Latents(inv) = &content.kind {
                out[c].push((Arc::new((**inv).clone()), Vec::new()));
            }
        }
        for (s, source) in job.sources.iter().enumerate() {
            for (c, content) in job.contents.iter().enumerate() {
                let cell = Cell {
                    content: c,
                    source: s,
                    target: None,
                };
                let settings = inversion_with_prompt(&job.inversion, content.prompt.as_deref());
                let (content_key, generated) = match &content.kind {
                    ContentKind::Image { rgb, .. } => (image_hash(rgb), 0),
                    ContentKind::Generate {
                        prompt,
                        seed,
                        options,
                    } => (
                        format!(
                            "{prompt:?}|{seed}|{:?}",
                            (
                                options.steps,
                                options.size,
                                &options.negative,
                                options.omega
                            )
                        ),
                        options.steps,
                    ),
                    ContentKind::Latents(_) => continue,
                };
                let key = hex(&Sha256::digest(
                    format!(
                        "{content_key}|{:?}|{}",
                        source.spec,
                        serde_json::to_string(&settings)?
                    )
                    .as_bytes(),
                ));
                // A kept content file is written by the run that generates it.
                let must_write = job.outputs.contents.is_some()
                    && matches!(content.kind, ContentKind::Generate { .. });
                if !must_write && let Some(kept) = self.inversions.get(&key) {
                    sink.inverted(cell, Some(generated + settings.steps));
                    out[c].push(kept);
                    continue;
                }
                let rgb = match &content.kind {
                    ContentKind::Image { rgb, .. } => rgb.clone(),
                    ContentKind::Generate {
                        prompt,
                        seed,
                        options,
                    } => {
                        let (img, record) =
                            self.generate(source, prompt, options, *seed, cell, sink)?;
                        sink.content(cell, &img);
                        if let Some(paths) = &job.outputs.contents {
                            let path = &paths[c][s];
                            write_png(path, &img, &record.chunks())?;
                            sink.wrote(Written::Content { cell, path });
                        }
                        img
                    }
                    ContentKind::Latents(_) => unreachable!("skipped above"),
                };
                let model = self.model(&source.spec, &source.label, sink)?;
                let embeddings: Vec<EmbeddingRecord> =
                    embedding_records(&model, &[&settings.prompt, &settings.negative_prompt])?;
                let inv = invert(&model, &rgb, &settings, &self.compute.device, &mut |p| {
                    sink.step(p, cell)
                })
                .with_context(|| match &content.kind {
                    ContentKind::Image { path, .. } => format!("inverting {}", path.display()),
                    _ => "inverting the generated content".to_string(),
                })?;
                let kept = (Arc::new(inv), embeddings);
                self.inversions.keep(key, kept.clone());
                sink.inverted(cell, None);
                out[c].push(kept);
            }
        }
        Ok(out)
    }
}

/// `settings` with a content's own prompt, if it has one.
fn with_prompt(settings: &SamplingSettings, prompt: Option<&str>) -> SamplingSettings {
    let mut s = settings.clone();
    if let Some(p) = prompt {
        s.prompt = p.to_string();
    }
    s
}

/// `settings` with a content's own prompt, if it has one.
fn inversion_with_prompt(settings: &InversionSettings, prompt: Option<&str>) -> InversionSettings {
    let mut s = settings.clone();
    if let Some(p) = prompt {
        s.prompt = p.to_string();
    }
    s
}
