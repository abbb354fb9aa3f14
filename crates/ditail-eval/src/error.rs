//! The evaluation's errors: each names the file, folder or value at fault.

use std::path::PathBuf;

use ditail_models::ModelError;
use ditail_pipeline::PipelineError;

/// What can go wrong in `ditail eval`.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Loading or running a network.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Reading an image.
    #[error(transparent)]
    Image(#[from] PipelineError),
    /// A folder or file that cannot be used as given.
    #[error("{path}: {reason}")]
    Input {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Results that cannot be paired with content images or prompts.
    #[error("{0}")]
    Pairing(String),
    /// Too few images for a statistic.
    #[error("{0}")]
    TooFew(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, EvalError>;
