//! ditail's application layer, under every face (the command line, the web app, the C
//! API): a checked [`Job`] (contents, sources, targets, Ditail's settings, outputs; every
//! check that needs no weights made when it is built, the family's defaults filled in),
//! one [`Runner`] that runs any job with one model cache and one inversion cache and
//! reports through a [`Sink`], and the files a job writes with their records.
//!
//! A face turns its input (flags, JSON, C structs) into [`options`] and a [`Job`], and its
//! output (a terminal, server-sent events, callbacks) into a [`Sink`].

pub mod cache;
pub mod checks;
mod error;
pub mod eval;
pub mod interrupt;
pub mod job;
pub mod manifest;
pub mod models;
pub mod naming;
pub mod options;
pub mod output;
pub mod preview;
pub mod record;
pub mod runner;
pub mod sink;

pub use cache::Budget;
pub use error::{AppError, Context, Result, is_cancelled};
pub use job::{Content, ContentArg, ContentKind, Grid, Job, JobModel, Outputs};
pub use options::{DitailOptions, GenerationOptions, ModelOptions};
pub use runner::Runner;
pub use sink::{Cell, Sink, Stage, Written};
