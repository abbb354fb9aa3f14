//! ditail: Diffusion Cocktail, training-free mixing of Stable Diffusion 1.x checkpoints.
//!
//! This root package is the `ditail` command and its web app ([`serve`], a library module
//! so that the fuzz targets drive its router); as a library it re-exports the crates the
//! command is built on: the application layer, [`ditail_app`] as [`app`] (jobs, the runner,
//! outputs), the networks, [`ditail_models`] as [`models`]
//! (with [`models::device`]: choosing a backend at run time), and the method,
//! [`ditail_pipeline`] as [`pipeline`], and the paper's metrics, [`ditail_eval`] as [`eval`].
//!
//! The README's example, a whole transfer in five lines:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ditail::{models::device::Backend, pipeline::*};
//! let (device, opts) = (Backend::Cpu.device()?, Default::default());
//! let (source, target) = (Model::load(&ModelSpec::new("sd15.safetensors"), &device, opts)?, Model::load(&ModelSpec::new("toonyou.safetensors"), &device, opts)?);
//! let inv = invert(&source, &preprocess::load_rgb("photo.jpg".as_ref())?, &InversionSettings::new("a photo of a cat"), &device, &mut |_| true)?;
//! to_rgb(decode(&target, sample(&target, &inv, &SamplingSettings::new("a photo of a cat"), &device, &mut |_| true)?)?)?.save("cat.png")?;
//! # Ok(()) }
//! ```

// The web app's modules name the crates as the binary does (`ditail::app`, ...).
extern crate self as ditail;

pub use ditail_app as app;
pub use ditail_eval as eval;
pub use ditail_models as models;
pub use ditail_pipeline as pipeline;

pub mod serve;
