//! `ditail cocktail`: every content with every model. Each content is inverted once per
//! source model and sampled by every target model (m models give m² images per content);
//! with prompts instead of images, each model first generates its own content. Models are
//! loaded one at a time: all inversions first (source by source), then all samplings
//! (target by target).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ditail::pipeline::{Inversion, ModelSpec, invert, preprocess::load_rgb};
use image::RgbImage;

use super::args::{CocktailArgs, GenerationFlags};
use super::device::Compute;
use super::generate::render;
use super::metadata::{ModelRecord, embeddings_of, model_label};
use super::models::{self, Models};
use super::output::{check_output_dir, write_png};
use super::sheet::contact_sheet;
use super::transfer::{
    check_content, check_sites, check_steps, sample_image, settings, transfer_record,
};
use super::ui::Ui;

/// Contact-sheet cell size in pixels.
const CELL: u32 = 256;

/// Labels safe in file names and unique (`name`, `name-2`, ...).
fn unique_labels(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    names
        .map(|n| {
            let clean: String = n
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let count = seen.entry(clean.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                clean
            } else {
                format!("{clean}-{count}")
            }
        })
        .collect()
}

struct Entry {
    label: String,
    source: ModelSpec,
    target: ModelSpec,
    source_record: ModelRecord,
    target_record: ModelRecord,
}

/// Checks everything, then returns the run.
pub fn command<'a>(
    args: &'a CocktailArgs,
    compute: &'a Compute,
    ui: &'a Ui,
) -> Result<super::Run<'a>> {
    let image_mode = !args.images.is_empty();
    if image_mode && !(args.prompts.len() <= 1 || args.prompts.len() == args.images.len()) {
        bail!(
            "with {} --image, give one --prompt for all or one per image (got {})",
            args.images.len(),
            args.prompts.len()
        );
    }
    if !image_mode && args.prompts.is_empty() {
        bail!("give content: --image IMG (repeatable) or --prompt TEXT (repeatable)");
    }
    let gen_flags = GenerationFlags {
        negative: args.ditail.negative_prompt.clone(),
        omega: 7.5,
        steps: args.ditail.steps,
        size: args.ditail.size.unwrap_or(512),
    };
    if !image_mode {
        super::generate::check_flags(&gen_flags)?;
    }
    // Content: (label, image or prompt, sampling prompt).
    let contents: Vec<(String, Option<RgbImage>, String)> = if image_mode {
        let labels = unique_labels(args.images.iter().map(|p| {
            p.file_stem()
                .map_or("image".into(), |s| s.to_string_lossy().into_owned())
        }));
        args.images
            .iter()
            .zip(labels)
            .enumerate()
            .map(|(i, (path, label))| {
                let prompt = match args.prompts.len() {
                    0 => String::new(),
                    1 => args.prompts[0].clone(),
                    _ => args.prompts[i].clone(),
                };
                Ok((label, Some(load_rgb(path)?), prompt))
            })
            .collect::<Result<_>>()?
    } else {
        let labels = unique_labels((1..=args.prompts.len()).map(|i| format!("prompt{i}")));
        labels
            .into_iter()
            .zip(&args.prompts)
            .map(|(l, p)| (l, None, p.clone()))
            .collect()
    };
    let (mut inversion, sampling) = settings(contents[0].2.as_str(), &args.ditail)?;

    let labels = unique_labels(args.models.iter().map(|m| model_label(m)));
    let mut entries = Vec::new();
    let mut checked = Vec::new();
    for (model, label) in args.models.iter().zip(labels) {
        let source = models::spec(model, &args.model, false)?;
        let target = models::spec(model, &args.model, true)?;
        let s = models::check(&source, compute)?;
        let t = models::check(&target, compute)?;
        entries.push(Entry {
            label,
            source,
            target,
            source_record: s.record.clone(),
            target_record: t.record.clone(),
        });
        checked.push((s, t));
    }
    for (s, _) in &checked {
        for (_, t) in &checked {
            check_steps(s, t, inversion.steps, sampling.steps)?;
        }
    }
    for (_, t) in &checked {
        check_sites(&sampling, t)?;
    }
    if let (None, Some((first, _))) = (args.ditail.size, checked.first()) {
        inversion.size = first.family.native_size();
    }
    for ((_, image, _), path) in contents.iter().zip(&args.images) {
        if let Some(rgb) = image {
            check_content(path, rgb, inversion.size, &sampling.mask, &args.ditail.mask)?;
        }
    }
    let eval_checked = if args.eval {
        let prompts = contents.iter().any(|(_, _, p)| !p.is_empty());
        Some(super::eval::check(&args.eval_nets, prompts, true, None)?)
    } else {
        None
    };
    // Last, so that a refused command leaves no empty folder behind.
    check_output_dir(&args.output)?;

    Ok(Box::new(move || {
        let mut models = Models::new(compute, ui, 1);
        // Stage 1: per source, its contents (generated in prompt mode) and their inversions.
        let mut inversions: Vec<Vec<Inversion>> = vec![Vec::new(); contents.len()];
        for (si, e) in entries.iter().enumerate() {
            for (ci, (label, image, prompt)) in contents.iter().enumerate() {
                let model = models.get(&e.source)?;
                let rgb = match image {
                    Some(img) => img.clone(),
                    None => {
                        let seed = args.seed;
                        let (img, record) = render(
                            model,
                            &e.source_record,
                            prompt,
                            &gen_flags,
                            seed,
                            compute,
                            ui,
                        )?;
                        let path = args
                            .output
                            .join(format!("{label}--content--{}.png", e.label));
                        write_png(&path, &img, &record.chunks())?;
                        ui.info(format!("wrote {}", path.display()));
                        img
                    }
                };
                let mut inv_settings = inversion.clone();
                inv_settings.prompt = prompt.clone();
                let mut progress = ui.steps("source");
                let inv = invert(model, &rgb, &inv_settings, &compute.device, &mut progress)
                    .with_context(|| format!("inverting {label} with {}", e.label))?;
                debug_assert_eq!(inversions[ci].len(), si);
                inversions[ci].push(inv);
            }
        }
        // Stage 2: per target (last source first: it may still be loaded), every inversion.
        let n = entries.len();
        let mut cells: Vec<Vec<Vec<Option<RgbImage>>>> =
            vec![vec![vec![None; n]; n]; contents.len()];
        for (ti, t) in entries.iter().enumerate().rev() {
            for (ci, (label, _, prompt)) in contents.iter().enumerate() {
                for (si, s) in entries.iter().enumerate() {
                    let target = models.get(&t.target)?;
                    let mut spl = sampling.clone();
                    spl.prompt = prompt.clone();
                    let inv = &inversions[ci][si];
                    let (img, _) = sample_image(target, inv, &spl, compute, ui)?;
                    let mut record = transfer_record(
                        inv,
                        &spl,
                        &args.ditail.mask,
                        &t.target_record,
                        Some(&s.source_record),
                        &img,
                        compute,
                    );
                    record.embeddings = embeddings_of(target, inv, &spl)?;
                    let path: PathBuf = args
                        .output
                        .join(format!("{label}--{}--to--{}.png", s.label, t.label));
                    write_png(&path, &img, &record.chunks())?;
                    ui.info(format!("wrote {}", path.display()));
                    cells[ci][si][ti] = Some(img);
                }
            }
        }
        let names: Vec<String> = entries.iter().map(|e| e.label.clone()).collect();
        for (ci, (label, _, _)) in contents.iter().enumerate() {
            let grid: Vec<Vec<RgbImage>> = cells[ci]
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|c| c.clone().expect("every cell ran"))
                        .collect()
                })
                .collect();
            let sheet = contact_sheet(&grid, &names, &names, CELL);
            let path = args.output.join(format!("{label}--sheet.png"));
            write_png(
                &path,
                &sheet,
                &[(
                    "ditail",
                    format!(
                        "{{\"kind\":\"contact-sheet\",\"rows\":\"source\",\"columns\":\"target\",\"models\":{}}}",
                        serde_json::to_string(&names).expect("names serialise")
                    ),
                )],
            )?;
            ui.info(format!(
                "wrote {} (rows: source, columns: target)",
                path.display()
            ));
        }
        if let Some(checked) = eval_checked {
            drop(models);
            let content_path = |ci: usize, si: usize| match args.images.get(ci) {
                Some(p) => p.clone(),
                None => args.output.join(format!(
                    "{}--content--{}.png",
                    contents[ci].0, entries[si].label
                )),
            };
            score_cocktail(&contents, &names, content_path, checked, args, compute, ui)?;
        }
        Ok(())
    }))
}

/// `--eval`: scores every transfer against its content and prompt, prints models x models
/// tables of the means over the contents, and writes `scores.json`.
fn score_cocktail(
    contents: &[(String, Option<RgbImage>, String)],
    names: &[String],
    content_path: impl Fn(usize, usize) -> PathBuf,
    checked: super::eval::Checked,
    args: &CocktailArgs,
    compute: &Compute,
    ui: &Ui,
) -> Result<()> {
    use ditail::eval::Item;
    let n = names.len();
    let mut items = Vec::new();
    let mut pairs = Vec::new();
    for (ci, (label, _, prompt)) in contents.iter().enumerate() {
        for si in 0..n {
            for ti in 0..n {
                let name = format!("{label}--{}--to--{}.png", names[si], names[ti]);
                items.push(Item {
                    result: args.output.join(&name),
                    name,
                    content: Some(content_path(ci, si)),
                    prompt: (!prompt.is_empty()).then(|| prompt.clone()),
                });
                pairs.push((si, ti));
            }
        }
    }
    let opts = args.eval_nets.options();
    let report = super::eval::score(&items, &[], checked, &opts, compute, ui)?;
    let mut clip = vec![vec![Vec::new(); n]; n];
    let mut structure = vec![vec![Vec::new(); n]; n];
    for (scores, &(si, ti)) in report.images.iter().zip(&pairs) {
        clip[si][ti].extend(scores.clip_score);
        structure[si][ti].extend(scores.structure_distance);
    }
    let clip = super::eval::print_matrix("CLIP score (higher follows the prompt)", names, &clip);
    let structure = super::eval::print_matrix(
        "structure distance (lower keeps the content)",
        names,
        &structure,
    );
    let json = serde_json::json!({
        "models": names,
        "rows": "source",
        "columns": "target",
        "clip_score": clip,
        "structure_distance": structure,
        "dino_resize": report.dino_resize,
        "images": report.images,
    });
    super::eval::write_json(&args.output.join("scores.json"), &json, ui)
}
