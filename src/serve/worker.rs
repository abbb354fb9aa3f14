//! The worker: one thread that owns the device and runs the queue's jobs one at a time,
//! as the CLI runs them (the same settings, checks, records and PNG writer), reporting
//! every stage and step as job events with a live preview. It keeps loaded models within
//! a memory budget (least recently used out) and recent inversions, so sampling another
//! target from the same content, source and inversion settings never inverts again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::FloatDType;
use ditail::models::LoadOptions;
use ditail::pipeline::{
    Inversion, Model, ModelSpec, Phase, PipelineError, Progress, decode, generate, inversion::hex,
    invert, preprocess::load_rgb, sample, to_rgb,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::catalog::Catalog;
use super::jobs::{Jobs, Status, Submission};
use super::preview::{data_url, latents_to_rgb};
use crate::cli::args::GenerationFlags;
use crate::cli::device::Compute;
use crate::cli::metadata::embeddings_of;
use crate::cli::models::{self, Checked};
use crate::cli::output::write_png;
use crate::cli::transfer::{settings as ditail_settings, transfer_record};
use crate::cli::ui;

/// Inversions kept for reuse (each is every `Z[t]` of one content: ~3 MB at 512 px).
const KEEP_INVERSIONS: usize = 16;
/// At most one preview per this interval (GPU steps can take milliseconds).
const PREVIEW_EVERY: Duration = Duration::from_millis(200);
/// Guidance of generated content (the CLI's cocktail uses the same).
const CONTENT_OMEGA: f64 = 7.5;

/// What the worker needs.
pub struct Worker {
    pub compute: Compute,
    pub catalog: Arc<RwLock<Catalog>>,
    pub jobs: Arc<Jobs>,
    pub output: PathBuf,
    pub models: ModelCache,
    inversions: Vec<(String, Arc<Inversion>)>,
}

impl Worker {
    /// A worker writing into `output`, keeping at most `budget_bytes` of models loaded.
    pub fn new(
        compute: Compute,
        catalog: Arc<RwLock<Catalog>>,
        jobs: Arc<Jobs>,
        output: PathBuf,
        budget_bytes: u64,
    ) -> Self {
        Self {
            compute,
            catalog,
            jobs,
            output,
            models: ModelCache {
                budget: budget_bytes,
                loaded: Vec::new(),
            },
            inversions: Vec::new(),
        }
    }

    /// Runs jobs until the queue stops.
    pub fn run(mut self) {
        while let Some((sub, cancel)) = self.jobs.next() {
            let id = sub.id.clone();
            // A panic in a job (a bug) fails that job, not the server.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.execute(&sub, &cancel)
            }))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(anyhow::anyhow!("internal error: {msg}"))
            });
            match outcome {
                Ok(()) => self.jobs.finish(&id, Status::Done, None, false),
                Err(e) if is_cancelled(&e) => {
                    // Stopped by the server shutting down, not by a client: run it again
                    // after the restart.
                    let interrupted = ui::cancelled() && !cancel.load(Ordering::SeqCst);
                    self.jobs.finish(&id, Status::Cancelled, None, interrupted);
                }
                Err(e) => self
                    .jobs
                    .finish(&id, Status::Failed, Some(format!("{e:#}")), false),
            }
        }
    }

    fn cached_inversion(&mut self, key: &str) -> Option<Arc<Inversion>> {
        let i = self.inversions.iter().position(|(k, _)| k == key)?;
        let entry = self.inversions.remove(i);
        let inv = entry.1.clone();
        self.inversions.push(entry);
        Some(inv)
    }

    fn keep_inversion(&mut self, key: String, inv: Arc<Inversion>) {
        if self.inversions.len() >= KEEP_INVERSIONS {
            self.inversions.remove(0);
        }
        self.inversions.push((key, inv));
    }

    fn model(&mut self, spec: &ModelSpec, id: &str, label: &str) -> Result<Arc<Model>> {
        let jobs = self.jobs.clone();
        self.models.get(spec, &self.compute, || {
            jobs.emit(
                id,
                "stage",
                json!({ "stage": "loading", "label": format!("loading {label}") }),
            )
        })
    }

    fn execute(&mut self, sub: &Submission, cancel: &Arc<AtomicBool>) -> Result<()> {
        let id = sub.id.as_str();
        let s = &sub.settings;
        let (sources, targets) = s.grid();
        let (source_specs, target_specs) = {
            let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            let specs = |vs: &[super::settings::Variant], loras| {
                vs.iter()
                    .map(|v| v.spec(&catalog, loras))
                    .collect::<Result<Vec<_>>>()
            };
            (specs(&sources, false)?, specs(&targets, true)?)
        };
        let mask_arg = if s.mask == "painted" {
            self.jobs.mask_path(id).to_string_lossy().into_owned()
        } else {
            s.mask.clone()
        };
        let prompt = s.sampling_prompt();
        let (inversion, sampling) = ditail_settings(&prompt, &s.flags(&mask_arg))?;
        let check = |spec: &ModelSpec| models::check(spec, &self.compute);
        let source_checked: Vec<Checked> = source_specs.iter().map(check).collect::<Result<_>>()?;
        let target_checked: Vec<Checked> = target_specs.iter().map(check).collect::<Result<_>>()?;

        let content = if sub.has_image {
            let path = self.jobs.content_path(id);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Some((load_rgb(&path)?, hex(&Sha256::digest(&bytes))))
        } else {
            None
        };
        let generation = GenerationFlags {
            negative: s.negative_prompt.clone(),
            omega: CONTENT_OMEGA,
            steps: s.steps,
            size: s.size,
        };
        let content_steps = if content.is_some() {
            0
        } else {
            generation.steps
        };
        let mut reporter = Reporter::new(
            self.jobs.clone(),
            id,
            cancel.clone(),
            sources.len() * (content_steps + inversion.steps)
                + sources.len() * targets.len() * sampling.steps,
        );

        // All inversions first, source by source; then every target samples each.
        let mut inversions = Vec::new();
        for (i, spec) in source_specs.iter().enumerate() {
            let content_key = match &content {
                Some((_, sha)) => sha.clone(),
                None => format!(
                    "{:?}|{}|{:?}",
                    s.content_prompt,
                    s.seed,
                    (generation.steps, s.size, &generation.negative)
                ),
            };
            let key = hex(&Sha256::digest(
                format!(
                    "{content_key}|{spec:?}|{}",
                    serde_json::to_string(&inversion)?
                )
                .as_bytes(),
            ));
            if let Some(inv) = self.cached_inversion(&key) {
                reporter.skip(content_steps + inversion.steps);
                self.jobs
                    .emit(id, "inversion", json!({ "source": i, "cached": true }));
                inversions.push(inv);
                continue;
            }
            let model = self.model(spec, id, &sub.sources[i])?;
            let rgb = match &content {
                Some((rgb, _)) => rgb.clone(),
                None => {
                    let latents = generate(
                        &model,
                        &crate::cli::generate::settings(
                            s.content_prompt.as_deref().unwrap_or_default(),
                            &generation,
                            s.seed,
                        ),
                        &self.compute.device,
                        &mut |p| reporter.step(p, i, None),
                    )
                    .context("generating the content")?;
                    self.jobs.emit(
                        id,
                        "stage",
                        json!({ "stage": "decoding", "source": i, "label": "decoding the content" }),
                    );
                    to_rgb(decode(&model, latents)?)?
                }
            };
            let inv = invert(&model, &rgb, &inversion, &self.compute.device, &mut |p| {
                reporter.step(p, i, None)
            })
            .context("inverting the content")?;
            let inv = Arc::new(inv);
            self.keep_inversion(key, inv.clone());
            self.jobs
                .emit(id, "inversion", json!({ "source": i, "cached": false }));
            inversions.push(inv);
        }
        for (j, spec) in target_specs.iter().enumerate() {
            let model = self.model(spec, id, &sub.targets[j])?;
            for (i, inv) in inversions.iter().enumerate() {
                let latents = sample(&model, inv, &sampling, &self.compute.device, &mut |p| {
                    reporter.step(p, i, Some(j))
                })
                .context("sampling")?;
                self.jobs.emit(
                    id,
                    "stage",
                    json!({ "stage": "decoding", "source": i, "target": j,
                            "label": format!("decoding {} → {}", sub.sources[i], sub.targets[j]) }),
                );
                let img = to_rgb(decode(&model, latents)?)?;
                let mut record = transfer_record(
                    inv,
                    &sampling,
                    &s.mask,
                    &target_checked[j].record,
                    Some(&source_checked[i].record),
                    &img,
                    &self.compute,
                );
                record.embeddings = embeddings_of(&model, inv, &sampling)?;
                let name = format!("{id}-{i}-{j}.png");
                write_png(&self.output.join(&name), &img, &record.chunks())?;
                self.jobs.emit(
                    id,
                    "result",
                    json!({ "source": i, "target": j, "name": name,
                            "url": format!("/api/results/{name}") }),
                );
            }
        }
        Ok(())
    }
}

fn is_cancelled(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref(), Some(PipelineError::Cancelled)))
}

/// Turns pipeline progress into job events: steps with a job-wide ETA, throttled
/// previews, and cancellation (by the client, or the server stopping).
struct Reporter {
    jobs: Arc<Jobs>,
    id: String,
    cancel: Arc<AtomicBool>,
    /// Steps of the whole job, steps done, steps run (not skipped), since when.
    total: usize,
    done: usize,
    run: usize,
    start: Option<Instant>,
    last_preview: Option<Instant>,
}

impl Reporter {
    fn new(jobs: Arc<Jobs>, id: &str, cancel: Arc<AtomicBool>, total: usize) -> Self {
        Self {
            jobs,
            id: id.to_string(),
            cancel,
            total,
            done: 0,
            run: 0,
            start: None,
            last_preview: None,
        }
    }

    /// Counts steps that a cached inversion saved.
    fn skip(&mut self, steps: usize) {
        self.done += steps;
    }

    fn step(&mut self, p: Progress, source: usize, target: Option<usize>) -> bool {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        self.done += 1;
        self.run += 1;
        // Seconds per step so far (from the first step's end: loading is not a step);
        // unknown until two steps have run.
        let eta = (self.run > 1).then(|| {
            let per_step = now.duration_since(start).as_secs_f64() / (self.run - 1) as f64;
            (per_step * self.total.saturating_sub(self.done) as f64 * 10.0).round() / 10.0
        });
        let stage = match p.phase {
            Phase::Inversion => "inversion",
            Phase::Sampling => "sampling",
            Phase::Generation => "generation",
        };
        self.jobs.emit(
            &self.id,
            "progress",
            json!({ "stage": stage, "step": p.step, "total": p.total, "source": source,
                    "target": target, "eta_s": eta,
                    "job_step": self.done, "job_total": self.total }),
        );
        let due = self
            .last_preview
            .is_none_or(|t| now.duration_since(t) >= PREVIEW_EVERY)
            || p.step == p.total;
        if let (true, Some(latents)) = (due, p.preview) {
            self.last_preview = Some(now);
            // A preview that cannot be made is skipped, never a failed job.
            if let Ok(url) = latents_to_rgb(latents).and_then(|img| data_url(&img)) {
                self.jobs.emit(
                    &self.id,
                    "preview",
                    json!({ "image": url, "source": source, "target": target, "step": p.step }),
                );
            }
        }
        !self.cancel.load(Ordering::SeqCst) && !ui::cancelled()
    }
}

/// Loaded models within a memory budget, least recently used out.
pub struct ModelCache {
    budget: u64,
    loaded: Vec<(ModelSpec, Arc<Model>, u64)>,
}

impl ModelCache {
    fn get(
        &mut self,
        spec: &ModelSpec,
        compute: &Compute,
        on_load: impl FnOnce(),
    ) -> Result<Arc<Model>> {
        if let Some(i) = self.loaded.iter().position(|(s, _, _)| s == spec) {
            let entry = self.loaded.remove(i);
            let model = entry.1.clone();
            self.loaded.push(entry);
            return Ok(model);
        }
        on_load();
        // Make room first, guessing the newcomer's size from those loaded, so that two
        // models are never held beyond the budget at the peak of a load.
        let total: u64 = self.loaded.iter().map(|e| e.2).sum();
        let guess = total / self.loaded.len().max(1) as u64;
        while !self.loaded.is_empty()
            && self.loaded.iter().map(|e| e.2).sum::<u64>() + guess > self.budget
        {
            self.loaded.remove(0);
        }
        let model = Model::load(
            spec,
            &compute.device,
            LoadOptions {
                dtype: compute.dtype,
            },
        )
        .with_context(|| format!("loading model {}", spec.model))?;
        let size = model_bytes(&model, compute.dtype);
        let model = Arc::new(model);
        self.loaded.push((spec.clone(), model.clone(), size));
        Ok(model)
    }
}

/// The memory a loaded model's weights take.
fn model_bytes(model: &Model, dtype: FloatDType) -> u64 {
    let params = model.sd().unet.num_params()
        + model.sd().vae.num_params()
        + model.sd().text_encoder.num_params();
    let width = if matches!(dtype, FloatDType::F16 | FloatDType::BF16) {
        2
    } else {
        4
    };
    (params * width) as u64
}
