//! Long prompts in 75-token chunks, as AUTOMATIC1111 encodes them
//! ([`modules/sd_hijack_clip.py`](https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/82a973c04367123ae98bd9abdf80d9eda9b910e2/modules/sd_hijack_clip.py),
//! `tokenize_line`): each chunk holds up to 75 of the prompt's tokens, wrapped in the
//! start and end tokens and padded to 77, so the text encoder sees each chunk as a prompt
//! of its own; the chunks' encodings are then laid end to end.
//!
//! A chunk that fills up in the middle of a phrase gives the phrase to the next chunk when
//! a comma is at most 20 tokens back (A1111's default "comma padding backtrack"), and
//! `BREAK` closes the chunk at once (even an empty one, as A1111 does).

use super::parse::Piece;

/// Tokens of the prompt per chunk.
pub const CHUNK_TOKENS: usize = 75;
/// How far back a comma may be for the phrase after it to move to the next chunk.
pub const COMMA_BACKTRACK: usize = 20;

/// One chunk: the text encoder's 77 ids and the weight of each.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// `<|startoftext|>`, up to 75 prompt tokens, `<|endoftext|>` to the end (or the
    /// tokenizer's padding token after the first one).
    pub ids: Vec<u32>,
    /// The emphasis weight of each id (1 for the special and padding tokens).
    pub weights: Vec<f32>,
}

/// The special tokens chunking needs.
#[derive(Clone, Copy, Debug)]
pub struct Specials {
    /// `<|startoftext|>`.
    pub bos: u32,
    /// `<|endoftext|>`.
    pub eos: u32,
    /// What follows the first `<|endoftext|>` (SDXL's second tokenizer: `!`).
    pub pad: u32,
    /// `,` as a word of its own.
    pub comma: u32,
}

/// Splits parsed pieces, each already tokenized (`tokens[i]` for `pieces[i]`, nothing for a
/// `BREAK`), into chunks.
pub fn chunk(pieces: &[Piece], tokens: &[Vec<u32>], sp: Specials) -> Vec<Chunk> {
    let mut b = Builder {
        sp,
        chunks: Vec::new(),
        ids: Vec::new(),
        weights: Vec::new(),
        last_comma: None,
    };
    for (piece, toks) in pieces.iter().zip(tokens) {
        let weight = match piece {
            Piece::Break => {
                b.close();
                continue;
            }
            Piece::Text(_, w) => *w as f32,
        };
        for &t in toks {
            b.push(t, weight);
        }
    }
    if !b.ids.is_empty() || b.chunks.is_empty() {
        b.close();
    }
    b.chunks
}

/// The chunks so far and the one being filled.
struct Builder {
    sp: Specials,
    chunks: Vec<Chunk>,
    ids: Vec<u32>,
    weights: Vec<f32>,
    /// Where the last comma of the chunk being filled is.
    last_comma: Option<usize>,
}

impl Builder {
    fn push(&mut self, t: u32, weight: f32) {
        if t == self.sp.comma {
            self.last_comma = Some(self.ids.len());
        } else if let Some(comma) = self.last_comma
            && COMMA_BACKTRACK != 0
            && self.ids.len() == CHUNK_TOKENS
            && self.ids.len() - comma <= COMMA_BACKTRACK
        {
            // The phrase after the comma moves on whole.
            let mut ids = self.ids.split_off(comma + 1);
            let mut weights = self.weights.split_off(comma + 1);
            self.close();
            self.ids.append(&mut ids);
            self.weights.append(&mut weights);
        }
        if self.ids.len() == CHUNK_TOKENS {
            self.close();
        }
        self.ids.push(t);
        self.weights.push(weight);
    }

    /// Wraps the chunk being filled in start and end tokens, pads it to 77 and starts the
    /// next.
    fn close(&mut self) {
        let sp = self.sp;
        let mut ids = Vec::with_capacity(CHUNK_TOKENS + 2);
        ids.push(sp.bos);
        ids.append(&mut self.ids);
        ids.resize(CHUNK_TOKENS + 2, sp.eos);
        // After the first end token: the tokenizer's padding (A1111 and diffusers alike).
        let first_end = ids[1..]
            .iter()
            .position(|&t| t == sp.eos)
            .map_or(ids.len(), |i| i + 1);
        for t in ids.iter_mut().skip(first_end + 1) {
            *t = sp.pad;
        }
        let mut weights = Vec::with_capacity(CHUNK_TOKENS + 2);
        weights.push(1.0);
        weights.append(&mut self.weights);
        weights.resize(CHUNK_TOKENS + 2, 1.0);
        self.last_comma = None;
        self.chunks.push(Chunk { ids, weights });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: Specials = Specials {
        bos: 900,
        eos: 901,
        pad: 0,
        comma: 5,
    };

    fn text(w: f64) -> Piece {
        Piece::Text(String::new(), w)
    }

    #[test]
    fn a_short_prompt_is_one_padded_chunk() {
        let c = chunk(&[text(1.5)], &[vec![10, 11]], SP);
        assert_eq!(c.len(), 1);
        assert_eq!(&c[0].ids[..5], &[900, 10, 11, 901, 0]);
        assert_eq!(c[0].ids.len(), 77);
        assert_eq!(&c[0].weights[..4], &[1.0, 1.5, 1.5, 1.0]);
    }

    #[test]
    fn long_prompts_split_after_a_near_comma_and_at_break() {
        // 70 tokens, a comma, 10 more: the 4 tokens after the comma that fit move on.
        let mut toks: Vec<u32> = (100..170).collect();
        toks.push(5);
        toks.extend(200..210);
        let c = chunk(&[text(1.0)], &[toks], SP);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].ids[71], 5);
        assert_eq!(c[0].ids[72], 901);
        assert_eq!(&c[1].ids[..3], &[900, 200, 201]);
        let c = chunk(
            &[text(1.0), Piece::Break, text(1.0)],
            &[vec![10], vec![], vec![11]],
            SP,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].ids[1], 11);
    }
}
