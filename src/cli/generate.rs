//! `ditail generate`: text to image with one model.

use std::path::Path;

use anyhow::Result;
use ditail::app::output::{check_output_file, write_png};
use ditail::app::record::model_label;
use ditail::app::{Budget, Cell, JobModel, Runner};

use super::args::GenerateArgs;
use super::device::Compute;
use super::ui::{Terminal, Ui};

/// A seed from the clock, for runs that give none (it is recorded in the output).
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64 ^ (nanos >> 64) as u64) % 4_294_967_296
}

/// `ditail generate`: checks everything, then runs.
pub fn command<'a>(
    args: &'a GenerateArgs,
    compute: &'a Compute,
    ui: &'a Ui,
) -> Result<super::Run<'a>> {
    args.generation.check()?;
    check_output_file(&args.output, "output", Some("png"))?;
    let spec = args.model_flags.spec(&args.model, true)?;
    let checked = ditail::app::models::check(&spec, compute)?;
    let seed = args.seed.unwrap_or_else(random_seed);
    let output: &Path = &args.output;
    let label = model_label(&checked.record.model);
    let model = JobModel {
        spec,
        record: checked.record,
        label: label.clone(),
    };
    Ok(Box::new(move || {
        let mut runner = Runner::new(compute.clone(), Budget::models(1));
        let cell = Cell {
            content: 0,
            source: 0,
            target: None,
        };
        let mut sink = Terminal::new(ui).generating(label);
        let (img, record) = runner.generate(
            &model,
            &args.prompt,
            &args.generation,
            seed,
            cell,
            &mut sink,
        )?;
        write_png(output, &img, &record.chunks())?;
        ui.info(format!("wrote {} (seed {seed})", output.display()));
        Ok(())
    }))
}
