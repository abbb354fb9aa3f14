//! SDXL parity with diffusers: every network of the tiny SDXL-structured random-weight model
//! (`tests/fixtures/models/tiny-xl`, exact SDXL configuration semantics: three resolutions,
//! transformer depths 1 / 2 / 3 reversed on the way up, linear projections, `text_time`
//! added embedding, two text encoders, `!` padding) against the golden tensors
//! `scripts/make_sdxl_fixtures.py` wrote with diffusers 0.42 / transformers 5.24.
//!
//! Tolerance: `max |ours - diffusers| <= 1e-4 * max |diffusers|` over whole tensors.

mod common;

use std::collections::BTreeMap;

use burn::prelude::*;
use common::{assert_close, assert_these_sites, cpu, fixtures, golden, model_dir};
use ditail::models::components::run_components;
use ditail::models::hook::{Recorder, Site};
use ditail::models::load::{load_tokenizer, load_tokenizer_2, load_unet};
use ditail::models::{AddedConditioning, Conditioning, Family, LoadOptions, StableDiffusion};

/// Relative tolerance of every comparison in this file.
const TOL: f32 = 1e-4;
const MODEL: &str = "tiny-xl";

fn meta() -> serde_json::Value {
    let path = fixtures().join("golden").join(MODEL).join("meta.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn tokenizers_match_transformers() {
    let g = golden(MODEL, "text.safetensors");
    let m = meta();
    let prompts: Vec<&str> = m["text"]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let dir = model_dir(MODEL);
    for (tokenizer, key) in [
        (load_tokenizer(&dir).unwrap(), "input_ids"),
        (load_tokenizer_2(&dir).unwrap(), "input_ids_2"),
    ] {
        let want: Vec<i64> = g[key].clone().convert::<i64>().to_vec().unwrap();
        let got: Vec<i64> = prompts
            .iter()
            .flat_map(|p| tokenizer.encode(p).unwrap())
            .map(i64::from)
            .collect();
        assert_eq!(got, want, "{key}");
    }
    // The second prompt ends in `!`, which the second tokenizer (padding with `!`) turns into
    // the padding id (0) as transformers does, and the first into ordinary BPE.
    let ids_2: Vec<i64> = g["input_ids_2"].clone().convert::<i64>().to_vec().unwrap();
    let ids_1: Vec<i64> = g["input_ids"].clone().convert::<i64>().to_vec().unwrap();
    assert_ne!(ids_1[77..], ids_2[77..]);
}

#[test]
fn text_encoders_match_diffusers() {
    let g = golden(MODEL, "text.safetensors");
    let inputs = [
        ("input_ids".to_string(), g["input_ids"].clone()),
        ("input_ids_2".to_string(), g["input_ids_2"].clone()),
    ]
    .into();
    let out = run_components(&model_dir(MODEL), &inputs, &cpu(), LoadOptions::default()).unwrap();
    for key in [
        "text_embeddings",
        "text_embeddings_skip1",
        "pooled_text_embeds",
    ] {
        let rel = assert_close(&format!("{MODEL} {key}"), &out[key], &g[key], TOL);
        eprintln!("{MODEL} {key}: rel err {rel:e}");
    }
    // The second tokenizer's ids are required.
    let only_first = [("input_ids".to_string(), g["input_ids"].clone())].into();
    let err = run_components(
        &model_dir(MODEL),
        &only_first,
        &cpu(),
        LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("input_ids_2"), "{err}");
}

#[test]
fn vae_matches_diffusers() {
    let g = golden(MODEL, "vae.safetensors");
    let inputs = [
        ("image".to_string(), g["image"].clone()),
        ("latents".to_string(), g["latents"].clone()),
    ]
    .into();
    let out = run_components(&model_dir(MODEL), &inputs, &cpu(), LoadOptions::default()).unwrap();
    for key in ["posterior_mean", "decoded"] {
        let rel = assert_close(&format!("{MODEL} {key}"), &out[key], &g[key], TOL);
        eprintln!("{MODEL} {key}: rel err {rel:e}");
    }
}

/// Every site the fixture recorded: the conv site and every transformer block's attn1 of
/// the up path's attention layers.
fn golden_sites(g: &BTreeMap<String, TensorData>) -> Vec<Site> {
    let mut sites: Vec<Site> = g
        .keys()
        .filter_map(|k| k.strip_prefix("site."))
        .map(|k| k.trim_end_matches(".q").trim_end_matches(".k"))
        .map(|k| Site::parse(k).unwrap_or_else(|| panic!("site {k}")))
        .collect();
    sites.sort();
    sites.dedup();
    sites
}

fn added(g: &BTreeMap<String, TensorData>, device: &Device) -> Conditioning {
    Conditioning {
        context: Tensor::<3>::from_data(g["encoder_hidden_states"].clone(), device),
        added: Some(AddedConditioning {
            text_embeds: Tensor::<2>::from_data(g["text_embeds"].clone(), device),
            time_ids: Tensor::<2>::from_data(g["time_ids"].clone(), device),
        }),
    }
}

#[test]
fn unet_and_sites_match_diffusers() {
    let device = cpu();
    let (unet, config) = load_unet(
        &model_dir(MODEL).join("unet"),
        &device,
        LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(config.family(), Family::Sdxl);
    assert_eq!(config.transformer_layers_per_block, [1, 2, 3]);
    // The up path takes the depths reversed, the mid block the last.
    let depths = |attns: &[ditail::models::attention::Transformer2dModel]| {
        attns
            .iter()
            .map(|a| a.transformer_blocks.len())
            .collect::<Vec<_>>()
    };
    assert_eq!(depths(&unet.up_blocks[0].attentions), [3, 3, 3]);
    assert_eq!(depths(&unet.up_blocks[1].attentions), [2, 2, 2]);
    assert_eq!(depths(&unet.mid_block.attentions), [3]);
    assert!(unet.up_blocks[2].attentions.is_empty() && unet.down_blocks[0].attentions.is_empty());

    for case in ["unet_square.safetensors", "unet_odd.safetensors"] {
        let g = golden(MODEL, case);
        let sample = Tensor::<4>::from_data(g["sample"].clone(), &device);
        let t = g["timestep"]
            .clone()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()[0];
        let sites = golden_sites(&g);
        assert!(sites.len() >= 16, "{case}: {} sites", sites.len());
        let mut rec = Recorder::sites(sites.clone());
        let out = unet.forward(sample.clone(), t, added(&g, &device), &mut rec);
        let rel = assert_close(
            &format!("{MODEL} {case} noise_pred"),
            &out.into_data(),
            &g["noise_pred"],
            TOL,
        );
        eprintln!("{MODEL} {case} noise_pred: rel err {rel:e}");
        assert_these_sites(&format!("{MODEL} {case}"), &sites, &rec, &g, "site.", TOL);

        // The added conditioning matters: other sizes give another prediction.
        let mut other = added(&g, &device);
        let ids = other.added.as_ref().unwrap().time_ids.clone();
        other.added.as_mut().unwrap().time_ids = ids * 0.5;
        let moved = unet.forward(sample, t, other, &mut ditail::models::NoControl);
        let d: f32 = (moved - Tensor::<4>::from_data(g["noise_pred"].clone(), &device))
            .abs()
            .max()
            .into_scalar();
        assert!(d > 1e-3, "{case}: time_ids change nothing ({d})");
    }
}

#[test]
fn folder_loads_as_sdxl() {
    let device = cpu();
    let sd =
        StableDiffusion::load_diffusers(&model_dir(MODEL), &device, LoadOptions::default(), &[])
            .unwrap();
    assert_eq!(sd.family(), Family::Sdxl);
    let second = sd.text_encoder_2.as_ref().expect("second text encoder");
    assert_eq!(second.config.projection_dim, Some(40));
    assert_eq!(second.config.hidden_act, "gelu");
    assert_eq!(sd.vae_config.scaling_factor, 0.13025);
    assert!(sd.vae_config.force_upcast);
    // The default sites exist in an SDXL U-Net, and SD1.x's do not all.
    assert!(Site::ditail_sites_xl().iter().all(|&s| sd.unet.has_site(s)));
    assert!(!Site::ditail_sites().iter().all(|&s| sd.unet.has_site(s)));
}
