//! Prompts as AUTOMATIC1111 reads them, against the reference of
//! `scripts/make_prompt_fixtures.py` (its emphasis syntax, 75-token chunks with comma
//! backtracking and `BREAK`, "Original" emphasis, padded pairs) on tiny-a (SD1.x) and
//! tiny-xl (SDXL): parsed pieces equal (weights to 1e-12), chunk ids and weights equal, the
//! emphasis on the reference's own encodings within 1e-6 of the largest value, whole
//! encodings within 1e-5 plus 1e-8 times the case's `amplification_sd1` (the rescale divides
//! by a chunk's mean, a small difference of large sums on these random encoders: it
//! amplifies the encoder's float rounding by up to 2267 here).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::prelude::*;
use common::{assert_close, cpu, fixtures, model_dir};
use ditail::models::LoadOptions;
use ditail::models::tensor_file::read_tensors;
use ditail::pipeline::prompt::{self, Embeddings, Piece};
use ditail::pipeline::{Model, ModelSpec, PipelineError};
use serde_json::Value;

const TOL: f32 = 1e-5;

fn golden() -> BTreeMap<String, TensorData> {
    read_tensors(&fixtures().join("prompts/golden.safetensors")).unwrap()
}

fn meta() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("prompts/meta.json")).unwrap()).unwrap()
}

fn cases() -> Vec<(String, String)> {
    meta()["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["prompt"].as_str().unwrap().to_string()))
        .collect()
}

fn load(name: &str) -> Model {
    let spec = ModelSpec::new(model_dir(name).display().to_string());
    Model::load(&spec, &cpu(), LoadOptions::default()).unwrap()
}

#[test]
fn prompts_parse_as_a1111_parses_them() {
    let m = meta();
    for (name, case) in m["cases"].as_object().unwrap() {
        let got = prompt::parse(case["prompt"].as_str().unwrap());
        let want = case["pieces"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{name}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            let (text, weight) = (w[0].as_str().unwrap(), w[1].as_f64().unwrap());
            match g {
                Piece::Break => assert_eq!((text, weight), ("BREAK", -1.0), "{name}"),
                Piece::Text(t, gw) => {
                    assert_eq!(t, text, "{name}");
                    assert!((gw - weight).abs() < 1e-12, "{name}: {gw} vs {weight}");
                }
            }
        }
    }
}

fn check_chunks(
    name: &str,
    tokenizer: &ditail::models::ClipTokenizer,
    text: &str,
    ids: &TensorData,
    weights: Option<&TensorData>,
) {
    let chunks = prompt::tokenized_chunks(tokenizer, &prompt::parse(text), None, 1).unwrap();
    let got_ids: Vec<i64> = chunks
        .iter()
        .flat_map(|c| c.ids.iter().map(|&i| i64::from(i)))
        .collect();
    assert_eq!(
        got_ids,
        ids.clone().try_into_vec::<i64>().unwrap(),
        "{name}: ids"
    );
    if let Some(w) = weights {
        let got: Vec<f32> = chunks.iter().flat_map(|c| c.weights.clone()).collect();
        assert_eq!(
            got,
            w.clone().try_into_vec::<f32>().unwrap(),
            "{name}: weights"
        );
    }
}

#[test]
fn sd1_prompts_encode_as_a1111_encodes_them() {
    let g = golden();
    let model = load("tiny-a");
    let device = cpu();
    for (name, text) in cases() {
        let tok = &model.sd().tokenizer;
        check_chunks(
            &name,
            tok,
            &text,
            &g[&format!("sd1.{name}.ids")],
            Some(&g[&format!("sd1.{name}.weights")]),
        );
        let want = &g[&format!("sd1.{name}.context")];
        // The emphasis alone, on the reference's unweighted chunk encodings.
        let raw = Tensor::<3>::from_data(g[&format!("sd1.{name}.raw")].clone(), &device);
        let [_, tokens, width] = raw.dims();
        let raw = raw.reshape([tokens / 77, 77, width]);
        let weights: Vec<Vec<f32>> = g[&format!("sd1.{name}.weights")]
            .clone()
            .try_into_vec::<f32>()
            .unwrap()
            .chunks(77)
            .map(<[f32]>::to_vec)
            .collect();
        let weighted = prompt::emphasis::apply(raw, &weights).reshape([1, tokens, width]);
        let rel = assert_close(
            &format!("sd1 {name} emphasis"),
            &weighted.into_data(),
            want,
            1e-6,
        );
        eprintln!("sd1 {name}: emphasis on the reference's encodings {rel:.1e}");
        // The whole encoding.
        let amplification = meta()["cases"][&name]["amplification_sd1"]
            .as_f64()
            .unwrap();
        let got = model.encode_prompt(&text, &device).unwrap();
        let tol = TOL + 1e-8 * amplification as f32;
        let rel = assert_close(&format!("sd1 {name}"), &got.into_data(), want, tol);
        eprintln!("sd1 {name}: encoding {rel:.1e} (tolerance {tol:.1e})");
    }
}

#[test]
fn sdxl_prompts_encode_as_a1111_encodes_them() {
    let g = golden();
    let model = load("tiny-xl");
    let device = cpu();
    for (name, text) in cases() {
        check_chunks(
            &name,
            &model.sd().tokenizer,
            &text,
            &g[&format!("xl.{name}.ids")],
            Some(&g[&format!("xl.{name}.weights")]),
        );
        let second = &model.sd().text_encoder_2.as_ref().unwrap().tokenizer;
        check_chunks(&name, second, &text, &g[&format!("xl.{name}.ids_2")], None);
        let c = model.condition(&text, [64, 64], &device).unwrap();
        let rel = assert_close(
            &format!("xl {name}"),
            &c.context.into_data(),
            &g[&format!("xl.{name}.context")],
            TOL,
        );
        eprintln!("xl {name}: encoding {rel:.1e}");
        assert_close(
            &format!("xl {name} pooled"),
            &c.added.unwrap().text_embeds.into_data(),
            &g[&format!("xl.{name}.pooled")],
            TOL,
        );
    }
}

/// A long positive and a short negative share a batch: the shorter is padded with the
/// empty prompt's encoding.
#[test]
fn prompts_of_a_batch_are_padded_to_one_length() {
    let g = golden();
    let m = meta();
    let text = |case: &str| m["cases"][case]["prompt"].as_str().unwrap().to_string();
    let (pos, neg) = (
        text(m["pair"]["positive"].as_str().unwrap()),
        text(m["pair"]["negative"].as_str().unwrap()),
    );
    for (prefix, model) in [("sd1", "tiny-a"), ("xl", "tiny-xl")] {
        let model = load(model);
        let c = model.conditions(&[&pos, &neg], [64, 64], &cpu()).unwrap();
        for (c, which) in c.into_iter().zip(["pos", "neg"]) {
            assert_close(
                &format!("{prefix} pair {which}"),
                &c.context.into_data(),
                &g[&format!("{prefix}.pair.context_{which}")],
                TOL,
            );
        }
    }
}

/// Ten thousand tokens is refused by name, with the limit, before any model is loaded.
#[test]
fn a_prompt_past_the_limit_is_refused_with_the_limit() {
    let long = "a cat on a mat, ".repeat(2000);
    let err = ditail::pipeline::settings::check_prompt("negative prompt", &long).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PipelineError::Settings(_)), "{msg}");
    assert!(
        msg.contains("negative prompt") && msg.contains("1500 tokens"),
        "{msg}"
    );
    // 1,400 tokens are fine.
    let ok = "cat, ".repeat(700);
    ditail::pipeline::settings::check_prompt("prompt", &ok).unwrap();
}

fn embeddings_dir() -> std::path::PathBuf {
    fixtures().join("prompts/embeddings")
}

fn with_embeddings(name: &str) -> Model {
    let mut model = load(name);
    let db = Embeddings::read_dir(&embeddings_dir()).unwrap();
    model.set_embeddings(Some(Arc::new(db)));
    model
}

/// Textual-inversion embeddings named in prompts (A1111's way and ComfyUI's `embedding:`),
/// weighted, in a long prompt, and SDXL's two-encoder kind.
#[test]
fn embeddings_take_their_names_places() {
    let g = golden();
    let m = meta();
    let device = cpu();
    let (sd1, xl) = (with_embeddings("tiny-a"), with_embeddings("tiny-xl"));
    for (name, case) in m["embedding_cases"].as_object().unwrap() {
        let text = case["prompt"].as_str().unwrap();
        let fam = case["family"].as_str().unwrap();
        let model = if fam == "sd1" { &sd1 } else { &xl };
        let chunks = prompt::tokenized_chunks(
            &model.sd().tokenizer,
            &prompt::parse(text),
            model.embeddings(),
            1,
        )
        .unwrap();
        let ids: Vec<i64> = chunks
            .iter()
            .flat_map(|c| c.ids.iter().map(|&i| i64::from(i)))
            .collect();
        assert_eq!(
            ids,
            g[&format!("{fam}.{name}.ids")]
                .clone()
                .try_into_vec::<i64>()
                .unwrap(),
            "{name}"
        );
        let placed: Vec<(usize, usize, String)> = chunks
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.embeddings.iter().map(move |(p, n)| (i, *p, n.clone())))
            .collect();
        let want: Vec<(usize, usize, String)> = case["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e[0].as_u64().unwrap() as usize,
                    e[1].as_u64().unwrap() as usize,
                    e[2].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(placed, want, "{name}");
        let c = model.condition(text, [64, 64], &device).unwrap();
        let tol = TOL + 1e-8 * case["amplification_sd1"].as_f64().unwrap_or(0.0) as f32;
        let rel = assert_close(
            &format!("{fam} {name}"),
            &c.context.into_data(),
            &g[&format!("{fam}.{name}.context")],
            tol,
        );
        eprintln!("{fam} {name}: encoding {rel:.1e}");
        if fam == "xl" {
            assert_close(
                &format!("xl {name} pooled"),
                &c.added.unwrap().text_embeds.into_data(),
                &g[&format!("xl.{name}.pooled")],
                TOL,
            );
        }
        let used: Vec<String> = model
            .embeddings_used(text)
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(used.len(), 1, "{name}: {used:?}");
    }
}

#[test]
fn embeddings_that_cannot_be_used_are_refused_by_name() {
    let device = cpu();
    let sd1 = with_embeddings("tiny-a");
    // SDXL's kind in an SD1.x prompt.
    let err = sd1
        .condition("a cat, XlNeg", [64, 64], &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("XlNeg") && err.contains("SDXL"), "{err}");
    // An SD1.x one in an SDXL prompt.
    let xl = with_embeddings("tiny-xl");
    let err = xl
        .condition("EasyNeg, a cat", [64, 64], &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("EasyNeg") && err.contains("SD1.x"), "{err}");
    // A pickle is never read; naming it gives the conversion.
    let err = sd1
        .condition("OldPickle", [64, 64], &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("OldPickle") && err.contains("safetensors"),
        "{err}"
    );
    // ComfyUI's syntax with a name that is not there: kept as text, reported.
    let db = sd1.embeddings().unwrap();
    assert_eq!(
        db.unknown_references("embedding:Nope, embedding:EasyNeg"),
        vec!["Nope"]
    );
    sd1.condition("embedding:Nope", [64, 64], &device).unwrap();
}

/// The PNG text chunk `key` (the A1111 `parameters`, or ditail's JSON).
fn png_text(path: &std::path::Path, key: &str) -> String {
    let file = std::fs::File::open(path).unwrap();
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let info = reader.info();
    let utf8 = info.utf8_text.iter().find(|c| c.keyword == key);
    match utf8 {
        Some(c) => c.get_text().unwrap(),
        None => info
            .uncompressed_latin1_text
            .iter()
            .find(|c| c.keyword == key)
            .map(|c| c.text.clone())
            .unwrap_or_else(|| panic!("no {key} chunk")),
    }
}

/// `ditail transfer` with an embeddings folder: the embedding named in the prompt is
/// recorded with its hash as A1111 records it, an `embedding:` name that is not there is
/// warned about and kept as text, and one of the other family stops the run before any
/// weights load.
#[test]
fn transfer_names_embeddings_and_records_their_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let run = |prompt: &str, negative: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ditail"))
            .args([
                "transfer",
                &fixtures()
                    .join("pipeline/content.png")
                    .display()
                    .to_string(),
            ])
            .args(["--prompt", prompt, "--negative-prompt", negative])
            .args(["--source", &model_dir("tiny-a").display().to_string()])
            .args([
                "--size",
                "64",
                "--inv-steps",
                "2",
                "--steps",
                "2",
                "--backend",
                "cpu",
            ])
            .args(["--embeddings", &embeddings_dir().display().to_string()])
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run("a (red fox:1.2) in the snow", "EasyNeg, embedding:Nope");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("embedding:Nope"), "{stderr}");
    let params = png_text(&out, "parameters");
    let hash = Embeddings::read_dir(&embeddings_dir()).unwrap().by_name["EasyNeg"]
        .short_hash
        .clone();
    assert!(
        params.contains(&format!("TI hashes: \"EasyNeg: {hash}\"")),
        "{params}"
    );
    assert!(
        params.starts_with("a (red fox:1.2) in the snow\n"),
        "{params}"
    );
    std::fs::remove_file(&out).unwrap();
    let o = run("a fox, XlNeg", "blurry");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("XlNeg") && stderr.contains("SDXL"),
        "{stderr}"
    );
    assert!(!out.exists());
}
