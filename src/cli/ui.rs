//! What the user sees on stderr: progress bars with steps per second, informational lines
//! (also when stderr is not a terminal, so batch logs say what happened), warnings, and
//! Ctrl-C handling (the first stops after the current step and cleans up; the second quits).

use std::time::{Duration, Instant};

use ditail::app::interrupt;
use ditail::app::models::describe;
use ditail::app::{Cell, Sink, Stage, Written};
use ditail::pipeline::{Phase, Progress};
use image::RgbImage;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Installs the Ctrl-C handler (see [`interrupt`]).
pub fn install_cancel_handler() {
    interrupt::install();
}

/// Whether Ctrl-C was pressed.
pub fn cancelled() -> bool {
    interrupt::requested()
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
    pub fn steps<'a>(&'a self, label: impl Into<String>) -> impl FnMut(Progress) -> bool + 'a {
        let label = label.into();
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

/// A phase's progress bar (see [`Ui::steps`]).
type StepsBar<'a> = Box<dyn FnMut(Progress) -> bool + 'a>;
/// What a [`Terminal`] does with each result's pixels.
type OnResult<'a> = Box<dyn FnMut(Cell, &RgbImage) + 'a>;

/// The terminal as a job's [`Sink`]: a spinner per loading and decoding, a bar per phase
/// (labelled `source` while inverting, `target` while sampling, `generation_label` while
/// generating), a line per file written; Ctrl-C cancels after the current step.
pub struct Terminal<'a> {
    ui: &'a Ui,
    generation_label: String,
    task: Option<Task>,
    steps: Option<StepsBar<'a>>,
    /// Called with each result's pixels (a cocktail's contact sheet).
    on_result: Option<OnResult<'a>>,
}

impl<'a> Terminal<'a> {
    /// A sink printing to `ui`.
    pub fn new(ui: &'a Ui) -> Self {
        Self {
            ui,
            generation_label: "content".into(),
            task: None,
            steps: None,
            on_result: None,
        }
    }

    /// Names generation bars after `label` (the generating model).
    pub fn generating(mut self, label: impl Into<String>) -> Self {
        self.generation_label = label.into();
        self
    }

    /// Calls `f` with each result's pixels.
    pub fn on_result(mut self, f: impl FnMut(Cell, &RgbImage) + 'a) -> Self {
        self.on_result = Some(Box::new(f));
        self
    }
}

impl Sink for Terminal<'_> {
    fn stage(&mut self, stage: Stage<'_>) {
        let label = match stage {
            Stage::Loading { spec, .. } => format!("loading {}", describe(spec)),
            Stage::Decoding { .. } => "decoding".into(),
        };
        self.task = Some(self.ui.task(label));
    }

    fn stage_done(&mut self) {
        if let Some(task) = self.task.take() {
            task.done(self.ui);
        }
    }

    fn step(&mut self, p: Progress<'_>, _: Cell) -> bool {
        // A new bar for each phase run (the pipeline counts steps from 1).
        if p.step == 1 || self.steps.is_none() {
            let label = match p.phase {
                Phase::Inversion => "source".to_string(),
                Phase::Sampling => "target".to_string(),
                Phase::Generation => self.generation_label.clone(),
            };
            self.steps = Some(Box::new(self.ui.steps(label)));
        }
        (self.steps.as_mut().expect("set above"))(p)
    }

    fn wrote(&mut self, file: Written<'_>) {
        let path = match file {
            Written::Result { cell, path, image } => {
                if let Some(f) = &mut self.on_result {
                    f(cell, image);
                }
                path
            }
            Written::Content { path, .. } | Written::Latents(path) | Written::Noise(path) => path,
        };
        self.ui.info(format!("wrote {}", path.display()));
    }

    fn warn(&mut self, message: &str) {
        self.ui.warn(message);
    }
}
