//! `ditail eval`'s networks, preprocessing and metrics against transformers and
//! pytorch-fid: the golden files `scripts/make_eval_fixtures.py` wrote with tiny
//! random-weight CLIP and DINO models of the exact structure, and the full-size InceptionV3
//! with weights from a counter hash that this file regenerates (so no weights are
//! committed for it).
//!
//! Tolerances: whole tensors `max |ours - reference| <= 1e-4 * max |reference|`; the
//! metrics within 1e-4 relative; 8-bit resampling exact (equal after /255).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use burn::prelude::*;
use common::hash_inception::write_hash_inception;
use common::{assert_close, cpu, fixtures};

use ditail::eval::fid::{Features, frechet_distance};
use ditail::eval::metrics::structure_distances;
use ditail::eval::nets::inception::INPUT_SIDE;
use ditail::eval::nets::load::{load_clip, load_inception, load_vit};
use ditail::eval::preprocess::DinoResize;
use ditail::eval::{pairing, preprocess};
use ditail::models::load::hub::HubOptions;
use ditail::models::tensor_file::read_tensors;
use ditail::pipeline::preprocess::load_rgb;
use serde_json::Value;

const TOL: f32 = 1e-4;

fn dir() -> PathBuf {
    fixtures().join("eval")
}

fn golden() -> BTreeMap<String, TensorData> {
    read_tensors(&dir().join("golden.safetensors")).expect("tests/fixtures/eval/golden.safetensors")
}

/// [`assert_close`], printing the error found.
fn close(what: &str, got: &TensorData, want: &TensorData, tol: f32) {
    let rel = assert_close(what, got, want, tol);
    eprintln!("{what}: max error {rel:.2e} of max |reference|");
}

fn offline() -> HubOptions {
    HubOptions {
        cache_dir: std::env::temp_dir().join("ditail-eval-no-hub"),
        offline: true,
    }
}

fn images(which: &str) -> Vec<PathBuf> {
    pairing::list_images(&dir().join("images").join(which)).unwrap()
}

/// The images of `which` as ditail reads them (JPEGs exactly as Pillow: see
/// `jpeg_decoding_equals_pillows` and tests/jpeg.rs).
fn pillow_images(which: &str) -> Vec<image::RgbImage> {
    images(which).iter().map(|p| load_rgb(p).unwrap()).collect()
}

#[test]
fn jpeg_decoding_equals_pillows() {
    let ours = load_rgb(&dir().join("images/content/d.jpg")).unwrap();
    let d = &golden()["jpeg_d_decoded"];
    let [h, w] = [d.shape()[0], d.shape()[1]];
    let pillow: Vec<u8> = d
        .clone()
        .try_into_vec::<i64>()
        .unwrap()
        .iter()
        .map(|&x| x as u8)
        .collect();
    assert_eq!(ours.dimensions(), (w as u32, h as u32));
    assert!(ours.as_raw() == &pillow, "d.jpg: not Pillow's pixels");
}

fn stack(planes: Vec<Vec<f32>>, side: usize) -> TensorData {
    let n = planes.len();
    TensorData::new(planes.concat(), [n, 3, side, side])
}

/// A one-element golden tensor (`read_tensors` gives float64 ones as f32: 7 digits, ample
/// for tolerances of 1e-5 and more).
fn scalar(g: &BTreeMap<String, TensorData>, key: &str) -> f64 {
    g[key].clone().try_into_vec::<f32>().unwrap()[0] as f64
}

fn assert_rel(what: &str, got: f64, want: f64, tol: f64) {
    let rel = (got - want).abs() / want.abs().max(1e-12);
    eprintln!("{what}: ours {got:.8e}, reference {want:.8e}, rel err {rel:.2e}");
    assert!(
        rel <= tol,
        "{what}: {got} vs {want} (rel err {rel:e} > {tol:e})"
    );
}

#[test]
fn clip_preprocessing_tokens_and_score_match_transformers() {
    check_clip(&dir().join("clip-tiny"), &golden());
}

#[test]
fn dino_preprocessing_keys_and_structure_distance_match_transformers() {
    check_dino(&dir().join("dino-tiny"), &golden());
}

/// The real configurations with random weights (CLIP ViT-L/14: 428 M parameters, DINO
/// ViT-B/8), on the same images; needs
/// `.venv/bin/python scripts/make_eval_fixtures.py --full-size fixtures-full`, then
/// `cargo test --test eval -- --ignored`.
#[test]
#[ignore = "full size: needs fixtures-full/eval (scripts/make_eval_fixtures.py --full-size)"]
fn full_size_clip_and_dino_match_transformers() {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures-full/eval");
    let g = read_tensors(&full.join("golden.safetensors"))
        .expect("fixtures-full/eval/golden.safetensors");
    check_clip(&full.join("clip"), &g);
    check_dino(&full.join("dino"), &g);
}

fn check_clip(model: &std::path::Path, g: &BTreeMap<String, TensorData>) {
    let results = images("results");
    let pixels: Vec<Vec<f32>> = results
        .iter()
        .map(|p| preprocess::clip_pixels(&load_rgb(p).unwrap(), 224))
        .collect();
    // Pillow-exact 8-bit resampling: only float rounding of the normalisation differs.
    close(
        "clip pixel_values 0",
        &stack(pixels[..1].to_vec(), 224),
        &g["clip_pixel_values_0"],
        1e-6,
    );

    let clip = load_clip(model.to_str().unwrap(), &cpu(), &offline()).unwrap();
    let prompts = pairing::read_prompts(&dir().join("images/prompts.txt")).unwrap();
    let ids: Vec<Vec<u32>> = results
        .iter()
        .map(|p| clip.tokenizer.encode(&prompts[&pairing::stem(p)]).unwrap())
        .collect();
    let want_ids: Vec<i64> = g["clip_input_ids"].clone().try_into_vec().unwrap();
    let got_ids: Vec<i64> = ids.iter().flatten().map(|&t| t as i64).collect();
    assert_eq!(got_ids, want_ids, "token ids");

    let device = cpu();
    let px = Tensor::<4>::from_data(stack(pixels, 224), &device);
    let (hidden, _) = clip.model.vision_model.forward(px.clone()).unwrap();
    close(
        "vision last_hidden_state",
        &hidden.into_data(),
        &g["clip_vision_last_hidden"],
        TOL,
    );
    let image = clip.model.image_features(px).unwrap();
    let text = clip.model.text_features(&ids, &device).unwrap();
    close(
        "image_embeds",
        &image.clone().into_data(),
        &g["clip_image_embeds"],
        TOL,
    );
    close(
        "text_embeds",
        &text.clone().into_data(),
        &g["clip_text_embeds"],
        TOL,
    );
    let logits = clip.model.logits_per_text(text, image);
    close(
        "logits_per_text",
        &logits.clone().into_data(),
        &g["clip_logits_per_text"],
        TOL,
    );
    let scores = ditail::eval::metrics::clip_scores(logits);
    let want: Vec<f32> = g["clip_scores"].clone().try_into_vec().unwrap();
    // Each score within 1e-4 of the largest, as the tensors above are compared: a cosine
    // near zero has no relative precision (the full-size random weights put one at 6.7e-4
    // beside a largest of 4.0e-2, where a difference of 8e-8 is a relative 1.2e-4).
    let scale = want.iter().fold(1e-12f64, |m, w| m.max(w.abs() as f64));
    for (i, (s, w)) in scores.iter().zip(&want).enumerate() {
        let err = (s - *w as f64).abs() / scale;
        eprintln!(
            "clip score {i}: ours {s:.8e}, reference {w:.8e}, error {err:.2e} of the largest"
        );
        assert!(
            err <= 1e-4,
            "clip score {i}: {s} vs {w} ({err:e} of the largest)"
        );
    }
}

fn check_dino(model: &std::path::Path, g: &BTreeMap<String, TensorData>) {
    let side = 224;
    let planes = |which: &str, resize| -> Vec<Vec<f32>> {
        pillow_images(which)
            .iter()
            .map(|img| preprocess::dino_pixels(img, side, resize))
            .collect()
    };
    // torchvision >= 0.17's antialiased resize, behind `--dino-antialias`.
    close(
        "dino pixels content 2 (antialiased)",
        &stack(
            planes("content", DinoResize::Antialiased)[2..3].to_vec(),
            224,
        ),
        &g["dino_pixel_values_content_2_antialias"],
        1e-5,
    );
    close(
        "dino pixels results 0 (antialiased)",
        &stack(
            planes("results", DinoResize::Antialiased)[..1].to_vec(),
            224,
        ),
        &g["dino_pixel_values_results_0_antialias"],
        1e-5,
    );
    // The reference's torchvision 0.16.1: no antialiasing (the default).
    let (content, results) = (
        planes("content", DinoResize::Reference),
        planes("results", DinoResize::Reference),
    );
    // Float resampling: rounding differences only.
    close(
        "dino pixels content",
        &stack(content.clone(), 224),
        &g["dino_pixel_values_content"],
        1e-5,
    );
    close(
        "dino pixels results 0",
        &stack(results[..1].to_vec(), 224),
        &g["dino_pixel_values_results_0"],
        1e-5,
    );

    let vit = load_vit(model.to_str().unwrap(), &cpu(), &offline()).unwrap();
    let device = cpu();
    let layer = vit.num_layers() - 1;
    let kc = vit
        .keys(Tensor::from_data(stack(content, 224), &device), layer)
        .unwrap();
    let kr = vit
        .keys(Tensor::from_data(stack(results, 224), &device), layer)
        .unwrap();
    close(
        "keys content",
        &kc.clone().into_data(),
        &g["dino_keys_content"],
        TOL,
    );
    close(
        "keys results",
        &kr.clone().into_data(),
        &g["dino_keys_results"],
        TOL,
    );
    let sim0 = ditail::eval::metrics::self_similarity(kr.clone().narrow(0, 0, 1));
    let corner = sim0.slice([0..1, 0..64, 0..64]).reshape([64, 64]);
    close(
        "self-similarity 0 (64 x 64 corner)",
        &corner.into_data(),
        &g["dino_self_sim_0_corner"],
        TOL,
    );
    let d = structure_distances(kc, kr);
    let want: Vec<f32> = g["dino_distances"].clone().try_into_vec().unwrap();
    for (i, (got, w)) in d.iter().zip(&want).enumerate() {
        assert_rel(&format!("structure distance {i}"), *got, *w as f64, 1e-4);
    }
}

// ---------------------------------------------------------------------------------------
// InceptionV3 with hash weights (the rule of scripts/make_eval_fixtures.py)
// ---------------------------------------------------------------------------------------

#[test]
fn inception_features_and_fid_match_pytorch_fid() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("inception-hash.safetensors");
    write_hash_inception(&weights);
    let device = cpu();
    let net = load_inception(&weights, &device).unwrap();

    // The 8-bit squash to 224 is Pillow's, exactly.
    let r0 = load_rgb(&images("results")[0]).unwrap();
    let squashed = ditail::pipeline::resample::resize_u8(
        &r0,
        224,
        224,
        ditail::pipeline::resample::Filter::Bicubic,
    );
    close(
        "fid input 0",
        &TensorData::new(preprocess::to_planes(&squashed), [1, 3, 224, 224]),
        &g["fid_input_0"],
        1e-7,
    );

    let features = |which: &str, native: bool| {
        let planes: Vec<Vec<f32>> = pillow_images(which)
            .iter()
            .map(|img| preprocess::inception_pixels(img, INPUT_SIDE as u32, native))
            .collect();
        net.forward(Tensor::from_data(stack(planes, INPUT_SIDE), &device))
            .unwrap()
    };
    let fr = features("results", false);
    let fc = features("content", false);
    close(
        "features results",
        &fr.clone().into_data(),
        &g["inception_features_results"],
        TOL,
    );
    close(
        "features content",
        &fc.clone().into_data(),
        &g["inception_features_content"],
        TOL,
    );
    let native = features("content", true);
    close(
        "features content (native)",
        &native.into_data(),
        &g["inception_features_content_native"],
        TOL,
    );

    let rows = |t: Tensor<2>| -> Vec<Vec<f32>> {
        let v: Vec<f32> = t.into_data().try_into_vec().unwrap();
        v.chunks(2048).map(<[f32]>::to_vec).collect()
    };
    let fid = frechet_distance(
        &Features::new(&rows(fr)).unwrap(),
        &Features::new(&rows(fc)).unwrap(),
    )
    .unwrap();
    // pytorch-fid's sqrtm on these rank-deficient covariances (4 images, 2048 features):
    // see meta.json for how far scipy's value is from the exact one; the test takes the
    // exact one where meta.json has it.
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir().join("meta.json")).unwrap()).unwrap();
    let exact = meta["fid"]["fid_exact_from_float64_features"]
        .as_f64()
        .expect("meta.json fid");
    assert_rel(
        "FID (hash InceptionV3, 4 vs 4 images) vs exact",
        fid,
        exact,
        1e-4,
    );
    // scipy's sqrtm, singular here, lands 3.5e-6 away from the exact value.
    assert_rel("FID vs pytorch-fid", fid, scalar(&g, "fid"), 1e-4);
}

#[test]
fn frechet_distance_matches_pytorch_fid() {
    let g = golden();
    let rows = |key: &str| -> Vec<Vec<f32>> {
        let d = &g[key];
        let cols = d.shape()[1];
        let v: Vec<f32> = d.clone().try_into_vec().unwrap();
        v.chunks(cols).map(<[f32]>::to_vec).collect()
    };
    for (a, b, want) in [
        ("fid_feats_a", "fid_feats_b", "fid_ab"),
        ("fid_feats_c", "fid_feats_d", "fid_cd"),
    ] {
        let got = frechet_distance(
            &Features::new(&rows(a)).unwrap(),
            &Features::new(&rows(b)).unwrap(),
        )
        .unwrap();
        // The features pass through f32 here, pytorch-fid's stay in f64.
        assert_rel(&format!("FID {a} / {b}"), got, scalar(&g, want), 1e-5);
    }
}

// ---------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------

fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ditail(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ditail"))
        .args(["--backend", "cpu", "--quiet"])
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("ditail-eval-cache"),
        )
        .output()
        .unwrap()
}

/// `ditail eval` on a mixed PNG / JPEG set (content d.jpg) against the official script in
/// its pinned environment (torchvision 0.16.1's resize, Pillow's JPEG decoding): CLIP score,
/// every structure distance and FID within 1e-4 relative.
#[test]
fn eval_command_writes_the_reference_scores() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("scores.json");
    let weights = tmp.path().join("inception.safetensors");
    write_hash_inception(&weights);
    let d = dir();
    let p = |s: &str| d.join(s).display().to_string();
    let out = ditail(&[
        "eval",
        "--results",
        &p("images/results"),
        "--content",
        &p("images/content"),
        "--prompts",
        &p("images/prompts.txt"),
        "--reference",
        &p("images/content"),
        "--clip",
        &p("clip-tiny"),
        "--dino",
        &p("dino-tiny"),
        "--inception",
        &weights.display().to_string(),
        "--json",
        &json.display().to_string(),
        "--eval-batch",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("fewer images than the 2048 features"),
        "FID warning: {stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_rel(
        "mean CLIP score",
        report["clip_score"].as_f64().unwrap(),
        scalar(&g, "clip_score"),
        1e-4,
    );
    // Every pair within 1e-4, d with d.jpg (decoded as Pillow does) too.
    check_structure(&report, &g, "dino_distances");
    assert_eq!(
        report["dino_resize"],
        "bicubic, no antialiasing (torchvision 0.16.1, the reference's)"
    );
    assert_eq!(report["images"].as_array().unwrap().len(), 4);
    assert_eq!(report["fid"]["reference"], 4);
    // The reference folder holds d.jpg too.
    assert_rel(
        "FID vs pytorch-fid",
        report["fid"]["fid"].as_f64().unwrap(),
        scalar(&g, "fid"),
        1e-4,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mean") && stdout.contains("FID"),
        "{stdout}"
    );
}

fn check_structure(report: &Value, g: &BTreeMap<String, TensorData>, key: &str) {
    let want: Vec<f32> = g[key].clone().try_into_vec().unwrap();
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), want.len());
    for (i, img) in images.iter().enumerate() {
        let got = img["structure_distance"].as_f64().unwrap();
        assert_rel(&format!("{key} {i}"), got, want[i] as f64, 1e-4);
    }
    let mean = want.iter().map(|&w| w as f64).sum::<f64>() / want.len() as f64;
    let got = report["structure_distance"].as_f64().unwrap();
    assert_rel(&format!("mean of {key}"), got, mean, 1e-4);
}

/// `--dino-antialias`: torchvision >= 0.17's resize, and the JSON says so.
#[test]
fn eval_command_antialiases_dino_inputs_when_asked() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("scores.json");
    let d = dir();
    let p = |s: &str| d.join(s).display().to_string();
    let out = ditail(&[
        "eval",
        "--results",
        &p("images/results"),
        "--content",
        &p("images/content"),
        "--dino",
        &p("dino-tiny"),
        "--dino-antialias",
        "--json",
        &json.display().to_string(),
    ]);
    assert_ok(&out);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    check_structure(&report, &g, "dino_distances_antialias");
    assert_eq!(
        report["dino_resize"],
        "bicubic, antialiased (torchvision >= 0.17)"
    );
    assert!(report["clip_score"].is_null() && report["fid"].is_null());
}

#[test]
fn eval_command_refuses_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let d = dir();
    let p = |s: &str| d.join(s).display().to_string();
    let e = empty.display().to_string();
    // Content for result a only: b, c and d are unmatched.
    let only = tmp.path().join("only-a");
    std::fs::create_dir(&only).unwrap();
    std::fs::copy(d.join("images/content/a.png"), only.join("a.png")).unwrap();
    let only_a = only.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--results".into(),
                e.clone(),
                "--prompts".into(),
                p("images/prompts.txt"),
            ],
            "no images in the folder",
        ),
        (
            vec![
                "--results".into(),
                p("images/results"),
                "--content".into(),
                p("clip-tiny"),
            ],
            "no images in the folder",
        ),
        (
            vec!["--results".into(), p("images/results")],
            "nothing to compute",
        ),
        (
            vec![
                "--results".into(),
                p("images/results"),
                "--content".into(),
                only_a.clone(),
            ],
            "3 result(s) have no content image of the same name: b.png, c.png, d.png",
        ),
        (
            vec![
                "--results".into(),
                p("images/content"),
                "--prompts".into(),
                p("images/prompts.txt"),
                "--clip".into(),
                p("dino-tiny"),
            ],
            "not a CLIPModel",
        ),
        (
            vec![
                "--results".into(),
                p("images/results"),
                "--content".into(),
                p("images/content"),
                "--dino".into(),
                p("clip-tiny"),
            ],
            "clip-tiny",
        ),
        (
            vec![
                "--results".into(),
                p("images/results"),
                "--reference".into(),
                p("images/content"),
                "--inception".into(),
                p("missing.pth"),
            ],
            "missing.pth",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["eval".to_string()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = ditail(&refs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(
            stderr.contains(needle),
            "{all:?}: expected {needle:?} in {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// `--eval` of cocktail and batch
// ---------------------------------------------------------------------------------------

/// Scores per image name from a report's `images`.
fn per_image(report: &Value, key: &str) -> BTreeMap<String, f64> {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i[key].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn cocktail_and_batch_eval_give_ditail_evals_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let model = |m: &str| common::model_dir(m).display().to_string();
    let (a, b) = (model("tiny-a"), model("tiny-b"));
    let d = dir();
    let (clip, dino) = (
        d.join("clip-tiny").display().to_string(),
        d.join("dino-tiny").display().to_string(),
    );
    let content = fixtures().join("pipeline/content.png");
    let mix = tmp.path().join("mix");
    let out = ditail(&[
        "cocktail",
        "--model",
        &a,
        "--model",
        &b,
        "--image",
        content.to_str().unwrap(),
        "--prompt",
        "a cat",
        "-o",
        mix.to_str().unwrap(),
        "--size",
        "64",
        "--inv-steps",
        "2",
        "--steps",
        "2",
        "--eval",
        "--clip",
        &clip,
        "--dino",
        &dino,
    ]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CLIP score") && stdout.contains("structure distance"),
        "{stdout}"
    );
    let scores: Value =
        serde_json::from_slice(&std::fs::read(mix.join("scores.json")).unwrap()).unwrap();
    let clip_per = per_image(&scores, "clip_score");
    let structure_per = per_image(&scores, "structure_distance");
    assert_eq!(clip_per.len(), 4);
    // The matrix cell (source s, target t) is the mean over contents: one content here.
    let names = ["tiny-a", "tiny-b"];
    for (si, s) in names.iter().enumerate() {
        for (ti, t) in names.iter().enumerate() {
            let file = format!("content--{s}--to--{t}.png");
            assert_eq!(
                scores["clip_score"][si][ti].as_f64().unwrap(),
                clip_per[&file]
            );
            assert_eq!(
                scores["structure_distance"][si][ti].as_f64().unwrap(),
                structure_per[&file]
            );
        }
    }

    // `ditail eval --from-metadata` on the same folder finds the same pairs and numbers
    // (the content image matched by its pixels' hash; the contact sheet left out).
    let content_dir = tmp.path().join("content");
    std::fs::create_dir(&content_dir).unwrap();
    std::fs::copy(&content, content_dir.join("photo.png")).unwrap();
    let json = tmp.path().join("meta.json");
    let out = ditail(&[
        "eval",
        "--results",
        mix.to_str().unwrap(),
        "--content",
        content_dir.to_str().unwrap(),
        "--from-metadata",
        "--clip",
        &clip,
        "--dino",
        &dino,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let names: Vec<&str> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        4,
        "the four transfers, not the sheet: {names:?}"
    );
    for (name, v) in per_image(&report, "structure_distance") {
        assert_rel(&format!("{name} structure"), v, structure_per[&name], 1e-6);
    }
    for (name, v) in per_image(&report, "clip_score") {
        assert_rel(&format!("{name} clip"), v, clip_per[&name], 1e-6);
    }

    // A batch of two rows, scored at the end with the rows' prompts and images.
    std::fs::copy(&content, tmp.path().join("content.png")).unwrap();
    let manifest = tmp.path().join("jobs.csv");
    std::fs::write(
        &manifest,
        format!("id,image,prompt,source,target,steps,inv_steps,size\nx,content.png,a cat,{a},{b},2,2,64\ny,content.png,a dog,{a},{a},2,2,64\n"),
    )
    .unwrap();
    let bout = tmp.path().join("batch");
    let out = ditail(&[
        "batch",
        manifest.to_str().unwrap(),
        "-o",
        bout.to_str().unwrap(),
        "--eval",
        "--clip",
        &clip,
        "--dino",
        &dino,
    ]);
    assert_ok(&out);
    let report: Value =
        serde_json::from_slice(&std::fs::read(bout.join("eval.json")).unwrap()).unwrap();
    let batch_structure = per_image(&report, "structure_distance");
    // Row x is the cocktail's tiny-a -> tiny-b transfer with the same settings.
    assert_rel(
        "batch row x",
        batch_structure["x.png"],
        structure_per["content--tiny-a--to--tiny-b.png"],
        1e-6,
    );
    assert_eq!(batch_structure.len(), 2);
}
