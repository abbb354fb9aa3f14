//! The `ditail` command line. Every command first checks all its inputs (files exist and
//! parse, models and LoRAs fit, steps agree, outputs are writable) and only then runs
//! anything. Exit codes: 0 success, 1 a failure while running, 2 bad usage or inputs
//! (nothing was run), 64 + n a batch whose n rows failed (at most 127), 130 interrupted.

pub(crate) mod args;
mod batch;
mod batch_summary;
mod cluster;
mod cocktail;
pub(crate) mod device;
mod eval;
mod generate;
mod invert;
mod out;
mod sheet;
mod transfer;
pub(crate) mod ui;

use std::process::ExitCode;

use clap::Parser;
use ditail::app::{Budget, Runner, is_cancelled};

use args::{Cli, Command};
use ui::Ui;

/// A checked command, ready to run.
pub type Run<'a> = Box<dyn FnOnce() -> anyhow::Result<()> + 'a>;

/// Prints an error and its causes on one line, `a: b: c`, leaving out a cause whose text its
/// parent already ends with (errors that print their source, as `cannot read X: <OS error>`,
/// would otherwise say it twice).
fn report(e: &anyhow::Error) {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message += ": ";
        }
        message += &text;
    }
    eprintln!("error: {message}");
}

/// Parses the command line, checks, runs; returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    ui::install_cancel_handler();
    if cli.global.offline {
        ditail::models::load::hub::set_offline(true);
    }
    let ui = Ui::new(cli.global.quiet);
    if let Command::Devices = cli.command {
        return match device::list() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(&e);
                ExitCode::from(1)
            }
        };
    }
    let compute = match device::select(cli.global.backend, cli.global.dtype, cli.global.device, &ui)
    {
        Ok(c) => c,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let prepared: anyhow::Result<Run> = match &cli.command {
        Command::Transfer(a) => transfer::prepare_command(a, &compute).map(|job| {
            let (compute, ui) = (&compute, &ui);
            Box::new(move || {
                let mut runner = Runner::new(compute.clone(), Budget::models(1));
                transfer::run(&job, &mut runner, ui)
            }) as Run
        }),
        Command::Generate(a) => generate::command(a, &compute, &ui),
        Command::Cocktail(a) => cocktail::command(a, &compute, &ui),
        Command::Invert(a) => invert::command(a, &compute, &ui),
        Command::Batch(a) => batch::command(a, &compute, &ui),
        Command::Serve(a) => {
            ditail::serve::command(a, &compute, cli.global.quiet).map(|run| Box::new(run) as Run)
        }
        Command::Eval(a) => eval::command(a, &compute, &ui),
        Command::Devices => unreachable!("handled above"),
    };
    let run = match prepared {
        Ok(run) => run,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(rows) = e.downcast_ref::<batch::RowsFailed>() {
                report(&e);
                ExitCode::from(rows.exit_status())
            } else if is_cancelled(e.as_ref()) {
                eprintln!("interrupted: no output was written for the unfinished work");
                ExitCode::from(130)
            } else {
                report(&e);
                ExitCode::from(1)
            }
        }
    }
}
