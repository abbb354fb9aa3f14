//! `ditail batch`: a manifest of transfers. Resumable (rows whose output is already a
//! complete ditail PNG are skipped; outputs are written atomically, so a present file is a
//! complete one), shardable (`--shard I/N` runs the I-th of N shards of even expected work,
//! every task computing the same cut from the manifest, so array jobs split the work with
//! no coordinator: [`manifest::partition`]), and a failing row is logged while the others go
//! on.
//!
//! Safe against crashes and company: a run first removes the temporary files that killed
//! runs left in the output folder (only those whose writer is gone), and claims each
//! output before running its row (a kernel lock, see [`output::claim`]), so that batches
//! running the same rows at once skip the rows another one is writing instead of writing
//! them twice.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use ditail::app::manifest::{self, Row};
use ditail::app::models::Checked;
use ditail::app::output::{self, Claim, check_output_dir, read_png_text};
use ditail::app::{Budget, ContentArg, Job, Runner};
use ditail::pipeline::ModelSpec;

use super::args::{BatchArgs, DitailOptions, ModelOptions};
use super::batch_summary::Summary;
use super::device::Compute;
use super::generate::random_seed;
use super::ui::{Terminal, Ui, cancelled};
use super::{batch_summary, cluster};

/// A batch whose rows failed (the others ran): its exit status says how many, so that a
/// scheduler's accounting (Slurm's `sacct`) shows it: 64 + the count, at most 127.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} rows failed")]
pub struct RowsFailed {
    /// Rows that failed.
    pub failed: usize,
    /// Rows of this shard.
    pub total: usize,
}

impl RowsFailed {
    /// The exit status: 64 + the failed rows, at most 127 (63 or more).
    pub fn exit_status(&self) -> u8 {
        64 + self.failed.min(63) as u8
    }
}

/// Whether `path` is an output a previous run completed.
fn complete(path: &Path) -> bool {
    path.is_file() && read_png_text(path).is_ok_and(|t| t.iter().any(|(k, _)| k == "ditail"))
}

/// The row's flags: the command line's, overridden by the row's fields.
fn row_flags(row: &Row, base: &DitailOptions, manifest: &Path) -> Result<DitailOptions> {
    let d = base.clone();
    Ok(DitailOptions {
        negative_prompt: row
            .get("negative_prompt")
            .map_or(d.negative_prompt, str::to_string),
        inv_prompt: row.get("inv_prompt").map(str::to_string).or(d.inv_prompt),
        inv_negative_prompt: row
            .get("inv_negative_prompt")
            .map(str::to_string)
            .or(d.inv_negative_prompt),
        alpha: row.parse("alpha", d.alpha)?,
        beta: row.parse("beta", d.beta)?,
        omega: row.parse("omega", d.omega)?,
        inv_steps: row.parse("inv_steps", d.inv_steps)?,
        steps: row.parse("steps", d.steps)?,
        conv_ratio: row.parse("conv_ratio", d.conv_ratio)?,
        attn_ratio: row.parse("attn_ratio", d.attn_ratio)?,
        mask: row
            .get("mask")
            .map_or(d.mask, |m| manifest::resolve(manifest, m)),
        no_injection: row.flag("no_injection", d.no_injection)?,
        sites: row.get("sites").map(str::to_string).or(d.sites),
        size: match row.get("size") {
            Some(_) => Some(row.parse("size", 0)?),
            None => d.size,
        },
    })
}

fn row_model_flags(row: &Row, base: &ModelOptions, manifest: &Path) -> Result<ModelOptions> {
    Ok(ModelOptions {
        loras: match row.get("lora") {
            Some(l) => l
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| manifest::resolve(manifest, s))
                .collect(),
            None => base.loras.clone(),
        },
        vae: row
            .get("vae")
            .map(|v| manifest::resolve(manifest, v))
            .or(base.vae.clone()),
        clip_skip: row.parse("clip_skip", base.clip_skip)?,
        embeddings: base.embeddings.clone(),
    })
}

/// A row's source and target models: its fields (paths looked up beside the manifest), else
/// the command line's; the target defaults to the source.
fn row_models(row: &Row, args: &BatchArgs) -> (Option<String>, Option<String>) {
    let field = |name: &str| row.get(name).map(|s| manifest::resolve(&args.manifest, s));
    let source = field("source").or(args.source.clone());
    let target = field("target").or(args.target.clone()).or(source.clone());
    (source, target)
}

/// What a row costs and shares, for the shards (see [`manifest::partition`]): its models,
/// what its inversion is made of, and its steps weighed by its pixels. Read from the row and
/// the command line only (never from a random seed), so every task computes the same.
fn row_work(row: &Row, args: &BatchArgs) -> manifest::Work {
    let m = &args.manifest;
    let field = |name: &str| row.get(name).map(str::to_string);
    let number = |name: &str, default: f64| {
        row.get(name)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let d = &args.ditail;
    let (source, target) = row_models(row, args);
    let (source, target) = (source.unwrap_or_default(), target.unwrap_or_default());
    let size = number(
        "size",
        d.size.unwrap_or(ditail::pipeline::settings::defaults::SIZE) as f64,
    );
    let pixels = (size / 64.0).powi(2);
    let (inv_steps, steps) = (
        number("inv_steps", d.inv_steps as f64),
        number("steps", d.steps as f64),
    );
    let prompt = field("prompt").unwrap_or_default();
    let content = match field("image") {
        Some(image) => manifest::resolve(m, &image),
        // A generated content with no seed gets a random one: its own group.
        None => format!(
            "{prompt:?}|{}",
            field("seed").unwrap_or(format!("row {}", row.number))
        ),
    };
    let generated = if row.get("image").is_some() {
        0.0
    } else {
        steps
    };
    let inversion = [
        content,
        source.clone(),
        field("inv_prompt").unwrap_or(prompt),
        field("inv_negative_prompt").unwrap_or_default(),
        field("alpha").unwrap_or_default(),
        field("beta").unwrap_or_default(),
        inv_steps.to_string(),
        size.to_string(),
        field("vae").unwrap_or_default(),
        field("clip_skip").unwrap_or_default(),
    ]
    .join("|");
    manifest::Work {
        models: format!("{source} > {target}"),
        inversion,
        inversion_cost: (inv_steps + generated) * pixels,
        cost: steps * pixels,
    }
}

/// Checks one row into a job.
fn prepare_row(
    row: &Row,
    args: &BatchArgs,
    compute: &Compute,
    check: &mut ditail::app::job::Check,
) -> Result<Job> {
    let m = &args.manifest;
    let prompt = row.get("prompt").context("field `prompt` is required")?;
    let flags = row_flags(row, &args.ditail, m)?;
    let model_flags = row_model_flags(row, &args.model, m)?;
    let (source, target) = row_models(row, args);
    let source = source.context("no `source` in the row and no --source")?;
    let target = target.unwrap_or_else(|| source.clone());
    let image = row.get("image").map(|i| manifest::resolve(m, i));
    let content = match &image {
        Some(path) => ContentArg::Image(Path::new(path)),
        None => ContentArg::Generate {
            prompt: prompt.to_string(),
            seed: row.parse("seed", random_seed())?,
            options: flags.content_generation(),
        },
    };
    Ok(Job::transfer(
        content,
        prompt,
        Some(model_flags.spec(&source, false)?),
        model_flags.spec(&target, true)?,
        &flags,
        &args.output.join(row.output_name()),
        compute,
        check,
    )?)
}

/// Checks everything, then returns the run. Its error (exit 1) says how many rows failed.
pub fn command<'a>(
    args: &'a BatchArgs,
    compute: &'a Compute,
    ui: &'a Ui,
) -> Result<super::Run<'a>> {
    let started = SystemTime::now();
    if args.status {
        let (manifest, output) = (args.manifest.clone(), args.output.clone());
        return Ok(Box::new(move || {
            batch_summary::status(&manifest, &output, &complete)
        }));
    }
    let rows = manifest::read(&args.manifest)?;
    let (shard, why) = cluster::shard(
        args.shard.as_deref(),
        args.shard_count.map(|n| n as usize),
        &|name| std::env::var(name).ok(),
    )?;
    ui.info(format!("shard {}/{} ({why})", shard.index, shard.count));
    // `manifest::read` has checked that ids and output names are unique plain file names.
    check_output_dir(&args.output)?;
    let stale = output::clean_stale(&args.output, started);
    if !stale.is_empty() {
        ui.info(format!(
            "removed {} temporary file(s) left in {} by an interrupted run: {}",
            stale.len(),
            args.output.display(),
            stale.join(", ")
        ));
    }
    let owner = manifest::partition(
        &rows.iter().map(|r| row_work(r, args)).collect::<Vec<_>>(),
        shard.count,
    );
    let mine: Vec<&Row> = rows
        .iter()
        .zip(&owner)
        .filter(|(_, s)| **s == shard.index)
        .map(|(r, _)| r)
        .collect();
    let mine_count = mine.len();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut jobs = Vec::new();
    let mut checked: Vec<(ModelSpec, Checked)> = Vec::new();
    let mut check = |spec: &ModelSpec| -> ditail::app::Result<Checked> {
        if let Some((_, c)) = checked.iter().find(|(s, _)| s == spec) {
            return Ok(c.clone());
        }
        let c = ditail::app::models::check(spec, compute)?;
        checked.push((spec.clone(), c.clone()));
        Ok(c)
    };
    let mut already_done = Vec::new();
    for row in &mine {
        if complete(&args.output.join(row.output_name())) {
            already_done.push(row.id());
            continue;
        }
        match prepare_row(row, args, compute, &mut check) {
            Ok(job) => jobs.push((row.id(), job)),
            Err(e) => {
                ui.warn(format!("{} (row {}): {e:#}", row.id(), row.number));
                failed.push((row.id(), format!("{e:#}")));
            }
        }
    }
    ui.info(format!(
        "batch {}: {} rows, shard {}/{} has {}: {} to run, {} already done, {} invalid",
        args.manifest.display(),
        rows.len(),
        shard.index,
        shard.count,
        mine.len(),
        jobs.len(),
        already_done.len(),
        failed.len()
    ));
    // `--eval`: every row of the shard, scored at the end if its output is then complete.
    let eval_items: Vec<ditail::eval::Item> = mine
        .iter()
        .filter_map(|row| {
            let prompt = row.get("prompt")?.to_string();
            Some(ditail::eval::Item {
                name: row.output_name(),
                result: args.output.join(row.output_name()),
                content: row
                    .get("image")
                    .map(|i| PathBuf::from(manifest::resolve(&args.manifest, i))),
                prompt: Some(prompt),
            })
        })
        .collect();
    let eval_checked = if args.eval {
        let dino = eval_items.iter().any(|i| i.content.is_some());
        Some(ditail::app::eval::check(&args.eval_nets, true, dino, None)?)
    } else {
        None
    };
    // Rows sharing models run together, so each model loads once.
    let models = |job: &Job| {
        let name = |m: &[ditail::app::JobModel]| m.first().map(|m| m.spec.model.clone());
        (name(&job.sources), name(&job.targets))
    };
    jobs.sort_by_key(|(_, job)| models(job));
    Ok(Box::new(move || {
        let mut runner = Runner::new(compute.clone(), Budget::models(2));
        let total = jobs.len();
        // What happened to each row: the counts below are these lists' lengths.
        let mut summary = Summary {
            manifest: args.manifest.clone(),
            shard: format!("{}/{}", shard.index, shard.count),
            shard_reason: why.clone(),
            skipped: already_done,
            ..Summary::default()
        };
        let mut pending: Vec<String> = jobs.iter().map(|(id, _)| id.clone()).collect();
        let mut warned_no_locking = false;
        for (i, (id, job)) in jobs.into_iter().enumerate() {
            if cancelled() {
                break;
            }
            let out = job.output().to_path_buf();
            pending.retain(|p| p != &id);
            // Held until the row ends: another batch on the same rows skips this one.
            let _lock = match output::claim(&out).map_err(anyhow::Error::from) {
                Ok(Claim::Mine(lock)) => Some(lock),
                Ok(Claim::Busy) => {
                    ui.info(format!(
                        "[{}/{total}] {id}: skipped, another process is writing {}",
                        i + 1,
                        out.display()
                    ));
                    summary.busy.push(id);
                    continue;
                }
                Ok(Claim::NoLocking(e)) => {
                    if !std::mem::replace(&mut warned_no_locking, true) {
                        ui.warn(format!(
                            "cannot lock files in {} ({e}): rows run without a claim, so another \
                             batch on the same rows may compute them too",
                            args.output.display()
                        ));
                    }
                    None
                }
                Err(e) => {
                    ui.warn(format!("{id}: {e:#}"));
                    failed.push((id, format!("{e:#}")));
                    continue;
                }
            };
            // Another process may have finished it since the manifest was checked.
            if complete(&out) {
                ui.info(format!(
                    "[{}/{total}] {id}: skipped, another process completed it",
                    i + 1
                ));
                summary.skipped.push(id);
                continue;
            }
            ui.info(format!("[{}/{total}] {id}", i + 1));
            match runner
                .run(&job, &mut Terminal::new(ui))
                .map_err(anyhow::Error::from)
            {
                Ok(()) => summary.done.push(id),
                Err(e) => {
                    ui.warn(format!("{id}: {e:#}"));
                    failed.push((id, format!("{e:#}")));
                }
            }
        }
        eprintln!(
            "batch summary: {} done, {} skipped (already complete), {} failed{}{}",
            summary.done.len(),
            summary.skipped.len(),
            failed.len(),
            if summary.busy.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} skipped (another process was writing them: {})",
                    summary.busy.len(),
                    summary.busy.join(", ")
                )
            },
            if cancelled() {
                format!(", {} not run (interrupted)", pending.len())
            } else {
                String::new()
            }
        );
        for (id, e) in &failed {
            eprintln!("  failed {id}: {e}");
        }
        summary.failed = failed.iter().cloned().collect();
        summary.not_run = pending;
        summary.interrupted = cancelled();
        if (shard.count > 1 || args.summary)
            && let Err(e) = summary.write(&args.output, shard, ui)
        {
            ui.warn(format!("the batch summary: {e:#}"));
        }
        if cancelled() {
            return Err(ditail::pipeline::PipelineError::Cancelled.into());
        }
        if let Some(checked) = eval_checked {
            runner.release_models();
            let items: Vec<_> = eval_items
                .into_iter()
                .filter(|i| complete(&i.result))
                .collect();
            if items.is_empty() {
                ui.warn("--eval: no completed rows to score");
            } else {
                let opts = args.eval_nets.options();
                let report = super::eval::score(&items, &[], checked, &opts, compute, ui)?;
                super::eval::print(&report);
                let name = if shard.count > 1 {
                    format!("eval-{}-of-{}.json", shard.index, shard.count)
                } else {
                    "eval.json".to_string()
                };
                super::eval::write_json(&args.output.join(name), &report, ui)?;
            }
        }
        if !failed.is_empty() {
            return Err(RowsFailed {
                failed: failed.len(),
                total: mine_count,
            }
            .into());
        }
        Ok(())
    }))
}
