//! The same parity checks on burn's wgpu backend (in CI: Mesa's lavapipe, a software Vulkan
//! driver, which `.ci/run` installs), on tiny-a: text encoder, VAE, and the U-Net at a
//! latent size that is not a multiple of 8. Tolerance as on the CPU: 1e-4 of max |want|.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::prelude::*;
use common::{assert_close, golden, model_dir};
use ditail::backend::Backend;
use ditail::models::LoadOptions;
use ditail::models::components::run_components;

const TOL: f32 = 1e-4;

fn wgpu_device() -> Device {
    let device = Backend::Wgpu
        .device()
        .expect("the default features include wgpu");
    let probe = catch_unwind(AssertUnwindSafe(|| {
        Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>()
    }));
    match probe {
        Ok(v) => assert_eq!(v, 4.0, "the wgpu adapter computes 1+1+1+1 wrong"),
        Err(_) => panic!(
            "no usable wgpu adapter: install a Vulkan driver (on Debian/Ubuntu without a GPU: \
             `apt-get install mesa-vulkan-drivers libvulkan1`, as .ci/run does)"
        ),
    }
    device
}

#[test]
fn tiny_model_matches_diffusers_on_wgpu() {
    let device = wgpu_device();
    let model = "tiny-a";
    for (file, inputs, outputs) in [
        (
            "text.safetensors",
            &["input_ids"][..],
            &["text_embeddings", "text_embeddings_penultimate"][..],
        ),
        (
            "vae.safetensors",
            &["image", "latents"],
            &["posterior_mean", "decoded"],
        ),
        (
            "unet_odd.safetensors",
            &["sample", "timestep", "encoder_hidden_states"],
            &["noise_pred"],
        ),
    ] {
        let g = golden(model, file);
        let inputs = inputs
            .iter()
            .map(|k| (k.to_string(), g[*k].clone()))
            .collect();
        let out =
            run_components(&model_dir(model), &inputs, &device, LoadOptions::default()).unwrap();
        for key in outputs {
            let rel = assert_close(&format!("wgpu {model} {key}"), &out[*key], &g[*key], TOL);
            eprintln!("wgpu {model} {key}: rel err {rel:e}");
        }
    }
}
