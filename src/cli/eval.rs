//! `ditail eval`: the paper's metrics over a folder of results, through the application
//! layer's evaluation (`ditail::app::eval`): everything is paired and every network checked
//! before the first image is scored; this face draws the bars and prints the table.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ditail::app::eval::{self, EvalInputs, EvalSink, Evaluation, Prompts};
use ditail::eval::pairing::Item;
use ditail::eval::{Options, Report, Stage};
use indicatif::{ProgressBar, ProgressStyle};

use super::args::EvalArgs;
use super::device::Compute;
use super::out::{out, outln};
use super::ui::{Task, Ui, cancelled};
use ditail::app::output::write_atomic;

/// The terminal's view of an evaluation: a spinner per network loading, a bar per stage.
struct Bars<'a> {
    ui: &'a Ui,
    task: Option<Task>,
    current: Option<(Stage, ProgressBar)>,
}

impl<'a> Bars<'a> {
    fn new(ui: &'a Ui) -> Self {
        Self {
            ui,
            task: None,
            current: None,
        }
    }
}

impl EvalSink for Bars<'_> {
    fn loading(&mut self, what: &str) {
        self.task = Some(self.ui.task(format!("loading {what}")));
    }

    fn loaded(&mut self) {
        if let Some(task) = self.task.take() {
            task.done(self.ui);
        }
    }

    fn progress(&mut self, stage: Stage, done: usize, total: usize) -> bool {
        if self.current.as_ref().is_none_or(|(s, _)| *s != stage) {
            let bar = self.ui.bar(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images, eta {eta}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            bar.set_prefix(stage.label());
            self.current = Some((stage, bar));
        }
        let (_, bar) = self.current.as_ref().expect("set above");
        bar.set_position(done as u64);
        if done == total {
            bar.finish_and_clear();
        }
        !cancelled()
    }

    fn warn(&mut self, message: &str) {
        self.ui.warn(message);
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
    outln!(
        "{:width$}  {:>10}  {:>10}",
        "image",
        "CLIP score",
        "structure"
    );
    for s in &report.images {
        outln!(
            "{:width$}  {:>10}  {:>10}",
            s.name,
            fmt(s.clip_score),
            fmt(s.structure_distance)
        );
    }
    outln!(
        "{:width$}  {:>10}  {:>10}",
        "mean",
        fmt(report.clip_score),
        fmt(report.structure_distance)
    );
    if let Some(f) = &report.fid {
        outln!(
            "FID {:.4} ({} results against {} reference images)",
            f.fid,
            f.results,
            f.reference
        );
    }
}

/// Checks everything, then returns the run.
pub fn command<'a>(args: &'a EvalArgs, compute: &'a Compute, ui: &'a Ui) -> Result<super::Run<'a>> {
    let prompts = match (&args.prompts, args.from_metadata) {
        (_, true) => Prompts::Metadata,
        (Some(path), false) => Prompts::File(path.clone()),
        (None, false) => Prompts::None,
    };
    let inputs = EvalInputs {
        results: args.results.clone(),
        content: args.content.clone(),
        prompts,
        reference: args.reference.clone(),
        inception: args.inception.clone(),
        fid_native: args.fid_native,
    };
    if let Some(json) = &args.json {
        ditail::app::output::check_output_file(json, "--json", Some("json"))?;
    }
    let evaluation = Evaluation::plan(&inputs, &args.nets)?;
    if evaluation.skipped > 0 {
        ui.info(format!(
            "{} image(s) without ditail metadata left out (a contact sheet?)",
            evaluation.skipped
        ));
    }
    Ok(Box::new(move || {
        let report = evaluation.run(compute, &mut Bars::new(ui))?;
        print(&report);
        if let Some(json) = &args.json {
            write_json(json, &report, ui)?;
        }
        Ok(())
    }))
}

/// Loads the checked networks and scores `items` with progress bars (see [`eval::score`]).
pub fn score(
    items: &[Item],
    reference: &[PathBuf],
    checked: eval::Checked,
    opts: &Options,
    compute: &Compute,
    ui: &Ui,
) -> Result<Report> {
    Ok(eval::score(
        items,
        reference,
        checked,
        opts,
        compute,
        &mut Bars::new(ui),
    )?)
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
    outln!("{title} (rows: source, columns: target)");
    out!("{:width$}", "");
    for n in names {
        out!("  {n:>width$}");
    }
    outln!();
    for (n, row) in names.iter().zip(&means) {
        out!("{n:width$}");
        for v in row {
            out!("  {:>width$}", fmt(*v));
        }
        outln!();
    }
    means
}
