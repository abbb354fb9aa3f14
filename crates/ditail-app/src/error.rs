//! The application layer's one error type. A refused input says what was refused and
//! names the flag, field or file ([`AppError::Invalid`]); failures while running keep
//! their typed cause from the crates below, under what was being done
//! ([`AppError::Context`]), so a face prints `what: why: why` as one line.

use std::fmt::Display;

use ditail_models::ModelError;
use ditail_pipeline::PipelineError;

/// What went wrong in a job.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// An input refused before anything ran; the message names what it refuses.
    #[error("{0}")]
    Invalid(String),
    /// What was being done when `source` happened.
    #[error("{context}")]
    Context {
        /// What was being done (`loading model x.safetensors`).
        context: String,
        /// What went wrong.
        #[source]
        source: Box<AppError>,
    },
    /// The method (settings, images, cancellation).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A network or its weights.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The metrics (pairing results, scoring).
    #[error(transparent)]
    Eval(#[from] ditail_eval::EvalError),
    /// A file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Writing a PNG.
    #[error(transparent)]
    PngEncoding(#[from] png::EncodingError),
    /// Reading a PNG's text chunks.
    #[error(transparent)]
    PngDecoding(#[from] png::DecodingError),
    /// A record or a JSON Lines manifest.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A CSV manifest.
    #[error(transparent)]
    Csv(#[from] csv::Error),
}

/// The application layer's results.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

impl AppError {
    /// Whether the job stopped because it was cancelled (a client, Ctrl-C, a shutdown).
    pub fn is_cancelled(&self) -> bool {
        match self {
            Self::Pipeline(PipelineError::Cancelled) => true,
            Self::Context { source, .. } => source.is_cancelled(),
            _ => false,
        }
    }
}

/// Whether `e` or one of its causes is a cancellation (for faces that hold errors as
/// `anyhow::Error` or `Box<dyn Error>`).
pub fn is_cancelled(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(app) = e.downcast_ref::<AppError>()
            && app.is_cancelled()
        {
            return true;
        }
        if let Some(PipelineError::Cancelled) = e.downcast_ref::<PipelineError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Says what was being done when an error happened (as `anyhow::Context` does, typed).
pub trait Context<T> {
    /// Wraps the error, if any, under `context`.
    fn context(self, context: impl Display) -> Result<T>;
    /// Wraps the error, if any, under the context `f` makes (only made on error).
    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<AppError>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|e| AppError::Context {
            context: context.to_string(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| AppError::Context {
            context: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

/// A missing value is an invalid input, worded by the context.
impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Display) -> Result<T> {
        self.ok_or_else(|| AppError::Invalid(context.to_string()))
    }

    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| AppError::Invalid(f().to_string()))
    }
}

/// Returns an [`AppError::Invalid`] made with `format!`.
#[macro_export]
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err($crate::AppError::Invalid(format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_print_one_after_another() {
        let io = std::io::Error::other("No space left on device");
        let e = Err::<(), _>(io).context("writing x.png").unwrap_err();
        let chain: Vec<String> =
            std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .map(|e| e.to_string())
            .collect();
        assert_eq!(chain, ["writing x.png", "No space left on device"]);
    }

    #[test]
    fn a_cancellation_is_found_under_contexts() {
        let e = Err::<(), _>(PipelineError::Cancelled)
            .context("sampling")
            .context("a job")
            .unwrap_err();
        assert!(e.is_cancelled() && is_cancelled(&e));
        assert!(!AppError::Invalid("x".into()).is_cancelled());
    }
}
