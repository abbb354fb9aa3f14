//! Runs one diffusers-format model's components on tensors read from a safetensors file and
//! writes their outputs to another, so anyone can check a model against diffusers.
//!
//! ```text
//! cargo run --release --example components -- --model DIR --inputs IN --out OUT [--backend cpu|wgpu]
//! ```
//!
//! Inputs present decide what runs (see `ditail_models::components`): `input_ids` ->
//! `text_embeddings` (an SDXL folder also needs `input_ids_2`, and adds
//! `pooled_text_embeds`); `image` -> `posterior_mean`; `latents` -> `decoded`; `sample` +
//! `timestep` + `encoder_hidden_states` (SDXL: + `text_embeds` + `time_ids`) ->
//! `noise_pred`. Outputs are f32.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ditail::models::LoadOptions;
use ditail::models::device::Backend;
use ditail::models::tensor_file::{read_tensors, write_tensors};
use ditail_golden::run_components;

struct Args {
    model: PathBuf,
    inputs: PathBuf,
    out: PathBuf,
    backend: Backend,
}

const USAGE: &str = "usage: components --model DIR --inputs IN.safetensors --out OUT.safetensors [--backend cpu|wgpu|cuda]";

fn parse_args() -> Result<Args> {
    let (mut model, mut inputs, mut out, mut backend) = (None, None, None, Backend::Cpu);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--inputs" => inputs = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--backend" => backend = value()?.parse()?,
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(Args {
        model: model.context(USAGE)?,
        inputs: inputs.context(USAGE)?,
        out: out.context(USAGE)?,
        backend,
    })
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let device = args.backend.device()?;
    let inputs = read_tensors(&args.inputs)
        .with_context(|| format!("reading inputs {}", args.inputs.display()))?;
    let outputs = run_components(&args.model, &inputs, &device, LoadOptions::default())
        .with_context(|| format!("running the components of {}", args.model.display()))?;
    if outputs.is_empty() {
        bail!(
            "{} holds none of input_ids, image, latents, or sample+timestep+encoder_hidden_states: nothing to run",
            args.inputs.display()
        );
    }
    write_tensors(&args.out, &outputs, None)
        .with_context(|| format!("writing {}", args.out.display()))?;
    for (name, data) in &outputs {
        eprintln!("{name}: {:?}", data.shape());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
