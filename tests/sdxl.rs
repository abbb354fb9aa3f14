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
use common::{
    SDXL_TEXT_INPUTS, SDXL_TEXT_OUTPUTS, assert_close, assert_merged, assert_these_sites,
    check_components, cpu, fixtures, golden, loading, model_dir, params,
};
use ditail::models::hook::{Recorder, Site};
use ditail::models::load::{
    SingleFileConfigs, WeightFile, check_architecture, load_single_file, load_tokenizer,
    load_tokenizer_2, load_unet,
};
use ditail::models::{
    AddedConditioning, ClipTextConfig, Conditioning, Family, LoadOptions, StableDiffusion,
    UNetConfig, VaeConfig,
};
use ditail_golden::run_components;

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
        let want: Vec<i64> = g[key].clone().convert::<i64>().try_to_vec().unwrap();
        let got: Vec<i64> = prompts
            .iter()
            .flat_map(|p| tokenizer.encode(p).unwrap())
            .map(i64::from)
            .collect();
        assert_eq!(got, want, "{key}");
    }
    // The second prompt ends in `!`, which the second tokenizer (padding with `!`) turns into
    // the padding id (0) as transformers does, and the first into ordinary BPE.
    let ids_2: Vec<i64> = g["input_ids_2"]
        .clone()
        .convert::<i64>()
        .try_to_vec()
        .unwrap();
    let ids_1: Vec<i64> = g["input_ids"]
        .clone()
        .convert::<i64>()
        .try_to_vec()
        .unwrap();
    assert_ne!(ids_1[77..], ids_2[77..]);
}

#[test]
fn text_encoders_match_diffusers() {
    let g = golden(MODEL, "text.safetensors");
    check_components(
        MODEL,
        &model_dir(MODEL),
        &g,
        SDXL_TEXT_INPUTS,
        SDXL_TEXT_OUTPUTS,
        LoadOptions::default(),
        TOL,
    );
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
    check_components(
        MODEL,
        &model_dir(MODEL),
        &golden(MODEL, "vae.safetensors"),
        &["image", "latents"],
        &["posterior_mean", "decoded"],
        LoadOptions::default(),
        TOL,
    );
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
        common::assert_prepared_alike(&unet, &sample, t, added(&g, &device), &out);
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
    // The sites a forward visits are the ones the configuration says the U-Net has (the
    // check commands make before loading anything).
    let g = golden(MODEL, "unet_square.safetensors");
    let mut rec = Recorder::all();
    sd.unet.forward(
        Tensor::<4>::from_data(g["sample"].clone(), &device),
        801.0,
        added(&g, &device),
        &mut rec,
    );
    let has = |site: Site| sd.unet_config.has_site(site);
    assert!(Site::ditail_sites_xl().into_iter().all(has));
    assert!(!Site::ditail_sites().into_iter().all(has));
    let mut seen = 0;
    for stage in [
        "down_blocks.0",
        "down_blocks.2",
        "down_blocks.3",
        "mid_block",
        "up_blocks.0",
        "up_blocks.1",
        "up_blocks.2",
        "up_blocks.3",
    ] {
        for part in [
            "resnets.0",
            "resnets.1",
            "resnets.2",
            "resnets.3",
            "attentions.0",
            "attentions.2",
            "attentions.3",
            "attentions.0.transformer_blocks.1",
            "attentions.1.transformer_blocks.2",
            "attentions.1.transformer_blocks.3",
        ] {
            let site = Site::parse(&format!("{stage}.{part}")).unwrap();
            let visited = rec.captured.contains_key(&site);
            assert_eq!(has(site), visited, "{site}");
            seen += usize::from(visited);
        }
    }
    assert!(seen > 10, "{seen}");
    assert!(
        rec.captured.keys().all(|&s| has(s)),
        "every visited site is known"
    );
}

/// tiny-xl's own configurations: a single file does not say how many heads it has.
fn tiny_xl_configs() -> SingleFileConfigs {
    let dir = model_dir(MODEL);
    SingleFileConfigs {
        unet: UNetConfig::from_json_file(&dir.join("unet/config.json")).unwrap(),
        vae: VaeConfig::from_json_file(&dir.join("vae/config.json")).unwrap(),
        text: ClipTextConfig::from_json_file(&dir.join("text_encoder/config.json")).unwrap(),
        text_2: ClipTextConfig::from_json_file(&dir.join("text_encoder_2/config.json")).unwrap(),
    }
}

/// Every parameter of `a` equals `b`'s, by name.
fn assert_same_params<M: burn_store::ModuleSnapshot>(what: &str, a: &M, b: &M) {
    let (a, b) = (params(a), params(b));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: parameter names"
    );
    for (name, values) in &a {
        assert!(values == &b[name], "{what}: {name} differs");
    }
}

#[test]
fn single_file_equals_the_folder() {
    let device = cpu();
    let path = loading("tiny-xl.safetensors");
    let family = check_architecture(&WeightFile::open(&path).unwrap()).unwrap();
    assert_eq!(family, Family::Sdxl);
    let file = load_single_file(
        &path,
        &device,
        LoadOptions::default(),
        &tiny_xl_configs(),
        &[],
    )
    .unwrap();
    let folder =
        StableDiffusion::load_diffusers(&model_dir(MODEL), &device, LoadOptions::default(), &[])
            .unwrap();
    assert_eq!(file.family(), Family::Sdxl);
    assert_same_params("unet", &file.unet, &folder.unet);
    assert_same_params("vae", &file.vae, &folder.vae);
    assert_same_params("text_encoder", &file.text_encoder, &folder.text_encoder);
    assert_same_params(
        "text_encoder_2",
        &file.text_encoder_2.as_ref().unwrap().model,
        &folder.text_encoder_2.as_ref().unwrap().model,
    );
    // The probe with SDXL's keys but not its tensors is SDXL, and fails at plan time naming
    // a tensor whose shape disagrees with SDXL's configuration rather than running half a
    // model.
    let probe = loading("sdxl-like.safetensors");
    assert_eq!(
        check_architecture(&WeightFile::open(&probe).unwrap()).unwrap(),
        Family::Sdxl
    );
    let err = load_single_file(
        &probe,
        &device,
        LoadOptions::default(),
        &SingleFileConfigs::default(),
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(err, ditail::models::ModelError::WeightShape { .. }),
        "{err}"
    );
}

#[test]
fn sdxl_loras_merge_like_diffusers() {
    use ditail::models::load::lora::LoraSpec;
    let device = cpu();
    let opts = LoadOptions::default();
    let spec = |f: &str| LoraSpec {
        path: loading(f),
        scale: 0.7,
    };
    let folder = |loras: &[LoraSpec]| {
        StableDiffusion::load_diffusers(&model_dir(MODEL), &device, opts, loras).unwrap()
    };
    let file = |loras: &[LoraSpec]| {
        load_single_file(
            &loading("tiny-xl.safetensors"),
            &device,
            opts,
            &tiny_xl_configs(),
            loras,
        )
        .unwrap()
    };
    let base = folder(&[]);
    for (lora, expected) in [
        (
            "lora-xl-kohya.safetensors",
            "expected-xl-kohya-0.7.safetensors",
        ),
        (
            "lora-xl-peft.safetensors",
            "expected-xl-peft-0.7.safetensors",
        ),
    ] {
        assert_merged(
            &format!("{lora} folder"),
            &folder(&[spec(lora)]),
            &base,
            expected,
        );
        assert_merged(
            &format!("{lora} file"),
            &file(&[spec(lora)]),
            &base,
            expected,
        );
    }
    // The other family's LoRA is refused before loading, naming a module that says so.
    let err =
        StableDiffusion::plan_diffusers(&model_dir(MODEL), opts, &[spec("lora-kohya.safetensors")])
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("SD1.x LoRA") && err.contains("lora_te_"),
        "{err}"
    );
    let err = StableDiffusion::plan_diffusers(
        &model_dir("tiny-a"),
        opts,
        &[spec("lora-xl-kohya.safetensors")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("SDXL LoRA"), "{err}");
}

/// Half precision (what GPUs run): every SDXL network loaded as f16 stays within 1e-2 of
/// diffusers' f32 outputs, and SDXL's VAE (`force_upcast`) is loaded in f32 by the model
/// loader so its decoder cannot overflow.
#[test]
fn sdxl_f16_networks_stay_near_diffusers_f32() {
    let device = cpu();
    let half = LoadOptions {
        dtype: burn::tensor::FloatDType::F16,
    };
    for (file, inputs, outputs) in [
        (
            "text.safetensors",
            &["input_ids", "input_ids_2"][..],
            &["text_embeddings", "pooled_text_embeds"][..],
        ),
        (
            "vae.safetensors",
            &["image", "latents"][..],
            &["posterior_mean", "decoded"][..],
        ),
        (
            "unet_square.safetensors",
            &[
                "sample",
                "timestep",
                "encoder_hidden_states",
                "text_embeds",
                "time_ids",
            ][..],
            &["noise_pred"][..],
        ),
    ] {
        let g = golden(MODEL, file);
        check_components("f16", &model_dir(MODEL), &g, inputs, outputs, half, 1e-2);
    }
    let sd = StableDiffusion::load_diffusers(&model_dir(MODEL), &device, half, &[]).unwrap();
    assert_eq!(
        sd.unet.conv_in.weight.val().dtype(),
        burn::tensor::DType::F16
    );
    assert_eq!(
        sd.vae.decoder.conv_in.weight.val().dtype(),
        burn::tensor::DType::F32
    );
}
