//! Parity with Hugging Face diffusers: every component of the two tiny random-weight SD1.x
//! models against the golden tensors `scripts/make_fixtures.py` wrote with diffusers.
//!
//! Tolerance: `max |ours - diffusers| <= 1e-4 * max |diffusers|` over whole tensors.

mod common;

use burn::prelude::*;
use common::{
    MODELS, assert_close, assert_prepared_alike, assert_sites, cpu, golden, model_dir, unet_cases,
};
use ditail::models::LoadOptions;
use ditail::models::hook::{Recorder, Site};
use ditail::models::load::load_unet;
use ditail_golden::run_components;

/// Relative tolerance of every comparison in this file.
const TOL: f32 = 1e-4;

#[test]
fn text_encoder_matches_diffusers() {
    for model in MODELS {
        let g = golden(model, "text.safetensors");
        let inputs = [("input_ids".to_string(), g["input_ids"].clone())].into();
        let out =
            run_components(&model_dir(model), &inputs, &cpu(), LoadOptions::default()).unwrap();
        for key in ["text_embeddings", "text_embeddings_penultimate"] {
            let rel = assert_close(&format!("{model} {key}"), &out[key], &g[key], TOL);
            eprintln!("{model} {key}: rel err {rel:e}");
        }
    }
}

#[test]
fn vae_matches_diffusers() {
    for model in MODELS {
        let g = golden(model, "vae.safetensors");
        let inputs = [
            ("image".to_string(), g["image"].clone()),
            ("latents".to_string(), g["latents"].clone()),
        ]
        .into();
        let out =
            run_components(&model_dir(model), &inputs, &cpu(), LoadOptions::default()).unwrap();
        for key in ["posterior_mean", "decoded"] {
            let rel = assert_close(&format!("{model} {key}"), &out[key], &g[key], TOL);
            eprintln!("{model} {key}: rel err {rel:e}");
        }
    }
}

#[test]
fn unet_and_ditail_sites_match_diffusers() {
    let device = cpu();
    for model in MODELS {
        let (unet, _) = load_unet(
            &model_dir(model).join("unet"),
            &device,
            LoadOptions::default(),
        )
        .unwrap();
        for case in unet_cases(model) {
            let g = golden(model, &case);
            let sample = Tensor::<4>::from_data(g["sample"].clone(), &device);
            let context = Tensor::<3>::from_data(g["encoder_hidden_states"].clone(), &device);
            let t = g["timestep"]
                .clone()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap()[0];
            let mut rec = Recorder::sites(Site::ditail_sites());
            let out = unet.forward(sample.clone(), t, context.clone(), &mut rec);
            assert_prepared_alike(&unet, &sample, t, context, &out);
            let out = out.into_data();
            let rel = assert_close(
                &format!("{model} {case} noise_pred"),
                &out,
                &g["noise_pred"],
                TOL,
            );
            eprintln!("{model} {case} noise_pred: rel err {rel:e}");

            assert_sites(&format!("{model} {case}"), &rec, &g, "site.", TOL);
        }
    }
}
