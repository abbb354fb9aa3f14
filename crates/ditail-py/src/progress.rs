//! Progress and cancellation while a long call runs without the GIL. After every step the
//! call takes the GIL back for a moment: it lets Python handle pending signals (Ctrl+C
//! raises `KeyboardInterrupt` there), then calls the callback, if any, with
//! `(stage, step, total, preview)`. A raised exception or a callback's `False` ends the call
//! after the current step; the exception is raised again once the GIL is back (a `False`
//! becomes `ditail.CancelledError`).

use ditail_app::preview::latents_to_rgb;
use ditail_pipeline::{Phase, Progress};
use image::RgbImage;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::image::to_python;

/// A long call's link back to Python.
pub struct Bridge {
    callback: Option<Py<PyAny>>,
    /// Whether the callback takes a preview image (projected from the latents: a read back
    /// from the device each step, skipped when nobody looks).
    previews: bool,
    /// What stopped the call, raised when it returns.
    error: Option<PyErr>,
}

impl Bridge {
    /// A bridge to `callback` (`None`: only signals are checked).
    pub fn new(callback: Option<Py<PyAny>>, previews: bool) -> Self {
        Self {
            callback,
            previews,
            error: None,
        }
    }

    /// After a step: `false` stops the call.
    pub fn step(&mut self, p: Progress<'_>) -> bool {
        let preview = match (self.previews && self.callback.is_some(), p.preview) {
            (true, Some(latents)) => latents_to_rgb(latents).ok(),
            _ => None,
        };
        let stage = match p.phase {
            Phase::Inversion => "inversion",
            Phase::Sampling => "sampling",
            Phase::Generation => "generation",
        };
        self.report(stage, p.step, p.total, preview)
    }

    /// After `step` of `total` of `stage` (with its preview): `false` stops the call.
    pub fn report(
        &mut self,
        stage: &str,
        step: usize,
        total: usize,
        preview: Option<RgbImage>,
    ) -> bool {
        Python::attach(|py| {
            if let Err(e) = py.check_signals() {
                self.error = Some(e);
                return false;
            }
            let Some(callback) = &self.callback else {
                return true;
            };
            let preview = preview.map(|img| to_python(py, &img));
            match callback.call1(py, (stage, step, total, preview)) {
                // Only an explicit False cancels (None, the usual return, goes on).
                Ok(r) => !matches!(r.extract::<bool>(py), Ok(false)),
                Err(e) => {
                    self.error = Some(e);
                    false
                }
            }
        })
    }

    /// The call's result: the exception that stopped it, if one did, else its own error
    /// as the package's exception.
    pub fn finish<T>(self, result: ditail_app::Result<T>) -> PyResult<T> {
        match (self.error, result) {
            (Some(e), _) => Err(e),
            (None, r) => r.map_err(to_py),
        }
    }
}
