//! The Ditail pipeline against the Python reference (`scripts/make_pipeline_fixtures.py`,
//! diffusers modules with hooks, written from METHOD.md) on "tame" tiny models (U-Net
//! `conv_out` scaled by 0.1 so 10-100 step trajectories stay stable):
//! scheduler timesteps and alphas, Pillow-exact preprocessing, prompt encoding, every
//! inversion and sampling step from stored inputs (1e-4 of max |want|), the injected
//! tensors, and whole runs end to end (1e-3 on `final`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::prelude::*;
use common::pipeline::{
    Scenario, check, check_inversion_steps, check_sampling_steps, sites, tame_as, tensor,
};
use common::{cpu, fixtures};
use ditail::models::hook::Recorder;
use ditail::models::tensor_file::read_tensors;
use ditail::models::{Conditioning, Family, LoadOptions};
use ditail::pipeline::inject::InjectionSites;
use ditail::pipeline::prompt::Embeddings;
use ditail::pipeline::run::{check_compatible, generate_from, invert_latents};
use ditail::pipeline::scheduler::{Ddim, SchedulerConfig};
use ditail::pipeline::steps::{SamplingEmbeddings, StepParams, sampling_step};
use ditail::pipeline::{InversionSettings, Mask, Model, SamplingSettings, preprocess};
use serde_json::Value;

/// Tolerance of single steps from stored inputs.
const STEP_TOL: f32 = 1e-4;
/// Tolerance of whole runs on the tame models.
const RUN_TOL: f32 = 1e-3;

fn pipeline_dir() -> std::path::PathBuf {
    fixtures().join("pipeline")
}

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(pipeline_dir().join("meta.json")).unwrap())
        .unwrap()
}

/// A tiny model with its U-Net's `conv_out` scaled by 0.1, as the reference tames it, with
/// the fixture's textual-inversion embeddings (the `civitai` scenario names one).
fn tame(name: &str, device: &Device) -> Model {
    let mut m = tame_as(name, device, LoadOptions::default());
    let db = Embeddings::read_dir(&pipeline_dir().join("embeddings")).unwrap();
    m.set_embeddings(Some(Arc::new(db)));
    m
}

#[test]
fn scheduler_matches_diffusers() {
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(pipeline_dir().join("scheduler.json")).unwrap(),
    )
    .unwrap();
    let cases = s["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let json =
            ditail::models::json::JsonConfig::parse(name.as_ref(), &case["config"].to_string())
                .unwrap();
        let ddim = Ddim::new(SchedulerConfig::from_json(&json).unwrap());
        for (n, want) in case["timesteps"].as_object().unwrap() {
            let want: Vec<i64> = serde_json::from_value(want.clone()).unwrap();
            assert_eq!(
                ddim.timesteps(n.parse().unwrap()).unwrap(),
                want,
                "{name} N={n}"
            );
        }
        let want: Vec<f64> = serde_json::from_value(case["alphas_cumprod"].clone()).unwrap();
        for (i, (a, b)) in ddim.alphas_cumprod().iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs(),
                "{name} alphas_cumprod[{i}]: {a} vs {b}"
            );
        }
        let fin = case["final_alpha_cumprod"].as_f64().unwrap();
        assert!(
            (ddim.final_alpha_cumprod() - fin).abs() < 1e-15,
            "{name} final alpha"
        );
    }
}

#[test]
fn preprocessing_is_pillow_exact() {
    let img = preprocess::load_rgb(&pipeline_dir().join("content.png")).unwrap();
    let g = read_tensors(&pipeline_dir().join("preprocess.safetensors")).unwrap();
    let want = g["resized_u8"]
        .clone()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    let (w, h) = preprocess::resized_dims(img.width(), img.height(), 64);
    let resized = preprocess::resize_bilinear(&img, w, h);
    let got: Vec<f32> = resized.as_raw().iter().map(|&v| v as f32).collect();
    assert_eq!(got, want, "every resized byte equals Pillow's");
    let x = preprocess::preprocess(&img, 64, &cpu()).unwrap();
    check("image", &x, &g["image"], 1e-6);
}

fn scenario(name: &str) -> Scenario {
    common::pipeline::scenario(&meta(), name)
}

/// The sampling embeddings a scenario's fixture stores.
fn stored_embeddings(g: &BTreeMap<String, TensorData>, device: &Device) -> SamplingEmbeddings {
    SamplingEmbeddings {
        uncond: tensor::<3>(g, "emb_uncond", device).into(),
        positive: tensor::<3>(g, "emb_pos", device).into(),
        negative: tensor::<3>(g, "emb_neg", device).into(),
    }
}

/// The parameters of sampling step `i` (timestep `t`) of `spl` on SD1.x.
fn step_params<'a>(model: &Model, spl: &'a SamplingSettings, i: usize, t: i64) -> StepParams<'a> {
    common::pipeline::step_params(model, spl, i, t, sd1_sites())
}

/// The method's sites on SD1.x.
fn sd1_sites() -> &'static InjectionSites {
    sites(Family::Sd1)
}

/// `civitai` reads its prompts as AUTOMATIC1111 does: weights, `BREAK`, two chunks, an
/// embedding in the negative.
const SCENARIOS: [&str; 6] = ["full", "left", "noinj", "prompts", "steps100_50", "civitai"];

#[test]
fn every_step_matches_the_reference() {
    let device = cpu();
    let (s_model, t_model) = (tame("tiny-a", &device), tame("tiny-b", &device));
    for name in SCENARIOS {
        let sc = scenario(name);
        let g = read_tensors(&pipeline_dir().join(&sc.file)).unwrap();

        // Encoding: z0, the scaled inversion condition, the sampling embeddings.
        let img = preprocess::load_rgb(&pipeline_dir().join("content.png")).unwrap();
        let pixels = preprocess::preprocess(&img, 64, &device).unwrap();
        let z0 = s_model.sd().vae.encode_mean(pixels) * s_model.scaling_factor();
        check(&format!("{name} z0"), &z0, &g["z0"], STEP_TOL);
        // Prompts of one sum or batch are padded to one length (long ones take chunks).
        let [pos, neg]: [Conditioning; 2] = s_model
            .conditions(
                &[&sc.inv.prompt, &sc.inv.negative_prompt],
                [64, 80],
                &device,
            )
            .unwrap()
            .try_into()
            .unwrap();
        let cond = pos.context * sc.inv.alpha - neg.context * sc.inv.beta;
        check(&format!("{name} cond_inv"), &cond, &g["cond_inv"], STEP_TOL);
        let [uncond, positive, negative]: [Conditioning; 3] = t_model
            .conditions(
                &["", &sc.spl.prompt, &sc.spl.negative_prompt],
                [64, 80],
                &device,
            )
            .unwrap()
            .try_into()
            .unwrap();
        let emb = SamplingEmbeddings {
            uncond,
            positive,
            negative,
        };
        check(
            &format!("{name} emb_uncond"),
            &emb.uncond.context,
            &g["emb_uncond"],
            STEP_TOL,
        );
        check(
            &format!("{name} emb_pos"),
            &emb.positive.context,
            &g["emb_pos"],
            STEP_TOL,
        );
        check(
            &format!("{name} emb_neg"),
            &emb.negative.context,
            &g["emb_neg"],
            STEP_TOL,
        );

        // Inversion, each step from the stored previous latent; sampling, each step from
        // the stored input latent.
        let cond = tensor::<3>(&g, "cond_inv", &device).into();
        check_inversion_steps(name, &s_model, &g, &cond, sc.inv.steps, STEP_TOL);
        let emb = stored_embeddings(&g, &device);
        check_sampling_steps(name, &t_model, &g, &sc.spl, &emb, sd1_sites(), STEP_TOL);
    }
}

/// The injecting sampling steps on wgpu, where the q/k injection happens inside the WGSL
/// attention kernel (before burn-cubecl's flash attention in a SPIR-V build,
/// `scripts/test_spirv.sh`): each step from stored inputs equals the reference's, under the
/// full mask and the half mask (laid on the layers' odd 2x3, 4x5, 8x10 grids).
#[test]
fn injected_steps_match_the_reference_on_wgpu() {
    use common::gpu_attention_launches;
    use ditail::models::kernels::attention::kernel_enabled;
    let device = common::wgpu_device();
    for name in ["full", "left"] {
        let sc = scenario(name);
        let t_model = tame("tiny-b", &device);
        let g = read_tensors(&pipeline_dir().join(&sc.file)).unwrap();
        let cond = stored_embeddings(&g, &device).prepare(&t_model.sd().unet);
        let spl_ts = t_model.scheduler().timesteps(sc.spl.steps).unwrap();
        let (_, attn_steps) = sc.spl.window_steps();
        assert!(attn_steps >= 2, "{name}: the scenario injects q/k");
        for (i, &t) in spl_ts.iter().enumerate().take(2) {
            let params = step_params(&t_model, &sc.spl, i, t);
            let x_in = tensor::<4>(&g, &format!("step.{i}.x_in"), &device);
            let source = tensor::<4>(&g, &format!("inverted.{t}"), &device);
            let launches = gpu_attention_launches();
            let out = sampling_step(&cond, x_in, source, params);
            check(
                &format!("wgpu {name} step.{i}.noise_pred"),
                &out.noise_pred,
                &g[&format!("step.{i}.noise_pred")],
                STEP_TOL,
            );
            check(
                &format!("wgpu {name} step.{i}.x_out"),
                &out.x,
                &g[&format!("step.{i}.x_out")],
                STEP_TOL,
            );
            if kernel_enabled() {
                assert!(
                    gpu_attention_launches() > launches,
                    "{name}: the kernel ran"
                );
            }
        }
    }
}

#[test]
fn whole_runs_match_the_reference_on_tame_models() {
    let device = cpu();
    let (s_model, t_model) = (tame("tiny-a", &device), tame("tiny-b", &device));
    let img = preprocess::load_rgb(&pipeline_dir().join("content.png")).unwrap();
    for name in SCENARIOS {
        let sc = scenario(name);
        let g = read_tensors(&pipeline_dir().join(&sc.file)).unwrap();
        let inv =
            ditail::pipeline::invert(&s_model, &img, &sc.inv, &device, &mut |_| true).unwrap();
        for (t, z) in inv.latents() {
            check(
                &format!("{name} run inverted.{t}"),
                z,
                &g[&format!("inverted.{t}")],
                RUN_TOL,
            );
        }
        let mut steps = 0;
        let fin = ditail::pipeline::sample(&t_model, &inv, &sc.spl, &device, &mut |p| {
            steps = p.step;
            true
        })
        .unwrap();
        assert_eq!(steps, sc.spl.steps, "progress reports every step");
        let rel = check(&format!("{name} final"), &fin, &g["final"], RUN_TOL);
        eprintln!("{name}: final rel err {rel:e}");
        // Decoding is checked from the stored final latents: a stage test, since the random
        // VAE amplifies the run's accumulated error.
        let decoded = ditail::pipeline::decode(&t_model, tensor(&g, "final", &device)).unwrap();
        check(
            &format!("{name} decoded"),
            &decoded,
            &g["decoded"],
            STEP_TOL,
        );
    }
}

/// f16 is what GPUs run by default: inputs (pixels, noise, saved f32 latents, masks) are
/// cast to the model's type, and a whole run stays near the f32 reference. Single f16
/// forwards are within ~7e-3 of f32 (`tests/half.rs`); 50 inversion + 50 sampling steps
/// with guidance 15 on a random tiny model grow that to ~8e-2 of the largest latent.
#[test]
fn half_precision_runs_track_the_reference() {
    let device = cpu();
    let half = LoadOptions {
        dtype: burn::tensor::FloatDType::F16,
    };
    let (s_model, t_model) = (
        tame_as("tiny-a", &device, half),
        tame_as("tiny-b", &device, half),
    );
    let img = preprocess::load_rgb(&pipeline_dir().join("content.png")).unwrap();
    for name in ["full", "left"] {
        let sc = scenario(name);
        let g = read_tensors(&pipeline_dir().join(&sc.file)).unwrap();
        let inv =
            ditail::pipeline::invert(&s_model, &img, &sc.inv, &device, &mut |_| true).unwrap();
        let fin = ditail::pipeline::sample(&t_model, &inv, &sc.spl, &device, &mut |_| true)
            .unwrap()
            .cast(burn::tensor::FloatDType::F32);
        let rel = check(&format!("{name} f16 final"), &fin, &g["final"], 0.15);
        eprintln!("{name}: f16 final rel err {rel:e}");
    }
}

#[test]
fn dropping_the_source_branch_changes_nothing() {
    let device = cpu();
    let (s_model, t_model) = (tame("tiny-a", &device), tame("tiny-b", &device));
    let img = preprocess::load_rgb(&pipeline_dir().join("content.png")).unwrap();
    let sc = scenario("full");
    let inv = ditail::pipeline::invert(&s_model, &img, &sc.inv, &device, &mut |_| true).unwrap();
    let mut plain = sc.spl.clone();
    plain.always_batch_source = true;
    let a = ditail::pipeline::sample(&t_model, &inv, &plain, &device, &mut |_| true).unwrap();
    let b = ditail::pipeline::sample(&t_model, &inv, &sc.spl, &device, &mut |_| true).unwrap();
    let diff = (a - b).abs().max().into_scalar::<f32>();
    assert!(diff <= 1e-6, "optimised and plain paths differ by {diff}");

    // The capture pass really stops after up_blocks[1]: its output is that block's
    // hidden state (at a quarter of the latent size), not a noise prediction.
    let z = inv.start().clone();
    let mut capture = Recorder::capture_only(sd1_sites().conv.clone());
    let out = t_model.sd().unet.forward(
        z,
        901.0,
        t_model.encode_prompt("", &device).unwrap(),
        &mut capture,
    );
    assert_eq!(capture.captured.len(), 1);
    assert_eq!(
        out.dims()[2..],
        [4, 5],
        "stopped after up_blocks[1], whose output is 4x5"
    );
}

#[test]
fn text_to_image_matches_step_by_step() {
    let device = cpu();
    let t_model = tame("tiny-b", &device);
    let g = read_tensors(&pipeline_dir().join("t2i.safetensors")).unwrap();
    let m = meta();
    let s = &m["t2i"]["settings"];
    let steps = s["steps"].as_u64().unwrap() as usize;
    let omega = s["omega"].as_f64().unwrap();
    let pos = t_model
        .encode_prompt(s["prompt"].as_str().unwrap(), &device)
        .unwrap();
    let neg = t_model
        .encode_prompt(s["negative"].as_str().unwrap(), &device)
        .unwrap();
    check("t2i emb_pos", &pos, &g["emb_pos"], STEP_TOL);
    check("t2i emb_neg", &neg, &g["emb_neg"], STEP_TOL);
    let ts = t_model.scheduler().timesteps(steps).unwrap();
    let ratio = t_model.scheduler().step_ratio(steps);
    let pair = t_model.sd().unet.prepare(Conditioning::cat(vec![
        pos.clone().into(),
        neg.clone().into(),
    ]));
    for (i, &t) in ts.iter().enumerate() {
        let x_in = tensor::<4>(&g, &format!("step.{i}.x_in"), &device);
        let (x, eps) = ditail::pipeline::steps::guided_step(
            &pair,
            x_in,
            t,
            omega,
            t_model.scheduler().alpha(t),
            t_model.scheduler().alpha(t - ratio),
        );
        check(
            &format!("t2i step.{i}.eps"),
            &eps,
            &g[&format!("step.{i}.eps")],
            STEP_TOL,
        );
        check(
            &format!("t2i step.{i}.x_out"),
            &x,
            &g[&format!("step.{i}.x_out")],
            STEP_TOL,
        );
    }
    let fin = generate_from(
        &t_model,
        tensor(&g, "noise", &device),
        pos.into(),
        neg.into(),
        omega,
        &ts,
        steps,
        &mut |_| true,
    )
    .unwrap();
    check("t2i final", &fin, &g["final"], RUN_TOL);
}

#[test]
fn invalid_settings_fail_before_any_network_runs() {
    let device = cpu();
    let t_model = tame("tiny-b", &device);
    let s_model = tame("tiny-a", &device);
    let img = preprocess::load_rgb(&pipeline_dir().join("content.png")).unwrap();
    let mut inv_settings = InversionSettings::new("a cat");
    inv_settings.steps = 10;
    inv_settings.size = 64;
    let mut calls = 0;
    let inv = ditail::pipeline::invert(&s_model, &img, &inv_settings, &device, &mut |_| {
        calls += 1;
        true
    })
    .unwrap();
    assert_eq!(calls, 10);

    let bad = |f: &dyn Fn(&mut SamplingSettings)| {
        let mut s = SamplingSettings::new("a cat");
        s.steps = 10;
        f(&mut s);
        let mut steps = 0;
        let err = ditail::pipeline::sample(&t_model, &inv, &s, &device, &mut |_| {
            steps += 1;
            true
        })
        .unwrap_err()
        .to_string();
        assert_eq!(steps, 0, "{err}: no step ran before the error");
        assert_eq!(
            check_compatible(&t_model, &inv, &s)
                .unwrap_err()
                .to_string(),
            err
        );
        err
    };
    assert!(bad(&|s| s.conv_ratio = 1.5).contains("conv ratio 1.5"));
    assert!(bad(&|s| s.attn_ratio = -0.1).contains("attn ratio"));
    assert!(bad(&|s| s.steps = 7).contains("Z["));
    assert!(bad(&|s| s.omega = f64::NAN).contains("omega"));
    assert!(
        bad(&|s| s.mask = Mask::Image {
            width: 2,
            height: 2,
            values: vec![0.0; 4]
        })
        .contains("black")
    );

    // 100 inversion steps serve 50 sampling steps; 300 and 100 do not fit.
    let ddim = t_model.scheduler();
    let inv100: Vec<i64> = ddim.timesteps(100).unwrap();
    assert!(
        ddim.timesteps(50)
            .unwrap()
            .iter()
            .all(|t| inv100.contains(t))
    );
    let inv300 = ddim.timesteps(300).unwrap();
    assert!(
        !ddim
            .timesteps(100)
            .unwrap()
            .iter()
            .all(|t| inv300.contains(t))
    );

    // Cancellation between steps.
    let err = invert_latents(
        &s_model,
        inv.z0().clone(),
        s_model.encode_prompt("a", &device).unwrap().into(),
        &[1, 101],
        &mut |_| false,
    )
    .unwrap_err();
    assert!(matches!(err, ditail::pipeline::PipelineError::Cancelled));
}

#[test]
fn latents_file_round_trips_with_metadata() {
    let device = cpu();
    let s_model = tame("tiny-a", &device);
    let img = preprocess::load_rgb(&pipeline_dir().join("content.png")).unwrap();
    let mut settings = InversionSettings::new("a cat");
    settings.steps = 4;
    settings.size = 64;
    let inv = ditail::pipeline::invert(&s_model, &img, &settings, &device, &mut |_| true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latents.safetensors");
    ditail::pipeline::latents::save(&path, &inv, Some(inv.start())).unwrap();
    let raw = read_tensors(&path).unwrap();
    let mut keys: Vec<&String> = raw.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "final",
            "inverted.1",
            "inverted.251",
            "inverted.501",
            "inverted.751",
            "z0"
        ]
    );
    let (back, fin) = ditail::pipeline::latents::load(&path, &device).unwrap();
    assert_eq!(back.meta(), inv.meta());
    assert!(fin.is_some());
    for (t, z) in inv.latents() {
        check(
            &format!("reloaded {t}"),
            &back.latents()[t],
            &z.clone().into_data(),
            0.0,
        );
    }
    std::fs::write(&path, b"not a latents file").unwrap();
    assert!(
        ditail::pipeline::latents::load(&path, &device)
            .unwrap_err()
            .to_string()
            .contains("latents.safetensors")
    );
}

/// A 48 x 32 JPEG, blue with a red 16 x 16 block at the top left, with an EXIF APP1 segment
/// (a little-endian TIFF header, one IFD entry: 0x0112 Orientation = `orientation`) spliced
/// in after SOI when `orientation` is given.
fn jpeg_with_orientation(orientation: Option<u16>) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 32, |x, y| {
        if x < 16 && y < 16 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&img)
        .unwrap();
    assert_eq!(jpeg[..2], [0xFF, 0xD8], "SOI");
    let Some(orientation) = orientation else {
        return jpeg;
    };
    let mut tiff = b"II\x2A\x00\x08\x00\x00\x00".to_vec(); // header, IFD at offset 8
    tiff.extend(1u16.to_le_bytes()); // one entry
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation
    tiff.extend(3u16.to_le_bytes()); // SHORT
    tiff.extend(1u32.to_le_bytes()); // one value
    tiff.extend(u32::from(orientation).to_le_bytes()); // the value, left-justified
    tiff.extend(0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend(tiff);
    let mut segment = vec![0xFF, 0xE1];
    segment.extend((app1.len() as u16 + 2).to_be_bytes());
    segment.extend(app1);
    let rest = jpeg.split_off(2);
    jpeg.extend(segment);
    jpeg.extend(rest);
    jpeg
}

fn is_red(p: image::Rgb<u8>) -> bool {
    p[0] > 200 && p[2] < 60
}

fn is_blue(p: image::Rgb<u8>) -> bool {
    p[2] > 200 && p[0] < 60
}

#[test]
fn exif_orientation_is_applied_before_preprocessing() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.jpg");
    std::fs::write(&plain, jpeg_with_orientation(None)).unwrap();
    let img = preprocess::load_rgb(&plain).unwrap();
    assert_eq!(img.dimensions(), (48, 32));
    assert!(is_red(*img.get_pixel(8, 8)) && is_blue(*img.get_pixel(40, 8)));

    // Orientation 6: the camera was turned, the picture is shown rotated 90° clockwise, so
    // the stored top-left block is at the top right.
    let rotated = tmp.path().join("phone.jpg");
    std::fs::write(&rotated, jpeg_with_orientation(Some(6))).unwrap();
    let img = preprocess::load_rgb(&rotated).unwrap();
    assert_eq!(img.dimensions(), (32, 48), "width and height swap");
    assert!(
        is_red(*img.get_pixel(24, 8)),
        "top right: {:?}",
        img.get_pixel(24, 8)
    );
    for (x, y) in [(8, 8), (8, 40), (24, 40)] {
        assert!(
            is_blue(*img.get_pixel(x, y)),
            "({x}, {y}): {:?}",
            img.get_pixel(x, y)
        );
    }
    // A mask is read upright too.
    let Mask::Image { width, height, .. } = Mask::from_image(&rotated).unwrap() else {
        panic!("an image mask");
    };
    assert_eq!((width, height), (32, 48));
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend(kind);
    c.extend(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend(data);
    c.extend(crc32(&crc_input).to_be_bytes());
    c
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    assert_eq!(
        crc32(b"IEND"),
        0xAE42_6082,
        "the CRC this test writes chunks with"
    );
    let tmp = tempfile::tempdir().unwrap();
    // A PNG header claiming 30000 x 30000 RGB (2.7 GB decoded), and no image data at all.
    let mut ihdr = 30000u32.to_be_bytes().to_vec();
    ihdr.extend(30000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter method, not interlaced
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IEND", &[]));
    let bomb = tmp.path().join("bomb.png");
    std::fs::write(&bomb, &png).unwrap();
    assert!(png.len() < 100);

    // A real JPEG whose frame header (SOF0) is patched to claim 20000 x 30000.
    let mut jpeg = jpeg_with_orientation(None);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    jpeg[sof + 5..sof + 7].copy_from_slice(&30000u16.to_be_bytes()); // height
    jpeg[sof + 7..sof + 9].copy_from_slice(&20000u16.to_be_bytes()); // width
    let jpeg_bomb = tmp.path().join("bomb.jpg");
    std::fs::write(&jpeg_bomb, &jpeg).unwrap();

    for (path, dims) in [(&bomb, "30000 x 30000"), (&jpeg_bomb, "20000 x 30000")] {
        let start = std::time::Instant::now();
        let errors = [
            preprocess::load_rgb(path).unwrap_err(),
            Mask::from_image(path).unwrap_err(),
        ];
        for err in errors {
            assert!(
                matches!(err, ditail::pipeline::PipelineError::ImageTooLarge { .. }),
                "{}: {err:?}",
                path.display()
            );
            let msg = err.to_string();
            assert!(
                msg.contains(dims) && msg.contains(&path.display().to_string()),
                "{msg}"
            );
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{}: {:?}",
            path.display(),
            start.elapsed()
        );
    }
    // The limit itself: 2^26 pixels pass the header check.
    assert_eq!(preprocess::MAX_IMAGE_PIXELS, 1 << 26);
}
