//! The method's long calls: invert a content with a source, sample an inversion with a
//! target, generate from a prompt. Each builds its settings from the application layer's
//! options (the same defaults, checks and family sizes as `ditail transfer`), runs with the
//! GIL released, and decodes its result to RGB as the command line does, so the same
//! models and settings give the same pixels on every face.

use std::path::PathBuf;
use std::sync::Arc;

use ditail_app::Context;
use ditail_pipeline::{decode, generate as pipeline_generate, latents, to_rgb};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::IntoPy;
use crate::image::{Pixels, from_python, to_python};
use crate::model::Model;
use crate::progress::Bridge;
use crate::settings::{ditail_options, generation_options};

/// A content image inverted by a source model: the latents of every inversion timestep,
/// reusable for any number of targets (and saved to, or loaded from, a latents file).
#[pyclass(frozen, module = "ditail._native")]
pub struct Inversion {
    inv: Arc<ditail_pipeline::Inversion>,
}

#[pymethods]
impl Inversion {
    /// The source model that inverted it.
    #[getter]
    fn source(&self) -> &str {
        &self.inv.meta().source
    }

    /// The inversion prompt.
    #[getter]
    fn prompt(&self) -> &str {
        &self.inv.meta().settings.prompt
    }

    /// The number of DDIM inversion steps.
    #[getter]
    fn steps(&self) -> usize {
        self.inv.meta().settings.steps
    }

    /// `(width, height)` of the working image, in pixels.
    #[getter]
    fn size(&self) -> (u32, u32) {
        self.inv.pixel_size()
    }

    /// Writes the latents file (`ditail transfer --save-latents`' format; written to a
    /// temporary name and renamed).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| latents::save(&path, &self.inv, None))
            .with_context(|| format!("saving {}", path.display()))
            .py()
    }

    fn __repr__(&self) -> String {
        let (w, h) = self.size();
        format!(
            "<ditail.Inversion of a {w} x {h} image by {}, {} steps>",
            self.source(),
            self.steps()
        )
    }
}

/// Reads a latents file onto `model`'s device.
#[pyfunction]
pub fn load_inversion(py: Python<'_>, path: PathBuf, model: &Model) -> PyResult<Inversion> {
    let (inv, _) = py
        .detach(|| latents::load(&path, &model.compute.device))
        .py()?;
    Ok(Inversion { inv: Arc::new(inv) })
}

/// Inverts `image` with `model` (settings: `ditail.invert`'s keyword arguments).
#[pyfunction]
#[pyo3(signature = (model, image, prompt, settings=None, callback=None, previews=false))]
pub fn invert(
    py: Python<'_>,
    model: &Model,
    image: &Bound<'_, PyAny>,
    prompt: &str,
    settings: Option<&Bound<'_, PyDict>>,
    callback: Option<Py<PyAny>>,
    previews: bool,
) -> PyResult<Inversion> {
    let options = ditail_options(settings)?;
    let (mut inversion, _) = options.settings(prompt).py()?;
    if options.size.is_none() {
        inversion.size = model.model.family().native_size();
    }
    let rgb = from_python(image)?;
    let mut bridge = Bridge::new(callback, previews);
    let result = py.detach(|| {
        ditail_pipeline::invert(
            &model.model,
            &rgb,
            &inversion,
            &model.compute.device,
            &mut |p| bridge.step(p),
        )
        .context("inverting")
    });
    let inv = bridge.finish(result)?;
    Ok(Inversion { inv: Arc::new(inv) })
}

/// Samples `inversion` with `model` under Ditail's injection and decodes the result
/// (settings: `ditail.sample`'s keyword arguments).
#[pyfunction]
#[pyo3(signature = (model, inversion, prompt, settings=None, callback=None, previews=false))]
pub fn sample<'py>(
    py: Python<'py>,
    model: &Model,
    inversion: &Inversion,
    prompt: &str,
    settings: Option<&Bound<'py, PyDict>>,
    callback: Option<Py<PyAny>>,
    previews: bool,
) -> PyResult<Pixels<'py>> {
    let options = ditail_options(settings)?;
    let (_, sampling) = options.settings(prompt).py()?;
    let mut bridge = Bridge::new(callback, previews);
    let result = py.detach(|| {
        let device = &model.compute.device;
        let inv = inversion.inv.on_device(device);
        let latents = ditail_pipeline::sample(&model.model, &inv, &sampling, device, &mut |p| {
            bridge.step(p)
        })
        .context("sampling")?;
        Ok(to_rgb(decode(&model.model, latents)?)?)
    });
    let img = bridge.finish(result)?;
    Ok(to_python(py, &img))
}

/// Generates an image from `prompt` with `model` (settings: `ditail.generate`'s keyword
/// arguments).
#[pyfunction]
#[pyo3(signature = (model, prompt, seed, settings=None, callback=None, previews=false))]
pub fn generate<'py>(
    py: Python<'py>,
    model: &Model,
    prompt: &str,
    seed: u64,
    settings: Option<&Bound<'py, PyDict>>,
    callback: Option<Py<PyAny>>,
    previews: bool,
) -> PyResult<Pixels<'py>> {
    let options = generation_options(settings)?;
    options.check().py()?;
    let mut bridge = Bridge::new(callback, previews);
    let result = py.detach(|| {
        let latents = pipeline_generate(
            &model.model,
            &options.settings(prompt, seed, model.model.family()),
            &model.compute.device,
            &mut |p| bridge.step(p),
        )
        .context("generating")?;
        Ok(to_rgb(decode(&model.model, latents)?)?)
    });
    let img = bridge.finish(result)?;
    Ok(to_python(py, &img))
}
