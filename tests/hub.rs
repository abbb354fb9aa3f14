//! Hugging Face hub ids through the standard cache layout (`models--org--name/refs/main`,
//! `snapshots/<commit>/...`), offline: a cached repo loads; a missing one is an error that
//! says what is missing and where it looked.

mod common;

use std::path::Path;

use common::{cpu, model_dir};
use ditail::models::load::hub::{HubOptions, is_hub_id, resolve, resolve_vae};
use ditail::models::{LoadOptions, ModelError, StableDiffusion};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn cached_repos_load_offline_and_missing_ones_say_where_they_looked() {
    let cache = tempfile::tempdir().unwrap();
    let opts = HubOptions {
        cache_dir: cache.path().to_path_buf(),
        offline: true,
    };

    assert!(is_hub_id("runwayml/stable-diffusion-v1-5") && is_hub_id("org/name@v2"));
    assert!(
        !is_hub_id("just-a-name")
            && !is_hub_id("a/b/c")
            && !is_hub_id(model_dir("tiny-a").to_str().unwrap())
    );

    let err = resolve("someone/not-cached", &opts, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Hub { .. }), "{err:?}");
    assert!(
        msg.contains("someone/not-cached")
            && msg.contains("model_index.json")
            && msg.contains(&cache.path().display().to_string())
            && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );

    // The layout huggingface_hub and hf-hub share.
    let repo = cache.path().join("models--ditail--tiny-a");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    copy_dir(
        &model_dir("tiny-a"),
        &repo.join("snapshots/0123456789abcdef"),
    );
    let dir = resolve("ditail/tiny-a", &opts, false).unwrap();
    assert_eq!(dir, repo.join("snapshots/0123456789abcdef"));
    StableDiffusion::load_diffusers(&dir, &cpu(), LoadOptions::default(), &[]).unwrap();
    // As a VAE override, a pipeline repo gives its `vae/`; a VAE repo (sd-vae-ft-mse style,
    // the model at the root) gives its root.
    assert_eq!(
        resolve_vae("ditail/tiny-a", &opts, false).unwrap(),
        dir.join("vae")
    );
    let vae_repo = cache.path().join("models--ditail--tiny-vae");
    std::fs::create_dir_all(vae_repo.join("refs")).unwrap();
    std::fs::write(vae_repo.join("refs/main"), "fedcba").unwrap();
    copy_dir(
        &model_dir("tiny-a").join("vae"),
        &vae_repo.join("snapshots/fedcba"),
    );
    assert_eq!(
        resolve_vae("ditail/tiny-vae", &opts, false).unwrap(),
        vae_repo.join("snapshots/fedcba")
    );
    let msg = resolve_vae("ditail/no-vae", &opts, false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ditail/no-vae") && msg.contains("config.json"),
        "{msg}"
    );

    // A revision that is not cached is not silently replaced by main.
    let msg = resolve("ditail/tiny-a@v2", &opts, false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("ditail/tiny-a@v2"), "{msg}");

    // Weights missing from a cached repo are named, with both precisions tried.
    std::fs::remove_file(
        repo.join("snapshots/0123456789abcdef/unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let msg = resolve("ditail/tiny-a", &opts, false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unet/diffusion_pytorch_model.safetensors")
            && msg.contains("unet/diffusion_pytorch_model.fp16.safetensors"),
        "{msg}"
    );
}

/// An SDXL pipeline repo: `model_index.json` names `text_encoder_2`, so its second text
/// encoder and tokenizer are fetched too (a missing one is named), and the snapshot loads
/// as SDXL with the second tokenizer padding with `!`.
#[test]
fn cached_sdxl_repos_bring_their_second_text_encoder() {
    let cache = tempfile::tempdir().unwrap();
    let opts = HubOptions {
        cache_dir: cache.path().to_path_buf(),
        offline: true,
    };
    let repo = cache.path().join("models--ditail--tiny-xl");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc").unwrap();
    let snapshot = repo.join("snapshots/abc");
    copy_dir(&model_dir("tiny-xl"), &snapshot);
    let dir = resolve("ditail/tiny-xl", &opts, false).unwrap();
    let sd = StableDiffusion::load_diffusers(&dir, &cpu(), LoadOptions::default(), &[]).unwrap();
    assert_eq!(sd.family(), ditail::models::Family::Sdxl);
    let ids = sd
        .text_encoder_2
        .as_ref()
        .unwrap()
        .tokenizer
        .encode("a")
        .unwrap();
    assert_eq!(ids.last(), Some(&0), "padded with `!`");

    std::fs::remove_file(snapshot.join("text_encoder_2/model.safetensors")).unwrap();
    let msg = resolve("ditail/tiny-xl", &opts, false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("text_encoder_2/model.safetensors"), "{msg}");
}
