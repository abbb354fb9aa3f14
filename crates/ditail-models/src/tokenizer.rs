//! The CLIP BPE tokenizer, as transformers' `CLIPTokenizer` (the one diffusers' SD
//! pipelines use) tokenizes: 77 ids, `<|startoftext|>` = 49406 first, `<|endoftext|>` =
//! 49407 last and as padding, truncated to 77.
//!
//! The pipeline is the one transformers builds for CLIP (NFC, whitespace runs to one space,
//! lower case, CLIP's word regex, byte-level BPE with `</w>` word ends): since transformers
//! 5 this *is* `CLIPTokenizer`. transformers 4's pure-Python tokenizer (without `ftfy`)
//! differed on rare inputs: it split CJK ideographs apart and dropped control and
//! zero-width characters; `tests/fixtures/tokenizer.json` records both.
//! See transformers' [`models/clip/tokenization_clip.py`](https://github.com/huggingface/transformers/blob/679021a6b0ded09d623a96e2bd2f822c5a548872/src/transformers/models/clip/tokenization_clip.py).
//!
//! The vocabulary ships in `models/clip/` (from OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz`,
//! MIT; `scripts/convert_clip_vocab.py` regenerates it) and is compiled in, because
//! single-file checkpoints carry no tokenizer.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{ModelError, Result};

/// `<|startoftext|>` in CLIP's vocabulary.
pub const BOS_ID: u32 = 49406;
/// `<|endoftext|>` in CLIP's vocabulary, also the padding token.
pub const EOS_ID: u32 = 49407;
/// Length of every encoded prompt.
pub const MAX_LEN: usize = 77;

const VOCAB_JSON: &str = include_str!("../../../models/clip/vocab.json");
const MERGES_TXT: &str = include_str!("../../../models/clip/merges.txt");

/// CLIP's prompt tokenizer (cheap to clone: the pipelines are shared).
#[derive(Clone)]
pub struct ClipTokenizer {
    /// Truncates and pads to [`MAX_LEN`].
    inner: Arc<Tokenizer>,
    /// The same pipeline without truncation or padding, for counting tokens.
    untruncated: Arc<Tokenizer>,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer").finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// The standard CLIP vocabulary shipped with ditail, built once per process (every
    /// single-file model's plan takes it).
    pub fn sd15() -> Self {
        static SD15: OnceLock<ClipTokenizer> = OnceLock::new();
        SD15.get_or_init(|| {
            Self::from_vocab(VOCAB_JSON, MERGES_TXT).expect("the shipped CLIP vocabulary is valid")
        })
        .clone()
    }

    /// A diffusers `tokenizer/` folder (`vocab.json` + `merges.txt`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModelError::Io { path, source })
        };
        Self::from_vocab(&read("vocab.json")?, &read("merges.txt")?)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", dir.display())))
    }

    /// Builds the tokenizer from the text of `vocab.json` and `merges.txt`.
    pub fn from_vocab(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        let err = |e: String| ModelError::Tokenizer(e);
        let vocab: Value =
            serde_json::from_str(vocab_json).map_err(|e| err(format!("vocab.json: {e}")))?;
        let merges: Vec<&str> = merges_txt
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .collect();
        // Reduced vocabularies (tests' tiny models) put the special tokens elsewhere.
        let id_of = |token: &str| {
            vocab
                .get(token)
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| err(format!("vocab.json has no id for {token}")))
        };
        let (bos, eos) = (id_of("<|startoftext|>")?, id_of("<|endoftext|>")?);
        let special = |id: u32, content: &str| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": true, "special": true})
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [special(bos, "<|startoftext|>"), special(eos, "<|endoftext|>")],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex":
                    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
                 "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]},
            "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", eos],
                "cls": ["<|startoftext|>", bos], "trim_offsets": false, "add_prefix_space": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
                "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": false,
                "byte_fallback": false, "vocab": vocab, "merges": merges}
        });
        let untruncated = Tokenizer::from_str(&spec.to_string()).map_err(|e| err(e.to_string()))?;
        let mut inner = untruncated.clone();
        inner
            .with_truncation(Some(TruncationParams {
                max_length: MAX_LEN,
                ..Default::default()
            }))
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(MAX_LEN),
            pad_id: eos,
            pad_token: "<|endoftext|>".into(),
            ..Default::default()
        }));
        Ok(Self {
            inner: Arc::new(inner),
            untruncated: Arc::new(untruncated),
        })
    }

    fn ids(tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<u32>> {
        let enc = tokenizer
            .encode(prompt, true)
            .map_err(|e| ModelError::Tokenizer(format!("cannot tokenize {prompt:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes a prompt to exactly [`MAX_LEN`] ids.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        Self::ids(&self.inner, prompt)
    }

    /// How many tokens `prompt` has before truncation (special tokens included), so callers
    /// can warn that the end of a long prompt is ignored.
    pub fn token_count(&self, prompt: &str) -> Result<usize> {
        Ok(Self::ids(&self.untruncated, prompt)?.len())
    }
}
