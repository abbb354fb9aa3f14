//! Loading diffusers folders: every malformed input gives a typed error that names the
//! file and key, never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::{cpu, model_dir};
use ditail::models::load::{load_text_encoder, load_unet, load_vae};
use ditail::models::tensor_file::{read_tensors, write_tensors};
use ditail::models::{LoadOptions, ModelError, StableDiffusion};

const UNET_FILE: &str = "diffusion_pytorch_model.safetensors";

/// A copy of tiny-a's `unet/` whose weights file is rewritten by `edit`.
fn unet_copy(
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, burn::prelude::TensorData>),
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("unet");
    std::fs::create_dir(&dir).unwrap();
    let src = model_dir("tiny-a").join("unet");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut tensors = read_tensors(&src.join(UNET_FILE)).unwrap();
    edit(&mut tensors);
    write_tensors(&dir.join(UNET_FILE), &tensors, None).unwrap();
    (tmp, dir)
}

fn load_err(dir: &Path) -> String {
    match load_unet(dir, &cpu(), LoadOptions::default()) {
        Ok(_) => panic!("{} loaded, but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_missing_key_is_named() {
    let key = "up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_q.weight";
    let (_tmp, dir) = unet_copy(|t| {
        t.remove(key).expect("the fixture has the key");
    });
    let msg = load_err(&dir);
    assert!(
        msg.contains("missing from the files") && msg.contains(key),
        "{msg}"
    );
}

#[test]
fn an_unused_key_is_named() {
    let (_tmp, dir) = unet_copy(|t| {
        let extra = t["conv_in.bias"].clone();
        t.insert("conv_in.extra_thing".into(), extra);
    });
    let msg = load_err(&dir);
    assert!(
        msg.contains("not in the model") && msg.contains("conv_in.extra_thing"),
        "{msg}"
    );
}

#[test]
fn a_wrong_shape_is_named() {
    let (_tmp, dir) = unet_copy(|t| {
        let data = t["conv_out.bias"].clone();
        let v: Vec<f32> = data.try_to_vec::<f32>().unwrap();
        t.insert(
            "conv_out.bias".into(),
            burn::prelude::TensorData::new(v[..2].to_vec(), [2]),
        );
    });
    let msg = load_err(&dir);
    assert!(msg.contains("conv_out.bias"), "{msg}");
}

#[test]
fn broken_files_are_reported_with_their_path() {
    let src = model_dir("tiny-a").join("unet");
    let bytes = std::fs::read(src.join(UNET_FILE)).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        (
            "text renamed",
            b"this is not a safetensors file, just text\n".to_vec(),
        ),
        ("empty", Vec::new()),
        ("header cut", bytes[..8 + header_len / 2].to_vec()),
    ];
    for (what, content) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("unet");
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        std::fs::write(dir.join(UNET_FILE), content).unwrap();
        let err = load_unet(&dir, &cpu(), LoadOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{what}: loaded"));
        assert!(
            matches!(err, ModelError::Safetensors { .. }),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains(UNET_FILE), "{what}: {err}");
    }
}

#[test]
fn missing_files_say_what_was_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_vae(tmp.path(), &cpu(), LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");

    std::fs::copy(
        model_dir("tiny-a").join("text_encoder/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let err = load_text_encoder(tmp.path(), &cpu(), LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("model.fp16.safetensors"),
        "{msg}"
    );

    std::fs::write(tmp.path().join("model.bin"), b"pickle").unwrap();
    let msg = load_text_encoder(tmp.path(), &cpu(), LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model.bin") && msg.contains("pickle"), "{msg}");

    let err = StableDiffusion::load_diffusers(
        &tmp.path().join("nope"),
        &cpu(),
        LoadOptions::default(),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn unsupported_configs_name_the_key() {
    let src = model_dir("tiny-a").join("unet");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    for (key, value, expect) in [
        // Supported (SDXL's), so 1x1-conv weights under it are named as not fitting.
        (
            "use_linear_projection",
            serde_json::json!(true),
            "proj_in.weight",
        ),
        (
            "addition_embed_type",
            serde_json::json!("text"),
            "addition_embed_type",
        ),
        (
            "down_block_types",
            serde_json::json!([
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "SimpleCrossAttnDownBlock2D"
            ]),
            "SimpleCrossAttnDownBlock2D",
        ),
        ("in_channels", serde_json::json!(9), "conv_in.weight"),
        ("norm_num_groups", serde_json::json!(7), "norm_num_groups"),
        (
            "attention_head_dim",
            serde_json::json!([8, 8]),
            "attention_head_dim",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = config.clone();
        c[key] = value;
        std::fs::write(tmp.path().join("config.json"), c.to_string()).unwrap();
        std::fs::copy(src.join(UNET_FILE), tmp.path().join(UNET_FILE)).unwrap();
        let msg = load_err(tmp.path());
        assert!(msg.contains(expect), "{key}: {msg}");
    }
}

#[test]
fn sharded_weights_load_like_a_single_file() {
    use burn_store::ModuleSnapshot;
    let src = model_dir("tiny-a").join("unet");
    let tensors = read_tensors(&src.join(UNET_FILE)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let (mut a, mut b) = (
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
    );
    let mut weight_map = serde_json::Map::new();
    for (i, (k, v)) in tensors.into_iter().enumerate() {
        let shard = if i % 2 == 0 {
            "diffusion_pytorch_model-00001-of-00002.safetensors"
        } else {
            "diffusion_pytorch_model-00002-of-00002.safetensors"
        };
        weight_map.insert(k.clone(), serde_json::Value::from(shard));
        if i % 2 == 0 {
            a.insert(k, v)
        } else {
            b.insert(k, v)
        };
    }
    write_tensors(
        &tmp.path()
            .join("diffusion_pytorch_model-00001-of-00002.safetensors"),
        &a,
        None,
    )
    .unwrap();
    write_tensors(
        &tmp.path()
            .join("diffusion_pytorch_model-00002-of-00002.safetensors"),
        &b,
        None,
    )
    .unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        tmp.path()
            .join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let (sharded, _) = load_unet(tmp.path(), &cpu(), LoadOptions::default()).unwrap();
    let (single, _) = load_unet(&src, &cpu(), LoadOptions::default()).unwrap();
    let values = |m: &ditail::models::UNet2DConditionModel| -> Vec<(String, Vec<u8>)> {
        m.collect(None, None, true)
            .into_iter()
            .map(|t| (t.name.clone(), t.into_bytes().unwrap().to_vec()))
            .collect()
    };
    assert_eq!(values(&sharded), values(&single));

    // A shard listed in the index but absent is named.
    std::fs::remove_file(
        tmp.path()
            .join("diffusion_pytorch_model-00002-of-00002.safetensors"),
    )
    .unwrap();
    let msg = load_err(tmp.path());
    assert!(
        msg.contains("00002-of-00002") && msg.contains("missing"),
        "{msg}"
    );
}

/// Copies tiny-a's diffusers folder to `to` with the text encoder's keys written as
/// transformers 5 saves them (no `text_model.` prefix), split into `shards` files (with an
/// index when more than one); the tensors' bytes are unchanged.
fn copy_without_text_prefix(to: &Path, shards: usize) {
    use safetensors::{SafeTensors, tensor::TensorView};
    let from = model_dir("tiny-a");
    for entry in walk(&from) {
        let rel = entry.strip_prefix(&from).unwrap();
        if rel.starts_with("text_encoder") && rel.extension().is_some_and(|e| e == "safetensors") {
            continue;
        }
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&entry, to.join(rel)).unwrap();
    }
    let bytes = std::fs::read(from.join("text_encoder/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut stripped = 0;
    let renamed: Vec<(String, TensorView)> = tensors
        .into_iter()
        .map(|(name, view)| match name.strip_prefix("text_model.") {
            Some(rest) => {
                stripped += 1;
                (rest.to_string(), view)
            }
            None => (name, view),
        })
        .collect();
    assert!(
        stripped > 10,
        "the fixture's text encoder keys have the prefix"
    );
    assert!(renamed.iter().any(|(n, _)| n == "final_layer_norm.weight"));
    let dir = to.join("text_encoder");
    if shards == 1 {
        safetensors::serialize_to_file(renamed, None, &dir.join("model.safetensors")).unwrap();
        return;
    }
    let mut weight_map = serde_json::Map::new();
    for s in 0..shards {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
        let part: Vec<(String, TensorView)> = renamed
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shards == s)
            .map(|(_, (n, v))| (n.clone(), v.clone()))
            .collect();
        for (n, _) in &part {
            weight_map.insert(n.clone(), serde_json::Value::from(file.clone()));
        }
        safetensors::serialize_to_file(part, None, &dir.join(&file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn text_encoders_saved_without_the_text_model_prefix_load_the_same() {
    use ditail::pipeline::{Model, ModelSpec};
    let device = cpu();
    let load = |dir: &Path, loras: Vec<ditail::models::load::lora::LoraSpec>| {
        let spec = ModelSpec {
            loras,
            ..ModelSpec::new(dir.to_str().unwrap())
        };
        Model::load(&spec, &device, LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
    };
    let embeddings = |m: &Model| {
        ["a photo of a cat", ""]
            .map(|p| m.encode_prompt(p, &device).unwrap().into_data())
            .to_vec()
    };
    let original = load(&model_dir("tiny-a"), vec![]);
    let want = embeddings(&original);
    let lora = || {
        vec![ditail::models::load::lora::LoraSpec {
            path: common::loading("lora-peft.safetensors"),
            scale: 0.7,
        }]
    };
    let original_lora = embeddings(&load(&model_dir("tiny-a"), lora()));
    assert_ne!(original_lora, want, "the LoRA changes the text encoder");
    for shards in [1, 2] {
        let tmp = tempfile::tempdir().unwrap();
        copy_without_text_prefix(tmp.path(), shards);
        // Whole folders (the path every command takes), LoRAs matched to the renamed keys.
        let got = load(tmp.path(), vec![]);
        assert_eq!(embeddings(&got), want, "{shards} shard(s)");
        assert_eq!(
            embeddings(&load(tmp.path(), lora())),
            original_lora,
            "{shards} shard(s) with a LoRA"
        );
        // The text encoder folder alone.
        let (alone, _) = load_text_encoder(
            &tmp.path().join("text_encoder"),
            &device,
            LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(
            common::params(&alone),
            common::params(&original.sd().text_encoder),
            "{shards} shard(s), text_encoder/ alone"
        );
    }
}
