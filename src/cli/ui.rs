//! What the user sees on stderr: progress bars with steps per second, informational lines
//! (also when stderr is not a terminal, so batch logs say what happened), warnings, and
//! Ctrl-C handling (the first stops after the current step and cleans up; the second quits).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ditail::pipeline::{Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler.
pub fn install_cancel_handler() {
    let _ = ctrlc::set_handler(|| {
        if CANCELLED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: quitting now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping after the current step (Ctrl-C again to quit now)");
    });
}

/// Whether Ctrl-C was pressed.
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Progress and messages.
pub struct Ui {
    quiet: bool,
    bars: MultiProgress,
}

impl Ui {
    /// Progress bars are drawn only on a terminal and never with `--quiet`.
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Self {
            quiet,
            bars: MultiProgress::with_draw_target(target),
        }
    }

    /// An informational line (not with `--quiet`).
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            let _ = self.bars.println(msg.as_ref());
            if self.bars.is_hidden() {
                eprintln!("{}", msg.as_ref());
            }
        }
    }

    /// A warning (always shown).
    pub fn warn(&self, msg: impl AsRef<str>) {
        self.bars.suspend(|| eprintln!("warning: {}", msg.as_ref()));
    }

    /// A progress bar of `len` steps among the others (styled by the caller).
    pub fn bar(&self, len: u64) -> ProgressBar {
        self.bars.add(ProgressBar::new(len))
    }

    /// A spinner for work without steps (loading, decoding); `done` reports its time.
    pub fn task(&self, label: impl Into<String>) -> Task {
        let label = label.into();
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
        bar.set_message(label.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        Task {
            bar,
            label,
            start: Instant::now(),
        }
    }

    /// A progress callback for the pipeline: a bar per phase with steps per second; returns
    /// `false` (cancel) after Ctrl-C. Prints a summary line when each phase ends.
    pub fn steps<'a>(&'a self, label: &'a str) -> impl FnMut(Progress) -> bool + 'a {
        let mut current: Option<(Phase, ProgressBar, Instant)> = None;
        move |p: Progress| {
            if current
                .as_ref()
                .is_none_or(|(phase, _, _)| *phase != p.phase)
            {
                let bar = self.bars.add(ProgressBar::new(p.total as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos}/{len} steps, {per_sec}, eta {eta}",
                    )
                    .unwrap()
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{label} {}", phase_name(p.phase)));
                current = Some((p.phase, bar, Instant::now()));
            }
            let (phase, bar, start) = current.as_ref().expect("set above");
            bar.set_position(p.step as u64);
            if p.step == p.total {
                bar.finish_and_clear();
                let secs = start.elapsed().as_secs_f64();
                self.info(format!(
                    "{label} {}: {} steps in {secs:.1} s ({:.2} steps/s)",
                    phase_name(*phase),
                    p.total,
                    p.total as f64 / secs.max(1e-9)
                ));
            }
            !cancelled()
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Inversion => "inversion",
        Phase::Sampling => "sampling",
        Phase::Generation => "generation",
    }
}

/// A running task shown as a spinner.
pub struct Task {
    bar: ProgressBar,
    label: String,
    start: Instant,
}

impl Task {
    /// Ends the spinner and prints how long it took.
    pub fn done(self, ui: &Ui) {
        self.bar.finish_and_clear();
        ui.info(format!(
            "{} ({:.1} s)",
            self.label,
            self.start.elapsed().as_secs_f64()
        ));
    }
}
