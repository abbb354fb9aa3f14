//! Models as users name them (`ModelSpec`): a diffusers folder with LoRAs, clip skip and a
//! VAE override (a VAE folder or another model's `vae/`), and clear errors for names that
//! resolve to nothing.

mod common;

use common::{cpu, loading, model_dir, params};
use ditail::models::load::lora::LoraSpec;
use ditail::models::{LoadOptions, ModelError, StableDiffusion};
use ditail::pipeline::{Model, ModelSpec, PipelineError};

fn path(model: &str) -> String {
    model_dir(model).to_str().unwrap().to_string()
}

#[test]
fn a_spec_loads_the_model_with_its_loras_and_vae_override() {
    let device = cpu();
    let loras = vec![LoraSpec {
        path: loading("lora-peft.safetensors"),
        scale: 0.7,
    }];
    let tiny_a = StableDiffusion::load_diffusers(
        &model_dir("tiny-a"),
        &device,
        LoadOptions::default(),
        &loras,
    )
    .unwrap();
    let tiny_b =
        StableDiffusion::load_diffusers(&model_dir("tiny-b"), &device, LoadOptions::default(), &[])
            .unwrap();
    // tiny-a's U-Net and text encoder with the LoRA; tiny-b's VAE, named three ways.
    for vae in [
        path("tiny-b"),
        format!("{}/vae", path("tiny-b")),
        format!("{}/vae/", path("tiny-b")),
    ] {
        let spec = ModelSpec {
            model: path("tiny-a"),
            loras: loras.clone(),
            vae: Some(vae.clone()),
            clip_skip: 2,
            embeddings: Vec::new(),
        };
        let m = Model::load(&spec, &device, LoadOptions::default()).unwrap();
        assert_eq!(params(&m.sd().unet), params(&tiny_a.unet), "U-Net ({vae})");
        assert_eq!(
            params(&m.sd().text_encoder),
            params(&tiny_a.text_encoder),
            "text encoder ({vae})"
        );
        assert_eq!(params(&m.sd().vae), params(&tiny_b.vae), "VAE ({vae})");
        assert_eq!(
            m.sd().vae_config.block_out_channels,
            tiny_b.vae_config.block_out_channels,
            "VAE config ({vae})"
        );
        assert_eq!(m.clip_skip(), 2);
        assert_eq!(m.name(), path("tiny-a"));
        // Clip skip counts as A1111's: 2 is the text encoder's penultimate layer.
        let ids = m.sd().tokenizer.encode("a cat").unwrap();
        let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
        let n = ids.len();
        let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(ids, [1, n]),
            &device,
        );
        let penultimate = tiny_a.text_encoder.forward(ids, 1).unwrap();
        let got = m.encode_prompt("a cat", &device).unwrap();
        got.into_data()
            .assert_approx_eq::<f32>(&penultimate.into_data(), burn::tensor::Tolerance::default());
    }
    let zero = ModelSpec {
        clip_skip: 0,
        ..ModelSpec::new(path("tiny-a"))
    };
    let err = Model::load(&zero, &device, LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("counts from 1"), "{err}");
    // More layers than the encoder has: refused by the plan, before any weight is read (every
    // face plans first), not by each prompt later.
    let deep = ModelSpec {
        clip_skip: 99,
        ..ModelSpec::new(path("tiny-a"))
    };
    let err = deep.plan(LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("clip skip 99") && err.to_string().contains("layers"),
        "{err}"
    );
}

#[test]
fn a_lora_for_other_layer_sizes_is_refused_before_loading() {
    // tiny-a's LoRA names tiny-b's modules too, but tiny-b's layers are wider.
    let loras = [LoraSpec {
        path: loading("lora-kohya.safetensors"),
        scale: 0.7,
    }];
    let err = StableDiffusion::plan_diffusers(&model_dir("tiny-b"), LoadOptions::default(), &loras)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::Lora { .. })
            && msg.contains("do not fit this model's layer sizes")
            && msg.contains("lora-kohya.safetensors"),
        "{msg}"
    );
}

#[test]
fn names_that_resolve_to_nothing_are_errors_naming_them() {
    let device = cpu();
    for (spec, expected) in [
        (
            ModelSpec::new("no/such/model.safetensors"),
            "no/such/model.safetensors",
        ),
        (ModelSpec::new("not-a-repo-id"), "not-a-repo-id"),
        // Looks like org/name, but names a file: reported missing, not looked up online.
        (
            ModelSpec::new("models/sd15.safetensors"),
            "models/sd15.safetensors",
        ),
        (
            ModelSpec {
                vae: Some("missing-vae.safetensors".into()),
                ..ModelSpec::new(path("tiny-a"))
            },
            "missing-vae.safetensors",
        ),
    ] {
        let err = Model::load(&spec, &device, LoadOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, PipelineError::Model(ModelError::NotFound { .. }))
                && msg.contains(expected)
                && msg.contains("repo id"),
            "{msg}"
        );
    }
}
