//! ditail's speed and memory on one backend: U-Net forwards (SD1.5 or SDXL, as the weights
//! are; latents 32x32 and 64x64; batch 1 and 3), VAE decode, CLIP, and a whole Ditail run
//! (invert + sample + decode). Prints the median of N timed runs after a warm-up and the peak memory of each
//! measurement (RSS on the CPU, reset before each one through `/proc/self/clear_refs`), and
//! writes the figures as JSON for `scripts/bench.sh`, which puts them beside diffusers'.
//!
//! ```text
//! cargo run --release --example bench -- --weights fixtures-full/model --backend cpu --json ditail.json
//! ```
//! `--weights` is a diffusers folder (the fixture script's full-size random SD1.5, so that
//! diffusers runs the same weights); without it the networks are randomly initialised.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::FloatDType;
use common::measure;
use ditail::models::device::Backend;
use ditail::models::{
    AddedConditioning, ClipTextConfig, ClipTokenizer, Conditioning, LoadOptions, NoControl,
    StableDiffusion, UNetConfig, VaeConfig,
};
use ditail::pipeline::{
    InversionSettings, Model, ModelSpec, SamplingSettings, decode, invert, sample,
};

/// The `ditail` binary's allocator and its settings.
#[path = "../src/alloc.rs"]
mod alloc;

struct Args {
    weights: Option<String>,
    backend: Backend,
    dtype: FloatDType,
    runs: usize,
    only: Vec<String>,
    ditail_size: u32,
    ditail_steps: usize,
    ditail_runs: usize,
    unet_sides: Vec<usize>,
    batches: Vec<usize>,
    json: Option<String>,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        weights: None,
        backend: Backend::Cpu,
        dtype: FloatDType::F32,
        runs: 3,
        only: Vec::new(),
        ditail_size: 256,
        ditail_steps: 10,
        ditail_runs: 1,
        unet_sides: vec![32, 64],
        batches: vec![1, 3],
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--weights" => a.weights = Some(value()?),
            "--backend" => a.backend = value()?.parse()?,
            "--dtype" => {
                a.dtype = match value()?.as_str() {
                    "f16" => FloatDType::F16,
                    "f32" => FloatDType::F32,
                    other => bail!("--dtype f16|f32, not {other}"),
                }
            }
            "--runs" => a.runs = value()?.parse()?,
            "--only" => a.only = value()?.split(',').map(str::to_string).collect(),
            "--ditail-size" => a.ditail_size = value()?.parse()?,
            "--ditail-steps" => a.ditail_steps = value()?.parse()?,
            "--ditail-runs" => a.ditail_runs = value()?.parse()?,
            "--unet-sides" => a.unet_sides = list(&value()?)?,
            "--batches" => a.batches = list(&value()?)?,
            "--json" => a.json = Some(value()?),
            other => bail!(
                "unknown flag {other} (--weights DIR --backend cpu|wgpu|cuda --dtype f16|f32 --runs N \
                 --only unet,vae,clip,ditail --ditail-size PX --ditail-steps N --ditail-runs N --unet-sides 32,64 --batches 1,3 --json FILE)"
            ),
        }
    }
    Ok(a)
}

fn list(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .with_context(|| format!("`{x}` is not a number"))
        })
        .collect()
}

/// Times `f` `runs` times after one warm-up; returns (median seconds, all, peak RSS bytes).
fn random_model(device: &Device) -> StableDiffusion {
    let (u, v, t) = (
        UNetConfig::sd15(),
        VaeConfig::sd15(),
        ClipTextConfig::sd15(),
    );
    StableDiffusion {
        tokenizer: ClipTokenizer::sd15(),
        text_encoder: t.init(device),
        vae: v.init(device),
        unet: u.init(device),
        unet_config: u,
        vae_config: v,
        text_config: t,
        text_encoder_2: None,
    }
}

pub(crate) fn main() -> Result<()> {
    alloc::configure();
    let args = parse()?;
    let device = args.backend.device()?;
    let opts = LoadOptions { dtype: args.dtype };
    let wants = |what: &str| args.only.is_empty() || args.only.iter().any(|o| o == what);
    let load_start = Instant::now();
    let model = match &args.weights {
        Some(dir) => Model::load(&ModelSpec::new(dir.clone()), &device, opts)?,
        None => {
            if args.dtype != FloatDType::F32 {
                bail!("random initialisation is f32 only; give --weights for f16");
            }
            eprintln!("no --weights: randomly initialised SD1.5 networks");
            Model::from_networks(random_model(&device), "random")
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ditail bench: backend {} dtype {:?}, {threads} CPU threads, {} timed runs after 1 warm-up; load {:.1} s",
        args.backend,
        args.dtype,
        args.runs,
        load_start.elapsed().as_secs_f64()
    );
    let dt = model.dtype();
    let mut results: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut report = |name: String, (median, times, peak): (f64, Vec<f64>, u64)| {
        println!(
            "{name:<28} median {median:>8.3} s   runs {:?}   peak RSS {:.2} GiB",
            times
                .iter()
                .map(|t| (t * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            peak as f64 / (1u64 << 30) as f64
        );
        // DITAIL_KERNEL_TIMES=1: each CPU kernel kind's share of the timed runs, per run
        // (`measure` resets the totals after the warm-up).
        let per_run = times.len() as f64;
        let mut kernels = 0.0;
        for t in ditail::models::kernels::timing::take() {
            let s = t.seconds / per_run;
            kernels += s;
            println!(
                "    {:<18} {:>8.3} s/run  {:>5} calls  {:>6.1} GMAC/s",
                t.kind.name(),
                s,
                (t.calls as f64 / per_run).round(),
                t.macs as f64 / t.seconds.max(1e-9) / 1e9
            );
        }
        if kernels > 0.0 {
            println!(
                "    {:<18} {:>8.3} s/run",
                "the rest (burn)",
                times.iter().sum::<f64>() / per_run - kernels
            );
        }
        results.insert(
            name,
            serde_json::json!({ "median_s": median, "runs_s": times, "peak_rss_bytes": peak }),
        );
    };

    let xl = model.family() == ditail::models::Family::Sdxl;
    if wants("clip") && xl {
        // Both encoders, as the pipeline runs them for one prompt.
        let prompt = "a photo of a cat sitting on a sofa, best quality";
        report(
            "clip".into(),
            measure(args.runs, || {
                model
                    .condition(prompt, [1024, 1024], &device)?
                    .context
                    .into_data();
                Ok(())
            })?,
        );
    } else if wants("clip") {
        let ids: Vec<i64> = model
            .sd()
            .tokenizer
            .encode("a photo of a cat sitting on a sofa, best quality")?
            .into_iter()
            .map(i64::from)
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, 77]), &device);
        report(
            "clip".into(),
            measure(args.runs, || {
                model.sd().text_encoder.forward(ids.clone(), 0)?.into_data();
                Ok(())
            })?,
        );
    }
    if wants("unet") {
        let config = &model.sd().unet_config;
        let normal = burn::tensor::Distribution::Normal(0., 1.);
        let context =
            Tensor::<3>::random([3, 77, config.cross_attention_dim], normal, &device).cast(dt);
        // SDXL's pooled text and sizes (a square image of 8x the latent side).
        let pooled = config
            .projection_class_embeddings_input_dim
            .zip(config.addition_time_embed_dim)
            .map(|(input, t)| input - 6 * t);
        for &side in &args.unet_sides {
            for &batch in &args.batches {
                let x = Tensor::<4>::random(
                    [batch, 4, side, side],
                    burn::tensor::Distribution::Normal(0., 1.),
                    &device,
                )
                .cast(dt);
                let px = (8 * side) as f32;
                let ctx = Conditioning {
                    context: context.clone().narrow(0, 0, batch),
                    added: pooled.map(|p| AddedConditioning {
                        text_embeds: Tensor::<2>::random([batch, p], normal, &device).cast(dt),
                        time_ids: Tensor::<2>::from_data(
                            TensorData::new([px, px, 0.0, 0.0, px, px].repeat(batch), [batch, 6]),
                            &device,
                        )
                        .cast(dt),
                    }),
                };
                report(
                    format!("unet {side}x{side} batch {batch}"),
                    measure(args.runs, || {
                        model
                            .sd()
                            .unet
                            .forward(x.clone(), 981.0, ctx.clone(), &mut NoControl)
                            .into_data();
                        Ok(())
                    })?,
                );
            }
        }
    }
    if wants("vae") {
        let side = args.ditail_size as usize / 8;
        let z = Tensor::<4>::random(
            [1, 4, side, side],
            burn::tensor::Distribution::Normal(0., 1.),
            &device,
        )
        .cast(dt);
        report(
            format!("vae decode {}px", args.ditail_size),
            measure(args.runs, || {
                model.sd().vae.decode(z.clone()).into_data();
                Ok(())
            })?,
        );
    }
    if wants("ditail") {
        let side = args.ditail_size;
        let img = image::RgbImage::from_fn(side, side, |x, y| {
            image::Rgb([(x * 255 / side) as u8, (y * 255 / side) as u8, 128])
        });
        let mut inv_settings = InversionSettings::new("a photo of a cat");
        (inv_settings.steps, inv_settings.size) = (args.ditail_steps, side);
        let mut spl = SamplingSettings::new("a photo of a cat");
        spl.steps = args.ditail_steps;
        report(
            format!("ditail {side}px {0}+{0} steps", args.ditail_steps),
            measure(args.ditail_runs, || {
                let inv = invert(&model, &img, &inv_settings, &device, &mut |_| true)?;
                let fin = sample(&model, &inv, &spl, &device, &mut |_| true)?;
                decode(&model, fin)?.into_data();
                Ok(())
            })?,
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "tool": "ditail",
            "backend": args.backend.to_string(),
            "dtype": format!("{:?}", args.dtype).to_lowercase(),
            "threads": threads,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
