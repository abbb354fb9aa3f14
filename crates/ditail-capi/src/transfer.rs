//! `ditail_transfer_file`: a whole transfer as the `ditail transfer` command makes it, through
//! the application layer (`ditail_app`): the same checks before anything loads (families,
//! timesteps, embeddings, image and mask shapes, the output's folder), the same defaults
//! (the size of the target's family), the same PNG with the same metadata, written
//! atomically. The lower-level calls (`ditail_invert`, `ditail_sample`, ...) stay for
//! programs that keep inversions or models themselves.

use std::ffi::{c_char, c_void};
use std::path::Path;

use ditail_app::{Budget, Cell, ContentArg, DitailOptions, Job, Runner, Sink, Stage, Written};
use ditail_pipeline::Progress;
use ditail_pipeline::settings::DEFAULT_NEGATIVE;

use crate::api::{CONTEXTS, Context, ProgressFn, progress_fn};
use crate::error::{Result, guard};
use crate::settings::{
    InversionSettings, ModelSpec, SamplingSettings, opt_str, read_versioned, req_str,
};

/// The C callback as a job's sink (warnings have no C channel: they are dropped).
struct Callback<F: FnMut(Progress) -> bool>(F);

impl<F: FnMut(Progress) -> bool> Sink for Callback<F> {
    fn stage(&mut self, _: Stage<'_>) {}

    fn step(&mut self, progress: Progress<'_>, _: Cell) -> bool {
        (self.0)(progress)
    }

    fn wrote(&mut self, _: Written<'_>) {}

    fn warn(&mut self, _: &str) {}
}

/// Ditail's options from the two C settings structs: what the command's flags would be.
fn options(inversion: &InversionSettings, sampling: &SamplingSettings) -> Result<DitailOptions> {
    // SAFETY: (every string) the header's contract, NULL or NUL-terminated.
    let text = |ptr, arg| -> Result<Option<String>> {
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        Ok(unsafe { opt_str(ptr, arg) }?.map(str::to_string))
    };
    Ok(DitailOptions {
        negative_prompt: text(sampling.negative_prompt, "sampling->negative_prompt")?
            .unwrap_or_else(|| DEFAULT_NEGATIVE.to_string()),
        inv_prompt: text(inversion.prompt, "inversion->prompt")?,
        inv_negative_prompt: text(inversion.negative_prompt, "inversion->negative_prompt")?,
        alpha: inversion.alpha,
        beta: inversion.beta,
        omega: sampling.omega,
        inv_steps: inversion.steps as usize,
        steps: sampling.steps as usize,
        conv_ratio: sampling.conv_ratio,
        attn_ratio: sampling.attn_ratio,
        mask: text(sampling.mask, "sampling->mask")?.unwrap_or_else(|| "full".into()),
        no_injection: sampling.no_injection,
        sites: None,
        size: (inversion.size != 0).then_some(inversion.size),
    })
}

/// Transfers the content image at `image_path` from `source` to `target` and writes the
/// result to `output_path` (a `.png`), exactly as `ditail transfer` does: the same pixels
/// and the same file, its settings recorded in it (A1111 `parameters` and ditail's JSON).
/// Everything is checked before a model loads. `source` inverts with its own LoRAs (the
/// command gives a source none); `inversion->prompt` NULL takes the sampling prompt;
/// `inversion->size` 0 takes the target's family's size (512 for SD1.x, 1024 for SDXL).
/// The context keeps the last model it loaded here for the next call.
///
/// # Safety
/// `ctx`, `source`, `target`, `inversion`, `sampling` are NULL or valid (the structs of
/// their `struct_size`, with NULL or NUL-terminated strings); the paths are NULL or
/// NUL-terminated. `user_data` is only passed to `progress`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ditail_transfer_file(
    ctx: *const Context,
    source: *const ModelSpec,
    target: *const ModelSpec,
    image_path: *const c_char,
    inversion: *const InversionSettings,
    sampling: *const SamplingSettings,
    output_path: *const c_char,
    progress: ProgressFn,
    user_data: *mut c_void,
) -> crate::Status {
    guard(|| {
        let ctx = CONTEXTS.get(ctx.addr(), "ctx")?;
        // SAFETY: the caller's contract.
        let source = unsafe { read_versioned(source, "source") }?.to_pipeline()?;
        // SAFETY: the header's contract: NULL or a struct of its `struct_size`.
        let target = unsafe { read_versioned(target, "target") }?.to_pipeline()?;
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let image = unsafe { req_str(image_path, "image_path") }?;
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let output = unsafe { req_str(output_path, "output_path") }?;
        // SAFETY: the header's contract: NULL or a struct of its `struct_size`.
        let inversion = unsafe { read_versioned(inversion, "inversion") }?;
        // SAFETY: the header's contract: NULL or a struct of its `struct_size`.
        let sampling = unsafe { read_versioned(sampling, "sampling") }?;
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let prompt = unsafe { req_str(sampling.prompt, "sampling->prompt") }?;
        let options = options(&inversion, &sampling)?;
        let compute = &ctx.compute.selected;
        let job = Job::transfer(
            ContentArg::Image(Path::new(image)),
            prompt,
            Some(source),
            target,
            &options,
            Path::new(output),
            compute,
            &mut |spec| ditail_app::models::check(spec, compute),
        )?;
        let mut runner = ctx.runner.lock().unwrap_or_else(|e| e.into_inner());
        let runner = runner.get_or_insert_with(|| Runner::new(compute.clone(), Budget::models(1)));
        runner.run(&job, &mut Callback(progress_fn(progress, user_data)))?;
        Ok(())
    })
}
