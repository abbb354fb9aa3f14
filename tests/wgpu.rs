//! The same parity checks on burn's wgpu backend (in CI: Mesa's lavapipe, a software Vulkan
//! driver, which `.ci/run` installs), on both tiny models: text encoder, VAE, and the U-Net
//! at a latent size that is not a multiple of 8. Tolerance as on the CPU: 1e-4 of max |want|.
//! The U-Net's and VAE's attention runs the WGSL kernel here (the default on wgpu; burn-cubecl's
//! flash attention in a SPIR-V build, `scripts/test_spirv.sh`), so this is also "the whole
//! U-Net with the kernel equals diffusers without it".

mod common;

use burn::prelude::*;
use common::{assert_close, golden, gpu_attention_launches, model_dir, wgpu_device};
use ditail::models::LoadOptions;
use ditail::models::kernels::attention::kernel_enabled;
use ditail_golden::run_components;

const TOL: f32 = 1e-4;

#[test]
fn tiny_models_match_diffusers_on_wgpu() {
    let device = wgpu_device();
    for model in common::MODELS {
        check_model(model, &device);
    }
}

fn check_model(model: &str, device: &Device) {
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
        let launches = gpu_attention_launches();
        let out =
            run_components(&model_dir(model), &inputs, device, LoadOptions::default()).unwrap();
        if file != "text.safetensors" && kernel_enabled() {
            assert!(
                gpu_attention_launches() > launches,
                "{model} {file}: the attention kernel did not run on wgpu"
            );
        }
        for key in outputs {
            let rel = assert_close(&format!("wgpu {model} {key}"), &out[*key], &g[*key], TOL);
            eprintln!("wgpu {model} {key}: rel err {rel:e}");
        }
    }
}

/// A SPIR-V build (`--features vulkan`, `scripts/test_spirv.sh`) runs SPIR-V on an adapter
/// with explicit workgroup layout (lavapipe through the script's shim), and refuses one
/// without it (lavapipe alone) by name before any kernel, where it used to crash the driver.
#[cfg(feature = "vulkan")]
#[test]
fn a_spirv_build_refuses_adapters_it_would_compile_invalid_shaders_for() {
    use ditail::models::device::{Backend, Compute, wgpu_adapters};
    use ditail::models::gpu;
    let adapter = &wgpu_adapters()[0];
    let chosen = Compute::select_device(Some(Backend::Wgpu), None, Some(0));
    if adapter.takes_spirv {
        let c = chosen.unwrap();
        assert_eq!(gpu::info(&c.device).unwrap().compiler, gpu::SPIRV_COMPILER);
    } else {
        let msg = chosen.unwrap_err().to_string();
        assert!(
            msg.contains("VK_KHR_workgroup_memory_explicit_layout") && msg.contains(&adapter.name),
            "{msg}"
        );
    }
}

/// `--device N` on wgpu: the N-th adapter `ditail devices` lists (lavapipe here, a
/// software adapter, which burn names by its kind), and an index beyond them refused with
/// the list.
#[test]
fn a_wgpu_device_is_picked_by_its_index_in_the_adapter_list() {
    use ditail::models::device::{Backend, Compute, wgpu_adapters};
    let adapters = wgpu_adapters();
    assert!(
        !adapters.is_empty(),
        "no wgpu adapter (install mesa-vulkan-drivers)"
    );
    let c = Compute::select_device(Some(Backend::Wgpu), None, Some(0)).unwrap();
    assert_eq!(c.backend, Backend::Wgpu);
    // The device answers: a small sum on it.
    let t = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &c.device);
    assert_eq!(t.sum().into_scalar::<f32>(), 6.0);
    let n = adapters.len();
    let err = Compute::select_device(Some(Backend::Wgpu), None, Some(n)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("wgpu has no device {n}")) && msg.contains(&adapters[0].name),
        "{msg}"
    );
}

/// The im2col columns kernel (`kernels::conv::columns`, the f16 convolutions' gather on a
/// GPU) against the same columns in tensor ops on the same device: a gather, so equal to
/// the bit, in f16 and f32, for SD's 3x3 layers (stride 1 and 2, the VAE encoder's
/// asymmetric padding), bands that start inside the map, a 1x1 window, an odd-sized map,
/// an input that is a strided view, and inputs enlarged twice by nearest neighbour on the
/// way (the upsamplers' convolutions).
#[test]
fn the_columns_kernel_gathers_what_the_tensor_ops_do() {
    use burn::tensor::{DType, Distribution};
    use ditail::models::kernels::conv::columns::{columns, columns_reference};
    let device = wgpu_device();
    // (channels, h, w, kernel, stride, [top, bottom, left, right], [first row, rows],
    // enlargement)
    let cases = [
        (8, 16, 16, 3, 1, [1, 1, 1, 1], [0, 16], 1),
        (8, 16, 16, 3, 1, [1, 1, 1, 1], [4, 8], 1),
        (5, 16, 16, 3, 2, [1, 1, 1, 1], [0, 8], 1),
        (5, 16, 16, 3, 2, [0, 1, 0, 1], [3, 4], 1),
        (3, 13, 9, 3, 1, [1, 1, 1, 1], [12, 1], 1),
        (4, 7, 7, 1, 1, [0, 0, 0, 0], [0, 7], 1),
        (4, 9, 11, 3, 1, [0, 0, 0, 0], [2, 5], 1),
        (8, 8, 8, 3, 1, [1, 1, 1, 1], [0, 16], 2),
        (8, 8, 8, 3, 1, [1, 1, 1, 1], [5, 8], 2),
        (3, 5, 7, 3, 1, [1, 1, 1, 1], [0, 10], 2),
    ];
    for dtype in [DType::F32, DType::F16] {
        for (c, h, w, k, s, padding, rows, up) in cases {
            let x = Tensor::<4>::random([2, c, h, w], Distribution::Normal(0.0, 1.0), &device)
                .cast(dtype);
            let got = columns(x.clone(), [k, k], [s, s], padding, rows, up).into_data();
            let want = columns_reference(x, [k, k], [s, s], padding, rows, up).into_data();
            assert_eq!(
                got, want,
                "{dtype:?} {c}x{h}x{w} k{k} s{s} {padding:?} {rows:?} x{up}"
            );
        }
        // A strided view: channels and width swapped back from a transposed copy.
        let t =
            Tensor::<4>::random([2, 16, 6, 8], Distribution::Normal(0.0, 1.0), &device).cast(dtype);
        let view = t.swap_dims(1, 3);
        let got = columns(view.clone(), [3, 3], [1, 1], [1, 1, 1, 1], [0, 6], 1).into_data();
        let want = columns_reference(view, [3, 3], [1, 1], [1, 1, 1, 1], [0, 6], 1).into_data();
        assert_eq!(got, want, "{dtype:?} strided view");
    }
}
