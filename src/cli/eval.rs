//! `ditail eval`: the paper's metrics over a folder of results (see [`ditail::eval`]).
//! Everything is paired and every network loaded before the first image is scored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ditail::eval::pairing::{self, Item};
use ditail::eval::preprocess::DinoResize;
use ditail::eval::{Networks, Options, Report, Stage, evaluate};
use ditail::models::load::eval::{ClipPlan, VitPlan, load_inception, plan_clip, plan_vit};
use ditail::models::load::hub::HubOptions;
use ditail::pipeline::digest::image_hash;
use ditail::pipeline::preprocess::load_rgb;
use indicatif::{ProgressBar, ProgressStyle};

use super::args::{EvalArgs, EvalNets};
use super::device::Compute;
use super::ui::{Ui, cancelled};
use ditail::app::output::{check_output_file, write_atomic};
use ditail::app::record::{cache_dir, read_record};

/// pytorch-fid's weights, where they are downloaded from and the name ditail looks for.
const INCEPTION_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
const INCEPTION_FILE: &str = "pt_inception-2015-12-05-6726825d.safetensors";

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
        let Some(rec) = read_record(&item.result) else {
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
pub fn print(report: &Report) {
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
    let checked = check(&args.nets, wants_clip, wants_dino, inception)?;

    Ok(Box::new(move || {
        let opts = Options {
            fid_native: args.fid_native,
            ..args.nets.options()
        };
        let report = score(
            &items,
            reference.as_deref().unwrap_or_default(),
            checked,
            &opts,
            compute,
            ui,
        )?;
        print(&report);
        if let Some(json) = &args.json {
            write_json(json, &report, ui)?;
        }
        Ok(())
    }))
}

impl EvalNets {
    /// The evaluation options these flags set (`ditail eval` adds its FID ones).
    pub fn options(&self) -> Options {
        Options {
            batch: self.eval_batch as usize,
            dino_resize: if self.dino_antialias {
                DinoResize::Antialiased
            } else {
                DinoResize::Reference
            },
            ..Options::default()
        }
    }
}

/// The metric networks located and checked, not loaded.
pub struct Checked {
    clip: Option<(String, ClipPlan)>,
    dino: Option<(String, VitPlan)>,
    inception: Option<PathBuf>,
}

/// Locates and checks the networks a scoring will need (downloading them if need be),
/// before any long work.
pub fn check(
    nets: &EvalNets,
    clip: bool,
    dino: bool,
    inception: Option<PathBuf>,
) -> Result<Checked> {
    let hub = HubOptions::from_env();
    Ok(Checked {
        clip: clip
            .then(|| plan_clip(&nets.clip, &hub).map(|p| (nets.clip.clone(), p)))
            .transpose()
            .context("--clip")?,
        dino: dino
            .then(|| plan_vit(&nets.dino, &hub).map(|p| (nets.dino.clone(), p)))
            .transpose()
            .context("--dino")?,
        inception,
    })
}

/// Loads the checked networks and scores `items` (and FID against `reference`), with
/// progress bars; a FID warning is printed.
pub fn score(
    items: &[Item],
    reference: &[PathBuf],
    checked: Checked,
    opts: &Options,
    compute: &Compute,
    ui: &Ui,
) -> Result<Report> {
    let device = &compute.device;
    let mut nets = Networks::default();
    if let Some((name, plan)) = checked.clip {
        let task = ui.task(format!("loading CLIP {name}"));
        nets.clip = Some(plan.load(device).context("--clip")?);
        task.done(ui);
    }
    if let Some((name, plan)) = checked.dino {
        let task = ui.task(format!("loading DINO {name}"));
        nets.dino = Some(plan.load(device).context("--dino")?);
        task.done(ui);
    }
    if let Some(path) = &checked.inception {
        let task = ui.task(format!("loading InceptionV3 {}", path.display()));
        nets.inception = Some(load_inception(path, device).context("--inception")?);
        task.done(ui);
    }
    let mut progress = progress_bars(ui);
    let report = evaluate(items, reference, &nets, opts, device, &mut progress)?
        .ok_or(ditail::pipeline::PipelineError::Cancelled)?;
    if let Some(warning) = report.fid.as_ref().and_then(|f| f.warning.as_ref()) {
        ui.warn(warning);
    }
    Ok(report)
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize, ui: &Ui) -> Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        writeln!(w)?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    ui.info(format!("wrote {}", path.display()));
    Ok(())
}

/// Prints a models x models table (rows: source, columns: target) of a metric's means
/// for a cocktail, `cells[s][t]` holding the pair's values, and returns the means.
pub fn print_matrix(
    title: &str,
    names: &[String],
    cells: &[Vec<Vec<f64>>],
) -> Vec<Vec<Option<f64>>> {
    let means: Vec<Vec<Option<f64>>> = cells
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64))
                .collect()
        })
        .collect();
    let width = names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .clamp(6, 24);
    println!("{title} (rows: source, columns: target)");
    print!("{:width$}", "");
    for n in names {
        print!("  {n:>width$}");
    }
    println!();
    for (n, row) in names.iter().zip(&means) {
        print!("{n:width$}");
        for v in row {
            print!("  {:>width$}", fmt(*v));
        }
        println!();
    }
    means
}
