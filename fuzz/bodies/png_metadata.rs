//! The PNG metadata writer: a record whose prompts, model names and LoRA path come from the
//! input (split at U+001F into up to five texts; any Unicode, NUL and control characters
//! included) is written with `write_png` as the commands write outputs, read back with
//! `read_png_text` (as `batch` and the web app's gallery read them), and must come back
//! whole: the `ditail` chunk parses to the same record, `parameters` is the same A1111 text,
//! and no other chunk appears.

use image::RgbImage;

use ditail::app::output::{read_png_text, write_png};
use ditail::app::record::{DitailRecord, EmbeddingRecord, LoraRecord, ModelRecord, Record};

fn model(name: &str, lora: &str) -> ModelRecord {
    ModelRecord {
        model: name.to_string(),
        hash: "0123456789".into(),
        loras: vec![LoraRecord {
            path: lora.to_string(),
            hash: "abcdef0123".into(),
            scale: 0.7,
        }],
        vae: Some(name.to_string()),
        clip_skip: 2,
    }
}

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1f}');
    let mut next = || parts.next().unwrap_or_default().to_string();
    let (prompt, negative, inv_prompt, name, lora) = (next(), next(), next(), next(), next());
    // Names and hashes from the input too (what a prompt's embeddings give).
    let embeddings = vec![EmbeddingRecord {
        name: lora.clone(),
        hash: name.clone(),
    }];
    let record = Record {
        version: "0.1.0".into(),
        kind: "transfer".into(),
        prompt,
        negative_prompt: negative.clone(),
        model: model(&name, &lora),
        source: Some(model(&lora, &name)),
        ditail: Some(DitailRecord {
            inv_prompt,
            inv_negative_prompt: negative,
            alpha: 2.0,
            beta: 0.5,
            inv_steps: 50,
            steps: 50,
            omega: 15.0,
            conv_ratio: 0.8,
            attn_ratio: 0.5,
            mask: name,
            no_injection: false,
            size: 512,
            content_sha256: "00".repeat(32),
        }),
        seed: Some(42),
        steps: 50,
        omega: 15.0,
        width: 2,
        height: 1,
        backend: "cpu".into(),
        dtype: "f32".into(),
        embeddings,
    };
    let path = super::scratch().join("out.png");
    let img = RgbImage::from_raw(2, 1, vec![0, 64, 128, 192, 255, 7]).expect("2x1 RGB");
    write_png(&path, &img, &record.chunks()).expect("every record can be written");
    let mut chunks = read_png_text(&path).expect("a written PNG's text chunks read back");
    chunks.sort();
    let keys: Vec<&str> = chunks.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["ditail", "parameters"]);
    let back: Record = serde_json::from_str(&chunks[0].1).expect("the ditail chunk parses");
    assert_eq!(back, record);
    assert_eq!(chunks[1].1, record.a1111_parameters());
}
