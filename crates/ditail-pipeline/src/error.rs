//! The pipeline crate's error type.

use std::path::PathBuf;

/// Errors of the Ditail pipeline: invalid settings (raised before any network runs), bad
/// inputs, mismatched inversions, and errors from the models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A setting is out of range or settings contradict each other.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// An image could not be read or decoded.
    #[error("cannot read image {path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// An image's header claims more pixels than ditail decodes
    /// ([`crate::preprocess::MAX_IMAGE_PIXELS`]).
    #[error(
        "image {path} is {width} x {height} pixels, more than the {max} ditail reads (a \
         decompression bomb or a very large photo); scale it down first"
    )]
    ImageTooLarge {
        /// The file.
        path: PathBuf,
        /// Its width in its header.
        width: u32,
        /// Its height in its header.
        height: u32,
        /// The limit.
        max: u64,
    },
    /// A saved inversion does not fit the requested run.
    #[error("inversion {what} mismatch: {reason}")]
    InversionMismatch {
        /// What differs, e.g. "step count".
        what: &'static str,
        /// The two values.
        reason: String,
    },
    /// A latents file is malformed.
    #[error("{path}: {reason}")]
    LatentsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The latents (or the decoded image) became NaN or infinite during a run: half
    /// precision overflowed, or the weights are broken. Raised at the step it happened,
    /// instead of writing a black image.
    #[error(
        "NaN or infinite values appeared at {phase} step {step} of {total} with model {model} \
         ({dtype}), so no image was written: {hint}"
    )]
    NonFiniteLatents {
        /// `inversion`, `sampling`, `generation` or `VAE decoding`.
        phase: &'static str,
        /// The step (1-based) after which they were found.
        step: usize,
        /// Steps in the phase.
        total: usize,
        /// The model that ran the step.
        model: String,
        /// The float type it ran in.
        dtype: String,
        /// What to do about it.
        hint: String,
    },
    /// A textual-inversion embedding cannot be read or does not fit the model.
    #[error("embedding {name} ({path}): {reason}")]
    Embedding {
        /// Its name in prompts (the file name without extension).
        name: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The caller cancelled the run between two steps.
    #[error("cancelled")]
    Cancelled,
    /// An error from the networks or their loading.
    #[error(transparent)]
    Model(#[from] ditail_models::ModelError),
}

/// Shorthand for results in this crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
