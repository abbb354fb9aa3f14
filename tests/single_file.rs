//! Civitai/A1111 single-file checkpoints (`scripts/make_loading_fixtures.py` wrote them from
//! tiny-a with its own LDM mapping, verified by loading them back with diffusers'
//! `from_single_file`): a single file loads tensor for tensor equal to the diffusers folder;
//! other architectures and broken files are clear errors.

mod common;

use std::collections::BTreeMap;

use common::{assert_merged, assert_same, cpu, loading, model_dir, params};
use ditail::models::load::{
    SingleFileConfigs, WeightFile, check_architecture, load_single_file, load_vae_file,
};
use ditail::models::{
    ClipTextConfig, LoadOptions, ModelError, StableDiffusion, UNetConfig, VaeConfig,
};

/// tiny-a's own configurations: a single file does not say how many heads it has.
fn tiny_a_configs() -> SingleFileConfigs {
    let dir = model_dir("tiny-a");
    SingleFileConfigs {
        unet: UNetConfig::from_json_file(&dir.join("unet/config.json")).unwrap(),
        vae: VaeConfig::from_json_file(&dir.join("vae/config.json")).unwrap(),
        text: ClipTextConfig::from_json_file(&dir.join("text_encoder/config.json")).unwrap(),
        ..Default::default()
    }
}

/// Loads a tiny-a single-file fixture with tiny-a's configurations and `loras`.
fn load_tiny_a(file: &str, loras: &[ditail::models::load::lora::LoraSpec]) -> StableDiffusion {
    load_single_file(
        &loading(file),
        &cpu(),
        LoadOptions::default(),
        &tiny_a_configs(),
        loras,
    )
    .unwrap()
}

#[test]
fn single_files_equal_the_diffusers_folder_tensor_for_tensor() {
    let device = cpu();
    let folder =
        StableDiffusion::load_diffusers(&model_dir("tiny-a"), &device, LoadOptions::default(), &[])
            .unwrap();
    let f32_file = load_tiny_a("tiny-a.safetensors", &[]);
    assert_same("f32", &f32_file, &folder, |v| v);
    // bf16 weights and the older text-encoder layout without `text_model.`.
    let bf16 = load_tiny_a("tiny-a-noprefix.bf16.safetensors", &[]);
    assert_same("bf16 noprefix", &bf16, &folder, |v| {
        half::bf16::from_f32(v).to_f32()
    });

    // f16, the precision most published checkpoints use: written here from the f32 file.
    let tmp = tempfile::tempdir().unwrap();
    let f16_path = tmp.path().join("tiny-a.fp16.safetensors");
    write_f16_copy(&loading("tiny-a.safetensors"), &f16_path);
    let f16 = load_tiny_a(f16_path.to_str().unwrap(), &[]);
    assert_same("f16", &f16, &folder, |v| half::f16::from_f32(v).to_f32());

    // A VAE alone, and the VAE taken out of a whole checkpoint (a `--vae` override).
    for file in ["vae-tiny-a.safetensors", "tiny-a.safetensors"] {
        let vae = load_vae_file(
            &loading(file),
            &device,
            LoadOptions::default(),
            &tiny_a_configs().vae,
        )
        .unwrap();
        assert_eq!(params(&vae), params(&folder.vae), "VAE from {file}");
    }
}

/// Copies a safetensors file with every f32 tensor stored as f16.
fn write_f16_copy(from: &std::path::Path, to: &std::path::Path) {
    use safetensors::{Dtype, SafeTensors, tensor::TensorView};
    let bytes = std::fs::read(from).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let converted: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape().to_vec();
            if view.dtype() == Dtype::F32 {
                let data = view
                    .data()
                    .chunks_exact(4)
                    .flat_map(|b| {
                        half::f16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes()
                    })
                    .collect();
                (name, Dtype::F16, shape, data)
            } else {
                (name, view.dtype(), shape, view.data().to_vec())
            }
        })
        .collect();
    let views: Vec<(String, TensorView)> = converted
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, to).unwrap();
}

/// The error of loading a fixture as an SD1.5 single file.
fn sd15_load_err(file: &str) -> ModelError {
    load_single_file(
        &loading(file),
        &cpu(),
        LoadOptions::default(),
        &SingleFileConfigs::default(),
        &[],
    )
    .unwrap_err()
}

#[test]
fn other_architectures_are_named() {
    for (file, found) in [
        ("sd2-like.safetensors", "Stable Diffusion 2"),
        ("inpaint-like.safetensors", "inpainting"),
        ("ip2p-like.safetensors", "instruct-pix2pix"),
        ("sd3-like.safetensors", "Stable Diffusion 3"),
        ("flux-like.safetensors", "Flux"),
    ] {
        let err = check_architecture(&WeightFile::open(&loading(file)).unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ModelError::UnsupportedArchitecture { .. }),
            "{file}: {err:?}"
        );
        assert!(
            msg.contains("unsupported architecture") && msg.contains(found) && msg.contains(file),
            "{file}: {msg}"
        );
        let err = sd15_load_err(file);
        assert!(err.to_string().contains(found), "{file}: {err}");
    }
    assert!(check_architecture(&WeightFile::open(&loading("tiny-a.safetensors")).unwrap()).is_ok());
}

#[test]
fn broken_files_and_pickles_are_clear_errors() {
    for file in [
        "truncated.safetensors",
        "not-safetensors.safetensors",
        "header-overrun.safetensors",
        "header-length-overrun.safetensors",
    ] {
        let err = sd15_load_err(file);
        assert!(
            matches!(err, ModelError::Safetensors { .. }),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
    let err = sd15_load_err("pickle.ckpt");
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::Pickle { .. })
            && msg.contains("pickle.ckpt")
            && msg.contains("safetensors"),
        "{msg}"
    );
}

#[test]
fn loras_merge_like_diffusers_fuse_lora() {
    use ditail::models::load::lora::LoraSpec;
    let device = cpu();
    let base = load_tiny_a("tiny-a.safetensors", &[]);
    let spec = |f: &str, scale| LoraSpec {
        path: loading(f),
        scale,
    };
    for (label, loras, expected) in [
        (
            "kohya",
            vec![spec("lora-kohya.safetensors", 0.7)],
            "expected-kohya-0.7.safetensors",
        ),
        (
            "peft",
            vec![spec("lora-peft.safetensors", 0.7)],
            "expected-peft-0.7.safetensors",
        ),
        (
            "both",
            vec![
                spec("lora-kohya.safetensors", 0.7),
                spec("lora-peft.safetensors", 0.5),
            ],
            "expected-both.safetensors",
        ),
    ] {
        let merged = load_tiny_a("tiny-a.safetensors", &loras);
        assert_merged(label, &merged, &base, expected);
    }
    for (file, expect) in [
        ("lora-bad-key.safetensors", "down_blocks_0_attentions_7"),
        ("lora-sdxl.safetensors", "SDXL"),
        ("loha.safetensors", "LoHa"),
    ] {
        let err = load_single_file(
            &loading("tiny-a.safetensors"),
            &device,
            LoadOptions::default(),
            &tiny_a_configs(),
            &[spec(file, 0.7)],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ModelError::Lora { .. }) && msg.contains(expect) && msg.contains(file),
            "{file}: {msg}"
        );
    }
}

#[test]
fn loras_merge_into_diffusers_folders_as_into_single_files() {
    use ditail::models::load::lora::LoraSpec;
    let loras = [
        LoraSpec {
            path: loading("lora-kohya.safetensors"),
            scale: 0.7,
        },
        LoraSpec {
            path: loading("lora-peft.safetensors"),
            scale: 0.5,
        },
    ];
    let folder = StableDiffusion::load_diffusers(
        &model_dir("tiny-a"),
        &cpu(),
        LoadOptions::default(),
        &loras,
    )
    .unwrap();
    assert_same(
        "folder + loras",
        &folder,
        &load_tiny_a("tiny-a.safetensors", &loras),
        |v| v,
    );

    let bad = [LoraSpec {
        path: loading("lora-bad-key.safetensors"),
        scale: 0.7,
    }];
    let err =
        StableDiffusion::load_diffusers(&model_dir("tiny-a"), &cpu(), LoadOptions::default(), &bad)
            .unwrap_err();
    assert!(
        matches!(err, ModelError::Lora { .. })
            && err.to_string().contains("down_blocks_0_attentions_7"),
        "{err}"
    );
}

#[test]
fn older_diffusers_lora_names_merge_the_same() {
    use ditail::models::load::lora::LoraSpec;
    use ditail::models::tensor_file::{read_tensors, write_tensors};
    // diffusers' pre-PEFT naming: `.lora.down.weight` / `.lora.up.weight`.
    let renamed: BTreeMap<String, burn::prelude::TensorData> =
        read_tensors(&loading("lora-peft.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.replace(".lora_A.weight", ".lora.down.weight")
                        .replace(".lora_B.weight", ".lora.up.weight"),
                    v,
                )
            })
            .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("lora-old-diffusers.safetensors");
    write_tensors(&path, &renamed, None).unwrap();
    let load = |spec: LoraSpec| load_tiny_a("tiny-a.safetensors", &[spec]);
    let old = load(LoraSpec { path, scale: 0.7 });
    let peft = load(LoraSpec {
        path: loading("lora-peft.safetensors"),
        scale: 0.7,
    });
    assert_same("old diffusers names", &old, &peft, |v| v);
}
