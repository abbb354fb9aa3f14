//! Peak memory while loading a checkpoint: loads a model as the CLI does (a single file, a
//! diffusers folder or a hub id, SD1.5's configurations for single files) on the CPU and
//! prints the process's peak resident memory (`VmHWM`) against the file size and the size
//! of the loaded parameters.
//!
//! ```text
//! .venv/bin/python scripts/make_full_single_file.py fixtures-full   # a 2 GB f16 SD1.5 file
//! cargo run --release --example bench_load -- fixtures-full/sd15-random.fp16.safetensors [f32|f16]
//! ```
//! Linux only (reads `/proc/self/status`). A loader that held the file's tensors and the
//! model at once would peak at about file size + parameter size; ditail maps the file and
//! converts tensor by tensor, so the peak should be about the parameter size.

mod common;

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn_store::ModuleSnapshot;
use common::status_bytes;
use ditail::models::LoadOptions;
use ditail::pipeline::{Model, ModelSpec};

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn param_bytes<M: ModuleSnapshot>(m: &M, bytes_per: u64) -> u64 {
    m.collect(None, None, true)
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64 * bytes_per)
        .sum()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let spec = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bench_load MODEL [f32|f16]"))?;
    let (dtype, bytes_per) = match args.next().as_deref() {
        None | Some("f32") => (FloatDType::F32, 4),
        Some("f16") => (FloatDType::F16, 2),
        Some(other) => anyhow::bail!("dtype must be f32 or f16, not {other}"),
    };
    let file_size = std::fs::metadata(&spec)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len());
    let device = Device::flex();
    let before = status_bytes("VmHWM").unwrap_or(0);
    let start = Instant::now();
    let model = Model::load(&ModelSpec::new(&spec), &device, LoadOptions { dtype })?;
    let secs = start.elapsed().as_secs_f64();
    let peak = status_bytes("VmHWM").unwrap_or(0);
    let params = param_bytes(&model.sd().unet, bytes_per)
        + param_bytes(&model.sd().vae, bytes_per)
        + param_bytes(&model.sd().text_encoder, bytes_per);
    println!("model            {spec}");
    println!("file size        {:.2} GiB", gib(file_size));
    println!("parameters       {:.2} GiB ({dtype:?})", gib(params));
    println!("load time        {secs:.1} s (CPU, flex)");
    println!("RSS before load  {:.2} GiB", gib(before));
    println!("peak RSS (VmHWM) {:.2} GiB", gib(peak));
    println!(
        "after load       RssAnon {:.2} GiB, RssFile {:.2} GiB",
        gib(status_bytes("RssAnon").unwrap_or(0)),
        gib(status_bytes("RssFile").unwrap_or(0))
    );
    if params > 0 {
        println!(
            "peak / parameters        {:.2}",
            peak as f64 / params as f64
        );
    }
    if file_size > 0 {
        println!(
            "peak / (file + parameters) {:.2}",
            peak as f64 / (file_size + params) as f64
        );
    }
    Ok(())
}
