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
        (
            "use_linear_projection",
            serde_json::json!(true),
            "use_linear_projection",
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
