//! `ditail._native`: the extension module under the `ditail` Python package
//! (`crates/ditail-py/python/ditail`). It holds loaded models and inversions and runs the
//! method's three long calls (invert, sample, generate) and the metrics (evaluate) with the
//! GIL released; the Python package turns PIL images and numpy arrays into the RGB bytes
//! this module takes, fills in the defaults it reads from `settings::defaults` (the
//! application layer's, so one source of defaults serves every face), and draws progress
//! bars.
//!
//! Everything is checked by the application layer's and the pipeline's own rules (the
//! settings' ranges, the image's size, an inversion's fit with a target); failures become
//! the package's exception classes (`errors`).

mod errors;
mod eval;
mod image;
mod model;
mod progress;
mod run;
mod settings;

use pyo3::prelude::*;

/// The module `ditail._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::Model>()?;
    m.add_class::<run::Inversion>()?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add_function(wrap_pyfunction!(model::devices, m)?)?;
    m.add_function(wrap_pyfunction!(run::invert, m)?)?;
    m.add_function(wrap_pyfunction!(run::sample, m)?)?;
    m.add_function(wrap_pyfunction!(run::generate, m)?)?;
    m.add_function(wrap_pyfunction!(run::load_inversion, m)?)?;
    m.add_function(wrap_pyfunction!(image::read_image, m)?)?;
    m.add_function(wrap_pyfunction!(eval::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(settings::defaults, m)?)?;
    Ok(())
}
