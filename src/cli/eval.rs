//! `ditail eval`: the paper's metrics over a folder of results (see [`ditail::eval`]).
//! Everything is paired and every network loaded before the first image is scored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ditail::eval::pairing::{self, Item};
use ditail::eval::{Networks, Options, Report, Stage, evaluate};
use ditail::models::load::eval::{load_clip, load_inception, load_vit};
use ditail::models::load::hub::HubOptions;
use ditail::pipeline::inversion::image_hash;
use ditail::pipeline::preprocess::load_rgb;
use indicatif::{ProgressBar, ProgressStyle};

use super::args::EvalArgs;
use super::device::Compute;
use super::metadata::Record;
use super::output::{check_output_file, read_png_text, write_atomic};
use super::ui::{Ui, cancelled};

/// pytorch-fid's weights, where they are downloaded from and the name ditail looks for.
const INCEPTION_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
const INCEPTION_FILE: &str = "pt_inception-2015-12-05-6726825d.safetensors";

/// ditail's cache folder (`$XDG_CACHE_HOME/ditail`, else `~/.cache/ditail`).
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("ditail"))
}

/// The InceptionV3 file: `--inception`, else the cache's, else an error saying how to get it.
fn inception_path(args: &EvalArgs) -> Result<PathBuf> {
    if let Some(p) = &args.inception {
        return Ok(p.clone());
    }
    let default = cache_dir().map(|d| d.join(INCEPTION_FILE));
    match default {
        Some(p) if p.is_file() => Ok(p),
        _ => {
            let target =
                default.map_or_else(|| INCEPTION_FILE.to_string(), |p| p.display().to_string());
            bail!(
                "FID needs pytorch-fid's InceptionV3 weights: download {INCEPTION_URL} and convert \
                 them once with: python -c \"import torch, safetensors.torch as s; \
                 s.save_file(torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu', \
                 weights_only=True), '{target}')\" (or pass the file with --inception)"
            )
        }
    }
}

/// The `ditail` record of a result PNG, if it has one.
fn record(path: &Path) -> Option<Record> {
    let chunks = read_png_text(path).ok()?;
    let (_, json) = chunks.into_iter().find(|(k, _)| k == "ditail")?;
    serde_json::from_str(&json).ok()
}

/// Pairs results with prompts and content images from their ditail metadata, and leaves
/// out the images that carry none (a cocktail's contact sheet, pictures from elsewhere).
/// Generated images get their prompt only; transfers also their content image, found in
/// `content` by the hash of its pixels. Returns how many were left out.
fn pair_from_metadata(items: &mut Vec<Item>, content: Option<&[PathBuf]>) -> Result<usize> {
    let mut by_hash = BTreeMap::new();
    if let Some(content) = content {
        for p in content {
            let rgb = load_rgb(p).with_context(|| format!("content image {}", p.display()))?;
            by_hash.insert(image_hash(&rgb), p.clone());
        }
    }
    let before = items.len();
    let mut no_content = Vec::new();
    let mut kept = Vec::new();
    for mut item in items.drain(..) {
        let Some(rec) = record(&item.result) else {
            continue;
        };
        item.prompt = Some(rec.prompt.clone());
        if let (Some(d), Some(_)) = (&rec.ditail, content) {
            match by_hash.get(&d.content_sha256) {
                Some(p) => item.content = Some(p.clone()),
                None => no_content.push(item.name.clone()),
            }
        }
        kept.push(item);
    }
    *items = kept;
    if items.is_empty() {
        bail!(
            "--from-metadata: no result carries ditail metadata (not ditail PNGs, or re-saved \
             by another program); give --prompts instead"
        );
    }
    if !no_content.is_empty() {
        bail!(
            "--from-metadata: the content image of {} transfer(s) is not in the --content folder \
             (matched by the hash of its pixels, so the very file they were made from): {}",
            no_content.len(),
            no_content.join(", ")
        );
    }
    Ok(before - items.len())
}

/// A progress callback with one bar per stage; `false` after Ctrl-C.
fn progress_bars(ui: &Ui) -> impl FnMut(Stage, usize, usize) -> bool + '_ {
    let mut current: Option<(Stage, ProgressBar)> = None;
    move |stage, done, total| {
        if current.as_ref().is_none_or(|(s, _)| *s != stage) {
            let bar = ui.bar(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images, eta {eta}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            bar.set_prefix(stage.label());
            current = Some((stage, bar));
        }
        let (_, bar) = current.as_ref().expect("set above");
        bar.set_position(done as u64);
        if done == total {
            bar.finish_and_clear();
        }
        !cancelled()
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

/// The report as a table.
fn print(report: &Report) {
    let width = report
        .images
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    println!(
        "{:width$}  {:>10}  {:>10}",
        "image", "CLIP score", "structure"
    );
    for s in &report.images {
        println!(
            "{:width$}  {:>10}  {:>10}",
            s.name,
            fmt(s.clip_score),
            fmt(s.structure_distance)
        );
    }
    println!(
        "{:width$}  {:>10}  {:>10}",
        "mean",
        fmt(report.clip_score),
        fmt(report.structure_distance)
    );
    if let Some(f) = &report.fid {
        println!(
            "FID {:.4} ({} results against {} reference images)",
            f.fid, f.results, f.reference
        );
    }
}

/// Checks everything, then returns the run.
pub fn command<'a>(args: &'a EvalArgs, compute: &'a Compute, ui: &'a Ui) -> Result<super::Run<'a>> {
    let results = pairing::list_images(&args.results)?;
    let content = args
        .content
        .as_deref()
        .map(pairing::list_images)
        .transpose()?;
    let reference = args
        .reference
        .as_deref()
        .map(pairing::list_images)
        .transpose()?;
    let mut items = pairing::items(&results);
    if args.from_metadata {
        let skipped = pair_from_metadata(&mut items, content.as_deref())?;
        if skipped > 0 {
            ui.info(format!(
                "{skipped} image(s) without ditail metadata left out (a contact sheet?)"
            ));
        }
    } else {
        if let Some(content) = &content {
            pairing::pair_content(&mut items, content)?;
        }
        if let Some(path) = &args.prompts {
            pairing::pair_prompts(&mut items, &pairing::read_prompts(path)?)?;
        }
    }
    let wants_clip = items.iter().any(|i| i.prompt.is_some());
    let wants_dino = items.iter().any(|i| i.content.is_some());
    if !wants_clip && !wants_dino && reference.is_none() {
        bail!(
            "nothing to compute: give --prompts or --from-metadata (CLIP score), --content \
             (structure distance) or --reference (FID)"
        );
    }
    if let Some(json) = &args.json {
        check_output_file(json, "--json", Some("json"))?;
    }
    let inception = reference
        .as_ref()
        .map(|_| inception_path(args))
        .transpose()?;

    Ok(Box::new(move || {
        let hub = HubOptions::from_env();
        let device = &compute.device;
        let mut nets = Networks::default();
        if wants_clip {
            let task = ui.task(format!("loading CLIP {}", args.clip));
            nets.clip = Some(load_clip(&args.clip, device, &hub).context("--clip")?);
            task.done(ui);
        }
        if wants_dino {
            let task = ui.task(format!("loading DINO {}", args.dino));
            nets.dino = Some(load_vit(&args.dino, device, &hub).context("--dino")?);
            task.done(ui);
        }
        if let Some(path) = &inception {
            let task = ui.task(format!("loading InceptionV3 {}", path.display()));
            nets.inception = Some(load_inception(path, device).context("--inception")?);
            task.done(ui);
        }
        let opts = Options {
            batch: args.batch as usize,
            fid_native: args.fid_native,
            ..Options::default()
        };
        let mut progress = progress_bars(ui);
        let report = evaluate(
            &items,
            reference.as_deref().unwrap_or_default(),
            &nets,
            &opts,
            device,
            &mut progress,
        )?
        .ok_or(ditail::pipeline::PipelineError::Cancelled)?;
        if let Some(warning) = report.fid.as_ref().and_then(|f| f.warning.as_ref()) {
            ui.warn(warning);
        }
        print(&report);
        if let Some(json) = &args.json {
            write_atomic(json, |w| {
                serde_json::to_writer_pretty(&mut *w, &report)?;
                writeln!(w)?;
                Ok(())
            })
            .with_context(|| format!("writing {}", json.display()))?;
            ui.info(format!("wrote {}", json.display()));
        }
        Ok(())
    }))
}
