//! `ditail cocktail`: every content with every model. Each content is inverted once per
//! source model and sampled by every target model (m models give m² images per content);
//! with prompts instead of images, each model first generates its own content. Models are
//! loaded one at a time: all inversions first (source by source), then all samplings
//! (target by target).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use ditail::app::job::Check;
use ditail::app::output::{check_output_dir, write_png};
use ditail::app::record::model_label;
use ditail::app::{Budget, Cell, Content, ContentKind, Grid, Job, Runner};
use ditail::pipeline::{ModelSpec, preprocess::load_rgb};
use image::RgbImage;

use super::args::CocktailArgs;
use super::device::Compute;
use super::sheet::contact_sheet;
use super::ui::{Terminal, Ui};

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
    // Content: its label, its prompt and where it comes from.
    let contents: Vec<Content> = if image_mode {
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
                let kind = ContentKind::Image {
                    path: path.clone(),
                    rgb: load_rgb(path)?,
                };
                Ok(Content {
                    label,
                    kind,
                    prompt: Some(prompt),
                })
            })
            .collect::<Result<_>>()?
    } else {
        let labels = unique_labels((1..=args.prompts.len()).map(|i| format!("prompt{i}")));
        labels
            .into_iter()
            .zip(&args.prompts)
            .map(|(label, prompt)| Content {
                label,
                kind: ContentKind::Generate {
                    prompt: prompt.clone(),
                    seed: args.seed,
                    options: args.ditail.content_generation(),
                },
                prompt: Some(prompt.clone()),
            })
            .collect()
    };
    let described: Vec<(String, String)> = contents
        .iter()
        .map(|c| (c.label.clone(), c.prompt.clone().unwrap_or_default()))
        .collect();
    let names = unique_labels(args.models.iter().map(|m| model_label(m)));
    let models = |with_loras: bool| -> Result<Vec<(ModelSpec, String)>> {
        args.models
            .iter()
            .zip(&names)
            .map(|(m, label)| Ok((args.model.spec(m, with_loras)?, label.clone())))
            .collect()
    };
    let (sources, targets) = (models(false)?, models(true)?);
    let out = &args.output;
    let cell_path = |c: Cell| {
        let t = c.target.expect("a result's cell");
        out.join(format!(
            "{}--{}--to--{}.png",
            described[c.content].0, names[c.source], names[t]
        ))
    };
    let content_path = |c: Cell| {
        out.join(format!(
            "{}--content--{}.png",
            described[c.content].0, names[c.source]
        ))
    };
    let prompt = described[0].1.clone();
    let check: &mut Check = &mut |spec| ditail::app::models::check(spec, compute);
    let job = Job::grid(
        Grid {
            contents,
            sources,
            targets,
            prompt: &prompt,
            options: &args.ditail,
            cell_path: &cell_path,
            content_path: (!image_mode).then_some(&content_path as &dyn Fn(Cell) -> PathBuf),
        },
        check,
    )?;
    let eval_checked = if args.eval {
        let prompts = described.iter().any(|(_, p)| !p.is_empty());
        Some(ditail::app::eval::check(
            &args.eval_nets,
            prompts,
            true,
            None,
        )?)
    } else {
        None
    };
    // Last, so that a refused command leaves no empty folder behind.
    check_output_dir(&args.output)?;

    Ok(Box::new(move || {
        let mut runner = Runner::new(compute.clone(), Budget::models(1));
        let n = names.len();
        let mut cells: Vec<Vec<Vec<Option<RgbImage>>>> =
            vec![vec![vec![None; n]; n]; described.len()];
        let mut sink = Terminal::new(ui).on_result(|cell, img| {
            if let Some(t) = cell.target {
                cells[cell.content][cell.source][t] = Some(img.clone());
            }
        });
        runner.run(&job, &mut sink)?;
        drop(sink);
        for (ci, (label, _)) in described.iter().enumerate() {
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
            runner.release_models();
            let content_path = |ci: usize, si: usize| match args.images.get(ci) {
                Some(p) => p.clone(),
                None => args
                    .output
                    .join(format!("{}--content--{}.png", described[ci].0, names[si])),
            };
            score_cocktail(&described, &names, content_path, checked, args, compute, ui)?;
        }
        Ok(())
    }))
}

/// `--eval`: scores every transfer against its content and prompt, prints models x models
/// tables of the means over the contents, and writes `scores.json`.
fn score_cocktail(
    contents: &[(String, String)],
    names: &[String],
    content_path: impl Fn(usize, usize) -> PathBuf,
    checked: ditail::app::eval::Checked,
    args: &CocktailArgs,
    compute: &Compute,
    ui: &Ui,
) -> Result<()> {
    use ditail::eval::Item;
    let n = names.len();
    let mut items = Vec::new();
    let mut pairs = Vec::new();
    for (ci, (label, prompt)) in contents.iter().enumerate() {
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
