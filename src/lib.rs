//! ditail: Diffusion Cocktail, training-free mixing of Stable Diffusion 1.x checkpoints.
//!
//! This root package holds what the command line, the examples and the integration tests
//! share: choosing a compute backend at run time. The networks are in
//! [`ditail_models`], re-exported as [`models`].

pub mod backend;

pub use ditail_models as models;
pub use ditail_pipeline as pipeline;
