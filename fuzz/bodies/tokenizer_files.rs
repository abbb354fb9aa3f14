//! A diffusers folder's `tokenizer/`: the input as `vocab.json` (when it is a JSON object)
//! with tiny-a's `merges.txt`, else as `merges.txt` with tiny-a's `vocab.json`, through
//! the tokenizer's builder (`ClipTokenizer::from_vocab`, what `from_dir` reads them with);
//! a tokenizer that builds must encode a prompt to 77 ids.

use std::sync::OnceLock;

use ditail::models::ClipTokenizer;
use ditail::models::tokenizer::MAX_LEN;

/// tiny-a's `tokenizer/vocab.json` and `merges.txt`.
fn tiny_tokenizer() -> &'static (String, String) {
    static FILES: OnceLock<(String, String)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = super::repo_root().join("tests/fixtures/models/tiny-a/tokenizer");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("tiny-a tokenizer");
        (read("vocab.json"), read("merges.txt"))
    })
}

pub fn run(data: &[u8]) {
    // `from_dir` reads both files as UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (vocab, merges) = tiny_tokenizer();
    let is_json = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok();
    let built = if is_json {
        ClipTokenizer::from_vocab(text, merges)
    } else {
        ClipTokenizer::from_vocab(vocab, text)
    };
    if let Ok(tokenizer) = built {
        let ids = tokenizer
            .encode("a photo of a cat, 🐱")
            .expect("a built tokenizer encodes");
        assert_eq!(ids.len(), MAX_LEN);
    }
}
