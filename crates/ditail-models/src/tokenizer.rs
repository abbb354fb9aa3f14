//! The CLIP BPE tokenizer, as transformers' `CLIPTokenizer` (the one diffusers' SD
//! pipelines use) tokenizes: 77 ids, `<|startoftext|>` = 49406 first, `<|endoftext|>` =
//! 49407 last and as padding (SDXL's second tokenizer pads with `!`), truncated to 77.
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
    /// The special tokens' ids: start, end, padding, and `,` as a word.
    specials: SpecialIds,
}

/// A tokenizer's special ids (and the comma, where long prompts prefer to break).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<|startoftext|>`.
    pub bos: u32,
    /// `<|endoftext|>`.
    pub eos: u32,
    /// The padding token.
    pub pad: u32,
    /// `,</w>`, when the vocabulary has it.
    pub comma: Option<u32>,
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

    /// The tokenizer of SDXL's second text encoder as single files imply it: the shipped
    /// vocabulary padding with `!` (id 0), as `tokenizer_2/` of SDXL's diffusers folders
    /// does (OpenCLIP's tokenizer pads with zeros).
    pub fn sdxl_second() -> Self {
        static XL: OnceLock<ClipTokenizer> = OnceLock::new();
        XL.get_or_init(|| {
            Self::from_vocab_padded(VOCAB_JSON, MERGES_TXT, "!")
                .expect("the shipped CLIP vocabulary is valid")
        })
        .clone()
    }

    /// A diffusers `tokenizer/` (or `tokenizer_2/`) folder (`vocab.json` + `merges.txt`),
    /// padding with the `pad_token` of its `special_tokens_map.json` (`<|endoftext|>` when
    /// it names none).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_dir_or_pad(dir, "<|endoftext|>")
    }

    /// [`ClipTokenizer::from_dir`], padding with `default_pad` when the folder names no
    /// padding token (SDXL's `tokenizer_2/` pads with `!`).
    pub fn from_dir_or_pad(dir: &Path, default_pad: &str) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModelError::Io { path, source })
        };
        let pad = Self::pad_token(dir)?.unwrap_or_else(|| default_pad.to_string());
        Self::from_vocab_padded(&read("vocab.json")?, &read("merges.txt")?, &pad)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", dir.display())))
    }

    /// The padding token a tokenizer folder names (`special_tokens_map.json`, else
    /// `tokenizer_config.json`), as a string or as transformers' `{"content": ...}`.
    fn pad_token(dir: &Path) -> Result<Option<String>> {
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let j = crate::json::JsonConfig::read(&path)?;
            match j.raw("pad_token") {
                Some(Value::String(t)) => return Ok(Some(t.clone())),
                Some(Value::Object(o)) => {
                    if let Some(Value::String(t)) = o.get("content") {
                        return Ok(Some(t.clone()));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Builds the tokenizer from the text of `vocab.json` and `merges.txt`, padding with
    /// `<|endoftext|>`.
    pub fn from_vocab(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        Self::from_vocab_padded(vocab_json, merges_txt, "<|endoftext|>")
    }

    /// Builds the tokenizer, padding with `pad_token` (which the vocabulary must have).
    pub fn from_vocab_padded(vocab_json: &str, merges_txt: &str, pad_token: &str) -> Result<Self> {
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
        let pad = id_of(pad_token)?;
        let specials = SpecialIds {
            bos,
            eos,
            pad,
            comma: id_of(",</w>").ok(),
        };
        let special = |id: u32, content: &str| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": true, "special": true})
        };
        // transformers registers a padding token other than `<|endoftext|>` (SDXL's `!`) as
        // a special token too, so a `!` typed in a prompt becomes that id, never BPE: as
        // diffusers' SDXL pipeline tokenizes.
        let mut added = vec![
            special(bos, "<|startoftext|>"),
            special(eos, "<|endoftext|>"),
        ];
        if pad != bos && pad != eos {
            added.push(special(pad, pad_token));
        }
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
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
            pad_id: pad,
            pad_token: pad_token.into(),
            ..Default::default()
        }));
        Ok(Self {
            inner: Arc::new(inner),
            untruncated: Arc::new(untruncated),
            specials,
        })
    }

    fn ids(tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<u32>> {
        Self::ids_with(tokenizer, prompt, true)
    }

    fn ids_with(tokenizer: &Tokenizer, prompt: &str, specials: bool) -> Result<Vec<u32>> {
        let enc = tokenizer
            .encode(prompt, specials)
            .map_err(|e| ModelError::Tokenizer(format!("cannot tokenize {prompt:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes a prompt to exactly [`MAX_LEN`] ids.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        Self::ids(&self.inner, prompt)
    }

    /// The ids of `text` alone: no start or end token, no truncation, no padding (a piece
    /// of a prompt, as A1111 tokenizes each piece of a weighted prompt).
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        Self::ids_with(&self.untruncated, text, false)
    }

    /// The special ids.
    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// How many tokens `prompt` has before truncation (special tokens included), so callers
    /// can warn that the end of a long prompt is ignored.
    pub fn token_count(&self, prompt: &str) -> Result<usize> {
        Ok(Self::ids(&self.untruncated, prompt)?.len())
    }
}
