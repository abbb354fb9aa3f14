//! Ditail on SDXL against a Python reference of the method on SDXL modules
//! (`scripts/make_sdxl_pipeline_fixtures.py`, fixtures in `tests/fixtures/pipeline-xl`):
//! tiny-xl as source and target, tamed (U-Net `conv_out` x 0.1), every step from stored
//! inputs (1e-4), whole runs end to end (1e-3), text-to-image, half precision, and an
//! ablation showing the injection sites act where they should.
//!
//! The SDXL-specific choices the reference makes and ditail follows: the pooled text
//! embedding is condition-scaled with the text embedding, the size conditioning is
//! `[H, W, 0, 0, H, W]` of the working image, and the sites are `up_blocks.1.resnets.1`
//! plus both transformer blocks of `up_blocks.1.attentions.{1,2}` (see the pipeline
//! crate's `inject` module).

mod common;

use std::collections::BTreeMap;

use burn::prelude::*;
use common::pipeline::{
    Scenario, check, check_inversion_steps, check_sampling_steps, sites, tame_as, tensor,
};
use common::{cpu, fixtures};
use ditail::models::tensor_file::read_tensors;
use ditail::models::{AddedConditioning, Conditioning, Family, LoadOptions};
use ditail::pipeline::inject::InjectionSites;
use ditail::pipeline::run::generate_from;
use ditail::pipeline::steps::SamplingEmbeddings;
use ditail::pipeline::{Model, preprocess};
use serde_json::Value;

const STEP_TOL: f32 = 1e-4;
const RUN_TOL: f32 = 1e-3;

fn dir() -> std::path::PathBuf {
    fixtures().join("pipeline-xl")
}

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("meta.json")).unwrap()).unwrap()
}

fn tame(device: &Device, opts: LoadOptions) -> Model {
    tame_as("tiny-xl", device, opts)
}

fn scenario(name: &str) -> Scenario {
    common::pipeline::scenario(&meta(), name)
}

fn xl_sites() -> &'static InjectionSites {
    sites(Family::Sdxl)
}

/// A stored conditioning: the text embedding `{key}`, the pooled `{key}_pooled`, the
/// fixture's `time_ids`.
fn stored_cond(g: &BTreeMap<String, TensorData>, key: &str, device: &Device) -> Conditioning {
    Conditioning {
        context: tensor(g, key, device),
        added: Some(AddedConditioning {
            text_embeds: tensor(g, &format!("{key}_pooled"), device),
            time_ids: tensor(g, "time_ids", device),
        }),
    }
}

fn check_cond(what: &str, got: &Conditioning, g: &BTreeMap<String, TensorData>, key: &str) {
    check(what, &got.context, &g[key], STEP_TOL);
    let added = got.added.as_ref().expect("SDXL conditioning");
    check(
        &format!("{what} pooled"),
        &added.text_embeds,
        &g[&format!("{key}_pooled")],
        STEP_TOL,
    );
    check(
        &format!("{what} time_ids"),
        &added.time_ids,
        &g["time_ids"],
        0.0,
    );
}

#[test]
fn every_sdxl_step_matches_the_reference() {
    let device = cpu();
    let model = tame(&device, LoadOptions::default());
    assert_eq!(model.family(), Family::Sdxl);
    let img = preprocess::load_rgb(&dir().join("content.png")).unwrap();
    for name in ["full", "left", "noinj"] {
        let sc = scenario(name);
        let hw = sc.hw.expect("the SDXL fixture records its working size");
        let g = read_tensors(&dir().join(&sc.file)).unwrap();

        // Encoding: z0, the scaled inversion condition (text and pooled), the embeddings.
        let pixels = preprocess::preprocess(&img, 64, &device).unwrap();
        let z0 = model.sd().vae.encode_mean(pixels) * model.scaling_factor();
        check(&format!("{name} z0"), &z0, &g["z0"], STEP_TOL);
        let pos = model.condition(&sc.inv.prompt, hw, &device).unwrap();
        let neg = model
            .condition(&sc.inv.negative_prompt, hw, &device)
            .unwrap();
        let cond = pos.scaled(sc.inv.alpha, neg, sc.inv.beta);
        check_cond(&format!("{name} cond_inv"), &cond, &g, "cond_inv");
        for (key, prompt) in [
            ("emb_uncond", ""),
            ("emb_pos", sc.spl.prompt.as_str()),
            ("emb_neg", sc.spl.negative_prompt.as_str()),
        ] {
            let c = model.condition(prompt, hw, &device).unwrap();
            check_cond(&format!("{name} {key}"), &c, &g, key);
        }

        // Inversion, each step from the stored previous latent; sampling, each step from
        // the stored input latent, with what the 5 injected sites saw at step 0.
        let cond = stored_cond(&g, "cond_inv", &device);
        check_inversion_steps(name, &model, &g, &cond, sc.inv.steps, STEP_TOL);
        let emb = SamplingEmbeddings {
            uncond: stored_cond(&g, "emb_uncond", &device),
            positive: stored_cond(&g, "emb_pos", &device),
            negative: stored_cond(&g, "emb_neg", &device),
        };
        check_sampling_steps(name, &model, &g, &sc.spl, &emb, xl_sites(), STEP_TOL);
    }
}

#[test]
fn whole_sdxl_runs_match_the_reference() {
    let device = cpu();
    let model = tame(&device, LoadOptions::default());
    let img = preprocess::load_rgb(&dir().join("content.png")).unwrap();
    for name in ["full", "left", "noinj"] {
        let sc = scenario(name);
        let g = read_tensors(&dir().join(&sc.file)).unwrap();
        let inv = ditail::pipeline::invert(&model, &img, &sc.inv, &device, &mut |_| true).unwrap();
        for (t, z) in inv.latents() {
            check(
                &format!("{name} run inverted.{t}"),
                z,
                &g[&format!("inverted.{t}")],
                RUN_TOL,
            );
        }
        let fin = ditail::pipeline::sample(&model, &inv, &sc.spl, &device, &mut |_| true).unwrap();
        let rel = check(&format!("{name} final"), &fin, &g["final"], RUN_TOL);
        eprintln!("{name}: final rel err {rel:e}");
        let decoded = ditail::pipeline::decode(&model, tensor(&g, "final", &device)).unwrap();
        check(
            &format!("{name} decoded"),
            &decoded,
            &g["decoded"],
            STEP_TOL,
        );
    }
}

#[test]
fn sdxl_text_to_image_matches_diffusers() {
    let device = cpu();
    let model = tame(&device, LoadOptions::default());
    let m = meta();
    let s = &m["t2i"]["settings"];
    let g = read_tensors(&dir().join("t2i.safetensors")).unwrap();
    let hw: Vec<usize> = serde_json::from_value(s["image_size_hw"].clone()).unwrap();
    let pos = model
        .condition(s["prompt"].as_str().unwrap(), [hw[0], hw[1]], &device)
        .unwrap();
    let neg = model
        .condition(s["negative"].as_str().unwrap(), [hw[0], hw[1]], &device)
        .unwrap();
    check_cond("t2i emb_pos", &pos, &g, "emb_pos");
    check_cond("t2i emb_neg", &neg, &g, "emb_neg");
    let steps = s["steps"].as_u64().unwrap() as usize;
    let ts = model.scheduler().timesteps(steps).unwrap();
    let fin = generate_from(
        &model,
        tensor(&g, "noise", &device),
        pos,
        neg,
        s["omega"].as_f64().unwrap(),
        &ts,
        steps,
        &mut |_| true,
    )
    .unwrap();
    check("t2i final", &fin, &g["final"], RUN_TOL);
}

/// Half precision: the U-Net and text encoders run in f16, the VAE (SDXL's, `force_upcast`)
/// in f32; the run stays near the f32 reference and decodes to finite pixels.
#[test]
fn sdxl_half_precision_upcasts_the_vae() {
    let device = cpu();
    let half = LoadOptions {
        dtype: burn::tensor::FloatDType::F16,
    };
    let model = tame(&device, half);
    assert_eq!(model.dtype(), burn::tensor::DType::F16);
    assert_eq!(model.vae_dtype(), burn::tensor::DType::F32);
    let img = preprocess::load_rgb(&dir().join("content.png")).unwrap();
    let sc = scenario("full");
    let g = read_tensors(&dir().join(&sc.file)).unwrap();
    let inv = ditail::pipeline::invert(&model, &img, &sc.inv, &device, &mut |_| true).unwrap();
    let fin = ditail::pipeline::sample(&model, &inv, &sc.spl, &device, &mut |_| true).unwrap();
    let rel = check(
        "f16 final",
        &fin.clone().cast(burn::tensor::FloatDType::F32),
        &g["final"],
        0.15,
    );
    eprintln!("f16 final rel err {rel:e}");
    let image = ditail::pipeline::decode(&model, fin).unwrap();
    assert_eq!(image.dtype(), burn::tensor::DType::F32);
}

/// The sites act as intended: injecting changes the result; the attention sites alone
/// change it less than with the conv site; a site the SDXL U-Net lacks (SD1.x's
/// `up_blocks.3`) is refused before anything runs; the sites are where the reference
/// injects (the `full` fixture differs from `noinj`).
#[test]
fn sdxl_injection_sites_ablation() {
    let device = cpu();
    let model = tame(&device, LoadOptions::default());
    let img = preprocess::load_rgb(&dir().join("content.png")).unwrap();
    let mut sc = scenario("full");
    sc.inv.steps = 5;
    sc.spl.steps = 5;
    let inv = ditail::pipeline::invert(&model, &img, &sc.inv, &device, &mut |_| true).unwrap();
    let run = |sites: Option<&str>, no_injection: bool| {
        let mut spl = sc.spl.clone();
        spl.sites = sites.map(|s| InjectionSites::parse(s).unwrap());
        spl.no_injection = no_injection;
        ditail::pipeline::sample(&model, &inv, &spl, &device, &mut |_| true)
    };
    let diff =
        |a: &Tensor<4>, b: &Tensor<4>| -> f32 { (a.clone() - b.clone()).abs().max().into_scalar() };
    let plain = run(None, true).unwrap();
    let default = run(None, false).unwrap();
    let attn_only = run(
        Some("up_blocks.1.attentions.1.transformer_blocks.0,up_blocks.1.attentions.1.transformer_blocks.1,up_blocks.1.attentions.2"),
        false,
    )
    .unwrap();
    let (d_all, d_attn) = (diff(&default, &plain), diff(&attn_only, &plain));
    eprintln!("injection moves the result by {d_all:e}, attention alone by {d_attn:e}");
    assert!(d_all > 1e-3, "injection changes the result ({d_all})");
    assert!(
        d_attn > 1e-5 && diff(&attn_only, &default) > 1e-5,
        "each part acts"
    );
    let err = run(Some("up_blocks.3.attentions.0"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("up_blocks.3.attentions.0") && err.contains("does not exist"),
        "{err}"
    );
    let err = InjectionSites::parse("up_blocks.1.attn")
        .unwrap_err()
        .to_string();
    assert!(err.contains("up_blocks.1.attn"), "{err}");
}

/// An SDXL inversion records its family and an SD1.x target refuses it before sampling.
#[test]
fn an_sdxl_inversion_does_not_feed_an_sd1_target() {
    let device = cpu();
    let model = tame(&device, LoadOptions::default());
    let img = preprocess::load_rgb(&dir().join("content.png")).unwrap();
    let mut sc = scenario("full");
    sc.inv.steps = 2;
    sc.spl.steps = 2;
    let inv = ditail::pipeline::invert(&model, &img, &sc.inv, &device, &mut |_| true).unwrap();
    assert_eq!(inv.meta().family, Some(Family::Sdxl));
    let sd1 = common::pipeline::tame_as("tiny-a", &device, LoadOptions::default());
    let err = ditail::pipeline::sample(&sd1, &inv, &sc.spl, &device, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model family") && err.contains("Stable Diffusion XL"),
        "{err}"
    );
}
