//! Prompts as AUTOMATIC1111 (and so most of Civitai) writes them: emphasis weights
//! ([`parse`]), any length in 75-token chunks with `BREAK` ([`chunks`]), and the weighted
//! embedding rescaled to its former mean ([`emphasis`]). [`crate::Model::condition`] runs
//! them through the text encoders; a prompt without any of this encodes exactly as
//! diffusers encodes it.

pub mod chunks;
pub mod emphasis;
pub mod parse;

pub use chunks::{CHUNK_TOKENS, Chunk, Specials, chunk};
use ditail_models::ClipTokenizer;

use crate::error::{PipelineError, Result};
pub use parse::{Piece, parse};

/// The most chunks one prompt may take: 20 x 75 = 1500 tokens, ten times what model pages
/// use. Each chunk lengthens every cross-attention; a pasted book would otherwise run for
/// hours.
pub const MAX_CHUNKS: usize = 20;

/// `text`'s chunks for one tokenizer, at least `min` of them (padded with empty chunks).
pub fn tokenized_chunks(
    tokenizer: &ClipTokenizer,
    pieces: &[Piece],
    min: usize,
) -> Result<Vec<Chunk>> {
    let ids = tokenizer.specials();
    let specials = Specials {
        bos: ids.bos,
        eos: ids.eos,
        pad: ids.pad,
        comma: ids.comma.unwrap_or(u32::MAX),
    };
    let tokens = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(text, _) => Ok(tokenizer.tokens(text)?),
            Piece::Break => Ok(Vec::new()),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut chunks = chunk(pieces, &tokens, specials);
    let empty = chunk(&[Piece::Text(String::new(), 1.0)], &[Vec::new()], specials);
    while chunks.len() < min {
        chunks.extend(empty.iter().cloned());
    }
    Ok(chunks)
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
    let chunks = tokenized_chunks(&ClipTokenizer::sd15(), &parse(text), 1)?.len();
    check_length(what, text, chunks)
}
