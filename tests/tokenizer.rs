//! The CLIP tokenizer against transformers' `CLIPTokenizer` (the slow one diffusers' SD
//! pipelines use) on tricky prompts: ids must be identical, all 77 of them.

mod common;

use ditail::models::ClipTokenizer;
use ditail::models::tokenizer::{BOS_ID, EOS_ID, MAX_LEN};

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    fast_ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[test]
fn ids_equal_transformers_clip_tokenizer() {
    let path = common::fixtures().join("tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert!(
        fixture.cases.len() >= 20,
        "the fixture has {} prompts",
        fixture.cases.len()
    );
    let tok = ClipTokenizer::sd15();
    let mut failures = Vec::new();
    for case in &fixture.cases {
        let ids = tok.encode(&case.prompt).unwrap();
        assert_eq!(ids.len(), MAX_LEN);
        assert_eq!(
            (ids[0], *ids.last().unwrap()),
            (BOS_ID, EOS_ID),
            "{:?}",
            case.prompt
        );
        if ids != case.fast_ids {
            failures.push(format!(
                "{:?}\n  ours:         {ids:?}\n  transformers: {:?}",
                case.prompt, case.fast_ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} prompts differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn long_prompts_are_counted_then_truncated() {
    let tok = ClipTokenizer::sd15();
    let prompt = "a photo of a cat ".repeat(30);
    assert!(tok.token_count(&prompt).unwrap() > MAX_LEN);
    let ids = tok.encode(&prompt).unwrap();
    assert_eq!(ids.len(), MAX_LEN);
    assert_eq!(ids[MAX_LEN - 1], EOS_ID, "truncation keeps the end token");
    assert_eq!(
        tok.encode("a photo of a cat").unwrap()[..7],
        [49406, 320, 1125, 539, 320, 2368, 49407]
    );
}
