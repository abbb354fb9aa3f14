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
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use common::{assert_close, cpu, fixtures};
use ditail::eval::fid::{Features, frechet_distance};
use ditail::eval::metrics::structure_distances;
use ditail::eval::{pairing, preprocess};
use ditail::models::inception::INPUT_SIDE;
use ditail::models::load::eval::{load_clip, load_inception, load_vit};
use ditail::models::load::hub::HubOptions;
use ditail::models::tensor_file::{read_tensors, write_tensors};
use ditail::pipeline::preprocess::load_rgb;
use serde_json::Value;

const TOL: f32 = 1e-4;

fn dir() -> PathBuf {
    fixtures().join("eval")
}

fn golden() -> BTreeMap<String, TensorData> {
    read_tensors(&dir().join("golden.safetensors")).expect("tests/fixtures/eval/golden.safetensors")
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

/// The images of `which`, decoded as Pillow decodes them: JPEG decoders differ in their
/// chroma upsampling (see `jpeg_decoding_is_close_to_pillows`), so the JPEG among the
/// content images is taken from the golden file's Pillow decode; the rest decode exactly.
fn pillow_images(which: &str, g: &BTreeMap<String, TensorData>) -> Vec<image::RgbImage> {
    images(which)
        .iter()
        .map(|p| {
            if p.extension().is_some_and(|e| e == "jpg") {
                let d = &g["jpeg_d_decoded"];
                let [h, w, _] = [d.shape()[0], d.shape()[1], d.shape()[2]];
                let v: Vec<i64> = d.clone().try_into_vec().unwrap();
                image::RgbImage::from_raw(w as u32, h as u32, v.iter().map(|&x| x as u8).collect())
                    .unwrap()
            } else {
                load_rgb(p).unwrap()
            }
        })
        .collect()
}

#[test]
fn jpeg_decoding_is_close_to_pillows() {
    let g = golden();
    let ours = load_rgb(&dir().join("images/content/d.jpg")).unwrap();
    let pillow = &pillow_images("content", &g)[3];
    assert_eq!(ours.dimensions(), pillow.dimensions());
    let diffs: Vec<i32> = ours
        .as_raw()
        .iter()
        .zip(pillow.as_raw())
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .collect();
    let max = *diffs.iter().max().unwrap();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    eprintln!("JPEG decode vs Pillow (libjpeg-turbo): max {max} levels, mean {mean:.3}");
    // The decoders differ in chroma upsampling and IDCT rounding: a few levels at edges.
    assert!(max <= 16 && mean < 1.0, "max {max}, mean {mean}");
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
    let g = golden();
    let results = images("results");
    let pixels: Vec<Vec<f32>> = results
        .iter()
        .map(|p| preprocess::clip_pixels(&load_rgb(p).unwrap(), 224))
        .collect();
    // Pillow-exact 8-bit resampling: only float rounding of the normalisation differs.
    assert_close(
        "clip pixel_values 0",
        &stack(pixels[..1].to_vec(), 224),
        &g["clip_pixel_values_0"],
        1e-6,
    );

    let clip = load_clip(
        dir().join("clip-tiny").to_str().unwrap(),
        &cpu(),
        &offline(),
    )
    .unwrap();
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
    assert_close(
        "vision last_hidden_state",
        &hidden.into_data(),
        &g["clip_vision_last_hidden"],
        TOL,
    );
    let image = clip.model.image_features(px).unwrap();
    let text = clip.model.text_features(&ids, &device).unwrap();
    assert_close(
        "image_embeds",
        &image.clone().into_data(),
        &g["clip_image_embeds"],
        TOL,
    );
    assert_close(
        "text_embeds",
        &text.clone().into_data(),
        &g["clip_text_embeds"],
        TOL,
    );
    let logits = clip.model.logits_per_text(text, image);
    assert_close(
        "logits_per_text",
        &logits.clone().into_data(),
        &g["clip_logits_per_text"],
        TOL,
    );
    let scores = ditail::eval::metrics::clip_scores(logits);
    let want: Vec<f32> = g["clip_scores"].clone().try_into_vec().unwrap();
    for (i, (s, w)) in scores.iter().zip(&want).enumerate() {
        assert_rel(&format!("clip score {i}"), *s, *w as f64, 1e-4);
    }
}

#[test]
fn dino_preprocessing_keys_and_structure_distance_match_transformers() {
    let g = golden();
    let side = 224;
    let planes = |which: &str| -> Vec<Vec<f32>> {
        pillow_images(which, &g)
            .iter()
            .map(|img| preprocess::dino_pixels(img, side))
            .collect()
    };
    let (content, results) = (planes("content"), planes("results"));
    // Float resampling: rounding differences only.
    assert_close(
        "dino pixels content",
        &stack(content.clone(), 224),
        &g["dino_pixel_values_content"],
        1e-5,
    );
    assert_close(
        "dino pixels results 0",
        &stack(results[..1].to_vec(), 224),
        &g["dino_pixel_values_results_0"],
        1e-5,
    );

    let vit = load_vit(
        dir().join("dino-tiny").to_str().unwrap(),
        &cpu(),
        &offline(),
    )
    .unwrap();
    let device = cpu();
    let layer = vit.num_layers() - 1;
    let kc = vit
        .keys(Tensor::from_data(stack(content, 224), &device), layer)
        .unwrap();
    let kr = vit
        .keys(Tensor::from_data(stack(results, 224), &device), layer)
        .unwrap();
    assert_close(
        "keys content",
        &kc.clone().into_data(),
        &g["dino_keys_content"],
        TOL,
    );
    assert_close(
        "keys results",
        &kr.clone().into_data(),
        &g["dino_keys_results"],
        TOL,
    );
    let sim0 = ditail::eval::metrics::self_similarity(kr.clone().narrow(0, 0, 1));
    let corner = sim0.slice([0..1, 0..64, 0..64]).reshape([64, 64]);
    assert_close(
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

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let x = x.wrapping_add(0x9E3779B97F4A7C15);
    let z = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

fn hash_tensor(name: &str, shape: &[usize]) -> TensorData {
    let n: usize = shape.iter().product();
    let (lo, hi) = if name.ends_with(".conv.weight") {
        let a = (6.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt();
        (-a, a)
    } else if name.ends_with(".bn.weight") || name.ends_with(".bn.running_var") {
        (0.9, 1.1)
    } else if name.ends_with(".bn.bias") || name.ends_with(".bn.running_mean") {
        (-0.1, 0.1)
    } else if name.starts_with("fc.") {
        (-0.01, 0.01)
    } else {
        panic!("no rule for {name}")
    };
    let seed = fnv1a64(name);
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let u = (splitmix64(seed.wrapping_add(i)) >> 40) as f64 / (1u64 << 24) as f64;
            (lo + (hi - lo) * u) as f32
        })
        .collect();
    TensorData::new(values, shape.to_vec())
}

/// Writes the hash-weight InceptionV3 to `path`.
fn write_hash_inception(path: &Path) {
    let list: Value =
        serde_json::from_slice(&std::fs::read(dir().join("inception-tensors.json")).unwrap())
            .unwrap();
    let entries = list
        .as_array()
        .or_else(|| list["tensors"].as_array())
        .expect("a list");
    let mut tensors = BTreeMap::new();
    for e in entries {
        let name = e[0].as_str().unwrap();
        let shape: Vec<usize> = e[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        tensors.insert(name.to_string(), hash_tensor(name, &shape));
    }
    write_tensors(path, &tensors, None).unwrap();
}

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
    assert_close(
        "fid input 0",
        &TensorData::new(preprocess::to_planes(&squashed), [1, 3, 224, 224]),
        &g["fid_input_0"],
        1e-7,
    );

    let features = |which: &str, native: bool| {
        let planes: Vec<Vec<f32>> = pillow_images(which, &g)
            .iter()
            .map(|img| preprocess::inception_pixels(img, INPUT_SIDE as u32, native))
            .collect();
        net.forward(Tensor::from_data(stack(planes, INPUT_SIDE), &device))
            .unwrap()
    };
    let fr = features("results", false);
    let fc = features("content", false);
    assert_close(
        "features results",
        &fr.clone().into_data(),
        &g["inception_features_results"],
        TOL,
    );
    assert_close(
        "features content",
        &fc.clone().into_data(),
        &g["inception_features_content"],
        TOL,
    );
    let native = features("content", true);
    assert_close(
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
        "--batch",
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
    let want: Vec<f32> = g["dino_distances"].clone().try_into_vec().unwrap();
    for (i, img) in report["images"].as_array().unwrap().iter().enumerate() {
        // d pairs with d.jpg, which ditail decodes a little differently from Pillow (see
        // `jpeg_decoding_is_close_to_pillows`); the others are exact up to float rounding.
        let tol = if i == 3 { 1e-2 } else { 1e-4 };
        let got = img["structure_distance"].as_f64().unwrap();
        assert_rel(&format!("structure distance {i}"), got, want[i] as f64, tol);
    }
    assert_eq!(report["images"].as_array().unwrap().len(), 4);
    assert_eq!(report["fid"]["reference"], 4);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mean") && stdout.contains("FID"),
        "{stdout}"
    );
}

#[test]
fn eval_command_refuses_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let d = dir();
    let p = |s: &str| d.join(s).display().to_string();
    let e = empty.display().to_string();
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
