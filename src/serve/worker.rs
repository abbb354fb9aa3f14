//! The worker: one thread that owns the device and runs the queue's jobs one at a time
//! through the application layer's runner, as the CLI runs them (the same job, checks,
//! records and PNG writer), reporting every stage and step as job events with a live
//! preview. The runner keeps loaded models within a memory budget (least recently used
//! out) and recent inversions, so sampling another target from the same content, source
//! and inversion settings never inverts again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use ditail::app::naming::{Naming, reword};
use ditail::app::{Budget, Cell, Job, Runner, Sink, Stage, Written, interrupt, is_cancelled};
use ditail::models::device::Compute;
use ditail::pipeline::preprocess::load_rgb;
use ditail::pipeline::{Phase, Progress};
use serde_json::json;

use super::catalog::Catalog;
use super::jobs::{Jobs, Status, Submission};
use super::preview::{data_url, latents_to_rgb};
use super::settings::Files;

/// At most one preview per this interval (GPU steps can take milliseconds).
const PREVIEW_EVERY: Duration = Duration::from_millis(200);

/// What the worker needs.
pub struct Worker {
    /// The model folders' catalog (models by id).
    pub catalog: Arc<RwLock<Catalog>>,
    /// The queue it takes jobs from.
    pub jobs: Arc<Jobs>,
    /// Where results are written.
    pub output: PathBuf,
    runner: Runner,
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
            catalog,
            jobs,
            output,
            runner: Runner::new(compute, Budget::bytes(budget_bytes)),
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
                Err(e) if is_cancelled(e.as_ref()) => {
                    // Stopped by the server shutting down, not by a client: run it again
                    // after the restart.
                    let interrupted = interrupt::requested() && !cancel.load(Ordering::SeqCst);
                    self.jobs.finish(&id, Status::Cancelled, None, interrupted);
                }
                Err(e) => self.jobs.finish(
                    &id,
                    Status::Failed,
                    Some(reword(&format!("{e:#}"), Naming::Labels)),
                    false,
                ),
            }
        }
    }

    /// The submission's job, built as it was when accepted.
    fn job(&self, sub: &Submission) -> Result<Job> {
        let path = self.jobs.content_path(&sub.id);
        let content = match sub.has_image {
            true => Some((path.as_path(), load_rgb(&path)?)),
            false => None,
        };
        let files = Files {
            content,
            mask: &self.jobs.mask_path(&sub.id),
            output: &self.output,
            id: &sub.id,
        };
        let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        sub.settings.job(
            &catalog,
            (&sub.sources, &sub.targets),
            files,
            self.runner.compute(),
        )
    }

    fn execute(&mut self, sub: &Submission, cancel: &Arc<AtomicBool>) -> Result<()> {
        let job = self.job(sub)?;
        let mut reporter = Reporter::new(self.jobs.clone(), sub, cancel.clone(), job.total_steps());
        self.runner.run(&job, &mut reporter)?;
        Ok(())
    }
}

/// The web app's [`Sink`]: pipeline progress as job events (steps with a job-wide ETA,
/// throttled previews, stages, inversions, results), and cancellation (by the client, or
/// the server stopping).
struct Reporter {
    jobs: Arc<Jobs>,
    id: String,
    /// The grid's labels, for the stages' words.
    sources: Vec<String>,
    targets: Vec<String>,
    cancel: Arc<AtomicBool>,
    /// Steps of the whole job, steps done, steps run (not skipped), since when.
    total: usize,
    done: usize,
    run: usize,
    start: Option<Instant>,
    last_preview: Option<Instant>,
}

impl Reporter {
    fn new(jobs: Arc<Jobs>, sub: &Submission, cancel: Arc<AtomicBool>, total: usize) -> Self {
        Self {
            jobs,
            id: sub.id.clone(),
            sources: sub.sources.clone(),
            targets: sub.targets.clone(),
            cancel,
            total,
            done: 0,
            run: 0,
            start: None,
            last_preview: None,
        }
    }
}

impl Sink for Reporter {
    fn stage(&mut self, stage: Stage<'_>) {
        let data = match stage {
            Stage::Loading { label, .. } => {
                json!({ "stage": "loading", "label": format!("loading {label}") })
            }
            Stage::Decoding {
                cell:
                    Cell {
                        source,
                        target: None,
                        ..
                    },
            } => json!({ "stage": "decoding", "source": source, "label": "decoding the content" }),
            Stage::Decoding {
                cell:
                    Cell {
                        source,
                        target: Some(target),
                        ..
                    },
            } => json!({ "stage": "decoding", "source": source, "target": target,
                         "label": format!("decoding {} → {}", self.sources[source], self.targets[target]) }),
        };
        self.jobs.emit(&self.id, "stage", data);
    }

    fn inverted(&mut self, cell: Cell, skipped: Option<usize>) {
        // Steps that a kept inversion saved count as done.
        self.done += skipped.unwrap_or(0);
        self.jobs.emit(
            &self.id,
            "inversion",
            json!({ "source": cell.source, "cached": skipped.is_some() }),
        );
    }

    fn content(&mut self, cell: Cell, image: &image::RgbImage) {
        // Shown in the Output card (a thumbnail: the event log keeps it with the job).
        let thumb =
            image::imageops::thumbnail(image, 256.min(image.width()), 256.min(image.height()));
        if let Ok(url) = data_url(&thumb) {
            self.jobs.emit(
                &self.id,
                "content",
                json!({ "source": cell.source, "label": self.sources[cell.source], "image": url }),
            );
        }
    }

    fn wrote(&mut self, file: Written<'_>) {
        if let Written::Result { cell, path, .. } = file {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.jobs.emit(
                &self.id,
                "result",
                json!({ "source": cell.source, "target": cell.target, "name": name,
                        "url": format!("/api/results/{name}") }),
            );
        }
    }

    fn warn(&mut self, message: &str) {
        self.jobs
            .emit(&self.id, "warning", json!({ "message": message }));
    }

    fn step(&mut self, p: Progress<'_>, cell: Cell) -> bool {
        let (source, target) = (cell.source, cell.target);
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
            if let Some(url) = latents_to_rgb(latents)
                .ok()
                .and_then(|img| data_url(&img).ok())
            {
                self.jobs.emit(
                    &self.id,
                    "preview",
                    json!({ "image": url, "source": source, "target": target, "step": p.step }),
                );
            }
        }
        !self.cancel.load(Ordering::SeqCst) && !interrupt::requested()
    }
}
