//! The full-size checks: the real SD1.5 (and SDXL) configurations with random weights (3.4 GB, made by
//! `scripts/make_fixtures.py --full-size fixtures-full`, not committed) against diffusers.
//!
//! Ignored by default because it needs those files and minutes of CPU. Run it with
//! `cargo test --release --test full_size -- --ignored --nocapture`
//! (set `DITAIL_FULL_FIXTURES` to use another folder than `fixtures-full/`).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use common::{
    SDXL_TEXT_INPUTS, SDXL_TEXT_OUTPUTS, assert_close, assert_sites, check_components, cpu,
};
use ditail::models::LoadOptions;
use ditail::models::hook::{Recorder, Site};
use ditail::models::load::load_unet;
use ditail::models::tensor_file::read_tensors;

/// Relative tolerance, as for the tiny models.
const TOL: f32 = 1e-4;

fn root() -> PathBuf {
    std::env::var_os("DITAIL_FULL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures-full"))
}

#[test]
#[ignore = "needs the 3.4 GB full-size fixtures and minutes of CPU; see the module doc"]
fn full_size_sd15_matches_diffusers() {
    let root = root();
    let model = root.join("model");
    let golden = |f: &str| read_tensors(&root.join("golden").join(f)).unwrap();
    let device = cpu();

    let g = golden("text.safetensors");
    let start = Instant::now();
    check_components(
        "SD1.5",
        &model,
        &g,
        &["input_ids"],
        &["text_embeddings", "text_embeddings_penultimate"],
        LoadOptions::default(),
        TOL,
    );
    eprintln!("CLIP (load + 2 forwards): {:.1?}", start.elapsed());

    let g = golden("vae.safetensors");
    let start = Instant::now();
    check_components(
        "SD1.5",
        &model,
        &g,
        &["image", "latents"],
        &["posterior_mean", "decoded"],
        LoadOptions::default(),
        TOL,
    );
    eprintln!("VAE (load + encode + decode): {:.1?}", start.elapsed());

    let start = Instant::now();
    let (unet, _) = load_unet(&model.join("unet"), &device, LoadOptions::default()).unwrap();
    eprintln!("U-Net load: {:.1?}", start.elapsed());
    let g = golden("unet_square.safetensors");
    let t = g["timestep"]
        .clone()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()[0];
    let mut rec = Recorder::sites(Site::ditail_sites());
    let start = Instant::now();
    let out = unet
        .forward(
            Tensor::from_data(g["sample"].clone(), &device),
            t,
            Tensor::from_data(g["encoder_hidden_states"].clone(), &device),
            &mut rec,
        )
        .into_data();
    eprintln!("U-Net forward (batch 3, 32x32): {:.1?}", start.elapsed());
    let rel = assert_close("noise_pred", &out, &g["noise_pred"], TOL);
    eprintln!("noise_pred: rel err {rel:e}");
    assert_sites("full-size", &rec, &g, "site.", TOL);
}

/// SDXL 1.0 base's real configurations with random weights (fp16 files, ~7 GB, made by
/// `scripts/make_sdxl_fixtures.py --full-size fixtures-full` into `fixtures-full/sdxl`),
/// against diffusers: both text encoders with the pooled projection, the VAE, and the
/// 2.6 B-parameter U-Net with SDXL's Ditail sites. One network is in memory at a time (the
/// U-Net alone is 10.3 GB in f32).
///
/// `cargo test --release --test full_size full_size_sdxl -- --ignored --nocapture`
#[test]
#[ignore = "needs the 7 GB full-size SDXL fixtures and minutes of CPU; see the doc"]
fn full_size_sdxl_matches_diffusers() {
    use ditail::models::{AddedConditioning, Conditioning};
    let root = root().join("sdxl");
    let model = root.join("model");
    let golden = |f: &str| read_tensors(&root.join("golden").join(f)).unwrap();
    let device = cpu();

    let g = golden("text.safetensors");
    let start = Instant::now();
    check_components(
        "SDXL",
        &model,
        &g,
        SDXL_TEXT_INPUTS,
        SDXL_TEXT_OUTPUTS,
        LoadOptions::default(),
        TOL,
    );
    eprintln!(
        "CLIP ViT-L + bigG (load + forwards): {:.1?}",
        start.elapsed()
    );

    check_components(
        "SDXL",
        &model,
        &golden("vae.safetensors"),
        &["image", "latents"],
        &["posterior_mean", "decoded"],
        LoadOptions::default(),
        TOL,
    );

    let start = Instant::now();
    let (unet, _) = load_unet(&model.join("unet"), &device, LoadOptions::default()).unwrap();
    eprintln!("U-Net load: {:.1?}", start.elapsed());
    let g = golden("unet.safetensors");
    let t = g["timestep"]
        .clone()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()[0];
    let sites = Site::ditail_sites_xl();
    let mut rec = Recorder::sites(sites);
    let cond = Conditioning {
        context: Tensor::from_data(g["encoder_hidden_states"].clone(), &device),
        added: Some(AddedConditioning {
            text_embeds: Tensor::from_data(g["text_embeds"].clone(), &device),
            time_ids: Tensor::from_data(g["time_ids"].clone(), &device),
        }),
    };
    let start = Instant::now();
    let out = unet
        .forward(
            Tensor::from_data(g["sample"].clone(), &device),
            t,
            cond,
            &mut rec,
        )
        .into_data();
    eprintln!("U-Net forward (batch 1, 32x32): {:.1?}", start.elapsed());
    let rel = assert_close("noise_pred", &out, &g["noise_pred"], TOL);
    eprintln!("noise_pred: rel err {rel:e}");
    common::assert_these_sites("full-size SDXL", &sites, &rec, &g, "site.", TOL);
}
