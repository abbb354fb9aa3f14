//! The speed of `ditail eval`'s networks on one backend, for `scripts/bench_eval_reference.py`
//! to put beside PyTorch's: CLIP ViT-L/14 image and text features, DINO ViT-B/8 keys of the
//! last layer, pytorch-fid's InceptionV3 features, each on a batch (8 by default). Median
//! of N timed runs after a warm-up, peak RSS; JSON in `examples/bench.rs`'s format.
//!
//! ```text
//! .venv/bin/python scripts/make_eval_fixtures.py --full-size fixtures-full
//! cargo run --release --example bench_eval -- --weights fixtures-full/eval --json ditail-eval.json
//! .venv/bin/python scripts/bench_eval_reference.py --weights fixtures-full/eval --threads 2 --json torch-eval.json
//! python3 scripts/bench_compare.py ditail-eval.json torch-eval.json
//! ```
//! `--weights` holds the full-size random CLIP (`clip/`) and DINO (`dino/`) the fixture
//! script writes; InceptionV3 gets the hash weights of `tests/common/hash_inception.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use common::measure;
use ditail::eval::nets::load::{load_clip, load_inception, load_vit};
use ditail::models::device::Backend;
use ditail::models::load::hub::HubOptions;

/// The `ditail` binary's allocator and its settings.
#[path = "../src/alloc.rs"]
mod alloc;

/// The hash-weight InceptionV3 of the tests.
#[path = "../tests/common/hash_inception.rs"]
mod hash_inception;

fn main() -> Result<()> {
    alloc::configure();
    let (mut weights, mut runs, mut batch, mut json, mut only) = (
        PathBuf::from("fixtures-full/eval"),
        3usize,
        8usize,
        None,
        Vec::<String>::new(),
    );
    let mut backend = Backend::Cpu;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--weights" => weights = PathBuf::from(value()?),
            "--runs" => runs = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--backend" => backend = value()?.parse()?,
            "--json" => json = Some(value()?),
            "--only" => only = value()?.split(',').map(str::to_string).collect(),
            other => bail!(
                "unknown flag {other} (--weights DIR --runs N --batch N --backend cpu|wgpu|cuda \
                 --only clip_image,clip_text,dino_keys,inception --json FILE)"
            ),
        }
    }
    let wants = |what: &str| only.is_empty() || only.iter().any(|o| o == what);
    let device = backend.device()?;
    let hub = HubOptions::from_env();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ditail eval bench: backend {backend}, {threads} CPU threads, batch {batch}, {runs} timed runs after 1 warm-up"
    );
    let mut results: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut report = |name: &str, (median, times, peak): (f64, Vec<f64>, u64)| {
        println!(
            "{name:<12} median {median:>8.3} s   runs {times:.3?}   peak RSS {:.2} GiB",
            peak as f64 / (1u64 << 30) as f64
        );
        results.insert(
            name.to_string(),
            serde_json::json!({ "median_s": median, "runs_s": times, "peak_rss_bytes": peak }),
        );
    };
    let pixels = |side: usize| {
        Tensor::<4>::random(
            [batch, 3, side, side],
            burn::tensor::Distribution::Uniform(0.0, 1.0),
            &device,
        )
    };
    if wants("clip_image") || wants("clip_text") {
        let clip = load_clip(weights.join("clip").to_str().unwrap(), &device, &hub)?;
        if wants("clip_image") {
            let x = pixels(224);
            report(
                "clip_image",
                measure(runs, || {
                    let _ = clip.model.image_features(x.clone())?.into_data();
                    Ok(())
                })?,
            );
        }
        if wants("clip_text") {
            let ids: Vec<Vec<u32>> = (0..batch)
                .map(|i| {
                    clip.tokenizer
                        .encode(&format!("a photo of a cat number {i}, oil painting"))
                })
                .collect::<Result<_, _>>()?;
            report(
                "clip_text",
                measure(runs, || {
                    let _ = clip.model.text_features(&ids, &device)?.into_data();
                    Ok(())
                })?,
            );
        }
    }
    if wants("dino_keys") {
        let vit = load_vit(weights.join("dino").to_str().unwrap(), &device, &hub)?;
        let x = pixels(224);
        let layer = vit.num_layers() - 1;
        report(
            "dino_keys",
            measure(runs, || {
                let _ = vit.keys(x.clone(), layer)?.into_data();
                Ok(())
            })?,
        );
    }
    if wants("inception") {
        let tmp = std::env::temp_dir().join(format!(
            "ditail-bench-inception-{}.safetensors",
            std::process::id()
        ));
        hash_inception::write_hash_inception(&tmp);
        let net = load_inception(&tmp, &device);
        let _ = std::fs::remove_file(&tmp);
        let net = net?;
        let x = pixels(299);
        report(
            "inception",
            measure(runs, || {
                let _ = net.forward(x.clone())?.into_data();
                Ok(())
            })?,
        );
    }
    if let Some(path) = &json {
        let doc = serde_json::json!({
            "tool": "ditail",
            "backend": backend.to_string(),
            "dtype": "f32",
            "threads": threads,
            "batch": batch,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
