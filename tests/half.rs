//! Half precision (what GPUs run by default): every network loaded as f16 stays within
//! 1e-2 (relative to the largest value) of diffusers' f32 outputs on the tiny models.

mod common;

use burn::prelude::*;
use burn::tensor::FloatDType;
use common::{MODELS, assert_close, check_components, cpu, golden, model_dir, unet_cases};
use ditail::models::LoadOptions;
use ditail::models::NoControl;
use ditail::models::load::load_unet;

const HALF: LoadOptions = LoadOptions {
    dtype: FloatDType::F16,
};
const TOL: f32 = 1e-2;

fn f32_data(t: TensorData) -> TensorData {
    t.convert::<f32>()
}

#[test]
fn f16_networks_stay_near_diffusers_f32() {
    let device = cpu();
    for model in MODELS {
        for (file, inputs, outputs) in [
            (
                "text.safetensors",
                &["input_ids"][..],
                &["text_embeddings", "text_embeddings_penultimate"][..],
            ),
            (
                "vae.safetensors",
                &["image", "latents"][..],
                &["posterior_mean", "decoded"][..],
            ),
        ] {
            let g = golden(model, file);
            let label = format!("{model} f16");
            check_components(&label, &model_dir(model), &g, inputs, outputs, HALF, TOL);
        }
        let (unet, _) = load_unet(&model_dir(model).join("unet"), &device, HALF).unwrap();
        for case in unet_cases(model) {
            let g = golden(model, &case);
            let sample = Tensor::<4>::from_data(g["sample"].clone(), &device).cast(FloatDType::F16);
            let context = Tensor::<3>::from_data(g["encoder_hidden_states"].clone(), &device)
                .cast(FloatDType::F16);
            let t = g["timestep"]
                .clone()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap()[0];
            let out = unet.forward(sample, t, context, &mut NoControl).into_data();
            let rel = assert_close(
                &format!("{model} f16 {case}"),
                &f32_data(out),
                &g["noise_pred"],
                TOL,
            );
            eprintln!("{model} f16 {case}: rel err {rel:e}");
        }
    }
}
