//! Prompts as AUTOMATIC1111 (and so most of Civitai) writes them: emphasis weights
//! ([`parse()`]), any length in 75-token chunks with `BREAK` ([`chunks`]), the weighted
//! embedding rescaled to its former mean ([`emphasis`]), and textual-inversion embeddings
//! written by name ([`embeddings`]). [`crate::Model::condition`] runs
//! them through the text encoders; a prompt without any of this encodes exactly as
//! diffusers encodes it.

pub mod chunks;
pub mod embeddings;
pub mod emphasis;
pub mod parse;

pub use chunks::{CHUNK_TOKENS, Chunk, Item, Specials, chunk};
use ditail_models::ClipTokenizer;
pub use embeddings::{Embedding, Embeddings};

use crate::error::{PipelineError, Result};
pub use parse::{Piece, parse};

/// The most chunks one prompt may take: 20 x 75 = 1500 tokens, ten times what model pages
/// use. Each chunk lengthens every cross-attention; a pasted book would otherwise run for
/// hours.
pub const MAX_CHUNKS: usize = 20;

/// A prompt's chunks for one tokenizer, at least `min` of them (padded with empty chunks),
/// with the embeddings of `embeddings` where their names are written.
pub fn tokenized_chunks(
    tokenizer: &ClipTokenizer,
    pieces: &[Piece],
    embeddings: Option<&Embeddings>,
    min: usize,
) -> Result<Vec<Chunk>> {
    let ids = tokenizer.specials();
    let specials = Specials {
        bos: ids.bos,
        eos: ids.eos,
        pad: ids.pad,
        comma: ids.comma.unwrap_or(u32::MAX),
    };
    let lookup = match embeddings {
        Some(e) if !e.is_empty() => Lookup::new(tokenizer, e)?,
        _ => Lookup::default(),
    };
    let items = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(text, _) if lookup.names.is_empty() => Ok(tokenizer
                .tokens(text)?
                .into_iter()
                .map(Item::Token)
                .collect()),
            Piece::Text(text, _) => {
                let tokens = tokenizer.tokens(&embeddings::strip_comfy_syntax(text))?;
                lookup.items(&tokens, embeddings.expect("a lookup has embeddings"))
            }
            Piece::Break => Ok(Vec::new()),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut chunks = chunk(pieces, &items, specials);
    if chunks.len() < min {
        let empty = chunk(&[Piece::Text(String::new(), 1.0)], &[Vec::new()], specials);
        chunks.resize(min, empty[0].clone());
    }
    Ok(chunks)
}

/// Embedding names as token sequences, longest first (a longer name wins where two start
/// alike, as in A1111).
#[derive(Default)]
struct Lookup {
    names: Vec<(Vec<u32>, String)>,
}

impl Lookup {
    fn new(tokenizer: &ClipTokenizer, embeddings: &Embeddings) -> Result<Self> {
        let mut names = Vec::new();
        for name in embeddings
            .by_name
            .keys()
            .chain(embeddings.unreadable.keys())
        {
            let tokens = tokenizer.tokens(name)?;
            if !tokens.is_empty() {
                names.push((tokens, name.clone()));
            }
        }
        names.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Ok(Self { names })
    }

    /// `tokens` with every embedding name replaced by the embedding; a name whose file
    /// could not be read is refused with why.
    fn items(&self, tokens: &[u32], embeddings: &Embeddings) -> Result<Vec<Item>> {
        let mut out = Vec::with_capacity(tokens.len());
        let mut at = 0;
        while at < tokens.len() {
            let found = self
                .names
                .iter()
                .find(|(name, _)| tokens[at..].starts_with(name));
            let Some((name_tokens, name)) = found else {
                out.push(Item::Token(tokens[at]));
                at += 1;
                continue;
            };
            let Some(e) = embeddings.by_name.get(name) else {
                let reason = embeddings.unreadable[name].clone();
                return Err(PipelineError::Settings(format!(
                    "the prompt uses embedding {name}, which cannot be read: {reason}"
                )));
            };
            out.push(Item::Embedding {
                name: name.clone(),
                len: e.len(),
                first: name_tokens[0],
            });
            at += name_tokens.len();
        }
        Ok(out)
    }
}

/// Refuses a prompt of more than [`MAX_CHUNKS`] chunks; `what` names it ("negative
/// prompt").
pub fn check_length(what: &str, text: &str, chunks: usize) -> Result<()> {
    if chunks <= MAX_CHUNKS {
        return Ok(());
    }
    let start: String = text.chars().take(40).collect();
    Err(PipelineError::Settings(format!(
        "the {what} \"{start}...\" takes {chunks} chunks of {CHUNK_TOKENS} tokens; ditail \
         encodes at most {MAX_CHUNKS} ({} tokens): shorten it",
        MAX_CHUNKS * CHUNK_TOKENS
    )))
}

/// Checks a prompt's length with CLIP's vocabulary (every SD model's), before any model is
/// loaded.
pub fn check(what: &str, text: &str) -> Result<()> {
    let chunks = tokenized_chunks(&ClipTokenizer::sd15(), &parse(text), None, 1)?.len();
    check_length(what, text, chunks)
}
