//! Rust errors as the package's exception classes. The classes are defined in Python
//! (`ditail/errors.py`), where an invalid input can be both a `ditail.DitailError` and a
//! `ValueError`; this module picks the class from the error's typed cause and raises it with
//! the whole chain of messages (`loading model x.safetensors: cannot read ...`).

use ditail_app::AppError;
use ditail_app::naming::{Naming, reword};
use ditail_models::ModelError;
use ditail_pipeline::PipelineError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Which exception class of `ditail.errors` an error is.
fn class_of(e: &AppError) -> &'static str {
    match e {
        AppError::Context { source, .. } => class_of(source),
        AppError::Invalid(_) => "InvalidInputError",
        AppError::Pipeline(p) => match p {
            PipelineError::Cancelled => "CancelledError",
            PipelineError::Settings(_)
            | PipelineError::Image { .. }
            | PipelineError::ImageTooLarge { .. }
            | PipelineError::InversionMismatch { .. }
            | PipelineError::LatentsFile { .. }
            | PipelineError::Embedding { .. } => "InvalidInputError",
            PipelineError::Model(m) => model_class(m),
            _ => "DitailError",
        },
        AppError::Model(m) => model_class(m),
        _ => "DitailError",
    }
}

fn model_class(e: &ModelError) -> &'static str {
    match e {
        ModelError::UnknownBackend(_)
        | ModelError::BackendNotCompiled { .. }
        | ModelError::NoDevice { .. }
        | ModelError::NoSuchDevice { .. } => "DeviceError",
        ModelError::InvalidInput { .. } => "InvalidInputError",
        _ => "ModelError",
    }
}

/// The error and its causes as one line, as the command line prints them, with the
/// settings named by their keyword arguments (`--inv-steps 4` -> `inv_steps 4`).
pub fn message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // `#[error(transparent)]` wrappers repeat their cause's text.
        if !out.ends_with(&text) {
            out += ": ";
            out += &text;
        }
        next = cause.source();
    }
    reword(&out, Naming::Keywords)
}

/// `e` as the exception of its class.
pub fn to_py(e: AppError) -> PyErr {
    Python::attach(|py| raise(py, class_of(&e), &message(&e)))
}

/// An exception of class `name` of `ditail.errors` with `message`.
pub fn raise(py: Python<'_>, name: &str, message: &str) -> PyErr {
    let class = py
        .import("ditail.errors")
        .and_then(|m| m.getattr(name))
        .and_then(|class| class.call1((message,)));
    match class {
        Ok(exception) => PyErr::from_value(exception),
        // The extension imported without its package (a broken install): still an error.
        Err(_) => PyRuntimeError::new_err(message.to_string()),
    }
}

/// A `ditail.InvalidInputError` (also a `ValueError`) with `message`.
pub fn invalid(py: Python<'_>, message: &str) -> PyErr {
    raise(py, "InvalidInputError", message)
}

/// Converts the crates' results for `?` in the module's functions.
pub trait IntoPy<T> {
    /// The result with its error as a Python exception.
    fn py(self) -> PyResult<T>;
}

impl<T, E: Into<AppError>> IntoPy<T> for Result<T, E> {
    fn py(self) -> PyResult<T> {
        self.map_err(|e| to_py(e.into()))
    }
}
