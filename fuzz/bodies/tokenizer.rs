//! The CLIP tokenizer on arbitrary text (prompts come from the command line, manifests and
//! the web app): every prompt encodes to exactly 77 ids, `<|startoftext|>` first and
//! `<|endoftext|>` last, and has a token count.

use std::sync::OnceLock;

use ditail::models::ClipTokenizer;
use ditail::models::tokenizer::{BOS_ID, EOS_ID, MAX_LEN};

pub fn run(data: &[u8]) {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    let tokenizer = TOKENIZER.get_or_init(ClipTokenizer::sd15);
    let prompt = String::from_utf8_lossy(data);
    let ids = tokenizer.encode(&prompt).expect("every prompt encodes");
    assert_eq!(ids.len(), MAX_LEN);
    assert_eq!(ids[0], BOS_ID);
    assert_eq!(ids[MAX_LEN - 1], EOS_ID);
    let count = tokenizer
        .token_count(&prompt)
        .expect("every prompt has a count");
    assert!(count >= 2, "{count} tokens");
    if count <= MAX_LEN {
        assert!(ids[count..].iter().all(|&id| id == EOS_ID));
    }
}
