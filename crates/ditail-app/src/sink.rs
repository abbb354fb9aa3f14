//! How a running job reports: the [`Sink`] a face implements (a terminal's progress bars,
//! the web app's server-sent events, a C callback), and what it is told.

use std::path::Path;

use ditail_pipeline::{ModelSpec, Progress};
use image::RgbImage;

/// Where in a job's grid work happens: a content, a source and, while sampling, a target
/// (indices into [`crate::Job`]'s lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The content.
    pub content: usize,
    /// The source model (inverting, or generating the content).
    pub source: usize,
    /// The target model, once sampling.
    pub target: Option<usize>,
}

/// Work without steps, which a sink may show as a spinner until [`Sink::stage_done`].
#[derive(Clone, Copy, Debug)]
pub enum Stage<'a> {
    /// Loading a model (not kept from an earlier job): the job's label for it and its spec.
    Loading {
        /// The model's label in the job.
        label: &'a str,
        /// What is loaded.
        spec: &'a ModelSpec,
    },
    /// Decoding latents into pixels: a generated content (`cell.target` is `None`) or a
    /// transfer's result.
    Decoding {
        /// Whose.
        cell: Cell,
    },
}

/// A file a job wrote (complete: files are written to a temporary name and renamed).
#[derive(Clone, Copy, Debug)]
pub enum Written<'a> {
    /// A transfer's result.
    Result {
        /// Its cell.
        cell: Cell,
        /// The file.
        path: &'a Path,
        /// Its pixels.
        image: &'a RgbImage,
    },
    /// A content generated from a prompt by a source.
    Content {
        /// Its cell (no target).
        cell: Cell,
        /// The file.
        path: &'a Path,
    },
    /// The inversion and final latents (`--save-latents`).
    Latents(&'a Path),
    /// The inverted noise, decoded (`--save-noise`).
    Noise(&'a Path),
}

/// What a running job tells its face. Only [`Sink::step`] can stop a job (by returning
/// `false`: the job ends with a cancellation after the current step).
pub trait Sink {
    /// A stage without steps begins.
    fn stage(&mut self, stage: Stage<'_>);
    /// The stage begun last ended.
    fn stage_done(&mut self) {}
    /// A step of generating, inverting or sampling `cell` ended; `false` cancels the job.
    fn step(&mut self, progress: Progress<'_>, cell: Cell) -> bool;
    /// `cell`'s content was inverted, or taken from the inversions kept from earlier jobs
    /// (`skipped`: the steps this saved).
    fn inverted(&mut self, cell: Cell, skipped: Option<usize>) {
        let _ = (cell, skipped);
    }
    /// A source generated `cell`'s content from its prompt (decoded, before it inverts it).
    fn content(&mut self, cell: Cell, image: &RgbImage) {
        let _ = (cell, image);
    }
    /// A file was written.
    fn wrote(&mut self, file: Written<'_>);
    /// Something the user should know that does not stop the job.
    fn warn(&mut self, message: &str);
}
